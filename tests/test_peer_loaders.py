"""Engine exports load in the peers' own loaders and give our drafter's logits (<= 1e-4).

``--export eagle`` goes through SafeAILab EAGLE's loading rules, restated in ``peer_loaders``; ``--export speculators``
goes through speculators' real ``SpeculatorModel.from_pretrained`` (skipped where speculators is not installed; see
``peer_loaders.SPECULATORS_INSTALL``). Each drafter is converted to SlimSpec at rank d/8 against a tiny target, then
exported from that folder, and the peer's first-step logits are compared with the SlimSpec drafter's.
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig

import eagle3_reference as ref
from eagle3_writers import D, HEADS, INTER, KV, L, V, eagle_state, write_eagle
from modeling_slimspec import SlimSpecDrafter
from peer_loaders import import_speculators, load_safeailab_eagle3, speculators_first_step_logits
from slimspec.convert import convert_drafter

FAST = dict(validate=False, progress=False)
TARGETS = {"llama": LlamaConfig, "gemma": Gemma3TextConfig}  # Gemma 3 scales its embedding by sqrt(d) in the module


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """Tiny targets with hidden size D (a drafter can share only an embedding of its own width), saved sharded so
    they have the checkpoint index SafeAILab's loader reads the embedding through."""
    folders = {}
    for name, config_class in TARGETS.items():
        config = config_class(hidden_size=D, intermediate_size=INTER, num_hidden_layers=L, num_attention_heads=HEADS,
                              num_key_value_heads=KV, head_dim=D // HEADS, vocab_size=V)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_()  # unit-scale rows: a wrong embedding shows in the logits
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder, max_shard_size="20KB")
        assert (folder / "model.safetensors.index.json").exists()
        folders[name] = folder
    return folders


def exported(tmp_path, target_folder, fmt, embed=False, draft_vocab=None, rope_scaling=None, export_target=False):
    """(SlimSpec folder, export folder) for a random EAGLE-3 drafter converted at rank d/8 against the target."""
    state = eagle_state(seed=1, draft_vocab=draft_vocab, embed=embed, dt=D)
    src = write_eagle(tmp_path / "src", state, draft_vocab=draft_vocab)
    if rope_scaling:
        raw = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps(dict(raw, rope_scaling=rope_scaling)))
    slim, out = tmp_path / "slim", tmp_path / fmt
    convert_drafter(source=str(src), output=str(slim), rank="d/8", target=str(target_folder), **FAST)
    convert_drafter(source=str(slim), output=str(out), export=fmt, target=str(target_folder) if export_target else None,
                    **FAST)
    return slim, out


def probe(seed=0, T=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, T, 3 * D, generator=g), torch.randint(0, V, (1, T), generator=g)


def slimspec_logits(slim, target_folder, feats, tokens):
    model = SlimSpecDrafter.from_pretrained(slim).eval()
    if model.embed_tokens is None:  # shares the target's embedding module (Gemma 3's scale included)
        model.use_target_embeddings(AutoModelForCausalLM.from_pretrained(target_folder).get_input_embeddings())
    with torch.no_grad():
        return model(input_ids=tokens, target_hidden_states=feats).logits[0].double()


@pytest.mark.parametrize("target,embed,draft_vocab,rope_scaling,export_target", [
    ("llama", False, None, None, False),  # shares the target's embedding: EAGLE must load the target's matrix itself
    ("llama", False, 40, None, False),
    ("llama", True, 40, None, False),  # its own embedding, written into the export
    ("llama", False, None, {"type": "linear", "factor": 2.0}, False),
    ("gemma", False, None, None, True),  # a scaled target embedding: written into the export, read from --target
])
def test_eagle_export_loads_in_safeailab_with_the_same_logits(tmp_path, targets, target, embed, draft_vocab,
                                                              rope_scaling, export_target):
    slim, out = exported(tmp_path, targets[target], "eagle", embed, draft_vocab, rope_scaling, export_target)
    feats, tokens = probe()
    want = slimspec_logits(slim, targets[target], feats, tokens)
    sd, cfg, position_scale = load_safeailab_eagle3(out, targets[target])
    _, got = ref.first_step(sd, cfg, sd["embed_tokens.weight"], feats[0], tokens[0], position_scale)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    raw = json.loads((out / "config.json").read_text())
    assert ("target_hidden_size" in raw) == (embed or target == "gemma")  # absent: EAGLE loads the target's embedding


@pytest.mark.parametrize("target,embed,draft_vocab,rope_scaling,attn", [
    ("llama", False, None, None, "eager"),  # shares the target's embedding: speculators loads it from the verifier
    ("llama", False, 40, None, "sdpa"),
    ("llama", True, 40, None, "eager"),
    ("llama", True, None, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 4}, "sdpa"),
    ("gemma", False, None, None, "eager"),  # a scaled target embedding, written into the export
])
def test_speculators_export_loads_in_speculators_with_the_same_logits(tmp_path, targets, target, embed, draft_vocab,
                                                                      rope_scaling, attn):
    import_speculators()  # skip before converting anything
    slim, out = exported(tmp_path, targets[target], "speculators", embed, draft_vocab, rope_scaling,
                         export_target=target == "gemma")
    feats, tokens = probe()
    want = slimspec_logits(slim, targets[target], feats, tokens)
    got = speculators_first_step_logits(out, feats, tokens, attn)[0].double()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    verifier = json.loads((out / "config.json").read_text())["speculators_config"]["verifier"]
    assert verifier == {"name_or_path": str(targets[target]), "architectures": [
        "LlamaForCausalLM" if target == "llama" else "Gemma3ForCausalLM"]}
    # always carries an embedding: speculators 0.9.0 leaves a missing one uninitialized (see export_embedding)
    assert "embed_tokens.weight" in load_file(out / "model.safetensors")
