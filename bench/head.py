"""Head benchmark: dense LM head vs SlimSpec low-rank head, side by side in one process.

    slimspec-bench head [--shapes gemma3-270m,llama3.1-8b,...] [--repeats 20] [--json out.json]

Batch 1 is memory bound, so the ideal low-rank speedup is the byte ratio V*d / (r*(V+d)). Timings are
medians over ``repeats`` calls, dense and low-rank calls interleaved so both see the same machine state.
"speedup" and "% of bound" are against a plain ``nn.Linear`` dense head (what EAGLE-3 checkpoints ship);
"speedup vs tuned dense" is against SlimSpec's own dense head, which gets the same kernel choices.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from kernels_slimspec import optimize_for_cpu
from modeling_slimspec import SlimSpecLowRankHead

# name: (hidden d, vocab V) of each model's LM head, from its published config.json.
SHAPES = {
    "gemma3-270m": (640, 262_144),
    "llama3.1-8b": (4096, 128_256),
    "gpt-oss-20b": (2880, 201_088),
    "qwen3-30b-a3b": (2048, 151_936),
}
RANKS = {"d/8": 8, "d/16": 16}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def byte_bound(d: int, V: int, r: int) -> float:
    """Ideal batch-1 speedup: bytes of the dense head over bytes of the two factors."""
    return V * d / (r * (V + d))


def _median_ms(samples: list) -> float:
    return statistics.median(samples) * 1e3


@torch.inference_mode()
def time_heads(heads: dict, x: torch.Tensor, repeats: int, warmup: int = 3) -> dict:
    """Call each head on x in turn, ``repeats`` rounds; returns median milliseconds per head."""
    for _ in range(warmup):
        for head in heads.values():
            head(x)
    samples = {name: [] for name in heads}
    for _ in range(repeats):
        for name, head in heads.items():
            t0 = time.perf_counter()
            head(x)
            samples[name].append(time.perf_counter() - t0)
    return {name: _median_ms(s) for name, s in samples.items()}


def bench_shape(name: str, d: int, V: int, dtype: torch.dtype, batches=(1, 64), repeats: int = 20) -> list:
    """Time a dense head and low-rank heads at d/8 and d/16 for one (shape, dtype); one row per (batch, rank)."""
    torch.manual_seed(0)
    # "nn.Linear": the dense head as EAGLE checkpoints ship it; "dense": the same weights through SlimSpec's
    # dense head, which gets the same kernel/layout tuning as the low-rank head (the stricter comparison).
    plain = nn.Linear(d, V, bias=False).to(dtype)
    slimspec = nn.ModuleDict({"dense": nn.Linear(d, V, bias=False).to(dtype)})
    with torch.no_grad():
        slimspec["dense"].weight.copy_(plain.weight)
    for label, frac in RANKS.items():
        slimspec[label] = SlimSpecLowRankHead(d, d // frac, V).to(dtype)
    optimize_for_cpu(slimspec)  # SlimSpec's heads, packed as ``attach`` packs a drafter's head
    heads = {"nn.Linear": plain, **slimspec}
    rows = []
    for batch in batches:
        x = torch.randn(batch, 1, d, dtype=dtype)  # [B, 1, d]: one new position per sequence, as when drafting
        ms = time_heads(heads, x, repeats)
        for label, frac in RANKS.items():
            r = d // frac
            bound = byte_bound(d, V, r)
            speedup = ms["nn.Linear"] / ms[label]
            rows.append(dict(shape=name, d=d, V=V, dtype=str(dtype).replace("torch.", ""), batch=batch, rank=label, r=r,
                             linear_ms=ms["nn.Linear"], dense_ms=ms["dense"], lowrank_ms=ms[label],
                             speedup=speedup, speedup_vs_tuned_dense=ms["dense"] / ms[label], byte_bound=bound,
                             fraction_of_bound=speedup / bound))
    return rows


def run(shapes=None, dtypes=None, batches=(1, 64), repeats: int = 20, threads: int | None = None) -> list:
    if threads:
        torch.set_num_threads(threads)
    shapes = shapes or list(SHAPES)
    dtypes = dtypes or list(DTYPES)
    rows = []
    jobs = [(s, t) for s in shapes for t in dtypes]
    for shape, dt in tqdm(jobs, desc="head benchmark", unit="config"):
        d, V = SHAPES[shape]
        rows += bench_shape(shape, d, V, DTYPES[dt], batches, repeats)
    return rows


def format_table(rows: list) -> str:
    lines = ["| shape | d x V | dtype | batch | rank | nn.Linear ms | tuned dense ms | low-rank ms "
             "| speedup vs nn.Linear | speedup vs tuned dense | byte bound | % of bound |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['d']} x {r['V']:,} | {r['dtype']} | {r['batch']} | {r['rank']} (r={r['r']}) | "
            f"{r['linear_ms']:.2f} | {r['dense_ms']:.2f} | {r['lowrank_ms']:.2f} | {r['speedup']:.2f}x | "
            f"{r['speedup_vs_tuned_dense']:.2f}x | {r['byte_bound']:.2f}x | "
            f"{100 * r['fraction_of_bound']:.0f}% |"
        )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated subset of {list(SHAPES)}")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated subset of fp32,bf16")
    p.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per head (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="also write the rows as JSON to this file")


def main(args: argparse.Namespace) -> int:
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise SystemExit(f"slimspec-bench head: unknown shape(s) {unknown}; choose from {list(SHAPES)}")
    dtypes = [t for t in args.dtypes.split(",") if t]
    if any(t not in DTYPES for t in dtypes):
        raise SystemExit(f"slimspec-bench head: --dtypes takes fp32 and/or bf16, got {args.dtypes!r}")
    batches = tuple(int(b) for b in args.batches.split(","))
    rows = run(shapes, dtypes, batches, args.repeats, args.threads)
    from slimspec.machine import describe_line

    print(describe_line())
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0
