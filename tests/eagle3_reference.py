"""An independent, plain-torch statement of the EAGLE-3 drafter equations, for tests.

No cache, no SDPA, no module classes: every position is recomputed from scratch with explicit matrix
products, so the drafter's cache, masking and head shortcuts are checked against the equations themselves
(SafeAILab/EAGLE ``eagle/model/cnets.py`` ``Model`` + ``LlamaDecoderLayeremb``; SpecForge
``LlamaForCausalLMEagle3``). Weights come from a state dict with EAGLE-3 key names.
"""

from __future__ import annotations

import math

import torch


def rms_norm(x, w, eps):
    x32 = x.double()
    return w.double() * (x32 / torch.sqrt((x32 * x32).mean(-1, keepdim=True) + eps))


def rope(x, positions, theta):
    """Rotate pairs (x[i], x[i + hd/2]) of every head by angle p * theta^(-2i/hd). x: [T, H, hd]."""
    hd = x.shape[-1]
    half = hd // 2
    i = torch.arange(half, dtype=torch.float64)
    angle = positions.double()[:, None] * theta ** (-2.0 * i / hd)  # [T, hd/2]
    c, s = torch.cos(angle)[:, None, :], torch.sin(angle)[:, None, :]
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * c - b * s, b * c + a * s], dim=-1)


def drafter_layer(sd, cfg, emb, hidden, positions):
    """One pass of the EAGLE-3 decoder layer over all T positions (causal). emb, hidden: [T, d] -> g: [T, d]."""
    W = {k: v.double() for k, v in sd.items() if v.is_floating_point()}
    eps, H, Hkv, hd = cfg.rms_norm_eps, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    T = emb.shape[0]
    h_normed = rms_norm(hidden, W["midlayer.hidden_norm.weight"], eps)
    residual = h_normed if cfg.norm_before_residual else hidden.double()
    a = torch.cat([rms_norm(emb, W["midlayer.input_layernorm.weight"], eps), h_normed], dim=-1)  # [T, 2d]
    q = (a @ W["midlayer.self_attn.q_proj.weight"].T).view(T, H, hd)
    k = (a @ W["midlayer.self_attn.k_proj.weight"].T).view(T, Hkv, hd)
    v = (a @ W["midlayer.self_attn.v_proj.weight"].T).view(T, Hkv, hd)
    q, k = rope(q, positions, cfg.rope_theta), rope(k, positions, cfg.rope_theta)
    out = torch.zeros(T, H, hd, dtype=torch.float64)
    for h in range(H):
        kv = h // (H // Hkv)
        for t in range(T):
            scores = (k[: t + 1, kv] @ q[t, h]) / math.sqrt(hd)
            out[t, h] = torch.softmax(scores, dim=0) @ v[: t + 1, kv]
    u = residual + out.reshape(T, H * hd) @ W["midlayer.self_attn.o_proj.weight"].T
    m = rms_norm(u, W["midlayer.post_attention_layernorm.weight"], eps)
    act = torch.nn.functional.silu(m @ W["midlayer.mlp.gate_proj.weight"].T) * (m @ W["midlayer.mlp.up_proj.weight"].T)
    return u + act @ W["midlayer.mlp.down_proj.weight"].T


def head_logits(sd, cfg, g):
    """lm_head(norm(g)) with a dense ``lm_head.weight`` or the product ``lm_head.up.weight @ lm_head.down.weight``."""
    W = {k: v.double() for k, v in sd.items() if v.is_floating_point()}
    n = rms_norm(g, W["norm.weight"], cfg.rms_norm_eps)
    if "lm_head.weight" in W:
        return n @ W["lm_head.weight"].T
    return (n @ W["lm_head.down.weight"].T) @ W["lm_head.up.weight"].T


def first_step(sd, cfg, embed_weight, target_feats, next_tokens, position_scale=1.0):
    """Step 1 over a prefix: target_feats [T, 3 d_t] at positions 0..T-1 paired with tokens t+1 ([T]).
    ``position_scale`` multiplies the rotary positions (linear RoPE scaling by a factor f is 1 / f).

    Returns (g [T, d], logits [T, V_d])."""
    x = target_feats.double() @ sd["fc.weight"].double().T
    emb = embed_weight.double()[next_tokens]
    g = drafter_layer(sd, cfg, emb, x, torch.arange(len(next_tokens)) * position_scale)
    return g, head_logits(sd, cfg, g)


def chain(sd, cfg, embed_weight, target_feats, next_tokens, drafted_tokens):
    """Multi-step drafting without a cache: after the prefix, position T-1+j takes the drafter's own output at
    position T-2+j as its hidden input, paired with drafted token j. Returns the logits at the last position of
    every step: [1 + len(drafted_tokens), V_d]."""
    x = target_feats.double() @ sd["fc.weight"].double().T
    tokens = list(next_tokens.tolist())
    hidden = [x[t] for t in range(x.shape[0])]
    E = embed_weight.double()
    step_logits = []
    for j in range(len(drafted_tokens) + 1):
        emb = E[torch.tensor(tokens)]
        g = drafter_layer(sd, cfg, emb, torch.stack(hidden), torch.arange(len(tokens)))
        step_logits.append(head_logits(sd, cfg, g[-1]))
        if j < len(drafted_tokens):
            hidden.append(g[-1])  # own pre-norm output fed back
            tokens.append(int(drafted_tokens[j]))
    return torch.stack(step_logits)
