"""``slimspec-train fit``: EAGLE-3 training of a SlimSpec drafter on self-distillation data.

Per batch: unroll the drafter ``ttt_steps`` times (``ttt.ttt_unroll``); at every step compare its head with the
target's distribution p_{t+1} (its top-k stored with the data, mapped to the draft vocabulary and renormalized);
loss = sum_j w^j mean_t loss_j(t), w = ``FitConfig.step_weight`` (0.8 by default, as in EAGLE-3).
The target's embedding and LM head stay frozen and outside the optimizer (Gemma ties them: a leak would change
the target itself). Built on HF Accelerate: the same code runs as one CPU process here and as DDP elsewhere.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .data import DistillationData, collate
from .head_loss import candidate_ids, support_logq
from .losses import LOSSES
from .ttt import ttt_unroll


@dataclass
class FitConfig:
    head_rank: object = "d/8"  # any form configuration_slimspec.resolve_head_rank takes without weights
    draft_vocab: int | None = None  # truncated draft vocabulary (d2t/t2d from token frequencies)
    head_init: str = "target"  # "target": SVD of (or copy of) the target's LM head; "random"
    loss: str = "kl"
    ttt_steps: int = 3
    step_weight: float = 0.8
    lr: float = 4e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 0.5
    batch_size: int = 4
    window: int = 256
    max_steps: int = 1000
    epochs: int = 1
    seed: int = 0
    save_every: int = 200
    init_from: str | None = None  # start from this SlimSpec drafter folder (healing; a further training stage)
    trainable: str = "all"  # "all", or "head" (healing: only the factorized head learns)
    lora_rank: int = 0  # healing: LoRA adapters of this rank on the decoder layer (peft), merged before saving
    teacher: str | None = None  # healing: a dense drafter folder whose head is the teacher (None: the target)
    normalize_features: bool = True  # train on target features scaled to unit RMS per channel, folded into fc on save
    candidates: int = 0  # > 0: softmax over the batch's target top-k ids + this many most frequent tokens
    #                       (a candidate-restricted normalizer for training; 0 = the full vocabulary)
    snapshot_steps: tuple = ()  # also write a Hub-ready drafter to out/snapshots/step_N at these steps (curves)
    workers: int = 0  # DataLoader worker processes (a GPU outruns batches read in the training process)
    bf16: bool = False  # bf16 autocast for the drafter's forward and backward (fp32 master weights)
    loss_on: str = "response"  # "response": the target's own tokens; "all": prompt positions too (the target's
    #                            distribution there is just as exact: more signal from the same data)

    def __post_init__(self):
        """Check every field once, when the config is made (``dataclasses.replace`` included): a bad setting fails
        before any data is read, naming the field and what it allows."""
        from configuration_slimspec import parse_head_rank

        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"FitConfig.{name} must be one of {', '.join(map(repr, allowed))}; "
                                 f"got {getattr(self, name)!r}")
        _check_counts(self, _POSITIVE, least=1)
        _check_counts(self, _NON_NEGATIVE, least=0)
        if self.draft_vocab is not None:
            _check_counts(self, ("draft_vocab",), least=1)
        parse_head_rank(self.head_rank)  # ValueError naming the valid forms

    @property
    def trained_mask(self) -> str:
        """The batch mask of the positions with a loss (``loss_on``)."""
        return "loss_mask" if self.loss_on == "response" else "any_mask"


_CHOICES = {"loss": tuple(LOSSES), "loss_on": ("response", "all"), "trainable": ("all", "head"),
            "head_init": ("target", "random")}
_POSITIVE = ("ttt_steps", "batch_size", "window", "max_steps", "epochs", "save_every")
_NON_NEGATIVE = ("warmup_steps", "lora_rank", "candidates", "workers")


def _check_counts(config: FitConfig, names, least: int) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"FitConfig.{name} must be an int >= {least}, got {value!r}")


def target_head_weight(target) -> torch.Tensor:
    """The target's LM head weight [V, d_t], detached (frozen; Gemma ties it to the input embedding)."""
    return target.get_output_embeddings().weight.detach()


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


class GlobalMean:
    """``batch_loss``'s normalizer when several processes train (DDP): step j's term on a rank is its sum over the
    rank's trained positions divided by (the global batch's count of them / processes). DDP averages the ranks'
    gradients, so the result is the gradient of the mean over the global batch: what one process computes from the
    whole global batch (not a mean of per-rank means, which would weight positions by their rank's count)."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.local = self.total = None

    def __call__(self, counts: torch.Tensor) -> torch.Tensor:
        self.local = counts
        self.total = self.accelerator.reduce(counts, reduction="sum")  # all-reduce (a copy: counts stay local)
        return self.total.float() / self.accelerator.num_processes

    def union(self, ids: torch.Tensor, size: int) -> torch.Tensor:
        """The sorted union over the ranks of each rank's ids in [0, size) (an all-reduced indicator)."""
        present = torch.zeros(size, dtype=torch.int32, device=ids.device)
        present[ids] = 1
        return self.accelerator.reduce(present, reduction="sum").nonzero()[:, 0]

    def global_stats(self, loss: torch.Tensor, agreement: list, tokens: int, trained: int):
        """The global batch's loss, per-step top-1 agreement, window positions and trained positions (one all-reduce;
        every rank gets the same numbers)."""
        n = self.local.double()
        hits = torch.tensor([0.0 if math.isnan(a) else a for a in agreement], dtype=torch.float64, device=n.device) * n
        stats = torch.cat([loss.detach().double().reshape(1), hits,
                           torch.tensor([tokens, trained], dtype=torch.float64, device=n.device)])
        stats = self.accelerator.reduce(stats, reduction="sum").tolist()
        agreement = [h / c if c else float("nan") for h, c in zip(stats[1:-2], self.total.tolist())]
        return stats[0] / self.accelerator.num_processes, agreement, int(stats[-2]), int(stats[-1])


class TrainStep(torch.nn.Module):
    """A training step's forward as a module: the TTT unroll and loss of one batch (``batch_loss``).

    This, not the drafter, is what Accelerate prepares: with several processes it becomes the
    DistributedDataParallel module, and the whole step (``embed``, ``fuse``, the unrolled decoder layer, ``norm``
    and the head) runs inside its ``forward``, so DDP's autograd hooks all-reduce every trainable parameter's
    gradient in ``backward``. Its one submodule is the drafter; the target's embedding and LM head are not
    registered (frozen, shared with the target: never synchronized, never optimized)."""

    def __init__(self, drafter, config: FitConfig, columns=None, teacher=None, scale=None, normalizer=None,
                 **loss_kwargs):
        super().__init__()
        self.drafter = drafter
        self.config, self.columns, self.teacher, self.scale = config, columns, teacher, scale
        self.normalizer, self.loss_kwargs = normalizer, loss_kwargs

    def forward(self, batch: dict):
        loss, agreement = batch_loss(self.drafter, batch, self.config, self.columns, self.teacher, self.scale,
                                     normalizer=self.normalizer, **self.loss_kwargs)
        if not torch.is_tensor(loss):  # no trained position in this batch: a zero loss that still reaches every
            #                            trainable parameter, so the ranks' gradient all-reduces stay in step
            loss = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        return loss, agreement


def _save_checkpoint(accelerator, root: Path, step: int, history: list) -> None:
    """``accelerator.save_state`` to ``root/step_N``, complete or absent: every rank writes into a partial folder
    (rank 0 the weights, optimizer and scheduler, and the training history so far; each rank its RNG state), then
    rank 0 renames it and removes the older ones, and all ranks wait for that."""
    partial, path = root / f"partial_step_{step}", root / f"step_{step}"
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / "history.json").write_text(json.dumps(history))
        shutil.rmtree(path, ignore_errors=True)
        partial.rename(path)
        for old in [*root.glob("step_*"), *root.glob("partial_step_*")]:
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def fit(*, target, data: str, out: str, config: FitConfig, resume: bool = True, progress: bool = True,
        stop_after: int | None = None) -> dict:
    """Train a drafter and write a Hub-ready folder to ``out``; checkpoints in ``out/.checkpoints``.

    ``stop_after``: leave after that many steps of this run (checkpointed), to be resumed by a later call with the
    same config; the schedule is always that of the full ``max_steps`` run.

    The same call runs as one process or as several (``torchrun --nproc_per_node N -m slimspec.train.cli fit ...``,
    or ``accelerate launch``): DDP, each process taking its own ``batch_size`` windows per step (the global batch is
    ``batch_size`` x processes) and the loss the mean over the global batch (``GlobalMean``); only the main process
    writes the drafter, card, history and snapshots, and every process returns the global batches' history."""
    from tqdm.auto import tqdm

    run = _setup(target, data, config)
    step, history = _resume(run.accelerator, Path(out) / ".checkpoints") if resume else (0, [])
    resumed_at = step
    stop_at = run.total_steps if stop_after is None else min(run.total_steps, step + stop_after)
    bar = tqdm(total=run.total_steps, initial=step, desc="training", unit="step",
               disable=not progress or not run.accelerator.is_main_process)
    run.model.train()
    batches = _batches(run, step)
    while step < stop_at:
        step += 1
        entry = _take_step(run, next(batches), step)
        history.append(entry)
        bar.update(1)
        bar.set_postfix(loss=f"{entry['loss']:.3f}", top1="/".join(f"{a:.2f}" for a in entry["agreement"]))
        _save_progress(run, out, step, stop_at, history)
    batches.close()
    bar.close()
    return dict(_finish(run, out, data, step, history), resumed_at=resumed_at)


@dataclass
class _Run:
    """What a training run works with, once ``_setup`` has prepared it."""

    config: FitConfig
    accelerator: object
    drafter: torch.nn.Module  # as built (with LoRA: its peft model); the prepared model's one submodule
    scale: torch.Tensor | None  # the feature scale on the training device (None: raw features)
    model: torch.nn.Module  # the prepared TrainStep (the DDP module with several processes)
    optimizer: object
    scheduler: object
    loader: object
    generator: torch.Generator  # the loader's shuffling, reseeded every epoch (``_batches``)
    normalizer: GlobalMean | None
    steps_per_epoch: int
    total_steps: int


def _setup(target, data: str, config: FitConfig) -> _Run:
    """Data, drafter, optimizer, schedule and loader, prepared by Accelerate (DDP with several processes)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    # the scheduler steps once per optimizer step, whatever the number of processes
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), step_scheduler_with_optimizer=False)
    set_seed(config.seed)
    dataset = DistillationData(data, window=config.window)
    if len(dataset) == 0:
        raise ValueError(f"{data} holds no training windows")
    drafter, columns, scale = _trainable_drafter(target, config, dataset)
    optimizer = _optimizer(drafter, target, config)
    steps_per_epoch = math.ceil(len(dataset) / (config.batch_size * accelerator.num_processes))
    total_steps = min(config.max_steps, steps_per_epoch * config.epochs)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, total_steps)
    loader, generator = _loader(dataset, config, accelerator.device)
    scale = None if scale is None else scale.to(accelerator.device)
    normalizer = GlobalMean(accelerator) if accelerator.num_processes > 1 else None
    model = _train_step_module(drafter, dataset, columns, scale, normalizer, config, accelerator.device)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    assert len(loader) == steps_per_epoch, (len(loader), steps_per_epoch)
    _checkpoint_the_drafter(accelerator)
    return _Run(config=config, accelerator=accelerator, drafter=drafter, scale=scale, model=model,
                optimizer=optimizer, scheduler=scheduler, loader=loader, generator=generator, normalizer=normalizer,
                steps_per_epoch=steps_per_epoch, total_steps=total_steps)


def _trainable_drafter(target, config: FitConfig, dataset: DistillationData) -> tuple:
    """(drafter, draft-vocabulary columns, feature scale or None): the target frozen, only ``config.trainable``
    learning, LoRA adapters with ``config.lora_rank``."""
    drafter, columns = build_drafter(target, config, dataset)
    scale = feature_scale(dataset) if config.normalize_features and config.trainable == "all" else None
    if scale is not None and config.init_from:  # a saved drafter holds fc.weight * scale (``save_drafter``): train
        with torch.no_grad():                    # its fc on unit-RMS features like a new one, fold back on save
            drafter.fc.weight.div_(scale.to(drafter.fc.weight.dtype)[None, :])
    for p in target.parameters():
        p.requires_grad_(False)
    if config.trainable == "head":
        for name, p in drafter.named_parameters():
            p.requires_grad_(name.startswith("lm_head."))
    if config.lora_rank:
        drafter = _add_lora(drafter, config.lora_rank)
    return drafter, columns, scale


def _optimizer(drafter, target, config: FitConfig) -> torch.optim.Optimizer:
    """AdamW over the drafter's trainable parameters (never a target's: they stay frozen and shared)."""
    params = [p for p in drafter.parameters() if p.requires_grad]
    target_ids = {id(p) for p in target.parameters()}
    assert not any(id(p) in target_ids for p in params), "a target parameter reached the optimizer"
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _loader(dataset: DistillationData, config: FitConfig, device: torch.device) -> tuple:
    """(loader, the generator that shuffles it): ``batch_size`` windows a step, read by ``config.workers``."""
    generator = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True, collate_fn=collate,
                                         generator=generator, num_workers=config.workers,
                                         persistent_workers=config.workers > 0, pin_memory=device.type == "cuda")
    return loader, generator


def _train_step_module(drafter, dataset, columns, scale, normalizer, config: FitConfig, device) -> TrainStep:
    """The ``TrainStep`` for this run: the teacher head and the candidate softmax's frequent ids on ``device``."""
    teacher = load_teacher_head(config.teacher).to(device) if config.teacher else None
    frequent = frequent_ids(dataset, drafter, columns).to(device) if config.candidates else None
    return TrainStep(drafter, config, columns, teacher, scale, normalizer, frequent=frequent)


def _checkpoint_the_drafter(accelerator) -> None:
    """Checkpoints hold the drafter's own state dict (no "drafter." or DDP "module." prefix) and load into it."""

    def save_weights(models, weights, folder):
        weights[:] = [accelerator.unwrap_model(m).drafter.state_dict() for m in models]

    def load_weights(models, folder):
        models[:] = [accelerator.unwrap_model(m).drafter for m in models]

    accelerator.register_save_state_pre_hook(save_weights)
    accelerator.register_load_state_pre_hook(load_weights)


def _checkpoint_step(path: Path) -> int:
    return int(path.name.split("_")[1])


def _resume(accelerator, root: Path) -> tuple:
    """(step, history) of the newest checkpoint under ``root``, its state loaded; (0, []) where there is none. A
    resumed run keeps the history of every earlier segment."""
    done = sorted(root.glob("step_*"), key=_checkpoint_step) if root.exists() else []
    if not done:
        return 0, []
    accelerator.load_state(str(done[-1]))
    saved = done[-1] / "history.json"
    return _checkpoint_step(done[-1]), json.loads(saved.read_text()) if saved.exists() else []


def _batches(run: _Run, step: int):
    """The batches from ``step`` on, epoch after epoch. Each epoch's order comes from ``seed + epoch``, so a resumed
    run takes the batches a straight run takes (skipping those of its epoch that were trained on)."""
    epoch, skip = divmod(step, run.steps_per_epoch)
    while True:
        run.generator.manual_seed(run.config.seed + epoch)
        yield from run.accelerator.skip_first_batches(run.loader, skip) if skip else run.loader
        epoch, skip = epoch + 1, 0


def _take_step(run: _Run, batch: dict, step: int) -> dict:
    """One optimizer step on ``batch``; returns its history entry (the global batch's numbers with several
    processes)."""
    t0 = time.perf_counter()
    loss, agreement = run.model(batch)  # through DDP's forward: backward all-reduces the gradients
    run.accelerator.backward(loss)
    run.accelerator.clip_grad_norm_(run.model.parameters(), run.config.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad()
    value = float(loss.detach())
    tokens, trained = int(batch["loss_mask"].numel()), int(batch[run.config.trained_mask].sum())
    if run.normalizer is not None:  # the global batch's numbers (sums over the ranks)
        value, agreement, tokens, trained = run.normalizer.global_stats(loss, agreement, tokens, trained)
    return dict(step=step, loss=value, agreement=agreement, tokens=tokens, trained=trained,
                seconds=time.perf_counter() - t0)


def _save_progress(run: _Run, out: str, step: int, stop_at: int, history: list) -> None:
    """After a step: a learning-curve snapshot at ``snapshot_steps``; a checkpoint every ``save_every`` steps and at
    the end of the schedule or of this call."""
    config, accelerator = run.config, run.accelerator
    if step in config.snapshot_steps and step < run.total_steps:
        if accelerator.is_main_process:
            save_drafter(run.drafter, Path(out) / "snapshots" / f"step_{step}", run.scale)
        accelerator.wait_for_everyone()
    if step % config.save_every == 0 or step in (run.total_steps, stop_at):
        _save_checkpoint(accelerator, Path(out) / ".checkpoints", step, history)


def _finish(run: _Run, out: str, data: str, step: int, history: list) -> dict:
    """Unbind the target; at the end of the schedule the main process writes the drafter, card and training.json."""
    drafter = run.accelerator.unwrap_model(run.model).drafter  # the same object as before prepare, on every rank
    if step < run.total_steps:
        drafter.detach()
        return dict(steps=step, history=history, finished=False)
    drafter.eval()
    drafter.detach()
    if run.accelerator.is_main_process:
        _write_output(run, drafter, out, data, history)
    run.accelerator.wait_for_everyone()
    return dict(steps=step, history=history, finished=True)


def _write_output(run: _Run, drafter, out: str, data: str, history: list) -> None:
    """The Hub-ready drafter (LoRA merged, the feature scale folded into fc), its model card and training.json."""
    from slimspec.machine import describe_line

    if run.config.lora_rank:
        drafter = drafter.merge_and_unload()
    save_drafter(drafter, out, run.scale)
    _write_card(drafter, out, data, run.config, history)
    record = dict(config=asdict(run.config), data=str(data), processes=run.accelerator.num_processes,
                  machine=describe_line(run.accelerator.device), history=history)
    (Path(out) / "training.json").write_text(json.dumps(record, indent=2, default=str))
