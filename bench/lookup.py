"""How good is prompt lookup on this target's own text? Offline, by the length of the matched n-gram.

    slimspec-bench lookup [--per-category 8] [--max-new-tokens 64] [--max-ngram 3] [--lookup-tokens 10]

The target continues each held-out prompt greedily (plain ``generate``); then at every generated position t the
lookup rule of ``generation_slimspec.lookup_continuation`` runs on ids[:t] and the block it would propose is
compared with what the target actually wrote from t on. Per category and matched n (0: no match): how many
positions, and the mean number of block tokens the target would accept (the matching prefix). A drafter's
accepted drafts per pass (tau - 1) is the number to compare with: it tells which source to prefer where.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="gemma3-270m", help="embedded name or model folder (default gemma3-270m)")
    p.add_argument("--per-category", type=int, default=8, help="held-out prompts per category")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--max-ngram", type=int, default=3)
    p.add_argument("--lookup-tokens", type=int, default=10)


def matched_ngram(ids: torch.Tensor, max_ngram: int, tokens: int) -> tuple:
    """(the longest n <= max_ngram whose last-n-gram matches earlier, its block [<= tokens]); (0, empty) if none."""
    from generation_slimspec import lookup_continuation

    for n in range(max_ngram, 0, -1):
        block = lookup_continuation(ids, n, tokens, min_ngram=n)
        if block.numel():
            return n, block
    return 0, ids[:0]


def accepted_prefix(block: torch.Tensor, truth: torch.Tensor) -> int:
    """How many leading tokens of ``block`` equal ``truth`` (what greedy verification would accept)."""
    same = (block[: len(truth)] == truth[: len(block)]).int()
    return int(same.cumprod(0).sum())


def analyse(sequences: list, max_ngram: int, tokens: int) -> dict:
    """[(category, ids [L], prompt length)] -> {(category, n): [positions, accepted tokens]} (category "all" too)."""
    table = defaultdict(lambda: [0, 0])
    for category, ids, start in sequences:
        for t in range(start, len(ids)):
            n, block = matched_ngram(ids[:t], max_ngram, tokens)
            accepted = accepted_prefix(block, ids[t : t + len(block)]) if n else 0
            for key in ((category, n), ("all", n)):
                table[key][0] += 1
                table[key][1] += accepted
    return dict(table)


def main(args) -> int:
    from slimspec.heldout import held_out_prompts
    from slimspec.machine import fast_dtype
    from slimspec.runner import encode
    from slimspec.targets import load_target

    target, tokenizer = load_target(args.target, dtype=fast_dtype())
    sequences = []
    with torch.inference_mode():
        for category, prompt in held_out_prompts(args.per_category):
            inputs = encode(tokenizer, prompt)
            out = target.generate(**inputs, do_sample=False, max_new_tokens=args.max_new_tokens)
            sequences.append((category, out[0], inputs["input_ids"].shape[1]))
    table = analyse(sequences, args.max_ngram, args.lookup_tokens)
    print(f"prompt lookup on the target's own greedy text ({len(sequences)} held-out prompts, "
          f"{args.max_new_tokens} new tokens, blocks of up to {args.lookup_tokens}, n <= {args.max_ngram})\n")
    print("| category | matched n | positions | share | mean accepted |\n|---|---|---|---|---|")
    totals = defaultdict(int)
    for (category, n), (positions, _) in table.items():
        totals[category] += positions
    for (category, n), (positions, accepted) in sorted(table.items(), key=lambda kv: (kv[0][0] != "all", kv[0])):
        print(f"| {category} | {n or 'none'} | {positions} | {positions / totals[category]:.0%} | "
              f"{accepted / positions:.2f} |")
    return 0
