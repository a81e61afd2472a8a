"""Running the end-to-end benchmark: every method per decoding mode, and the K sweep -> the numbers of results.json.

The prompt-by-prompt loop is ``slimspec.runner.run_methods``; the time split comes from ``bench.timers``.
"""

from __future__ import annotations

from slimspec.runner import Method, run_methods

from .timers import CallTimes, timed_generate

MODES = {
    "greedy": dict(do_sample=False),
    "sample": dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0),
}
SPLIT_PARTS = ("target_forward", "drafter_body", "drafter_head", "overhead")


def build_methods(drafters: dict, k: int, prompt_lookup: bool, hybrid=()) -> list:
    """Plain, prompt lookup with K (optional), every drafter with K, and the drafters named in ``hybrid`` as
    "<name>+lookup": prompt lookup of K tokens inside their generator, their own draft length otherwise."""
    methods = [Method("plain", "plain")]
    if prompt_lookup:
        methods.append(Method("prompt_lookup", "lookup", k))
    methods += [Method(name, "drafter", k, d) for name, d in drafters.items()]
    methods += [Method(f"{name}+lookup", "hybrid", k, drafters[name]) for name in hybrid]
    return methods


def _tau(method: Method, stats, new_tokens: int, passes: int) -> float:
    if stats is not None:
        return stats.tau  # SlimSpec convention: the prefill pass verifies nothing and is not counted
    if method.kind == "lookup":
        # Prompt lookup: new tokens / target forward passes. Its prefill is not a separate pass: transformers'
        # prompt-lookup generator drafts from the prompt's n-grams already at the first iteration, so the first
        # forward is prefill *and* verification, yielding accepted drafts + 1 like every later pass (checked:
        # first forward input = prompt + K). Subtracting it would count a never-accepting run as tau > 1.
        return new_tokens / passes
    return 1.0


def summarize(method: Method, t, plain_tps: float, greedy: bool) -> dict:
    """One method's ``Tally`` -> the numbers of results.json."""
    times = sum(t.timings, CallTimes())
    passes = max(times.target_calls, 1)
    s = t.merged_stats()
    split = dict(target_forward=times.target_seconds, drafter_body=times.body_seconds, drafter_head=times.head_seconds)
    split["overhead"] = t.seconds - sum(split.values())
    drafted = s.drafted_by_source().get("drafter", 0) if s is not None else None  # lookup drafts cost no drafter
    return dict(
        tokens_per_s=t.tokens_per_s,
        speedup_vs_plain=t.tokens_per_s / plain_tps,
        tau=_tau(method, s, t.new_tokens, passes),
        per_position_acceptance=s.per_position_acceptance() if s is not None else None,
        time_split_ms_per_pass={part: 1e3 * split[part] / passes for part in SPLIT_PARTS},
        identical_to_plain=f"{t.identical}/{t.prompts}" if greedy else None,
        flip_rate=(1.0 - t.identical / t.prompts) if greedy and t.prompts else None,
        passes=times.target_calls,
        new_tokens=t.new_tokens,
        seconds=t.seconds,
        draft_ms_per_token=1e3 * times.drafter_seconds / drafted if drafted else None,
        head_ms_per_drafted_token=1e3 * times.head_seconds / drafted if drafted else None,
        drafted_tokens=drafted,
        k=method.k,
        kind=method.kind,
        accepted_share=s.accepted_share() if s is not None else None,  # accepted drafts by source (hybrid)
    )


def run_mode(*, target, tokenizer, methods: list, prompts: list, mode: str, max_new_tokens: int, seed: int = 0,
             desc: str = "e2e", progress: bool = True) -> dict:
    """All ``methods`` (plain first) on all ``prompts`` in one mode -> {method name: summary}."""
    if methods[0].kind != "plain":
        raise ValueError("the first method must be plain (the reference for speedup and identity)")
    gen_kwargs = dict(MODES[mode], max_new_tokens=max_new_tokens)
    greedy = not gen_kwargs["do_sample"]
    tallies = run_methods(target, tokenizer, methods, prompts, gen_kwargs, seed=None if greedy else seed,
                          instrument=timed_generate, desc=desc, progress=progress)
    plain_tps = tallies[methods[0].name].tokens_per_s
    return {m.name: summarize(m, tallies[m.name], plain_tps, greedy) for m in methods}


def run_e2e(*, target, tokenizer, drafters: dict, prompts: list, dtype_name: str, modes=("greedy", "sample"),
            k: int = 5, max_new_tokens: int = 64, prompt_lookup: bool = True, seed: int = 0,
            progress: bool = True, hybrid=()) -> dict:
    """One dtype: {"<dtype>/<mode>": {"dtype", "mode", "methods": {name: summary}}} for every mode.

    ``drafters``: {name: SlimSpecDrafter} (unattached; already in the target's dtype); ``hybrid``: names of those
    also run hybrid (``build_methods``)."""
    runs = {}
    for mode in modes:
        key = f"{dtype_name}/{mode}"
        methods = build_methods(drafters, k, prompt_lookup, hybrid)
        runs[key] = dict(dtype=dtype_name, mode=mode, methods=run_mode(
            target=target, tokenizer=tokenizer, methods=methods, prompts=prompts, mode=mode,
            max_new_tokens=max_new_tokens, seed=seed, desc=f"e2e {key}", progress=progress))
    return runs


def run_k_sweep(*, target, tokenizer, drafters: dict, prompts: list, dtype_name: str, ks: list, max_new_tokens: int,
                prompt_lookup: bool = True, seed: int = 0, progress: bool = True) -> dict:
    """Greedy speedup and tau against K for ``drafters`` (and prompt lookup); plain runs once per prompt, first."""
    methods = [Method("plain", "plain")]
    for k in ks:
        if prompt_lookup:
            methods.append(Method(f"prompt_lookup@{k}", "lookup", k))
        methods += [Method(f"{name}@{k}", "drafter", k, d) for name, d in drafters.items()]
    summary = run_mode(target=target, tokenizer=tokenizer, methods=methods, prompts=prompts, mode="greedy",
                       max_new_tokens=max_new_tokens, seed=seed, desc="e2e K sweep", progress=progress)
    names = (["prompt_lookup"] if prompt_lookup else []) + list(drafters)
    out = dict(dtype=dtype_name, mode="greedy", prompts=len(prompts), ks=list(ks),
               plain_tokens_per_s=summary["plain"]["tokens_per_s"], methods={})
    for name in names:
        rows = [summary[f"{name}@{k}"] for k in ks]
        out["methods"][name] = {key: [r[key] for r in rows] for key in ("tokens_per_s", "speedup_vs_plain", "tau")}
    return out
