"""``slimspec-bench``: benchmarks. Each subcommand measures its alternatives side by side in one process.

    slimspec-bench head      dense vs low-rank LM head (r = d/8, d/16), batch 1 and 64, fp32 and bf16
    slimspec-bench generate  plain vs assisted generate (and prompt lookup) on a real target
    slimspec-bench e2e       plain vs prompt lookup vs every drafter, bf16/fp32 x greedy/sample, K sweep,
                             performance model and targets; results.json, report.md, plots (--out)
    slimspec-bench svd       time and peak memory of factorizing a Llama-3.1-8B-sized head
    slimspec-bench cpu       SlimSpec against the fastest plain generate on this CPU, per held-out category
    slimspec-bench lookup    how many tokens prompt lookup would get accepted, by matched n-gram (offline)
    slimspec-bench loop      this checkout's decoding loop against an earlier revision's, per pass
    slimspec-bench tree      chain, tree and hybrid tree per held-out category and on long contexts, this CPU
"""

from __future__ import annotations

import argparse
import sys

from . import cpu, e2e, generate, head, lookup, loop, svd, tree


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimspec-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    head.add_arguments(sub.add_parser("head", help="dense vs low-rank head timing"))
    generate.add_arguments(sub.add_parser("generate", help="plain vs assisted generate on a real target"))
    e2e.add_arguments(sub.add_parser("e2e", help="end-to-end benchmark of every method, dtype and mode"))
    svd.add_arguments(sub.add_parser("svd", help="time and peak memory of factorizing a large head"))
    cpu.add_arguments(sub.add_parser("cpu", help="SlimSpec against the fastest plain generate on this CPU"))
    lookup.add_arguments(sub.add_parser("lookup", help="prompt lookup's accepted tokens by matched n-gram"))
    loop.add_arguments(sub.add_parser("loop", help="this decoding loop against an earlier revision's"))
    tree.add_arguments(sub.add_parser("tree", help="chain, tree and hybrid tree per held-out category on this CPU"))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "head":
        return head.main(args)
    if args.command == "generate":
        return generate.main(args)
    if args.command == "e2e":
        return e2e.main(args)
    if args.command == "svd":
        return svd.main(args)
    if args.command == "cpu":
        return cpu.main(args)
    if args.command == "lookup":
        return lookup.main(args)
    if args.command == "loop":
        return loop.main(args)
    if args.command == "tree":
        return tree.main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
