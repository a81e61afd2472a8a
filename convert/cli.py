"""``slimspec-convert SOURCE OUTPUT``: factorize a published EAGLE-3 drafter's head and write a SlimSpec folder.

    slimspec-convert yuhuili/EAGLE3-LLaMA3.1-Instruct-8B eagle3-slim --rank d/8 \
        --target meta-llama/Llama-3.1-8B-Instruct
    slimspec-convert ./drafter ./drafter-slim --energy 0.99 --push-to-hub me/drafter-slim --private
    slimspec-convert ./drafter-slim ./drafter-eagle --export eagle        # dense copy for vLLM / SGLang
    slimspec-convert ./drafter-slim ./drafter-spec --export speculators --target meta-llama/Llama-3.1-8B-Instruct
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspec-convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="drafter folder or Hub repo id (EAGLE, SpecForge, speculators or SlimSpec format)")
    p.add_argument("output", help="output folder (refused if it exists, unless --overwrite)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--rank", help="head rank: an int, d/N (e.g. d/8), dense or full (keep the head dense, the "
                                     "default), or an energy fraction such as energy:0.99")
    size.add_argument("--energy", type=float, help="smallest rank keeping this fraction of spectral energy, e.g. 0.99 "
                                                   "(the same as --rank energy:0.99)")
    p.add_argument("--format", default="auto", choices=["auto", "eagle", "specforge", "speculators", "slimspec"])
    p.add_argument("--target", help="target model folder, Hub id or embedded name (gemma3-270m): checks sizes, "
                                    "supplies the layer count, and with --prompts measures quality on real states")
    p.add_argument("--target-num-layers", type=int, help="the target's layer count, if --target is not given")
    p.add_argument("--prompts", help="text file of prompts (blank-line separated) for the quality probe")
    p.add_argument("--export", choices=["eagle", "speculators"], help="write that format with a dense lm_head instead")
    p.add_argument("--drop-embeddings", action="store_true",
                   help="do not keep the source's embed_tokens (share the target's)")
    p.add_argument("--svd", default="auto", choices=["auto", "exact", "gram", "randomized"],
                   help="SVD method (auto: exact for heads up to 64M entries, else gram)")
    p.add_argument("--num-assistant-tokens", type=int, default=5, help="draft length saved in generation_config.json")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the result with your HF token")
    p.add_argument("--private", action="store_true", help="create the Hub repo private")
    p.add_argument("--revision", help="branch to push to (created if missing)")
    p.add_argument("--commit-message")
    p.add_argument("--dry-run", action="store_true", help="build and validate everything, write and upload nothing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.add_argument("--no-validate", action="store_true", help="skip reloading the result in a fresh process")
    p.add_argument("--quiet", action="store_true", help="no progress bars (transformers' included)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .convert import convert_drafter

    try:
        report = convert_drafter(
            source=args.source, output=args.output, rank=args.rank, energy=args.energy, format=args.format,
            target=args.target, target_num_layers=args.target_num_layers, prompts=args.prompts, export=args.export,
            keep_embeddings=not args.drop_embeddings, method=args.svd, push_to_hub=args.push_to_hub,
            private=args.private, revision=args.revision, commit_message=args.commit_message, dry_run=args.dry_run,
            overwrite=args.overwrite, validate=not args.no_validate, progress=not args.quiet,
            num_assistant_tokens=args.num_assistant_tokens)
    except KeyboardInterrupt:
        print("slimspec-convert: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as err:  # one line naming the problem; SLIMSPEC_DEBUG=1 shows the traceback
        import os

        from .formats import ConversionError

        if os.environ.get("SLIMSPEC_DEBUG"):
            raise
        kind = "" if isinstance(err, (ConversionError, ValueError, OSError)) else f"{type(err).__name__}: "
        print(f"slimspec-convert: error: {kind}{err}".splitlines()[0]
              + ("" if kind == "" else " (set SLIMSPEC_DEBUG=1 for the traceback)"), file=sys.stderr)
        return 1
    print(report.summary())
    if report.pushed_to:
        print(f"pushed to {report.pushed_to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
