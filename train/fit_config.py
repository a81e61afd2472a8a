"""``FitConfig``: every training setting of ``slimspec-train fit`` with its default, stated once (the CLI and the
reference recipe read their defaults from here), checked when the config is made."""

from __future__ import annotations

from dataclasses import dataclass

from .losses import LOSSES


@dataclass
class FitConfig:
    head_rank: object = "d/8"  # any form configuration_slimspec.resolve_head_rank takes without weights
    draft_vocab: int | None = None  # truncated draft vocabulary (d2t/t2d from token frequencies)
    head_init: str = "target"  # "target": SVD of (or copy of) the target's LM head; "random"
    loss: str = "kl"
    ttt_steps: int = 3
    step_weight: float = 0.8
    lr: float = 4e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 0.5
    batch_size: int = 4
    window: int = 256
    max_steps: int = 1000
    epochs: int | None = 1  # passes over the data at most; None: as many as max_steps takes
    seed: int = 0
    save_every: int = 200
    init_from: str | None = None  # start from this SlimSpec drafter folder (healing; a further training stage)
    grow_to_rank: object = None  # with init_from: first widen its low-rank head to this rank (train.step.grow_head);
    #                              from scratch it can only equal head_rank
    trainable: str = "all"  # "all", or "head" (healing: only the factorized head learns)
    lora_rank: int = 0  # healing: LoRA adapters of this rank on the decoder layer (peft), merged before saving
    teacher: str | None = None  # healing: a dense drafter folder whose head is the teacher (None: the target)
    normalize_features: bool = True  # train on target features scaled to unit RMS per channel, folded into fc on save
    candidates: int = 0  # > 0: softmax over the batch's target top-k ids + this many most frequent tokens
    #                       (a candidate-restricted normalizer for training; 0 = the full vocabulary)
    snapshot_steps: tuple = ()  # also write a Hub-ready drafter to out/snapshots/step_N at these steps (curves)
    workers: int = 0  # DataLoader worker processes (a GPU outruns batches read in the training process)
    bf16: bool = False  # bf16 autocast for the drafter's forward and backward (fp32 master weights)
    loss_on: str = "all"  # "all": prompt positions too (the target's distribution there is just as exact: more
    #                       signal from the same data; the reference recipe's choice); "response": its own tokens

    def __post_init__(self):
        """Check every field once, when the config is made (``dataclasses.replace`` included): a bad setting fails
        before any data is read, naming the field and what it allows."""
        from configuration_slimspec import parse_head_rank

        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"FitConfig.{name} must be one of {', '.join(map(repr, allowed))}; "
                                 f"got {getattr(self, name)!r}")
        _check_counts(self, _POSITIVE, least=1)
        _check_counts(self, _NON_NEGATIVE, least=0)
        if self.draft_vocab is not None:
            _check_counts(self, ("draft_vocab",), least=1)
        if self.epochs is not None:
            _check_counts(self, ("epochs",), least=1)
        parse_head_rank(self.head_rank)  # ValueError naming the valid forms
        if self.grow_to_rank is not None:
            try:
                grow = parse_head_rank(self.grow_to_rank)
            except ValueError as e:
                raise ValueError(f"FitConfig.grow_to_rank: {e}") from None
            if grow[0] == "dense":
                raise ValueError("FitConfig.grow_to_rank widens a low-rank head: give a rank (an int or d/N), not "
                                 f"{self.grow_to_rank!r}")
            if self.init_from is None and grow != parse_head_rank(self.head_rank):
                raise ValueError(f"FitConfig.grow_to_rank={self.grow_to_rank!r} widens the head of the drafter "
                                 f"init_from continues; trained from scratch the head has head_rank "
                                 f"({self.head_rank!r}): set head_rank={self.grow_to_rank!r} instead")

    @property
    def trained_mask(self) -> str:
        """The batch mask of the positions with a loss (``loss_on``)."""
        return "loss_mask" if self.loss_on == "response" else "any_mask"


_CHOICES = {"loss": tuple(LOSSES), "loss_on": ("response", "all"), "trainable": ("all", "head"),
            "head_init": ("target", "random")}
_POSITIVE = ("ttt_steps", "batch_size", "window", "max_steps", "save_every")
_NON_NEGATIVE = ("warmup_steps", "lora_rank", "candidates", "workers")


def _check_counts(config: FitConfig, names, least: int) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"FitConfig.{name} must be an int >= {least}, got {value!r}")
