"""``slimspec-train ship``: a trained drafter folder becomes the one that ships, in steps: evaluate it per category
on the held-out set, calibrate the "cost" schedule on this machine, set its drafting defaults, write a bf16 Hub
folder with its model card and evaluation, and swap it in only under the 5% rule (``replace_refusal``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from generation_slimspec import SlimSpecGenerateStats, choose_draft_length, expected_tokens
from modeling_slimspec import SlimSpecDrafter
from slimspec.convert.card import build_card
from slimspec.heldout import CATEGORIES, HELD_OUT
from slimspec.machine import describe_line, fast_dtype
from slimspec.targets import HUB_IDS

from .evaluate import HELD_OUT_PROTOCOL, evaluate_drafter, evaluate_held_out, held_out_table
from .recipe import build_command
from .reference import evaluation_target

SHIP_GAIN = 0.05  # a new build replaces the shipped drafter only when it raises held-out tau by at least this much


def shipped_evaluation(folder: Path) -> dict | None:
    """What ``ship`` measured when it wrote ``folder`` (its evaluation.json); None where there is none."""
    path = Path(folder) / "evaluation.json"
    return json.loads(path.read_text()) if path.exists() else None


def replace_refusal(out: Path, report: dict) -> str | None:
    """Why ``report``'s drafter must not replace the one shipped at ``out`` (None: it may): it must raise held-out
    tau by ``SHIP_GAIN`` on the same evaluation: the mean of the two held-out sets' tau (``report["held_out"]``)
    against the shipped drafter's, recorded in its evaluation.json or measured by ``ship`` now
    (``report["previous_held_out"]``); where neither has it, the first set's tau at the same longest draft and
    prompts per category."""
    previous = shipped_evaluation(out)
    if previous is None:
        return None
    before = (previous.get("held_out") or report.get("previous_held_out") or {}).get("mean")
    if report.get("held_out") and before is not None:
        after = report["held_out"]["mean"]
        if after < (1 + SHIP_GAIN) * before:
            return (f"held-out tau (the mean of sets a and b) {after:.3f} does not raise the shipped drafter's "
                    f"{before:.3f} by {SHIP_GAIN:.0%} (needs {(1 + SHIP_GAIN) * before:.3f}); {out} is left as it was")
        return None
    same = (previous.get("max_k"), previous.get("per_category_prompts")) == (report["max_k"],
                                                                            report["per_category_prompts"])
    if not same:
        return (f"{out} was evaluated differently (longest draft, prompts per category "
                f"{previous.get('max_k')}, {previous.get('per_category_prompts')} against {report['max_k']}, "
                f"{report['per_category_prompts']}); ship with the same settings or pass force")
    if report["tau"] < (1 + SHIP_GAIN) * previous["tau"]:
        return (f"tau {report['tau']:.3f} does not raise the shipped drafter's {previous['tau']:.3f} by "
                f"{SHIP_GAIN:.0%} (needs {(1 + SHIP_GAIN) * previous['tau']:.3f}); {out} is left as it was")
    return None


def held_out_tau(target_name: str, folders: dict, per_category: int | None, progress: bool) -> dict:
    """{name: ``evaluate_held_out`` result} for drafter folders, both held-out sets, ``HELD_OUT_PROTOCOL`` with an
    fp32 target (the protocol the independent set is measured with)."""
    target, tokenizer = evaluation_target(target_name, torch.float32)
    return {name: evaluate_held_out(target, tokenizer, SlimSpecDrafter.from_pretrained(str(folder),
                                                                                      dtype=torch.float32).eval(),
                                    per_category=per_category, progress=progress, **HELD_OUT_PROTOCOL)
            for name, folder in folders.items()}


def ship(source: Path, out: Path, *, target_name: str = "gemma3-270m", max_k: int = 6, per_category: int | None = None,
         max_new_tokens: int = 64, prompt_lookup: tuple | None = None, tree_scale_data: str | None = None,
         force: bool = False, progress: bool = True) -> dict:
    """Turn a trained drafter folder into the one that ships: evaluate it on the balanced held-out set (greedy,
    K = ``max_k``, per category), measure this machine's costs, let the "cost" schedule choose the draft length
    (the drafter's measured per-position acceptance is saved as its prior), and write a bf16 Hub folder with a
    model card stating data, budget, wall time and tau per category. ``prompt_lookup`` = (tokens, max n-gram[,
    min n-gram]) switches hybrid drafting on in the saved generation_config (measure it with
    ``slimspec-bench cpu``; the evaluation here is of the drafter alone). ``tree_scale_data`` (data folders the
    drafter never trained on) measures its ``tree_logit_scale`` (``train.tree_scale``) into the generation_config.
    Returns the measurements, with ``shipped``: whether ``out`` was written. An existing ``out`` is replaced only
    by a drafter whose tau is ``SHIP_GAIN`` higher than the one recorded there (``replace_refusal``), and a folder
    there that ``ship`` did not write only with ``force``."""
    if Path(out).exists() and shipped_evaluation(out) is None and not force:
        raise FileExistsError(f"{out} exists and was not written by ship (no evaluation.json): choose another out, "
                              f"or pass force to replace it")
    target, tokenizer = evaluation_target(target_name, fast_dtype())
    drafter = SlimSpecDrafter.from_pretrained(str(source), dtype=target.dtype).eval()
    results = {c: evaluate_drafter(target, tokenizer, drafter, prompts=HELD_OUT[c][:per_category],
                                   num_assistant_tokens=max_k, max_new_tokens=max_new_tokens, progress=progress)
               for c in CATEGORIES}
    overall = SlimSpecGenerateStats.merge(r["stats"] for r in results.values())
    acceptance = overall.conditional_acceptance()
    costs = drafter.attach(target).calibrate(target, max_k=max_k).costs  # the target in its faster setup here
    drafter.detach()
    sweep = {k: dict(tau=expected_tokens(acceptance, k),
                     predicted_tokens_per_s=expected_tokens(acceptance, k) / (costs.target_pass[k] + k * costs.draft))
             for k in range(2, max_k + 1)}
    chosen = choose_draft_length(costs, acceptance, max_k)
    drafter.config.target_name_or_path = HUB_IDS.get(target_name, drafter.config.target_name_or_path)
    config = drafter.generation_config
    config.num_assistant_tokens, config.num_assistant_tokens_schedule = max_k, "cost"
    config.slimspec_acceptance = [round(a, 4) for a in acceptance]
    if prompt_lookup:
        prompt_lookup = (*prompt_lookup, 1)[:3]  # (tokens, max n-gram, min n-gram)
        config.prompt_lookup_num_tokens = prompt_lookup[0]
        config.max_matching_ngram_size, config.min_matching_ngram_size = prompt_lookup[1:]
    tree_scale = None
    if tree_scale_data:
        from .tree_scale import measure_tree_scale

        tree_scale = measure_tree_scale(str(source), tree_scale_data, target=target_name, progress=progress)
        config.tree_logit_scale = tree_scale["tree_logit_scale"]
    training = json.loads((Path(source) / "training.json").read_text())
    report = dict(tree_scale=tree_scale, machine=describe_line(), tau=overall.tau,
                  prompt_lookup=list(prompt_lookup or []) or None,
                  acceptance=overall.per_position_acceptance(),
                  conditional_acceptance=acceptance, max_k=max_k, per_category_prompts=per_category,
                  per_category={c: dict(tau=r["tau"], acceptance=r["per_position_acceptance"], prompts=r["prompts"])
                                for c, r in results.items()},
                  costs=dict(target_pass=costs.target_pass, draft=costs.draft), chosen_draft_length=chosen,
                  plain_tokens_per_s=1 / costs.target_pass[0], sweep=sweep, source=str(source),
                  **training_budget(training), wall_minutes=(training.get("wall_seconds") or 0) / 60,
                  wall_from_step=training.get("wall_from_step", 0),
                  trained_on=training.get("machine", "this machine"), recipe=training.get("recipe", {}))
    report["stages"] = earlier_stages(report["recipe"].get("init_from")) + [stage_summary(report)]
    previous = shipped_evaluation(out)
    folders = {"held_out": source}
    if previous is not None and "held_out" not in previous and (Path(out) / "model.safetensors").exists():
        folders["previous_held_out"] = out  # the shipped drafter, measured the same way now
    report.update(held_out_tau(target_name, folders, per_category, progress))
    refusal = None if force else replace_refusal(out, report)
    if refusal:
        return dict(report, shipped=False, refusal=refusal)
    tmp = Path(out).with_name(f".{Path(out).name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    drafter.to(torch.bfloat16).save_pretrained(tmp)
    _ship_card(drafter, tmp, report)
    (tmp / "evaluation.json").write_text(json.dumps(report, indent=2, default=str))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return dict(report, shipped=True)


def stage_summary(report: dict) -> dict:
    """One build stage as the card and the learning curve against CPU time list it."""
    return {key: report.get(key) for key in ("steps", "trained_positions", "train_minutes", "tau", "data")}


def training_budget(training: dict) -> dict:
    """What a build's training.json says it read and spent: data, steps, trained positions, training-step minutes."""
    history = training.get("history", [])
    return dict(data=describe_data(training.get("data", "")), steps=len(history),
                trained_positions=sum(h["trained"] for h in history),
                train_minutes=sum(h["seconds"] for h in history) / 60)


def earlier_stages(init_from: str | None) -> list:
    """The stages a staged build continued from, oldest first, read from each earlier shipped folder's
    evaluation.json (its own "stages", or, for folders shipped before stages were recorded, its summary and its
    recipe's init_from); a stage that was built but never shipped (a training.json, no evaluation.json) counts
    with its budget and tau None. Empty for a build from scratch, and as far as the chain is on this machine."""
    if not init_from:
        return []
    earlier = shipped_evaluation(init_from)
    if earlier is None:  # built, never shipped
        path = Path(init_from) / "training.json"
        if not path.exists():
            return []
        training = json.loads(path.read_text())
        earlier = dict(training_budget(training), tau=None, recipe=training.get("recipe") or {})
    if earlier.get("stages"):
        return earlier["stages"]
    return earlier_stages(earlier.get("recipe", {}).get("init_from")) + [stage_summary(earlier)]


def data_metas(data: str) -> list:
    """Each folder of a training data argument (folders joined by commas) with its meta.json as a dict, or None where
    that is not on this machine: [(folder, meta | None)]."""
    pairs = []
    for folder in filter(None, data.split(",")):
        meta_path = Path(folder) / "meta.json"
        pairs.append((folder, json.loads(meta_path.read_text()) if meta_path.exists() else None))
    return pairs


def describe_data(data: str) -> str:
    """What a training data argument (folders joined by commas) holds, from each folder's meta.json: the kind,
    source and tokens (the folder path where its meta.json is not on this machine)."""
    parts = []
    for folder, meta in data_metas(data):
        if meta is None:
            parts.append(folder)
        elif meta.get("kind") == "text":
            parts.append(f"{meta['texts']} offline texts teacher-forced ({meta['source']}), {meta['tokens']:,} tokens")
        else:
            modes = tuple(meta.get("modes", [False, True] if meta.get("sampled") else [False]))
            mode = {(False,): "greedy", (True,): "sampled (T = 1)"}.get(modes, "greedy + sampled")
            parts.append(f"{meta['prompts']} train prompts self-distilled ({mode} responses of up to "
                         f"{meta['max_new_tokens']} tokens), {meta['tokens']:,} tokens with prompts")
    return "; ".join(parts)


def text_read(data: str) -> dict:
    """The distinct teacher-forced text a training data argument (folders joined by commas) holds: texts and
    tokens summed over its text folders' meta.json; self-distilled folders add nothing."""
    texts = tokens = 0
    for folder, meta in data_metas(data):
        if meta is None:
            raise ValueError(f"{folder}: no meta.json on this machine, so what text it holds is unknown; measure the "
                             "drafter where its data folders are")
        if meta.get("kind") == "text":
            texts, tokens = texts + meta["texts"], tokens + meta["tokens"]
    return dict(texts=texts, tokens=tokens)


def _card_source(report: dict) -> str:
    init_from = report["recipe"].get("init_from")
    if not init_from:
        return "trained from scratch (slimspec-train reference)"
    if len(report["stages"]) > 1:
        return f"stage {len(report['stages'])} of a staged build (slimspec-train reference, init_from)"
    return f"continued from {init_from} (slimspec-train reference)"


def _resumed(report: dict) -> str:
    """How much of a resumed build the wall time covers (the training-step minutes cover every step)."""
    start = report.get("wall_from_step") or 0
    return f" for steps {start + 1}-{report['steps']}, after resuming from a checkpoint" if start else ""


def composed_text(recipe_changes: dict) -> str:
    """"; composed prompts by genre: story 360, ..." where the recipe trained on composed prompts, else ""."""
    from slimspec.compose import SOURCES, composition

    from .recipe import SAMPLED, Recipe, data_prompts

    recipe = Recipe(**recipe_changes)
    names = set(recipe.prompts.replace(SAMPLED, "").replace(",", "+").split("+"))
    if not set(SOURCES) & names:
        return ""
    parts = recipe.parts()
    counts = composition([p for part in parts if part.response_modes() != [True] for p in data_prompts(part)])
    counts.pop("other", None)  # the built-in prompts (and found text, below)
    text = "; composed prompts by genre: " + ", ".join(f"{g} {n}" for g, n in sorted(counts.items(),
                                                                                      key=lambda x: -x[1]))
    if "found" in names:
        from slimspec.found import found_by_genre

        text += "; openings of found text by genre: " + ", ".join(f"{g} {len(ps)}" for g, ps in
                                                                    found_by_genre().items())
    sampled = sum(len(data_prompts(part)) for part in parts if part.response_modes() == [True])
    return text + (f"; a sampled response (T = 1) to {sampled:,} of them besides the greedy one" if sampled else "")


def _ship_card(drafter, folder: Path, report: dict) -> None:
    rows = ["| category | tau (K = %d) | acceptance per position |" % report["max_k"], "|---|---|---|"]
    for c, r in report["per_category"].items():
        rows.append(f"| {c} | {r['tau']:.2f} | {', '.join(f'{a:.2f}' for a in r['acceptance'])} |")
    rows.append(f"| **all** | **{report['tau']:.2f}** | {', '.join(f'{a:.2f}' for a in report['acceptance'])} |")
    sweep = ", ".join(f"K={k}: tau {v['tau']:.2f}, {v['predicted_tokens_per_s']:.1f} tokens/s"
                      for k, v in report["sweep"].items())
    quality = ("Greedy, held-out prompts written for this purpose and never trained on (6 categories), 64 new "
               f"tokens each, target in its fast dtype on {report['machine']}:\n\n" + "\n".join(rows) +
               f"\n\nDraft length by the cost model on that machine (plain decoding "
               f"{report['plain_tokens_per_s']:.1f} tokens/s): {sweep}; the \"cost\" schedule chose K = "
               f"{report['chosen_draft_length']} there and chooses again on each machine it runs on.")
    if report.get("held_out"):
        quality += ("\n\nHeld-out tau on both sets (set b written apart from set a, in another style; fp32 target, "
                    "the drafter alone, K = 5, 48 new tokens):\n\n" + held_out_table(report["held_out"]))
    if report.get("prompt_lookup"):
        tokens, ngram, min_ngram = report["prompt_lookup"]
        quality += (f"\n\nHybrid drafting is on (`generation_config.json`): where the last {min_ngram} to {ngram} "
                    f"tokens occurred earlier in the context, the next block is the up to {tokens} tokens that "
                    f"followed them (prompt lookup), else the drafter's own; the table above is the drafter alone.")
    if report.get("tree_scale"):
        scale = report["tree_scale"]
        quality += (f"\n\nTree drafting scores nodes with log softmax({scale['tree_logit_scale']} x logits) "
                    f"(`tree_logit_scale`, measured on {scale['rows']:,} drafting positions of text it never trained "
                    f"on: its first choice is the target's argmax {100 * scale['hit_rate'][0]:.0f}% of the time where "
                    f"it gives it {100 * scale['mean_q'][0]:.0f}%).")
    notes = [f"data: {report['data']}" + composed_text(report["recipe"]),
             f"budget: {report['steps']} steps, {report['trained_positions']:,} trained positions, "
             f"{report['train_minutes']:.1f} min of training steps ({report['wall_minutes']:.1f} min wall"
             f"{_resumed(report)}) on "
             f"{report['trained_on']}",
             f"built with `{build_command(report['recipe'])}`, shipped with `slimspec-train ship`"]
    if len(report["stages"]) > 1:  # a staged build: every stage's budget and what it reached
        stages = "; ".join(f"{i}: {st['steps']} steps, {st['train_minutes']:.1f} min, "
                           + (f"tau {st['tau']:.2f}" if st["tau"] is not None else "not shipped")
                           for i, st in enumerate(report["stages"], 1))
        total = sum(st["train_minutes"] for st in report["stages"])
        notes.append(f"stages (each continues the one before): {stages}; in all "
                     f"{sum(st['steps'] for st in report['stages'])} steps, "
                     f"{sum(st['trained_positions'] for st in report['stages']):,} trained positions, "
                     f"{total:.1f} min of training steps")
    card = build_card(config=drafter.config, info=dict(
        source=_card_source(report), source_format="slimspec-train",
        dense_head_params=drafter.config.head_vocab_size * drafter.config.hidden_size,
        head_params=sum(p.numel() for p in drafter.lm_head.parameters()),
        total_params=sum(p.numel() for p in drafter.parameters()), quality_text=quality, notes=notes,
        notes_title="How it was built", num_assistant_tokens=f"up to {report['max_k']} (\"cost\" schedule)"))
    card.save(folder / "README.md")
