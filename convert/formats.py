"""Readers and writers for the EAGLE-3 checkpoint formats people publish.

    eagle        SafeAILab/EAGLE: Llama config + ``draft_vocab_size``; keys ``midlayer.*``, ``fc``, ``norm``,
                 ``lm_head``, ``d2t``/``t2d``; target layers hard-coded as the inputs of layers [2, L//2, L-3].
    specforge    sgl-project/SpecForge: same keys, ``architectures: [LlamaForCausalLMEagle3]``, optional
                 ``eagle_config.eagle_aux_hidden_state_layer_ids`` numbering layer OUTPUTS (HF index = id + 1).
    speculators  vllm-project/speculators: ``speculators_model_type: eagle3``, nested ``transformer_layer_config``,
                 keys ``layers.0.*``; ``eagle_aux_hidden_state_layer_ids`` number layer INPUTS (HF index = id).
    slimspec     our own Hub folders (``model_type: slimspec``), so existing SlimSpec drafters can be re-exported.

Every reader returns a ``SourceDrafter``: SlimSpec config fields, a state dict in SlimSpec names with a dense
``lm_head.weight``, and notes on what was translated. Names are mapped strictly: unknown tensors, missing tensors
and unsupported variants are errors that name the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

FORMATS = ("eagle", "specforge", "speculators", "slimspec")


class ConversionError(ValueError):
    """A conversion input problem, with a message naming the problem and the fix."""


@dataclass
class SourceDrafter:
    format: str
    config: dict  # SlimSpecConfig keyword arguments
    state_dict: dict  # SlimSpec names; the head as a dense ``lm_head.weight`` [V_d, d]
    raw_config: dict
    notes: list = field(default_factory=list)
    license: str | None = None
    source: str = ""
    target_architectures: list | None = None  # the target's config.json ``architectures``, when known


# ----------------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------------
def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConversionError(f"{path} is missing: a drafter folder needs its config.json") from None
    except json.JSONDecodeError as err:
        raise ConversionError(f"{path} is not valid JSON ({err})") from None


def read_weights(folder: Path, progress=None) -> dict:
    """All tensors of a checkpoint folder: model.safetensors, a sharded safetensors index, or a legacy
    pytorch_model.bin (read with ``torch.load(weights_only=True)``: tensors only, no pickled code)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(read_json(index)["weight_map"].values()))
    elif (folder / "model.safetensors").exists():
        files = ["model.safetensors"]
    elif (folder / "pytorch_model.bin").exists():
        files = ["pytorch_model.bin"]
    else:
        raise ConversionError(f"no weights in {folder}: expected model.safetensors, model.safetensors.index.json "
                              f"or pytorch_model.bin")
    tensors = {}
    for name in (progress(files, desc="reading", unit="file") if progress else files):
        path = folder / name
        if not path.exists():
            raise ConversionError(f"{path} is listed in the checkpoint index but missing")
        try:
            if name.endswith(".bin"):
                loaded = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
                    raise ConversionError(f"{path} is not a plain state dict of tensors")
            else:
                loaded = load_file(path)
        except (SafetensorError, RuntimeError, OSError, EOFError) as err:
            raise ConversionError(f"{path} is corrupt or not a checkpoint ({str(err).splitlines()[0]})") from None
        except Exception as err:  # pickle errors from a damaged or hostile .bin
            if isinstance(err, ConversionError):
                raise
            raise ConversionError(f"{path} could not be read safely ({type(err).__name__}: {err})") from None
        tensors.update(loaded)
    return tensors


# ----------------------------------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------------------------------
def detect_format(raw_config: dict, keys) -> str:
    keys = set(keys)
    if raw_config.get("model_type") == "slimspec":
        return "slimspec"
    if raw_config.get("speculators_model_type") is not None or "speculators_config" in raw_config:
        kind = raw_config.get("speculators_model_type")
        if kind != "eagle3":
            raise ConversionError(f"speculators_model_type={kind!r}: only eagle3 speculators can be converted")
        return "speculators"
    archs = raw_config.get("architectures") or []
    has_midlayer = any(k.startswith("midlayer.") for k in keys)
    if any("Eagle3" in a for a in archs) or "eagle_config" in raw_config or any(k.startswith("fc_norm.") for k in keys):
        if has_midlayer:
            return "specforge"
    if has_midlayer and "fc.weight" in keys:
        return "eagle"
    raise ConversionError(
        f"unknown checkpoint format (architectures={archs}, model_type={raw_config.get('model_type')!r}, "
        f"keys like {sorted(keys)[:4]}): expected an EAGLE-3 drafter (SafeAILab EAGLE, SpecForge, vLLM speculators) "
        f"or a SlimSpec folder; pass --format if detection is wrong."
    )


# ----------------------------------------------------------------------------------------------------------------------
# Translation helpers
# ----------------------------------------------------------------------------------------------------------------------
LAYER_KEYS = [f"self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "o_proj")] + [
    f"mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")] + [
    f"{n}.weight" for n in ("hidden_norm", "input_layernorm", "post_attention_layernorm")]
REQUIRED = ["fc.weight", "norm.weight", "lm_head.weight"] + [f"midlayer.{k}" for k in LAYER_KEYS]


def default_layer_ids(num_layers: int) -> list:
    return [2, num_layers // 2, num_layers - 3]


def _rope(cfg: dict, fmt: str) -> tuple:
    theta = cfg.get("rope_theta")
    scaling = cfg.get("rope_scaling")
    params = cfg.get("rope_parameters")
    if isinstance(params, dict):  # transformers v5 style
        theta = params.get("rope_theta", theta)
        if params.get("rope_type", "default") != "default":
            scaling = params
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind not in ("default", "linear", "llama3"):
            raise ConversionError(f"{fmt} config has rope_scaling type {kind!r}; SlimSpec supports default, linear "
                                  f"and llama3 RoPE")
        kept = {k: v for k, v in scaling.items() if k not in ("type", "rope_type", "rope_theta")}
        scaling = None if kind == "default" else {"rope_type": kind, **kept}
    return float(theta if theta is not None else 10000.0), scaling


def _body_config(cfg: dict, fmt: str, head_dim_from_config: bool) -> dict:
    try:
        d, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        out = dict(hidden_size=d, intermediate_size=int(cfg["intermediate_size"]), num_attention_heads=heads,
                   num_key_value_heads=int(cfg.get("num_key_value_heads") or heads), vocab_size=int(cfg["vocab_size"]))
    except KeyError as err:
        raise ConversionError(f"{fmt} config lacks {err.args[0]!r}") from None
    # SafeAILab's attention ignores config.head_dim (always hidden // heads); SpecForge and speculators honour it.
    out["head_dim"] = int(cfg["head_dim"]) if head_dim_from_config and cfg.get("head_dim") else d // heads
    out["rms_norm_eps"] = float(cfg.get("rms_norm_eps", 1e-6))
    out["hidden_act"] = cfg.get("hidden_act", "silu")
    out["max_position_embeddings"] = int(cfg.get("max_position_embeddings") or 8192)
    out["rope_theta"], out["rope_scaling_config"] = _rope(cfg, fmt)
    if int(cfg.get("num_hidden_layers", 1)) != 1:
        raise ConversionError(f"{fmt} config has num_hidden_layers={cfg['num_hidden_layers']}: SlimSpec drafters have "
                              f"one decoder layer (EAGLE-3); multi-layer drafters are not supported")
    if cfg.get("mlp_bias"):
        raise ConversionError(f"{fmt} config sets mlp_bias: EAGLE-3 drafter MLPs have no bias")
    return out


def _check_keys(state: dict, fmt: str, allowed_extra=("embed_tokens.weight", "d2t", "t2d")) -> None:
    missing = [k for k in REQUIRED if k not in state]
    unexpected = [k for k in state if k not in REQUIRED and k not in allowed_extra]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        raise ConversionError(f"{fmt} checkpoint does not map onto an EAGLE-3 drafter: " + "; ".join(parts))


def _vocab(state: dict, cfg: dict, fmt: str) -> dict:
    V = cfg["vocab_size"]
    V_d = state["lm_head.weight"].shape[0]
    has_maps = "d2t" in state or "t2d" in state
    if V_d == V:
        state.pop("d2t", None), state.pop("t2d", None)  # full vocabulary: the maps are identities
        return dict(draft_vocab_size=None)
    if not has_maps:
        raise ConversionError(f"{fmt} head has {V_d} rows but vocab_size is {V} and the checkpoint has no d2t/t2d "
                              f"maps: without them draft ids cannot be mapped to target ids")
    if "d2t" not in state or "t2d" not in state:
        raise ConversionError(f"{fmt} checkpoint has only one of d2t/t2d; both are needed")
    state["d2t"], state["t2d"] = state["d2t"].long(), state["t2d"].bool()
    return dict(draft_vocab_size=int(V_d))


def _refuse_flags(cfg: dict, fmt: str, flags) -> None:
    for flag, reason in flags:
        if cfg.get(flag):
            raise ConversionError(f"{fmt} config sets {flag}=true ({reason}); SlimSpec does not implement this variant")


def _resolve_layers(ids, num_layers, fmt: str, shift: int) -> list:
    if num_layers is None:
        raise ConversionError(f"the {fmt} checkpoint does not record how many layers its target has: pass --target "
                              f"(a local target folder or embedded name) or --target-num-layers N")
    if ids is None:
        return default_layer_ids(num_layers)
    ids = sorted(int(i) + shift for i in ids)  # EAGLE-3 implementations concatenate in ascending layer order
    if len(ids) != 3:
        raise ConversionError(f"{fmt} checkpoint fuses {len(ids)} target layers; EAGLE-3 (and SlimSpec) fuse exactly 3")
    if any(i < 0 or i >= num_layers for i in ids):
        raise ConversionError(f"{fmt} target layer ids map to hidden_states indices {ids}, outside 0..{num_layers - 1} "
                              f"for a {num_layers}-layer target (index {num_layers} would be the final, normed output)")
    return ids


# ----------------------------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------------------------
def read_eagle(raw: dict, state: dict, num_layers) -> SourceDrafter:
    cfg = _body_config(raw, "eagle", head_dim_from_config=False)
    _check_keys(state, "eagle")
    cfg.update(_vocab(state, cfg, "eagle"))
    cfg["target_hidden_size"] = int(raw.get("target_hidden_size") or cfg["hidden_size"])
    cfg["target_layer_ids"] = _resolve_layers(None, num_layers, "eagle", 0)
    cfg["norm_before_residual"] = False
    notes = ["SafeAILab EAGLE: target layers are the inputs of layers [2, L//2, L-3] = hidden_states indices "
             f"{cfg['target_layer_ids']}"]
    return SourceDrafter("eagle", cfg, state, raw, notes)


def read_specforge(raw: dict, state: dict, num_layers) -> SourceDrafter:
    _refuse_flags(raw, "specforge", [("fc_norm", "per-layer RMSNorm of the three target states, 'Eagle 3.1'")])
    if raw.get("norm_output") is False:
        raise ConversionError("specforge config sets norm_output=false (logits without the final norm); SlimSpec "
                              "always applies the final norm before the head")
    cfg = _body_config(raw, "specforge", head_dim_from_config=True)
    _check_keys(state, "specforge")
    cfg.update(_vocab(state, cfg, "specforge"))
    cfg["target_hidden_size"] = int(raw.get("target_hidden_size") or cfg["hidden_size"])
    ids = (raw.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
    cfg["target_layer_ids"] = _resolve_layers(ids, num_layers, "specforge", shift=1)
    cfg["norm_before_residual"] = False
    notes = [f"SpecForge numbers layer outputs: ids {ids} -> hidden_states indices {cfg['target_layer_ids']}" if ids
             else f"SpecForge default layers -> hidden_states indices {cfg['target_layer_ids']}"]
    return SourceDrafter("specforge", cfg, state, raw, notes)


def read_speculators(raw: dict, state: dict, num_layers) -> SourceDrafter:
    _refuse_flags(raw, "speculators", [
        ("fc_norm", "per-layer RMSNorm of the three target states"),
        ("norm_before_fc", "RMSNorm of the fused 3*d_t input before fc"),
        ("norm_output", "feeds the post-norm hidden state back between drafting steps")])
    layer_cfg = raw.get("transformer_layer_config")
    if not isinstance(layer_cfg, dict):
        raise ConversionError("speculators config lacks transformer_layer_config")
    if layer_cfg.get("model_type", "llama") != "llama":
        raise ConversionError(f"speculators transformer_layer_config.model_type={layer_cfg.get('model_type')!r}: only "
                              f"Llama drafter layers are supported (Qwen3 layers add q/k norms)")
    cfg = _body_config(layer_cfg, "speculators", head_dim_from_config=True)
    cfg["attention_bias"] = bool(layer_cfg.get("attention_bias", False))
    renamed = {("midlayer." + k[len("layers.0."):]) if k.startswith("layers.0.") else k: v for k, v in state.items()}
    _check_keys(renamed, "speculators")
    if raw.get("draft_vocab_size") and int(raw["draft_vocab_size"]) != renamed["lm_head.weight"].shape[0]:
        raise ConversionError(f"speculators config says draft_vocab_size={raw['draft_vocab_size']} but lm_head.weight "
                              f"has {renamed['lm_head.weight'].shape[0]} rows")
    cfg.update(_vocab(renamed, cfg, "speculators"))
    cfg["target_hidden_size"] = int(raw.get("target_hidden_size") or cfg["hidden_size"])
    ids = raw.get("eagle_aux_hidden_state_layer_ids")
    cfg["target_layer_ids"] = _resolve_layers(ids, num_layers, "speculators", shift=0)
    if "norm_before_residual" not in raw:
        raise ConversionError("speculators config lacks norm_before_residual (vLLM would assume true, the speculators "
                              "library false): add the key to the source config.json")
    cfg["norm_before_residual"] = bool(raw["norm_before_residual"])
    verifier = (raw.get("speculators_config") or {}).get("verifier") or {}
    cfg["target_name_or_path"] = verifier.get("name_or_path")
    source = SourceDrafter("speculators", cfg, renamed, raw, ["speculators: layers.0.* -> midlayer.*"])
    source.target_architectures = verifier.get("architectures") or None
    return source


def read_slimspec(raw: dict, state: dict, num_layers) -> SourceDrafter:
    keep = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act",
            "rms_norm_eps", "rope_theta", "rope_scaling_config", "max_position_embeddings", "attention_bias",
            "target_hidden_size", "target_layer_ids", "target_num_hidden_layers", "vocab_size", "draft_vocab_size",
            "norm_before_residual", "target_model_type", "target_name_or_path")
    cfg = {k: raw[k] for k in keep if k in raw}
    state, notes = dict(state), []
    if "lm_head.up.weight" in state:  # a low-rank head: densify, it is refactorized at the requested rank
        up, down = state.pop("lm_head.up.weight"), state.pop("lm_head.down.weight")
        state["lm_head.weight"] = (up.float() @ down.float()).to(up.dtype)
        notes.append(f"the source's rank-{up.shape[1]} head is read as its dense product up @ down")
    _check_keys(state, "slimspec")
    return SourceDrafter("slimspec", cfg, state, raw, notes)


READERS = {"eagle": read_eagle, "specforge": read_specforge, "speculators": read_speculators, "slimspec": read_slimspec}


def read_source(folder, fmt: str = "auto", num_layers=None, progress=None) -> SourceDrafter:
    """Read a drafter folder in any supported format (``fmt`` "auto" detects it)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConversionError(f"{folder} is not a folder")
    raw = read_json(folder / "config.json")
    state = read_weights(folder, progress)
    detected = detect_format(raw, state.keys()) if fmt == "auto" else fmt
    if detected not in READERS:
        raise ConversionError(f"unknown format {fmt!r}; choose from auto, {', '.join(FORMATS)}")
    num_layers = num_layers or raw.get("target_num_hidden_layers")  # only SlimSpec configs record it
    source = READERS[detected](raw, state, num_layers)
    source.config.setdefault("target_num_hidden_layers", num_layers)
    source.source = str(folder)
    source.license = raw.get("license") or _card_license(folder)
    return source


def _card_license(folder: Path):
    readme = folder / "README.md"
    if not readme.exists():
        return None
    text = readme.read_text(errors="replace")
    if text.startswith("---"):
        for line in text.split("---", 2)[1].splitlines():
            if line.strip().startswith("license:"):
                return line.split(":", 1)[1].strip() or None
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Writers (serving-engine export: dense lm_head, the format's own names and config)
#
# Each writer takes the SlimSpec config, a state dict with a dense ``lm_head.weight`` (and ``embed_tokens.weight``
# when the drafter owns an embedding, or when ``convert`` materialized the target's for a target whose embedding
# module is not a plain lookup), and the target's ``architectures``. It returns (config.json dict, tensors) that the
# peer's own loader reads back into the same drafter, or raises ConversionError when the peer cannot represent it.
# ----------------------------------------------------------------------------------------------------------------------
def export_support(config, has_embedding: bool) -> dict:
    """{format: None where ``--export format`` works for a drafter with this config, else the reason it is refused}
    (the writers' own checks, run on the config alone)."""
    state = {"embed_tokens.weight": None} if has_embedding else {}
    support = {}
    for fmt, writer in WRITERS.items():
        try:
            writer(config, dict(state))
            support[fmt] = None
        except ConversionError as refusal:
            support[fmt] = str(refusal)
    return support


def to_eagle(config, state: dict, target_architectures=None) -> tuple:
    """SlimSpec -> SafeAILab EAGLE (``eagle/model/cnets.py``, EAGLE-3 ``Model``), whose loader:

    * sizes ``fc`` as 3 * ``target_hidden_size`` when that key is in config.json, else 3 * ``hidden_size``;
    * copies the target's ``model.embed_tokens.weight`` (from the base model's checkpoint index) into its
      embedding only when ``target_hidden_size`` is ABSENT, then ``load_state_dict(strict=False)`` the export, so
      an embedding in the export wins and a missing one is left random without an error;
    * derives head_dim as hidden_size // num_attention_heads and reads ``rope_scaling["type"]`` (linear, dynamic).

    So: a drafter with its own embedding (or a materialized one) is written with it and with target_hidden_size;
    a drafter sharing a plain target embedding is written without target_hidden_size, so EAGLE loads the target's
    embedding itself, which needs target_hidden_size == hidden_size (always true when the embedding is shared,
    since the shared matrix is V x target_hidden_size); anything else is refused.
    """
    if config.head_dim != config.hidden_size // config.num_attention_heads:
        raise ConversionError("SafeAILab EAGLE derives head_dim as hidden_size // num_attention_heads; this drafter's "
                              f"head_dim {config.head_dim} cannot be expressed: export --export speculators instead")
    if config.norm_before_residual:
        raise ConversionError("SafeAILab EAGLE has no norm_before_residual variant: "
                              "export --export speculators instead")
    if list(config.target_layer_ids) != default_layer_ids(config.target_num_hidden_layers):
        raise ConversionError(f"SafeAILab EAGLE hard-codes target layers [2, L//2, L-3]; this drafter uses "
                              f"{config.target_layer_ids}: export --export speculators instead")
    has_embedding = "embed_tokens.weight" in state
    if not has_embedding and config.target_hidden_size != config.hidden_size:
        raise ConversionError(
            f"this drafter shares its target's embedding but has target_hidden_size {config.target_hidden_size} != "
            f"hidden_size {config.hidden_size}: SafeAILab EAGLE only loads the target's embedding when config.json "
            f"has no target_hidden_size, and without it sizes fc for 3 * hidden_size; convert a drafter that has its "
            f"own embed_tokens (not --drop-embeddings) to export it")
    raw = _llama_fields(config)
    raw["rope_scaling"] = _eagle_rope_scaling(config.rope_scaling_config)
    raw.update(architectures=["LlamaForCausalLM"], model_type="llama", draft_vocab_size=config.head_vocab_size)
    if has_embedding:  # present -> EAGLE keeps the export's embedding; absent -> EAGLE loads the target's
        raw["target_hidden_size"] = config.target_hidden_size
    return raw, dict(state)


def _eagle_rope_scaling(scaling):
    """SafeAILab's attention reads ``rope_scaling["type"]`` and implements linear and dynamic scaling only."""
    if not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind != "linear":
        raise ConversionError(f"SafeAILab EAGLE implements linear (and dynamic) RoPE scaling only; this drafter uses "
                              f"{kind!r}: export --export speculators instead")
    return {"type": "linear", "factor": float(scaling["factor"])}


def to_speculators(config, state: dict, target_architectures=None) -> tuple:
    """SlimSpec -> vLLM speculators ``Eagle3Speculator`` (speculators 0.9.0 ``Eagle3DraftModel``), whose loader:

    * validates ``speculators_config.verifier`` with pydantic (name_or_path, architectures: a list of str) and
      cannot load without a verifier: ``load_verifier_weights`` calls ``AutoConfig.from_pretrained(name_or_path)``
      and refuses a verifier whose hidden_size differs from the drafter's;
    * sizes ``fc`` as 3 * ``transformer_layer_config.hidden_size`` (it ignores ``target_hidden_size``);
    * fills ``embed_tokens`` from the verifier's checkpoint when the export has none (and keeps the export's
      ``lm_head``, ``d2t``/``t2d``); honours head_dim, attention_bias, norm_before_residual and llama/linear/llama3
      RoPE through transformers' Llama layer.

    So an export needs a known target (refused otherwise: pass --target) and target_hidden_size == hidden_size.
    """
    if config.target_hidden_size != config.hidden_size:
        raise ConversionError(
            f"speculators sizes fc as 3 * hidden_size and ignores target_hidden_size, so this drafter "
            f"(target_hidden_size {config.target_hidden_size} != hidden_size {config.hidden_size}) cannot be written "
            f"in its format: export --export eagle instead (it keeps target_hidden_size)")
    if not config.target_name_or_path:
        raise ConversionError(
            "the speculators format needs the target (verifier) model: its loader reads "
            "speculators_config.verifier.name_or_path to fetch the target's embedding and check sizes, and cannot load "
            "an export without it; pass --target TARGET (the target's Hub id or folder)")
    layer = _llama_fields(config)
    layer["model_type"] = "llama"
    raw = dict(architectures=["Eagle3Speculator"], speculators_model_type="eagle3",
               draft_vocab_size=config.head_vocab_size, norm_before_residual=bool(config.norm_before_residual),
               norm_before_fc=False, fc_norm=False, norm_output=False, target_hidden_size=config.target_hidden_size,
               eagle_aux_hidden_state_layer_ids=list(config.target_layer_ids), transformer_layer_config=layer,
               speculators_config=dict(algorithm="eagle3", default_proposal_method="greedy",
                                       proposal_methods=[dict(proposal_type="greedy", speculative_tokens=5,
                                                              verifier_accept_k=1, accept_tolerance=0.0)],
                                       verifier=dict(name_or_path=config.target_name_or_path,
                                                     architectures=list(target_architectures or []))))
    tensors = {("layers.0." + k[len("midlayer."):]) if k.startswith("midlayer.") else k: v for k, v in state.items()}
    return raw, tensors


def _llama_fields(config) -> dict:
    out = dict(hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
               num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
               head_dim=config.head_dim, num_hidden_layers=1, hidden_act=config.hidden_act,
               rms_norm_eps=config.rms_norm_eps, rope_theta=config.rope_theta,
               max_position_embeddings=config.max_position_embeddings, vocab_size=config.vocab_size,
               attention_bias=bool(config.attention_bias), tie_word_embeddings=False)
    out["rope_scaling"] = dict(config.rope_scaling_config) if config.rope_scaling_config else None
    return out


WRITERS = {"eagle": to_eagle, "speculators": to_speculators}
