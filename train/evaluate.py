"""Drafter quality as speculative decoding sees it: tau and per-position acceptance with the adapter.

    tau = tokens per verification pass (accepted drafts + the target's bonus token; EAGLE's acceptance length)
    acceptance[i] = P(draft i+1 accepted | drafts 1..i accepted)

Measured with ``target.generate(..., assistant_model=drafter)``, greedy, K drafts per pass, on held-out prompts
(``slimspec.heldout``: the balanced set, categories interleaved, never used for training data).
"""

from __future__ import annotations

from slimspec.runner import Method, attached, run_methods


def evaluate_drafter(target, tokenizer, drafter, *, prompts: int | list = 16, num_assistant_tokens: int = 5,
                     max_new_tokens: int = 64, progress: bool = True) -> dict:
    """Greedy assisted generation on held-out prompts -> dict(tau, per_position_acceptance, passes, new_tokens).

    The drafter is attached to ``target`` for the call and detached afterwards; its draft length is restored."""
    from slimspec.heldout import held_out_prompts

    prompts = [p for _, p in held_out_prompts()[:prompts]] if isinstance(prompts, int) else prompts
    method = Method("drafter", "drafter", num_assistant_tokens, drafter.eval())
    with attached(drafter, target):
        tally = run_methods(target, tokenizer, [method], prompts, dict(do_sample=False, max_new_tokens=max_new_tokens),
                            warmup=False, desc=f"tau (K={num_assistant_tokens})", progress=progress)["drafter"]
    s = tally.merged_stats()
    return dict(tau=s.tau, per_position_acceptance=s.per_position_acceptance(), passes=s.target_passes,
                new_tokens=s.new_tokens, prompts=len(prompts), num_assistant_tokens=num_assistant_tokens,
                max_new_tokens=max_new_tokens, stats=s)


# How both held-out sets are measured (with an fp32 target): the independent set's protocol.
HELD_OUT_PROTOCOL = dict(num_assistant_tokens=5, max_new_tokens=48)


def evaluate_held_out(target, tokenizer, drafter, *, sets=("a", "b"), per_category: int | None = None,
                      num_assistant_tokens: int = HELD_OUT_PROTOCOL["num_assistant_tokens"],
                      max_new_tokens: int = HELD_OUT_PROTOCOL["max_new_tokens"], progress: bool = True,
                      found_rest: int = 0) -> dict:
    """tau per category on each held-out set (``slimspec.heldout.HELD_OUT_SETS``), the drafter alone (prompt lookup
    off) at a constant K -> {set: {category: {"tau", "prompts"}, "all": {...}}, "mean": mean of the sets' tau}.
    ``found_rest``: also "found-rest": {"tau", "prompts", "acceptance"} on that many openings per found genre that no
    recipe trains on (``slimspec.found.found_rest_prompts``: real text; not part of the mean)."""
    from slimspec.heldout import CATEGORIES, HELD_OUT_SETS

    out = {}
    for name in sets:
        rows, runs = {}, []
        for category in CATEGORIES:
            prompts = HELD_OUT_SETS[name][category][:per_category]
            r = evaluate_drafter(target, tokenizer, drafter, prompts=prompts, num_assistant_tokens=num_assistant_tokens,
                                 max_new_tokens=max_new_tokens, progress=progress)
            rows[category] = dict(tau=r["tau"], prompts=len(prompts))
            runs.append(r["stats"])
        merged = type(runs[0]).merge(runs)
        rows["all"] = dict(tau=merged.tau, prompts=sum(r["prompts"] for r in rows.values()),
                           acceptance=merged.per_position_acceptance())
        out[name] = rows
    out["mean"] = sum(out[name]["all"]["tau"] for name in sets) / len(sets)
    if found_rest:
        from slimspec.found import found_rest_prompts

        r = evaluate_drafter(target, tokenizer, drafter, prompts=found_rest_prompts(found_rest),
                             num_assistant_tokens=num_assistant_tokens, max_new_tokens=max_new_tokens,
                             progress=progress)
        out["found-rest"] = dict(tau=r["tau"], prompts=r["prompts"], acceptance=r["per_position_acceptance"])
    return out


CONFIDENCE_BINS = ((0.0, 0.5), (0.5, 0.9), (0.9, 1.01))  # the target's p of its own greedy token


def first_drafts(target, drafter, ids):
    """Teacher-forced along ``ids`` [1, T]: one target forward, then at every position t <= T - 3 the drafter's first
    draft (the target's features up to t, token t + 1; what an accepted pass leaves it) -> (the target's output,
    drafted target ids [T - 2]: entry t proposes token t + 2)."""
    import torch

    from .ttt import ttt_unroll

    with torch.no_grad():
        out = target(input_ids=ids, output_hidden_states=True)
        feats = torch.cat([out.hidden_states[i] for i in drafter.config.target_layer_ids], dim=-1)
        with attached(drafter, target):  # a drafter sharing the target's embeddings reads them
            g = ttt_unroll(drafter, ids, feats[:, :-1].to(drafter.dtype), 1)[0][0]  # [T - 1, d]
        return out, drafter.draft_to_target_ids(drafter.head(g[:-1]).argmax(-1))


def target_confidence(target, tokenizer, prompts: list, *, max_new_tokens: int = HELD_OUT_PROTOCOL["max_new_tokens"],
                      drafter=None, progress: bool = True) -> dict:
    """How sure the target is of its own greedy tokens on ``prompts``: plain greedy ``generate``, and at each new
    position p = the target's softmax probability of the token it chose -> dict(positions, mean_p, p_half: share of
    positions with p >= 0.5, p_90: share with p >= 0.9). A small drafter accepts less where the target itself is
    unsure (its choice then turns on small differences in its logits), so this tells text that is hard for the
    target from a drafter that generalizes badly.

    With ``drafter``, also "bins": per ``CONFIDENCE_BINS`` range of p, its share of the positions ("share") and how
    often the drafter's first draft there is the target's greedy token ("drafter"; teacher-forced on the target's
    features of the text so far, as after an accepted pass; the first new token has no draft). Comparing sets at the
    same p tells contexts the drafter reads badly from text where the target is unsure."""
    import torch
    from tqdm.auto import tqdm

    chosen, rows = [], []
    for prompt in tqdm(prompts, desc="target confidence", unit="prompt", disable=not progress):
        enc = tokenizer(prompt, return_tensors="pt").to(target.device)
        out = target.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, output_scores=True,
                              return_dict_in_generate=True)
        p = torch.stack([torch.softmax(s[0].float(), dim=-1).max() for s in out.scores])
        chosen += p.tolist()
        if drafter is None:
            continue
        P = enc["input_ids"].shape[1]
        new = out.sequences[0, P:]  # new[i] is token P + i, proposed by the first draft at P + i - 2
        drafted = first_drafts(target, drafter, out.sequences)[1][P - 1 :]  # for new[1:]
        rows.append(torch.cat([torch.tensor([float("nan")]), (drafted == new[1:]).float().cpu()]))
    p = torch.tensor(chosen)
    result = dict(positions=len(chosen), mean_p=float(p.mean()), p_half=float((p >= 0.5).float().mean()),
                  p_90=float((p >= 0.9).float().mean()))
    if rows:
        result["bins"] = agreement_bins(p, torch.cat(rows))
    return result


def agreement_bins(p, hits) -> dict:
    """Per ``CONFIDENCE_BINS`` range of the target's p [N]: the range's share of positions and the drafter's hit
    rate there (hits [N] 0/1, NaN where nothing was drafted; None for an empty range) -> {"low-high": {share,
    drafter}}."""
    bins = {}
    for low, high in CONFIDENCE_BINS:
        inside = (p >= low) & (p < high)
        counted = inside & ~hits.isnan()
        bins[f"{low:g}-{min(high, 1):g}"] = dict(share=float(inside.float().mean()),
                                                  drafter=float(hits[counted].mean()) if counted.any() else None)
    return bins


TEXT_WINDOW = 256  # measurements along a text (text_window) read its first this many tokens (the training window)


def text_window(tokenizer, text: str, window: int = TEXT_WINDOW):
    """The ids [1, T] that a measurement along a text reads: its bos first, then the text's tokens, T <= window."""
    import torch

    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return torch.tensor([bos + tokenizer(text, add_special_tokens=False)["input_ids"][: window - len(bos)]])


def text_agreement(target, tokenizer, drafter, texts: list, *, window: int = TEXT_WINDOW,
                   progress: bool = True) -> dict:
    """What training fits, measured on ``texts``: one target forward over the first ``window`` tokens of each text
    (its bos first), and at every position t the drafter's first draft (the target's features up to t, the text's
    token t + 1) against the target's top choice of token t + 2 there -> dict(positions, mean_p: the target's mean
    probability of its top choice, drafter: the share of hits, bins: ``agreement_bins``). On texts the drafter
    trained on against texts it never saw, it tells a drafter that fits real text but generalizes badly (hits far
    apart) from one that cannot fit it (both low)."""
    import torch
    from tqdm.auto import tqdm

    chosen, rows = [], []
    for text in tqdm(texts, desc="text agreement", unit="text", disable=not progress):
        ids = text_window(tokenizer, text, window)
        if ids.shape[1] < 3:
            continue
        out, drafted = first_drafts(target, drafter, ids.to(target.device))
        p, top = torch.softmax(out.logits[0].float(), dim=-1).max(-1)  # position t: its choice of token t + 1
        rows.append((drafted == top[1:-1]).float().cpu())
        chosen.append(p[1:-1].cpu())
    if not rows:
        raise ValueError(f"text_agreement: none of the {len(texts)} texts has 3 tokens or more; give longer texts")
    p, hits = torch.cat(chosen), torch.cat(rows)
    return dict(positions=len(p), mean_p=float(p.mean()), drafter=float(hits.mean()), bins=agreement_bins(p, hits))


def confidence_table(confidence: dict) -> str:
    """``{set name: target_confidence(...)}`` as a markdown table; with the drafter's "bins", a column per range of p:
    the drafter's first-draft agreement there (the range's share of positions in brackets)."""
    bins = next((list(c["bins"]) for c in confidence.values() if "bins" in c), [])
    lines = ["| set | positions | mean p of the chosen token | p >= 0.5 | p >= 0.9 |"
             + "".join(f" drafter at p {b} |" for b in bins), "|---|---|---|---|---|" + "---|" * len(bins)]
    for name, c in confidence.items():
        lines.append(f"| {name} | {c['positions']} | {c['mean_p']:.3f} | {c['p_half']:.0%} | {c['p_90']:.0%} |"
                     + _bin_cells(c.get("bins"), bins))
    return "\n".join(lines)


def _bin_cells(bins: dict | None, names: list) -> str:
    """Table cells of ``agreement_bins``: "hits (share)" per range, "-" where nothing was drafted."""
    cells = [f"{bins[b]['drafter']:.0%} ({bins[b]['share']:.0%})" if bins and bins[b]["drafter"] is not None else "-"
             for b in names]
    return "".join(f" {cell} |" for cell in cells)


def text_agreement_table(results: dict) -> str:
    """``{texts name: text_agreement(...)}`` as a markdown table: the drafter's hits overall and per range of p (the
    range's share of positions in brackets)."""
    bins = list(next(iter(results.values()))["bins"])
    lines = ["| texts | positions | mean p of the target's top choice | first draft = that choice |"
             + "".join(f" at p {b} |" for b in bins), "|---|---|---|---|" + "---|" * len(bins)]
    for name, r in results.items():
        lines.append(f"| {name} | {r['positions']} | {r['mean_p']:.3f} | {r['drafter']:.1%} |"
                     + _bin_cells(r["bins"], bins))
    return "\n".join(lines)


def held_out_table(result: dict, sets=("a", "b")) -> str:
    """The per-category tau of ``evaluate_held_out`` as a markdown table, one row per set."""
    from slimspec.heldout import CATEGORIES

    lines = ["| set | " + " | ".join(CATEGORIES) + " | all |", "|---|" + "---|" * (len(CATEGORIES) + 1)]
    for name in sets:
        rows = result[name]
        lines.append(f"| {name} | " + " | ".join(f"{rows[c]['tau']:.2f}" for c in CATEGORIES)
                     + f" | **{rows['all']['tau']:.2f}** |")
    text = "\n".join(lines) + f"\n\nmean of the sets: **{result['mean']:.2f}**"
    rest = result.get("found-rest")
    return text + (f"\n\nfound-rest (openings of real text no recipe trains on, {rest['prompts']} prompts): "
                   f"**{rest['tau']:.2f}**" if rest else "")


def held_out_curve(target, tokenizer, folder, *, start=None, per_category: int | None = None,
                   progress: bool = True) -> dict:
    """tau on both held-out sets against training CPU minutes for one training run: its learning-curve snapshots
    (``<folder>/snapshots/step_N``) and the final drafter, each measured with ``evaluate_held_out``; minutes are the
    run's own step seconds up to that step (``training.json``; a step over 3x the median counts 3x the median: the
    run was paused while another job measured). ``start`` (0 minutes; e.g. the shipped drafter a further stage
    continues): the drafter folder the run started from, measured here the same way, or its ``evaluate_held_out``
    result. Also what twice
    the budget predicts: tau linear in log2(minutes) through the last two points, one more doubling."""
    import json
    import math
    from pathlib import Path

    from modeling_slimspec import SlimSpecDrafter

    folder = Path(folder)
    history = json.loads((folder / "training.json").read_text())["history"]
    steps = sorted(int(p.name.split("_")[1]) for p in (folder / "snapshots").glob("step_*")) + [len(history)]
    pause = 3 * sorted(h["seconds"] for h in history)[len(history) // 2]  # a step longer held the run paused
    if start is not None and not isinstance(start, dict):
        start = evaluate_held_out(target, tokenizer, SlimSpecDrafter.from_pretrained(str(start), dtype=target.dtype)
                                  .eval(), per_category=per_category, progress=progress)
    points = [dict(steps=0, minutes=0.0, a=start["a"]["all"]["tau"], b=start["b"]["all"]["tau"], mean=start["mean"],
                   result=start)] if start else []
    for step in steps:
        where = folder if step == len(history) else folder / "snapshots" / f"step_{step}"
        drafter = SlimSpecDrafter.from_pretrained(str(where), dtype=target.dtype).eval()
        result = evaluate_held_out(target, tokenizer, drafter, per_category=per_category, progress=progress)
        minutes = sum(min(h["seconds"], pause) for h in history[:step]) / 60
        points.append(dict(steps=step, minutes=minutes, a=result["a"]["all"]["tau"], b=result["b"]["all"]["tau"],
                           mean=result["mean"], result=result))
    last, before = points[-1], points[-2] if len(points) > 1 else None
    predicted = None
    if before is not None and before["minutes"] > 0:
        slope = (last["mean"] - before["mean"]) / math.log2(last["minutes"] / before["minutes"])
        predicted = dict(minutes=2 * last["minutes"], mean=last["mean"] + slope, per_doubling=slope)
    return dict(points=points, twice_the_budget=predicted)


def data_curve(points: list) -> dict:
    """First-draft agreement along unseen real text against the distinct real text each drafter trained on.
    ``points``: dicts with name, series (what was trained, e.g. "head only, rank 80, lr 0.001"), texts, and unseen
    (``text_agreement``'s hit share on the held-out split). Per series with two text budgets or more: unseen
    agreement linear in log2(texts) by least squares, its gain per doubling of the text, and what twice the largest
    budget predicts -> dict(series={label: dict(points, per_doubling, at_one_text, twice_the_text,
    last_per_doubling)}): the fit is unseen = at_one_text + per_doubling * log2(texts); last_per_doubling is the
    gain between the two largest budgets alone (a curve that bends shows it there); None for a series of one."""
    import math

    series = {}
    for point in points:
        series.setdefault(point["series"], []).append(point)
    out = {}
    for label, members in series.items():
        members = sorted(members, key=lambda p: p["texts"])
        x = [math.log2(p["texts"]) for p in members]
        y = [p["unseen"] for p in members]
        slope = intercept = twice = last = None
        if len(set(x)) > 1:
            mx, my = sum(x) / len(x), sum(y) / len(y)
            slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)
            intercept = my - slope * mx
            top = 2 * members[-1]["texts"]
            twice = dict(texts=top, unseen=intercept + slope * math.log2(top))
            if x[-1] > x[-2]:
                last = (y[-1] - y[-2]) / (x[-1] - x[-2])
        out[label] = dict(points=members, per_doubling=slope, at_one_text=intercept, twice_the_text=twice,
                          last_per_doubling=last)
    return dict(series=out)
