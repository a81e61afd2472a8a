"""The README's main job (``slimspec-demo``): the whole story on the embedded Gemma 3 270M.

1. take the SlimSpec d/8 reference drafter that ships with the project (``drafters/``), else the one in the cache,
   else, with ``--build`` only, build it (data + training; it says how long up front and shows progress; an
   interrupted build resumes); without one it says where to get it,
2. publish it to a local Hub-layout folder with its model card,
3. reload it the way a user would: ``AutoModel.from_pretrained(folder, trust_remote_code=True)``,
4. generate with ``target.generate(..., assistant_model=drafter)`` next to plain ``generate`` on held-out prompts,
   and prompt lookup, on one held-out prompt per category; print the output, tau, whether the output is identical
   to plain greedy, and the speedup over plain generate and over prompt lookup.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from slimspec import DRAFTER_FILES
from slimspec.runner import Method, encode, run_methods
from slimspec.shipped import shipped_drafter, where_to_get



def publish_local(folder: Path, out: Path, overwrite: bool = True) -> Path:
    """Copy a drafter's Hub files into ``out`` (a folder laid out exactly like a Hub repository)."""
    missing = [f for f in DRAFTER_FILES if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a complete drafter folder: missing {missing}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite or choose another --publish-dir")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in DRAFTER_FILES:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / name, tmp / name)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def build_or_load(target_name: str, build: bool = False, progress: bool = True) -> Path:
    """The shipped drafter, else the cached one, else (only with ``build``) a new build; FileNotFoundError saying
    where to get it otherwise: a build takes hours on a CPU and never starts unasked."""
    from slimspec.train.recipe import Recipe, data_responses_left, is_built, member_folder
    from slimspec.train.reference import build_member

    shipped = shipped_drafter(target_name)
    if shipped is not None:
        print(f"[1/4] SlimSpec d/8 drafter for {target_name}: shipped with the project, {shipped}", flush=True)
        return shipped
    recipe = Recipe()
    folder = member_folder(target_name, "slimspec-d8", recipe)
    if is_built(folder):
        print(f"[1/4] SlimSpec d/8 drafter for {target_name}: cached at {folder}", flush=True)
        return folder
    if not build:
        raise FileNotFoundError(where_to_get(target_name) + f" Or build it here, once, with slimspec-demo --build "
                                f"(hours on a CPU; resumable), cached at {folder}.")
    print(f"[1/4] no shipped or cached SlimSpec d/8 drafter for {target_name}: building it now, once "
          f"({data_responses_left(target_name, recipe)} responses to generate, then {recipe.max_steps} training "
          f"steps; the progress bars show the time left; interrupt and rerun to resume)", flush=True)
    return build_member(target_name, "slimspec-d8", recipe, progress)


def compare(target, tokenizer, drafter, prompts: list, max_new_tokens: int, lookup_tokens: int = 10) -> dict:
    """Plain greedy, prompt lookup, the drafter alone and, when its generation_config switches prompt lookup on
    (``prompt_lookup_num_tokens``), the drafter as configured (hybrid), on each prompt back to back; totals."""
    hybrid = getattr(drafter.generation_config, "prompt_lookup_num_tokens", None)
    methods = [Method("plain", "plain"), Method("lookup", "lookup", lookup_tokens),
               Method("assisted", "drafter", drafter=drafter)]
    if hybrid:
        methods.append(Method("hybrid", "hybrid", drafter=drafter))  # the drafter's own lookup setting
    t = run_methods(target, tokenizer, methods, prompts, dict(do_sample=False, max_new_tokens=max_new_tokens))
    plain, lookup, assisted = t["plain"], t["lookup"], t["assisted"]
    stats = assisted.merged_stats()
    prompt_length = encode(tokenizer, prompts[0])["input_ids"].shape[1]
    first = (prompts[0], tokenizer.decode(assisted.outputs[0][0, prompt_length:], skip_special_tokens=True))
    result = dict(prompts=len(prompts), tokens=plain.new_tokens, plain_seconds=plain.seconds,
                  assisted_seconds=assisted.seconds, lookup_seconds=lookup.seconds,
                  speedup=plain.seconds / assisted.seconds, speedup_vs_lookup=lookup.seconds / assisted.seconds,
                  tau=stats.tau, acceptance=stats.per_position_acceptance(), identical=assisted.identical,
                  example=first, chosen_k=dict(sorted(Counter(stats.chosen_draft_lengths).items())))
    if hybrid:
        h, h_stats = t["hybrid"], t["hybrid"].merged_stats()
        result.update(hybrid_seconds=h.seconds, hybrid_identical=h.identical, hybrid_tau=h_stats.tau,
                      hybrid_share=h_stats.accepted_share())
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="slimspec-demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="gemma3-270m", help="embedded target (default gemma3-270m)")
    p.add_argument("--publish-dir", default="slimspec-gemma3-270m-d8", help="local Hub-layout folder to publish to")
    p.add_argument("--prompts", type=int, default=1, help="held-out prompts per category (6 categories)")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                   help="target dtype (auto: whichever of bf16 and fp32 decodes fastest here, measured)")
    p.add_argument("--build", action="store_true",
                   help="build the drafter here when none is shipped or cached (hours on a CPU; resumable)")
    args = p.parse_args(argv)

    from transformers import AutoModel

    from slimspec.heldout import held_out_prompts
    from slimspec.machine import describe_line, fastest_setup, resolve_dtype
    from slimspec.targets import load_target

    t_start = time.perf_counter()
    try:
        folder = build_or_load(args.target, args.build)
        out = publish_local(folder, Path(args.publish_dir).resolve())
        print(f"[2/4] published to {out} (Hub layout: weights, config, code, model card)", flush=True)
        names = ["bf16", "fp32"] if args.dtype == "auto" else [args.dtype]
        candidates = {name: load_target(args.target, dtype=resolve_dtype(name)) for name in names}
        best, passes = fastest_setup(candidates)  # each candidate left in its faster setup
        target, tokenizer = candidates.pop(best)
        candidates.clear()
        drafter = AutoModel.from_pretrained(str(out), trust_remote_code=True, dtype=resolve_dtype(best)).eval()
        print(f"[3/4] reloaded with AutoModel.from_pretrained(..., trust_remote_code=True): "
              f"{type(drafter).__name__}, head rank {drafter.config.head_rank}, K = "
              f"{drafter.generation_config.num_assistant_tokens}", flush=True)
        calibration = drafter.attach(target).calibrate(target, prepare=False)
        prompts = [p for _, p in held_out_prompts(args.prompts)]
        measured = ", ".join(f"{name} {ms:.1f} ms" for name, ms in passes.items())
        setup = f"{best}, {'packed' if calibration.packed else 'as loaded'}"
        print(f"[4/4] greedy generation on {len(prompts)} held-out prompts, {args.max_new_tokens} new tokens each: "
              f"plain generate, prompt lookup and assistant_model=drafter, on {describe_line()}; one plain decoding "
              f"pass measured {measured}: every method runs the fastest, the target in {setup}; the draft "
              f"length is chosen from this machine's measured costs", flush=True)
        r = compare(target, tokenizer, drafter, prompts, args.max_new_tokens)
        drafter.detach()
    except (ValueError, OSError, RuntimeError) as err:
        print(f"slimspec-demo: error: {err}", file=sys.stderr)
        return 1
    prompt, text = r["example"]
    print(f"\n--- prompt ---\n{prompt}\n--- assisted output ---\n{text}\n")
    print(f"output identical to plain greedy: {r['identical']}/{r['prompts']} prompts")
    print(f"tau (tokens per target pass): {r['tau']:.2f}; acceptance per draft position: "
          + ", ".join(f"{a:.2f}" for a in r["acceptance"]) + f"; draft lengths chosen (K: passes): {r['chosen_k']}")
    print(f"plain {r['tokens'] / r['plain_seconds']:.1f} tokens/s, prompt lookup "
          f"{r['tokens'] / r['lookup_seconds']:.1f} tokens/s, SlimSpec {r['tokens'] / r['assisted_seconds']:.1f} "
          f"tokens/s: {r['speedup']:.2f}x plain generate, {r['speedup_vs_lookup']:.2f}x prompt lookup")
    if "hybrid_seconds" in r:
        share = ", ".join(f"{k} {v:.0%}" for k, v in r["hybrid_share"].items())
        print(f"the drafter's own setting, prompt lookup beside the drafter (hybrid): "
              f"{r['tokens'] / r['hybrid_seconds']:.1f} tokens/s, {r['plain_seconds'] / r['hybrid_seconds']:.2f}x "
              f"plain generate, {r['lookup_seconds'] / r['hybrid_seconds']:.2f}x prompt lookup, tau "
              f"{r['hybrid_tau']:.2f}, accepted drafts from {share}, identical {r['hybrid_identical']}/{r['prompts']}")
    print(f"(total {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
