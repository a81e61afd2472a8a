"""The one loop that runs ``target.generate`` plain and assisted: the benchmarks (``slimspec-bench generate``,
``slimspec-bench e2e``), the demo and the drafter evaluation all call ``run_methods``.

A ``Method`` is one way of calling ``generate``: plain, transformers' prompt lookup, or a SlimSpec drafter (with a
draft length for the call, or its own settings; alone, or hybrid with prompt lookup inside its generator).
``run_methods`` runs every method back to back on each prompt, the first method (plain) first, so all see the same
machine state, and tallies per method: new tokens, seconds, outputs, how many equal the first method's, the
drafters' ``last_generate_stats``, and whatever an ``instrument`` (the benchmarks' timers) recorded. Only
``target.generate`` is called; the decoding loop is transformers' own.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, fields

import torch
from tqdm.auto import tqdm

WARMUP_TOKENS = 8  # the warm-up call: this many prompt tokens and new tokens


@dataclass
class Method:
    """One way of calling ``target.generate``.

    kind: "plain" | "lookup" (prompt lookup, ``k`` tokens per lookup) | "drafter" (``drafter`` alone, its own
    prompt lookup switched off for the call; it drafts ``k`` tokens per pass with the constant schedule, or with
    ``k=None`` its own draft length and schedule) | "hybrid"
    (``drafter`` with its own draft length and schedule, and prompt lookup of ``k`` tokens from n-grams of
    ``min_ngram`` to ``ngram`` tokens in its generator: ``prompt_lookup_num_tokens`` / ``max_matching_ngram_size`` /
    ``min_matching_ngram_size`` on the drafter's generation_config for the call; ``k=None``: the drafter's own
    prompt-lookup setting). ``settings``: more generation_config values of the drafter for the call (a draft
    tree's ``tree_total_tokens``, ``tree_depth``, ``tree_top_k``; the schedule)."""

    name: str
    kind: str
    k: int | None = None
    drafter: object = None
    ngram: int = 2
    min_ngram: int = 1
    settings: dict = field(default_factory=dict)

    @property
    def uses_drafter(self) -> bool:
        return self.kind in ("drafter", "hybrid")

    def generate_kwargs(self) -> dict:
        if self.kind == "lookup":
            return dict(prompt_lookup_num_tokens=self.k)
        if self.uses_drafter:
            return dict(assistant_model=self.drafter)
        return {}

    def drafter_settings(self):
        """A context manager giving the drafter this method's settings for the call (its own ones after it)."""
        values = {}
        if self.kind == "hybrid" and self.k is not None:
            values = lookup_values(self.k, self.ngram, self.min_ngram)
        elif self.kind == "drafter":
            values = dict(prompt_lookup_num_tokens=0)  # the drafter alone, whatever its own prompt-lookup setting
            if self.k is not None:
                values.update(num_assistant_tokens=self.k, num_assistant_tokens_schedule="constant")
        values.update(self.settings)
        return drafter_config(self.drafter, **values) if values else nullcontext(self.drafter)


@dataclass
class Tally:
    """One method's totals over the prompts."""

    seconds: float = 0.0
    new_tokens: int = 0
    identical: int = 0  # outputs equal to the first method's on the same prompt
    prompts: int = 0
    outputs: list = field(default_factory=list)  # output ids per prompt: [1, prompt + new]
    prompt_seconds: list = field(default_factory=list)  # seconds per prompt
    stats: list = field(default_factory=list)  # SlimSpecGenerateStats per call (drafters)
    timings: list = field(default_factory=list)  # what the instrument recorded per call

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else float("nan")

    def __add__(self, other: "Tally") -> "Tally":
        """Both tallies as one (e.g. categories into a total): numbers summed, lists concatenated, field by field."""
        return Tally(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def merged_stats(self):
        """The drafter's statistics over all prompts (None for plain and prompt lookup)."""
        return type(self.stats[0]).merge(self.stats) if self.stats else None


@contextmanager
def drafter_config(drafter, **values):
    """Inside the block the drafter's generation_config has ``values``; its own values after it, whatever
    happens (an attribute it lacked before comes back as None)."""
    config = drafter.generation_config
    saved = {name: getattr(config, name, None) for name in values}
    for name, value in values.items():
        setattr(config, name, value)
    try:
        yield drafter
    finally:
        for name, value in saved.items():
            setattr(config, name, value)


def draft_length(drafter, k: int, schedule: str = "constant"):
    """Inside the block the drafter drafts ``k`` tokens per pass with ``schedule``; its own settings after it."""
    return drafter_config(drafter, num_assistant_tokens=k, num_assistant_tokens_schedule=schedule)


def prompt_lookup(drafter, tokens: int, ngram: int = 2, min_ngram: int = 1):
    """Inside the block the drafter drafts hybrid: a block of up to ``tokens`` tokens from an n-gram match
    (``min_ngram`` <= n <= ``ngram``) in the context when there is one, else its own drafts; its own settings
    after it."""
    return drafter_config(drafter, **lookup_values(tokens, ngram, min_ngram))


def lookup_values(tokens: int, ngram: int = 2, min_ngram: int = 1) -> dict:
    """The drafter's generation_config values for a hybrid of ``tokens`` lookup tokens after n-gram matches of
    ``min_ngram`` to ``ngram`` tokens (transformers' own names)."""
    return dict(prompt_lookup_num_tokens=tokens, max_matching_ngram_size=ngram, min_matching_ngram_size=min_ngram)


def lookup_setting(text: str) -> tuple:
    """"TOKENS,NGRAM[,MIN_NGRAM]" (a command-line option) -> (prompt_lookup_num_tokens, max_matching_ngram_size,
    min_matching_ngram_size), all >= 1, MIN_NGRAM <= NGRAM, MIN_NGRAM 1 when left out (transformers' rule)."""
    import argparse

    try:
        numbers = [int(x) for x in text.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) not in (2, 3):
        raise argparse.ArgumentTypeError(f"{text!r}: use TOKENS,NGRAM or TOKENS,NGRAM,MIN_NGRAM, integers such as "
                                         f"10,3,2")
    tokens, ngram, min_ngram = numbers if len(numbers) == 3 else (*numbers, 1)
    if min(numbers) < 1 or min_ngram > ngram:
        raise argparse.ArgumentTypeError(f"{text!r}: every number must be at least 1 and MIN_NGRAM at most NGRAM "
                                         f"(leave the option out for no prompt lookup)")
    return tokens, ngram, min_ngram


@contextmanager
def attached(drafter, target):
    """``drafter`` attached to ``target`` inside the block. One attached already stays so; otherwise it is detached
    after the block (a target holds one drafter at a time)."""
    if drafter.attached_target is target:
        yield drafter
        return
    drafter.attach(target)
    try:
        yield drafter
    finally:
        drafter.detach()


def encode(tokenizer, text: str) -> dict:
    """A prompt as generate's inputs: input_ids [1, T] (and attention_mask [1, T])."""
    enc = tokenizer(text, return_tensors="pt")
    return {key: enc[key] for key in ("input_ids", "attention_mask") if key in enc}


def generate_once(target, method: Method, inputs: dict, gen_kwargs: dict, instrument=None) -> tuple:
    """One timed ``target.generate`` -> (output ids [1, prompt + new], seconds, the instrument's record or None).

    A drafter is attached and given the method's settings (draft length, or prompt lookup for "hybrid") outside
    the timed span, and left as found after it. ``instrument(target, method)``: a context manager around the call
    whose value is the record."""
    with ExitStack() as stack:
        if method.uses_drafter:
            stack.enter_context(attached(method.drafter, target))
            stack.enter_context(method.drafter_settings())
        record = stack.enter_context(instrument(target, method)) if instrument is not None else None
        t0 = time.perf_counter()
        out = target.generate(**inputs, **gen_kwargs, **method.generate_kwargs())
        seconds = time.perf_counter() - t0
    return out, seconds, record


def warm_up(target, tokenizer, methods: list, prompt: str, gen_kwargs: dict) -> None:
    """One short untimed call per method (kernels, caches, lazy imports, the cost schedule's probe)."""
    inputs = {key: v[:, :WARMUP_TOKENS] for key, v in encode(tokenizer, prompt).items()}
    short = dict(gen_kwargs, max_new_tokens=min(WARMUP_TOKENS, gen_kwargs["max_new_tokens"]))
    for method in methods:
        generate_once(target, method, inputs, short)


@torch.inference_mode()
def run_methods(target, tokenizer, methods: list, prompts: list, gen_kwargs: dict, *, seed: int | None = None,
                warmup: bool = True, instrument=None, desc: str = "generate", progress: bool = False,
                rounds: int = 1) -> dict:
    """Every method on every prompt, back to back in the given order -> {method name: Tally}.

    gen_kwargs: for every call (``max_new_tokens``, ``do_sample``, ...). seed: ``torch.manual_seed(seed + i)``
    before every call on prompt i (sampling), so all methods see the same seed. rounds: the methods run this many
    times in turn on each prompt, and each keeps its fastest call (best of ``rounds``: a busy moment of a shared
    machine only adds time, and it falls on every method alike)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if warmup:
        warm_up(target, tokenizer, methods, prompts[0], gen_kwargs)
    tallies = {m.name: Tally() for m in methods}
    for i, prompt in enumerate(tqdm(prompts, desc=desc, unit="prompt", disable=not progress)):
        inputs = encode(tokenizer, prompt)
        fastest = {}  # method name -> (output, seconds, record, stats) of its fastest call
        for _ in range(rounds):
            for method in methods:
                if seed is not None:
                    torch.manual_seed(seed + i)
                out, seconds, record = generate_once(target, method, inputs, gen_kwargs, instrument)
                if method.name not in fastest or seconds < fastest[method.name][1]:
                    stats = method.drafter.last_generate_stats if method.uses_drafter else None
                    fastest[method.name] = (out, seconds, record, stats)
        reference = fastest[methods[0].name][0]
        for method in methods:
            out, seconds, record, stats = fastest[method.name]
            t = tallies[method.name]
            t.seconds += seconds
            t.new_tokens += out.shape[1] - inputs["input_ids"].shape[1]
            t.identical += int(torch.equal(out, reference))
            t.prompts += 1
            t.outputs.append(out)
            t.prompt_seconds.append(seconds)
            if stats is not None:
                t.stats.append(stats)
            if record is not None:
                t.timings.append(record)
    return tallies
