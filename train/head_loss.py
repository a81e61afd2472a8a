"""The drafter's log q on a support of token ids, without materializing [N, V] logits.

A head is ``logits = W z`` with z = down(norm(g)) [N, r] and W = up [V, r] (low rank), or z = norm(g) [N, d] and
W = lm_head [V, d] (dense). Training needs log q_v = z.W_v - logsumexp_u(z.W_u) only at the target's top-k ids.

    logsumexp:  computed over vocabulary chunks W_c [C, r] with a running max (``ChunkedLogSumExp``)
    backward:   d lse / d z = softmax(z W^T) W = sum_c softmax_c W_c,   d lse / d W_c = softmax_c^T z
                (softmax_c = exp(z W_c^T - lse), recomputed per chunk instead of kept)
    support:    z.W_v for v in ids [N, k] through ordinary autograd (a gather of k rows of W per position)

This replaces one [N, V] logits tensor and its softmax, exp, scatter and fill passes (most of a training step's
time at V = 262k, measured with the torch profiler) by chunk-sized work; the matmuls cost 4 passes instead of 3.

Candidate softmax (optional): the logsumexp runs over a candidate set C of rows instead of all V (the batch's
target top-k ids plus the most frequent target tokens), cutting the vocabulary-wide work by V / |C|. The shipped
head still scores the whole vocabulary at inference; only training's normalizer is restricted.
"""

from __future__ import annotations

import torch

CHUNK = 16384


class ChunkedLogSumExp(torch.autograd.Function):
    """lse [N] = logsumexp(z @ W^T, dim=-1) for z [N, r], W [V, r]; also returns the argmax [N] (no grad).

    The matmuls run in ``dtype`` (bf16 for bf16 training: 2x faster on CPUs with avx512_bf16, as on GPU), the
    max / exp / sum in fp32, in place on each [N, C] chunk. Autocast is switched off inside so that the forward
    and the recomputing backward use the same precision."""

    @staticmethod
    def forward(ctx, z, W, chunk: int = CHUNK, dtype: torch.dtype = torch.float32):
        N = z.shape[0]
        running_max = torch.full((N,), float("-inf"), device=z.device)
        running_sum = torch.zeros(N, device=z.device)
        best = torch.zeros(N, dtype=torch.long, device=z.device)
        with torch.autocast(z.device.type, enabled=False):
            zc = z.to(dtype)
            for s in range(0, W.shape[0], chunk):
                logits = (zc @ W[s : s + chunk].to(dtype).T).float()  # [N, C]
                m, i = logits.max(dim=-1)
                new_max = torch.maximum(running_max, m)
                # sum_c exp(l - M_new) = sum_old * exp(M_old - M_new) + sum_{u in c} exp(l_u - M_new)
                running_sum = running_sum * torch.exp(running_max - new_max) + logits.sub_(new_max[:, None]).exp_().sum(-1)
                best = torch.where(m > running_max, i + s, best)
                running_max = new_max
        lse = running_max + torch.log(running_sum)
        ctx.save_for_backward(z, W, lse)
        ctx.chunk, ctx.dtype = chunk, dtype
        ctx.mark_non_differentiable(best)
        return lse, best

    @staticmethod
    def backward(ctx, grad_lse, _grad_best):
        z, W, lse = ctx.saved_tensors
        need_z, need_W = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_z = torch.zeros(z.shape, dtype=torch.float32, device=z.device) if need_z else None
        grad_W = torch.zeros(W.shape, dtype=torch.float32, device=W.device) if need_W else None
        with torch.autocast(z.device.type, enabled=False):
            zc = z.to(ctx.dtype)
            for s in range(0, W.shape[0], ctx.chunk):
                Wc = W[s : s + ctx.chunk].to(ctx.dtype)
                # softmax_c scaled by dL/dlse: exp(z W_c^T - lse) * grad_lse
                probs = (zc @ Wc.T).float().sub_(lse[:, None]).exp_().mul_(grad_lse[:, None]).to(ctx.dtype)
                if need_z:
                    grad_z += probs @ Wc
                if need_W:
                    grad_W[s : s + ctx.chunk] = probs.T @ zc
        return (None if grad_z is None else grad_z.to(z.dtype), None if grad_W is None else grad_W.to(W.dtype),
                None, None)


def head_factors(drafter, g: torch.Tensor):
    """(z [N, r], W [V, r]) with logits = z @ W^T, for the low-rank or the dense head."""
    head = drafter.lm_head
    h = drafter.norm(g)
    if hasattr(head, "up"):
        return head.down(h), head.up.weight
    return h, head.weight


def support_logq(drafter, g: torch.Tensor, ids: torch.Tensor, chunk: int = CHUNK,
                 dtype: torch.dtype = torch.float32, candidates: torch.Tensor | None = None):
    """g [N, d] pre-norm drafter outputs, ids [N, k] -> (log q at ids [N, k] fp32, the drafter's argmax [N]).
    ``dtype``: precision of the vocabulary-wide matmuls (bf16 for bf16 training).

    ``candidates`` [C] (sorted ids, a superset of every id in ``ids``): the softmax is normalized over those rows
    only, log q_v = z.W_v - logsumexp_{u in C}(z.W_u), a sampled-softmax estimate of the full one that costs C/V of
    it (``candidate_ids``); the argmax is then taken among the candidates. None: the full vocabulary."""
    z, W = head_factors(drafter, g)
    if candidates is None:
        lse, best = ChunkedLogSumExp.apply(z, W, chunk, dtype)
    else:
        lse, best = ChunkedLogSumExp.apply(z, W[candidates], chunk, dtype)
        best = candidates[best]
    picked = torch.einsum("nr,nkr->nk", z.float(), W[ids].float())
    return picked - lse[:, None], best


def candidate_ids(support_ids: torch.Tensor, frequent: torch.Tensor) -> torch.Tensor:
    """The candidate rows of a candidate-restricted softmax: the batch's target top-k ids (every id a loss needs)
    and the ``frequent`` ids (the most common target tokens, the negatives that matter most), sorted, unique."""
    return torch.unique(torch.cat([frequent.to(support_ids.device), support_ids.flatten()]))
