"""Model cards for converted drafters, from ``model_card/template.md`` via huggingface_hub's ModelCard."""

from __future__ import annotations

from pathlib import Path

# model_card/ sits next to convert/ in the repository and is installed next to it as slimspec.model_card.
TEMPLATE = Path(__file__).resolve().parent.parent / "model_card" / "template.md"


def _template_path() -> Path:
    if not TEMPLATE.exists():
        raise FileNotFoundError(f"model card template missing at {TEMPLATE}: reinstall the package")
    return TEMPLATE


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,}"


def head_size_change(dense: int, head: int, count=lambda n: f"{n:,}") -> str:
    """ "A -> B (k x fewer parameters and bytes)", or, for factors no smaller than the dense head (a rank near or at
    full rank), "A -> B (k x MORE than the dense head ...)": never a "fewer" factor below 1."""
    if head < dense:
        return f"{count(dense)} -> {count(head)} ({dense / head:.1f}x fewer parameters and bytes)"
    return (f"{count(dense)} -> {count(head)} ({head / dense:.2f}x MORE than the dense head: at this rank the factors "
            f"save nothing; --rank dense keeps the head dense)")


EXPORTS = {"eagle": "SafeAILab / SpecForge layout", "speculators": "vLLM speculators"}


def export_text(config, repo_id: str) -> str:
    """The card's export commands: only the formats this drafter can be written in, and why the others cannot."""
    from .formats import export_support

    support = export_support(config, has_embedding=not config.share_target_embeddings)
    lines = [f"slimspec-convert {repo_id} drafter-{fmt} --export {fmt}    # {EXPORTS.get(fmt, fmt)}"
             for fmt, refusal in support.items() if refusal is None]
    text = ("```bash\n" + "\n".join(lines) + "\n```") if lines else "No dense export format can express this drafter."
    refused = [f"- `--export {fmt}` is not available for this drafter: {refusal}" for fmt, refusal in support.items()
               if refusal is not None]
    return text + ("\n\n" + "\n".join(refused) if refused else "")


def build_card(*, config, info: dict, repo_id: str | None = None, license: str | None = None):
    """A ``huggingface_hub.ModelCard`` describing a SlimSpec drafter folder.

    ``info`` holds what the conversion measured: source, source_format, rank, energy_kept, dense_head_params,
    head_params, total_params, quality (dict or None), notes (list of str)."""
    from huggingface_hub import ModelCard, ModelCardData

    base_model = config.target_name_or_path or None
    data = ModelCardData(
        base_model=base_model if base_model and "/" in str(base_model) else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["speculative-decoding", "eagle3", "slimspec"],
        license=license,
    )
    V_d, d = config.head_vocab_size, config.hidden_size
    if config.head_rank:
        r = config.head_rank
        head = f"low-rank, rank {r}: `lm_head.down` [{r}, {d}] then `lm_head.up` [{V_d}, {r}]"
        head_description = (f"factorized into two matrices of rank r = {r} (d/{d / r:.0f}): "
                            f"hidden {d} -> {r} -> {V_d} vocabulary rows")
    else:
        head = f"dense `lm_head` [{V_d}, {d}]"
        head_description = "dense"
    q = info.get("quality")
    if info.get("quality_text"):  # measured by whoever built the drafter (e.g. tau per category after training)
        quality_text = info["quality_text"]
    elif q:
        kind = "real target hidden states" if q.get("real") else "random-normal probes (no --target given)"
        quality_text = (f"Head vs the source's dense head on {q['probes']} {kind}: top-1 agreement "
                        f"**{q['top1_agreement']:.3f}**, KL(dense || low-rank) **{q['kl']:.4f}** nats.")
    else:
        quality_text = "No quality figures were measured for this drafter."
    dense, slim = info.get("dense_head_params"), info.get("head_params")
    head_params_text = _count(slim) if not dense or dense == slim else head_size_change(dense, slim, _count)
    notes = info.get("notes") or []
    return ModelCard.from_template(
        data,
        template_path=str(_template_path()),
        model_name=repo_id or "SlimSpec drafter",
        repo_id=repo_id or "PATH/TO/THIS/FOLDER",
        base_model=base_model,
        head_description=head_description,
        source=info.get("source", "unknown"),
        source_format=info.get("source_format", "unknown"),
        target_hidden_size=config.target_hidden_size,
        vocab_size=config.vocab_size,
        target_layer_ids=list(config.target_layer_ids),
        head_shape=head + (f"; truncated draft vocabulary of {V_d} tokens with d2t/t2d maps"
                           if config.draft_vocab_size else ""),
        rank_text=str(config.head_rank) if config.head_rank else "dense",
        energy_text=f"{100 * info['energy_kept']:.2f}%" if info.get("energy_kept") is not None else "n/a",
        head_params_text=head_params_text,
        total_params_text=_count(info.get("total_params", 0)),
        num_assistant_tokens=info.get("num_assistant_tokens", 5),
        export_text=export_text(config, repo_id or "PATH/TO/THIS/FOLDER"),
        quality_text=quality_text,
        conversion_notes=(f"## {info.get('notes_title', 'Conversion notes')}\n\n" + "\n".join(f"- {n}" for n in notes))
        if notes else "",
    )
