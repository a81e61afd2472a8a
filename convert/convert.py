"""``convert_drafter``: a published EAGLE-3 drafter -> a SlimSpec Hub folder (or a dense export), in named steps.

    resolve source -> read config and weights (detect format, map names strictly, translate layer ids)
    -> check against the target -> factorize the head (truncated SVD, fp32) -> load into SlimSpecDrafter strictly
    -> measure head quality -> write everything to a temporary folder -> reload it in a fresh process
    -> move it into place -> push to the Hub (optional)

A failure at any step leaves no output behind, and an existing OUTPUT is never replaced without ``overwrite``.
"""

from __future__ import annotations

from pathlib import Path

from .card import build_card
from .convert_report import ConversionReport, progress_bars
from .formats import WRITERS, ConversionError, read_source
from .steps import (
    build_drafter,
    build_report,
    check_output,
    check_shapes,
    check_target,
    export_extras,
    factorize_head,
    head_quality,
    publish,
    read_target_config,
    resolve_source,
    text_config,
    write_and_place,
)


# ----------------------------------------------------------------------------------------------------------------------
# The function
# ----------------------------------------------------------------------------------------------------------------------
def convert_drafter(
    *,
    source: str,
    output: str,
    rank=None,
    energy: float | None = None,
    format: str = "auto",
    target: str | None = None,
    target_num_layers: int | None = None,
    prompts: str | None = None,
    export: str | None = None,
    keep_embeddings: bool = True,
    method: str = "auto",
    push_to_hub: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
    validate: bool = True,
    progress: bool = True,
    num_assistant_tokens: int = 5,
) -> ConversionReport:
    """Convert an EAGLE-3 drafter into a SlimSpec drafter folder (or, with ``export``, a dense engine export).

    rank: any form of ``configuration_slimspec.resolve_head_rank``: None / "dense" / "full" (keep the head dense),
    an int, "d/N", or an energy fraction ("energy:0.99"); energy: the same as rank="energy:<energy>".
    export: None (SlimSpec folder), "eagle" or "speculators" (dense ``lm_head.weight`` = up @ down).
    progress=False also silences transformers' and huggingface_hub's progress bars while it runs.
    """
    if rank is not None and energy is not None:
        raise ConversionError("give either a rank or an energy fraction, not both")
    if export not in (None, *WRITERS):
        raise ConversionError(f"unknown export format {export!r}; choose from {list(WRITERS)}")
    output = Path(output)
    if not dry_run:
        check_output(output, overwrite)
    with progress_bars(progress) as bar:
        target_config = read_target_config(target)
        if target_num_layers is None and target_config is not None:
            target_num_layers = text_config(target_config).num_hidden_layers
        src = read_source(resolve_source(source), fmt=format, num_layers=target_num_layers, progress=bar)
        check_target(src, target_config)
        check_shapes(src)
        fact = factorize_head(src.state_dict["lm_head.weight"], f"energy:{energy}" if energy is not None else rank,
                              method, bar)
        model, dense = build_drafter(src, fact, keep_embeddings)
        quality = head_quality(model, dense, fact, target, prompts)
        model.generation_config.num_assistant_tokens = num_assistant_tokens
        embedding, architectures = export_extras(model, export, target, target_config, src)
        report, expected_params = build_report(output, export, src, model, dense, fact, quality, embedding)
        card = build_card(config=model.config, license=src.license, repo_id=push_to_hub, info=dict(
            source=source, source_format=src.format, energy_kept=report.energy_kept, dense_head_params=dense.numel(),
            head_params=report.head_params, total_params=report.total_params, quality=quality, notes=src.notes,
            num_assistant_tokens=num_assistant_tokens))
        report.files = write_and_place(output, model, export, card, embedding, architectures, bar=bar,
                                       validate=validate, expected_params=expected_params, overwrite=overwrite,
                                       dry_run=dry_run)
        if dry_run:
            report.notes.append(f"dry run: would write {output} and upload {report.files}"
                                + (f" to {push_to_hub}" if push_to_hub else ""))
        elif push_to_hub:
            report.pushed_to = publish(output, push_to_hub, private=private, revision=revision,
                                       commit_message=commit_message)
    return report
