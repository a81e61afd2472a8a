"""How the peers load an exported drafter, for tests: SafeAILab EAGLE's rules restated in plain torch (like
``eagle3_reference`` restates the equations), and vLLM speculators driven through its own loader when it is installed.

SafeAILab EAGLE (``eagle/model/ea_model.py`` ``EaModel.from_pretrained`` -> ``eagle/model/cnets.py`` EAGLE-3 ``Model``),
restated from the code, not copied:

1. ``config.json`` becomes a plain config object: every key is an attribute, so "has target_hidden_size" means
   "the key is in config.json".
2. Fresh modules: ``embed_tokens`` [vocab_size, hidden_size] (randomly initialized), ``fc``
   [hidden_size, 3 * (target_hidden_size if present else hidden_size)], the decoder layer with
   head_dim = hidden_size // num_attention_heads, ``norm``, ``lm_head`` [draft_vocab_size, hidden_size], and zero
   ``d2t`` [draft_vocab_size] / ``t2d`` [vocab_size] buffers.
3. Only when target_hidden_size is ABSENT, ``embed_tokens`` is overwritten with the base model's
   ``model.embed_tokens.weight``, found through the base model's ``model.safetensors.index.json``.
4. When vocab_size == draft_vocab_size the d2t/t2d buffers are deleted.
5. The drafter's ``pytorch_model.bin`` (else ``model.safetensors``) goes through ``load_state_dict(strict=False)``:
   names that exist are copied (a shape mismatch is an error), unknown names are ignored, missing ones silently keep
   the values of steps 2-3.
6. RoPE: ``rope_scaling`` None -> base ``rope_theta`` (10000 when absent); ``rope_scaling["type"]`` "linear" divides
   positions by ``factor``; any other type raises (dynamic NTK is not restated: SlimSpec never writes it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

# What CI installs so the speculators tests run instead of skipping (speculators 0.9.0 pins transformers<=5.19 and
# depends on torchaudio/torchvision, so its own requirements are not installed: its import path needs only the
# "peers" extra of pyproject.toml).
SPECULATORS_INSTALL = "pip install -e '.[peers]' && pip install --no-deps speculators==0.9.0"


# ----------------------------------------------------------------------------------------------------------------------
# SafeAILab EAGLE
# ----------------------------------------------------------------------------------------------------------------------
def load_safeailab_eagle3(folder, base_model, seed=0):
    """Load an EAGLE-3 drafter folder the way SafeAILab EAGLE does (rules 1-6 above).

    Returns (state dict in EAGLE names, config namespace for ``eagle3_reference``, rotary position scale)."""
    folder, base_model = Path(folder), Path(base_model)
    raw = json.loads((folder / "config.json").read_text())
    d, heads = raw["hidden_size"], raw["num_attention_heads"]
    head_dim = d // heads
    kv_dim = raw.get("num_key_value_heads", heads) * head_dim
    fc_in = 3 * (raw["target_hidden_size"] if "target_hidden_size" in raw else d)
    g = torch.Generator().manual_seed(seed)
    fresh = {
        "embed_tokens.weight": torch.randn(raw["vocab_size"], d, generator=g),
        "fc.weight": torch.randn(d, fc_in, generator=g),
        "midlayer.self_attn.q_proj.weight": torch.randn(heads * head_dim, 2 * d, generator=g),
        "midlayer.self_attn.k_proj.weight": torch.randn(kv_dim, 2 * d, generator=g),
        "midlayer.self_attn.v_proj.weight": torch.randn(kv_dim, 2 * d, generator=g),
        "midlayer.self_attn.o_proj.weight": torch.randn(d, heads * head_dim, generator=g),
        "midlayer.mlp.gate_proj.weight": torch.randn(raw["intermediate_size"], d, generator=g),
        "midlayer.mlp.up_proj.weight": torch.randn(raw["intermediate_size"], d, generator=g),
        "midlayer.mlp.down_proj.weight": torch.randn(d, raw["intermediate_size"], generator=g),
        "midlayer.hidden_norm.weight": torch.ones(d),
        "midlayer.input_layernorm.weight": torch.ones(d),
        "midlayer.post_attention_layernorm.weight": torch.ones(d),
        "norm.weight": torch.ones(d),
        "lm_head.weight": torch.randn(raw["draft_vocab_size"], d, generator=g),
        "d2t": torch.zeros(raw["draft_vocab_size"], dtype=torch.long),
        "t2d": torch.zeros(raw["vocab_size"], dtype=torch.bool),
    }
    if "target_hidden_size" not in raw:
        fresh["embed_tokens.weight"] = _base_model_embedding(base_model)
    if raw["vocab_size"] == raw["draft_vocab_size"]:
        del fresh["d2t"], fresh["t2d"]
    for name, tensor in _drafter_weights(folder).items():
        if name in fresh:
            if tuple(tensor.shape) != tuple(fresh[name].shape):
                raise RuntimeError(f"size mismatch for {name}: {tuple(tensor.shape)} vs {tuple(fresh[name].shape)}")
            fresh[name] = tensor
    cfg = SimpleNamespace(rms_norm_eps=raw["rms_norm_eps"], num_attention_heads=heads, head_dim=head_dim,
                          num_key_value_heads=raw.get("num_key_value_heads", heads), norm_before_residual=False,
                          rope_theta=raw.get("rope_theta", 10000.0))
    return fresh, cfg, _position_scale(raw.get("rope_scaling"))


def _base_model_embedding(base_model: Path) -> torch.Tensor:
    from safetensors import safe_open

    index = base_model / "model.safetensors.index.json"
    if not index.exists():
        raise FileNotFoundError(f"SafeAILab EAGLE reads the base model's embedding through {index}")
    shard = json.loads(index.read_text())["weight_map"]["model.embed_tokens.weight"]
    with safe_open(str(base_model / shard), framework="pt") as f:
        return f.get_tensor("model.embed_tokens.weight").float()


def _drafter_weights(folder: Path) -> dict:
    if (folder / "pytorch_model.bin").exists():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _position_scale(rope_scaling) -> float:
    if rope_scaling is None:
        return 1.0
    if rope_scaling["type"] == "linear":  # a KeyError here is SafeAILab's too: it reads the "type" key
        return 1.0 / rope_scaling["factor"]
    raise ValueError(f"Unknown RoPE scaling type {rope_scaling['type']}")


# ----------------------------------------------------------------------------------------------------------------------
# vLLM speculators
# ----------------------------------------------------------------------------------------------------------------------
def import_speculators():
    """speculators' loader, or a skip naming the install command (a failure when SLIMSPEC_REQUIRE_SPECULATORS=1,
    so CI notices when the install breaks)."""
    try:
        import speculators
        from speculators.models.eagle3 import Eagle3SpeculatorConfig
    except Exception as err:  # ImportError, or PackageNotFoundError from a dependency installed without metadata
        message = f"speculators is not importable ({type(err).__name__}: {err}); install it with: {SPECULATORS_INSTALL}"
        if os.environ.get("SLIMSPEC_REQUIRE_SPECULATORS"):
            pytest.fail(message)
        pytest.skip(message)
    return speculators.SpeculatorModel, Eagle3SpeculatorConfig


def speculators_first_step_logits(folder, target_hidden, tokens, attn_implementation="eager") -> torch.Tensor:
    """Load ``folder`` with speculators' own ``SpeculatorModel.from_pretrained`` and return the draft logits of its
    first drafting step ([1, T, V_d]), read at its ``lm_head`` (its forward returns argmax tokens only).

    Its default attention is flex attention, which does not run on CPU; eager and sdpa are its CPU paths."""
    SpeculatorModel, Eagle3SpeculatorConfig = import_speculators()
    config = Eagle3SpeculatorConfig.from_pretrained(folder)
    config.transformer_layer_config._attn_implementation = attn_implementation
    model = SpeculatorModel.from_pretrained(str(folder), config=config).eval()
    logits = []
    hook = model.lm_head.register_forward_hook(lambda module, args, out: logits.append(out))
    T = tokens.shape[1]
    try:
        with torch.no_grad():
            model(hidden_states=target_hidden, input_ids=tokens, document_ids=torch.zeros(1, T, dtype=torch.long),
                  position_ids=torch.arange(T)[None], ttt_steps=1)
    finally:
        hook.remove()
    return logits[0]
