"""``slimspec-train``: self-distillation data, training and healing of SlimSpec drafters.

    slimspec-train data --target T --prompts FILE --out DATA [--max-new-tokens N] [--skip N] [--limit M]
    slimspec-train fit  --target T --data DATA --out DRAFTER [--head-rank R|d/8|d/16|dense] [--draft-vocab N]
                        [--max-steps N] [--loss kl|ce|lk|lk_log]
    slimspec-train heal --target T --data DATA --drafter IN --out OUT [--teacher DENSE] [--max-steps N] [--lora-rank R]
    slimspec-train reference [--only slimspec-d8]   build, cache and evaluate the reference drafters
    slimspec-train ship [--source DRAFTER]          evaluate per category, write drafters/slimspec-gemma3-270m-d8
    slimspec-train heldout [--drafter DRAFTER]      tau per category on both held-out sets (fp32, alone, K = 5)
    slimspec-train heldout --drafter D --curve      ... and of D's learning-curve snapshots, against CPU minutes
    slimspec-train heldout --found-rest 6 --confidence --text-agreement 60   ... and found-rest, the target's
                                                    confidence and the first draft per level of it, and along real text
    slimspec-train tree-scale --drafter D --data DATA [--write]   tree score sharpness on data D never trained on
    slimspec-train head-ceiling [--ranks d/16,d/8,d/4]   what a rank-r head reaches with perfect features
    slimspec-train data-curve HELDOUT.json ...   first draft on unseen real text against the distinct text read

T is a local model folder or the embedded ``gemma3-270m``. FILE is jsonl/txt, or ``builtin`` for the offline
sources (HumanEval prompts and Python-docs prose, train split; ``builtin-eval`` for the held-out split), or
``varied-rest`` (composed prompts no reference recipe trains on: data for ``tree-scale``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from slimspec.runner import lookup_setting

from .evaluate import HELD_OUT_PROTOCOL
from .fit_config import FitConfig
from .losses import LOSSES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspec-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("data", help="self-distillation data from a target")
    d.add_argument("--target", default="gemma3-270m")
    source = d.add_mutually_exclusive_group()
    source.add_argument("--prompts", default="builtin", help="self-distillation: jsonl/txt file, 'builtin', "
                                                             "'builtin-eval' or 'varied-rest' (composed prompts no "
                                                             "recipe trains on, for tree-scale)")
    source.add_argument("--text", default=None, help="teacher-forced instead: offline text sources, comma-separated "
                                                     "(stdlib, docs, packages, humaneval; 'all'; found: text "
                                                     "people wrote, slimspec.found)")
    d.add_argument("--window", type=int, default=512, help="--text: tokens per target forward")
    d.add_argument("--out", required=True)
    d.add_argument("--max-new-tokens", type=int, default=128)
    d.add_argument("--max-prompt-tokens", type=int, default=384)
    d.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (--text: windows per forward)")
    d.add_argument("--limit", type=int, default=None, help="use only the first N prompts (or texts)")
    d.add_argument("--skip", type=int, default=0, help="start after the first N prompts (or texts): a further folder "
                                                      "beside one made with --limit N")
    d.add_argument("--no-sampled", action="store_true", help="greedy responses only (default: greedy + sampled)")
    d.add_argument("--layer-ids", default=None, help="target hidden_states indices, e.g. 2,9,15 (default EAGLE-3's)")
    d.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"],
                   help="target dtype (auto: bf16 where this CPU has native bf16 matmuls, else fp32)")
    d.add_argument("--topk", type=int, default=64, help="store the target's top-k next-token log-probabilities")
    for name, helptext in (("fit", "train a drafter"), ("heal", "heal a converted (factorized) drafter")):
        f = sub.add_parser(name, help=helptext)
        f.add_argument("--target", default="gemma3-270m")
        f.add_argument("--data", required=True)
        f.add_argument("--out", required=True)
        f.add_argument("--max-steps", type=int, default=FitConfig.max_steps if name == "fit" else 300)
        f.add_argument("--batch-size", type=int, default=FitConfig.batch_size)
        f.add_argument("--window", type=int, default=FitConfig.window)
        f.add_argument("--ttt-steps", type=int, default=FitConfig.ttt_steps)
        f.add_argument("--lr", type=float, default=FitConfig.lr)
        f.add_argument("--loss", default=FitConfig.loss, choices=sorted(LOSSES))
        f.add_argument("--candidates", type=int, default=FitConfig.candidates,
                       help="normalize the training softmax over the batch's target top-k ids + this many most "
                            "frequent tokens (0: the full vocabulary; inference always scores the full vocabulary)")
        f.add_argument("--seed", type=int, default=FitConfig.seed)
        f.add_argument("--save-every", type=int, default=FitConfig.save_every)
        f.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                       help="bf16: autocast for the drafter, fp32 master weights (auto: bf16 where this CPU has "
                            "native bf16 matmuls, else fp32)")
        f.add_argument("--loss-on", default=FitConfig.loss_on, choices=["response", "all"],
                       help="train on response positions only, or on prompt positions too")
        if name == "fit":
            f.add_argument("--head-rank", default=FitConfig.head_rank, help="int, d/N (d/8, d/16) or dense")
            f.add_argument("--draft-vocab", type=int, default=None, help="truncated draft vocabulary size")
            f.add_argument("--head-init", default=FitConfig.head_init, choices=["target", "random"])
        else:
            f.add_argument("--drafter", required=True, help="the converted SlimSpec drafter to heal")
            f.add_argument("--teacher", default=None, help="dense drafter folder to distill from (default: the target)")
            f.add_argument("--lora-rank", type=int, default=0,
                           help="LoRA adapters on the decoder layer (0 = head only)")
    for name, helptext in (("reference", "build, cache and evaluate the reference drafter set"),
                           ("curve", "tau of SlimSpec d/8 against the training budget")):
        r = sub.add_parser(name, help=helptext)
        r.add_argument("--target", default="gemma3-270m", help="embedded target name")
        r.add_argument("--max-steps", type=int, default=None, help="training budget in steps (default: the recipe's)")
        r.add_argument("--recipe", default=None, help="other recipe fields, name=value,... (e.g. batch_size=32,"
                                                      "text_limit=2000; 'none' for an optional field)")
        r.add_argument("--eval-prompts", type=int, default=16, help="held-out prompts for tau (reference: 0 builds "
                                                                    "without evaluating)")
        r.add_argument("--num-assistant-tokens", type=int, default=5, help="K drafts per pass for tau")
        if name == "reference":
            r.add_argument("--only", default=None, help="comma-separated members (default: all)")
            r.add_argument("--member-steps", default=None, metavar="NAME=STEPS,...",
                           help="members trained for their own number of steps instead of the recipe's (e.g. "
                                "the steps that cost what d/8's budget costs: an equal-time comparison)")
    s = sub.add_parser("ship", help="evaluate a trained drafter per category and write the folder that ships")
    s.add_argument("--target", default="gemma3-270m", help="embedded target name")
    s.add_argument("--source", default=None, help="trained drafter folder (default: the reference SlimSpec d/8)")
    s.add_argument("--out", default="drafters/slimspec-gemma3-270m-d8")
    s.add_argument("--max-k", type=int, default=6, help="longest draft; the cost schedule chooses up to it")
    s.add_argument("--per-category", type=int, default=None, help="held-out prompts per category (default: all)")
    s.add_argument("--prompt-lookup", default=None, metavar="TOKENS,NGRAM[,MIN_NGRAM]", type=lookup_setting,
                   help="ship with hybrid drafting on: prompt_lookup_num_tokens,max_matching_ngram_size"
                        "[,min_matching_ngram_size] (e.g. 10,3,2)")
    s.add_argument("--tree-scale-data", default=None, metavar="DATA",
                   help="data folder(s) the drafter never trained on: measure its tree_logit_scale there "
                        "(slimspec-train tree-scale) and ship it in the generation_config")
    s.add_argument("--force", action="store_true",
                   help="replace --out even if the new drafter does not raise its recorded tau by 5%%")
    h = sub.add_parser("heldout", help="tau per category on both held-out sets (the drafter alone, constant K)")
    h.add_argument("--target", default="gemma3-270m", help="embedded target name")
    h.add_argument("--drafter", default=None, help="drafter folder (default: the shipped one)")
    h.add_argument("--per-category", type=int, default=None, help="prompts per category (default: all)")
    h.add_argument("--k", type=int, default=HELD_OUT_PROTOCOL["num_assistant_tokens"], help="constant draft length")
    h.add_argument("--max-new-tokens", type=int, default=HELD_OUT_PROTOCOL["max_new_tokens"])
    h.add_argument("--dtype", default="fp32", choices=["bf16", "fp32"], help="target dtype (default fp32)")
    h.add_argument("--found-rest", type=int, default=0, metavar="N",
                   help="also tau on N openings per found-text genre that no recipe trains on (real text; the "
                        "archives are downloaded once)")
    h.add_argument("--confidence", action="store_true",
                   help="also how sure the target is of its own greedy tokens on each set (plain generate): text "
                        "hard for the target against a drafter that generalizes badly")
    h.add_argument("--text-agreement", type=int, default=0, metavar="N",
                   help="also the drafter's first draft teacher-forced along N found texts of the train split (what a "
                        "recipe with text=found takes first) and N of the held-out split: fit against generalization")
    h.add_argument("--out", default="reports/heldout", help="where the table and its JSON go")
    h.add_argument("--curve", action="store_true", help="also the drafter's learning-curve snapshots, against the "
                                                        "run's CPU minutes (a curve table, JSON and plot)")
    h.add_argument("--start", default=None, metavar="FOLDER|HELDOUT.json",
                   help="with --curve: the drafter the run started from (0 minutes), or this command's JSON for it")
    t = sub.add_parser("tree-scale", help="measure the drafter's tree_logit_scale (how sharp its tree scores "
                                          "should be) on self-distillation data it never trained on")
    t.add_argument("--target", default="gemma3-270m", help="embedded target name or model folder")
    t.add_argument("--drafter", required=True, help="drafter folder")
    t.add_argument("--data", required=True, help="DATA folder(s), comma-separated, that the drafter never trained on")
    t.add_argument("--rows", type=int, default=2048, help="drafting positions measured")
    t.add_argument("--top-k", type=int, default=4, help="children per node the calibration covers (tree_top_k)")
    t.add_argument("--write", action="store_true", help="store it in the drafter's generation_config.json")
    v = sub.add_parser("data-curve", help="first-draft agreement on unseen real text against the distinct text each "
                                          "drafter trained on, from heldout --text-agreement reports")
    v.add_argument("reports", nargs="+", metavar="HELDOUT.json",
                   help="slimspec-train heldout --drafter D --text-agreement N reports, D a drafter trained here")
    v.add_argument("--out", default="reports/heldout/data-curve", help="where the table, JSON and plot go")
    c = sub.add_parser("head-ceiling", help="what a rank-r head reaches with perfect features: a head alone fitted "
                                            "on the target's own final states along found texts")
    c.add_argument("--target", default="gemma3-270m", help="embedded target name or model folder")
    c.add_argument("--ranks", default="d/16,d/8,d/4", help="head ranks, comma-separated (an int or d/N each)")
    c.add_argument("--texts", type=int, default=240, help="found texts of the train split to fit on")
    c.add_argument("--held-out", type=int, default=60, help="found texts of the held-out split to score on")
    c.add_argument("--steps", type=int, default=500, help="Adam steps per rank")
    c.add_argument("--batch", type=int, default=256, help="positions per step")
    c.add_argument("--lr", type=float, default=1e-4)
    c.add_argument("--out", default="reports/heldout/head-ceiling", help="where the table and its JSON go")
    return p


def _head_ceiling(args) -> int:
    import torch

    from configuration_slimspec import resolve_head_rank
    from slimspec.machine import describe_line
    from slimspec.prompts import offline_texts
    from slimspec.targets import load_target

    from .evaluate import TEXT_WINDOW
    from .head_ceiling import head_ceiling, head_ceiling_table

    target, tokenizer = load_target(args.target, dtype=torch.float32)
    d = target.get_output_embeddings().weight.shape[1]
    ranks = [resolve_head_rank(r.strip(), d) for r in args.ranks.split(",")]
    if None in ranks:
        sys.exit("slimspec-train head-ceiling: --ranks takes ranks (an int or d/N), not a dense head: at full rank "
                 "the head is the target's own")
    result = head_ceiling(target, tokenizer, offline_texts(["found"])[: args.texts],
                          offline_texts(["found"], split="eval")[: args.held_out], ranks, steps=args.steps,
                          batch=args.batch, lr=args.lr)
    command = (f"slimspec-train head-ceiling --target {args.target} --ranks {args.ranks} --texts {args.texts} "
               f"--held-out {args.held_out} --steps {args.steps} --batch {args.batch} --lr {args.lr:g}")
    text = (f"# A head alone, with perfect features\n\nA rank-r head (down [r, d], up [V, r]) fitted on the target's "
            f"own final states along {args.texts} found texts of the train split (the first {TEXT_WINDOW} tokens "
            f"of each: {result['positions']['train']:,} positions; forward KL to the target, from the rank-r map "
            f"that keeps the most logit mass), scored by top-1 agreement with the target on the first texts it "
            f"fitted and on {args.held_out} texts of the held-out split ({result['positions']['held-out']:,} "
            f"positions). fp32 target {args.target}, on {describe_line()}.\n\nCommand: `{command}`\n\n"
            f"{head_ceiling_table(result)}\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "head-ceiling.md").write_text(text)
    (out / "head-ceiling.json").write_text(json.dumps(dict(result, command=command, machine=describe_line()),
                                                      indent=2, default=str))
    print(text)
    return 0


def _data_curve(args) -> int:
    from .evaluate import data_curve

    points = [_data_curve_point(Path(path)) for path in args.reports]
    positions = {p["positions"] for p in points}
    if len(positions) > 1:
        raise ValueError(f"the reports measured different held-out texts ({sorted(positions)} positions); rerun them "
                         "with the same --text-agreement N")
    curve = data_curve(points)
    command = "slimspec-train data-curve " + " ".join(args.reports)
    lines = ["# First draft on unseen real text against the distinct real text trained on", "",
             "Each drafter's first draft teacher-forced along found texts of the held-out split "
             f"({points[0]['positions']:,} positions; no recipe trains on them) and along the train split's first "
             "texts (which a recipe with text=found reads first), against the target's top choice (`slimspec-train "
             "heldout --text-agreement`). Texts and tokens: the distinct teacher-forced text each drafter trained on "
             "(its data folders). Fit: unseen agreement linear in log2(texts) per series, least squares.", "",
             "Machines: " + "; ".join(sorted({p["machine"] for p in points})) + ".", "", f"Command: `{command}`", "",
             "| series | drafter | texts | tokens | steps | first draft, train-split texts | unseen texts |",
             "|---|---|---|---|---|---|---|"]
    for label, s in curve["series"].items():
        lines += [f"| {label} | {p['name']} | {p['texts']:,} | {p['tokens']:,} | {p['steps']} | {p['train']:.1%} | "
                  f"**{p['unseen']:.1%}** |" for p in s["points"]]
    lines += ["", "| series | unseen, per doubling of the text (fit) | between the two largest budgets | twice the "
                  "text predicts (fit) |", "|---|---|---|---|"]
    lines += [f"| {label} | {s['per_doubling'] * 100:+.2f} points | {s['last_per_doubling'] * 100:+.2f} points | "
              f"{s['twice_the_text']['unseen']:.1%} at {s['twice_the_text']['texts']:,} texts |"
              for label, s in curve["series"].items() if s["per_doubling"] is not None]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data-curve.md").write_text("\n".join(lines) + "\n")
    (out / "data-curve.json").write_text(json.dumps(dict(curve, command=command), indent=2, default=str))
    _plot_data_curve(curve, out / "data-curve.png")
    print("\n".join(lines))
    return 0


def _data_curve_point(path: Path) -> dict:
    """One drafter of ``slimspec-train data-curve``: its heldout report's text agreement and what it trained on (the
    report's own record, or, for a report written before heldout kept one, the drafter folder its command names)."""
    import shlex

    report = json.loads(path.read_text())
    agreement = report.get("text_agreement")
    if not agreement:
        raise ValueError(f"{path}: no text agreement in it; measure it with slimspec-train heldout --drafter D "
                         "--text-agreement 60")
    trained = report.get("trained_on")
    if trained is None:
        words = shlex.split(report["command"])
        if "--drafter" not in words:
            raise ValueError(f"{path}: its command names no --drafter; the curve needs drafters trained on this "
                             "machine")
        trained = trained_on(Path(words[words.index("--drafter") + 1]).expanduser())
    if trained is None or not trained["texts"]:
        raise ValueError(f"{path}: its drafter has no training.json here or read no teacher-forced text; the curve "
                         "is over drafters trained on found text")
    unseen = agreement["found, held-out split"]
    return dict(trained, name=path.stem, report=str(path), machine=report.get("machine", "?"),
                positions=unseen["positions"], train=agreement["found, train split"]["drafter"],
                unseen=unseen["drafter"])


def trained_on(folder: Path) -> dict | None:
    """What a drafter folder trained on, from its training.json and config.json (None without a training.json):
    the distinct teacher-forced text (``text_read``), the steps, and its series: what was trained, head rank, lr."""
    from .ship import text_read

    if not (folder / "training.json").exists():
        return None
    training = json.loads((folder / "training.json").read_text())
    config = training["config"]
    what = "head only" if config.get("trainable") == "head" else "whole drafter"
    rank = json.loads((folder / "config.json").read_text()).get("head_rank")
    return dict(text_read(str(training.get("data", ""))), steps=len(training["history"]),
                series=f"{what}, rank {rank}, lr {config['lr']:g}")


def _plot_data_curve(curve: dict, path: Path) -> None:
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (label, s), marker in zip(curve["series"].items(), "osD^v<>"):
        texts = [p["texts"] for p in s["points"]]
        line, = ax.plot(texts, [100 * p["unseen"] for p in s["points"]], marker, label=label)
        if s["twice_the_text"] is not None:
            ends = (texts[0], s["twice_the_text"]["texts"])
            ax.plot(ends, [100 * (s["at_one_text"] + s["per_doubling"] * math.log2(t)) for t in ends], "--",
                    color=line.get_color(), alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({p["texts"] for s in curve["series"].values() for p in s["points"]}))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("distinct found texts trained on (log2 scale)")
    ax.set_ylabel("first draft = target's top choice, unseen texts (%)")
    ax.set_title("first draft on unseen real text against the text read", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _tree_scale(args) -> int:
    from .tree_scale import measure_tree_scale

    result = measure_tree_scale(args.drafter, args.data, target=args.target, rows=args.rows, top_k=args.top_k,
                                write=args.write)
    print(json.dumps(result, indent=2))
    print(f"tree_logit_scale {result['tree_logit_scale']}: log-loss {result['loss']:.4f} (1.0: "
          f"{result['loss_at_1']:.4f}); " + ("written to " + args.drafter if args.write else "not written (--write)"))
    return 0


def shown_path(folder) -> str:
    """A folder as a report's command shows it: relative to the working directory when inside it, else with the
    home directory as ~ (a cached member folder), else absolute."""
    folder, home = Path(folder).resolve(), Path.home().resolve()
    if folder.is_relative_to(Path.cwd().resolve()):
        return os.path.relpath(folder)
    return f"~/{folder.relative_to(home)}" if folder.is_relative_to(home) else str(folder)


def _heldout(args) -> int:
    from modeling_slimspec import SlimSpecDrafter
    from slimspec.machine import describe_line, resolve_dtype
    from slimspec.shipped import shipped_or_exit
    from slimspec.targets import load_target

    from .evaluate import evaluate_held_out, held_out_table

    folder = args.drafter or shipped_or_exit(args.target, "slimspec-train heldout")
    target, tokenizer = load_target(args.target, dtype=resolve_dtype(args.dtype))
    if args.curve:
        return _heldout_curve(args, Path(folder), target, tokenizer)
    drafter = SlimSpecDrafter.from_pretrained(str(folder), dtype=target.dtype).eval()
    result = evaluate_held_out(target, tokenizer, drafter, per_category=args.per_category, num_assistant_tokens=args.k,
                               max_new_tokens=args.max_new_tokens, found_rest=args.found_rest)
    command = (f"slimspec-train heldout --drafter {shown_path(folder)} --k {args.k} "
               f"--max-new-tokens {args.max_new_tokens} --dtype {args.dtype}"
               + (f" --per-category {args.per_category}" if args.per_category else "")
               + (f" --found-rest {args.found_rest}" if args.found_rest else "")
               + (" --confidence" if args.confidence else "")
               + (f" --text-agreement {args.text_agreement}" if args.text_agreement else ""))
    text = (f"# Held-out tau: {Path(folder).name}\n\nGreedy, the drafter alone (prompt lookup off), constant K = "
            f"{args.k}, {args.max_new_tokens} new tokens, {args.dtype} target, on {describe_line()}.\n\n"
            f"Command: `{command}`\n\n{held_out_table(result)}\n")
    if args.confidence:
        from slimspec.found import found_rest_prompts
        from slimspec.heldout import held_out_prompts

        from .evaluate import confidence_table, target_confidence

        sets = {name: [p for _, p in held_out_prompts(args.per_category, held_out=name)] for name in ("a", "b")}
        sets.update({"found-rest": found_rest_prompts(args.found_rest)} if args.found_rest else {})
        result["confidence"] = {name: target_confidence(target, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                                                  drafter=drafter) for name, prompts in sets.items()}
        text += ("\nHow sure the target is of its own greedy tokens on the same prompts (plain greedy generate, "
                 f"{args.max_new_tokens} new tokens; p: its probability of the token it chose), and how often the "
                 "drafter's first draft is that token at each range of p (teacher-forced on the target's features; "
                 "the range's share of positions in brackets):\n\n"
                 f"{confidence_table(result['confidence'])}\n")
    if args.text_agreement:
        from slimspec.prompts import offline_texts

        from .evaluate import TEXT_WINDOW, text_agreement, text_agreement_table

        n = args.text_agreement
        groups = {"found, train split": offline_texts(["found"])[:n],
                  "found, held-out split": offline_texts(["found"], split="eval")[:n]}
        result["text_agreement"] = {name: text_agreement(target, tokenizer, drafter, texts)
                                    for name, texts in groups.items()}
        text += (f"\nTeacher-forced along text people wrote (the first {TEXT_WINDOW} tokens of each): the drafter's "
                 "first draft against the target's top choice at every position (what training fits). The train "
                 "split's first texts are what a recipe with text=found trains on first; no recipe trains on the "
                 "held-out split:\n\n"
                 f"{text_agreement_table(result['text_agreement'])}\n")
    try:  # what the drafter trained on, for slimspec-train data-curve; a drafter not trained here has no record
        result["trained_on"] = trained_on(Path(folder))
    except ValueError:  # its data folders are not on this machine
        result["trained_on"] = None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / Path(folder).name
    (out / f"{stem.name}.md").write_text(text)
    (out / f"{stem.name}.json").write_text(json.dumps(dict(result, command=command, machine=describe_line()),
                                                      indent=2, default=str))
    print(text)
    return 0


def _heldout_curve(args, folder: Path, target, tokenizer) -> int:
    from slimspec.machine import describe_line

    from .evaluate import held_out_curve

    start = Path(args.start) if args.start else None
    start = json.loads(start.read_text()) if start is not None and start.is_file() else start
    curve = held_out_curve(target, tokenizer, folder, start=start, per_category=args.per_category)
    command = f"slimspec-train heldout --drafter {shown_path(folder)} --curve" + (
        f" --start {args.start}" if args.start else "") + (f" --per-category {args.per_category}"
                                                            if args.per_category else "")
    lines = [f"# Held-out learning curve: {folder.name}", "",
             f"Greedy, the drafter alone, constant K = 5, 48 new tokens, {args.dtype} target, on {describe_line()}. "
             f"Minutes: this run's training steps (0: the drafter it started from).", "", f"Command: `{command}`", "",
             "| steps | CPU minutes | set a | set b | mean |", "|---|---|---|---|---|"]
    lines += [f"| {p['steps']} | {p['minutes']:.1f} | {p['a']:.2f} | {p['b']:.2f} | {p['mean']:.2f} |"
              for p in curve["points"]]
    twice = curve["twice_the_budget"]
    if twice:
        lines += ["", f"Twice the budget ({twice['minutes']:.0f} min), tau linear in log2(minutes) through the last "
                      f"two points: mean **{twice['mean']:.2f}** ({twice['per_doubling']:+.3f} per doubling)."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"curve-{folder.name}"
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps(dict(curve, command=command, machine=describe_line()), indent=2,
                                                    default=str))
    _plot_held_out_curve(curve, stem.with_suffix(".png"), folder.name)
    print("\n".join(lines))
    return 0


def _plot_held_out_curve(curve: dict, path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = curve["points"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, style in (("a", "o-"), ("b", "s-"), ("mean", "k--")):
        ax.plot([p["minutes"] for p in points], [p[key] for p in points], style, label=f"set {key}"
                if key != "mean" else "mean")
    ax.set_xlabel("training CPU minutes (this stage)")
    ax.set_ylabel("tau (greedy, K = 5, fp32)")
    ax.set_title(f"held-out learning curve, {name}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _ship(args) -> int:
    from .recipe import Recipe, member_folder
    from .ship import ship

    source = Path(args.source) if args.source else member_folder(args.target, "slimspec-d8", Recipe())
    report = ship(source, Path(args.out), target_name=args.target, max_k=args.max_k, per_category=args.per_category,
                  prompt_lookup=args.prompt_lookup, tree_scale_data=args.tree_scale_data, force=args.force)
    print(json.dumps({k: v for k, v in report.items() if k != "costs"}, indent=2, default=str))
    if not report["shipped"]:
        print(f"slimspec: not shipped: {report['refusal']} (--force replaces it anyway)")
        return 1
    print((Path(args.out) / "README.md").read_text())
    return 0


def _reference(args) -> int:
    from dataclasses import replace

    from .recipe import MEMBERS, Recipe, parse_member_steps
    from .reference import build_reference_set, learning_curve

    recipe = Recipe().override(args.recipe)
    recipe = recipe if args.max_steps is None else replace(recipe, max_steps=args.max_steps)
    kw = dict(target_name=args.target, recipe=recipe, eval_prompts=args.eval_prompts,
              num_assistant_tokens=args.num_assistant_tokens)
    if args.command == "curve":
        result = learning_curve(**kw)
    else:
        names = args.only.split(",") if args.only else list(MEMBERS)
        try:
            steps = parse_member_steps(args.member_steps, names)
        except ValueError as e:
            raise SystemExit(f"slimspec-train reference: {e}")
        result = build_reference_set(names=names, member_steps=steps, **kw)
    print(Path(result["report"]).read_text() if result["report"] else json.dumps(result["folders"], indent=2))
    return 0


def _data(args, target, tokenizer) -> dict:
    """``slimspec-train data``: teacher-forced over offline text (--text) or self-distilled from prompts."""
    from configuration_slimspec import default_target_layer_ids

    from .data import generate_data, generate_text_data, load_prompt_file

    L = target.config.get_text_config().num_hidden_layers
    layer_ids = [int(x) for x in args.layer_ids.split(",")] if args.layer_ids else default_target_layer_ids(L)
    common = dict(target=target, tokenizer=tokenizer, out=args.out, layer_ids=layer_ids, topk=args.topk,
                  target_name=args.target)
    if args.text:
        from slimspec.prompts import TEXT_SOURCES, offline_texts

        sources = list(TEXT_SOURCES) if args.text == "all" else args.text.split(",")
        return generate_text_data(texts=_chosen(offline_texts(sources), args), window=args.window,
                                  source=",".join(sources), batch_size=args.batch_size, **common)
    if args.prompts in ("builtin", "builtin-eval"):
        from slimspec.prompts import builtin_prompts

        prompts = builtin_prompts("eval" if args.prompts == "builtin-eval" else "train")
    elif args.prompts == "varied-rest":
        from slimspec.compose import varied_rest_prompts

        prompts = varied_rest_prompts()
    else:
        prompts = load_prompt_file(args.prompts)
    return generate_data(prompts=_chosen(prompts, args), max_new_tokens=args.max_new_tokens,
                         max_prompt_tokens=args.max_prompt_tokens, batch_size=args.batch_size,
                         sampled=not args.no_sampled, **common)


def _chosen(items: list, args) -> list:
    """The prompts (or texts) ``slimspec-train data`` uses: ``--skip`` past the start, then at most ``--limit``."""
    if args.skip < 0 or args.skip >= len(items):
        raise ValueError(f"--skip {args.skip}: there are {len(items)} prompts or texts; skip fewer (0 to "
                         f"{len(items) - 1})")
    return items[args.skip :][: args.limit] if args.limit else items[args.skip :]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from slimspec.targets import load_target

    try:
        if args.command in ("reference", "curve"):
            return _reference(args)
        if args.command == "ship":
            return _ship(args)
        if args.command == "heldout":
            return _heldout(args)
        if args.command == "tree-scale":
            return _tree_scale(args)
        if args.command == "head-ceiling":
            return _head_ceiling(args)
        if args.command == "data-curve":
            return _data_curve(args)
        from slimspec.machine import resolve_dtype, training_device

        device = training_device()
        target, tokenizer = load_target(args.target, dtype=resolve_dtype(getattr(args, "dtype", "fp32"), device),
                                        device=device)
        if args.command == "data":
            meta = _data(args, target, tokenizer)
            print(f"{meta['tokens']:,} tokens in {len(meta['shards'])} shards, {meta['tokens_per_s']:.0f} tokens/s; "
                  f"the stored top-{args.topk} hold {meta['topk_mass']:.3f} of the target's probability mass")
            return 0
        from .fit import fit
        from .step import positions_per_s

        common = dict(max_steps=args.max_steps, batch_size=args.batch_size, window=args.window,
                      ttt_steps=args.ttt_steps, lr=args.lr, loss=args.loss, seed=args.seed, save_every=args.save_every,
                      bf16=resolve_dtype(args.precision, device) == torch.bfloat16, loss_on=args.loss_on,
                      candidates=args.candidates)
        if args.command == "fit":
            config = FitConfig(head_rank=args.head_rank, draft_vocab=args.draft_vocab, head_init=args.head_init,
                               **common)
        else:
            config = FitConfig(init_from=args.drafter, trainable="head", teacher=args.teacher, lora_rank=args.lora_rank,
                               **common)
        result = fit(target=target, data=args.data, out=args.out, config=config)
        from accelerate import PartialState

        state = PartialState()  # several processes (torchrun / accelerate launch): all leave together, rank 0 reports
        main_process = state.is_main_process
        state.destroy_process_group()
        if not main_process:
            return 0
        history = result["history"]
        last = history[-1] if history else {}
        tps = positions_per_s(history, "tokens") or 0.0
        print(f"{result['steps']} steps; last loss {last.get('loss', float('nan')):.4f}, per-step top-1 "
              f"{last.get('agreement')}; {tps:.0f} training positions/s; drafter written to {args.out}")
        return 0
    except (ValueError, OSError, RuntimeError) as err:
        print(f"slimspec-train: error: {err}".splitlines()[0], file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
