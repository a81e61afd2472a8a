"""Chain, tree and hybrid tree side by side on this CPU, per held-out category and on long contexts, one process.

    slimspec-bench tree [--drafter FOLDER] [--per-category 2] [--max-new-tokens 48] [--sizes 8,16,24]
                        [--dtype auto|bf16|fp32] [--sample] [--rounds 1] [--out reports/tree]

1. The machine and the target's setup: ``--dtype auto`` takes the fastest plain setup here (bf16 and fp32, as
   loaded and packed: ``slimspec.machine.fastest_setup``), as ``slimspec-bench cpu`` does.
2. Methods back to back on each prompt (``slimspec.runner``), greedy (``--sample``: sampling, one seed per
   prompt for every method), batch 1, plain first:
   plain; the drafter alone as a chain of K = 6 (constant) and with its own "cost" schedule; a tree of each
   ``--sizes`` node count (depth 6, top-4 per node, constant); the chain of 6 with each position's top 3 (a tree
   with a frontier of 1, 18 nodes); the "cost" schedule choosing chain or tree and the
   tree's size (at most the largest size); today's hybrid (prompt lookup or the drafter's chain, per pass); the
   hybrid tree (prompt lookup's branch beside the drafter's tree, "cost" schedule).
3. Prompts: the balanced held-out set (``--per-category`` per category) and a long-context row: ~1,500-token
   contexts (the start of the standard library's ``textwrap.py`` to continue; a module's documentation followed by
   a question about it).
4. The report: tokens/s, speedup over plain, tau and identical outputs per category and method; tree tau against
   the chain's (K = 6); the accepted tokens by source for the hybrid tree; a plot of tau and tokens/s against the
   tree size. Writes ``<out>/<class>.md``, ``.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from slimspec.runner import Method, drafter_config, run_methods

from .cpu import SAMPLING, fastest_plain

CHAIN_K = 6
ALTERNATIVES = f"chain {CHAIN_K} + 2 alternatives"  # frontier 1: the chain, each position offering its top 3
TREE = dict(tree_depth=6, tree_top_k=4)
LONG_TOKENS = 1500


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="gemma3-270m", help="embedded name or model folder (default gemma3-270m)")
    p.add_argument("--drafter", default=None, help="SlimSpec drafter folder (default: the shipped one)")
    p.add_argument("--per-category", type=int, default=2, help="held-out prompts per category")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--long-new-tokens", type=int, default=64, help="new tokens on the long contexts")
    p.add_argument("--sizes", default="8,16,24", help="tree node counts to run at constant size")
    p.add_argument("--depth", type=int, default=TREE["tree_depth"], help="tree_depth of every tree")
    p.add_argument("--top-k", type=int, default=TREE["tree_top_k"], help="tree_top_k of every tree")
    p.add_argument("--frontier", type=int, default=None, help="tree_frontier of the trees (default: top-k)")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto")
    p.add_argument("--sample", action="store_true", help="sample as slimspec-bench cpu --sample does (temperature 1, "
                                                         "top-k 0, top-p 1, one seed per prompt) instead of greedy")
    p.add_argument("--rounds", type=int, default=1, help="run the methods this many times in turn on each prompt and "
                                                         "keep each one's fastest call (a noisy shared machine)")
    p.add_argument("--out", default="reports/tree")


def long_prompts(tokenizer, tokens: int = LONG_TOKENS) -> list:
    """Two long contexts cut to about ``tokens`` tokens: code to continue (textwrap.py) and a document to answer
    from (argparse's documentation, then a question)."""
    import argparse as argparse_module
    import inspect
    import textwrap

    def cut(text, limit=tokens):
        return tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:limit])

    doc = "\n\n".join(filter(None, [argparse_module.__doc__, argparse_module.ArgumentParser.__doc__,
                                    inspect.getsource(argparse_module.ArgumentParser.__init__),
                                    inspect.getsource(argparse_module.ArgumentParser.add_argument)]))
    question = "\n\nQuestion: Which arguments does ArgumentParser take, and what does each one do?\nAnswer:"
    return [cut(inspect.getsource(textwrap)), cut(doc, tokens - 30) + question]


def methods_for(drafter, sizes: list, shape: dict) -> list:
    chain_alone = dict(tree_total_tokens=0)
    from generation_slimspec import hybrid_setting

    tokens, ngram, min_ngram = hybrid_setting(drafter.generation_config)
    tokens, ngram, min_ngram = (tokens, ngram, min_ngram) if tokens else (10, 3, 2)  # the shipped hybrid's
    hybrid = dict(k=tokens, ngram=ngram, min_ngram=min_ngram)
    cost = dict(num_assistant_tokens=CHAIN_K, num_assistant_tokens_schedule="cost")
    out = [Method("plain", "plain"),
           Method(f"chain K={CHAIN_K}", "drafter", CHAIN_K, drafter=drafter, settings=chain_alone),
           Method("chain, cost", "drafter", drafter=drafter, settings=dict(chain_alone, **cost))]
    out += [Method(f"tree {n}", "drafter", CHAIN_K, drafter=drafter, settings=dict(shape, tree_total_tokens=n))
            for n in sizes]
    alternatives = dict(tree_depth=CHAIN_K, tree_top_k=3, tree_frontier=1, tree_total_tokens=3 * CHAIN_K)
    out += [Method(ALTERNATIVES, "drafter", CHAIN_K, drafter=drafter, settings=alternatives)]
    out += [Method("tree, cost", "drafter", drafter=drafter, settings=dict(shape, tree_total_tokens=max(sizes),
                                                                          **cost)),
            Method("hybrid", "hybrid", drafter=drafter, settings=dict(chain_alone, **cost), **hybrid),
            Method("hybrid tree, cost", "hybrid", drafter=drafter,
                   settings=dict(shape, tree_total_tokens=max(sizes), **cost), **hybrid)]
    return out


def run(args) -> dict:
    from transformers import AutoModel

    from slimspec.heldout import CATEGORIES, HELD_OUT
    from slimspec.machine import describe_line
    from slimspec.shipped import shipped_or_exit
    from slimspec.targets import load_target

    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    names = list(dtypes) if args.dtype == "auto" else [args.dtype]
    targets = {name: load_target(args.target, dtype=dtypes[name]) for name in names}
    best, passes = fastest_plain(targets, args.sample)
    target, tokenizer = targets[best]
    folder = args.drafter or str(shipped_or_exit(args.target, "slimspec-bench tree"))
    drafter = AutoModel.from_pretrained(folder, trust_remote_code=True).to(dtypes[best]).eval()
    drafter.attach(target)
    sizes = [int(x) for x in args.sizes.split(",")]
    shape = dict(tree_depth=args.depth, tree_top_k=args.top_k, tree_frontier=args.frontier or args.top_k)
    methods = methods_for(drafter, sizes, shape)
    # costs for the largest tree (with its lookup branch) and the chain, measured once for every "cost" method
    settings = dict(shape, tree_total_tokens=max(sizes), num_assistant_tokens=CHAIN_K,
                    prompt_lookup_num_tokens=methods[-1].k)
    with drafter_config(drafter, **settings):
        costs = drafter.calibrate(target, prepare=False).costs
    gen = dict(SAMPLING if args.sample else dict(do_sample=False), max_new_tokens=args.max_new_tokens)
    seed = 0 if args.sample else None
    rows = {c: run_methods(target, tokenizer, methods, HELD_OUT[c][: args.per_category], gen, desc=c,
                           progress=True, warmup=i == 0, seed=seed, rounds=args.rounds)
            for i, c in enumerate(CATEGORIES)}
    rows["long context"] = run_methods(target, tokenizer, methods, long_prompts(tokenizer),
                                       dict(gen, max_new_tokens=args.long_new_tokens), desc="long context",
                                       progress=True, warmup=False, seed=seed, rounds=args.rounds)
    drafter.detach()
    costs_ms = dict(target_pass=[round(1e3 * x, 2) for x in costs.target_pass], draft=1e3 * costs.draft,
                    tree_level=1e3 * costs.tree_level)
    return dict(machine=describe_line(), setup=best, plain_passes_ms=passes, costs_ms=costs_ms, drafter=folder,
                sizes=sizes, shape=shape, sample=args.sample, rounds=args.rounds,
                per_category=args.per_category, max_new_tokens=args.max_new_tokens,
                long_new_tokens=args.long_new_tokens, rows={c: summarize(t) for c, t in rows.items()},
                all=summarize(_total([rows[c] for c in CATEGORIES])))


def _total(tallies: list) -> dict:
    return {name: sum((t[name] for t in tallies[1:]), tallies[0][name]) for name in tallies[0]}


def summarize(tallies: dict) -> dict:
    plain = tallies["plain"].tokens_per_s
    out = {}
    for name, t in tallies.items():
        stats = t.merged_stats()
        row = dict(tokens_per_s=t.tokens_per_s, speedup=t.tokens_per_s / plain, identical=t.identical,
                   prompts=t.prompts)
        if stats is not None:
            row.update(tau=stats.tau, nodes_per_pass=sum(stats.drafted_per_pass) / max(stats.verification_passes, 1),
                       tree_passes=stats.source_per_pass.count("tree"), passes=stats.verification_passes,
                       accepted_by_source=stats.accepted_by_source())
        out[name] = row
    return out


def format_report(r: dict) -> str:
    chain = f"chain K={CHAIN_K}"
    lines = [f"machine: {r['machine']}; target setup: {r['setup']} (plain pass ms: "
             + ", ".join(f"{k} {v:.1f}" for k, v in r["plain_passes_ms"].items()) + ")",
             f"drafter: {r['drafter']}; {r['per_category']} held-out prompts per category, {r['max_new_tokens']} new "
             f"tokens (long contexts: ~{LONG_TOKENS} tokens, {r['long_new_tokens']} new), "
             f"{'sampling (temperature 1, top-k 0, top-p 1, seed i on prompt i)' if r.get('sample') else 'greedy'}, "
             f"batch 1, best of {r.get('rounds', 1)} per method and prompt; trees: "
             f"depth {r['shape']['tree_depth']}, top-{r['shape']['tree_top_k']}, "
             f"frontier {r['shape']['tree_frontier']}",
             "measured costs (ms): target pass over n = 1, 7, 9, 17, 25 new tokens: "
             + ", ".join(f"{r['costs_ms']['target_pass'][n - 1]:.1f}" for n in (1, 7, 9, 17, 25)
                         if n <= len(r["costs_ms"]["target_pass"]))
             + f"; chain drafting step {r['costs_ms']['draft']:.1f}; tree level {r['costs_ms']['tree_level']:.1f}", ""]
    names = list(r["all"])
    lines += ["## tokens/s (speedup over plain)", "",
              "| row | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row_name, row in [("all (held-out)", r["all"]), *r["rows"].items()]:
        lines.append(f"| {row_name} | " + " | ".join(f"{row[n]['tokens_per_s']:.1f} ({row[n]['speedup']:.2f}x)"
                                                    for n in names) + " |")
    lines += ["", "## tau (identical outputs)", "", "| row | " + " | ".join(names[1:]) + " |",
              "|---" * len(names) + "|"]
    for row_name, row in [("all (held-out)", r["all"]), *r["rows"].items()]:
        lines.append(f"| {row_name} | " + " | ".join(f"{row[n]['tau']:.2f} ({row[n]['identical']}/{row[n]['prompts']})"
                                                    for n in names[1:]) + " |")
    a = r["all"]
    best_tree = max((n for n in names if n.startswith("tree ") and "cost" not in n), key=lambda n: a[n]["tau"])
    met = "met" if a[best_tree]["tau"] >= 1.25 * a[chain]["tau"] else "missed"
    lines += ["", f"tree tau / chain tau (K = {CHAIN_K}), held-out: "
              + ", ".join(f"{n} {a[n]['tau'] / a[chain]['tau']:.2f}x" for n in names if n.startswith("tree"))
              + f" (target >= 1.25x at <= 24 nodes: {met})",
              "tree passes chosen by the cost schedule: " + ", ".join(
                  f"{n} {a[n]['tree_passes']}/{a[n]['passes']}" for n in names if "cost" in n),
              "hybrid tree, accepted tokens by source: " + json.dumps(a["hybrid tree, cost"]["accepted_by_source"])]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = r["all"]
    chain = f"chain K={CHAIN_K}"
    sizes = [CHAIN_K] + r["sizes"]
    labels = [chain] + [f"tree {n}" for n in r["sizes"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(sizes[1:], [a[n]["tau"] for n in labels[1:]], "o-", label="tree")
    left.axhline(a[chain]["tau"], color="gray", ls="--", label=f"chain K={CHAIN_K}")
    right.plot(sizes[1:], [a[n]["tokens_per_s"] for n in labels[1:]], "o-", label="tree")
    right.axhline(a[chain]["tokens_per_s"], color="gray", ls="--", label=f"chain K={CHAIN_K}")
    right.axhline(a["plain"]["tokens_per_s"], color="black", ls=":", label="plain")
    for ax, name in ((left, "tau"), (right, "tokens/s")):
        ax.set_xlabel("nodes verified per pass")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(r["machine"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args) -> int:
    from slimspec.machine import native_bf16_matmuls

    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / (("native-bf16" if native_bf16_matmuls() else "no-native-bf16") + ("-sample" if args.sample else ""))
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    text = format_report(result)
    command = " ".join(["slimspec-bench tree"] + (["--sample"] if args.sample else [])
                       + ([f"--dtype {args.dtype}"] if args.dtype != "auto" else [])
                       + ([f"--rounds {args.rounds}"] if args.rounds > 1 else []))
    stem.with_suffix(".md").write_text(f"# Chain, tree and hybrid tree{', sampling' if args.sample else ''}\n\n"
                                       f"`{command}`\n\n{text}\n")
    plot(result, stem.with_suffix(".png"))
    print(text)
    return 0
