import pytest
from transformers import LlamaConfig

from configuration_slimspec import SlimSpecConfig, default_target_layer_ids, resolve_head_rank
from conftest import tiny_config


def test_defaults_follow_eagle3():
    cfg = SlimSpecConfig()
    assert cfg.model_type == "slimspec" and cfg.model_type != "llama"
    assert cfg.target_layer_ids == [2, 16, 29]  # [2, L//2, L-3] for L = 32
    assert cfg.head_rank is None and cfg.head_vocab_size == cfg.vocab_size
    assert cfg.tie_word_embeddings is False


@pytest.mark.parametrize("value,expected", [(None, None), ("dense", None), (64, 64), ("d/8", 80), ("d/16", 40), ("80", 80)])
def test_resolve_head_rank(value, expected):
    assert resolve_head_rank(value, 640) == expected


def test_rank_bounds():
    assert tiny_config(head_rank=32).head_rank == 32  # r = d is legal (used by exactness tests)
    with pytest.raises(ValueError, match="head_rank .* cannot exceed hidden_size"):
        tiny_config(head_rank=33)
    with pytest.raises(ValueError, match="head_rank must be >= 1"):
        tiny_config(head_rank=0)
    with pytest.raises(ValueError, match="not understood"):
        tiny_config(head_rank="d/7")


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(draft_vocab_size=98), "draft_vocab_size .* cannot exceed vocab_size"),
        (dict(target_layer_ids=[2, 3, 7]), r"out of range .* 6 layers"),
        (dict(target_layer_ids=[2, 3]), "list of 3 ints"),
        (dict(num_key_value_heads=3), "multiple of num_key_value_heads"),
        (dict(num_hidden_layers=2), "must be 1"),
        (dict(hidden_act="swish2"), "hidden_act"),
        (dict(rope_scaling_config={"rope_type": "yarn", "factor": 2.0}), "rope_type='yarn'"),
        (dict(vocab_size=0), "vocab_size must be a positive int"),
    ],
)
def test_validation_errors_name_the_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**overrides)


def test_from_target_config_llama():
    target = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=12, num_attention_heads=8,
                         num_key_value_heads=2, vocab_size=500, rms_norm_eps=1e-5)
    cfg = SlimSpecConfig.from_target_config(target, head_rank="d/16")
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (64, 160, 8, 2)
    assert cfg.head_dim == 8 and cfg.target_hidden_size == 64 and cfg.vocab_size == 500
    assert cfg.target_layer_ids == default_target_layer_ids(12) == [2, 6, 9]
    assert cfg.head_rank == 4 and cfg.draft_vocab_size is None
    cfg2 = SlimSpecConfig.from_target_config(target, head_rank=None, draft_vocab_size=100, target_layer_ids=[1, 5, 10],
                                             intermediate_size=32)
    assert cfg2.head_rank is None and cfg2.draft_vocab_size == 100 and cfg2.target_layer_ids == [1, 5, 10]
    assert cfg2.intermediate_size == 32


def test_config_round_trip(tmp_path):
    cfg = tiny_config(draft_vocab_size=40, norm_before_residual=True,
                      rope_scaling_config={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    cfg.save_pretrained(tmp_path)
    loaded = SlimSpecConfig.from_pretrained(tmp_path)
    for key in ("head_rank", "draft_vocab_size", "norm_before_residual", "rope_scaling_config", "target_layer_ids",
                "target_hidden_size", "head_dim"):
        assert getattr(loaded, key) == getattr(cfg, key), key
    assert set(loaded.auto_map) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}
