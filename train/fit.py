"""``slimspec-train fit``: EAGLE-3 training of a SlimSpec drafter on self-distillation data (the loop; what one
step computes is ``step.py``, the settings ``fit_config.py``).

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
from .fit_config import FitConfig
from .step import (_add_lora, _write_card, batch_loss, build_drafter, feature_scale, frequent_ids, load_teacher_head,
                   save_drafter)


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
    total_steps = config.max_steps if config.epochs is None else min(config.max_steps, steps_per_epoch * config.epochs)
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
