# coding=utf-8
# Copyright 2026 The SlimSpec authors. Licensed under the Apache License, Version 2.0.
"""SlimSpec drafter configuration.

This file is Hub custom code: it is copied next to the weights by ``save_pretrained`` and
imported by ``AutoConfig.from_pretrained(..., trust_remote_code=True)``. It imports only the
standard library and transformers, and never touches the network.
"""

from __future__ import annotations

import numbers

from transformers import PretrainedConfig

_SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
_SUPPORTED_ACTIVATIONS = ("silu", "gelu", "gelu_pytorch_tanh", "relu")

# The one head-rank grammar of the project (config, slimspec-convert, slimspec-train, slimspec-bench).
DENSE_RANKS = ("dense", "full", "none")
RANK_FORMS = (
    "an int r (1 <= r <= hidden size), 'd/N' (hidden size // N, N a positive int, e.g. d/8), "
    "'dense' / 'full' / None (keep the dense head), or an energy fraction F in (0, 1] given as a float, "
    "'0.99' or 'energy:0.99' (the smallest rank keeping F of the head's spectral energy sum(s_i^2))"
)


def resolve_head_rank(head_rank, hidden_size: int, vocab_rows: int | None = None, spectrum=None):
    """Turn any user-facing head rank into None (dense head) or an int r, checked against the head's size.

    Forms (``RANK_FORMS``): None / "dense" / "full" / "none" -> None; an int or digit string -> r;
    "d/N" -> max(1, hidden_size // N); a float in (0, 1], a decimal string ("0.99") or "energy:F" -> the smallest
    r whose top singular values keep a fraction F of sum(s_i^2). The energy forms need the head's spectrum:
    ``spectrum`` is a callable returning its squared singular values (any order), called only for those forms.
    ``vocab_rows`` (rows of the head, when known) tightens the bound to r <= min(hidden_size, vocab_rows).

    >>> resolve_head_rank("d/8", 640)
    80
    >>> resolve_head_rank("energy:0.9", 4, spectrum=lambda: [8.0, 1.0, 0.5, 0.5])
    2
    """
    kind, value = parse_head_rank(head_rank)
    if kind == "dense":
        return None
    if kind == "fraction":
        rank = max(1, hidden_size // value)
    elif kind == "energy":
        if spectrum is None:
            raise ValueError(
                f"head rank {head_rank!r} is an energy fraction, which needs the head's singular values: resolve it "
                f"where the dense head is known (slimspec-convert --rank energy:{value} or --energy {value}), or give "
                f"an int or d/N."
            )
        rank = _rank_for_energy(value, spectrum())
    else:
        rank = value
    limit = hidden_size if vocab_rows is None else min(hidden_size, vocab_rows)
    if not 1 <= rank <= limit:
        shape = f"a {vocab_rows} x {hidden_size} head" if vocab_rows is not None else f"hidden size {hidden_size}"
        raise ValueError(
            f"rank {rank} does not fit {shape}: use 1 <= rank <= {limit} (rank {limit} reproduces the head exactly "
            f"with more parameters than dense; 'dense' keeps the dense head)."
        )
    return rank


def parse_head_rank(head_rank):
    """Classify a head rank without resolving it: ("dense", None), ("int", r), ("fraction", N) for "d/N", or
    ("energy", F); ValueError naming the valid forms otherwise. ``resolve_head_rank`` is what callers want."""
    if head_rank is None:
        return "dense", None
    if isinstance(head_rank, bool):
        pass  # a bool is not a rank (True would read as 1)
    elif isinstance(head_rank, numbers.Integral):
        return "int", int(head_rank)
    elif isinstance(head_rank, numbers.Real):
        if 0.0 < head_rank <= 1.0:
            return "energy", float(head_rank)
    elif isinstance(head_rank, str):
        key = head_rank.strip().lower().replace(" ", "")
        if key in DENSE_RANKS:
            return "dense", None
        if key.isdigit():
            return "int", int(key)
        if key.startswith("d/") and key[2:].isdigit() and int(key[2:]) > 0:
            return "fraction", int(key[2:])
        number = key[len("energy:"):] if key.startswith("energy:") else key
        try:
            fraction = float(number) if (key.startswith("energy:") or "." in number) else None
        except ValueError:
            fraction = None
        if fraction is not None and 0.0 < fraction <= 1.0:
            return "energy", fraction
    raise ValueError(f"head rank {head_rank!r} is not understood; use {RANK_FORMS}.")


def _rank_for_energy(fraction: float, squared_singular_values) -> int:
    """The smallest r whose r largest squared singular values sum to at least ``fraction`` of the total."""
    s2 = sorted((max(float(x), 0.0) for x in squared_singular_values), reverse=True)
    total = sum(s2)
    if total <= 0.0:
        raise ValueError("the head is all zeros: it has no spectral energy to keep; use 'dense' or an int rank.")
    kept = 0.0
    for r, value in enumerate(s2, start=1):
        kept += value
        if kept >= fraction * total:
            return r
    return len(s2)  # rounding left the last partial sum a hair below fraction * total


def default_target_layer_ids(num_target_layers: int) -> list:
    """EAGLE-3's default target layers, as indices into HF ``outputs.hidden_states``.

    ``hidden_states[k]`` is the *input* of decoder layer k (index 0 is the embedding output), which is
    the convention of the original EAGLE code, vLLM and speculators: ``[2, L // 2, L - 3]``.
    (SpecForge/SGLang number the same three tensors as layer *outputs*: ``[1, L // 2 - 1, L - 4]``.)
    """
    L = num_target_layers
    return [2, L // 2, L - 3]


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


_POSITIVE_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                    "target_hidden_size", "target_num_hidden_layers", "vocab_size", "max_position_embeddings")


def _check_sizes(config) -> None:
    for name in _POSITIVE_FIELDS:
        value = getattr(config, name)
        if not _is_positive_int(value):
            raise ValueError(f"SlimSpecConfig.{name} must be a positive int, got {value!r}.")


def _check_body(config) -> None:
    """The decoder layer: one layer, grouped-query heads, even rotary head_dim, supported activation and RoPE."""
    if config.num_hidden_layers != 1:
        raise ValueError(
            f"SlimSpecConfig.num_hidden_layers must be 1 (an EAGLE-3 drafter has one decoder layer), "
            f"got {config.num_hidden_layers}."
        )
    if config.num_attention_heads % config.num_key_value_heads:
        raise ValueError(
            f"num_attention_heads ({config.num_attention_heads}) must be a multiple of num_key_value_heads "
            f"({config.num_key_value_heads})."
        )
    if config.head_dim % 2:
        raise ValueError(f"head_dim must be even for rotary embeddings, got {config.head_dim}.")
    if config.hidden_act not in _SUPPORTED_ACTIVATIONS:
        raise ValueError(f"hidden_act={config.hidden_act!r} is not supported; use one of {_SUPPORTED_ACTIVATIONS}.")
    scaling = config.rope_scaling_config
    if scaling is not None:
        rope_type = scaling.get("rope_type", scaling.get("type", "default"))
        if rope_type not in _SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"rope_scaling_config rope_type={rope_type!r} is not supported; use one of {_SUPPORTED_ROPE_TYPES}."
            )


def _check_target_layers(ids, num_layers: int) -> None:
    if not isinstance(ids, (list, tuple)) or len(ids) != 3 or not all(isinstance(i, int) for i in ids):
        raise ValueError(f"target_layer_ids must be a list of 3 ints (EAGLE-3 fuses three target layers), got {ids!r}.")
    bad = [i for i in ids if not 0 <= i <= num_layers]
    if bad:
        raise ValueError(
            f"target_layer_ids {list(ids)} has {bad} out of range for a target with {num_layers} layers: valid "
            f"indices into outputs.hidden_states are 0..{num_layers} (HF convention, hidden_states[k] is the input of "
            f"layer k). If your ids number layer *outputs* (SpecForge/SGLang), add 1 to each."
        )


def _check_draft_vocab(draft_vocab_size, vocab_size: int) -> None:
    if draft_vocab_size is None:
        return
    if not _is_positive_int(draft_vocab_size):
        raise ValueError(f"draft_vocab_size must be a positive int or None, got {draft_vocab_size!r}.")
    if draft_vocab_size > vocab_size:
        raise ValueError(
            f"draft_vocab_size ({draft_vocab_size}) cannot exceed vocab_size ({vocab_size}); "
            f"use None for a full-vocabulary head."
        )


def check_vocab_maps(d2t, t2d, vocab_size: int, draft_vocab_size: int) -> None:
    """Raise ValueError naming what is wrong with a truncated vocabulary's maps: ``d2t`` [V_d] is an OFFSET table
    (target id = draft id + d2t[draft id]) into [0, V), ``t2d`` [V] bool marks exactly those target ids."""
    import torch

    V, V_d = vocab_size, draft_vocab_size
    if tuple(d2t.shape) != (V_d,) or tuple(t2d.shape) != (V,):
        raise ValueError(f"d2t must be [{V_d}] and t2d [{V}], got {tuple(d2t.shape)} and {tuple(t2d.shape)}.")
    target_ids = torch.arange(V_d, device=d2t.device) + d2t.long()
    bad = (target_ids < 0) | (target_ids >= V)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"d2t is an offset table (target = draft + d2t[draft]) but draft id {i} maps to "
                         f"{int(target_ids[i])}, outside [0, {V}): the maps are corrupt or d2t holds absolute ids "
                         f"instead of offsets.")
    count = int(t2d.sum())
    if count != V_d:
        raise ValueError(f"t2d marks {count} target tokens but draft_vocab_size is {V_d}"
                         + (" (vocab maps were never set or are missing from the checkpoint)." if count == 0 else "."))
    if target_ids.unique().numel() != V_d or not bool(t2d[target_ids].all()):
        raise ValueError("d2t and t2d disagree: the draft ids do not map one-to-one onto the tokens t2d marks.")


class SlimSpecConfig(PretrainedConfig):
    r"""Configuration of a SlimSpec drafter: an EAGLE-3 drafter whose LM head may be low-rank.

    Drafter body (one Llama decoder layer whose attention reads ``2 * hidden_size`` inputs):
        hidden_size, intermediate_size, num_attention_heads, num_key_value_heads, head_dim,
        hidden_act, rms_norm_eps, rope_theta, rope_scaling_config, max_position_embeddings,
        attention_bias, num_hidden_layers (always 1).

    Link to the target model:
        target_hidden_size (int): hidden size of the target; ``fc`` maps ``3 * target_hidden_size -> hidden_size``.
        target_layer_ids (list of 3 ints): indices into the target's ``outputs.hidden_states``
            (HF convention: ``hidden_states[k]`` is the *input* of decoder layer k, ``hidden_states[0]`` is the
            embedding output). Default ``[2, L // 2, L - 3]`` for a target with L layers.
        target_num_hidden_layers (int): L, used to validate ``target_layer_ids`` and the target at attach time.
        vocab_size (int): the target's vocabulary size V. Drafted token ids are always target ids.
        draft_vocab_size (int, optional): size of a truncated draft vocabulary (EAGLE-3 ``d2t``/``t2d``).
            None means the head covers the full vocabulary.
        share_target_embeddings (bool): if True (default) the drafter holds no embedding matrix of its own and
            uses the attached target's input embedding module (shared, never copied).

    Variants:
        norm_before_residual (bool): False = original EAGLE-3 (the residual is the raw fused hidden state);
            True = vLLM speculators' variant (the residual is taken after ``hidden_norm``).

    Head:
        head_rank (int, optional): None = dense head ``Linear(d, V_draft)``; r = low-rank head
            ``up(down(h))`` with ``down: d -> r`` and ``up: r -> V_draft``, no bias, nothing in between.
            Accepts every form of ``resolve_head_rank`` that needs no weights: an int, "d/N", "dense"/"full"/None.
            ``1 <= r <= hidden_size``.

    ``rope_scaling_config`` uses the key layout of HF's ``rope_scaling`` dicts (``rope_type``, ``factor``, ...);
    it is named differently because recent transformers releases reserve ``rope_scaling`` on every config.
    """

    model_type = "slimspec"

    def __init__(
        self,
        hidden_size: int = 4096,
        intermediate_size: int = 14336,
        num_attention_heads: int = 32,
        num_key_value_heads: int = 8,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 10000.0,
        rope_scaling_config: dict | None = None,
        max_position_embeddings: int = 8192,
        attention_bias: bool = False,
        num_hidden_layers: int = 1,
        target_hidden_size: int | None = None,
        target_layer_ids: list | None = None,
        target_num_hidden_layers: int = 32,
        vocab_size: int = 128256,
        draft_vocab_size: int | None = None,
        share_target_embeddings: bool = True,
        norm_before_residual: bool = False,
        head_rank=None,
        initializer_range: float = 0.02,
        target_model_type: str | None = None,
        target_name_or_path: str | None = None,
        **kwargs,
    ):
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim if head_dim is not None else hidden_size // num_attention_heads
        self.hidden_act = hidden_act
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = float(rope_theta)
        self.rope_scaling_config = dict(rope_scaling_config) if rope_scaling_config else None
        self.max_position_embeddings = max_position_embeddings
        self.attention_bias = attention_bias
        self.num_hidden_layers = num_hidden_layers
        self.target_hidden_size = target_hidden_size if target_hidden_size is not None else hidden_size
        self.target_num_hidden_layers = target_num_hidden_layers
        if target_layer_ids is None:
            target_layer_ids = default_target_layer_ids(target_num_hidden_layers)
        self.target_layer_ids = list(target_layer_ids)
        self.vocab_size = vocab_size
        self.draft_vocab_size = draft_vocab_size
        self.share_target_embeddings = share_target_embeddings
        self.norm_before_residual = norm_before_residual
        self.head_rank = resolve_head_rank(head_rank, hidden_size)
        self.initializer_range = initializer_range
        self.target_model_type = target_model_type
        self.target_name_or_path = target_name_or_path
        # The one switch for weight tying: transformers ties the head to the input embedding only where this flag is
        # set, and a drafter's head is never tied (EAGLE-3 trains it apart from the target's frozen embedding).
        kwargs["tie_word_embeddings"] = False
        # auto_map names what this code provides: a config and a model (a drafter is not a causal LM). Checkpoints
        # written by earlier releases also mapped AutoModelForCausalLM; a re-save must not carry that on.
        if isinstance(kwargs.get("auto_map"), dict):
            kwargs["auto_map"] = {k: v for k, v in kwargs["auto_map"].items() if k in ("AutoConfig", "AutoModel")}
        super().__init__(**kwargs)
        self._check_fields()

    # ------------------------------------------------------------------ derived sizes
    @property
    def head_vocab_size(self) -> int:
        """Number of rows of the LM head: the draft vocabulary if truncated, else the full vocabulary."""
        return self.draft_vocab_size if self.draft_vocab_size is not None else self.vocab_size

    # ------------------------------------------------------------------ checks
    def _check_fields(self) -> None:
        """Raise ``ValueError`` naming the offending field and how to fix it; run once, by ``__init__``.

        Not named ``validate``: transformers' configs reserve that name for their own checks (huggingface_hub's
        ``@strict`` protocol), which still run at save time. The head rank is checked by ``resolve_head_rank``."""
        _check_sizes(self)
        _check_body(self)
        _check_target_layers(self.target_layer_ids, self.target_num_hidden_layers)
        _check_draft_vocab(self.draft_vocab_size, self.vocab_size)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_target_config(
        cls,
        target_config,
        head_rank="d/8",
        draft_vocab_size: int | None = None,
        target_layer_ids: list | None = None,
        **overrides,
    ) -> "SlimSpecConfig":
        """Size a fresh drafter for ``target_config`` with EAGLE-3 defaults.

        Same hidden size, attention heads, head_dim and MLP width as the target, one decoder layer,
        target layers ``[2, L // 2, L - 3]`` (indices into ``outputs.hidden_states``).
        ``head_rank`` accepts None/"dense"/"full", an int or "d/N" (see ``resolve_head_rank``).
        ``overrides`` set any other field.
        """
        text = target_config.get_text_config() if hasattr(target_config, "get_text_config") else target_config
        required = ("hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads")
        missing = [k for k in required if getattr(text, k, None) is None]
        if missing:
            raise ValueError(
                f"target config of type {type(target_config).__name__} lacks {missing}; pass a decoder-only "
                f"causal LM config (e.g. LlamaConfig, Gemma3TextConfig)."
            )
        d = text.hidden_size
        num_heads = text.num_attention_heads
        kwargs = dict(
            hidden_size=d,
            intermediate_size=getattr(text, "intermediate_size", None) or 4 * d,
            num_attention_heads=num_heads,
            num_key_value_heads=getattr(text, "num_key_value_heads", None) or num_heads,
            head_dim=getattr(text, "head_dim", None) or d // num_heads,
            rms_norm_eps=getattr(text, "rms_norm_eps", None) or 1e-6,
            rope_theta=_target_rope_theta(text),
            max_position_embeddings=getattr(text, "max_position_embeddings", None) or 8192,
            target_hidden_size=d,
            target_num_hidden_layers=text.num_hidden_layers,
            target_layer_ids=target_layer_ids,
            vocab_size=text.vocab_size,
            draft_vocab_size=draft_vocab_size,
            head_rank=resolve_head_rank(head_rank, overrides.get("hidden_size", d)),
            target_model_type=getattr(text, "model_type", None),
            target_name_or_path=getattr(target_config, "_name_or_path", None) or None,
            pad_token_id=getattr(text, "pad_token_id", None),
            bos_token_id=getattr(text, "bos_token_id", None),
            eos_token_id=getattr(text, "eos_token_id", None),
        )
        kwargs.update(overrides)
        return cls(**kwargs)


def _target_rope_theta(text_config) -> float:
    """Read the target's RoPE base across transformers releases (``rope_theta`` or ``rope_parameters``)."""
    theta = getattr(text_config, "rope_theta", None)
    if isinstance(theta, (int, float)):
        return float(theta)
    params = getattr(text_config, "rope_parameters", None)
    if isinstance(params, dict):
        if isinstance(params.get("rope_theta"), (int, float)):
            return float(params["rope_theta"])
        # Per-layer-type parameters (e.g. Gemma 3: full_attention / sliding_attention): take the global one.
        for key in ("full_attention", *params.keys()):
            sub = params.get(key)
            if isinstance(sub, dict) and isinstance(sub.get("rope_theta"), (int, float)):
                return float(sub["rope_theta"])
    return 10000.0


SlimSpecConfig.register_for_auto_class()  # save_pretrained writes auto_map["AutoConfig"] and copies this file
