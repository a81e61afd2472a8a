"""Reference drafters for a target: one command builds, caches and evaluates the whole set on the same data and
the same training budget, so their tau can be compared (and benchmarked end to end by ``slimspec-bench e2e``).

    slimspec-train reference                      # the set for the embedded Gemma 3 270M
    slimspec-train reference --only slimspec-d8   # one member (and whatever it depends on)
    slimspec-train curve                          # tau of SlimSpec d/8 against training tokens

Members (``MEMBERS``): dense full vocabulary; dense truncated 32k draft vocabulary (EAGLE-3 / VocabTrim);
SlimSpec d/8 and d/16 (low-rank head from the SVD of the target's head); and the dense drafter converted to d/8
by ``slimspec-convert`` and healed (head-only distillation towards the target).

Everything is cached under ``<cache>/reference/<target>/`` (``cache`` = ~/.cache/slimspec or $SLIMSPEC_CACHE),
keyed by configuration: ``data-<key>`` holds the self-distillation data (keyed by the data settings) and
``<member>-<key>`` a Hub-ready drafter (keyed by the whole recipe). A finished folder is reused; an interrupted
one resumes (data shards and training checkpoints are both resumable).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path

import torch

MEMBERS = {
    "dense": dict(head_rank=None),
    "truncated-32k": dict(head_rank=None, draft_vocab=32000),
    "slimspec-d8": dict(head_rank="d/8"),
    "slimspec-d16": dict(head_rank="d/16"),
    "converted-d8-healed": dict(convert_from="dense", rank="d/8"),
}


@dataclass(frozen=True)
class Recipe:
    """Data and training settings shared by every member (the cache key)."""

    prompts: str = "builtin"  # the built-in train split (HumanEval prompts + Python-docs prose)
    prompt_limit: int | None = 640  # only the first N of the 909 (data generation is ~2 s per response here)
    max_new_tokens: int = 128
    sampled: bool = False
    topk: int = 64
    text: str | None = "stdlib,docs,packages,humaneval"  # teacher-forced text data mixed in (None: responses only)
    text_limit: int | None = 120  # the first N texts of the interleaved sources (~3k tokens each)
    text_window: int = 512
    candidates: int = 16384  # candidate softmax for training: batch top-k ids + this many frequent tokens (0: full)
    max_steps: int = 1200  # the budget: max_steps x batch_size x window positions at most (~780 per step here)
    batch_size: int = 4
    window: int = 256
    ttt_steps: int = 3
    lr: float = 4e-4
    loss: str = "kl"
    loss_on: str = "all"
    precision: str = "auto"  # bf16 autocast where this CPU has native bf16 matmuls, else fp32
    heal_steps: int = 50
    seed: int = 0
    init_from: str | None = None  # SlimSpec d/8 only: continue from this drafter folder (a further build stage)

    def data_settings(self) -> dict:
        return dict(prompts=self.prompts, prompt_limit=self.prompt_limit, max_new_tokens=self.max_new_tokens,
                    sampled=self.sampled, topk=self.topk)

    def text_settings(self) -> dict:
        return dict(text=self.text, text_limit=self.text_limit, window=self.text_window, topk=self.topk)

    def positions(self) -> int:
        return self.max_steps * self.batch_size * self.window

    def override(self, spec: str | None) -> "Recipe":
        """This recipe with fields set from "name=value,name=value" (``--recipe`` on the command line); "none" sets
        an optional field to None. A bigger machine builds a bigger reference: more data, larger batches."""
        if not spec:
            return self
        fields = {f.name: f for f in dataclass_fields(self)}
        changes = {}
        for item in re.split(r",(?=\s*[A-Za-z_-]+=)", spec):  # a value may hold commas (text=stdlib,docs)
            name, sep, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in fields:
                raise ValueError(f"--recipe {item!r}: use name=value with a name from {sorted(fields)}")
            default = getattr(Recipe, name)
            if value.lower() == "none":
                changes[name] = None
            elif isinstance(default, bool):
                changes[name] = value.lower() in ("1", "true", "yes")
            elif isinstance(default, (int, float)):
                changes[name] = type(default)(value)
            else:
                changes[name] = value
        return replace(self, **changes)


def _key(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def reference_root(target_name: str) -> Path:
    from slimspec.targets import cache_root

    return cache_root() / "reference" / target_name


def data_folder(target_name: str, recipe: Recipe) -> Path:
    return reference_root(target_name) / f"data-{_key(recipe.data_settings())}"


def text_folder(target_name: str, recipe: Recipe) -> Path:
    return reference_root(target_name) / f"text-{_key(recipe.text_settings())}"


def member_folder(target_name: str, name: str, recipe: Recipe) -> Path:
    return reference_root(target_name) / f"{name}-{_key(dict(asdict(recipe), member=name))}"


def is_built(folder: Path) -> bool:
    return (folder / "model.safetensors").exists() and (folder / "training.json").exists()


def data_prompts(recipe: Recipe) -> list:
    """The train prompts the reference data is generated from."""
    from slimspec.prompts import builtin_prompts

    if recipe.prompts != "builtin":
        raise ValueError(f"reference data uses the built-in prompts, got {recipe.prompts!r}")
    prompts = builtin_prompts("train")
    return prompts[: recipe.prompt_limit] if recipe.prompt_limit else prompts


def data_responses_left(target_name: str, recipe: Recipe) -> int:
    """How many target responses the reference data still needs (0: complete)."""
    meta = data_folder(target_name, recipe) / "meta.json"
    done = sum(s["sequences"] for s in json.loads(meta.read_text())["shards"]) if meta.exists() else 0
    return len(data_prompts(recipe)) * (2 if recipe.sampled else 1) - done


def build_data(target_name: str, recipe: Recipe, progress: bool = True) -> str:
    """The recipe's training data, built or resumed: self-distilled responses, and teacher-forced text when the
    recipe mixes it in. Returns the data argument of ``fit`` (folders joined by commas)."""
    from configuration_slimspec import default_target_layer_ids

    from slimspec.machine import fast_dtype, training_device
    from slimspec.prompts import offline_texts
    from slimspec.targets import load_target

    from .data import generate_data, generate_text_data

    folders = [data_folder(target_name, recipe)] + ([text_folder(target_name, recipe)] if recipe.text else [])
    text_done = not recipe.text or (folders[-1] / "meta.json").exists() and json.loads(
        (folders[-1] / "meta.json").read_text()).get("complete", False)
    if data_responses_left(target_name, recipe) == 0 and text_done:
        return ",".join(map(str, folders))
    device = training_device()
    gpu = device.type == "cuda"  # batch sizes only (the data is the same): a GPU wants many rows per forward
    target, tokenizer = load_target(target_name, dtype=fast_dtype(device), device=device)
    L = target.config.get_text_config().num_hidden_layers
    common = dict(target=target, tokenizer=tokenizer, layer_ids=default_target_layer_ids(L), topk=recipe.topk,
                  target_name=target_name, progress=progress)
    if data_responses_left(target_name, recipe):
        generate_data(prompts=data_prompts(recipe), out=str(folders[0]), max_new_tokens=recipe.max_new_tokens,
                      max_prompt_tokens=384, sampled=recipe.sampled, batch_size=64 if gpu else 16, **common)
    if not text_done:
        texts = offline_texts(recipe.text.split(","))[: recipe.text_limit]
        generate_text_data(texts=texts, out=str(folders[1]), window=recipe.text_window, source=recipe.text,
                           batch_size=16 if gpu else 1, **common)
    return ",".join(map(str, folders))


def fit_config(recipe: Recipe, **member) -> "FitConfig":
    import os

    from slimspec.machine import resolve_dtype, training_device

    from .fit import FitConfig

    device = training_device()
    workers = min(8, (os.cpu_count() or 1) - 1) if device.type == "cuda" else 0
    return FitConfig(max_steps=recipe.max_steps, batch_size=recipe.batch_size, window=recipe.window,
                     ttt_steps=recipe.ttt_steps, lr=recipe.lr, loss=recipe.loss, loss_on=recipe.loss_on,
                     bf16=resolve_dtype(recipe.precision, device) == torch.bfloat16, candidates=recipe.candidates,
                     seed=recipe.seed, save_every=max(50, recipe.max_steps // 20), epochs=1000,  # budget = max_steps
                     workers=workers, **member)


def build_member(target_name: str, name: str, recipe: Recipe, progress: bool = True) -> Path:
    """Train (or resume, or take from cache) one member; returns its Hub-ready folder. The SlimSpec d/8 run also
    keeps snapshots at the learning curve's budgets (``curve_steps``)."""
    from slimspec.machine import training_device
    from slimspec.targets import load_target

    from .fit import fit

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
        from slimspec.convert import convert_drafter

        converted = out.parent / f"{out.name}.converted"
        if not (converted / "model.safetensors").exists():
            shutil.rmtree(converted, ignore_errors=True)
            convert_drafter(source=str(source), output=str(converted), rank=spec["rank"], validate=False,
                            progress=progress)
        config = replace(fit_config(recipe, init_from=str(converted), trainable="head"), max_steps=recipe.heal_steps)
    else:
        snapshots = tuple(curve_steps(recipe.max_steps)[:-1]) if name == "slimspec-d8" else ()
        stage = dict(init_from=recipe.init_from) if name == "slimspec-d8" and recipe.init_from else {}
        config = fit_config(recipe, snapshot_steps=snapshots, **spec, **stage)
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
    from slimspec.targets import load_target

    return load_target(target_name, dtype=dtype)


def evaluate_member(target, tokenizer, folder: Path, *, prompts: int, num_assistant_tokens: int = 5,
                    max_new_tokens: int = 64, progress: bool = True) -> dict:
    from modeling_slimspec import SlimSpecDrafter

    from .evaluate import evaluate_drafter
    from .fit import median_step_seconds, positions_per_s

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


def parse_member_steps(spec: str | None, names: list) -> dict:
    """"truncated-32k=580,dense=330" -> {name: steps}: members trained for their own number of steps instead of
    the recipe's, e.g. the steps that cost them the CPU time d/8's budget costs (an equal-time comparison)."""
    steps = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in names or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"--member-steps {item!r}: use NAME=STEPS with NAME one of {names} and STEPS >= 1")
        steps[name] = int(value)
    return steps


def member_recipe(recipe: Recipe, name: str, steps: dict | None) -> Recipe:
    """The recipe one member trains with: ``recipe``, with its own step count where ``steps`` gives one."""
    return replace(recipe, max_steps=steps[name]) if steps and name in steps else recipe


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


def curve_steps(max_steps: int, points: int = 4) -> list:
    """Doubling budgets ending at max_steps: e.g. 600 -> [75, 150, 300, 600]."""
    return sorted({max(1, max_steps >> i) for i in range(points)})


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


# ----------------------------------------------------------------------------------------------------------------------
# The shipped drafter
# ----------------------------------------------------------------------------------------------------------------------
SHIP_GAIN = 0.05  # a new build replaces the shipped drafter only when it raises held-out tau by at least this much


def shipped_evaluation(folder: Path) -> dict | None:
    """What ``ship`` measured when it wrote ``folder`` (its evaluation.json); None where there is none."""
    path = Path(folder) / "evaluation.json"
    return json.loads(path.read_text()) if path.exists() else None


def replace_refusal(out: Path, report: dict) -> str | None:
    """Why ``report``'s drafter must not replace the one shipped at ``out`` (None: it may): it must raise held-out
    tau by ``SHIP_GAIN`` on the same evaluation (the same longest draft and prompts per category)."""
    previous = shipped_evaluation(out)
    if previous is None:
        return None
    same = (previous.get("max_k"), previous.get("per_category_prompts")) == (report["max_k"],
                                                                            report["per_category_prompts"])
    if not same:
        return (f"{out} was evaluated differently (longest draft, prompts per category "
                f"{previous.get('max_k')}, {previous.get('per_category_prompts')} against {report['max_k']}, "
                f"{report['per_category_prompts']}); ship with the same settings or pass force")
    if report["tau"] < (1 + SHIP_GAIN) * previous["tau"]:
        return (f"tau {report['tau']:.3f} does not raise the shipped drafter's {previous['tau']:.3f} by "
                f"{SHIP_GAIN:.0%} (needs {(1 + SHIP_GAIN) * previous['tau']:.3f}); {out} is left as it was")
    return None


def ship(source: Path, out: Path, *, target_name: str = "gemma3-270m", max_k: int = 6, per_category: int | None = None,
         max_new_tokens: int = 64, prompt_lookup: tuple | None = None, force: bool = False,
         progress: bool = True) -> dict:
    """Turn a trained drafter folder into the one that ships: evaluate it on the balanced held-out set (greedy,
    K = ``max_k``, per category), measure this machine's costs, let the "cost" schedule choose the draft length
    (the drafter's measured per-position acceptance is saved as its prior), and write a bf16 Hub folder with a
    model card stating data, budget, wall time and tau per category. ``prompt_lookup`` = (tokens, max n-gram[,
    min n-gram]) switches hybrid drafting on in the saved generation_config (measure it with
    ``slimspec-bench cpu``; the evaluation here is of the drafter alone). Returns the measurements, with
    ``shipped``: whether ``out`` was written. An existing ``out`` is replaced only by a drafter whose tau is
    ``SHIP_GAIN`` higher than the one recorded there (``replace_refusal``), and a folder there that ``ship`` did
    not write only with ``force``."""
    from generation_slimspec import SlimSpecGenerateStats, choose_draft_length, expected_tokens, measured_costs
    from modeling_slimspec import SlimSpecDrafter

    from slimspec.heldout import CATEGORIES, HELD_OUT
    from slimspec.machine import describe_line, fast_dtype

    from .evaluate import evaluate_drafter

    if Path(out).exists() and shipped_evaluation(out) is None and not force:
        raise FileExistsError(f"{out} exists and was not written by ship (no evaluation.json): choose another out, "
                              f"or pass force to replace it")
    target, tokenizer = evaluation_target(target_name, fast_dtype())
    drafter = SlimSpecDrafter.from_pretrained(str(source), dtype=target.dtype).eval()
    results = {c: evaluate_drafter(target, tokenizer, drafter, prompts=HELD_OUT[c][:per_category],
                                   num_assistant_tokens=max_k, max_new_tokens=max_new_tokens, progress=progress)
               for c in CATEGORIES}
    overall = SlimSpecGenerateStats.merge(r["stats"] for r in results.values())
    acceptance = overall.conditional_acceptance()
    costs = measured_costs(drafter.attach(target), target, max_k)
    drafter.detach()
    sweep = {k: dict(tau=expected_tokens(acceptance, k),
                     predicted_tokens_per_s=expected_tokens(acceptance, k) / (costs.target_pass[k] + k * costs.draft))
             for k in range(2, max_k + 1)}
    chosen = choose_draft_length(costs, acceptance, max_k)
    from slimspec.targets import HUB_IDS

    drafter.config.target_name_or_path = HUB_IDS.get(target_name, drafter.config.target_name_or_path)
    config = drafter.generation_config
    config.num_assistant_tokens, config.num_assistant_tokens_schedule = max_k, "cost"
    config.slimspec_acceptance = [round(a, 4) for a in acceptance]
    if prompt_lookup:
        prompt_lookup = (*prompt_lookup, 1)[:3]  # (tokens, max n-gram, min n-gram)
        config.prompt_lookup_num_tokens = prompt_lookup[0]
        config.max_matching_ngram_size, config.min_matching_ngram_size = prompt_lookup[1:]
    training = json.loads((Path(source) / "training.json").read_text())
    report = dict(machine=describe_line(), tau=overall.tau, prompt_lookup=list(prompt_lookup or []) or None,
                  acceptance=overall.per_position_acceptance(),
                  conditional_acceptance=acceptance, max_k=max_k, per_category_prompts=per_category,
                  per_category={c: dict(tau=r["tau"], acceptance=r["per_position_acceptance"], prompts=r["prompts"])
                                for c, r in results.items()},
                  costs=dict(target_pass=costs.target_pass, draft=costs.draft), chosen_draft_length=chosen,
                  plain_tokens_per_s=1 / costs.target_pass[0], sweep=sweep, source=str(source),
                  data=describe_data(training.get("data", "")), steps=len(training.get("history", [])),
                  trained_positions=sum(h["trained"] for h in training.get("history", [])),
                  train_minutes=sum(h["seconds"] for h in training.get("history", [])) / 60,
                  wall_minutes=(training.get("wall_seconds") or 0) / 60,
                  wall_from_step=training.get("wall_from_step", 0),
                  trained_on=training.get("machine", "this machine"), recipe=training.get("recipe", {}))
    report["stages"] = earlier_stages(report["recipe"].get("init_from")) + [stage_summary(report)]
    refusal = None if force else replace_refusal(out, report)
    if refusal:
        return dict(report, shipped=False, refusal=refusal)
    tmp = Path(out).with_name(f".{Path(out).name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    drafter.to(torch.bfloat16).save_pretrained(tmp)
    _ship_card(drafter, tmp, report)
    (tmp / "evaluation.json").write_text(json.dumps(report, indent=2, default=str))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return dict(report, shipped=True)


def stage_summary(report: dict) -> dict:
    """One build stage as the card and the learning curve against CPU time list it."""
    return {key: report.get(key) for key in ("steps", "trained_positions", "train_minutes", "tau", "data")}


def earlier_stages(init_from: str | None) -> list:
    """The stages a staged build continued from, oldest first, read from each earlier shipped folder's
    evaluation.json (its own "stages", or, for folders shipped before stages were recorded, its summary and its
    recipe's init_from); empty for a build from scratch, and as far as the chain is on this machine."""
    earlier = shipped_evaluation(init_from) if init_from else None
    if earlier is None:
        return []
    if earlier.get("stages"):
        return earlier["stages"]
    return earlier_stages(earlier.get("recipe", {}).get("init_from")) + [stage_summary(earlier)]


def describe_data(data: str) -> str:
    """What a training data argument (folders joined by commas) holds, from each folder's meta.json: the kind,
    source and tokens (the folder path where its meta.json is not on this machine)."""
    parts = []
    for folder in filter(None, data.split(",")):
        meta_path = Path(folder) / "meta.json"
        if not meta_path.exists():
            parts.append(folder)
            continue
        meta = json.loads(meta_path.read_text())
        if meta.get("kind") == "text":
            parts.append(f"{meta['texts']} offline texts teacher-forced ({meta['source']}), {meta['tokens']:,} tokens")
        else:
            mode = "greedy + sampled" if meta.get("sampled") else "greedy"
            parts.append(f"{meta['prompts']} built-in train prompts self-distilled ({mode} responses of up to "
                         f"{meta['max_new_tokens']} tokens), {meta['tokens']:,} tokens with prompts")
    return "; ".join(parts)


def build_command(recipe_changes: dict) -> str:
    """The command that builds the reference d/8 with these recipe fields changed from the defaults."""
    changes = ",".join(f"{k}={'none' if v is None else v}" for k, v in recipe_changes.items())
    return "slimspec-train reference --only slimspec-d8" + (f" --recipe {changes}" if changes else "")


def _card_source(report: dict) -> str:
    init_from = report["recipe"].get("init_from")
    if not init_from:
        return "trained from scratch (slimspec-train reference)"
    if len(report["stages"]) > 1:
        return f"stage {len(report['stages'])} of a staged build (slimspec-train reference, init_from)"
    return f"continued from {init_from} (slimspec-train reference)"


def _resumed(report: dict) -> str:
    """How much of a resumed build the wall time covers (the training-step minutes cover every step)."""
    start = report.get("wall_from_step") or 0
    return f" for steps {start + 1}-{report['steps']}, after resuming from a checkpoint" if start else ""


def _ship_card(drafter, folder: Path, report: dict) -> None:
    from slimspec.convert.card import build_card

    rows = ["| category | tau (K = %d) | acceptance per position |" % report["max_k"], "|---|---|---|"]
    for c, r in report["per_category"].items():
        rows.append(f"| {c} | {r['tau']:.2f} | {', '.join(f'{a:.2f}' for a in r['acceptance'])} |")
    rows.append(f"| **all** | **{report['tau']:.2f}** | {', '.join(f'{a:.2f}' for a in report['acceptance'])} |")
    sweep = ", ".join(f"K={k}: tau {v['tau']:.2f}, {v['predicted_tokens_per_s']:.1f} tokens/s"
                      for k, v in report["sweep"].items())
    quality = ("Greedy, held-out prompts written for this purpose and never trained on (6 categories), 64 new "
               f"tokens each, target in its fast dtype on {report['machine']}:\n\n" + "\n".join(rows) +
               f"\n\nDraft length by the cost model on that machine (plain decoding "
               f"{report['plain_tokens_per_s']:.1f} tokens/s): {sweep}; the \"cost\" schedule chose K = "
               f"{report['chosen_draft_length']} there and chooses again on each machine it runs on.")
    if report.get("prompt_lookup"):
        tokens, ngram, min_ngram = report["prompt_lookup"]
        quality += (f"\n\nHybrid drafting is on (`generation_config.json`): where the last {min_ngram} to {ngram} "
                    f"tokens occurred earlier in the context, the next block is the up to {tokens} tokens that "
                    f"followed them (prompt lookup), else the drafter's own; the table above is the drafter alone.")
    notes = [f"data: {report['data']}",
             f"budget: {report['steps']} steps, {report['trained_positions']:,} trained positions, "
             f"{report['train_minutes']:.1f} min of training steps ({report['wall_minutes']:.1f} min wall"
             f"{_resumed(report)}) on "
             f"{report['trained_on']}",
             f"built with `{build_command(report['recipe'])}`, shipped with `slimspec-train ship`"]
    if len(report["stages"]) > 1:  # a staged build: every stage's budget and what it reached
        stages = "; ".join(f"{i}: {st['steps']} steps, {st['train_minutes']:.1f} min, tau {st['tau']:.2f}"
                           for i, st in enumerate(report["stages"], 1))
        total = sum(st["train_minutes"] for st in report["stages"])
        notes.append(f"stages (each continues the one before): {stages}; in all "
                     f"{sum(st['steps'] for st in report['stages'])} steps, "
                     f"{sum(st['trained_positions'] for st in report['stages']):,} trained positions, "
                     f"{total:.1f} min of training steps")
    card = build_card(config=drafter.config, info=dict(
        source=_card_source(report), source_format="slimspec-train",
        dense_head_params=drafter.config.head_vocab_size * drafter.config.hidden_size,
        head_params=sum(p.numel() for p in drafter.lm_head.parameters()),
        total_params=sum(p.numel() for p in drafter.parameters()), quality_text=quality, notes=notes,
        notes_title="How it was built", num_assistant_tokens=f"up to {report['max_k']} (\"cost\" schedule)"))
    card.save(folder / "README.md")
