"""Draft losses against the target's distribution, per position. p: target probabilities, q: drafter's.

The target distribution is given on a support: ``ids`` [N, k] (vocabulary indices) with log-probabilities ``logp``
[N, k] that sum to one over the support (``-inf`` marks an empty slot). The full distribution is the case
``ids = arange(V)``; training passes the target's renormalized top-k. The drafter's q is always its full softmax:
log q_v = z_v - logsumexp(z) over every vocabulary entry, so probability it puts off the support is penalized.

    kl      forward KL(p || q) = sum_v p_v (log p_v - log q_v)                 (EAGLE-3, SlimSpec default)
    ce      hard cross-entropy  -log q(y), y = argmax p (the target's greedy token)
    lk_tv   KL + TV hybrid (LK losses): (1 - w) KL + w TV, TV = 1 - sum_v min(p_v, q_v), with the adaptive weight
            w = acceptance = sum_v min(p_v, q_v) (detached): KL dominates early, TV once drafts get accepted
    lk_log  -log(acceptance) = -log sum_v min(p_v, q_v), acceptance being speculative sampling's accept probability

All losses take the drafter's log q and the target's log p on the same support ([N, k] each) and return [N];
``draft_logq`` gives log q from full draft logits, ``head_loss.support_logq`` without materializing them.
"""

from __future__ import annotations

import torch


def draft_logq(draft_logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Full draft logits [N, V] -> log q at the support ids [N, k] (fp32): z[ids] - logsumexp(z)."""
    lse = torch.logsumexp(draft_logits.float(), dim=-1, keepdim=True)
    return draft_logits.gather(-1, ids).float() - lse


def forward_kl(logq, logp):
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), 0.0).sum(-1)


def hard_ce(logq, logp):
    return -logq.gather(-1, logp.argmax(-1, keepdim=True))[:, 0]


def acceptance(logq, logp):
    """sum_v min(p_v, q_v) = 1 - TV(p, q): the probability that speculative sampling accepts a draft from q
    (p is zero off its support, so the sum runs over the support)."""
    return torch.minimum(logq.exp(), logp.exp()).sum(-1)


def lk_tv(logq, logp):
    alpha = acceptance(logq, logp)
    w = alpha.detach()
    return (1 - w) * forward_kl(logq, logp) + w * (1 - alpha)


def lk_log(logq, logp):
    return -torch.log(acceptance(logq, logp).clamp_min(1e-12))


LOSSES = {"kl": forward_kl, "ce": hard_ce, "lk": lk_tv, "lk_tv": lk_tv, "lk_log": lk_log}
