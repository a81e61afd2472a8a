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


@pytest.mark.parametrize("value,expected", [
    (None, None), ("dense", None), ("full", None), ("FULL", None), ("none", None),  # all keep the head dense
    (64, 64), ("80", 80), (" 80 ", 80),
    ("d/8", 80), ("d/16", 40), ("d/7", 91), ("d/1000", 1),  # any positive N; at least 1
])
def test_resolve_head_rank(value, expected):
    assert resolve_head_rank(value, 640) == expected


@pytest.mark.parametrize("value", [0.9, "0.9", "energy:0.9", "energy: 0.9", "ENERGY:.9"])
def test_energy_fractions_resolve_on_the_spectrum(value):
    s2 = [5.0, 3.0, 1.0, 0.5, 0.5]  # cumulative 0.5, 0.8, 0.9, 0.95, 1.0
    assert resolve_head_rank(value, 5, spectrum=lambda: s2) == 3
    assert resolve_head_rank(value, 5, spectrum=lambda: s2[::-1]) == 3  # any order
    assert resolve_head_rank("energy:1", 5, spectrum=lambda: s2) == 5
    assert resolve_head_rank(0.5, 5, spectrum=lambda: s2) == 1
    with pytest.raises(ValueError, match="needs the head's singular values"):
        resolve_head_rank(value, 5)  # e.g. SlimSpecConfig(head_rank=0.9): no head to measure


def test_energy_spectrum_is_only_computed_when_needed():
    def spectrum():
        raise AssertionError("spectrum computed for a rank that does not need it")

    assert resolve_head_rank("d/8", 64, spectrum=spectrum) == 8
    assert resolve_head_rank("dense", 64, spectrum=spectrum) is None


@pytest.mark.parametrize("value", ["d/0", "d/x", "d/-2", "quarter", "1.5", 1.5, 0.0, "energy:0", "energy:2", "1e-3",
                                   True, [8]])
def test_bad_ranks_name_the_valid_forms(value):
    with pytest.raises(ValueError, match=r"not understood; use an int .*'d/N'.*'dense' / 'full'.*energy"):
        resolve_head_rank(value, 640)


def test_rank_bounds():
    assert tiny_config(head_rank=32).head_rank == 32  # r = d is legal (used by exactness tests)
    with pytest.raises(ValueError, match=r"rank 33 does not fit hidden size 32: use 1 <= rank <= 32"):
        tiny_config(head_rank=33)
    with pytest.raises(ValueError, match="rank 0 does not fit"):
        tiny_config(head_rank=0)
    with pytest.raises(ValueError, match=r"rank 40 does not fit a 20 x 64 head: use 1 <= rank <= 20"):
        resolve_head_rank(40, 64, vocab_rows=20)  # the head's rows bound it too
    with pytest.raises(ValueError, match="needs the head's singular values"):
        tiny_config(head_rank="energy:0.99")
    assert tiny_config(head_rank="d/7").head_rank == 4 and tiny_config(head_rank="full").head_rank is None


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
    assert loaded.auto_map == {"AutoConfig": "configuration_slimspec.SlimSpecConfig"}  # a config alone: no model


def test_config_keeps_transformers_own_validate():
    """The field checks run at construction under their own name; ``validate`` stays transformers' (the
    ``@strict`` protocol's), which ``save_pretrained`` runs."""
    from transformers import PretrainedConfig

    assert SlimSpecConfig.validate is PretrainedConfig.validate
    assert tiny_config(tie_word_embeddings=True).tie_word_embeddings is False  # never tied, whatever is asked


def test_an_earlier_checkpoints_causal_lm_mapping_is_not_carried_on(tmp_path):
    """Drafters saved by earlier releases mapped AutoModelForCausalLM too; loading and re-saving drops it."""
    import json

    config = tiny_config()
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["auto_map"]["AutoModelForCausalLM"] = "modeling_slimspec.SlimSpecDrafter"
    (tmp_path / "config.json").write_text(json.dumps(saved))
    reloaded = SlimSpecConfig.from_pretrained(tmp_path)
    assert "AutoModelForCausalLM" not in reloaded.auto_map and reloaded.auto_map["AutoConfig"]
    reloaded.save_pretrained(tmp_path / "again")
    assert "AutoModelForCausalLM" not in json.loads((tmp_path / "again" / "config.json").read_text())["auto_map"]
