"""End-to-end benchmark: plain vs prompt lookup vs every SlimSpec drafter, per dtype and decoding mode, one process.

    slimspec-bench e2e                                          # the built reference drafters on gemma3-270m
    slimspec-bench e2e --drafter d8=FOLDER --drafter dense=FOLDER [--dtype bf16] [--modes greedy] [--prompts 20]
                       [--max-new-tokens 64] [--k 5] [--k-sweep 2,3,4,5,6,7,8] [--out bench_results/e2e]

Target on CPU, batch 1, held-out prompts (``slimspec.prompts.benchmark_prompts``). For every dtype (bf16, fp32)
and mode (greedy; sample = temperature 1, no top-k / top-p, ``torch.manual_seed(seed + prompt index)`` before
every method's call) the methods run prompt by prompt, back to back (plain first), so all see the same machine
state; each method is warmed up once before timing. Per method: tokens/s (totals over all prompts), speedup over
plain, tau (tokens per target verification pass), per-position acceptance (drafters), the time per target pass
split into target forward (hooks on the target), drafter body, drafter head and overhead (everything else:
draft selection, the adapter, transformers' decoding loop), and for greedy how many outputs equal plain's.

Then: a K sweep (greedy, first dtype), the SlimSpec performance model relative to the dense drafter
(the SlimSpec paper's model: predicted speedup rho_tau (1 + kappa) / (1 + nu kappa) against the measured one), and
the project's targets at greedy bf16 K = 5. Writes ``results.json``, ``report.md`` and PNG plots to ``--out``
and prints the report. Only ``target.generate`` is called; the decoding loop is transformers' own.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from slimspec.train.evaluate import merge_stats

from .generate import DTYPES, ForwardTimer

MODES = {
    "greedy": dict(do_sample=False),
    "sample": dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0),
}
SPLIT_PARTS = ("target_forward", "drafter_body", "drafter_head", "overhead")


# ----------------------------------------------------------------------------------------------------------------------
# Methods
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Method:
    """One way of calling ``target.generate``: plain, prompt lookup with K, or a SlimSpec drafter with K."""

    name: str
    kind: str  # "plain" | "lookup" | "drafter"
    k: int | None = None
    drafter: object = None


@dataclass
class Tally:
    """Totals of one method over the prompts."""

    seconds: float = 0.0
    new_tokens: int = 0
    passes: int = 0  # target forward calls (ForwardTimer), prefill included
    target_seconds: float = 0.0
    identical: int = 0
    prompts: int = 0
    stats: list = field(default_factory=list)  # SlimSpecGenerateStats per call (drafters)


def parse_drafter_specs(specs: list) -> dict:
    """["NAME=PATH", ...] -> {NAME: PATH} (order kept)."""
    out = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--drafter expects NAME=PATH, got {spec!r}")
        if name in out or name in ("plain", "prompt_lookup"):
            raise SystemExit(f"--drafter name {name!r} is used twice or reserved")
        out[name] = path
    return out


def default_drafter_folders(target_name: str) -> dict:
    """The built members of the reference set for ``target_name``, in MEMBERS order."""
    from slimspec.train.reference import MEMBERS, Recipe, is_built, member_folder

    folders = {name: member_folder(target_name, name, Recipe()) for name in MEMBERS}
    return {name: str(f) for name, f in folders.items() if is_built(f)}


def load_drafters(folders: dict, dtype: torch.dtype) -> dict:
    """{name: folder} -> {name: drafter in ``dtype``} (Hub custom code, as a user would load it)."""
    from transformers import AutoModel

    return {name: AutoModel.from_pretrained(path, trust_remote_code=True).to(dtype).eval()
            for name, path in folders.items()}


def build_methods(drafters: dict, k: int, prompt_lookup: bool) -> list:
    methods = [Method("plain", "plain")]
    if prompt_lookup:
        methods.append(Method("prompt_lookup", "lookup", k))
    methods += [Method(name, "drafter", k, d) for name, d in drafters.items()]
    return methods


def encode(tokenizer, text: str) -> dict:
    enc = tokenizer(text, return_tensors="pt")
    return {key: enc[key] for key in ("input_ids", "attention_mask") if key in enc}


# ----------------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------------
def call_method(target, method: Method, inputs: dict, gen_kwargs: dict):
    """One timed ``target.generate`` -> (output ids, seconds, ForwardTimer, stats or None).

    A target holds one attached drafter at a time, so a drafter is attached just before its call (untimed) and
    detached after; its draft length is set to the method's K with the constant schedule."""
    kwargs = dict(gen_kwargs)
    if method.kind == "lookup":
        kwargs["prompt_lookup_num_tokens"] = method.k
    elif method.kind == "drafter":
        config = method.drafter.generation_config
        config.num_assistant_tokens, config.num_assistant_tokens_schedule = method.k, "constant"
        method.drafter.attach(target)
        kwargs["assistant_model"] = method.drafter
    timer = ForwardTimer(target)
    try:
        t0 = time.perf_counter()
        out = target.generate(**inputs, **kwargs)
        seconds = time.perf_counter() - t0
    finally:
        timer.close()
        if method.kind == "drafter":
            method.drafter.detach()
    stats = method.drafter.last_generate_stats if method.kind == "drafter" else None
    return out, seconds, timer, stats


def run_prompt(target, methods: list, inputs: dict, gen_kwargs: dict, seed: int | None, tallies: dict) -> None:
    """Every method back to back on one prompt (plain first); add to ``tallies``. ``seed``: reseed before every
    call (sampling), so all methods see the same seed."""
    n_prompt = inputs["input_ids"].shape[1]
    reference = None
    for method in methods:
        if seed is not None:
            torch.manual_seed(seed)
        out, seconds, timer, stats = call_method(target, method, inputs, gen_kwargs)
        t = tallies[method.name]
        t.seconds += seconds
        t.new_tokens += out.shape[1] - n_prompt
        t.passes += timer.calls
        t.target_seconds += timer.seconds
        t.prompts += 1
        if method.kind == "plain":
            reference = out
        t.identical += int(reference is not None and torch.equal(out, reference))
        if stats is not None:
            t.stats.append(stats)


def summarize(method: Method, t: Tally, plain_tps: float, greedy: bool) -> dict:
    """One method's totals -> the numbers of results.json."""
    tps = t.new_tokens / t.seconds if t.seconds else float("nan")
    passes = max(t.passes, 1)
    s = merge_stats(t.stats) if t.stats else None
    body, head = (s.drafter_seconds, s.head_seconds) if s is not None else (0.0, 0.0)
    split = dict(target_forward=t.target_seconds, drafter_body=body, drafter_head=head)
    split["overhead"] = t.seconds - sum(split.values())
    drafted = sum(s.drafted_per_pass) if s is not None else None
    if s is not None:
        tau = s.tau  # SlimSpec convention: the prefill pass verifies nothing and is not counted
    elif method.kind == "lookup":
        # Prompt lookup: new tokens / target forward passes (ForwardTimer). Its prefill is not a separate pass:
        # transformers' prompt-lookup generator drafts from the prompt's n-grams already at the first iteration, so
        # the first forward is prefill *and* verification, yielding accepted drafts + 1 like every later pass
        # (checked: first forward input = prompt + K). Subtracting it would count a never-accepting run as tau > 1.
        tau = t.new_tokens / passes
    else:
        tau = 1.0
    return dict(
        tokens_per_s=tps,
        speedup_vs_plain=tps / plain_tps,
        tau=tau,
        per_position_acceptance=s.per_position_acceptance() if s is not None else None,
        time_split_ms_per_pass={part: 1e3 * split[part] / passes for part in SPLIT_PARTS},
        identical_to_plain=f"{t.identical}/{t.prompts}" if greedy else None,
        flip_rate=(1.0 - t.identical / t.prompts) if greedy and t.prompts else None,
        passes=t.passes,
        new_tokens=t.new_tokens,
        seconds=t.seconds,
        draft_ms_per_token=1e3 * (body + head) / drafted if drafted else None,
        head_ms_per_drafted_token=1e3 * head / drafted if drafted else None,
        drafted_tokens=drafted,
        k=method.k,
    )


@torch.inference_mode()
def run_methods(*, target, tokenizer, methods: list, prompts: list, mode: str, max_new_tokens: int, seed: int = 0,
                desc: str = "e2e", progress: bool = True) -> dict:
    """All ``methods`` (plain first) on all ``prompts`` in one mode -> {method name: summary}."""
    if methods[0].kind != "plain":
        raise ValueError("the first method must be plain (the reference for speedup and identity)")
    gen_kwargs = dict(MODES[mode], max_new_tokens=max_new_tokens)
    warm = {key: v[:, :8] for key, v in encode(tokenizer, prompts[0]).items()}
    for method in methods:  # warm-up: kernels, caches, lazy imports
        call_method(target, method, warm, dict(gen_kwargs, max_new_tokens=min(8, max_new_tokens)))
    tallies = {m.name: Tally() for m in methods}
    for i, prompt in enumerate(tqdm(prompts, desc=desc, unit="prompt", disable=not progress)):
        seed_i = seed + i if gen_kwargs["do_sample"] else None
        run_prompt(target, methods, encode(tokenizer, prompt), gen_kwargs, seed_i, tallies)
    plain = tallies[methods[0].name]
    plain_tps = plain.new_tokens / plain.seconds
    greedy = not gen_kwargs["do_sample"]
    return {m.name: summarize(m, tallies[m.name], plain_tps, greedy) for m in methods}


def _saved_drafting(drafters: dict) -> dict:
    return {n: (d.generation_config.num_assistant_tokens, d.generation_config.num_assistant_tokens_schedule)
            for n, d in drafters.items()}


def _restore_drafting(drafters: dict, saved: dict) -> None:
    for n, d in drafters.items():
        d.generation_config.num_assistant_tokens, d.generation_config.num_assistant_tokens_schedule = saved[n]


def run_e2e(*, target, tokenizer, drafters: dict, prompts: list, dtype_name: str, modes=("greedy", "sample"), k: int = 5,
            max_new_tokens: int = 64, prompt_lookup: bool = True, seed: int = 0, progress: bool = True) -> dict:
    """One dtype: {"<dtype>/<mode>": {"dtype", "mode", "methods": {name: summary}}} for every mode.

    ``drafters``: {name: SlimSpecDrafter} (unattached; already in the target's dtype)."""
    saved = _saved_drafting(drafters)
    try:
        runs = {}
        for mode in modes:
            methods = build_methods(drafters, k, prompt_lookup)
            key = f"{dtype_name}/{mode}"
            runs[key] = dict(dtype=dtype_name, mode=mode, methods=run_methods(
                target=target, tokenizer=tokenizer, methods=methods, prompts=prompts, mode=mode,
                max_new_tokens=max_new_tokens, seed=seed, desc=f"e2e {key}", progress=progress))
        return runs
    finally:
        _restore_drafting(drafters, saved)


def run_k_sweep(*, target, tokenizer, drafters: dict, prompts: list, dtype_name: str, ks: list, max_new_tokens: int,
                prompt_lookup: bool = True, seed: int = 0, progress: bool = True) -> dict:
    """Greedy speedup and tau against K for ``drafters`` (and prompt lookup); plain runs once per prompt, first."""
    methods = [Method("plain", "plain")]
    for k in ks:
        if prompt_lookup:
            methods.append(Method(f"prompt_lookup@{k}", "lookup", k))
        methods += [Method(f"{name}@{k}", "drafter", k, d) for name, d in drafters.items()]
    saved = _saved_drafting(drafters)
    try:
        summary = run_methods(target=target, tokenizer=tokenizer, methods=methods, prompts=prompts, mode="greedy",
                              max_new_tokens=max_new_tokens, seed=seed, desc="e2e K sweep", progress=progress)
    finally:
        _restore_drafting(drafters, saved)
    names = (["prompt_lookup"] if prompt_lookup else []) + list(drafters)
    out = dict(dtype=dtype_name, mode="greedy", prompts=len(prompts), ks=list(ks),
               plain_tokens_per_s=summary["plain"]["tokens_per_s"], methods={})
    for name in names:
        rows = [summary[f"{name}@{k}"] for k in ks]
        out["methods"][name] = {key: [r[key] for r in rows] for key in ("tokens_per_s", "speedup_vs_plain", "tau")}
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Performance model and targets
# ----------------------------------------------------------------------------------------------------------------------
def predicted_speedup(rho_tau: float, nu: float, kappa: float) -> float:
    """SlimSpec's performance model (from the SlimSpec paper), speedup of drafter M over the full (dense) head:

        speedup = rho_tau * (1 + kappa) / (1 + nu * kappa)

    rho_tau = tau_M / tau_full (acceptance length kept), nu = T_head(M) / T_head(full) (head latency factor),
    kappa = T_head(full) / T_non_head (how much the dense head dominates a cycle). As nu -> 0 the speedup tends to
    its upper bound rho_tau * (1 + kappa)."""
    return rho_tau * (1.0 + kappa) / (1.0 + nu * kappa)


def perf_model(methods: dict, dense_name: str = "dense") -> dict | None:
    """The model's inputs measured on one run, for every drafter other than ``dense_name`` (None if it is absent).

    nu uses head time per drafted token; kappa is per cycle (target pass) of the dense run: dense head time over
    the rest of its assisted time (target forward, drafter body, overhead)."""
    dense = methods.get(dense_name)
    if dense is None or not dense.get("head_ms_per_drafted_token"):
        return None
    split = dense["time_split_ms_per_pass"]
    head = split["drafter_head"]
    kappa = head / (sum(split.values()) - head)
    out = {}
    for name, m in methods.items():
        if name == dense_name or m.get("head_ms_per_drafted_token") is None:
            continue
        rho = m["tau"] / dense["tau"]
        nu = m["head_ms_per_drafted_token"] / dense["head_ms_per_drafted_token"]
        out[name] = dict(rho_tau=rho, nu=nu, kappa=kappa, predicted=predicted_speedup(rho, nu, kappa),
                         bound=predicted_speedup(rho, 0.0, kappa),
                         measured=m["tokens_per_s"] / dense["tokens_per_s"])
    return out


# (label, method, baseline ("plain" = speedup column), threshold, strict)
TARGETS = [
    ("SlimSpec d/8 >= 2.0x plain", "slimspec-d8", "plain", 2.0, False),
    ("SlimSpec d/8 > prompt lookup", "slimspec-d8", "prompt_lookup", 1.0, True),
    ("SlimSpec d/8 >= 1.09x truncated-32k", "slimspec-d8", "truncated-32k", 1.09, False),
    ("SlimSpec d/8 >= 2x dense", "slimspec-d8", "dense", 2.0, False),
]


def where_time_goes(name: str, m: dict) -> str:
    split = m["time_split_ms_per_pass"]
    cycle = sum(split.values())
    parts = ", ".join(f"{p.replace('_', ' ')} {100 * split[p] / cycle:.0f}%" for p in SPLIT_PARTS if split[p] or p == "target_forward")
    return f"{name}: a cycle (target pass) takes {cycle:.1f} ms: {parts}; tau {m['tau']:.2f}"


def check_targets(methods: dict) -> list:
    """The project's targets on one run's methods; rows whose methods are absent are skipped."""
    rows = []
    for label, name, base, threshold, strict in TARGETS:
        if name not in methods or base not in methods:
            continue
        ratio = methods[name]["tokens_per_s"] / methods[base]["tokens_per_s"]
        ok = ratio > threshold if strict else ratio >= threshold
        row = dict(target=label, method=name, baseline=base, measured=ratio, threshold=threshold, strict=strict,
                   margin=ratio / threshold - 1.0, status="PASS" if ok else "MISS")
        if not ok:
            why = [where_time_goes(name, methods[name])]
            if base != "plain":
                why.append(where_time_goes(base, methods[base]))
            row["where_time_goes"] = " | ".join(why)
        rows.append(row)
    return rows


def build_result(*, target_name: str, prompts: int, max_new_tokens: int, k: int, runs: dict, k_sweep: dict | None,
                 dense_name: str = "dense", seed: int = 0) -> dict:
    """Everything in results.json: the runs plus the perf model (per run) and the targets (bf16 greedy)."""
    models = {key: perf_model(r["methods"], dense_name) for key, r in runs.items()}
    headline = runs.get("bf16/greedy")
    targets_note = None
    if headline is None:
        targets_note = "targets are defined on bf16 greedy, which was not run"
    elif k != 5:
        targets_note = f"targets are defined at K = 5; this run used K = {k}"
    return dict(target=target_name, prompts=prompts, max_new_tokens=max_new_tokens, k=k, seed=seed,
                dense_name=dense_name, runs=runs, k_sweep=k_sweep,
                perf_model={key: m for key, m in models.items() if m},
                targets=check_targets(headline["methods"]) if headline else [], targets_note=targets_note)


# ----------------------------------------------------------------------------------------------------------------------
# Report and plots
# ----------------------------------------------------------------------------------------------------------------------
PLOTS = ("speedup.png", "pareto.png", "acceptance.png", "k_sweep.png", "perf_model.png")


def _f(x, spec=".2f", suffix=""):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{spec}}{suffix}"


def format_report(r: dict) -> str:
    lines = [f"# End-to-end benchmark: {r['target']}",
             "", f"CPU, batch 1, {r['prompts']} held-out prompts, {r['max_new_tokens']} new tokens, K = {r['k']}, "
             f"seed {r['seed']}. Methods interleaved prompt by prompt (plain first), each warmed up once. "
             "tau = tokens per target verification pass (drafters: the prefill pass is excluded; prompt lookup: new "
             "tokens / all target passes, since its first pass already verifies drafts). Time split = ms per target "
             "pass: target forward / drafter body / drafter head / overhead (selection, adapter, decoding loop)."]
    for key, run in r["runs"].items():
        greedy = run["mode"] == "greedy"
        lines += ["", f"## {key}", "",
                  "| method | tokens/s | speedup vs plain | tau | " + ("identical to plain | " if greedy else "")
                  + "time split ms/pass (fwd / body / head / other) |",
                  "|---|---|---|---|" + ("---|" if greedy else "") + "---|"]
        for name, m in run["methods"].items():
            split = " / ".join(f"{m['time_split_ms_per_pass'][p]:.2f}" for p in SPLIT_PARTS)
            ident = f" {m['identical_to_plain']} |" if greedy else ""
            lines.append(f"| {name} | {m['tokens_per_s']:.1f} | {m['speedup_vs_plain']:.2f}x | {_f(m['tau'])} |"
                         f"{ident} {split} |")
    lines += ["", "## Per-position acceptance", "", "| run | drafter | draft ms/token | acceptance at draft 1..K |",
              "|---|---|---|---|"]
    for key, run in r["runs"].items():
        for name, m in run["methods"].items():
            if m["per_position_acceptance"] is not None:
                acc = ", ".join(f"{a:.2f}" for a in m["per_position_acceptance"])
                lines.append(f"| {key} | {name} | {_f(m['draft_ms_per_token'], '.3f')} | {acc} |")
    lines += ["", f"## Performance model (relative to {r['dense_name']!r})", ""]
    if r["perf_model"]:
        lines += ["predicted = rho_tau (1 + kappa) / (1 + nu kappa); bound = rho_tau (1 + kappa) (nu -> 0); "
                  "nu from head time per drafted token, kappa = dense head / rest of the dense cycle.", "",
                  "| run | drafter | rho_tau | nu | kappa | predicted | bound | measured |", "|---|---|---|---|---|---|---|---|"]
        for key, model in r["perf_model"].items():
            for name, p in model.items():
                lines.append(f"| {key} | {name} | {p['rho_tau']:.3f} | {p['nu']:.3f} | {p['kappa']:.3f} | "
                             f"{p['predicted']:.2f}x | {p['bound']:.2f}x | {p['measured']:.2f}x |")
    else:
        lines.append(f"skipped: no drafter named {r['dense_name']!r}")
    lines += ["", "## K sweep", ""]
    sweep = r.get("k_sweep")
    if sweep:
        lines += [f"{sweep['dtype']} greedy, {sweep['prompts']} prompts; speedup vs plain (tau)", "",
                  "| method | " + " | ".join(f"K={k}" for k in sweep["ks"]) + " |",
                  "|---|" + "---|" * len(sweep["ks"])]
        for name, m in sweep["methods"].items():
            cells = " | ".join(f"{s:.2f}x ({_f(t)})" for s, t in zip(m["speedup_vs_plain"], m["tau"]))
            lines.append(f"| {name} | {cells} |")
    else:
        lines.append("not run")
    lines += ["", "## Targets (bf16 greedy, K = 5)", ""]
    if r.get("targets_note"):
        lines.append(f"note: {r['targets_note']}")
    if r["targets"]:
        lines += ["| target | measured | needed | margin | result |", "|---|---|---|---|---|"]
        for t in r["targets"]:
            lines.append(f"| {t['target']} | {t['measured']:.2f}x | {'>' if t['strict'] else '>='}"
                         f"{t['threshold']:.2f}x | {100 * t['margin']:+.1f}% | {t['status']} |")
        for t in r["targets"]:
            if t["status"] == "MISS":
                lines.append(f"\n{t['target']} missed by {100 * -t['margin']:.1f}%. {t['where_time_goes']}")
    elif not r.get("targets_note"):
        lines.append("no rows: the drafters they compare (slimspec-d8 and its baselines) are absent")
    lines += ["", "## Plots", ""] + [f"- [{p}]({p})" for p in PLOTS]
    return "\n".join(lines) + "\n"


def _headline(r: dict) -> tuple:
    key = "bf16/greedy" if "bf16/greedy" in r["runs"] else next(iter(r["runs"]))
    return key, r["runs"][key]


def write_plots(r: dict, out: Path) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    paths = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)

    # speedup: grouped bars per method, one bar per dtype/mode
    keys = list(r["runs"])
    names = list(dict.fromkeys(n for run in r["runs"].values() for n in run["methods"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 4))
    width = 0.8 / len(keys)
    for j, key in enumerate(keys):
        vals = [r["runs"][key]["methods"].get(n, {}).get("speedup_vs_plain", float("nan")) for n in names]
        ax.bar([i + (j - (len(keys) - 1) / 2) * width for i in range(len(names))], vals, width, label=key)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("speedup vs plain")
    ax.set_title(f"{r['target']}: end-to-end speedup (K = {r['k']})")
    ax.legend(fontsize=8)
    save(fig, "speedup.png")

    # pareto: tau against drafting cost
    key, run = _headline(r)
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, m in run["methods"].items():
        if m["draft_ms_per_token"] is not None:
            ax.scatter(m["draft_ms_per_token"], m["tau"])
            ax.annotate(name, (m["draft_ms_per_token"], m["tau"]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("draft ms per drafted token (body + head)")
    ax.set_ylabel("tau")
    ax.set_title(f"tau vs drafting cost ({key})")
    ax.grid(alpha=0.3)
    save(fig, "pareto.png")

    # per-position acceptance, one panel per run
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, m in r["runs"][key]["methods"].items():
            acc = m["per_position_acceptance"]
            if acc:
                ax.plot(range(1, len(acc) + 1), acc, "o-", label=name)
        ax.set_xlabel("draft position")
        ax.set_ylabel("P(accepted | previous accepted)")
        ax.set_ylim(0, 1.02)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save(fig, "acceptance.png")

    # K sweep
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    sweep = r.get("k_sweep")
    if sweep:
        for name, m in sweep["methods"].items():
            axes[0].plot(sweep["ks"], m["speedup_vs_plain"], "o-", label=name)
            axes[1].plot(sweep["ks"], m["tau"], "o-", label=name)
        axes[0].legend(fontsize=8)
        for ax in axes:
            ax.set_xticks(sweep["ks"])
    else:
        axes[0].text(0.5, 0.5, "K sweep not run", ha="center", transform=axes[0].transAxes)
    axes[0].set_ylabel("speedup vs plain")
    axes[1].set_ylabel("tau")
    for ax in axes:
        ax.set_xlabel("K (drafts per pass)")
        ax.grid(alpha=0.3)
    save(fig, "k_sweep.png")

    # performance model: predicted vs measured
    fig, ax = plt.subplots(figsize=(5, 5))
    pts = [(f"{n} ({key})", p["predicted"], p["measured"]) for key, model in r["perf_model"].items()
           for n, p in model.items()]
    for label, pred, meas in pts:
        ax.scatter(pred, meas, label=label)
    lim = max([1.0] + [max(p, m) for _, p, m in pts]) * 1.1
    ax.plot([0, lim], [0, lim], "--", color="gray", lw=0.8, label="y = x")
    ax.set_xlim(0, lim)
    ax.set_ylim(0, lim)
    ax.set_xlabel("predicted speedup over dense")
    ax.set_ylabel("measured speedup over dense")
    ax.set_title("performance model" if pts else "performance model (no dense drafter)")
    ax.legend(fontsize=7)
    save(fig, "perf_model.png")
    return paths


def write_outputs(r: dict, out) -> str:
    """results.json, report.md and the plots into ``out``; returns the report text."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(r, indent=2, default=str))
    report = format_report(r)
    (out / "report.md").write_text(report)
    write_plots(r, out)
    return report


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="gemma3-270m", help="embedded name or model folder (default gemma3-270m)")
    p.add_argument("--drafter", action="append", default=[], metavar="NAME=PATH",
                   help="a SlimSpec drafter folder, repeatable (default: the built reference drafters)")
    p.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=["bf16", "fp32"], help="target dtypes")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), help="decoding modes")
    p.add_argument("--prompts", type=int, default=20, help="number of held-out built-in prompts")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--k", type=int, default=5, help="drafts per target pass (drafters and prompt lookup)")
    p.add_argument("--k-sweep", default="2,3,4,5,6,7,8", help="comma-separated K values (greedy, first dtype); '' = off")
    p.add_argument("--sweep-drafters", default=None,
                   help="comma-separated drafter names for the K sweep (default: slimspec-d8 if present, else the first)")
    p.add_argument("--sweep-prompts", type=int, default=8, help="prompts for the K sweep")
    p.add_argument("--no-prompt-lookup", action="store_true", help="skip transformers' prompt-lookup decoding")
    p.add_argument("--dense-name", default="dense", help="the drafter the performance model is relative to")
    p.add_argument("--out", default="bench_results/e2e", help="output folder")
    p.add_argument("--seed", type=int, default=0)


def _sweep_names(args, names: list) -> list:
    if args.sweep_drafters:
        chosen = [n.strip() for n in args.sweep_drafters.split(",") if n.strip()]
        unknown = [n for n in chosen if n not in names]
        if unknown:
            raise SystemExit(f"--sweep-drafters: unknown drafters {unknown}; have {names}")
        return chosen
    return ["slimspec-d8"] if "slimspec-d8" in names else names[:1]


def main(args) -> int:
    from slimspec.prompts import benchmark_prompts
    from slimspec.targets import load_target

    folders = parse_drafter_specs(args.drafter) or default_drafter_folders(args.target)
    if not folders:
        print(f"slimspec-bench e2e: no drafters. None given with --drafter and no reference drafter is built for "
              f"{args.target!r}: run `slimspec-train reference` first, or pass --drafter NAME=PATH.", file=sys.stderr)
        return 2
    ks = [int(k) for k in args.k_sweep.split(",") if k.strip()] if args.k_sweep else []
    sweep_names = _sweep_names(args, list(folders)) if ks else []
    prompts = benchmark_prompts(args.prompts)
    print(f"slimspec-bench e2e: {args.target}, drafters {list(folders)}, dtypes {args.dtype}, modes {args.modes}",
          file=sys.stderr, flush=True)
    runs, k_sweep = {}, None
    for i, dtype_name in enumerate(args.dtype):
        dtype = DTYPES[dtype_name]
        target, tokenizer = load_target(args.target, dtype=dtype)
        drafters = load_drafters(folders, dtype)
        runs.update(run_e2e(target=target, tokenizer=tokenizer, drafters=drafters, prompts=prompts,
                            dtype_name=dtype_name, modes=args.modes, k=args.k, max_new_tokens=args.max_new_tokens,
                            prompt_lookup=not args.no_prompt_lookup, seed=args.seed))
        if i == 0 and ks:
            k_sweep = run_k_sweep(target=target, tokenizer=tokenizer, drafters={n: drafters[n] for n in sweep_names},
                                  prompts=benchmark_prompts(args.sweep_prompts), dtype_name=dtype_name, ks=ks,
                                  max_new_tokens=args.max_new_tokens, prompt_lookup=not args.no_prompt_lookup,
                                  seed=args.seed)
        del target, drafters
    result = build_result(target_name=args.target, prompts=len(prompts), max_new_tokens=args.max_new_tokens, k=args.k,
                          runs=runs, k_sweep=k_sweep, dense_name=args.dense_name, seed=args.seed)
    report = write_outputs(result, args.out)
    print(report)
    print(f"slimspec-bench e2e: wrote {Path(args.out) / 'results.json'}, report.md and plots", file=sys.stderr)
    return 0
