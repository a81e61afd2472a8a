"""Assisted generation benchmark: plain greedy vs ``assistant_model=drafter`` (and prompt lookup), one process.

    slimspec-bench generate --drafter FOLDER            # a saved SlimSpec drafter
    slimspec-bench generate --random-drafter d/8        # an untrained drafter sized for the target (mechanics only)

For every prompt the methods run back to back (plain first, then the others; ``slimspec.runner``), so all see
the same machine state; tokens/s are totals over all prompts. The assisted run's time is split (``bench.timers``)
into target forward passes, drafter body, drafter head, draft token selection (argmax, or processors and
sampling), the proposer's own bookkeeping, and the rest (the decoding loop: logits processing of the verified
positions, acceptance, stopping criteria, cache cropping, and transformers' per-call preparation).
"""

from __future__ import annotations

import argparse
import json

import torch

from slimspec.runner import Method, run_methods

from .timers import CallTimes, timed_generate

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load_drafter(args, target):
    from transformers import AutoModel

    if args.drafter:
        drafter = AutoModel.from_pretrained(args.drafter, trust_remote_code=True)
    else:
        from configuration_slimspec import SlimSpecConfig
        from modeling_slimspec import SlimSpecDrafter

        torch.manual_seed(0)
        rank = None if args.random_drafter == "dense" else args.random_drafter
        drafter = SlimSpecDrafter(SlimSpecConfig.from_target_config(target.config, head_rank=rank))
    drafter = drafter.to(DTYPES[args.drafter_dtype or args.dtype]).eval()
    if args.num_assistant_tokens:
        drafter.generation_config.num_assistant_tokens = args.num_assistant_tokens
    return drafter.attach(target)


def time_split(seconds: float, times: CallTimes) -> dict:
    """An assisted run's seconds by part; decoding_loop is the rest (acceptance, processors, stopping, cache crops)."""
    parts = {"target_forward": times.target_seconds, "drafter_body": times.body_seconds,
             "drafter_head": times.head_seconds, "draft_select": times.select_seconds,
             "proposer": times.proposer_own_seconds}
    parts["decoding_loop"] = seconds - sum(parts.values())
    return parts


def run(args) -> dict:
    from slimspec.prompts import benchmark_prompts
    from slimspec.targets import load_target

    target, tokenizer = load_target(args.target, dtype=DTYPES[args.dtype])
    drafter = load_drafter(args, target)
    prompts = benchmark_prompts(args.prompts)
    methods = [Method("plain", "plain"), Method("slimspec", "drafter", drafter=drafter)]
    if args.prompt_lookup:
        methods.append(Method("prompt_lookup", "lookup", args.num_assistant_tokens or 5))
    gen_kwargs = dict(do_sample=False, max_new_tokens=args.max_new_tokens)
    tallies = run_methods(target, tokenizer, methods, prompts, gen_kwargs, instrument=timed_generate,
                          desc="generate benchmark", progress=True)
    drafter.detach()
    result = dict(target=args.target, dtype=args.dtype, prompts=len(prompts), max_new_tokens=args.max_new_tokens,
                  num_assistant_tokens=drafter.generation_config.num_assistant_tokens, methods={})
    plain_tps = tallies["plain"].tokens_per_s
    for name, t in tallies.items():
        result["methods"][name] = dict(tokens_per_s=t.tokens_per_s, speedup_vs_plain=t.tokens_per_s / plain_tps,
                                       identical_to_plain=f"{t.identical}/{len(prompts)}")
    assisted = tallies["slimspec"]
    s = assisted.merged_stats()
    slimspec = result["methods"]["slimspec"]
    slimspec["tau"] = s.tau
    slimspec["per_position_acceptance"] = s.per_position_acceptance()
    parts = time_split(assisted.seconds, sum(assisted.timings, CallTimes()))
    slimspec["time_split_ms_per_pass"] = {k: 1e3 * v / max(s.target_passes, 1) for k, v in parts.items()}
    return result


def format_report(r: dict) -> str:
    lines = [f"target {r['target']} ({r['dtype']}), {r['prompts']} held-out prompts, {r['max_new_tokens']} new tokens, "
             f"greedy, K = {r['num_assistant_tokens']}",
             "| method | tokens/s | speedup vs plain | tau | output identical to plain |", "|---|---|---|---|---|"]
    for name, m in r["methods"].items():
        tau = f"{m['tau']:.2f}" if "tau" in m else "-"
        lines.append(f"| {name} | {m['tokens_per_s']:.1f} | {m['speedup_vs_plain']:.2f}x | {tau} | "
                     f"{m['identical_to_plain']} |")
    s = r["methods"]["slimspec"]
    lines.append("per-position acceptance: " + ", ".join(f"{a:.2f}" for a in s["per_position_acceptance"]))
    split = s["time_split_ms_per_pass"]
    lines.append("time per target pass (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in split.items()))
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--drafter", help="a SlimSpec drafter folder (or Hub id)")
    src.add_argument("--random-drafter", metavar="RANK", help="an untrained drafter: d/8, d/16, an int, or dense")
    p.add_argument("--target", default="gemma3-270m", help="embedded name or model folder (default gemma3-270m)")
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16", help="target dtype")
    p.add_argument("--drafter-dtype", choices=list(DTYPES), default=None, help="drafter dtype (default: the target's)")
    p.add_argument("--prompts", type=int, default=20, help="number of held-out built-in prompts")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--num-assistant-tokens", type=int, default=None, help="draft length K (default: the drafter's)")
    p.add_argument("--prompt-lookup", action="store_true", help="also run transformers' prompt-lookup decoding")
    p.add_argument("--json", default=None, help="write all numbers to this file")


def main(args) -> int:
    result = run(args)
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0
