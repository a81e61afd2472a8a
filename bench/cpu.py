"""Is SlimSpec faster than plain generate on *this* CPU? Per category of the balanced held-out set, one process.

    slimspec-bench cpu [--drafter FOLDER] [--per-category 8] [--max-new-tokens 64] [--out reports/cpu]
                       [--hybrid TOKENS,NGRAM[,MIN_NGRAM]] [--also-hybrid TOKENS,NGRAM[,MIN_NGRAM] ...]
                       [--reference-report REPORT.json ...] [--sample]

1. The machine: CPU model, ``torch.backends.cpu.get_cpu_capability()``, whether bf16 matmuls are native.
2. The fastest plain setup here: the target in bf16 and fp32, as loaded and with its linears packed for oneDNN,
   one plain decoding pass timed for each (``slimspec.machine.fastest_setup``, the same measurement the demo and
   ``drafter.calibrate`` make); the fastest of the four is the baseline and the target every method below uses.
3. Per category, methods back to back on each prompt (``slimspec.runner``): plain, prompt lookup, the
   drafter with its own settings (the "cost" schedule chooses the draft length from this machine's measured costs,
   down to plain decoding when nothing pays), and the hybrid (the same drafter with prompt lookup in its generator:
   a lookup block when the context has an n-gram match, else the drafter's; the drafter's own lookup setting, or
   ``--hybrid``; ``--also-hybrid`` runs more settings in the same interleaving, for choosing one). Greedy, batch 1.
4. The report: tokens/s, speedup over the fastest plain and over prompt lookup, tau, outputs identical to plain,
   the draft lengths chosen, and this CPU class's targets (native bf16: >= 1.3x overall and > 1.0x in every
   category; otherwise >= 1.0x overall and >= 0.97x in every category; the shipped default, the hybrid, also
   >= 1.0x plain in every category and never below the drafter's chain); for the hybrid: tokens/s, tau, the share
   of accepted drafts from each source, and its targets (>= 1.1x the better of prompt lookup and SlimSpec overall,
   >= 0.97x of it in every category). Writes ``<out>/<class>.md`` and ``.json``.
5. With ``--reference-report`` (written by ``slimspec-train reference``; repeatable, e.g. an equal-steps and an
   equal-time report): its drafters, trained with the same data and budget, run in the same interleaving at a fixed
   draft length (``--members-k``, 5) alone, and the report adds, per report, their tau and tokens/s per category and
   the head targets: tau(d/8) >= 0.97x tau(dense), tokens/s(d/8) >= 1.05x tokens/s(truncated-32k) (roles found
   from the heads). A drafter in two reports (the same folder) runs once.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from slimspec.runner import Method, Tally, lookup_setting, run_methods
from slimspec.shipped import shipped_or_exit

from .e2e import load_drafters
from .perf_model import infer_roles

TARGETS = {True: dict(overall=1.3, category=1.0, strict=True), False: dict(overall=1.0, category=0.97, strict=False)}
# Sampling (``--sample``): SlimSpec alone and the shipped default (the hybrid) against the fastest plain sampling
SAMPLE_TARGETS = {True: dict(overall=1.2, category=0.97, strict=False),
                  False: dict(overall=0.97, category=0.97, strict=False)}
SAMPLING = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)  # the target's own distribution, same seeds
HYBRID_TARGETS = dict(overall=1.1, category=0.97)  # against the better of prompt lookup and SlimSpec alone
METHODS = ("plain", "lookup", "slimspec", "hybrid")  # run_categories' own, with "hybrid T,N,M" for --also-hybrid;
HYBRID_PREFIX = "hybrid "  # its other tallies are reference drafters
# Same data and budget: (label, role, baseline role, measure, threshold)
MEMBER_TARGETS = [("tau(d/8) >= 0.97x tau(dense)", "subject", "dense", "tau", 0.97),
                  ("tokens/s(d/8) >= 1.05x tokens/s(truncated-32k)", "subject", "truncated", "tokens_per_s", 1.05)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="gemma3-270m", help="embedded name or model folder (default gemma3-270m)")
    p.add_argument("--drafter", default=None, help="SlimSpec drafter folder (default: the shipped one)")
    p.add_argument("--per-category", type=int, default=8, help="held-out prompts per category")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--lookup-tokens", type=int, default=10, help="prompt lookup's num tokens (alone)")
    p.add_argument("--hybrid", type=lookup_setting, default=None, metavar="TOKENS,NGRAM[,MIN_NGRAM]",
                   help="the hybrid's prompt lookup (default: the drafter's own generation_config setting)")
    p.add_argument("--also-hybrid", type=lookup_setting, action="append", default=[],
                   metavar="TOKENS,NGRAM[,MIN_NGRAM]", help="another hybrid setting to run beside it (repeatable)")
    p.add_argument("--reference-report", action="append", default=[], metavar="REPORT.json",
                   help="also run the drafters of this report (same data and budget) alone at --members-k "
                        "(repeatable)")
    p.add_argument("--members-k", type=int, default=5, help="the reference drafters' draft length")
    p.add_argument("--sample", action="store_true", help="sample (temperature 1, top-k 0, top-p 1; the same seed for "
                                                         "every method on a prompt) instead of greedy")
    p.add_argument("--out", default="reports/cpu")


def plain_configs(target_name: str) -> dict:
    """{"bf16" | "fp32": (target, tokenizer)}: the target in both dtypes."""
    from slimspec.targets import load_target

    return {name: load_target(target_name, dtype=dtype) for name, dtype in (("bf16", torch.bfloat16),
                                                                             ("fp32", torch.float32))}


def fastest_sampling(targets: dict, tokens: int = 16, rounds: int = 2) -> tuple:
    """The fastest plain *sampling* setup among ``targets`` ({name: (target, tokenizer)}, each in its own faster
    packing): a plain decoding pass does not decide it, since drawing each token from the 262k-wide distribution
    (transformers' softmax and ``torch.multinomial``) costs far more in bf16 than in fp32 on some CPUs. ``tokens``
    sampled tokens per setup, the setups in turn ``rounds`` times, the fastest round kept -> (best name, {name: ms
    per sampled token})."""
    import time

    from slimspec.runner import encode

    ms = {}
    for _ in range(rounds):
        for name, (target, tokenizer) in targets.items():
            torch.manual_seed(0)
            t0 = time.perf_counter()
            target.generate(**encode(tokenizer, "The weather today"), **SAMPLING, max_new_tokens=tokens,
                            min_new_tokens=tokens)
            ms[name] = min(ms.get(name, float("inf")), (time.perf_counter() - t0) / tokens * 1e3)
    return min(ms, key=ms.get), ms


def fastest_plain(targets: dict, sample: bool) -> tuple:
    """``slimspec.machine.fastest_setup`` (each target left in its faster packing), and when ``sample`` the fastest
    setup timed sampling instead (``fastest_sampling``) -> (best name, {setup: ms}, with the sampled ms per token)."""
    from slimspec.machine import fastest_setup

    best, passes = fastest_setup(targets)
    if sample:
        best, sampled = fastest_sampling(targets)
        passes.update({f"{name}, per sampled token": ms for name, ms in sampled.items()})
    return best, passes


def drafter_lookup_setting(drafter) -> tuple:
    """The drafter's own hybrid setting (tokens, max n-gram, min n-gram), as its generator reads it."""
    from generation_slimspec import hybrid_setting

    setting = hybrid_setting(drafter.generation_config)
    if not setting[0]:
        raise SystemExit("the drafter has prompt lookup off (no prompt_lookup_num_tokens in its generation_config); "
                         "pass --hybrid TOKENS,NGRAM[,MIN_NGRAM] to measure a hybrid setting")
    return setting


def run_categories(target, tokenizer, drafter, per_category: int, max_new_tokens: int, lookup_tokens: int,
                   hybrid: tuple, members: dict | None = None, members_k: int = 5, also_hybrid=(),
                   sample: bool = False) -> dict:
    """{category: {method: Tally}} over the held-out set, plain first on each prompt; ``hybrid`` = (tokens, max
    n-gram, min n-gram), and each of ``also_hybrid`` as "hybrid T,N,M"; ``members`` ({name: drafter}) run alone at
    ``members_k`` drafts per pass, under their own names. ``sample``: ``SAMPLING``, with seed i before every
    method's call on prompt i."""
    from slimspec.heldout import CATEGORIES, HELD_OUT

    methods = [Method("plain", "plain"), Method("lookup", "lookup", lookup_tokens),
               Method("slimspec", "drafter", drafter=drafter),
               Method("hybrid", "hybrid", hybrid[0], drafter=drafter, ngram=hybrid[1], min_ngram=hybrid[2])]
    methods += [Method(HYBRID_PREFIX + ",".join(map(str, h)), "hybrid", h[0], drafter=drafter, ngram=h[1],
                       min_ngram=h[2]) for h in also_hybrid]
    methods += [Method(name, "drafter", members_k, drafter=d) for name, d in (members or {}).items()]
    gen = dict(SAMPLING if sample else dict(do_sample=False), max_new_tokens=max_new_tokens)
    return {c: run_methods(target, tokenizer, methods, HELD_OUT[c][:per_category], gen, desc=c, progress=True,
                           warmup=i == 0, seed=0 if sample else None) for i, c in enumerate(CATEGORIES)}


def summarize(results: dict) -> dict:
    """Per category and overall: tokens/s per method, speedups (ratios of tokens/s: sampled texts differ in
    length), tau, identical outputs, chosen draft lengths, and
    the hybrid's tokens/s, tau, ratio to the better of prompt lookup and SlimSpec, and accepted drafts by source."""
    rows = {}
    for c, t in [*results.items(), ("all", _totals(results))]:
        stats = t["slimspec"].merged_stats()
        rows[c] = dict(plain=t["plain"].tokens_per_s, lookup=t["lookup"].tokens_per_s,
                       slimspec=t["slimspec"].tokens_per_s,
                       speedup=t["slimspec"].tokens_per_s / t["plain"].tokens_per_s,
                       vs_lookup=t["slimspec"].tokens_per_s / t["lookup"].tokens_per_s, tau=stats.tau,
                       identical=f"{t['slimspec'].identical}/{t['slimspec'].prompts}",
                       chosen_k=dict(sorted(Counter(stats.chosen_draft_lengths).items())), **_hybrid_row(t),
                       members={name: dict(tau=t[name].merged_stats().tau, tokens_per_s=t[name].tokens_per_s,
                                           identical=f"{t[name].identical}/{t[name].prompts}")
                                for name in t if name not in METHODS and not name.startswith(HYBRID_PREFIX)})
    return rows


def _hybrid_row(tallies: dict) -> dict:
    """The hybrid's columns of one row: tokens/s, tau, tokens/s over the better of prompt lookup and SlimSpec,
    the same ratio on the prompts where both wrote the same text (``same_text_ratio``), the share of its accepted
    drafts from prompt lookup and from the drafter, identical outputs; and the --also-hybrid settings' tokens/s,
    tau and ratio to the same better method."""
    hybrid = tallies["hybrid"]
    stats = hybrid.merged_stats()
    share = stats.accepted_share()
    better = max(("lookup", "slimspec"), key=lambda name: tallies[name].tokens_per_s)
    ratio, same = same_text_ratio(hybrid, tallies[better])
    return dict(hybrid=hybrid.tokens_per_s, hybrid_tau=stats.tau,
                hybrid_vs_plain=hybrid.tokens_per_s / tallies["plain"].tokens_per_s,
                hybrid_vs_slimspec=hybrid.tokens_per_s / tallies["slimspec"].tokens_per_s,
                hybrid_vs_best=hybrid.tokens_per_s / tallies[better].tokens_per_s, better=better,
                hybrid_vs_best_same_text=ratio, same_text=f"{same}/{hybrid.prompts}",
                lookup_share=share.get("lookup", 0.0), drafter_share=share.get("drafter", 0.0),
                hybrid_identical=f"{hybrid.identical}/{hybrid.prompts}",
                other_hybrids={name[len(HYBRID_PREFIX):]: dict(
                    tokens_per_s=t.tokens_per_s, tau=t.merged_stats().tau,
                    vs_best=t.tokens_per_s / tallies[better].tokens_per_s)
                    for name, t in tallies.items() if name.startswith(HYBRID_PREFIX)})


def same_text_ratio(tally: Tally, other: Tally) -> tuple:
    """(other's seconds / tally's seconds over the prompts where both wrote the same tokens, how many such prompts):
    the speed ratio with the text held equal. bf16 near-ties make methods write different text now and then, and
    a different text is a different workload (e.g. less for prompt lookup to copy); nan where no prompt agrees."""
    pairs = [(a, b) for out, a, other_out, b in zip(tally.outputs, tally.prompt_seconds, other.outputs,
                                                    other.prompt_seconds) if torch.equal(out, other_out)]
    if not pairs:
        return float("nan"), 0
    return sum(b for _, b in pairs) / sum(a for a, _ in pairs), len(pairs)


def _totals(results: dict) -> dict:
    """{method: the categories' tallies added up}."""
    names = next(iter(results.values()))
    return {name: sum((tallies[name] for tallies in results.values()), Tally()) for name in names}


def verdict(rows: dict, native_bf16: bool, sample: bool = False, key: str = "speedup", who: str = "") -> list:
    """This class's targets on ``key`` (SlimSpec's speedup; "hybrid_vs_plain": the shipped default's) over the
    fastest plain generate, greedy (``TARGETS``) or sampling (``SAMPLE_TARGETS``)."""
    goal = (SAMPLE_TARGETS if sample else TARGETS)[native_bf16]
    cats = [r[key] for c, r in rows.items() if c != "all"]
    per_cat = all(s > goal["category"] for s in cats) if goal["strict"] else all(s >= goal["category"] for s in cats)
    op = ">" if goal["strict"] else ">="
    return [f"{who}overall {rows['all'][key]:.2f}x >= {goal['overall']}x: "
            f"{'met' if rows['all'][key] >= goal['overall'] else 'missed'}",
            f"{who}every category {op} {goal['category']}x (lowest {min(cats):.2f}x): {'met' if per_cat else 'missed'}"]


def default_verdict(rows: dict, native_bf16: bool, sample: bool = False) -> list:
    """The shipped default (the hybrid) against plain decoding (this class's targets, and >= 1.0x in every
    category greedy) and against the drafter's chain alone (never below it, overall and per category)."""
    lines = verdict(rows, native_bf16, sample, key="hybrid_vs_plain", who="shipped default (hybrid) ")
    if not sample:
        lowest = min(r["hybrid_vs_plain"] for c, r in rows.items() if c != "all")
        lines.append(f"shipped default >= 1.0x plain in every category (lowest {lowest:.2f}x): "
                     f"{'met' if lowest >= 1.0 else 'missed'}")
    chain, overall = [r["hybrid_vs_slimspec"] for c, r in rows.items() if c != "all"], rows["all"]["hybrid_vs_slimspec"]
    verdict_text = ("sampled texts differ between methods, so this is no verdict" if sample else
                    f"never below: {'met' if overall >= 1.0 and min(chain) >= 1.0 else 'missed'}")
    lines.append(f"shipped default against the drafter's chain alone: overall {overall:.2f}x, lowest category "
                 f"{min(chain):.2f}x ({verdict_text})")
    return lines


def hybrid_verdict(rows: dict) -> list:
    """The hybrid's targets: overall >= 1.1x, and in every category >= 0.97x, the better of lookup and SlimSpec."""
    goal = HYBRID_TARGETS
    overall = rows["all"]["hybrid_vs_best"]
    lowest = min(r["hybrid_vs_best"] for c, r in rows.items() if c != "all")
    return [f"hybrid overall {overall:.2f}x the better of lookup and SlimSpec >= {goal['overall']}x: "
            f"{'met' if overall >= goal['overall'] else 'missed'}",
            f"hybrid in every category >= {goal['category']}x the better (lowest {lowest:.2f}x): "
            f"{'met' if lowest >= goal['category'] else 'missed'}"]


def member_verdict(rows: dict, roles: dict) -> list:
    """The head targets on the reference drafters' overall row (a target whose drafters are absent is skipped)."""
    members, out = rows["all"]["members"], []
    for label, role, base, measure, threshold in MEMBER_TARGETS:
        if role in roles and base in roles:
            ratio = members[roles[role]][measure] / members[roles[base]][measure]
            out.append(f"{label}: {ratio:.3f}x, {'met' if ratio >= threshold else 'missed'}")
    return out


def reference_members(reports: list) -> tuple:
    """Several ``slimspec-train reference`` reports -> ({label: folder}, [(report, [label, ...])]): each report's
    drafters under their names, or with their steps ("truncated-32k@580") when there are several reports; a
    drafter in two reports (the same folder) runs once."""
    folders, sections = {}, []
    for path in reports:
        report = json.loads(Path(path).read_text())
        labels = []
        for name, m in report["members"].items():
            label = name if len(reports) == 1 else f"{name}@{m.get('steps', report['recipe']['max_steps'])}"
            if folders.setdefault(label, m["folder"]) != m["folder"]:
                raise SystemExit(f"--reference-report: two different drafters are {label} ({folders[label]}, "
                                 f"{m['folder']}); benchmark those reports separately")
            labels.append(label)
        sections.append((path, labels))
    return folders, sections


def member_table(rows: dict, roles: dict, report: str, k: int, names: list | None = None) -> list:
    """The report's section on one reference report's drafters (``names``; default all run): tau and tokens/s per
    category, and the head targets."""
    names = list(rows["all"]["members"]) if names is None else names
    if not names:
        return []
    lines = ["", f"Reference drafters trained with the same data and budget (`{report}`), alone, K = {k}:", "",
             "| category | " + " | ".join(f"{n} tau | {n} tok/s" for n in names) + " |",
             "|---|" + "---|---|" * len(names)]
    for c, r in rows.items():
        cells = " | ".join(f"{r['members'][n]['tau']:.2f} | {r['members'][n]['tokens_per_s']:.1f}" for n in names)
        lines.append(f"| {'**all**' if c == 'all' else c} | {cells} |")
    return lines + ["", "Head targets (same data and budget):"] + [f"- {v}" for v in member_verdict(rows, roles)]


def format_report(machine: str, native_bf16: bool, setup: str, passes: dict, rows: dict, args,
                  sections: list = ()) -> str:
    """``sections``: [(reference report, [its drafters' labels], their roles)], one member table each."""
    plain = ", ".join(f"{name} {ms:.1f}" for name, ms in passes.items())
    sample = getattr(args, "sample", False)
    mode = ("sampling (temperature 1, top-k 0, top-p 1; seed i for every method on prompt i, so \"identical\" only "
            "counts the texts that happened to agree)" if sample else "greedy")
    lines = ["# SlimSpec against plain generate on this CPU" + (", sampling" if sample else ""), "",
             f"Machine: {machine}.", "",
             f"Fastest plain setup (ms per plain decoding pass, 64 tokens cached"
             f"{'; and per token of a plain sampling call' if sample else ''}): {plain} -> **{setup}**, the "
             f"target every method below uses.", "",
             f"`slimspec-bench cpu --per-category {args.per_category} --max-new-tokens {args.max_new_tokens}"
             f"{' --sample' if sample else ''}`, "
             f"drafter `{args.drafter}` with its own settings (cost schedule), prompt lookup "
             f"{args.lookup_tokens} tokens alone, the hybrid's lookup blocks of up to {args.hybrid[0]} tokens after "
             f"n-gram matches of {args.hybrid[2]} to {args.hybrid[1]} tokens; balanced held-out set, {mode}, "
             f"batch 1.", "",
             "| category | plain tok/s | prompt lookup | SlimSpec | speedup | vs lookup | tau | identical | K chosen |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c, r in rows.items():
        name = f"**{c}**" if c == "all" else c
        lines.append(f"| {name} | {r['plain']:.1f} | {r['lookup']:.1f} | {r['slimspec']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['vs_lookup']:.2f}x | {r['tau']:.2f} | {r['identical']} | {r['chosen_k']} |")
    lines += ["", f"Targets for this class ({'native' if native_bf16 else 'no native'} bf16 matmuls"
                  f"{', sampling' if sample else ''}):"]
    lines += [f"- {v}" for v in verdict(rows, native_bf16, sample) + default_verdict(rows, native_bf16, sample)]
    members = [line for report, labels, roles in sections
               for line in member_table(rows, roles, report, args.members_k, labels)]
    return "\n".join(lines + hybrid_table(rows, args.hybrid) + members) + "\n"


def hybrid_table(rows: dict, setting: tuple) -> list:
    """The report's hybrid section (``setting``: its (tokens, max n-gram, min n-gram)): per category tokens/s, tau,
    ratio to the better method alone, sources; then the other settings run beside it, if any."""
    lines = ["", "Hybrid (prompt lookup + SlimSpec in one generator; accepted drafts by source). \"Same text\": the "
             "ratio to the better method on the prompts where the hybrid wrote the same tokens as it (bf16 near-ties "
             "change the text now and then, and with it the work), and how many prompts those are:", "",
             "| category | hybrid tok/s | vs better of lookup, SlimSpec | better | same text | tau | from lookup | "
             "from drafter | identical |", "|---|---|---|---|---|---|---|---|---|"]
    for c, r in rows.items():
        name = f"**{c}**" if c == "all" else c
        lines.append(f"| {name} | {r['hybrid']:.1f} | {r['hybrid_vs_best']:.2f}x | {r['better']} | "
                     f"{r['hybrid_vs_best_same_text']:.2f}x ({r['same_text']}) | {r['hybrid_tau']:.2f} | "
                     f"{r['lookup_share']:.0%} | {r['drafter_share']:.0%} | {r['hybrid_identical']} |")
    lines += ["", "Hybrid targets:"] + [f"- {v}" for v in hybrid_verdict(rows)]
    others = list(rows["all"]["other_hybrids"])
    if others:
        setting = ",".join(map(str, setting))
        lines += ["", f"Other hybrid settings in the same interleaving (TOKENS,NGRAM,MIN_NGRAM; the one above: "
                      f"{setting}), tokens/s and against the better of lookup and SlimSpec:", "",
                  "| category | hybrid " + setting + " | " + " | ".join(f"hybrid {o}" for o in others) + " |",
                  "|---|---|" + "---|" * len(others)]
        for c, r in rows.items():
            cells = " | ".join(f"{h['tokens_per_s']:.1f} ({h['vs_best']:.2f}x)"
                               for h in (r["other_hybrids"][o] for o in others))
            lines.append(f"| {'**all**' if c == 'all' else c} | {r['hybrid']:.1f} ({r['hybrid_vs_best']:.2f}x) | "
                         f"{cells} |")
    return lines


def main(args) -> int:
    from transformers import AutoModel

    from slimspec.machine import describe_line, native_bf16_matmuls

    args.drafter = args.drafter or str(shipped_or_exit(args.target, "slimspec-bench"))
    machine, native = describe_line(), native_bf16_matmuls()
    print(f"machine: {machine}", flush=True)
    targets = plain_configs(args.target)
    best, passes = fastest_plain(targets, args.sample)
    target, tokenizer = targets.pop(best)
    targets.clear()
    drafter = AutoModel.from_pretrained(args.drafter, trust_remote_code=True, dtype=target.dtype).eval()
    calibration = drafter.attach(target).calibrate(target, prepare=False)
    drafter.detach()  # the runner attaches it per call; the calibration stays with the drafter for this target
    setup = f"{best}, {'packed' if calibration.packed else 'as loaded'}"
    print(f"fastest plain setup: {setup} ({', '.join(f'{k}: {v:.1f}' for k, v in passes.items())} ms)", flush=True)
    args.hybrid = args.hybrid or drafter_lookup_setting(drafter)
    folders, reports = reference_members(args.reference_report)
    members = load_drafters(folders, target.dtype)
    sections = [(report, labels, infer_roles({n: members[n] for n in labels})) for report, labels in reports]
    results = run_categories(target, tokenizer, drafter, args.per_category, args.max_new_tokens, args.lookup_tokens,
                             args.hybrid, members, args.members_k, args.also_hybrid, sample=args.sample)
    rows = summarize(results)
    report = format_report(machine, native, setup, passes, rows, args, sections)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / (("native-bf16" if native else "no-native-bf16") + ("-sample" if args.sample else ""))
    stem.with_suffix(".md").write_text(report)
    stem.with_suffix(".json").write_text(json.dumps(dict(machine=machine, native_bf16=native, fastest_plain=setup,
                                                         sample=args.sample,
                                                         plain_pass_ms=passes,
                                                         rows=rows, hybrid=list(args.hybrid),
                                                         references=[dict(report=r, drafters=n, roles=roles)
                                                                     for r, n, roles in sections]), indent=2))
    print(report)
    return 0
