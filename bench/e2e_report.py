"""The end-to-end benchmark's report: report.md from results.json's numbers, and the output folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .e2e_plots import PLOTS, write_plots
from .e2e_run import SPLIT_PARTS


def _f(x, spec=".2f", suffix=""):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{spec}}{suffix}"


def _intro(r: dict) -> list:
    return [f"# End-to-end benchmark: {r['target']}",
            "", f"CPU, batch 1, {r['prompts']} held-out prompts, {r['max_new_tokens']} new tokens, K = {r['k']}, "
            f"seed {r['seed']}. Methods interleaved prompt by prompt (plain first), each warmed up once. "
            "tau = tokens per target verification pass (drafters: the prefill pass is excluded; prompt lookup: new "
            "tokens / all target passes, since its first pass already verifies drafts). Time split = ms per target "
            "pass: target forward / drafter body / drafter head / overhead (selection, adapter, decoding loop)."]


def _run_table(key: str, run: dict) -> list:
    greedy = run["mode"] == "greedy"
    lines = ["", f"## {key}", "",
             "| method | tokens/s | speedup vs plain | tau | " + ("identical to plain | " if greedy else "")
             + "time split ms/pass (fwd / body / head / other) |",
             "|---|---|---|---|" + ("---|" if greedy else "") + "---|"]
    for name, m in run["methods"].items():
        split = " / ".join(f"{m['time_split_ms_per_pass'][p]:.2f}" for p in SPLIT_PARTS)
        ident = f" {m['identical_to_plain']} |" if greedy else ""
        lines.append(f"| {name} | {m['tokens_per_s']:.1f} | {m['speedup_vs_plain']:.2f}x | {_f(m['tau'])} |"
                     f"{ident} {split} |")
    return lines


def _acceptance(r: dict) -> list:
    lines = ["", "## Per-position acceptance", "", "| run | drafter | draft ms/token | acceptance at draft 1..K |",
             "|---|---|---|---|"]
    for key, run in r["runs"].items():
        for name, m in run["methods"].items():
            if m["per_position_acceptance"] is not None:
                acc = ", ".join(f"{a:.2f}" for a in m["per_position_acceptance"])
                lines.append(f"| {key} | {name} | {_f(m['draft_ms_per_token'], '.3f')} | {acc} |")
    return lines


def _perf_model(r: dict) -> list:
    lines = ["", f"## Performance model (relative to {r['dense_name']!r})", ""]
    if not r["perf_model"]:
        return lines + ["skipped: no dense drafter (dense head, full vocabulary)"]
    lines += ["predicted = rho_tau (1 + kappa) / (1 + nu kappa); bound = rho_tau (1 + kappa) (nu -> 0); "
              "nu from head time per drafted token, kappa = dense head / rest of the dense cycle.", "",
              "| run | drafter | rho_tau | nu | kappa | predicted | bound | measured |",
              "|---|---|---|---|---|---|---|---|"]
    for key, model in r["perf_model"].items():
        for name, p in model.items():
            lines.append(f"| {key} | {name} | {p['rho_tau']:.3f} | {p['nu']:.3f} | {p['kappa']:.3f} | "
                         f"{p['predicted']:.2f}x | {p['bound']:.2f}x | {p['measured']:.2f}x |")
    return lines


def _k_sweep(r: dict) -> list:
    lines = ["", "## K sweep", ""]
    sweep = r.get("k_sweep")
    if not sweep:
        return lines + ["not run"]
    lines += [f"{sweep['dtype']} greedy, {sweep['prompts']} prompts; speedup vs plain (tau)", "",
              "| method | " + " | ".join(f"K={k}" for k in sweep["ks"]) + " |",
              "|---|" + "---|" * len(sweep["ks"])]
    for name, m in sweep["methods"].items():
        cells = " | ".join(f"{s:.2f}x ({_f(t)})" for s, t in zip(m["speedup_vs_plain"], m["tau"]))
        lines.append(f"| {name} | {cells} |")
    return lines


def _targets(r: dict) -> list:
    lines = ["", "## Targets (bf16 greedy, K = 5)", ""]
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
        lines.append("no rows: the drafters they compare (a SlimSpec d/8 drafter and its baselines) are absent")
    return lines


def format_report(r: dict) -> str:
    """report.md: one table per run, acceptance, the performance model, the K sweep, the targets, the plots."""
    lines = _intro(r)
    for key, run in r["runs"].items():
        lines += _run_table(key, run)
    lines += _acceptance(r) + _perf_model(r) + _k_sweep(r) + _targets(r)
    lines += ["", "## Plots", ""] + [f"- [{p}]({p})" for p in PLOTS]
    return "\n".join(lines) + "\n"


def write_outputs(r: dict, out) -> str:
    """results.json, report.md and the plots into ``out``; returns the report text."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(r, indent=2, default=str))
    report = format_report(r)
    (out / "report.md").write_text(report)
    write_plots(r, out)
    return report
