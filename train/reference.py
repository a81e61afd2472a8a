"""Reference drafters for a target: one command builds, caches and evaluates the whole set on the same data and
the same training budget, so their tau can be compared (and benchmarked end to end by ``slimspec-bench e2e``).

    slimspec-train reference                      # the set for the embedded Gemma 3 270M
    slimspec-train reference --only slimspec-d8   # one member (and whatever it depends on)
    slimspec-train curve                          # tau of SlimSpec d/8 against training tokens

Members (``MEMBERS``): dense full vocabulary; dense truncated 32k draft vocabulary (EAGLE-3 / VocabTrim);
SlimSpec d/8 and d/16 (low-rank head from the SVD of the target's head); and the dense drafter converted to d/8
by ``slimspec-convert`` and healed (head-only distillation towards the target).

The members and the recipe are data (``recipe.py``); the build is a sequence of named steps, each cached under
its own key and resumable: ``build_data`` (self-distilled responses and teacher-forced text), ``build_member``
(convert or fit), ``evaluate_member``, and the report. A finished folder is reused; an interrupted one resumes
(data shards and training checkpoints are both resumable).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from configuration_slimspec import default_target_layer_ids
from modeling_slimspec import SlimSpecDrafter
from slimspec.machine import fast_dtype, resolve_dtype, training_device
from slimspec.prompts import offline_texts
from slimspec.targets import load_target

from .data import generate_data, generate_text_data
from .evaluate import evaluate_drafter
from .fit import fit
from .fit_config import FitConfig
from .step import median_step_seconds, positions_per_s
from .recipe import (BUILD_KEYS, MEMBERS, Recipe, _key, curve_steps, data_folders, data_prompts, data_responses_left,
                     is_built, member_folder, member_recipe, reference_root, text_folders)

def build_data(target_name: str, recipe: Recipe, progress: bool = True) -> str:
    """The recipe's training data, built or resumed: self-distilled responses (a folder per prompt group), and
    teacher-forced text when the recipe mixes it in (a folder per block of texts). Returns the data argument of
    ``fit`` (folders joined by commas)."""
    folders, texts_at = data_folders(target_name, recipe), text_folders(target_name, recipe)
    text_left = [folder for folder in texts_at if not ((folder / "meta.json").exists() and json.loads(
        (folder / "meta.json").read_text()).get("complete", False))]
    data = ",".join(map(str, folders + texts_at))
    if data_responses_left(target_name, recipe) == 0 and not text_left:
        return data
    device = training_device()
    gpu = device.type == "cuda"  # batch sizes only (the data is the same): a GPU wants many rows per forward
    target, tokenizer = load_target(target_name, dtype=fast_dtype(device), device=device)
    L = target.config.get_text_config().num_hidden_layers
    common = dict(target=target, tokenizer=tokenizer, layer_ids=default_target_layer_ids(L), topk=recipe.topk,
                  target_name=target_name, progress=progress)
    for part, folder in zip(recipe.parts(), folders):
        if data_responses_left(target_name, part):
            generate_data(prompts=data_prompts(part), out=str(folder), max_new_tokens=recipe.max_new_tokens,
                          max_prompt_tokens=384, modes=part.response_modes(), batch_size=64 if gpu else 16, **common)
    blocks = recipe.text_block_items(offline_texts(recipe.text.split(","))) if text_left else []
    for folder, block in zip(texts_at, blocks):
        if folder in text_left:  # a finished block is kept as it is
            generate_text_data(texts=block, out=str(folder), window=recipe.text_window, source=recipe.text,
                               batch_size=16 if gpu else 1, **common)
    return data


def fit_config(recipe: Recipe, **member) -> FitConfig:
    """The FitConfig a member trains with: the recipe's settings, the member's own fields, a step budget."""
    device = training_device()
    workers = min(8, (os.cpu_count() or 1) - 1) if device.type == "cuda" else 0
    return FitConfig(max_steps=recipe.max_steps, batch_size=recipe.batch_size, window=recipe.window,
                     ttt_steps=recipe.ttt_steps, lr=recipe.lr, loss=recipe.loss, loss_on=recipe.loss_on,
                     bf16=resolve_dtype(recipe.precision, device) == torch.bfloat16, candidates=recipe.candidates,
                     seed=recipe.seed, save_every=max(50, recipe.max_steps // 20), epochs=None,  # max_steps rules
                     workers=workers, **member)


def build_member(target_name: str, name: str, recipe: Recipe, progress: bool = True) -> Path:
    """Train (or resume, or take from cache) one member; returns its Hub-ready folder. The SlimSpec d/8 run also
    keeps snapshots at the learning curve's budgets (``curve_steps``)."""
    out = member_folder(target_name, name, recipe)
    if is_built(out):
        return out
    spec = dict(MEMBERS[name])
    data = build_data(target_name, recipe, progress)
    # the member it is converted from first (it loads its own target); then this member's timing starts
    source = build_member(target_name, spec["convert_from"], recipe, progress) if "convert_from" in spec else None
    target, _ = load_target(target_name, dtype=torch.float32, device=training_device())
    t0 = time.perf_counter()
    if source is not None:
        from slimspec.convert import convert_drafter  # the converter (and its SVD) only for a converted member

        converted = out.parent / f"{out.name}.converted"
        if not (converted / "model.safetensors").exists():
            shutil.rmtree(converted, ignore_errors=True)
            convert_drafter(source=str(source), output=str(converted), rank=spec["rank"], validate=False,
                            progress=progress)
        config = replace(fit_config(recipe, init_from=str(converted), trainable="head"), max_steps=recipe.heal_steps)
    else:
        snapshots = tuple(curve_steps(recipe.max_steps)[:-1]) if spec.get("curve") else ()
        stage = dict(init_from=recipe.init_from) if spec.get("stages") and recipe.init_from else {}
        fields = {k: v for k, v in spec.items() if k not in BUILD_KEYS}
        config = fit_config(recipe, snapshot_steps=snapshots, **fields, **stage)
    result = fit(target=target, data=data, out=str(out), config=config, progress=progress)
    info = json.loads((out / "training.json").read_text())
    # this call's wall time covers the steps after the checkpoint it resumed from (the history covers them all)
    info["wall_seconds"], info["wall_from_step"] = time.perf_counter() - t0, result["resumed_at"]
    info["recipe"] = {k: v for k, v in asdict(recipe).items() if v != getattr(Recipe, k)}  # what differs from default
    (out / "training.json").write_text(json.dumps(info, indent=2, default=str))
    return out


def evaluation_target(target_name: str, dtype: torch.dtype):
    """(target, tokenizer) on the CPU as drafters are evaluated: in ``dtype``, as loaded (tau does not depend on
    the kernels; whether packing speeds the passes up is a property of the machine, not of the drafter)."""
    return load_target(target_name, dtype=dtype)


def evaluate_member(target, tokenizer, folder: Path, *, prompts: int, num_assistant_tokens: int = 5,
                    max_new_tokens: int = 64, progress: bool = True) -> dict:
    drafter = SlimSpecDrafter.from_pretrained(str(folder), dtype=target.dtype)
    result = evaluate_drafter(target, tokenizer, drafter, prompts=prompts, num_assistant_tokens=num_assistant_tokens,
                              max_new_tokens=max_new_tokens, progress=progress)
    result.pop("stats")
    info = json.loads((folder / "training.json").read_text()) if (folder / "training.json").exists() else {}
    result.update(folder=str(folder), head_params=sum(p.numel() for p in drafter.lm_head.parameters()),
                  head_rank=drafter.config.head_rank, draft_vocab_size=drafter.config.draft_vocab_size,
                  train_seconds=sum(h["seconds"] for h in info.get("history", [])) or info.get("wall_seconds"),
                  positions_per_s=positions_per_s(info.get("history", [])),
                  step_seconds=median_step_seconds(info.get("history", [])))
    return result


def format_report(report: dict) -> str:
    r = report["recipe"]
    budget = (f"{r['max_steps']} steps" if not report.get("member_steps") else
              f"{r['max_steps']} steps ({', '.join(f'{n} {s}' for n, s in report['member_steps'].items())})")
    lines = [f"Reference drafters for {report['target']}: {budget} x {r['batch_size']} x {r['window']} "
             f"positions each (TTT {r['ttt_steps']}, loss {r['loss']}, precision {r['precision']}, candidates "
             f"{r['candidates']}); tau with the adapter, greedy, "
             f"K = {report['num_assistant_tokens']}, {report['prompts']} held-out prompts, {report['dtype']} target",
             "", "| drafter | head params | steps | tau | acceptance per position | train min | median step s | "
             "trained positions/s |", "|---|---|---|---|---|---|---|---|"]
    for name, m in report["members"].items():
        acc = ", ".join(f"{a:.2f}" for a in m["per_position_acceptance"])
        minutes = f"{m['train_seconds'] / 60:.1f}" if m.get("train_seconds") else "-"
        pps = f"{m['positions_per_s']:.0f}" if m.get("positions_per_s") else "-"
        step = f"{m['step_seconds']:.2f}" if m.get("step_seconds") else "-"
        lines.append(f"| {name} | {m['head_params'] / 1e6:.1f}M | {m['steps']} | {m['tau']:.2f} | {acc} | "
                     f"{minutes} | {step} | {pps} |")
    if "converted-d8-unhealed" in report:
        lines.append(f"\nconverted d/8 before healing: tau {report['converted-d8-unhealed']['tau']:.2f}")
    return "\n".join(lines)


def build_reference_set(*, target_name: str = "gemma3-270m", names: list | None = None, recipe: Recipe = Recipe(),
                        eval_prompts: int = 16, num_assistant_tokens: int = 5, member_steps: dict | None = None,
                        progress: bool = True) -> dict:
    """Build (or resume, or reuse) the members, evaluate each, and write report-<key>.json/.md beside them.
    ``member_steps`` ({name: steps}) trains those members for their own number of steps (``member_recipe``)."""
    names = list(MEMBERS) if not names else names
    unknown = [n for n in names if n not in MEMBERS]
    if unknown:
        raise ValueError(f"unknown reference drafters {unknown}; choose from {list(MEMBERS)}")
    recipes = {n: member_recipe(recipe, n, member_steps) for n in names}
    if progress:
        todo = [n for n in names if not is_built(member_folder(target_name, n, recipes[n]))]
        print(f"slimspec: reference drafters for {target_name} under {reference_root(target_name)}; "
              f"to build: {todo or 'nothing (all cached)'}", flush=True)
    folders = {n: build_member(target_name, n, recipes[n], progress) for n in names}
    if not eval_prompts:  # built only (evaluated later, on the machine the drafters are for)
        return dict(folders={n: str(f) for n, f in folders.items()}, report=None)
    target, tokenizer = evaluation_target(target_name, torch.bfloat16)
    report = dict(target=target_name, recipe=asdict(recipe), dtype="bf16", prompts=eval_prompts,
                  num_assistant_tokens=num_assistant_tokens, members={})
    if member_steps:
        report["member_steps"] = dict(member_steps)
    kw = dict(prompts=eval_prompts, num_assistant_tokens=num_assistant_tokens, progress=progress)
    for name, folder in folders.items():
        report["members"][name] = dict(evaluate_member(target, tokenizer, folder, **kw),
                                       steps=recipes[name].max_steps)
    if "converted-d8-healed" in folders:
        converted = folders["converted-d8-healed"].parent / f"{folders['converted-d8-healed'].name}.converted"
        if (converted / "model.safetensors").exists():
            report["converted-d8-unhealed"] = evaluate_member(target, tokenizer, converted, **kw)
    key = _key(asdict(recipe)) if not member_steps else _key(dict(asdict(recipe), member_steps=member_steps))
    stem = reference_root(target_name) / f"report-{key}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    stem.with_suffix(".md").write_text(format_report(report) + "\n")
    report["report"] = str(stem.with_suffix(".md"))
    return report


def choose_budget(points: list, gain: float = 0.03):
    """The smallest budget from which every further doubling adds under ``gain`` (relative) tau; None while the
    last doubling still adds more (a flat stretch followed by a rise is not a plateau).
    points: [{"steps", "tau"}, ...] sorted by steps."""
    by_steps = {p["steps"]: p["tau"] for p in points}
    chosen = None
    for p in reversed(points):
        doubled = by_steps.get(2 * p["steps"])
        if doubled is None:
            continue
        if doubled >= (1 + gain) * p["tau"]:
            break
        chosen = p["steps"]
    return chosen


def learning_curve(*, target_name: str = "gemma3-270m", recipe: Recipe = Recipe(), eval_prompts: int = 16, num_assistant_tokens: int = 5, progress: bool = True) -> dict:
    """tau of SlimSpec d/8 against training budget, from snapshots of the reference d/8 run at doubling steps
    (``curve_steps``). The snapshots share that run's cosine schedule, so an early snapshot (taken at a higher
    learning rate) understates what a full run of that budget reaches: the curve errs towards larger budgets.
    Picks the budget with ``choose_budget`` and writes curve-<key>.json/.md/.png."""
    steps = curve_steps(recipe.max_steps)
    folder = build_member(target_name, "slimspec-d8", recipe, progress)
    snapshots = {s: folder / "snapshots" / f"step_{s}" for s in steps[:-1]}
    snapshots[recipe.max_steps] = folder
    target, tokenizer = evaluation_target(target_name, torch.bfloat16)
    points_out = []
    for s in steps:
        m = evaluate_member(target, tokenizer, snapshots[s], prompts=eval_prompts,
                            num_assistant_tokens=num_assistant_tokens, progress=progress)
        points_out.append(dict(steps=s, positions=s * recipe.batch_size * recipe.window, tau=m["tau"],
                               per_position_acceptance=m["per_position_acceptance"]))
    chosen = choose_budget(points_out)
    curve = dict(target=target_name, recipe=asdict(recipe), points=points_out, chosen_steps=chosen,
                 rule="smallest budget from which every doubling adds under 3% tau (None: the last doubling still "
                      "added more)",
                 note="snapshots of one cosine run (an early snapshot understates a full run of its budget)")
    stem = reference_root(target_name) / f"curve-{_key(asdict(recipe))}"
    stem.with_suffix(".json").write_text(json.dumps(curve, indent=2, default=str))
    lines = ["| steps | training positions (upper bound) | tau | acceptance per position |", "|---|---|---|---|"]
    for p in points_out:
        lines.append(f"| {p['steps']} | {p['positions']:,} | {p['tau']:.2f} | "
                     f"{', '.join(f'{a:.2f}' for a in p['per_position_acceptance'])} |")
    lines.append(f"\nchosen budget: {chosen} steps ({curve['rule']}; {curve['note']})")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    _plot_curve(points_out, stem.with_suffix(".png"), target_name)
    curve["report"] = str(stem.with_suffix(".md"))
    return curve


def _plot_curve(points: list, path: Path, target_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([p["positions"] for p in points], [p["tau"] for p in points], "o-")
    ax.set_xscale("log")
    ax.set_xlabel("training positions")
    ax.set_ylabel("tau (greedy, K = 5)")
    ax.set_title(f"SlimSpec d/8 learning curve, {target_name}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
