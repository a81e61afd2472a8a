"""Our decoding loop against an earlier revision's, side by side in one process.

    slimspec-bench loop --against REV [--drafter FOLDER] [--per-category 2] [--max-new-tokens 48]
                        [--dtype auto] [--out reports/loop]

REV's Hub files (``git show REV:<file>``) load as a package of their own beside this checkout's, and the same
drafter folder's weights load into both. Before this loop existed the Hub files drove transformers' private
assisted-generation loop (``_assisted_decoding``), which runs only on the transformers releases that REV supported
(up to 5.24 for the last such revision); run this on one of those.

Per held-out prompt, back to back (``slimspec.runner``): plain greedy, then this checkout's drafter and REV's, each
alone at a constant K (``--k``, 5) and with the drafter's own settings. Greedy, batch 1, the target as loaded.
Reports tokens/s, tau, outputs identical to plain, and per target pass the time spent outside the target's
forwards and the drafter's forwards: the decoding loop's own work (verification, bookkeeping, token selection,
transformers' per-call preparation spread over the passes).
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from slimspec import HUB_CODE
from slimspec.runner import Method, run_methods
from slimspec.shipped import shipped_or_exit

from .timers import CallTimer



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--against", required=True, metavar="REV", help="the git revision whose Hub files to compare")
    p.add_argument("--target", default="gemma3-270m", help="embedded name or model folder (default gemma3-270m)")
    p.add_argument("--drafter", default=None, help="SlimSpec drafter folder (default: the shipped one)")
    p.add_argument("--per-category", type=int, default=2, help="held-out prompts per category")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--k", type=int, default=5, help="the constant draft length of the 'alone' rows")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--previous-first", action="store_true",
                   help="run REV's drafter before this checkout's on each prompt (to see what the order costs)")
    p.add_argument("--out", default="reports/loop")


def load_revision(rev: str, into: Path):
    """REV's Hub files as the package ``slimspec_at_<rev>`` under ``into`` -> its ``SlimSpecDrafter`` class."""
    repo = Path(__file__).resolve().parents[1]
    name = "slimspec_at_" + "".join(c if c.isalnum() else "_" for c in rev)
    package = into / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for file in HUB_CODE:  # the ones REV has (kernels_slimspec.py came later)
        shown = subprocess.run(["git", "show", f"{rev}:{file}"], cwd=repo, capture_output=True, text=True)
        if shown.returncode == 0:
            (package / file).write_text(shown.stdout)
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{name}.modeling_slimspec").SlimSpecDrafter


@dataclass
class Split:
    """Seconds of one generate call: the target's forwards, the drafter's forwards, and the call's passes."""

    target: float = 0.0
    drafter: float = 0.0
    passes: int = 0


@contextmanager
def timed(target, method):
    split = Split()
    timers = [CallTimer(target, "forward")] + ([CallTimer(method.drafter, "forward")] if method.drafter else [])
    try:
        yield split
    finally:
        for timer in reversed(timers):
            timer.close()
    split.target, split.passes = timers[0].seconds, timers[0].calls
    split.drafter = timers[1].seconds if len(timers) > 1 else 0.0


def compare(target, tokenizer, drafters: dict, prompts: list, max_new_tokens: int, k: int) -> dict:
    """{row: numbers} over ``prompts``: plain, then each drafter (label -> drafter) alone at ``k`` and as set."""
    methods = [Method("plain", "plain")]
    for label, drafter in drafters.items():
        methods += [Method(f"{label}, alone K={k}", "drafter", k, drafter), Method(f"{label}, own settings", "hybrid",
                                                                                   None, drafter)]
    tallies = run_methods(target, tokenizer, methods, prompts, dict(do_sample=False, max_new_tokens=max_new_tokens),
                          instrument=timed, desc="loop", progress=True)
    plain = tallies["plain"]
    rows = {}
    for method in methods:
        t = tallies[method.name]
        splits = t.timings
        passes = sum(s.passes for s in splits)
        outside = t.seconds - sum(s.target + s.drafter for s in splits)
        stats = t.merged_stats()
        rows[method.name] = dict(tokens_per_s=t.tokens_per_s, speedup=plain.seconds / t.seconds,
                                 tau=stats.tau if stats else None, identical=t.identical, prompts=t.prompts,
                                 passes=passes, outside_ms_per_pass=1e3 * outside / passes,
                                 target_ms_per_pass=1e3 * sum(s.target for s in splits) / passes)
    return rows


def report(rows: dict, machine: str, args) -> str:
    lines = [f"# Decoding loop: this checkout against {args.against}", "",
             f"Machine: {machine}. Target {args.target} ({args.dtype_name}, as loaded), drafter {args.drafter}, "
             f"{args.prompts} held-out prompts ({args.per_category} per category), {args.max_new_tokens} new tokens, "
             f"greedy, transformers {args.transformers}.", "",
             f"Command: `slimspec-bench loop --against {args.against} --per-category {args.per_category} "
             f"--max-new-tokens {args.max_new_tokens} --dtype {args.dtype}"
             f"{' --previous-first' if args.previous_first else ''}`", "",
             "| method | tokens/s | x plain | tau | identical | target passes | target ms/pass | "
             "outside target and drafter, ms/pass |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        tau = f"{r['tau']:.2f}" if r["tau"] is not None else "-"
        lines.append(f"| {name} | {r['tokens_per_s']:.1f} | {r['speedup']:.2f} | {tau} | {r['identical']}/"
                     f"{r['prompts']} | {r['passes']} | {r['target_ms_per_pass']:.1f} | "
                     f"{r['outside_ms_per_pass']:.2f} |")
    return "\n".join(lines) + "\n"


def main(args) -> int:
    import transformers
    from transformers import AutoModel

    from slimspec.heldout import held_out_prompts
    from slimspec.machine import describe_line, resolve_dtype
    from slimspec.targets import load_target

    args.drafter = args.drafter or str(shipped_or_exit(args.target, "slimspec-bench"))
    dtype = resolve_dtype(args.dtype)
    target, tokenizer = load_target(args.target, dtype=dtype)
    with tempfile.TemporaryDirectory() as tmp:
        previous = load_revision(args.against, Path(tmp))
        drafters = {"this loop": AutoModel.from_pretrained(args.drafter, trust_remote_code=True, dtype=dtype),
                    f"{args.against}'s loop": previous.from_pretrained(args.drafter, dtype=dtype)}
        if args.previous_first:
            drafters = dict(reversed(list(drafters.items())))
        prompts = [p for _, p in held_out_prompts(args.per_category)]
        rows = compare(target, tokenizer, {k: d.eval() for k, d in drafters.items()}, prompts, args.max_new_tokens,
                       args.k)
    args.prompts, args.dtype_name, args.transformers = len(prompts), str(dtype).replace("torch.", ""), \
        transformers.__version__
    text = report(rows, describe_line(), args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    order = "-previous-first" if args.previous_first else ""
    stem = f"against-{args.against}-{args.dtype_name}-transformers-{transformers.__version__}{order}"
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(dict(machine=describe_line(), rows=rows), indent=2))
    print(text)
    print(f"written: {out / stem}.md, .json")
    return 0
