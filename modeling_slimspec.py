# coding=utf-8
# Copyright 2026 The SlimSpec authors. Licensed under the Apache License, Version 2.0.
"""SlimSpec drafter: an EAGLE-3 drafter whose LM head is a rank-r product ``up(down(h))``.

This file is Hub custom code (``AutoModel.from_pretrained(..., trust_remote_code=True)``): it imports only
the standard library, torch and transformers, and never touches the network.

Shapes: B batch, T positions, d = ``hidden_size``, d_t = ``target_hidden_size``, r = ``head_rank``,
V = ``vocab_size`` (the target's), V_d = draft vocabulary size (= V unless truncated).

The EAGLE-3 equations (SafeAILab/EAGLE ``cnets.py``, SpecForge ``llama3_eagle.py``), position t:

    x_t   = fc(cat(h^a_t, h^b_t, h^c_t))              fused target states      [B, T, 3 d_t] -> [B, T, d]
            (later drafting steps feed the drafter's own pre-norm output g_t instead of x_t)
    e_t   = embed(token_{t+1})                        the token *after* position t
    a_t   = cat(input_layernorm(e_t), hidden_norm(x_t))                         [B, T, 2 d]
    r_t   = x_t           (EAGLE)   or   hidden_norm(x_t)   (norm_before_residual, vLLM speculators)
    u_t   = r_t + o_proj(attn(q_proj(a), k_proj(a), v_proj(a)))_t             causal, RoPE
    g_t   = u_t + mlp(post_attention_layernorm(u_t))                           pre-norm output, fed back
    logits_t = head(norm(g_t))                        dense W [V_d, d], or SlimSpec: up(down(.)) with
                                                      down [r, d], up [V_d, r]
    target id = draft id + d2t[draft id]              d2t is an OFFSET table (truncated vocab only)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, PreTrainedModel

try:  # Hub case: this file lives in a dynamic module package next to the other Hub files.
    from .configuration_slimspec import SlimSpecConfig, check_vocab_maps
    from .generation_slimspec import SlimSpecGenerationMixin
    from .kernels_slimspec import PackedLinear  # noqa: F401  (named here because older transformers releases, 5.8
    #                                             among them, copy only this file's own relative imports)
except ImportError:  # Installed case: the Hub files are top-level modules.
    from configuration_slimspec import SlimSpecConfig, check_vocab_maps
    from generation_slimspec import SlimSpecGenerationMixin


# Drafting defaults, saved as generation_config.json next to the weights (transformers' assistant options).
DEFAULT_DRAFTING = dict(num_assistant_tokens=5, num_assistant_tokens_schedule="constant",
                        assistant_confidence_threshold=0.0)


# ----------------------------------------------------------------------------------------------------------------------
# Small parts
# ----------------------------------------------------------------------------------------------------------------------
class SlimSpecRMSNorm(nn.Module):
    """RMSNorm as in Llama/EAGLE: ``w * (x / sqrt(mean(x^2) + eps))`` computed in fp32, cast back before ``w``."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        x = hidden_states.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(input_dtype)


def rope_inverse_frequencies(config: SlimSpecConfig, device=None) -> torch.Tensor:
    """Inverse frequencies ``theta^(-2i/head_dim)``, with "linear" or "llama3" scaling if configured. [head_dim/2]"""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))
    scaling = config.rope_scaling_config or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "linear":
        inv_freq = inv_freq / float(scaling["factor"])
    elif rope_type == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
        old_len = float(scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv_freq = torch.where(is_medium, smoothed, scaled)
    return inv_freq


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """q: [B, H, T, hd], k: [B, H_kv, T, hd], cos/sin: [B, 1, T, hd]."""
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


_ACTIVATIONS = {
    "silu": F.silu,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class SlimSpecCache:
    """Key/value cache of the drafter's single attention layer, preallocated and croppable.

    keys/values: [B, H_kv, capacity, hd]; the first ``length`` positions are valid. ``crop(n)`` drops
    speculative entries (positions >= n) after the target rejected them.
    """

    def __init__(self):
        self.keys: Optional[torch.Tensor] = None
        self.values: Optional[torch.Tensor] = None
        self.length = 0

    def __len__(self) -> int:
        return self.length

    def crop(self, length: int) -> None:
        if length < 0 or length > self.length:
            raise ValueError(f"cannot crop a drafter cache of length {self.length} to {length}")
        self.length = length

    def update(self, k: torch.Tensor, v: torch.Tensor):
        """Append k, v ([B, H_kv, T, hd]) and return all valid keys and values."""
        new_len = self.length + k.shape[2]
        stale = self.keys is None or self.keys.dtype != k.dtype or self.keys.device != k.device
        if stale or new_len > self.keys.shape[2]:
            capacity = max(64, 2 * new_len)
            keys = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[3])
            values = v.new_empty(v.shape[0], v.shape[1], capacity, v.shape[3])
            if self.keys is not None and self.length:
                keys[:, :, : self.length] = self.keys[:, :, : self.length]
                values[:, :, : self.length] = self.values[:, :, : self.length]
            self.keys, self.values = keys, values
        self.keys[:, :, self.length : new_len] = k
        self.values[:, :, self.length : new_len] = v
        self.length = new_len
        return self.keys[:, :, :new_len], self.values[:, :, :new_len]


class SlimSpecAttention(nn.Module):
    """Causal self-attention whose q/k/v projections read the 2*d concatenation [emb ; hidden]."""

    def __init__(self, config: SlimSpecConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        d_in, bias = 2 * config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(d_in, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_in, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_in, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: Optional[SlimSpecCache],
                attn_mask: Optional[torch.Tensor] = None):
        """x: [B, T, 2d] -> [B, T, d]. Appends this call's keys/values to ``cache`` when given.

        ``attn_mask`` (bool, [T, S] with S = cached + T keys, True = may attend) replaces the causal rule; training
        uses it for EAGLE-3's training-time test, where the keys of earlier unrolled steps sit in the cache."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, k, cos, sin)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(k, v)
        if self.num_kv_heads != self.num_heads:
            rep = self.num_heads // self.num_kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        if attn_mask is not None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        elif T == 1:  # one new query sees every cached key
            out = F.scaled_dot_product_attention(q, k, v)
        elif past == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # query i sits at absolute position past + i and sees keys 0..past + i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


class SlimSpecMLP(nn.Module):
    """Gated MLP: ``down(act(gate(x)) * up(x))``."""

    def __init__(self, config: SlimSpecConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class SlimSpecDecoderLayer(nn.Module):
    """EAGLE-3's ``midlayer``: one Llama decoder layer reading [input_layernorm(emb) ; hidden_norm(hidden)]."""

    def __init__(self, config: SlimSpecConfig):
        super().__init__()
        self.norm_before_residual = config.norm_before_residual
        self.self_attn = SlimSpecAttention(config)
        self.mlp = SlimSpecMLP(config)
        self.hidden_norm = SlimSpecRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.input_layernorm = SlimSpecRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = SlimSpecRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, input_embeds, hidden_states, cos, sin, cache: Optional[SlimSpecCache] = None, attn_mask=None):
        """input_embeds, hidden_states: [B, T, d] -> pre-norm output g: [B, T, d]."""
        residual = hidden_states
        hidden_states = self.hidden_norm(hidden_states)
        if self.norm_before_residual:
            residual = hidden_states
        attn_in = torch.cat((self.input_layernorm(input_embeds), hidden_states), dim=-1)
        hidden_states = residual + self.self_attn(attn_in, cos, sin, cache, attn_mask)
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class SlimSpecLowRankHead(nn.Module):
    """The SlimSpec head: ``logits = up(down(h))``, down: d -> r, up: r -> V_d; no bias, norm or activation between.

    State-dict keys are ``down.weight`` [r, d] and ``up.weight`` [V_d, r] (``nn.Linear`` convention), so
    ``up.weight @ down.weight`` is the equivalent dense head. Batch 1 is memory bound: the ideal speedup over the
    dense head is the byte ratio V_d d / (r (V_d + d)), about 8x at r = d/8 (``kernels_slimspec`` has the CPU
    kernels that get close to it).
    """

    def __init__(self, hidden_size: int, rank: int, vocab_size: int):
        super().__init__()
        self.down = nn.Linear(hidden_size, rank, bias=False)
        self.up = nn.Linear(rank, vocab_size, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states: [..., d] -> logits [..., V_d]."""
        return self.up(self.down(hidden_states))

    def dense_weight(self) -> torch.Tensor:
        """The equivalent dense head ``W = up @ down``: [V_d, d] (computed in fp32, cast back)."""
        return (self.up.weight.float() @ self.down.weight.float()).to(self.up.weight.dtype)


@dataclass
class SlimSpecOutput:
    """Drafter outputs.

    logits: [B, T_keep, V_d] head logits in *draft* vocabulary (see ``to_target_logits``), or None.
    last_hidden_state: [B, T, d] pre-norm output g, fed back as ``hidden_states`` in the next drafting step.
    past_key_values: the drafter's ``SlimSpecCache`` (when ``use_cache``).

    A plain dataclass, not a ``ModelOutput``: transformers renames the fields of its own output classes between
    releases (5.24: ``past_key_values=`` -> ``cache=``); only SlimSpec's loop reads these, so the names are ours.
    ``out["logits"]``, ``out[0]`` and ``to_tuple()`` behave as on a ``ModelOutput``.
    """

    logits: Optional[torch.Tensor] = None
    last_hidden_state: Optional[torch.Tensor] = None
    past_key_values: Optional[SlimSpecCache] = None

    def to_tuple(self) -> tuple:
        """The fields that are not None, in order (as ``ModelOutput.to_tuple``)."""
        return tuple(v for v in (self.logits, self.last_hidden_state, self.past_key_values) if v is not None)

    def __getitem__(self, key):
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]


# ----------------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------------
class _Unregistered:
    """Holds a module without registering it as a submodule (no parameters(), state_dict(), .to() leakage)."""

    __slots__ = ("module",)

    def __init__(self, module):
        self.module = module


class SlimSpecPreTrainedModel(PreTrainedModel):
    config_class = SlimSpecConfig
    base_model_prefix = "slimspec"
    supports_gradient_checkpointing = False
    _no_split_modules = ["SlimSpecDecoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, SlimSpecRMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, SlimSpecDrafter) and module.d2t is not None:
            # Unset vocab maps: t2d selects nothing, so ``check_vocab_maps`` fails until real maps are loaded/set.
            nn.init.zeros_(module.d2t)
            nn.init.zeros_(module.t2d)


class SlimSpecDrafter(SlimSpecGenerationMixin, SlimSpecPreTrainedModel):
    """EAGLE-3 drafter with a dense or low-rank (SlimSpec) LM head.

    Submodules (EAGLE-3 names, so checkpoints map 1:1): ``embed_tokens`` (only if the drafter owns its
    embeddings), ``fc``, ``midlayer``, ``norm``, ``lm_head`` (``nn.Linear`` if dense, else
    ``SlimSpecLowRankHead``), buffers ``d2t`` [V_d] int64 and ``t2d`` [V] bool (truncated vocab only).
    """

    def __init__(self, config: SlimSpecConfig):
        super().__init__(config)
        d = config.hidden_size
        self.embed_tokens = None if config.share_target_embeddings else nn.Embedding(config.vocab_size, d)
        self.fc = nn.Linear(3 * config.target_hidden_size, d, bias=False)
        self.midlayer = SlimSpecDecoderLayer(config)
        self.norm = SlimSpecRMSNorm(d, eps=config.rms_norm_eps)
        V_d = config.head_vocab_size
        self.lm_head = (
            nn.Linear(d, V_d, bias=False) if config.head_rank is None else SlimSpecLowRankHead(d, config.head_rank, V_d)
        )
        if config.draft_vocab_size is not None:
            self.register_buffer("d2t", torch.zeros(V_d, dtype=torch.long))
            self.register_buffer("t2d", torch.zeros(config.vocab_size, dtype=torch.bool))
        else:
            self.d2t = None
            self.t2d = None
        self._shared_embedding = _Unregistered(None)
        self._attached = _Unregistered(None)
        self._inv_freq = None
        self.generation_config = GenerationConfig(**DEFAULT_DRAFTING)
        self.post_init()

    # ------------------------------------------------------------------ embeddings
    def get_input_embeddings(self):
        return self.embed_tokens if self.embed_tokens is not None else self._shared_embedding.module

    def set_input_embeddings(self, value):
        if self.embed_tokens is not None:
            self.embed_tokens = value
        else:
            self.use_target_embeddings(value)

    def use_target_embeddings(self, embedding: Optional[nn.Module]) -> None:
        """Share the target's input embedding module (not copied, not registered: it stays the target's)."""
        if embedding is not None:
            weight = getattr(embedding, "weight", None)
            if weight is not None and tuple(weight.shape) != (self.config.vocab_size, self.config.hidden_size):
                raise ValueError(
                    f"the target's input embedding is {tuple(weight.shape)} but this drafter needs "
                    f"({self.config.vocab_size}, {self.config.hidden_size}) = (vocab_size, hidden_size): wrong target?"
                )
        self._shared_embedding = _Unregistered(embedding)

    def embed(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """Token embeddings [B, T] -> [B, T, d] in the drafter's dtype (the target's module output, scale included)."""
        module = self.get_input_embeddings()
        if module is None:
            raise RuntimeError(
                "this drafter shares its target's input embeddings and none is bound: call drafter.attach(target) "
                "(or drafter.use_target_embeddings(target.get_input_embeddings())) first."
            )
        return module(input_ids.to(_module_device(module, input_ids.device))).to(self.fc.weight.device, self.dtype)

    # ------------------------------------------------------------------ vocabulary maps
    def set_vocab_maps(self, target_ids: torch.Tensor) -> None:
        """Set d2t/t2d from the sorted target ids kept in the draft vocabulary ([V_d], distinct, in [0, V))."""
        if self.d2t is None:
            raise ValueError("this drafter has a full-vocabulary head (draft_vocab_size=None): it has no vocab maps.")
        ids = torch.as_tensor(target_ids, dtype=torch.long).flatten().sort().values
        if ids.numel() != self.config.draft_vocab_size:
            raise ValueError(
                f"expected {self.config.draft_vocab_size} target ids for the draft vocab, got {ids.numel()}.")
        with torch.no_grad():
            self.d2t.copy_(ids - torch.arange(ids.numel()))
            self.t2d.zero_()
            self.t2d[ids.clamp(0, self.config.vocab_size - 1)] = True
        self.check_vocab_maps()

    def check_vocab_maps(self) -> None:
        """Validate the truncated-vocab maps (``check_vocab_maps`` in the config file): target id = draft id +
        d2t[draft id] (an OFFSET table), one-to-one onto the tokens t2d marks."""
        if self.d2t is not None:
            check_vocab_maps(self.d2t, self.t2d, self.config.vocab_size, self.config.draft_vocab_size)

    def draft_to_target_ids(self, draft_ids: torch.LongTensor) -> torch.LongTensor:
        """Draft-vocab ids -> target ids (identity for a full-vocabulary head)."""
        return draft_ids if self.d2t is None else draft_ids + self.d2t[draft_ids]

    def to_target_logits(self, draft_logits: torch.Tensor) -> torch.Tensor:
        """[..., V_d] draft logits -> [..., V] target-vocabulary logits (-inf for tokens outside the draft vocab)."""
        if self.d2t is None:
            return draft_logits
        full = draft_logits.new_full((*draft_logits.shape[:-1], self.config.vocab_size), float("-inf"))
        index = (torch.arange(self.config.draft_vocab_size, device=self.d2t.device) + self.d2t).to(draft_logits.device)
        full[..., index] = draft_logits
        return full

    # ------------------------------------------------------------------ forward
    def _rotary(self, position_ids: torch.LongTensor, dtype: torch.dtype):
        if self._inv_freq is None or self._inv_freq.device != position_ids.device:
            self._inv_freq = rope_inverse_frequencies(self.config, device=position_ids.device)
        freqs = position_ids.to(torch.float32)[..., None] * self._inv_freq  # [B, T, hd/2]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, T, hd]
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def fuse(self, target_hidden_states: torch.Tensor) -> torch.Tensor:
        """Fuse the three target layers: [B, T, 3 d_t] (concatenated in ``target_layer_ids`` order) -> [B, T, d]."""
        expected = 3 * self.config.target_hidden_size
        if target_hidden_states.shape[-1] != expected:
            raise ValueError(
                f"target_hidden_states has last dim {target_hidden_states.shape[-1]}, expected 3 * target_hidden_size "
                f"= {expected}: wrong target, or layers not concatenated?"
            )
        return self.fc(target_hidden_states.to(self.fc.weight.dtype))

    def head(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Pre-norm hidden [..., d] -> draft-vocab logits [..., V_d]: ``lm_head(norm(g))``."""
        return self.lm_head(self.norm(hidden_states))

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        hidden_states: Optional[torch.Tensor] = None,
        target_hidden_states: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[SlimSpecCache] = None,
        use_cache: Optional[bool] = None,
        logits_to_keep: int = 0,
        attention_mask: Optional[torch.Tensor] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> SlimSpecOutput:
        """One drafter pass over T positions.

        Args:
            input_ids: [B, T] the tokens paired with each position (token t+1 for target position t).
            hidden_states: [B, T, d] already fused (``fuse``) or the drafter's own previous output.
            target_hidden_states: [B, T, 3 d_t] raw target states; fused with ``fc`` here. Give exactly one of
                ``hidden_states`` / ``target_hidden_states``.
            inputs_embeds: [B, T, d] instead of ``input_ids``.
            position_ids: [B, T] or [T]; default ``cache length + arange(T)``.
            past_key_values: a ``SlimSpecCache`` to extend (created when ``use_cache`` and None).
            logits_to_keep: compute logits for the last k positions only (0 = all; -1 = none).
            attention_mask: optional bool [T, cache length + T] (True = may attend) replacing the causal rule.
        """
        if (hidden_states is None) == (target_hidden_states is None):
            raise ValueError("give exactly one of hidden_states ([B, T, d]) or target_hidden_states ([B, T, 3 * d_t]).")
        if target_hidden_states is not None:
            hidden_states = self.fuse(target_hidden_states)
        elif hidden_states.shape[-1] != self.config.hidden_size:
            raise ValueError(f"hidden_states has last dim {hidden_states.shape[-1]}, expected hidden_size="
                             f"{self.config.hidden_size}; pass raw target states as target_hidden_states.")
        hidden_states = hidden_states.to(self.fc.weight.dtype)
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("give input_ids or inputs_embeds.")
            inputs_embeds = self.embed(input_ids)
        B, T, _ = hidden_states.shape
        if use_cache and past_key_values is None:
            past_key_values = SlimSpecCache()
        cache = past_key_values if (use_cache or past_key_values is not None) else None
        past = cache.length if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=hidden_states.device)
        position_ids = position_ids.view(-1, T).expand(B, T)
        cos, sin = self._rotary(position_ids, hidden_states.dtype)
        g = self.midlayer(inputs_embeds.to(hidden_states.dtype), hidden_states, cos, sin, cache, attention_mask)
        logits = None
        if logits_to_keep >= 0:
            logits = self.head(g if logits_to_keep == 0 else g[:, -logits_to_keep:])
        return SlimSpecOutput(logits=logits, last_hidden_state=g, past_key_values=cache)

    # ------------------------------------------------------------------ saving and loading
    def save_pretrained(self, save_directory, *args, **kwargs):
        """Weights (safetensors), config with ``auto_map``, the Hub code files, ``generation_config.json`` (draft
        length and schedule, so a reloaded drafter drafts exactly as this one) and ``custom_generate/generate.py``
        (the recipe for ``target.generate(..., custom_generate=folder, trust_remote_code=True)``)."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        self.generation_config.save_pretrained(save_directory)
        self.save_custom_generate(save_directory)
        return result

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model.check_vocab_maps()  # a truncated drafter without valid d2t/t2d must not load silently
        hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder") if k in kwargs}
        try:  # same location and hub options transformers just used for the weights
            model.generation_config = GenerationConfig.from_pretrained(pretrained_model_name_or_path, **hub)
        except (OSError, ValueError):
            model.generation_config = GenerationConfig(**DEFAULT_DRAFTING)
        return model


def _module_device(module: nn.Module, default: torch.device) -> torch.device:
    for p in module.parameters():
        return p.device
    return default


SlimSpecDrafter.register_for_auto_class("AutoModel")  # save_pretrained writes auto_map["AutoModel"], copies the code
