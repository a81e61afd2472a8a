"""What one training step computes, and the drafter it starts from: the drafter built for a target (head from
the target's, features scaled), the candidate softmax's support, and the EAGLE-3 loss of a batch over the
training-time-test unroll; plus the fit history's throughput figures. ``fit.py`` runs these in its loop.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .data import DistillationData
from .fit_config import FitConfig
from .head_loss import candidate_ids, support_logq
from .losses import LOSSES
from .ttt import ttt_unroll


def target_head_weight(target) -> torch.Tensor:
    """The target's LM head weight [V, d_t], detached (frozen; Gemma ties it to the input embedding)."""
    return target.get_output_embeddings().weight.detach()


def grow_head(drafter, rank, target_head: torch.Tensor) -> None:
    """Widen a rank-r SlimSpec head to ``rank`` (an int or d/N; the rank it has changes nothing) without changing a
    single logit, as LoRA starts an adapter: ``down`` gains rows at the scale of its old ones, ``up`` zero columns,
    so logits = up @ down @ h are unchanged and the first step already moves the new columns (their gradient is
    (q - p) times the new rows' outputs).

    Zero rows of ``down`` with new columns of ``up`` would grow far too slowly: Adam moves each entry by about the
    learning rate per step, so a row of d entries takes ~ |row| / (lr sqrt(d)) steps to reach the old rows' norm
    (measured: after 400 steps at lr 1e-4 the new rows were at 1% of the old ones' norm, 0.07 against 5.8); a
    column of ``up`` has V entries and grows sqrt(V / d) times faster.

    The new rows read the directions in which the target's head ``target_head`` [V_d, d_t] varies most outside what
    ``up`` can express (the top right singular vectors of R = W - Q Q^T W, Q an orthonormal basis of up's columns,
    from the eigenvectors of R^T R = W^T W - (Q^T W)^T Q^T W); where the drafter's width differs from the target's,
    random orthonormal directions. fp32 throughout, cast back."""
    from configuration_slimspec import resolve_head_rank
    from modeling_slimspec import SlimSpecLowRankHead

    head = drafter.lm_head
    if not isinstance(head, SlimSpecLowRankHead):
        raise ValueError("grow_head widens a low-rank SlimSpec head; this drafter's head is dense")
    up, down = head.up.weight.detach().float(), head.down.weight.detach().float()
    old, d = up.shape[1], down.shape[1]
    rank = resolve_head_rank(rank, d, vocab_rows=up.shape[0])  # ValueError naming the valid ranks
    if rank is None:
        raise ValueError("grow_head widens a low-rank head to a rank (an int or d/N), not to a dense head")
    if rank < old:
        raise ValueError(f"the drafter's head has rank {old}, more than the {rank} asked for: a narrower head loses "
                         "logits, which is a conversion (slimspec-convert --rank), not a training stage")
    if rank == old:
        return
    if target_head.shape[1] == d:
        W = target_head.float().to(up.device)
        QW = torch.linalg.qr(up).Q.T @ W  # [r, d]
        ev, vecs = torch.linalg.eigh((W.T @ W).double() - (QW.T @ QW).double())
        rows = vecs[:, ev.argsort(descending=True)[: rank - old]].T.float()  # [new, d], orthonormal
    else:
        rows = torch.linalg.qr(torch.randn(d, rank - old, generator=torch.Generator().manual_seed(0))).Q.T
    rows = rows.to(down.device) * down.norm(dim=1).median()
    grown = type(head)(d, rank, up.shape[0]).to(device=head.up.weight.device, dtype=head.up.weight.dtype)
    with torch.no_grad():
        grown.up.weight.copy_(torch.cat([up, up.new_zeros(up.shape[0], rank - old)], dim=1))
        grown.down.weight.copy_(torch.cat([down, rows]))
    drafter.lm_head = grown
    drafter.config.head_rank = rank


def _grow_to_rank(drafter, config: FitConfig, target, columns) -> None:
    """``config.grow_to_rank``: widen the low-rank head of the drafter a stage continues (``grow_head``). Never
    implicit: a healed conversion keeps the rank it was converted to."""
    if config.grow_to_rank is not None:
        W = target_head_weight(target)
        grow_head(drafter, config.grow_to_rank, W if columns is None else W[columns.to(W.device)])


def feature_scale(data: DistillationData, positions: int = 8192) -> torch.Tensor:
    """1 / RMS of every feature channel [3 d_t] over the first ``positions`` stored positions of each data folder
    (floored at 1% of the median channel RMS, so near-silent channels are not blown up).

    The target's hidden states can be huge (Gemma 3 270M: median norms ~1e3, 5e3, 2e4 at layers 2, 9, 15, single
    channels ~1e5): fed raw, the fc output swamps the decoder layer's residual updates and Adam's fixed step size
    is badly scaled for fc. Training sees ``feats * scale``; the saved drafter has ``fc.weight * scale`` instead,
    which is the same function of the raw features, so inference and the checkpoint format are unchanged."""
    rms = data.feature_rows(positions).float().pow(2).mean(0).sqrt()
    return 1.0 / rms.clamp_min(0.01 * rms.median().clamp_min(1e-6))


def save_drafter(drafter, folder, scale: torch.Tensor | None = None) -> None:
    """save_pretrained with the training feature scale folded into fc (see ``feature_scale``)."""
    state = None
    if scale is not None:
        state = dict(drafter.state_dict())
        state["fc.weight"] = state["fc.weight"] * scale.to(state["fc.weight"].dtype)[None, :]
    drafter.save_pretrained(folder, state_dict=state)


def build_drafter(target, config: FitConfig, data: DistillationData):
    from configuration_slimspec import SlimSpecConfig
    from modeling_slimspec import SlimSpecDrafter

    from slimspec.convert.factorize import factorize

    if config.init_from:
        drafter = SlimSpecDrafter.from_pretrained(config.init_from, dtype=torch.float32)  # fp32 master weights
        if list(drafter.config.target_layer_ids) != list(data.meta["layer_ids"]):
            raise ValueError(f"{config.init_from} reads target layers {drafter.config.target_layer_ids} but the data "
                             f"holds layers {data.meta['layer_ids']}: regenerate the data with the drafter's layers")
        columns = None
        if drafter.d2t is not None:
            columns = torch.arange(drafter.config.draft_vocab_size) + drafter.d2t
        _grow_to_rank(drafter, config, target, columns)
        drafter.attach(target)
        return drafter, columns

    layer_ids = data.meta["layer_ids"]
    cfg = SlimSpecConfig.from_target_config(target.config, head_rank=config.head_rank,
                                            draft_vocab_size=config.draft_vocab, target_layer_ids=layer_ids)
    torch.manual_seed(config.seed)
    drafter = SlimSpecDrafter(cfg)
    columns = None
    if config.draft_vocab:
        counts = data.token_counts(cfg.vocab_size)
        columns = torch.argsort(-counts.float(), stable=True)[: config.draft_vocab].sort().values
        drafter.set_vocab_maps(columns)
    if config.head_init == "target":
        W = target_head_weight(target)
        W = W if columns is None else W[columns]
        with torch.no_grad():
            if cfg.head_rank is None:
                drafter.lm_head.weight.copy_(W)
            else:
                f = factorize(W.float(), cfg.head_rank)
                drafter.lm_head.up.weight.copy_(f.up)
                drafter.lm_head.down.weight.copy_(f.down)
    drafter.attach(target)  # shares the target's input embedding (frozen, unregistered)
    return drafter, columns


def _add_lora(drafter, rank: int):
    """LoRA adapters (peft) on the decoder layer's projections; the base weights stay frozen."""
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=[f"midlayer.self_attn.{t}" for t in targets[:4]]
                      + [f"midlayer.mlp.{t}" for t in targets[4:]], lora_dropout=0.0, bias="none")
    head_trainable = {n for n, p in drafter.named_parameters() if p.requires_grad and n.startswith("lm_head.")}
    model = get_peft_model(drafter, lora)
    for n, p in model.base_model.model.named_parameters():
        if n in head_trainable:
            p.requires_grad_(True)
    return model


def load_teacher_head(folder: str) -> torch.Tensor:
    """The dense head [V_d, d] of a dense drafter folder (the teacher when healing a factorized copy of it)."""
    from safetensors.torch import load_file

    weights = load_file(str(Path(folder) / "model.safetensors"))
    if "lm_head.weight" not in weights:
        raise ValueError(f"{folder} has no dense lm_head.weight to distill from")
    return weights["lm_head.weight"].float()


def frequent_ids(data: DistillationData, drafter, columns=None) -> torch.Tensor:
    """Draft-vocabulary ids, most frequent trained token first (the negatives of a candidate softmax)."""
    counts = data.token_counts(drafter.config.vocab_size)
    counts = counts if columns is None else counts[columns]  # draft id i is target id columns[i]
    return torch.argsort(-counts, stable=True)


def target_support(batch: dict, columns=None, vocab_size: int | None = None):
    """The target's stored top-k distribution of every position's next-next token, on the draft vocabulary
    (target ids -> draft ids; entries outside a truncated vocabulary dropped) and renormalized over what is left.

    Returns ids [B, T, k], logp [B, T, k] (-inf on dropped entries) and covered [B, T] (some entry left)."""
    ids, logp = batch["target_ids"], batch["target_logp"].float()
    if columns is not None:
        lookup = torch.full((vocab_size,), -1, dtype=torch.long, device=ids.device)
        columns = columns.to(ids.device)
        lookup[columns] = torch.arange(len(columns), device=ids.device)
        ids = lookup[ids]
        logp = logp.masked_fill(ids < 0, float("-inf"))
        ids = ids.clamp_min(0)
    norm = torch.logsumexp(logp, dim=-1, keepdim=True)
    covered = torch.isfinite(norm[..., 0])
    return ids, torch.where(covered[..., None], logp - norm, float("-inf")), covered


def teacher_support(drafter, g: torch.Tensor, teacher: torch.Tensor):
    """A dense teacher head [V_d, d] on the drafter's own hidden states g [N, d]: its full distribution, as a
    support of every draft id (the teacher is computed on the fly, so nothing forces a top-k cut)."""
    with torch.no_grad():
        logp = torch.log_softmax(drafter.norm(g.detach()).float() @ teacher.T, dim=-1)
        return torch.arange(logp.shape[-1], device=logp.device).expand(logp.shape), logp


def batch_loss(drafter, batch: dict, config: FitConfig, columns=None, teacher=None, scale=None, frequent=None,
               normalizer=None):
    """Weighted TTT loss and per-step top-1 agreement for one batch: loss = sum_j w^j mean_t loss_j(t), with
    w = ``config.step_weight``.

    The reference distribution is the target's stored top-k (``target_support``), or with ``teacher`` (a dense
    head [V_d, d]) that head applied to the drafter's own hidden states (head distillation). With ``config.bf16``
    the drafter runs under bf16 autocast (weights and optimizer stay fp32); ``scale`` [3 d_t] multiplies the target
    features (``feature_scale``). ``frequent`` [N] (draft-vocabulary ids, most frequent first): with
    ``config.candidates`` the softmax is normalized over the batch's support ids and ``frequent[:candidates]``.
    ``normalizer`` (several processes, see ``GlobalMean``): called once with this batch's count of trained positions
    of every unroll step [ttt_steps]; step j's term is then its loss sum / ``normalizer(counts)[j]`` instead of its
    mean, so that the average of the ranks' gradients is the gradient of the mean over the global batch."""
    loss_fn = LOSSES[config.loss]
    tokens, feats = batch["tokens"], batch["feats"]
    mask = batch[config.trained_mask]
    ids, logp, covered = target_support(batch, columns, drafter.config.vocab_size)
    mask = mask & covered
    candidates = None
    if config.candidates and teacher is None:
        if frequent is None:
            raise ValueError("config.candidates needs the most frequent token ids (batch_loss(..., frequent=...))")
        candidates = candidate_ids(ids[mask], frequent[: config.candidates])
        if normalizer is not None:  # several processes: one candidate set for the global batch, as one process has
            candidates = normalizer.union(candidates, drafter.config.head_vocab_size)
    T = feats.shape[1]
    positions = torch.arange(T, device=feats.device)
    divisors = None
    if normalizer is not None:  # a collective: every rank calls it once per batch, before any step is skipped
        divisors = normalizer(torch.stack([(mask & (positions >= j)[None, :]).sum() for j in range(config.ttt_steps)]))
    total, agreement = 0.0, []
    with torch.autocast(feats.device.type, dtype=torch.bfloat16, enabled=config.bf16):
        feats = feats.float() if scale is None else feats.float() * scale
        outputs = ttt_unroll(drafter, tokens, feats, config.ttt_steps)
        for j, g in enumerate(outputs):
            valid = mask & (positions >= j)[None, :]
            if not valid.any():
                agreement.append(float("nan"))
                continue
            if teacher is not None:
                s_ids, s_logp = teacher_support(drafter, g[valid], teacher)
                logits = drafter.head(g[valid])
                logq, drafted = torch.log_softmax(logits.float(), dim=-1), logits.argmax(-1)
            else:
                s_ids, s_logp = ids[valid], logp[valid]
                logq, drafted = support_logq(drafter, g[valid], s_ids, candidates=candidates,
                                              dtype=torch.bfloat16 if config.bf16 else torch.float32)
            values = loss_fn(logq, s_logp)
            total = total + config.step_weight**j * (values.mean() if divisors is None else values.sum() / divisors[j])
            best = s_ids.gather(-1, s_logp.argmax(-1, keepdim=True))[:, 0]
            agreement.append(float((drafted == best).float().mean()))
    return total, agreement


def _write_card(drafter, out: str, data: str, config: FitConfig, history: list) -> None:
    """The same model card as slimspec-convert writes, describing how this drafter was trained."""
    from slimspec.convert.card import build_card

    head_params = sum(p.numel() for p in drafter.lm_head.parameters())
    dense = drafter.config.head_vocab_size * drafter.config.hidden_size
    last = history[-1] if history else {}
    minutes, trained = sum(h["seconds"] for h in history) / 60, sum(h["trained"] for h in history)
    notes = [f"trained with slimspec-train on {data}: {len(history)} steps ({minutes:.1f} min of training steps, "
             f"{trained:,} trained positions), loss {config.loss}, TTT {config.ttt_steps} steps, lr {config.lr}, "
             f"batch {config.batch_size} x {config.window} positions per process"]
    if last:
        notes.append(f"last training loss {last['loss']:.4f}, per-step top-1 agreement {last['agreement']}")
    card = build_card(config=drafter.config, info=dict(
        source=config.init_from or "trained from scratch", source_format="slimspec-train", energy_kept=None,
        dense_head_params=dense, head_params=head_params, total_params=sum(p.numel() for p in drafter.parameters()),
        quality=None, notes=notes, num_assistant_tokens=drafter.generation_config.num_assistant_tokens))
    card.save(Path(out) / "README.md")


def steady_steps(history: list) -> list:
    """A fit history without its first step (one-time setup), unless that is all there is."""
    return history[1:] or history


def positions_per_s(history: list, key: str = "trained") -> float | None:
    """Training throughput from a fit history: ``key`` positions per second over ``steady_steps``. ``key``:
    "trained" (positions with a loss) or "tokens" (all window positions, padding included)."""
    timed = steady_steps(history)
    seconds = sum(h["seconds"] for h in timed)
    return sum(h[key] for h in timed) / seconds if seconds else None


def median_step_seconds(history: list) -> float | None:
    """The median of ``steady_steps``' seconds: the step's cost on an idle machine, which a sum over a build that
    was paused or shared the CPU for a while overstates."""
    timed = sorted(h["seconds"] for h in steady_steps(history))
    return timed[len(timed) // 2] if timed else None
