"""The drafter's log q on a support of token ids, without materializing [N, V] logits.

A head is ``logits = W z`` with z = down(norm(g)) [N, r] and W = up [V, r] (low rank), or z = norm(g) [N, d] and
W = lm_head [V, d] (dense). Training needs log q_v = z.W_v - logsumexp_u(z.W_u) only at the target's top-k ids.

    logsumexp:  computed over vocabulary chunks W_c [C, r] with a running max (``ChunkedLogSumExp``)
    backward:   d lse / d z = softmax(z W^T) W = sum_c softmax_c W_c,   d lse / d W_c = softmax_c^T z
                (softmax_c = exp(z W_c^T - lse), recomputed per chunk instead of kept)
    support:    z.W_v for v in ids [N, k] through ordinary autograd (a gather of k rows of W per position)

This replaces one [N, V] logits tensor and its softmax, exp, scatter and fill passes (most of a training step's
time at V = 262k, measured with the torch profiler) by chunk-sized work; the matmuls cost 4 passes instead of 3.
"""

from __future__ import annotations

import torch

CHUNK = 16384


class ChunkedLogSumExp(torch.autograd.Function):
    """lse [N] = logsumexp(z @ W^T, dim=-1) for z [N, r], W [V, r]; also returns the argmax [N] (no grad)."""

    @staticmethod
    def forward(ctx, z, W, chunk: int = CHUNK):
        N = z.shape[0]
        zf = z.float()
        running_max = torch.full((N,), float("-inf"), device=z.device)
        running_sum = torch.zeros(N, device=z.device)
        best = torch.zeros(N, dtype=torch.long, device=z.device)
        for s in range(0, W.shape[0], chunk):
            logits = zf @ W[s : s + chunk].float().T  # [N, C]
            m, i = logits.max(dim=-1)
            new_max = torch.maximum(running_max, m)
            running_sum = running_sum * torch.exp(running_max - new_max) + torch.exp(logits - new_max[:, None]).sum(-1)
            best = torch.where(m > running_max, i + s, best)
            running_max = new_max
        lse = running_max + torch.log(running_sum)
        ctx.save_for_backward(z, W, lse)
        ctx.chunk = chunk
        ctx.mark_non_differentiable(best)
        return lse, best

    @staticmethod
    def backward(ctx, grad_lse, _grad_best):
        z, W, lse = ctx.saved_tensors
        zf = z.float()
        grad_z = torch.zeros_like(zf) if ctx.needs_input_grad[0] else None
        grad_W = torch.zeros(W.shape, dtype=torch.float32, device=W.device) if ctx.needs_input_grad[1] else None
        for s in range(0, W.shape[0], ctx.chunk):
            Wc = W[s : s + ctx.chunk].float()
            probs = torch.exp(zf @ Wc.T - lse[:, None]).mul_(grad_lse[:, None])  # softmax_c scaled by dL/dlse
            if grad_z is not None:
                grad_z.addmm_(probs, Wc)
            if grad_W is not None:
                grad_W[s : s + ctx.chunk] = probs.T @ zf
        return (None if grad_z is None else grad_z.to(z.dtype), None if grad_W is None else grad_W.to(W.dtype), None)


def head_factors(drafter, g: torch.Tensor):
    """(z [N, r], W [V, r]) with logits = z @ W^T, for the low-rank or the dense head."""
    head = drafter.lm_head
    h = drafter.norm(g)
    if hasattr(head, "up"):
        return head.down(h), head.up.weight
    return h, head.weight


def support_logq(drafter, g: torch.Tensor, ids: torch.Tensor, chunk: int = CHUNK):
    """g [N, d] pre-norm drafter outputs, ids [N, k] -> (log q at ids [N, k] fp32, the drafter's argmax [N])."""
    z, W = head_factors(drafter, g)
    lse, best = ChunkedLogSumExp.apply(z, W, chunk)
    picked = torch.einsum("nr,nkr->nk", z.float(), W[ids].float())
    return picked - lse[:, None], best
