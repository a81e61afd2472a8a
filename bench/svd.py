"""Factorization budget: truncated SVD of a large LM head, timed, with peak memory, in a fresh process.

    slimspec-bench svd [--shape llama3.1-8b] [--rank d/8 | --rank energy:0.9] [--dtype bf16] [--check-exact]

The head is random with a decaying spectrum (like trained LM heads: a few strong directions, a long tail).
``--check-exact`` also computes the exact retained energy from the Gram-matrix spectrum and reports how far
the factorization (``--method``; auto: exact for small heads, the Gram-matrix SVD for large ones) is from it.
``--rank`` takes the project's one rank grammar (``resolve_head_rank``); an energy fraction is resolved on the
head's spectrum in the child, before the timed factorization.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from .head import SHAPES

_CHILD = r"""
import json, resource, sys, time, torch
from slimspec.convert.factorize import factorize, resolve_rank, spectrum
d, V, rank, dtype, method, check = json.loads(sys.argv[1])
g = torch.Generator().manual_seed(0)
W = torch.empty(V, d, dtype=getattr(torch, dtype))
decay = torch.logspace(0, -1.5, d)  # singular-value profile
basis = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
for s in range(0, V, 16384):
    W[s:s + 16384] = ((torch.randn(min(16384, V - s), d, generator=g) * decay) @ basis).to(W.dtype)
rank = resolve_rank(rank, W)
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
f = factorize(W, rank, method=method)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = dict(seconds=seconds, peak_rss_gib=peak / 2**20, head_gib=W.numel() * W.element_size() / 2**30,
           energy_kept=f.energy_kept, method=f.method, rank=f.rank)
if check:
    s2 = spectrum(W)
    out["exact_energy"] = float(s2[:rank].sum() / s2.sum())
    out["energy_gap_percent"] = 100 * (out["exact_energy"] - f.energy_kept) / out["exact_energy"]
print(json.dumps(out))
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", default="llama3.1-8b", choices=list(SHAPES))
    p.add_argument("--rank", default="d/8", help="an int, d/N, or an energy fraction such as energy:0.9")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--method", default="auto", choices=["auto", "exact", "gram", "randomized"])
    p.add_argument("--check-exact", action="store_true", help="also compute the exact retained energy")


def main(args) -> int:
    from configuration_slimspec import parse_head_rank, resolve_head_rank

    d, V = SHAPES[args.shape]
    try:  # checked before building the head; an energy fraction is resolved in the child, on the head's spectrum
        kind, _ = parse_head_rank(args.rank)
        if kind == "dense":
            raise ValueError("a dense head has nothing to factorize: give an int, d/N or an energy fraction")
        if kind != "energy":
            resolve_head_rank(args.rank, d, vocab_rows=V)
    except ValueError as err:
        print(f"slimspec-bench svd: {err}", file=sys.stderr)
        return 2
    child_args = json.dumps([d, V, args.rank, args.dtype, args.method, args.check_exact])
    proc = subprocess.run([sys.executable, "-c", _CHILD, child_args], capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return 1
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{args.shape} head {V} x {d} ({args.dtype}, {r['head_gib']:.2f} GiB), rank {r['rank']}, {r['method']} SVD: "
          f"{r['seconds']:.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB (whole process, head included), "
          f"energy kept {100 * r['energy_kept']:.3f}%"
          + (f", exact {100 * r['exact_energy']:.3f}% (gap {r['energy_gap_percent']:.3f}%)"
             if "exact_energy" in r else ""))
    return 0
