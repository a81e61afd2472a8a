"""End-to-end benchmark: plain vs prompt lookup vs every SlimSpec drafter, per dtype and decoding mode, one process.

    slimspec-bench e2e --reference-report REPORT.json     # the drafters of a `slimspec-train reference` report
    slimspec-bench e2e --drafter d8=FOLDER --drafter dense=FOLDER [--dtype bf16] [--modes greedy] [--prompts 20]
                       [--max-new-tokens 64] [--k 5] [--k-sweep 2,3,4,5,6,7,8] [--hybrid] [--out bench_results/e2e]

Target on CPU, batch 1, held-out prompts (``slimspec.prompts.benchmark_prompts``). For every dtype (bf16, fp32)
and mode (greedy; sample = temperature 1, no top-k / top-p, ``torch.manual_seed(seed + prompt index)`` before
every method's call) the methods run prompt by prompt, back to back (plain first), so all see the same machine
state; each method is warmed up once before timing. Per method: tokens/s (totals over all prompts), speedup over
plain, tau (tokens per target verification pass), per-position acceptance (drafters), the time per target pass
split into target forward, drafter body, drafter head and overhead (everything else: draft selection, the
adapter, transformers' decoding loop), and for greedy how many outputs equal plain's. ``--hybrid`` adds the subject
drafter with prompt lookup in its generator ("<name>+lookup"; results.json gives its accepted drafts by source).

Then: a K sweep (greedy, first dtype), the SlimSpec performance model relative to the dense drafter
(the SlimSpec paper's model: predicted speedup rho_tau (1 + kappa) / (1 + nu kappa) against the measured one), and
the project's targets at greedy bf16 K = 5. Writes ``results.json``, ``report.md`` and PNG plots to ``--out``
and prints the report. Only ``target.generate`` is called; the decoding loop is transformers' own.

Modules: ``e2e_run`` (running), ``perf_model`` (model, roles and targets), ``e2e_report``, ``e2e_plots``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .e2e_report import write_outputs
from .e2e_run import MODES, run_e2e, run_k_sweep
from .generate import DTYPES
from .perf_model import ROLES, build_result, infer_roles

RESERVED = ("plain", "prompt_lookup")


def _pairs(specs: list, option: str) -> dict:
    """["NAME=VALUE", ...] -> {NAME: VALUE} (order kept); SystemExit naming ``option`` on a malformed or repeated
    one."""
    out = {}
    for spec in specs or []:
        name, sep, value = spec.partition("=")
        if not sep or not name or not value:
            raise SystemExit(f"{option} expects NAME=VALUE, got {spec!r}")
        if name in out:
            raise SystemExit(f"{option} {name!r} is given twice")
        out[name] = value
    return out


def parse_drafter_specs(specs: list) -> dict:
    """["NAME=PATH", ...] -> {NAME: PATH} (order kept)."""
    folders = _pairs(specs, "--drafter")
    reserved = [name for name in folders if name in RESERVED]
    if reserved:
        raise SystemExit(f"--drafter names {reserved} are reserved")
    return folders


def parse_roles(specs: list, names: list) -> dict:
    """["ROLE=NAME", ...] -> {ROLE: NAME}; every role one of ``perf_model.ROLES``, every name a given drafter."""
    roles = _pairs(specs, "--role")
    unknown = [f"{role}={name}" for role, name in roles.items() if role not in ROLES or name not in names]
    if unknown:
        raise SystemExit(f"--role: {unknown} not understood; roles are {list(ROLES)}, drafters {names}")
    return roles


def reference_report_folders(path) -> dict:
    """{member name: folder} from a report-<key>.json that ``slimspec-train reference`` writes (its order)."""
    report = json.loads(Path(path).read_text())
    return {name: member["folder"] for name, member in report["members"].items()}


def load_drafters(folders: dict, dtype: torch.dtype) -> dict:
    """{name: folder} -> {name: drafter in ``dtype``} (Hub custom code, as a user would load it)."""
    from transformers import AutoModel

    return {name: AutoModel.from_pretrained(path, trust_remote_code=True).to(dtype).eval()
            for name, path in folders.items()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="gemma3-270m", help="embedded name or model folder (default gemma3-270m)")
    p.add_argument("--drafter", action="append", default=[], metavar="NAME=PATH",
                   help="a SlimSpec drafter folder, repeatable")
    p.add_argument("--reference-report", default=None, metavar="REPORT.json",
                   help="benchmark the drafters of this report (written by `slimspec-train reference`)")
    p.add_argument("--role", action="append", default=[], metavar="ROLE=NAME",
                   help=f"which drafter plays a role ({', '.join(ROLES)}) in the targets and the performance "
                        "model (default: found from the drafters' heads)")
    p.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=["bf16", "fp32"], help="target dtypes")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), help="decoding modes")
    p.add_argument("--prompts", type=int, default=20, help="number of held-out built-in prompts")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--k", type=int, default=5, help="drafts per target pass (drafters and prompt lookup)")
    p.add_argument("--k-sweep", default="2,3,4,5,6,7,8",
                   help="comma-separated K values (greedy, first dtype); '' = off")
    p.add_argument("--sweep-drafters", default=None,
                   help="comma-separated drafter names for the K sweep (default: the subject if present, else the "
                        "first)")
    p.add_argument("--sweep-prompts", type=int, default=8, help="prompts for the K sweep")
    p.add_argument("--no-prompt-lookup", action="store_true", help="skip transformers' prompt-lookup decoding")
    p.add_argument("--hybrid", action="store_true",
                   help="also run the subject drafter (else the first) hybrid, with prompt lookup of K tokens in its "
                        "generator, as '<name>+lookup'")
    p.add_argument("--out", default="bench_results/e2e", help="output folder")
    p.add_argument("--seed", type=int, default=0)


def _sweep_names(args, names: list, roles: dict) -> list:
    if args.sweep_drafters:
        chosen = [n.strip() for n in args.sweep_drafters.split(",") if n.strip()]
        unknown = [n for n in chosen if n not in names]
        if unknown:
            raise SystemExit(f"--sweep-drafters: unknown drafters {unknown}; have {names}")
        return chosen
    return [roles["subject"]] if "subject" in roles else names[:1]


def _folders(args) -> dict:
    folders = parse_drafter_specs(args.drafter)
    if args.reference_report:
        folders = {**reference_report_folders(args.reference_report), **folders}
    return folders


def _measure(args, folders: dict, given_roles: dict, prompts: list, ks: list) -> tuple:
    """Every dtype's runs, the K sweep (first dtype) and the roles -> (runs, k_sweep or None, roles)."""
    from slimspec.prompts import benchmark_prompts
    from slimspec.targets import load_target

    runs, k_sweep, roles = {}, None, {}
    for i, dtype_name in enumerate(args.dtype):
        target, tokenizer = load_target(args.target, dtype=DTYPES[dtype_name])
        drafters = load_drafters(folders, DTYPES[dtype_name])
        roles = infer_roles(drafters, given_roles)
        hybrid = [roles.get("subject", next(iter(drafters)))] if args.hybrid else []
        runs.update(run_e2e(target=target, tokenizer=tokenizer, drafters=drafters, prompts=prompts,
                            dtype_name=dtype_name, modes=args.modes, k=args.k, max_new_tokens=args.max_new_tokens,
                            prompt_lookup=not args.no_prompt_lookup, seed=args.seed, hybrid=hybrid))
        if i == 0 and ks:
            sweep = {n: drafters[n] for n in _sweep_names(args, list(folders), roles)}
            k_sweep = run_k_sweep(target=target, tokenizer=tokenizer, drafters=sweep,
                                  prompts=benchmark_prompts(args.sweep_prompts), dtype_name=dtype_name, ks=ks,
                                  max_new_tokens=args.max_new_tokens, prompt_lookup=not args.no_prompt_lookup,
                                  seed=args.seed)
        del target, drafters
    return runs, k_sweep, roles


def main(args) -> int:
    from slimspec.prompts import benchmark_prompts

    folders = _folders(args)
    if not folders:
        print("slimspec-bench e2e: no drafters. Pass --drafter NAME=PATH, or --reference-report with the "
              "report-<key>.json that `slimspec-train reference` writes beside the drafters it builds.",
              file=sys.stderr)
        return 2
    given_roles = parse_roles(args.role, list(folders))
    ks = [int(k) for k in args.k_sweep.split(",") if k.strip()] if args.k_sweep else []
    if ks:
        _sweep_names(args, list(folders), given_roles)  # unknown --sweep-drafters fail now, not after the runs
    prompts = benchmark_prompts(args.prompts)
    print(f"slimspec-bench e2e: {args.target}, drafters {list(folders)}, dtypes {args.dtype}, modes {args.modes}",
          file=sys.stderr, flush=True)
    runs, k_sweep, roles = _measure(args, folders, given_roles, prompts, ks)
    result = build_result(target_name=args.target, prompts=len(prompts), max_new_tokens=args.max_new_tokens, k=args.k,
                          runs=runs, k_sweep=k_sweep, roles=roles, seed=args.seed)
    report = write_outputs(result, args.out)
    print(report)
    print(f"slimspec-bench e2e: wrote {Path(args.out) / 'results.json'}, report.md and plots", file=sys.stderr)
    return 0
