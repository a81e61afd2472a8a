"""Assisted generation benchmark: plain greedy vs ``assistant_model=drafter`` (and prompt lookup), one process.

    slimspec-bench generate --drafter FOLDER            # a saved SlimSpec drafter
    slimspec-bench generate --random-drafter d/8        # an untrained drafter sized for the target (mechanics only)

For every prompt the methods run back to back (plain first, then the others), so all see the same machine
state; tokens/s are totals over all prompts. The assisted run's time is split into target forward passes
(timed with hooks on the target), drafter body, drafter head, draft token selection (argmax, or processors and
sampling), the adapter's own bookkeeping, and the rest (transformers' decoding loop: logits processing of the
verified positions, acceptance, cache cropping).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from tqdm.auto import tqdm

from slimspec.train.evaluate import merge_stats

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class ForwardTimer:
    """Wall time spent inside ``module.forward`` (benchmark-only hooks, removed by ``close``)."""

    def __init__(self, module):
        self.seconds, self.calls, self._t0 = 0.0, 0, None
        self._handles = [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def _pre(self, *args):
        self._t0 = time.perf_counter()

    def _post(self, *args):
        self.seconds += time.perf_counter() - self._t0
        self.calls += 1

    def close(self):
        for h in self._handles:
            h.remove()


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


@torch.inference_mode()
def run(args) -> dict:
    from slimspec.prompts import benchmark_prompts
    from slimspec.targets import load_target

    target, tokenizer = load_target(args.target, dtype=DTYPES[args.dtype])
    drafter = load_drafter(args, target)
    prompts = benchmark_prompts(args.prompts)
    methods = {"plain": dict(), "slimspec": dict(assistant_model=drafter)}
    if args.prompt_lookup:
        methods["prompt_lookup"] = dict(prompt_lookup_num_tokens=args.num_assistant_tokens or 5)
    common = dict(do_sample=False, max_new_tokens=args.max_new_tokens)
    warm = tokenizer("Hello", return_tensors="pt")
    for kw in methods.values():
        target.generate(**warm, **common, **kw)
    totals = {m: dict(seconds=0.0, tokens=0, identical=0) for m in methods}
    target_seconds, assisted_seconds, runs = 0.0, 0.0, []
    for prompt in tqdm(prompts, desc="generate benchmark", unit="prompt"):
        inputs = tokenizer(prompt, return_tensors="pt")
        n_prompt = inputs["input_ids"].shape[1]
        reference = None
        for name, kw in methods.items():
            timer = ForwardTimer(target) if name == "slimspec" else None
            t0 = time.perf_counter()
            out = target.generate(**inputs, **common, **kw)
            seconds = time.perf_counter() - t0
            totals[name]["seconds"] += seconds
            totals[name]["tokens"] += out.shape[1] - n_prompt
            reference = out if name == "plain" else reference
            totals[name]["identical"] += int(torch.equal(out, reference))
            if timer is not None:
                timer.close()
                target_seconds += timer.seconds
                assisted_seconds += seconds
                runs.append(drafter.last_generate_stats)
    drafter.detach()
    result = dict(target=args.target, dtype=args.dtype, prompts=len(prompts), max_new_tokens=args.max_new_tokens,
                  num_assistant_tokens=drafter.generation_config.num_assistant_tokens, methods={})
    plain_tps = totals["plain"]["tokens"] / totals["plain"]["seconds"]
    for name, t in totals.items():
        tps = t["tokens"] / t["seconds"]
        result["methods"][name] = dict(tokens_per_s=tps, speedup_vs_plain=tps / plain_tps,
                                       identical_to_plain=f"{t['identical']}/{len(prompts)}")
    s = merge_stats(runs)
    result["methods"]["slimspec"]["tau"] = s.tau
    result["methods"]["slimspec"]["per_position_acceptance"] = s.per_position_acceptance()
    parts = {"target_forward": target_seconds, "drafter_body": s.drafter_seconds, "drafter_head": s.head_seconds,
             "draft_select": s.select_seconds, "adapter": s.adapter_seconds}
    parts["transformers_loop"] = assisted_seconds - sum(parts.values())
    passes = max(s.target_passes, 1)
    result["methods"]["slimspec"]["time_split_ms_per_pass"] = {k: 1e3 * v / passes for k, v in parts.items()}
    return result


def format_report(r: dict) -> str:
    lines = [f"target {r['target']} ({r['dtype']}), {r['prompts']} held-out prompts, {r['max_new_tokens']} new tokens, "
             f"greedy, K = {r['num_assistant_tokens']}",
             "| method | tokens/s | speedup vs plain | tau | output identical to plain |", "|---|---|---|---|---|"]
    for name, m in r["methods"].items():
        tau = f"{m['tau']:.2f}" if "tau" in m else "-"
        lines.append(f"| {name} | {m['tokens_per_s']:.1f} | {m['speedup_vs_plain']:.2f}x | {tau} | {m['identical_to_plain']} |")
    s = r["methods"]["slimspec"]
    lines.append("per-position acceptance: " + ", ".join(f"{a:.2f}" for a in s["per_position_acceptance"]))
    lines.append("time per target pass (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in s["time_split_ms_per_pass"].items()))
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
