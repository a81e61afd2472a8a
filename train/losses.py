"""Draft losses against the target's distribution, per position. p: target probabilities, q: drafter's.

    kl      forward KL(p || q) = sum_v p_v (log p_v - log q_v)                 (EAGLE-3, SlimSpec default)
    ce      hard cross-entropy  -log q(y), y = argmax p (the target's greedy token)
    lk_tv   KL + TV hybrid (LK losses): (1 - w) KL + w TV, TV = 1 - sum_v min(p_v, q_v), with the adaptive weight
            w = acceptance = sum_v min(p_v, q_v) (detached): KL dominates early, TV once drafts get accepted
    lk_log  -log(acceptance) = -log sum_v min(p_v, q_v), acceptance being speculative sampling's accept probability

All functions take draft logits [N, V] and target log-probabilities [N, V] (same vocabulary) and return [N].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def forward_kl(draft_logits: torch.Tensor, target_logp: torch.Tensor) -> torch.Tensor:
    logq = F.log_softmax(draft_logits.float(), dim=-1)
    p = target_logp.exp()
    return (p * (target_logp - logq)).sum(-1)


def hard_ce(draft_logits: torch.Tensor, target_logp: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(draft_logits.float(), target_logp.argmax(-1), reduction="none")


def acceptance(draft_logits: torch.Tensor, target_logp: torch.Tensor) -> torch.Tensor:
    """sum_v min(p_v, q_v) = 1 - TV(p, q): the probability that speculative sampling accepts a draft from q."""
    q = F.softmax(draft_logits.float(), dim=-1)
    return torch.minimum(q, target_logp.exp()).sum(-1)


def lk_tv(draft_logits: torch.Tensor, target_logp: torch.Tensor) -> torch.Tensor:
    alpha = acceptance(draft_logits, target_logp)
    w = alpha.detach()
    return (1 - w) * forward_kl(draft_logits, target_logp) + w * (1 - alpha)


def lk_log(draft_logits: torch.Tensor, target_logp: torch.Tensor) -> torch.Tensor:
    return -torch.log(acceptance(draft_logits, target_logp).clamp_min(1e-12))


LOSSES = {"kl": forward_kl, "ce": hard_ce, "lk": lk_tv, "lk_tv": lk_tv, "lk_log": lk_log}
