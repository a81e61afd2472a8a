"""What a conversion did (``ConversionReport``), and the progress bars it shows while it runs."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

from .card import head_size_change


@dataclass
class ConversionReport:
    output: str
    format: str
    source_format: str
    rank: int | None
    energy_kept: float | None
    dense_head_params: int
    head_params: int
    total_params: int
    quality: dict | None
    head_shape: tuple | None = None  # (rows, hidden size) of the dense head
    files: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    pushed_to: str | None = None

    @property
    def head_reduction(self) -> float:
        return self.dense_head_params / self.head_params

    def summary(self) -> str:
        lines = [f"{self.source_format} -> {self.format}: {self.output}", self.head_summary()]
        if self.quality:
            kind = "real target hidden states" if self.quality.get("real") else "random-normal probes"
            lines.append(f"head vs dense on {self.quality['probes']} {kind}: top-1 agreement "
                         f"{self.quality['top1_agreement']:.4f}, KL {self.quality['kl']:.5f}")
        lines += self.notes
        return "\n".join(lines)

    def head_summary(self) -> str:
        """One plain line on what happened to the head; never a "fewer" factor below 1."""
        if self.rank is None:
            return f"head kept dense ({self.dense_head_params:,} parameters)"
        rank = f"rank {self.rank}"
        if self.head_shape and self.rank == min(self.head_shape):
            rank += f" (full rank for this {self.head_shape[0]} x {self.head_shape[1]} head, so exact)"
        energy = f"spectral energy kept {100 * self.energy_kept:.2f}%"
        if self.format != "slimspec":
            return (f"head factorized at {rank} ({energy}), written dense as up @ down ({self.head_params:,} "
                    f"parameters, as the {self.format} format needs)")
        return f"{rank}, {energy}, head parameters {head_size_change(self.dense_head_params, self.head_params)}"


@contextmanager
def progress_bars(enabled: bool):
    """The progress bar factory for the conversion's own steps (tqdm), or None when quiet; quiet also turns
    transformers' and huggingface_hub's bars off (e.g. the "Writing model shards" bar of ``save_pretrained``) and
    restores both global switches afterwards."""
    if enabled:
        from tqdm.auto import tqdm

        yield tqdm
        return
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    was_on, hub_was_on = hf_logging.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # also disables huggingface_hub's
    try:
        yield None
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
        (hub_utils.enable_progress_bars if hub_was_on else hub_utils.disable_progress_bars)()
