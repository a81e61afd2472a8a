"""What a rank-r head can do with perfect features: the head alone, fitted on the target's own final hidden states.

A drafter's first draft passes through its head: logits = up @ (down @ g), down [r, d], up [V, r]. Its top-1
agreement with the target is bounded by the body (how well g carries what the target knows) and by the head (which
distinctions among V tokens an r-dimensional logit space can make). This measures the head's share: the body is
replaced by the target itself. At each position t of a text, h_t is the input of the target's output layer and
p_t the target's next-token distribution; a rank-r head is fitted to map h_t to p_t

    loss = - sum_v p_t(v) log softmax(up @ down @ h_t)(v)          (forward KL, as the drafter trains)

starting from the rank-r map that loses the least logit mass (with G = E^T E and z = G^1/2 h, keep the top-r
principal directions U of z: down = (G^1/2 U)^T, up = E G^-1/2 U, E the target's head [V, d]; at r = d it is E
itself). Its top-1 agreement with the target on texts it trained on (fit) and on unseen ones is what a drafter with
that head could reach if its body were perfect, for the same training budget: predicting token t + 1 from h_t is
easier than a drafter's first draft (token t + 2 from the target's features at t and token t + 1).
"""

from __future__ import annotations

import torch

from .evaluate import TEXT_WINDOW, agreement_bins, text_window
from .step import target_head_weight


def final_states(target, tokenizer, texts: list, *, window: int = TEXT_WINDOW, progress: bool = True):
    """Teacher-forced along the first ``window`` tokens of each text (its bos first): the input of the target's
    output layer at every position but the last -> (h [N, d] fp32, p [N]: the target's probability of its top
    choice, top [N]: that choice). Checks that ``target_logits(target, h)`` reproduces the target's logits."""
    from tqdm.auto import tqdm

    seen = []
    hook = target.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    hs, ps, tops = [], [], []
    try:
        for text in tqdm(texts, desc="target states", unit="text", disable=not progress):
            ids = text_window(tokenizer, text, window)
            if ids.shape[1] < 2:
                continue
            seen.clear()
            with torch.no_grad():
                logits = target(input_ids=ids.to(target.device)).logits[0, :-1].float()
            h = seen[-1][0, :-1].float()
            if not hs and not torch.allclose(target_logits(target, h), logits, atol=1e-3, rtol=1e-3):
                raise ValueError("head_ceiling: the target's logits are not its output layer applied to that layer's "
                                 "input (and the config's final_logit_softcapping); this target post-processes its "
                                 "logits in a way this measurement does not model")
            p, top = torch.softmax(logits, dim=-1).max(-1)
            hs.append(h.cpu()), ps.append(p.cpu()), tops.append(top.cpu())
    finally:
        hook.remove()
    if not hs:
        raise ValueError(f"head_ceiling: none of the {len(texts)} texts has 2 tokens or more; give longer texts")
    return torch.cat(hs), torch.cat(ps), torch.cat(tops)


def target_logits(target, h: torch.Tensor) -> torch.Tensor:
    """The target's logits [N, V] fp32 from its output layer's input h [N, d] (soft-capped where its config says)."""
    head = target.get_output_embeddings()
    with torch.no_grad():
        logits = head(h.to(device=head.weight.device, dtype=head.weight.dtype)).float()
    cap = getattr(target.config.get_text_config(), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def least_loss_head(E: torch.Tensor, h: torch.Tensor, rank: int):
    """The rank-r head that keeps the most logit mass on states like h: minimises E_h ||E h - up down h||^2 ->
    (down [r, d], up [V, r]) fp32. E [V, d] the target's head, h [N, d]."""
    G = (E.T @ E).double()
    ev, Q = torch.linalg.eigh(G)
    root, inv_root = (Q * ev.clamp_min(1e-12).sqrt()) @ Q.T, (Q / ev.clamp_min(1e-12).sqrt()) @ Q.T
    z = h.double() @ root  # the logit metric made Euclidean
    zev, Z = torch.linalg.eigh(z.T @ z)
    U = Z[:, zev.argsort(descending=True)[:rank]]
    return (root @ U).T.float().contiguous(), (E.double() @ inv_root @ U).float().contiguous()


def _agreement(down, up, h, p, top) -> dict:
    hits = torch.cat([((h[i : i + 512] @ down.T) @ up.T).argmax(-1) == top[i : i + 512]
                      for i in range(0, len(h), 512)]).float()
    return dict(agreement=float(hits.mean()), bins=agreement_bins(p, hits))


def head_ceiling(target, tokenizer, train_texts: list, held_out_texts: list, ranks: list, *, steps: int = 500,
                 batch: int = 256, lr: float = 1e-4, fit_texts: int = 60, window: int = TEXT_WINDOW, seed: int = 0,
                 progress: bool = True) -> dict:
    """For each rank r: a rank-r head fitted (``steps`` Adam steps of ``batch`` positions, forward KL to the
    target) on the target's final states along ``train_texts``, from ``least_loss_head``; its top-1 agreement with
    the target before and after, on the first ``fit_texts`` training texts ("fit") and on ``held_out_texts``
    ("held-out") -> {"positions": {...}, "ranks": {r: {"start": {fit, held-out}, "fitted": {...}, "loss": [...]}}}.
    Each agreement is ``dict(agreement, bins)`` (``agreement_bins`` per range of the target's p)."""
    from tqdm.auto import tqdm

    sets = {"fit": final_states(target, tokenizer, train_texts[:fit_texts], window=window, progress=progress),
            "held-out": final_states(target, tokenizer, held_out_texts, window=window, progress=progress)}
    rest = train_texts[fit_texts:]
    h = torch.cat([sets["fit"][0]] + ([final_states(target, tokenizer, rest, window=window, progress=progress)[0]]
                                      if rest else []))
    E = target_head_weight(target).float().cpu()
    out = dict(positions=dict(train=len(h), **{k: len(v[0]) for k, v in sets.items()}), ranks={})
    generator = torch.Generator().manual_seed(seed)
    for rank in ranks:
        down, up = least_loss_head(E, h, rank)
        start = {k: _agreement(down, up, *v) for k, v in sets.items()}
        down.requires_grad_(True), up.requires_grad_(True)
        opt = torch.optim.Adam([down, up], lr=lr)
        losses = []
        for _ in tqdm(range(steps), desc=f"rank {rank}", disable=not progress):
            x = h[torch.randint(len(h), (batch,), generator=generator)]
            p = torch.softmax(target_logits(target, x).cpu(), dim=-1)
            loss = -(p * torch.log_softmax((x @ down.T) @ up.T, dim=-1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        with torch.no_grad():
            fitted = {k: _agreement(down.detach(), up.detach(), *v) for k, v in sets.items()}
        tail = max(1, steps // 10)
        out["ranks"][rank] = dict(start=start, fitted=fitted, loss=dict(first=sum(losses[:tail]) / tail,
                                                                        last=sum(losses[-tail:]) / tail))
    return out


def head_ceiling_table(result: dict) -> str:
    """``head_ceiling``'s result as a markdown table: per rank, start and fitted, top-1 agreement on the texts it
    fitted and on unseen ones, and per range of the target's p on the unseen ones (the range's share in brackets)."""
    from .evaluate import _bin_cells

    any_rank = next(iter(result["ranks"].values()))
    bins = list(any_rank["start"]["held-out"]["bins"])
    lines = ["| rank | head | loss (first / last tenth of the steps) | top-1 on fitted texts | top-1 on unseen texts |"
             + "".join(f" unseen, at p {b} |" for b in bins), "|---|---|---|---|---|" + "---|" * len(bins)]
    for rank, r in result["ranks"].items():
        for name, loss in (("start", "-"), ("fitted", f"{r['loss']['first']:.3f} / {r['loss']['last']:.3f}")):
            a = r[name]
            cells = f"| {rank} | {name} | {loss} | {a['fit']['agreement']:.1%} | {a['held-out']['agreement']:.1%} |"
            lines.append(cells + _bin_cells(a["held-out"]["bins"], bins))
    return "\n".join(lines)
