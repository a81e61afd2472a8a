"""Writers of tiny EAGLE-3 checkpoints in the formats people publish, built from the formats' documentation and
code (SafeAILab EAGLE ``cnets.py``/``configs.py``, SpecForge ``llama3_eagle.py`` + export, vLLM speculators
``Eagle3SpeculatorConfig`` + ``speculators convert``). Test fixtures only: generated, never committed."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

D, DT, HEADS, KV, INTER, V, L = 32, 24, 4, 2, 64, 97, 8  # drafter d, target d_t, heads, kv heads, mlp, vocab, target layers


def eagle_state(seed=0, draft_vocab=None, embed=False, dtype=torch.float32, dt=DT) -> dict:
    """A random drafter state dict in EAGLE-3 names (``midlayer.*``) for a target of hidden size ``dt``."""
    g = torch.Generator().manual_seed(seed)
    hd = D // HEADS

    def r(*shape, scale=0.3):
        return (scale * torch.randn(*shape, generator=g)).to(dtype)

    sd = {
        "fc.weight": r(D, 3 * dt),
        "midlayer.self_attn.q_proj.weight": r(HEADS * hd, 2 * D),
        "midlayer.self_attn.k_proj.weight": r(KV * hd, 2 * D),
        "midlayer.self_attn.v_proj.weight": r(KV * hd, 2 * D),
        "midlayer.self_attn.o_proj.weight": r(D, HEADS * hd),
        "midlayer.mlp.gate_proj.weight": r(INTER, D),
        "midlayer.mlp.up_proj.weight": r(INTER, D),
        "midlayer.mlp.down_proj.weight": r(D, INTER),
        "midlayer.hidden_norm.weight": (1 + r(D, scale=0.2)),
        "midlayer.input_layernorm.weight": (1 + r(D, scale=0.2)),
        "midlayer.post_attention_layernorm.weight": (1 + r(D, scale=0.2)),
        "norm.weight": (1 + r(D, scale=0.2)),
        "lm_head.weight": r(draft_vocab or V, D),
    }
    if draft_vocab:
        kept = torch.randperm(V, generator=g)[:draft_vocab].sort().values
        sd["d2t"] = kept - torch.arange(draft_vocab)
        sd["t2d"] = torch.zeros(V, dtype=torch.bool)
        sd["t2d"][kept] = True
    if embed:
        sd["embed_tokens.weight"] = r(V, D)
    return sd


def _llama(draft_vocab=None, **extra) -> dict:
    cfg = dict(hidden_size=D, intermediate_size=INTER, num_attention_heads=HEADS, num_key_value_heads=KV,
               num_hidden_layers=1, hidden_act="silu", rms_norm_eps=1e-6, max_position_embeddings=2048,
               vocab_size=V, tie_word_embeddings=False, torch_dtype="float32")
    if draft_vocab:
        cfg["draft_vocab_size"] = draft_vocab
    cfg.update(extra)
    return cfg


def _save(folder: Path, config: dict, state: dict, bin_file=False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if bin_file:
        torch.save(state, folder / "pytorch_model.bin")
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _dt(state) -> int:
    return state["fc.weight"].shape[1] // 3


def write_eagle(folder, state, draft_vocab=None, bin_file=True) -> Path:
    """SafeAILab: LlamaForCausalLM config + draft_vocab_size (+ target_hidden_size), pytorch_model.bin, no embeddings."""
    cfg = _llama(draft_vocab or V, architectures=["LlamaForCausalLM"], model_type="llama",
                 target_hidden_size=_dt(state), bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return _save(Path(folder), cfg, state, bin_file=bin_file)


def write_specforge(folder, state, draft_vocab=None, layer_ids=None, **flags) -> Path:
    """SpecForge: LlamaForCausalLMEagle3, head_dim given, optional eagle_config ids (layer OUTPUT numbering)."""
    cfg = _llama(draft_vocab or V, architectures=["LlamaForCausalLMEagle3"], model_type="llama", head_dim=D // HEADS,
                 target_hidden_size=_dt(state), rope_theta=10000.0, rope_scaling=None, attention_bias=False, **flags)
    if layer_ids is not None:
        cfg["eagle_config"] = {"eagle_aux_hidden_state_layer_ids": layer_ids}
    return _save(Path(folder), cfg, state)


def write_speculators(folder, state, draft_vocab=None, layer_ids=None, norm_before_residual=False, **flags) -> Path:
    """vLLM speculators: Eagle3Speculator, transformer_layer_config, layers.0.* names."""
    layer = _llama(None, model_type="llama", head_dim=D // HEADS, rope_theta=10000.0)
    cfg = dict(architectures=["Eagle3Speculator"], speculators_model_type="eagle3", speculators_version="0.3.0",
               draft_vocab_size=draft_vocab or V, norm_before_residual=norm_before_residual, norm_before_fc=False,
               fc_norm=False, norm_output=False, target_hidden_size=_dt(state),
               eagle_aux_hidden_state_layer_ids=layer_ids,
               embed_requires_grad=False, transformer_layer_config=layer,
               speculators_config=dict(algorithm="eagle3", default_proposal_method="greedy",
                                       proposal_methods=[dict(proposal_type="greedy", speculative_tokens=3)],
                                       verifier=dict(name_or_path="someone/tiny-target",
                                                     architectures=["LlamaForCausalLM"])))
    cfg.update(flags)
    renamed = {("layers.0." + k[len("midlayer."):]) if k.startswith("midlayer.") else k: v for k, v in state.items()}
    return _save(Path(folder), cfg, renamed)


WRITERS = {"eagle": write_eagle, "specforge": write_specforge, "speculators": write_speculators}
