# coding=utf-8
# Copyright 2026 The SlimSpec authors. Licensed under the Apache License, Version 2.0.
"""Speculative decoding with a SlimSpec drafter: ``target.generate(**inputs, assistant_model=drafter)``.

Hub custom code (imported lazily by ``modeling_slimspec``): standard library, torch and transformers only.

Mechanism, and why. transformers has no public way to plug a drafter into its own assisted-generation loop (that
loop and its candidate generators are private, and their contract changed in 5.24 and again in 5.25). It does
document one way to replace the decoding loop: ``generate(..., custom_generate=...)``, a callable that transformers
calls after it has prepared the inputs, the generation config, the logits processors and the stopping criteria.
So the decoding loop is ours (``speculative_decode``), written against public APIs only:

* the target's ``forward`` (``use_cache``, the cache argument, ``output_hidden_states``, ``logits_to_keep`` where it
  exists), a ``DynamicCache`` with full layers rolled back with ``crop`` (negative counts, the form every release
  accepts), and ``get_seq_length``;
* the logits processors and stopping criteria exactly as transformers hands them over; a stopping criterion is
  checked after every accepted token, as plain decoding does, so EOS, stop strings, ``max_new_tokens`` and a
  user's own criteria end the output where the target alone would.

Two entrances, one loop:

* ``drafter.attach(target)`` sets one instance attribute, ``target.generate``: a call with
  ``assistant_model=<this drafter>`` runs transformers' own ``generate`` with ``custom_generate=<our loop>``; any
  other call is the class's ``generate``, unchanged. ``detach`` removes it. (transformers itself sets
  ``model.generate`` on an instance when it loads a ``custom_generate`` repository.)
* A saved drafter folder carries ``custom_generate/generate.py`` (``CUSTOM_GENERATE_SOURCE``): with nothing of ours
  installed and no ``attach``, ``target.generate(**inputs, assistant_model=drafter, custom_generate=folder,
  trust_remote_code=True)`` reaches the same loop through the drafter's ``speculative_generate``.

``loop_contract_problems`` reads transformers' ``generate`` source and names what the loop needs and no longer
finds there; ``attach`` and ``speculative_generate`` refuse with that list, once per transformers version, instead
of failing halfway through a generation.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import math
import pathlib
import textwrap
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field, fields, replace
from typing import Optional

import torch

try:  # Hub case: the kernels file sits next to this one
    from .kernels_slimspec import first_argmax, optimize_for_cpu, packed_count, restore
except ImportError:  # Installed case: the Hub files are top-level modules
    from kernels_slimspec import first_argmax, optimize_for_cpu, packed_count, restore

_clock = time.perf_counter  # times the loop's passes for the "cost" schedule (tests substitute their own)

# The transformers releases this file was tested with (CI: the floor, the lock and the newest release).
TESTED_TRANSFORMERS = ("5.8.0", "5.25.0")

# Decoder layer types whose cache a crop rolls back; anything else (mamba, conv, linear_attention, ...) keeps a
# recurrent state that rejected drafts would corrupt, and is refused at ``attach``.
ROLLBACK_LAYER_TYPES = {"full_attention", "sliding_attention", "chunked_attention"}


# ----------------------------------------------------------------------------------------------------------------------
# Acceptance statistics
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class SlimSpecGenerateStats:
    """What one ``generate`` call did. Convention: the prefill pass (which verifies nothing) is counted in
    ``target_passes`` but not in ``tau``; every later target pass verifies the drafts of one cycle.

    tau = tokens produced by verification passes / verification passes  (each pass yields its accepted drafts
    plus the target's own bonus token, so tau >= 1; this is EAGLE's mean acceptance length).

    Stats of several calls add up (``a + b``, ``SlimSpecGenerateStats.merge(runs)``): counts are summed and
    per-pass lists concatenated, field by field.

    Sources (hybrid drafting): ``source_per_pass[i]`` says who proposed the drafts of verification pass i:
    "drafter", "lookup" (prompt lookup) or "none" (no drafts). Acceptance per position (``per_position_acceptance``,
    ``conditional_acceptance``) is the drafter's: it counts drafter passes only. Stats without recorded sources
    (built by hand) are the drafter's.
    """

    prompt_length: int = 0
    new_tokens: int = 0
    target_passes: int = 0
    drafted_per_pass: list = field(default_factory=list)  # drafts proposed in each verification pass
    accepted_per_pass: list = field(default_factory=list)  # drafts accepted in each verification pass
    chosen_draft_lengths: list = field(default_factory=list)  # the "cost" schedule's choices, in order
    source_per_pass: list = field(default_factory=list)  # "drafter" | "lookup" | "tree" | "none", per pass
    tree_sources: list = field(default_factory=list)  # per tree pass: {"drafted": {source: n}, "accepted": {...}}

    def __add__(self, other: "SlimSpecGenerateStats") -> "SlimSpecGenerateStats":
        """Both calls as one: every field summed (numbers) or concatenated (lists). ``other`` is read by field
        name, so stats from another copy of this module (a drafter loaded as Hub code) add up too."""
        return type(self)(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @classmethod
    def merge(cls, runs) -> "SlimSpecGenerateStats":
        """One stats object over several generate calls (empty stats for none)."""
        merged = cls()
        for run in runs:
            merged = merged + run
        return merged

    @property
    def verification_passes(self) -> int:
        return len(self.accepted_per_pass)

    @property
    def tau(self) -> float:
        produced = sum(self.accepted_per_pass) + self.verification_passes
        return produced / self.verification_passes if self.verification_passes else float("nan")

    @property
    def acceptance_rate(self) -> float:
        drafted = sum(self.drafted_per_pass)
        return sum(self.accepted_per_pass) / drafted if drafted else float("nan")

    def _sources(self) -> list:
        """The source of every verification pass ("drafter" for all when none were recorded)."""
        return self.source_per_pass or ["drafter"] * self.verification_passes

    def _drafter_passes(self) -> list:
        """[(drafted, accepted)] of the passes the drafter proposed."""
        return [(d, a) for s, d, a in zip(self._sources(), self.drafted_per_pass, self.accepted_per_pass)
                if s == "drafter"]

    def _sum_by_source(self, values: list, part: str) -> dict:
        """{source: sum of ``values`` (one per verification pass) over its passes}, for sources that drafted; a
        tree pass adds its nodes' own sources (``tree_sources[i][part]``: "drafter", "lookup", or "both" for a
        token both proposed)."""
        out, trees = {}, iter(self.tree_sources)
        for source, drafted, value in zip(self._sources(), self.drafted_per_pass, values):
            counts = next(trees)[part] if source == "tree" else {source: value}
            for name, count in counts.items() if drafted else ():
                out[name] = out.get(name, 0) + count
        return out

    def drafted_by_source(self) -> dict:
        """Drafts proposed per source: {"drafter": n, "lookup": m, "both": b} (sources that proposed something)."""
        return self._sum_by_source(self.drafted_per_pass, "drafted")

    def accepted_by_source(self) -> dict:
        """Accepted drafts per source that proposed them: {"drafter": n, "lookup": m, "both": b}."""
        return self._sum_by_source(self.accepted_per_pass, "accepted")

    def accepted_share(self) -> dict:
        """Share of the accepted drafts each source proposed: {"drafter": 0.4, "lookup": 0.6} (0.0 each when
        nothing was accepted)."""
        accepted = self.accepted_by_source()
        total = sum(accepted.values())
        return {source: n / total if total else 0.0 for source, n in accepted.items()}

    def per_position_acceptance(self) -> list:
        """Fraction of drafter passes whose draft at position j (0-based) was accepted, among those that drafted
        >= j+1."""
        passes = self._drafter_passes()
        rates = []
        for j in range(max((d for d, _ in passes), default=0)):
            offered = [a for d, a in passes if d > j]
            rates.append(sum(a > j for a in offered) / len(offered))
        return rates

    def conditional_acceptance(self) -> list:
        """P(draft j accepted | drafts before it accepted), per position j (0-based), over drafter passes: what the
        "cost" schedule's ``expected_tokens`` takes. (``per_position_acceptance`` is the rate of reaching j + 1.)"""
        passes = self._drafter_passes()
        counts = AcceptanceEstimate([], max((d for d, _ in passes), default=0))  # its counting rule, not a copy
        for drafted, accepted in passes:
            counts.observe(drafted, accepted)
        return [a / n if n else 0.0 for a, n in zip(counts.accepted, counts.offered)]


# ----------------------------------------------------------------------------------------------------------------------
# Draft length from measured costs (the "cost" schedule)
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class DraftCosts:
    """What one decoding cycle costs on this machine, in seconds.

    target_pass[n - 1]: one target forward over n new tokens with a KV cache (n = 1 is a plain decoding step,
    n = K + 1 verifies K drafts, or a tree of K nodes); draft: one drafter step (body, head and token choice);
    overhead: the adapter's own work per cycle; sample_draft: what each draft adds when sampling (its draw from
    the drafter's distribution over the whole vocabulary and its rows in ``accept_sampled``)."""

    target_pass: list
    draft: float
    overhead: float = 0.0
    sample_draft: float = 0.0
    tree_level: float = 0.0  # one tree level: a drafter forward over tree_frontier nodes and their top-k
    tree_record: "TreeRecord" = field(default_factory=lambda: TreeRecord())  # what tree passes produced here
    sampled_tree_record: "TreeRecord" = field(default_factory=lambda: TreeRecord())  # ... when sampling
    # sampling settings (``sampling_key``) -> (drafter, lookup) AcceptanceEstimate: what sampling calls with those
    # settings observed here; the next such call starts from it (greedy calls start from the saved acceptance)
    sampled_acceptance: dict = field(default_factory=dict)


@dataclass
class TreeRecord:
    """What the "cost" schedule's tree passes produced on one target setup, priced by its measured costs: tokens
    and cost of the trees, and of each tree's most probable chain (what the chain would have produced on the same
    passes). Sums over the last ~``horizon`` passes (halved when they pass it), and when to try the tree again;
    kept with the costs, across calls.

    The costs are timed once, and a busy moment then, or the loop's own work a tree pass adds, can misprice a tree
    against a chain. So the wall-clock seconds of the passes themselves are kept too: of the tree passes beside
    their priced cost, and of the drafter's chain passes beside theirs (``add_chain``); ``scale`` is how much more
    a tree pass takes than priced, relative to a chain pass (1 until chain passes are timed)."""

    tree_tokens: int = 0
    tree_cost: float = 0.0
    chain_tokens: int = 0
    chain_cost: float = 0.0
    passes: int = 0
    tree_wall: float = 0.0  # measured seconds of the tree passes (priced: tree_cost)
    chain_wall: float = 0.0  # measured seconds of chain passes (priced: chain_priced)
    chain_priced: float = 0.0
    chain_passes_timed: int = 0
    horizon: int = 256
    chain_passes: int = 0  # chain passes since the tree was last drafted
    retry: int = 8  # chain passes before the next try (doubles while the tree keeps losing, up to 64)
    tree_passes: int = 0  # tree passes since the last chain pass
    probe: int = 16  # while the tree wins, one chain pass after this many tree passes keeps the chain timed

    def add(self, tree_tokens: int, tree_cost: float, chain_tokens: int, chain_cost: float,
            wall: Optional[float] = None) -> None:
        if self.passes >= self.horizon:
            self.tree_tokens, self.tree_cost = self.tree_tokens / 2, self.tree_cost / 2
            self.chain_tokens, self.chain_cost, self.passes = self.chain_tokens / 2, self.chain_cost / 2, \
                self.passes // 2
            self.tree_wall /= 2
        self.tree_tokens += tree_tokens
        self.tree_cost += tree_cost
        self.chain_tokens += chain_tokens
        self.chain_cost += chain_cost
        self.tree_wall += tree_cost if wall is None else wall
        self.passes += 1

    def add_chain(self, wall: float, priced: float) -> None:
        """A chain pass of the drafter took ``wall`` seconds where the costs price it at ``priced``."""
        if self.chain_passes_timed >= self.horizon:
            self.chain_wall, self.chain_priced = self.chain_wall / 2, self.chain_priced / 2
            self.chain_passes_timed //= 2
        self.chain_wall += wall
        self.chain_priced += priced
        self.chain_passes_timed += 1

    def scale(self) -> float:
        """(measured / priced seconds of tree passes) / (the same of chain passes); 1 before both are timed."""
        if not (self.tree_cost and self.tree_wall and self.chain_priced and self.chain_wall):
            return 1.0
        return (self.tree_wall / self.tree_cost) / (self.chain_wall / self.chain_priced)


def chain_seconds(costs: DraftCosts, k: int) -> float:
    """One cycle of a chain of k drafts: target_pass[k] + k * draft + overhead (k = 0: a plain decoding step)."""
    return costs.target_pass[k] + k * costs.draft + (costs.overhead if k else 0.0)


def tree_seconds(costs: DraftCosts, nodes: int, depth: int) -> float:
    """One cycle of a tree of ``depth`` levels verifying ``nodes`` nodes: target_pass[nodes] + draft (the ingest and
    level 1) + (depth - 1) * tree_level."""
    return costs.target_pass[nodes] + costs.draft + (depth - 1) * costs.tree_level


def expected_tokens(acceptance: list, k: int) -> float:
    """Tokens one cycle with k drafts yields: 1 + sum_{i<=k} prod_{j<=i} a_j, where a_j is the probability that
    draft j is accepted given drafts 1..j-1 were (positions past the list repeat its last value)."""
    total, survive = 1.0, 1.0
    for i in range(k):
        survive *= acceptance[min(i, len(acceptance) - 1)] if acceptance else 0.0
        total += survive
    return total


def choose_draft_length(costs: DraftCosts, acceptance: list, max_k: int) -> int:
    """The k in 0..max_k that maximizes expected tokens per second, k = 0 being plain decoding:

        rate(0) = 1 / target_pass[0]
        rate(k) = expected_tokens(acceptance, k) / (target_pass[k] + k * draft + overhead)

    Deterministic for given costs and acceptance; ties go to the shorter draft."""
    best_k, best_rate = 0, 1.0 / costs.target_pass[0]
    for k in range(1, min(max_k, len(costs.target_pass) - 1) + 1):
        rate = expected_tokens(acceptance, k) / chain_seconds(costs, k)
        if rate > best_rate:
            best_k, best_rate = k, rate
    return best_k


def choose_tree_size(costs: DraftCosts, scores: list, calibration: float, depth: int) -> tuple:
    """How many of a drafted tree's nodes to verify, from the measured costs (EAGLE-2's premise: the drafter's
    cumulative probability of a node's path, exp(score), is about the chance the target accepts it; ``calibration``
    is the observed ratio of accepted to predicted):

        tokens(N) = 1 + calibration * sum of the N largest exp(score)
        rate(N)   = tokens(N) / (target_pass[N] + draft + (depth - 1) * tree_level)   (drafting is spent)

    -> (N in 0..len(scores) maximizing rate (ties: the smaller), its rate)."""
    probabilities = sorted((math.exp(x) for x in scores), reverse=True)
    best_n, best_rate, tokens = 0, 1.0 / tree_seconds(costs, 0, depth), 1.0
    for n, p in enumerate(probabilities[: len(costs.target_pass) - 1], start=1):
        tokens += calibration * p
        rate = tokens / tree_seconds(costs, n, depth)
        if rate > best_rate:
            best_n, best_rate = n, rate
    return best_n, best_rate


def next_level_pays(costs: DraftCosts, scores: list, frontier: list, calibration: float, level: int) -> bool:
    """Whether drafting level + 1 of a tree can raise its rate (``choose_tree_size`` over the nodes so far, ``level``
    levels drafted). The new level's children have at most their parents' probability in all, so it adds at most

        calibration * sum over the frontier of exp(score)

    tokens, for one more tree level (its nodes priced as verified for free: an upper bound). Drafting stops where
    even that bound does not beat the rate without the level."""
    size, rate = choose_tree_size(costs, scores, calibration, level)
    tokens = rate * tree_seconds(costs, size, level) + calibration * sum(math.exp(s) for s in frontier)
    return tokens / tree_seconds(costs, size, level + 1) > rate


def sampling_key(generation_config) -> tuple:
    """The settings that shape the distribution sampled from (and so how often drafts are accepted)."""
    return tuple(getattr(generation_config, name, None) for name in
                 ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
                  "repetition_penalty"))


class AcceptanceEstimate:
    """Per-position acceptance a_j = P(draft j accepted | drafts before it accepted), as a prior (the drafter's
    measured acceptance, weighted as ``strength`` observations) updated with what this generation observes."""

    def __init__(self, prior: list, max_k: int, strength: float = 16.0, horizon: int | None = None,
                 shared: Optional["AcceptanceEstimate"] = None):
        prior = list(prior) or [0.5]
        self.prior = [float(prior[min(j, len(prior) - 1)]) for j in range(max_k)]
        self.strength = strength
        self.offered = [0] * max_k
        self.accepted = [0] * max_k
        self.horizon = horizon  # counts halve when the first position's pass it (older passes weigh less)
        self.shared = shared  # an estimate over many calls that observes what this one does

    def observe(self, drafted: int, accepted: int) -> None:
        """A verification pass: drafts 1..accepted were accepted, draft accepted + 1 (if drafted) was not: each
        position reached counts as offered, with 1 accepted or 0."""
        self.observe_expected([1] * accepted + [0] * (accepted < drafted))

    def observe_expected(self, expected: list) -> None:
        """A sampling pass: ``expected[j]`` is draft j's acceptance probability had drafts 1..j-1 been accepted
        (``accept_sampled``), known for every drafted position whatever was accepted; one observation each, worth
        many accept/reject outcomes."""
        if self.shared is not None:
            self.shared.observe_expected(expected)
        if self.horizon and self.offered and self.offered[0] >= self.horizon:
            self.offered = [n / 2 for n in self.offered]
            self.accepted = [n / 2 for n in self.accepted]
        for j, a in enumerate(expected[: len(self.offered)]):
            self.offered[j] += 1
            self.accepted[j] += a

    def rates(self) -> list:
        return [(p * self.strength + a) / (self.strength + n)
                for p, a, n in zip(self.prior, self.accepted, self.offered)]


# ----------------------------------------------------------------------------------------------------------------------
# Calibration: what this machine measures, once per target setup
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Calibration:
    """What ``calibrate`` measured for one target and drafter on this machine.

    pass_ms: one plain decoding pass of the target (1 new token after ``context`` cached), by setup: "as loaded"
    and, where its linears can be packed, "packed"; packed: whether the target was left packed (the faster);
    costs: the "cost" schedule's ``DraftCosts`` in that setup; state: what the measurements hold for
    (``setup_state``); a calibration whose state no longer matches is stale and never used."""

    pass_ms: dict
    packed: bool
    costs: DraftCosts
    state: tuple


class _Calibrations:
    """A drafter's calibrations by target, held weakly (a collected target takes its entry along, so an ``id``
    reused by another object finds nothing); never saved, copied or pickled."""

    def __init__(self):
        self.by_target = weakref.WeakKeyDictionary()

    def __deepcopy__(self, memo):
        return _Calibrations()

    def __reduce__(self):
        return (_Calibrations, ())


def setup_state(drafter, target) -> tuple:
    """What measured costs depend on: dtypes, devices, threads, which linears are packed, and the identity of the
    weights (storage and in-place version), so that moving, casting, repacking or changing either model makes an
    earlier calibration stale."""
    def weights(model):
        return tuple((p.data_ptr(), p._version, p.dtype, p.device.type) for p in model.parameters())

    return (torch.get_num_threads(), packed_count(target), packed_count(drafter), weights(target), weights(drafter))


def _calibrations(drafter) -> "_Calibrations":
    if not isinstance(drafter.__dict__.get("_slimspec_calibrations"), _Calibrations):
        drafter._slimspec_calibrations = _Calibrations()
    return drafter._slimspec_calibrations


def calibration_for(drafter, target) -> Optional[Calibration]:
    """``drafter``'s calibration for ``target`` in its current setup, or None (never measured, or stale)."""
    found = _calibrations(drafter).by_target.get(target)
    return found if found is not None and found.state == setup_state(drafter, target) else None


def calibrate(drafter, target, *, prepare: bool = True, max_k: Optional[int] = None, context: int = 64,
              repeats: int = 5) -> Calibration:
    """Measure on this machine, once per target setup (the explicit step; ``generate`` never times anything unless
    the "cost" schedule needs costs and none were measured):

    1. with ``prepare`` (``prepare_target``): one plain decoding pass of ``target`` as loaded and with its linears
       packed for oneDNN (``kernels_slimspec.optimize_for_cpu``); the target is left in the faster setup. Packing
       is faster on some CPUs and slower on others (docs/cpu-kernels.md), so it is measured, never assumed;
    2. the "cost" schedule's costs in that setup: a target pass over 1..max_k + 1 new tokens (max_k: the drafter's
       ``num_assistant_tokens``; with a draft tree, up to its node count, a few lengths measured and the rest
       interpolated), one drafter step, one tree level, and what a draft adds when sampling (medians of
       ``repeats``).

    The result is kept on the drafter for ``target`` (weakly) and used while ``setup_state`` is unchanged."""
    config = drafter.generation_config
    max_k = int(max_k if max_k is not None else config.num_assistant_tokens)
    total, _, top_k, frontier = tree_setting(config)
    nodes = longest_block(config)
    pass_ms = prepare_target(target, context, repeats) if prepare else {}
    lengths = list(range(1, max_k + 2))
    if nodes + 1 > len(lengths):  # longer passes at a few lengths, the rest interpolated
        lengths += sorted({n for n in (8, 12, 16, 24, 32, 48, 64, 96, 128) if max_k + 1 < n < nodes + 1}
                          | {nodes + 1})
    target_pass = interpolated(lengths, _target_pass_seconds(target, lengths, context, repeats))
    # a pass over more tokens is priced at least as high as one over fewer: a dip measured on a busy machine would
    # make larger trees and blocks look cheap (the conservative error: they are drafted less, never more)
    target_pass = list(itertools.accumulate(target_pass, max))
    pass_ms.setdefault("packed" if packed_count(target) else "as loaded", 1e3 * target_pass[0])
    costs = DraftCosts(target_pass=target_pass, draft=_draft_seconds(drafter, context, repeats),
                       tree_level=_draft_seconds(drafter, context, repeats, rows=frontier, k=top_k) if total else 0.0,
                       sample_draft=_sample_draft_seconds(drafter.config.vocab_size, repeats))
    calibration = Calibration(pass_ms=pass_ms, packed=bool(packed_count(target)), costs=costs,
                              state=setup_state(drafter, target))
    _calibrations(drafter).by_target[target] = calibration
    return calibration


def prepare_target(target, context: int = 64, repeats: int = 5, rounds: int = 2, earlier: dict = None) -> dict:
    """Time one plain decoding pass of ``target`` as loaded and with its linears packed for oneDNN, alternating
    for ``rounds`` rounds, and leave it in the faster setup -> {"as loaded": ms, "packed": ms} ("packed" missing
    where nothing can be packed). Each setup's time is its fastest round's median (a busy moment only adds time);
    ``earlier``: times from an earlier call to take the minimum with."""
    def timed(setup):
        ms = 1e3 * _target_pass_seconds(target, [1], context, repeats)[0]
        pass_ms[setup] = min(ms, pass_ms.get(setup, ms))

    pass_ms = dict(earlier or {})
    for _ in range(rounds):
        restore(target)
        if optimize_for_cpu(target, min_elements=0):
            timed("packed")
            restore(target)
        timed("as loaded")
    if pass_ms.get("packed", float("inf")) < pass_ms["as loaded"]:
        optimize_for_cpu(target, min_elements=0)
    else:
        restore(target)
    return pass_ms


def longest_block(config) -> int:
    """The most drafts a pass verifies beside a chain: a tree and its lookup branch, or a lookup block."""
    return tree_setting(config)[0] + hybrid_setting(config)[0]


def interpolated(lengths: list, seconds: list) -> list:
    """Seconds for every length 1..max(lengths), linear between the measured ``lengths`` (ascending)."""
    out = []
    for n in range(1, lengths[-1] + 1):
        hi = next(i for i, length in enumerate(lengths) if length >= n)
        lo = max(hi - 1, 0)
        span = lengths[hi] - lengths[lo]
        w = (n - lengths[lo]) / span if span else 1.0
        out.append(seconds[lo] + w * (seconds[hi] - seconds[lo]))
    return out


def measured_costs(drafter, target, max_k: int) -> DraftCosts:
    """The "cost" schedule's costs: from ``drafter.calibrate(target)`` when it measured this setup with drafts at
    least ``max_k`` long, else measured now (the target left as it is), with a warning saying so."""
    found = calibration_for(drafter, target)
    total = tree_setting(drafter.generation_config)[0]
    nodes = max(max_k, longest_block(drafter.generation_config))
    if found is None or len(found.costs.target_pass) < nodes + 1 or (total and not found.costs.tree_level):
        warnings.warn("SlimSpec's 'cost' schedule is timing this machine now (a few seconds, once per target "
                      "setup); call drafter.calibrate(target) beforehand to measure it explicitly, and to let it "
                      "choose whether packing the target's linears pays here.", stacklevel=4)
        found = calibrate(drafter, target, prepare=False, max_k=max_k)
    return found.costs


def _sample_draft_seconds(vocab: int, repeats: int) -> float:
    """What one draft adds to a sampling cycle beyond the forwards: its draw from the drafter's distribution (a
    softmax over the vocabulary and ``sample_from``) and its two rows in ``accept_sampled`` (the target's softmax
    and the overlap with the drafter's)."""
    logits = torch.randn(2, vocab)

    def one_draft():
        q = logits[:1].softmax(-1)
        sample_from(q)
        torch.minimum(logits[1:].softmax(-1), q).sum(-1)

    return _median_seconds(one_draft, repeats)


def _median(values: list) -> float:
    return sorted(values)[len(values) // 2]


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return _median(times[1:])


@torch.inference_mode()
def _target_pass_seconds(target, lengths: list, context: int, repeats: int) -> list:
    """Median seconds of a target forward over n new tokens after ``context`` cached ones, for each n in
    ``lengths`` (the loop's call: hidden states on when n > 1), measured in rounds that time every length once (a
    warm-up round first), so that a busy moment of the machine weighs on every length alike."""
    device = next(target.parameters()).device
    vocab = target.get_input_embeddings().weight.shape[0]
    ids = torch.randint(1, vocab, (1, context + max(lengths)), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)
    forward, cache = TargetForward(target), rollback_cache()
    forward(ids[:, :context], cache, features=False, keep=1)

    def verify(n):
        drop_last(cache, cache.get_seq_length() - context)
        forward(ids[:, context : context + n], cache, features=n > 1, keep=n)

    times = {n: [] for n in lengths}
    for round_ in range(repeats + 1):
        for n in lengths:
            t0 = time.perf_counter()
            verify(n)
            if round_:  # round 0 warms up
                times[n].append(time.perf_counter() - t0)
    return [_median(times[n]) for n in lengths]


@torch.inference_mode()
def _draft_seconds(drafter, context: int, repeats: int, rows: int = 0, k: int = 1) -> float:
    """Median seconds of one drafter step (body, head and greedy token choice) after ``context`` positions; with
    ``rows``, of one tree level instead: a forward over ``rows`` nodes and their top-``k`` choices."""
    cfg = drafter.config
    ids = torch.randint(1, cfg.vocab_size, (1, context + 1), generator=torch.Generator().manual_seed(0))
    ids = ids.to(drafter.device)
    feats = torch.randn(1, context, 3 * cfg.target_hidden_size, generator=torch.Generator().manual_seed(1))
    first = drafter(input_ids=ids[:, 1:], target_hidden_states=feats.to(drafter.device), use_cache=True,
                    logits_to_keep=1)
    draft_cache, g = first.past_key_values, first.last_hidden_state[:, -1:]
    scratch = torch.empty(max(rows, 1), first.logits.shape[-1], device=drafter.device)

    def draft():
        draft_cache.crop(context)
        step = drafter(input_ids=ids[:, :1], hidden_states=g, past_key_values=draft_cache, logits_to_keep=1)
        first_argmax(step.logits[:, -1])

    def level():
        draft_cache.crop(context)
        mask = torch.ones(rows, context + rows, dtype=torch.bool, device=drafter.device)
        step = drafter(input_ids=ids[:, :rows], hidden_states=g.expand(1, rows, g.shape[-1]),
                       past_key_values=draft_cache, position_ids=torch.full((rows,), context, device=drafter.device),
                       attention_mask=mask, logits_to_keep=0)
        top_log_probs_(scratch.copy_(step.logits[0]), k)

    return _median_seconds(level if rows else draft, repeats)


# ----------------------------------------------------------------------------------------------------------------------
# Prompt lookup (hybrid drafting)
# ----------------------------------------------------------------------------------------------------------------------
def lookup_continuation(ids: torch.Tensor, max_ngram: int, max_tokens: int, min_ngram: int = 1) -> torch.Tensor:
    """transformers' prompt-lookup match: for n = max_ngram down to ``min_ngram`` (1), the first (leftmost) earlier
    occurrence of the last n tokens that has a token after it; returns up to ``max_tokens`` tokens that followed it
    (they may run into the suffix itself, as in transformers). ids [L] -> continuation [0..max_tokens] (empty: no
    match)."""
    length = ids.shape[0]
    for n in range(min(max_ngram, length - 1), max(min_ngram, 1) - 1, -1):
        windows = ids[: length - 1].unfold(0, n, 1)  # [L - n, n]: every n-gram with at least one token after it
        hits = (windows == ids[length - n :]).all(dim=-1).nonzero()
        if hits.numel():
            start = int(hits[0]) + n
            return ids[start : start + max_tokens]
    return ids[:0]


def hybrid_setting(config) -> tuple:
    """A drafter generation_config's prompt lookup: (prompt_lookup_num_tokens, max_matching_ngram_size,
    min_matching_ngram_size), unset ones at their defaults (0 = no lookup, 2, 1); ValueError where they do not
    fit together."""
    tokens = int(getattr(config, "prompt_lookup_num_tokens", None) or 0)
    ngram = int(getattr(config, "max_matching_ngram_size", None) or 2)
    min_ngram = int(getattr(config, "min_matching_ngram_size", None) or 1)
    if tokens < 0 or not 1 <= min_ngram <= ngram:
        raise ValueError(f"the drafter's prompt_lookup_num_tokens ({tokens}) must be >= 0 and "
                         f"1 <= min_matching_ngram_size ({min_ngram}) <= max_matching_ngram_size ({ngram}).")
    return tokens, ngram, min_ngram


def point_mass_logits(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Logits of drafts drawn with certainty (a lookup token is a point mass): 0 at the token, -inf elsewhere.
    tokens [1, K] -> [1, K, vocab_size] float32, so speculative sampling accepts token x with prob min(1, p(x))."""
    logits = torch.full((1, tokens.shape[1], vocab_size), float("-inf"), device=tokens.device)
    return logits.scatter_(-1, tokens.unsqueeze(-1), 0.0)


# ----------------------------------------------------------------------------------------------------------------------
# Tree drafting (EAGLE-2 dynamic trees): many guesses per position, verified in one target forward
# ----------------------------------------------------------------------------------------------------------------------
def tree_setting(config) -> tuple:
    """A drafter generation_config's tree: (tree_total_tokens, tree_depth, tree_top_k, tree_frontier); total 0 (or
    unset) = chain drafting. Defaults where a tree is on: depth 6, top-k 4, frontier = top-k (EAGLE-2: the top-k
    nodes of a level are expanded; a frontier of 1 expands only the most probable one, a chain whose every
    position also offers its top-k alternatives, at a chain's drafting cost). ValueError naming the setting where
    they do not fit."""
    total = getattr(config, "tree_total_tokens", None) or 0
    depth = getattr(config, "tree_depth", None) or 6
    top_k = getattr(config, "tree_top_k", None) or 4
    frontier = getattr(config, "tree_frontier", None) or top_k
    for name, value in (("tree_total_tokens", total), ("tree_depth", depth), ("tree_top_k", top_k),
                        ("tree_frontier", frontier)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"the drafter's generation_config.{name} is {value!r}; it must be a whole number >= 0 "
                             f"(tree_total_tokens 0 = chain drafting).")
    if total and (depth < 1 or top_k < 1):
        raise ValueError(f"a draft tree (tree_total_tokens={total}) needs tree_depth >= 1 and tree_top_k >= 1; got "
                         f"tree_depth={depth}, tree_top_k={top_k}.")
    return int(total), int(depth), int(top_k), int(frontier)


def tree_logit_scale(config) -> float:
    """A drafter generation_config's ``tree_logit_scale`` alpha (default 1, EAGLE-2's scores): tree nodes are scored
    with log softmax(alpha * draft logits), so that exp(score) tracks the chance that the target's greedy choice is
    the node. It reorders nodes across branches and depths (which nodes are expanded and kept), never a node's
    children. Greedy only: a sampled node is accepted with the target's probability of it, which the drafter's own
    probabilities (alpha = 1) estimate. A drafter trained by KL is underconfident in its first choice;
    ``slimspec-train tree-scale`` measures alpha on text the drafter never trained on. ValueError unless a number
    > 0."""
    value = getattr(config, "tree_logit_scale", None)
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"the drafter's generation_config.tree_logit_scale is {value!r}; it must be a number > 0 "
                         f"(1: node scores are the drafter's own log-probabilities).")
    return float(value)


@dataclass
class DraftTree:
    """Drafted tokens as a tree rooted at the context's last token; nodes are listed parents before children.

    tokens[i]: target token id; parents[i]: the parent node (-1: the root); depths[i]: 1 for the first draft
    after the root; scores[i]: the drafter's cumulative log-probability of the path to node i (of
    softmax(alpha * logits), alpha = ``tree_logit_scale``; 0 for lookup nodes: drawn with certainty);
    sources[i]: {"drafter"} | {"lookup"} | both."""

    tokens: list = field(default_factory=list)
    parents: list = field(default_factory=list)
    depths: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    sources: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, token: int, parent: int, score: float, source: str) -> int:
        self.tokens.append(int(token))
        self.parents.append(parent)
        self.depths.append(1 + (self.depths[parent] if parent >= 0 else 0))
        self.scores.append(float(score))
        self.sources.append({source})
        return len(self.tokens) - 1

    def ancestors(self, node: int) -> list:
        """``node``'s ancestors, its parent first (none for a child of the root)."""
        out = []
        while self.parents[node] >= 0:
            node = self.parents[node]
            out.append(node)
        return out

    def path(self, node: int) -> list:
        """The tokens from the root's first child down to ``node`` (none for the root, -1)."""
        return [self.tokens[i] for i in reversed([node] + self.ancestors(node))] if node >= 0 else []

    def child(self, parent: int, token: int) -> int:
        """The node under ``parent`` holding ``token``, or -1."""
        for i, (p, t) in enumerate(zip(self.parents, self.tokens)):
            if p == parent and t == token:
                return i
        return -1

    def pruned(self, keep: int) -> "DraftTree":
        """The ``keep`` most probable nodes (by score; ties: the earlier drafted), which is always a tree (a child
        never scores above its parent and is drafted after it), in drafting order."""
        ranked = sorted(range(len(self)), key=lambda i: (-self.scores[i], i))[:keep]
        kept = sorted(ranked)
        new = {old: j for j, old in enumerate(kept)}
        return DraftTree([self.tokens[i] for i in kept], [new.get(self.parents[i], -1) for i in kept],
                         [self.depths[i] for i in kept], [self.scores[i] for i in kept],
                         [set(self.sources[i]) for i in kept])

    def ancestry(self) -> torch.Tensor:
        """[N + 1, N + 1] bool over the root (row/column 0) and the nodes (i + 1): True where column j is row i
        itself or one of its ancestors."""
        n = len(self)
        seen = torch.eye(n + 1, dtype=torch.bool)
        seen[1:, 0] = True
        for i, parent in enumerate(self.parents):
            if parent >= 0:
                seen[i + 1] |= seen[parent + 1]
        return seen


def top_choices(log_p, k: int, chunk: int = 1024) -> tuple:
    """The k largest entries of each row of log_p [F, V] -> (values [F, k], indices [F, k]), the first being the
    row's first maximum, as ``argmax`` (and so the chain) picks it.

    Two stages, exact: split each row into chunks of ``chunk`` entries; the k largest of the row lie in the k chunks
    with the largest maxima (an entry of any other chunk has k chunk maxima, so k entries, above it), so ``topk``
    runs over those k chunks (and the tail past the last whole chunk) only. A chunk maximum (``amax``) streams the
    row at memory speed, where one ``topk`` over a large vocabulary is several times slower. ``topk`` may order equal
    values otherwise than ``argmax``: rows whose first two values tie are put in argmax's order."""
    rows, vocab = log_p.shape
    whole = vocab // chunk
    if whole <= k:
        values, indices = log_p.topk(k, dim=-1)
    else:
        parts = log_p.as_strided((rows, whole, chunk), (log_p.stride(0), chunk, log_p.stride(1)))  # a view
        best = parts.amax(-1).topk(k, dim=-1).indices.sort(dim=-1).values  # [F, k] chunks, in index order
        starts = best * chunk
        candidates = [parts.gather(1, best.unsqueeze(-1).expand(rows, k, chunk)).view(rows, k * chunk)]
        if whole * chunk < vocab:  # the tail
            candidates.append(log_p[:, whole * chunk :])
        values, at = torch.cat(candidates, dim=-1).topk(k, dim=-1)
        inside = at < k * chunk
        indices = torch.where(inside, starts.gather(1, (at // chunk).clamp(max=k - 1)) + at % chunk,
                              whole * chunk + at - k * chunk)
    if k > 1 and bool((values[:, 0] == values[:, 1]).any()):
        for r, (row, first) in enumerate(zip(indices.tolist(), first_argmax(log_p).view(-1).tolist())):
            if row[0] != first:
                row.remove(first) if first in row else row.pop()
                indices[r] = torch.tensor([first] + row, device=indices.device)
        values = log_p.gather(-1, indices)
    return values, indices


def top_log_probs_(scores, k: int, alpha: float = 1.0) -> tuple:
    """The k most probable entries of softmax(alpha * scores) in each row of fp32 scores [F, V] -> (log p [F, k],
    indices [F, k]), the first being argmax's (``top_choices``); ``scores`` is overwritten (``log_normalizer_``).
    What a tree level computes, in the loop (``_tree_choices``) and when timed (``_draft_seconds``)."""
    values, indices = top_choices(scores, k)
    return alpha * values - log_normalizer_(scores, alpha), indices


def log_normalizer_(scores, alpha: float = 1.0):
    """log sum_v exp(alpha scores[:, v]) per row of scores [F, V] (fp32) -> [F, 1], computed in place: ``scores`` is
    overwritten. m + log sum exp(alpha x - m) with m = alpha max x; no temporary the size of the rows (a fresh
    [F, V] buffer per call costs page faults that can take longer than the arithmetic)."""
    top = scores.amax(-1, keepdim=True)
    scores.sub_(top).mul_(alpha).exp_()
    return scores.sum(-1, keepdim=True).log_().add_(top, alpha=alpha)


def attention_windows(target) -> dict:
    """{layer type: sliding window or None} of the target's decoder layers (``layer_types`` where the config has
    them; else every layer slides where ``sliding_window`` is set). ValueError for what a tree mask cannot
    express: chunked attention, or an attention implementation that takes no 4D mask."""
    text = target.config.get_text_config() if hasattr(target.config, "get_text_config") else target.config
    window = getattr(text, "sliding_window", None)
    types = set(getattr(text, "layer_types", None) or ["sliding_attention" if window else "full_attention"])
    if types - {"full_attention", "sliding_attention"}:
        raise ValueError(f"tree drafting verifies with an attention mask over full or sliding-window layers; this "
                         f"target has {sorted(types)}. Set the drafter's generation_config.tree_total_tokens = 0 "
                         f"(chain drafting).")
    implementation = getattr(text, "_attn_implementation", None) or "sdpa"
    if implementation not in ("sdpa", "eager"):
        raise ValueError(f"tree drafting passes the target a 4D attention mask, which its attention implementation "
                         f"{implementation!r} does not take: use target.set_attn_implementation('sdpa'), or set the "
                         f"drafter's generation_config.tree_total_tokens = 0 (chain drafting).")
    return {kind: (window if kind == "sliding_attention" else None) for kind in sorted(types)}


def tree_attention(tree: DraftTree, past: int, windows: dict, dtype, device) -> tuple:
    """The verification forward's positions and masks for [root] + tree nodes after ``past`` cached positions:
    position_ids [1, N + 1] = past + depth; mask [1, 1, N + 1, past + N + 1], 0 where a node may attend (the
    context and its own ancestors, within a sliding layer's window), the dtype's lowest value elsewhere. One mask,
    or {layer type: mask} where the target mixes layer types (the form transformers' models with several layer
    types accept)."""
    positions = past + torch.tensor([0] + tree.depths, device=device)
    allowed = torch.cat([torch.ones(len(tree) + 1, past, dtype=torch.bool), tree.ancestry()], dim=1).to(device)
    key_positions = torch.cat([torch.arange(past, device=device), positions])
    lowest = torch.finfo(dtype).min
    masks = {}
    for kind, window in windows.items():
        ok = allowed if window is None else allowed & (positions[:, None] - key_positions[None, :] < window)
        masks[kind] = torch.zeros(ok.shape, dtype=dtype, device=device).masked_fill_(~ok, lowest)[None, None]
    mask = next(iter(masks.values())) if len(masks) == 1 else masks
    return positions[None], mask


_MASKS_BY_LAYER_TYPE = {}  # target class -> whether its forward takes {layer type: 4D mask}


def check_masks_by_layer_type(target, windows: dict) -> None:
    """Raise ValueError where ``target`` (mixing layer types) does not take a {layer type: mask} attention mask:
    tried once per target class with a one-token forward."""
    kind = type(target)
    if kind not in _MASKS_BY_LAYER_TYPE:
        device, dtype = target.get_input_embeddings().weight.device, target.dtype
        masks = {name: torch.zeros(1, 1, 1, 1, dtype=dtype, device=device) for name in windows}
        try:
            with torch.no_grad():
                target(input_ids=torch.ones(1, 1, dtype=torch.long, device=device), attention_mask=masks,
                       use_cache=False)
            _MASKS_BY_LAYER_TYPE[kind] = True
        except (TypeError, AttributeError, KeyError, ValueError, RuntimeError):
            _MASKS_BY_LAYER_TYPE[kind] = False
    if not _MASKS_BY_LAYER_TYPE[kind]:
        raise ValueError(f"{kind.__name__} mixes {sorted(windows)} layers but its forward does not take one "
                         f"attention mask per layer type, which a tree needs. Set the drafter's "
                         f"generation_config.tree_total_tokens = 0 (chain drafting).")


def keep_positions(cache, start: int, rows: list) -> None:
    """Of the positions a forward appended to ``cache`` from ``start``, keep ``rows`` (ascending offsets from
    ``start``), in order, and drop the rest: the accepted path of a verified tree. Rows that already form a prefix
    only crop; otherwise each layer's ``keys``/``values`` (the public tensors of transformers' ``DynamicLayer``)
    are gathered in place first."""
    if rows != list(range(len(rows))):
        layers = getattr(cache, "layers", None)
        if layers is None or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
            raise RuntimeError("this transformers release's DynamicCache has no per-layer keys/values tensors "
                               "(cache.layers[i].keys): tree drafting cannot keep the accepted path. Set the "
                               "drafter's generation_config.tree_total_tokens = 0.")
        index = torch.tensor(rows, device=layers[0].keys.device) + start
        for layer in layers:
            for tensor in (layer.keys, layer.values):
                tensor[..., start : start + len(rows), :] = tensor.index_select(-2, index)
    drop_last(cache, cache.get_seq_length() - start - len(rows))


def tree_row(logits, node: int, logits_processor, ids, tokens: list):
    """The target's processed logits at ``node`` (-1: the root) [1, V]: row node + 1 of logits [1, N + 1, V] (in
    their own dtype where no processor runs, else in fp32), the processors seeing its own prefix (the context
    ``ids``, then ``tokens``, the path's tokens down to it)."""
    row = logits[:, node + 1]
    if logits_processor is None:
        return row
    return logits_processor(torch.cat([ids, ids.new_tensor([tokens])], dim=-1), row.float())


def accept_tree_greedy(tree: DraftTree, logits, logits_processor, ids) -> tuple:
    """Walk the tree along the target's own choices: from the root (logits row 0), y = argmax of the processed
    row; descend to the child holding y (its row is node + 1) while there is one. logits [1, N + 1, V] ->
    (path: the accepted nodes, tokens [1, n + 1] = their tokens then the target's own, scores [1, n + 1, V] fp32:
    the processed rows that chose them). Processors see each row's own prefix, as in plain decoding. Only the
    walked rows are read (a tree's other rows never become fp32)."""
    node, path, tokens, rows = -1, [], [], []
    while True:
        row = tree_row(logits, node, logits_processor, ids, tokens)
        rows.append(row)
        choice = int(first_argmax(row))
        tokens.append(choice)
        node = tree.child(node, choice)
        if node < 0:
            break
        path.append(node)
    return path, ids.new_tensor([tokens]), torch.stack(rows, dim=1).float()


def accept_tree_sampled(tree: DraftTree, logits, logits_processor, ids) -> tuple:
    """Recursive rejection sampling over the tree (SpecInfer; EAGLE's rule for top-k children). From the root, with
    p the target's processed distribution at the node, its children are tried in the tree's order: child x is
    accepted with probability p(x) (a drafted child is a point mass: which children the tree holds does not
    depend on the target's randomness); on rejection p <- ``without``(p, x) and the next child is tried; when none
    is accepted the token is drawn from what is left of p. Each token follows the target's distribution exactly:
    P(x_1) = p(x_1), and any other y is drawn with (1 - p(x_1)) * p(y) / (1 - p(x_1)) = p(y) (and so on down the
    siblings). Arguments and returns as ``accept_tree_greedy``."""
    children = {}
    for i, parent in enumerate(tree.parents):
        children.setdefault(parent, []).append(i)
    node, path, tokens, rows = -1, [], [], []
    while True:
        row = tree_row(logits, node, logits_processor, ids, tokens)
        rows.append(row)
        p, chosen = row[0].float().softmax(-1), -1
        for child in children.get(node, []):
            if float(torch.rand((), device=p.device)) < float(p[tree.tokens[child]]):
                chosen = child
                break
            p = without(p, tree.tokens[child])
        if chosen < 0:
            tokens.append(int(sample_from(p[None])))
            break
        tokens.append(tree.tokens[chosen])
        path.append(chosen)
        node = chosen
    return path, ids.new_tensor([tokens]), torch.stack(rows, dim=1).float()


def without(p, token: int):
    """p [V] with ``token`` removed, renormalized: what is left to draw from after a point-mass draft of ``token``
    was rejected (rejected with probability 1 - p(token) > 0, so something is left)."""
    p = p.clone()
    p[token] = 0.0
    return p / p.sum()


# ----------------------------------------------------------------------------------------------------------------------
# The proposer: what the drafter (and prompt lookup) guess each pass
# ----------------------------------------------------------------------------------------------------------------------
class SlimSpecProposer:
    """Proposes the drafts of each pass with an EAGLE-3 drafter fed by the target's hidden states.

    Pass n (after the target verified pass n-1): the target's last forward returned hidden states for positions
    [seen, cur_len - 1) (the previous bonus token and the accepted drafts); rejected positions are never used.
    The drafter's cache is cropped back to ``stable`` (dropping its own speculative steps), the new
    (feature_t, token_{t+1}) pairs are appended, and K tokens are drafted autoregressively from the drafter's own
    pre-norm outputs. (Without prompt lookup ``seen == stable`` at every pass.)

    Sampling: draft token k is drawn from softmax(l_k), where l_k are the drafter's logits over the *full* target
    vocabulary (-inf outside a truncated draft vocabulary) after the same logits processors the target uses
    (temperature, top-k, top-p, ...), and exactly those l_k are returned, so speculative sampling
    (``accept_sampled``) reproduces the target's distribution.

    Hybrid drafting (prompt lookup + the drafter), on when the drafter's generation_config sets
    ``prompt_lookup_num_tokens`` (None or 0: off, the default) and optionally ``max_matching_ngram_size`` (default
    2), transformers' own names, and ``min_matching_ngram_size`` (default 1, as transformers' prompt lookup), saved
    and reloaded with the drafter. Each pass:

    1. the target's features of the verified positions are kept (``observe``: they exist only in that pass's
       outputs);
    2. lookup: if the last n tokens (n = max_matching_ngram_size down to min_matching_ngram_size) occurred earlier
       in input_ids, the block is the tokens that followed (``lookup_continuation``: up to prompt_lookup_num_tokens,
       never past max_length - 1, ending at an eos as the drafter's blocks do); under the "cost" schedule only as
       many of them as pay, and none where the drafter's chain (or plain decoding) is expected to be faster
       (``lookup_length``: lookup acceptance learned from this call's lookup passes, verification priced by the
       measured costs);
    3. else (no match, or no block) the drafter ingests every kept position in one forward and drafts its K
       tokens exactly as without lookup.

    Why a minimum: alone, prompt lookup has nothing better than a one-token match; beside a trained drafter, a short
    match is the weaker guess. Ingesting lazily costs nothing in quality (the drafter sees the same positions, only
    later and in one batch) and saves the drafter's forward, whose full-vocabulary head reads all its weights for
    one row, on every lookup pass.

    A block comes from one source. Lossless: a lookup token is a draft drawn with certainty, so for sampling its
    logits row is a point mass (``point_mass_logits``) and speculative sampling keeps the target's distribution;
    greedy verification is unchanged. ``stats.source_per_pass`` records the source; the "cost" and "heuristic"
    schedules learn only from drafter passes (lookup acceptance is another distribution).
    """

    def __init__(self, drafter, target, generation_config, logits_processor, prompt_length: int):
        self.drafter = drafter
        self.layer_ids = list(drafter.config.target_layer_ids)
        self.num_states = drafter.config.target_num_hidden_layers + 1  # embedding output + one per layer
        self.requires_features = True  # whether the target's forwards must return hidden states
        self.do_sample = bool(generation_config.do_sample)
        self.logits_processor = logits_processor
        self.max_length = generation_config.max_length
        draft_config = drafter.generation_config
        self.schedule = getattr(draft_config, "num_assistant_tokens_schedule", "constant") or "constant"
        self.num_assistant_tokens = int(draft_config.num_assistant_tokens)
        self.confidence_threshold = float(getattr(draft_config, "assistant_confidence_threshold", 0.0) or 0.0)
        self.lookup_tokens, self.ngram_size, self.min_ngram_size = hybrid_setting(draft_config)  # tokens 0: off
        self.tree_total, self.tree_depth, self.tree_top_k, self.tree_frontier = tree_setting(draft_config)
        # sharper scores track greedy acceptance (P(node = the target's argmax)); a sampled node is accepted with the
        # target's probability of it, which the drafter's own (KL-trained) probabilities estimate
        scale = tree_logit_scale(draft_config)  # validated either way
        self.tree_scale = 1.0 if self.do_sample else scale
        self.scratch = None  # fp32 [tree_frontier, V_d]: a tree level's scores (``_tree_choices``)
        self.tree_levels = 0  # levels the last tree drafted
        self.windows = attention_windows(target) if self.tree_total else None
        if self.windows is not None and len(self.windows) > 1:
            check_masks_by_layer_type(target, self.windows)
        self.source = "none"  # who proposed the current block: "drafter" | "lookup" | "none"
        eos = generation_config.eos_token_id
        self.eos_ids = set() if eos is None else set([eos] if isinstance(eos, int) else [int(e) for e in eos])
        self.cache = None
        self.stable = 0  # drafter cache positions backed by target features
        self.pending = []  # [1, n, 3d] target features of verified positions not yet ingested: [stable, seen)
        self.stats = SlimSpecGenerateStats(prompt_length=prompt_length)
        self.acceptance = None
        # the "cost" schedule's view of trees: what tree passes produced and when to try again (``TreeRecord``),
        # accepted vs predicted drafter nodes, the last tree's cost
        self.tree_record, self.tree_seen, self.tree_cost = TreeRecord(), [0.0, 0], None
        if self.schedule == "cost":
            self._start_cost_schedule(target, draft_config, generation_config)

    def _start_cost_schedule(self, target, draft_config, generation_config):
        """Draft length from this machine's measured costs and the drafter's acceptance (``choose_draft_length``),
        revised after every pass as acceptance is observed; num_assistant_tokens is the longest draft allowed.
        When no length pays, this generation decodes plainly: no drafts and no hidden states asked of the target."""
        self.max_k = self.num_assistant_tokens
        self.costs = measured_costs(self.drafter, target, self.max_k)
        if self.do_sample:  # each draft also costs its draw and its rows in the acceptance test (the records shared)
            self.costs = replace(self.costs, draft=self.costs.draft + self.costs.sample_draft)
        # what earlier calls with these costs saw (greedy and sampling accept differently: a record each)
        self.tree_record = self.costs.sampled_tree_record if self.do_sample else self.costs.tree_record
        saved = getattr(draft_config, "slimspec_acceptance", None) or []  # measured greedy
        if self.do_sample:
            # Sampling accepts less than the saved (greedy) acceptance. Over the calls with the same sampling
            # settings here, shared estimates learn it (from the greedy prior weighted as 4 passes); each call
            # starts from theirs, weighted as 4 passes, adapts to its own text and adds what it sees to them.
            key = sampling_key(generation_config)
            if key not in self.costs.sampled_acceptance:
                self.costs.sampled_acceptance[key] = (
                    AcceptanceEstimate(saved, self.max_k, strength=4.0, horizon=256),
                    AcceptanceEstimate([self.LOOKUP_PRIOR], max(self.lookup_tokens, 1), strength=4.0, horizon=256))
            drafts, lookups = self.costs.sampled_acceptance[key]
            self.acceptance = AcceptanceEstimate(drafts.rates(), self.max_k, strength=4.0, shared=drafts)
            self.lookup_acceptance = AcceptanceEstimate(lookups.rates(), self.lookup_tokens, strength=4.0,
                                                        shared=lookups)
        else:
            self.acceptance = AcceptanceEstimate(saved, self.max_k, strength=16.0)
            self.lookup_acceptance = AcceptanceEstimate([self.LOOKUP_PRIOR], self.lookup_tokens, strength=4.0)
        self.num_assistant_tokens = choose_draft_length(self.costs, self.acceptance.rates(), self.max_k)
        if self.do_sample and self.num_assistant_tokens == 0:  # one probe per call keeps the shared estimate
            self.num_assistant_tokens = 1                       # learning (the next choice may be plain decoding)
        self.stats.chosen_draft_lengths.append(self.num_assistant_tokens)
        if self.num_assistant_tokens == 0 and not self.tree_total:  # a tree is tried before giving up
            self.requires_features = False

    # -- the "cost" schedule's shape: chain or tree, and lookup blocks ---------------------------------------------
    LOOKUP_PRIOR = 0.8  # prior P(lookup token accepted | the ones before it were), worth 4 observations

    def lookup_length(self, found: int) -> int:
        """How many of a lookup match's ``found`` tokens to verify under the "cost" schedule: the length with the
        best expected rate (``lookup_choice``), if that beats the chain the schedule chose (or plain decoding);
        else 0 (no lookup block this pass)."""
        length, rate = self.lookup_choice(found)
        return length if rate > self.chain_rate() else 0

    def lookup_choice(self, found: int) -> tuple:
        """The lookup block length l <= ``found`` with the best expected rate, expected_tokens(lookup acceptance, l)
        / (target_pass[l] + overhead) -> (l, that rate)."""
        rates = self.lookup_acceptance.rates()
        best, best_rate = 0, 0.0
        for length in range(1, min(found, len(self.costs.target_pass) - 1) + 1):
            rate = expected_tokens(rates, length) / (self.costs.target_pass[length] + self.costs.overhead)
            if rate > best_rate:
                best, best_rate = length, rate
        return best, best_rate

    TREE_PRIOR = 8.0  # predicted tokens the prior calibration of 1 weighs

    def chain_rate(self) -> float:
        """Expected tokens per second of the chain the "cost" schedule chose (K = 0: plain decoding)."""
        k, costs = self.num_assistant_tokens, self.costs
        if k == 0:
            return 1.0 / costs.target_pass[0]
        return expected_tokens(self.acceptance.rates(), k) / chain_seconds(costs, k)

    def tree_calibration(self) -> float:
        """Accepted drafter nodes per predicted one (sum of exp(score)) over this call's tree passes, after a prior
        of 1 worth TREE_PRIOR predicted tokens."""
        predicted, accepted = self.tree_seen
        return (self.TREE_PRIOR + accepted) / (self.TREE_PRIOR + predicted)

    # -- one pass -------------------------------------------------------------------------------------------------
    def wants_tree(self, input_ids) -> bool:
        """Whether the next pass drafts a tree (else a chain, or nothing). The "cost" schedule drafts a tree while
        its rate so far (tokens its passes produced over their measured cost) beats plain decoding and the chain
        the schedule chose, priced the same way on the same passes (each tree's most probable chain of that
        length: what the chain would have produced), and tries it again after 8 chain passes (twice as many each
        time it still loses, up to 64). The tree's priced cost is corrected by how much longer its passes took
        than priced, relative to chain passes (``TreeRecord.scale``); while the tree wins, one chain pass after
        every ``probe`` tree passes keeps that comparison current. What tree passes produced is kept with the
        measured costs, so later calls on the same target setup start from it. In a hybrid, a pass whose context
        has a lookup match priced above the tree's rate takes the lookup block instead (``propose``). The other
        schedules always draft the tree."""
        if not self.tree_total or not self.requires_features:
            return False
        record = self.tree_record
        if self.acceptance is None or not record.tree_cost:
            return True
        tree_rate = record.tree_tokens / (record.tree_cost * record.scale())
        if tree_rate >= max(record.chain_tokens / record.chain_cost, 1.0 / self.costs.target_pass[0]):
            if self._lookup_beats(input_ids, tree_rate):
                return False  # a lookup block that pays more than the tree: propose() takes it
            record.retry = TreeRecord.retry
            record.tree_passes += 1
            if record.tree_passes > record.probe and self.num_assistant_tokens:  # keep the chain timed
                record.tree_passes = 0
                return False
            return True
        record.chain_passes += 1
        if record.chain_passes >= record.retry:
            record.chain_passes, record.retry = 0, min(2 * record.retry, 64)
            return True
        if self.num_assistant_tokens == 0 and tree_rate < 1.0 / self.costs.target_pass[0]:
            self.requires_features = False  # neither pays: plain decoding from here on
        return False

    def _lookup_beats(self, input_ids, rate: float) -> bool:
        """Whether prompt lookup (when on) finds a match here whose best block is priced above ``rate``."""
        budget = self.max_length - input_ids.shape[1] - 1
        if not self.lookup_tokens or budget <= 0:
            return False
        found = self._lookup_continuation(input_ids, budget).numel()
        return found > 0 and self.lookup_choice(found)[1] > rate

    def propose_tree(self, input_ids) -> DraftTree:
        """input_ids [1, cur_len] -> the pass's DraftTree: the drafter's (``_draft_tree``), at most
        ``tree_total_tokens`` nodes and ``tree_depth`` deep, plus prompt lookup's continuation as one more branch
        where the context has a match (hybrid tree). Never deeper than max_length allows."""
        budget = self.max_length - input_ids.shape[1] - 1  # the target adds one token after the deepest node
        tree = DraftTree()
        if budget > 0:
            depth = min(self.tree_depth, budget)
            tree = self._draft_tree(input_ids, *self._ingest(input_ids), depth)
            if self.acceptance is not None:  # the "cost" schedule: as many nodes as pay
                levels = self.tree_levels
                size, _ = choose_tree_size(self.costs, tree.scores, self.tree_calibration(), levels)
                tree = tree.pruned(size)
                self.tree_cost = tree_seconds(self.costs, size, levels)
        if self.lookup_tokens and budget > 0:
            self._add_lookup_branch(tree, input_ids, budget)
        self.source = "tree"
        return tree

    @torch.no_grad()
    def _draft_tree(self, input_ids, g, logits, depth: int) -> DraftTree:
        """EAGLE-2's dynamic tree from the drafter's state after ingesting (g [1, 1, d], logits [1, V_d]):

            level 1:    the top_k tokens of softmax(logits), score = log p (``_tree_choices``)
            level l+1:  one drafter forward over the frontier (the tree_frontier level-l nodes by score, eos
                        excluded; EAGLE-2's frontier is top_k),
                        each node attending to the context and its own ancestors; each gets top_k children,
                        score = parent score + log p(child)
            stop:       at ``depth``, or (the "cost" schedule) where ``next_level_pays`` finds that one more level
                        cannot raise the tree's rate at the measured costs
            prune:      the tree_total_tokens best-scoring nodes of all levels (``DraftTree.pruned``)

        The drafter's cache keeps the frontier nodes' keys (``_ingest`` crops them away next pass)."""
        drafter = self.drafter
        tree = DraftTree()
        frontier, parent_g = [], g  # frontier nodes and, per node, the drafter state it continues [1, F, d]
        slots = {}  # expanded node -> its position in the drafter's cache
        for level in range(1, depth + 1):
            if level > 1:
                start = self.cache.length
                mask = torch.zeros(len(frontier), start + len(frontier), dtype=torch.bool)
                mask[:, : self.stable] = True
                for row, node in enumerate(frontier):
                    mask[row, [slots[a] for a in tree.ancestors(node)] + [start + row]] = True
                    slots[node] = start + row
                step = drafter(input_ids=torch.tensor([[tree.tokens[i] for i in frontier]], device=drafter.device),
                               hidden_states=parent_g, past_key_values=self.cache,
                               position_ids=torch.full((len(frontier),), self.stable + level - 2,
                                                       device=drafter.device),
                               attention_mask=mask.to(drafter.device), logits_to_keep=0)
                logits, states = step.logits[0], step.last_hidden_state
            else:
                states = g
            log_p, tokens = self._tree_choices(input_ids, tree, frontier, logits)
            base = [tree.scores[i] for i in frontier] or [0.0]
            children = [(tree.add(token, frontier[r] if frontier else -1, base[r] + lp, "drafter"), r)
                        for r, (row_tokens, row_lp) in enumerate(zip(tokens.tolist(), log_p.tolist()))
                        for token, lp in zip(row_tokens, row_lp)]
            expandable = [c for c in children if tree.tokens[c[0]] not in self.eos_ids]  # nothing follows an eos
            best = sorted(expandable, key=lambda c: -tree.scores[c[0]])[: self.tree_frontier]  # stable sort
            if not best:
                break
            frontier = [node for node, _ in best]
            parent_g = states[:, [r for _, r in best]]
            logits = None
            if self.acceptance is not None and level < depth and not next_level_pays(
                    self.costs, tree.scores, [tree.scores[i] for i in frontier], self.tree_calibration(), level):
                break  # the "cost" schedule: no deeper than pays
        self.tree_levels = level
        return tree.pruned(self.tree_total)

    def _tree_choices(self, input_ids, tree: DraftTree, frontier: list, logits) -> tuple:
        """The top_k children of each frontier node (the root for none) from its draft logits [F, V_d] -> (log p
        [F, k], target ids [F, k]), p = softmax(alpha * logits) with alpha = ``tree_logit_scale`` (the same top_k
        for any alpha > 0). Where the target's logits processors reshape its choice (a repetition penalty, a minimum
        length), each row is processed first with its own path as the prefix, as the chain's drafts are."""
        k = min(self.tree_top_k, logits.shape[-1])
        if self.logits_processor is None:
            if self.scratch is None or self.scratch.shape[0] < logits.shape[0]:  # fp32 rows reused level to level
                self.scratch = torch.empty(max(self.tree_frontier, 1), logits.shape[-1], device=logits.device)
            log_p, draft_ids = top_log_probs_(self.scratch[: logits.shape[0]].copy_(logits), k, self.tree_scale)
            return log_p, self.drafter.draft_to_target_ids(draft_ids)
        full = self.drafter.to_target_logits(logits).float().to(input_ids.device)
        scores = torch.cat([self.logits_processor(torch.cat([input_ids, input_ids.new_tensor(
            [tree.path(node)]).view(1, -1)], dim=-1), full[r : r + 1]) for r, node in enumerate(frontier or [-1])])
        return top_log_probs_(scores, k, self.tree_scale)

    def _add_lookup_branch(self, tree: DraftTree, input_ids, budget: int) -> None:
        """Prompt lookup's continuation (``lookup_continuation``, ending at an eos) as a branch from the root: a
        token the drafter also proposed at that place is shared (sources "drafter" and "lookup")."""
        node = -1
        for token in self._lookup_continuation(input_ids, budget).tolist():
            child = tree.child(node, token)
            if child >= 0:
                tree.sources[child].add("lookup")
            else:
                child = tree.add(token, node, tree.scores[node] if node >= 0 else 0.0, "lookup")
            node = child

    def propose(self, input_ids):
        """input_ids: [1, cur_len] -> (candidate_ids [1, cur_len + K], draft logits [1, K, V] when sampling, else
        None). The rule (class docstring): a lookup block if the context has a match, else the drafter's (ingesting
        what was kept)."""
        self.source = "none"
        budget = self.max_length - input_ids.shape[1] - 1  # the target adds one token after the block
        block = self._lookup(input_ids, budget) if self.lookup_tokens and budget > 0 else None
        if block is not None:
            self.source = "lookup"
            return block
        K = min(self.num_assistant_tokens, budget)
        if K <= 0 or not self.requires_features:
            return input_ids, None
        self.source = "drafter"
        return self._draft(input_ids, *self._ingest(input_ids), K)

    def _lookup_continuation(self, input_ids, budget: int):
        """Prompt lookup's continuation (``lookup_continuation``) of at most min(prompt_lookup_num_tokens, budget)
        tokens, ending at its first eos (nothing after one can be accepted) -> [0..K] token ids."""
        found = lookup_continuation(input_ids[0], self.ngram_size, min(self.lookup_tokens, budget),
                                    min_ngram=self.min_ngram_size)
        for i, token in enumerate(found.tolist()):
            if token in self.eos_ids:
                return found[: i + 1]
        return found

    def _lookup(self, input_ids, budget: int):
        """The lookup block, or None without a match: (candidate_ids [1, cur_len + K], point-mass logits [1, K, V]
        when sampling, else None), K <= min(prompt_lookup_num_tokens, budget), ending at the first eos."""
        found = self._lookup_continuation(input_ids, budget)
        if self.acceptance is not None and found.numel():  # the "cost" schedule: a block only where it pays
            found = found[: self.lookup_length(found.numel())]
        if found.numel() == 0:
            return None
        drafts = found.view(1, -1)
        ids = torch.cat([input_ids, drafts], dim=-1)
        return ids, (point_mass_logits(drafts, self.drafter.config.vocab_size) if self.do_sample else None)

    def _draft(self, input_ids, g, logits, K: int):
        """K drafter tokens from its state after ingesting (g [1, 1, d], logits [1, V_d]); a block ends at an eos
        (nothing after it can be accepted)."""
        drafter = self.drafter
        ids, chosen_logits = input_ids, []
        for k in range(K):
            token, q_logits, confident = self._select(ids, logits)
            ids = torch.cat([ids, token.to(ids.device)], dim=-1)
            chosen_logits.append(q_logits)
            if k == K - 1 or not confident or int(token) in self.eos_ids:
                break
            out = drafter(input_ids=token.to(drafter.device), hidden_states=g, past_key_values=self.cache,
                          logits_to_keep=1)
            g, logits = out.last_hidden_state, out.logits[:, -1]
        candidate_logits = torch.stack(chosen_logits, dim=1) if self.do_sample else None
        return ids, candidate_logits

    @property
    def seen(self) -> int:
        """Positions whose target features are in hand: [0, stable) ingested, then the kept ones."""
        return self.stable + sum(features.shape[1] for features in self.pending)

    def observe(self, input_ids, outputs, rows: Optional[list] = None) -> None:
        """Keep the target's features of the positions its last forward verified, [seen, cur_len - 1): that
        forward started at position ``seen`` (the previous pass's bonus token, or 0 for the prefill); its rows
        after these are the rejected drafts' (a tree's accepted path: ``rows``, the root's and its nodes')."""
        if not self.requires_features:
            return
        hidden_states = target_hidden_states(outputs, self.num_states)
        new = input_ids.shape[1] - 1 - self.seen
        missing = [i for i in self.layer_ids if hidden_states is None or hidden_states[i] is None]
        if missing:
            raise RuntimeError(f"the target returned no hidden states at layers {missing}: SlimSpec needs "
                               f"outputs.hidden_states{self.layer_ids} (output_hidden_states=True).")
        states = [hidden_states[i] if rows is None else hidden_states[i][:, rows] for i in self.layer_ids]
        self.pending.append(torch.cat([h[:, :new] for h in states], dim=-1))

    @torch.no_grad()
    def _ingest(self, input_ids):
        """Append the kept positions [stable, cur_len - 1) to the drafter cache in one forward (position t paired
        with token t + 1; the cache first cropped back to ``stable``, dropping the drafter's own speculative
        steps) -> (g [1, 1, d], logits [1, V_d]) for the first draft."""
        drafter = self.drafter
        cur_len = input_ids.shape[1]
        feats = torch.cat(self.pending, dim=1)  # [1, cur_len - 1 - stable, 3d]
        self.pending = []
        tokens = input_ids[:, self.stable + 1 : cur_len]
        if self.cache is not None:
            self.cache.crop(self.stable)
        out = drafter(input_ids=tokens.to(drafter.device), target_hidden_states=feats.to(drafter.device),
                      past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        self.stable = cur_len - 1
        return out.last_hidden_state[:, -1:], out.logits[:, -1]

    def _select(self, ids, draft_logits):
        """Choose the next draft token from [1, V_d] draft logits.

        Returns (token [1, 1] target id, logits over the target vocab actually sampled from [1, V] or None,
        confident: whether drafting may continue under ``assistant_confidence_threshold``)."""
        drafter = self.drafter
        if not self.do_sample and self.logits_processor is None and self.confidence_threshold <= 0:
            # Greedy, nothing reshapes the distribution: argmax in the draft vocabulary, then map to a target id.
            return drafter.draft_to_target_ids(first_argmax(draft_logits)), None, True
        logits = drafter.to_target_logits(draft_logits).float().to(ids.device)
        if self.logits_processor is not None:
            logits = self.logits_processor(ids, logits)
        if self.do_sample:
            probs = torch.softmax(logits, dim=-1)
            token = sample_from(probs)
        else:
            token = first_argmax(logits)
            probs = None
        confident = True
        if self.confidence_threshold > 0:
            probs = torch.softmax(logits, dim=-1) if probs is None else probs
            confident = bool(probs.gather(-1, token) >= self.confidence_threshold)
        return token, (logits if self.do_sample else None), confident

    # -- after verification ---------------------------------------------------------------------------------------
    def record_tree(self, tree: DraftTree, path: list, length: int, seconds: Optional[float] = None) -> None:
        """Record a tree pass: its nodes and the accepted ``path``, with the source of each (drafter, lookup, or
        both where they proposed the same token at the same place); ``seconds``: how long the pass took."""
        def by_source(nodes):
            counts = {}
            for i in nodes:
                name = "both" if len(tree.sources[i]) > 1 else next(iter(tree.sources[i]))
                counts[name] = counts.get(name, 0) + 1
            return counts

        drafted = by_source(range(len(tree)))
        accepted = {name: 0 for name in drafted}
        accepted.update(by_source(path))
        self.stats.tree_sources.append(dict(drafted=drafted, accepted=accepted))
        if self.acceptance is not None and self.tree_cost is not None:
            mine = [i for i in range(len(tree)) if "drafter" in tree.sources[i]]
            self.tree_seen[0] += sum(math.exp(tree.scores[i]) for i in mine)
            self.tree_seen[1] += sum("drafter" in tree.sources[i] for i in path)
            chain_tokens, chain_cost = self._observe_chain_in_tree(tree, path)
            self.tree_record.add(1 + len(path), self.tree_cost, chain_tokens, chain_cost, wall=seconds)
        self.source = "tree"
        self.record(len(tree), len(path), length)

    def _observe_chain_in_tree(self, tree: DraftTree, path: list) -> None:
        """What the chosen chain would have done in this tree pass, for the chain's acceptance estimate: the chain
        is every node's first (most probable) child; its drafts were accepted as far as the path followed it.
        -> (tokens it would have produced, its measured cost)."""
        if self.do_sample:  # a sampled chain's drafts are not the tree's first children: its own estimate instead
            k = self.num_assistant_tokens
            return expected_tokens(self.acceptance.rates(), k), chain_seconds(self.costs, k)
        first_child, chain = {}, []
        for i, parent in enumerate(tree.parents):
            if "drafter" in tree.sources[i]:
                first_child.setdefault(parent, i)
        node = first_child.get(-1)
        while node is not None and len(chain) < max(self.num_assistant_tokens, 1):
            chain.append(node)
            node = first_child.get(node)
        accepted = next((j for j, node in enumerate(chain) if j >= len(path) or path[j] != node), len(chain))
        if chain:
            self.acceptance.observe(len(chain), accepted)
            self.num_assistant_tokens = choose_draft_length(self.costs, self.acceptance.rates(), self.max_k)
        return 1 + accepted, chain_seconds(self.costs, len(chain))

    def record(self, drafted: int, accepted: int, length: int, expected: Optional[list] = None,
               seconds: Optional[float] = None) -> None:
        """Record a target pass (the first is the prefill) that verified ``drafted`` drafts and accepted
        ``accepted``, leaving the output ``length`` tokens long, in ``seconds``; after a drafter pass time it for
        the tree's comparison (``TreeRecord.add_chain``, when a tree is on) and adapt K: the "cost" schedule
        re-chooses it from the observed acceptance (sampling: each draft's acceptance probability, ``expected``),
        the "heuristic" schedules add 2 if all drafts were accepted, else remove 1."""
        stats = self.stats
        stats.target_passes += 1
        stats.new_tokens = length - stats.prompt_length
        if stats.target_passes > 1:
            stats.drafted_per_pass.append(drafted)
            stats.accepted_per_pass.append(accepted)
            stats.source_per_pass.append(self.source if drafted > 0 or self.source == "tree" else "none")
        drafter_pass = drafted > 0 and self.source == "drafter"  # lookup passes teach the drafter's K nothing
        if self.acceptance is not None and drafted > 0 and self.source in ("lookup", "drafter"):
            estimate = self.acceptance if drafter_pass else self.lookup_acceptance
            estimate.observe(drafted, accepted) if expected is None else estimate.observe_expected(expected)
        if self.acceptance is not None and drafter_pass and self.tree_total and seconds is not None:
            self.tree_record.add_chain(seconds, chain_seconds(self.costs, drafted))
        if self.acceptance is not None and drafter_pass:
            self.num_assistant_tokens = choose_draft_length(self.costs, self.acceptance.rates(), self.max_k)
            stats.chosen_draft_lengths.append(self.num_assistant_tokens)
        if self.schedule in ("heuristic", "heuristic_transient") and drafter_pass:
            if accepted == drafted:
                self.num_assistant_tokens += 2
            else:
                self.num_assistant_tokens = max(1, self.num_assistant_tokens - 1)
            if self.schedule == "heuristic":  # persists on the drafter, as transformers does for its assistants
                self.drafter.generation_config.num_assistant_tokens = self.num_assistant_tokens


def target_hidden_states(outputs, num_states: int):
    """The per-layer hidden states of a target forward (``num_states`` = layers + 1 entries), found by name where
    this transformers release uses a known one, else by shape: a future release that renames the output field
    must not break drafters already published."""
    if outputs is None:
        return None
    for name in ("hidden_states", "decoder_hidden_states"):
        value = getattr(outputs, name, None)
        if isinstance(value, (tuple, list)) and len(value) == num_states:
            return value
    values = outputs.values() if hasattr(outputs, "values") else vars(outputs).values()
    for value in values:
        if isinstance(value, (tuple, list)) and len(value) == num_states and any(
            isinstance(v, torch.Tensor) and v.dim() == 3 for v in value
        ):
            return value
    return None


# ----------------------------------------------------------------------------------------------------------------------
# The target: one forward, and a cache that rolls back
# ----------------------------------------------------------------------------------------------------------------------
def rollback_cache():
    """An empty ``DynamicCache`` with full layers. Built without a config, every layer keeps all its keys, so
    ``crop`` rolls back any layer (a sliding-window layer that dropped its oldest keys could not), while the target's
    own attention masks still apply its sliding windows. transformers' assisted generation chose the same cache
    ("dynamic_full") for the same reason."""
    from transformers import DynamicCache

    return DynamicCache()


def drop_last(cache, n: int) -> None:
    """Remove the last ``n`` positions from ``cache`` (none for n <= 0); a negative crop is the form every release
    accepts."""
    if n > 0:
        cache.crop(-n)


class TargetForward:
    """``target(...)`` with the keyword names this release's ``forward`` takes, read once from its signature: the
    cache is ``cache`` from 5.24 on and ``past_key_values`` before; ``logits_to_keep`` where it exists."""

    def __init__(self, target):
        parameters = inspect.signature(target.forward).parameters
        self.target = target
        self.cache_name = "cache" if "cache" in parameters else "past_key_values"
        self.keeps_logits = "logits_to_keep" in parameters

    def __call__(self, ids, cache, features: bool, keep: int, **tree):
        """ids [1, T] appended to ``cache`` -> (logits of the last ``keep`` positions [1, keep, V], the outputs when
        ``features`` asked for the hidden states, else None). ``tree``: position_ids and attention_mask of a tree
        verification (``tree_attention``)."""
        kwargs = {self.cache_name: cache, "use_cache": True, **tree}
        if self.keeps_logits:
            kwargs["logits_to_keep"] = keep
        if features:
            kwargs["output_hidden_states"] = True
        out = self.target(input_ids=ids, **kwargs)
        return out.logits[:, -keep:], (out if features else None)


# ----------------------------------------------------------------------------------------------------------------------
# Verification: which drafts the target accepts
# ----------------------------------------------------------------------------------------------------------------------
def processed_scores(logits_processor, candidate, logits, start: int):
    """The logits processors applied row by row, as plain decoding applies them token by token: row i of ``logits``
    [1, R, V] scores the token after ``candidate[:, :start + i]``. -> [1, R, V]: fp32 rows where a processor runs,
    else ``logits`` as they are (their own dtype: the caller turns only the rows it keeps into fp32)."""
    if logits_processor is None:
        return logits
    return torch.stack([logits_processor(candidate[:, : start + i], logits[:, i].float())
                        for i in range(logits.shape[1])], dim=1)


def accept_greedy(drafts, scores):
    """drafts [1, K], scores [1, K + 1, V] -> (n, tokens [1, n + 1]): the target's choice y_i = argmax scores_i;
    n = the longest prefix with drafts_i = y_i; the new tokens are y_0..y_n (the accepted drafts, then the target's
    own token where the first draft differs, or after the last)."""
    choice = first_argmax(scores[0]).view(1, -1)
    K = drafts.shape[1]
    n = int((drafts.to(choice.device) == choice[:, :K]).int().cumprod(-1).sum()) if K else 0
    return n, choice[:, : n + 1]


def sample_from(weights):
    """One token per row of ``weights`` [B, V] (non-negative, any total) -> [B, 1]: P(j) = w_j / sum(w), by the
    inverse CDF (one uniform number per row against the cumulative sums in float64). The distribution of
    ``torch.multinomial(weights, 1)``, which on a CPU takes ~17 ms over a 262k vocabulary against ~2.5 here: a
    sampling pass draws up to three times."""
    cdf = weights.double().cumsum(-1)
    u = torch.rand(cdf.shape[0], 1, dtype=torch.float64, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_max(cdf.shape[-1] - 1)


def accept_sampled(drafts, draft_logits, scores):
    """Speculative sampling (Leviathan et al. 2023, Chen et al. 2023): with p_i = softmax(scores_i) the target's and
    q_i = softmax(draft_logits_i) the distribution draft x_i was drawn from, draft i is accepted with probability
    min(1, p_i(x_i) / q_i(x_i)); at the first rejection n the token is drawn from norm(max(p_n - q_n, 0)), after K
    acceptances from p_K. Every token then follows p exactly. -> (n, tokens [1, n + 1], expected [K]: each draft
    position's acceptance probability over the draft distribution, sum_x min(p_i(x), q_i(x)) = 1 - TV(p_i, q_i),
    which is what the position accepts whatever this pass's draws were (a point mass at x: p_i(x)))."""
    p = scores.float().softmax(-1)
    K = drafts.shape[1]
    if K == 0:
        return 0, sample_from(p[:, 0]), []
    drafts = drafts.to(p.device)
    q = draft_logits.to(p.device).float().softmax(-1)
    index = drafts.unsqueeze(-1)
    ratio = p[:, :K].gather(-1, index).squeeze(-1) / q.gather(-1, index).squeeze(-1)
    n = int((torch.rand_like(ratio) <= ratio).int().cumprod(-1).sum())
    if n < K:
        residual = (p[:, n] - q[:, n]).clamp(min=0)
        total = residual.sum(-1, keepdim=True)
        last = sample_from(residual if float(total) > 0 else p[:, n])
    else:
        last = sample_from(p[:, K])
    expected = torch.minimum(p[0, :K], q[0]).sum(-1).tolist()
    return n, torch.cat([drafts[:, :n], last], dim=-1), expected


def until_stop(stopping_criteria, ids, tokens, scores):
    """The new ``tokens`` [1, n] up to and including the first after which a stopping criterion says stop, asked
    after every token with that token's scores, as plain decoding asks -> (tokens, stopped)."""
    for j in range(tokens.shape[1]):
        if bool(stopping_criteria(torch.cat([ids, tokens[:, : j + 1]], dim=-1), scores[:, j]).all()):
            return tokens[:, : j + 1], True
    return tokens, False


# ----------------------------------------------------------------------------------------------------------------------
# The decoding loop
# ----------------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def speculative_decode(model, input_ids, logits_processor=None, stopping_criteria=None, generation_config=None, *,
                       drafter, streamer=None, **model_kwargs):
    """Speculative decoding of ``model`` (the target) with ``drafter``: transformers' ``generate`` calls this as its
    ``custom_generate`` with the prepared ``input_ids`` [1, L], logits processors, stopping criteria and generation
    config (``max_length`` final). Each pass:

        drafts    = proposer(ids)                       K tokens (the drafter's or a lookup block), K = 0 at first
        logits    = target(ids[-1], drafts | cache)     one forward over K + 1 positions (the prompt at first)
        n, tokens = accept(drafts, processors(logits))  greedy: the longest agreeing prefix, then the target's token;
                                                        sampling: speculative sampling, the target's distribution
        cache    -= the K - n rejected positions        (crop)
        ids      += tokens, up to a stopping criterion  (checked after every token, as plain decoding does)

    With a draft tree (``tree_total_tokens`` > 0): the drafts are a tree (``propose_tree``), verified in one
    forward with a tree attention mask (``tree_attention``); the accepted path is the walk along the target's own
    choices (``accept_tree_greedy``) or, sampling, recursive rejection sampling over each node's children
    (``accept_tree_sampled``), and the cache keeps exactly that path (``keep_positions``).

    Returns the sequences [1, L + new] (or transformers' ``GenerateDecoderOnlyOutput`` with ``sequences`` and the
    requested ``scores``/``logits`` when ``return_dict_in_generate``). The call's statistics:
    ``drafter.last_generate_stats`` (per thread)."""
    check_inputs(input_ids, generation_config, model_kwargs)
    processors = logits_processor if logits_processor is not None and len(logits_processor) else None
    proposer = SlimSpecProposer(drafter, model, generation_config, processors, input_ids.shape[1])
    drafter.last_generate_stats = proposer.stats
    forward, cache = TargetForward(model), rollback_cache()
    keep_scores = generation_config.return_dict_in_generate and generation_config.output_scores
    keep_logits = generation_config.return_dict_in_generate and getattr(generation_config, "output_logits", False)
    all_scores, all_logits = [], []
    ids, stopped = input_ids, False
    while not stopped:
        started = _clock()
        past, rows = cache.get_seq_length(), None
        if past and proposer.wants_tree(ids):  # a tree: [last token] + nodes, one forward with a tree mask
            tree = proposer.propose_tree(ids)
            positions, mask = tree_attention(tree, past, proposer.windows, model.dtype, ids.device)
            block = torch.cat([ids[:, -1:], ids.new_tensor([tree.tokens]).view(1, -1)], dim=-1)
            logits, outputs = forward(block, cache, True, len(tree) + 1, position_ids=positions,
                                      attention_mask=mask)
            check_cache_grew(cache, past + block.shape[1])
            accept = accept_tree_sampled if generation_config.do_sample else accept_tree_greedy
            path, tokens, scores = accept(tree, logits, processors, ids)
            rows = [0] + [node + 1 for node in path]
            keep_positions(cache, past, rows)
            logits = logits[:, rows]
        else:  # a chain: [last token] + K drafts (the prompt at first)
            candidate, draft_logits = proposer.propose(ids) if past else (ids, None)
            start, K = ids.shape[1], candidate.shape[1] - ids.shape[1]
            logits, outputs = forward(candidate[:, past:], cache, proposer.requires_features, K + 1)
            check_cache_grew(cache, candidate.shape[1])
            scores = processed_scores(processors, candidate, logits, start)
            drafts = candidate[:, start:]
            expected = None
            if generation_config.do_sample:
                n, tokens, expected = accept_sampled(drafts, draft_logits, scores)
            else:
                n, tokens = accept_greedy(drafts, scores)
            drop_last(cache, K - n)
            scores = scores[:, : n + 1].float()  # the rows that chose the new tokens
        tokens, stopped = until_stop(stopping_criteria, ids, tokens.to(ids.device), scores)
        ids = torch.cat([ids, tokens], dim=-1)
        seconds = _clock() - started  # the pass: drafting (with the ingest), verification, acceptance
        if rows is None:
            proposer.record(K, n, ids.shape[1], expected, seconds=seconds)
        else:
            proposer.record_tree(tree, path, ids.shape[1], seconds=seconds)
        all_scores += [scores[:, j] for j in range(tokens.shape[1])] if keep_scores else []
        all_logits += [logits[:, j].float() for j in range(tokens.shape[1])] if keep_logits else []
        if streamer is not None:
            streamer.put(tokens.cpu())
        if not stopped:
            proposer.observe(ids, outputs, rows)
    if streamer is not None:
        streamer.end()
    if not generation_config.return_dict_in_generate:
        return ids
    from transformers.generation import GenerateDecoderOnlyOutput

    return GenerateDecoderOnlyOutput(sequences=ids, scores=tuple(all_scores) if keep_scores else None,
                                     logits=tuple(all_logits) if keep_logits else None)


def check_cache_grew(cache, length: int) -> None:
    if cache.get_seq_length() != length:
        raise RuntimeError(f"the target's cache holds {cache.get_seq_length()} positions after a forward over "
                           f"{length}: it does not keep its state in the DynamicCache it was given, so rejected "
                           f"drafts cannot be rolled back. Decode this target without a drafter.")


def check_inputs(input_ids, generation_config, model_kwargs) -> None:
    """Refuse, naming the problem, what this loop does not do: batches, padding, embeddings as input, a pre-filled
    cache, beams, and per-step attentions or hidden states in the output."""
    if input_ids.shape[0] != 1:
        raise ValueError(f"SlimSpec speculative decoding is batch-size 1 only; got a batch of {input_ids.shape[0]}. "
                         f"Generate one sequence at a time.")
    mask = model_kwargs.get("attention_mask")
    if mask is not None and not bool((mask == 1).all()):
        raise ValueError("SlimSpec speculative decoding takes an unpadded prompt: the attention_mask has zeros.")
    if model_kwargs.get("inputs_embeds") is not None or input_ids.shape[1] == 0:
        raise ValueError("SlimSpec speculative decoding needs input_ids (the drafter reads the tokens); "
                         "inputs_embeds alone are not supported.")
    for name in ("cache", "past_key_values"):
        given = model_kwargs.get(name)
        if given is not None and hasattr(given, "get_seq_length") and given.get_seq_length() > 0:
            raise ValueError("generation from a pre-filled cache is not supported by SlimSpec: the drafter needs the "
                             "target's hidden states of every prompt position. Pass the whole prompt instead.")
    if generation_config.num_beams > 1 or (generation_config.num_return_sequences or 1) > 1:
        raise ValueError("SlimSpec speculative decoding produces one sequence: num_beams and num_return_sequences "
                         "must be 1.")
    if generation_config.return_dict_in_generate and (
            generation_config.output_attentions or generation_config.output_hidden_states):
        raise ValueError("SlimSpec speculative decoding returns sequences, scores and logits; "
                         "output_attentions and output_hidden_states are not supported.")


# ----------------------------------------------------------------------------------------------------------------------
# The two entrances: attach (target.generate) and custom_generate (the drafter's Hub folder)
# ----------------------------------------------------------------------------------------------------------------------
CUSTOM_GENERATE_SOURCE = '''"""SlimSpec speculative decoding as a transformers ``custom_generate`` recipe:

    drafter = AutoModel.from_pretrained(folder, trust_remote_code=True)
    target.generate(**inputs, assistant_model=drafter, custom_generate=folder, trust_remote_code=True)

transformers calls ``generate`` below with the target as ``model`` and every argument of that call. The decoding
loop is the drafter's own code (its ``speculative_generate``), so this file imports nothing.
"""


def generate(model, *args, assistant_model=None, **kwargs):
    run = getattr(assistant_model, "speculative_generate", None)
    if run is None:
        raise ValueError(
            "this custom_generate recipe decodes with a SlimSpec drafter: pass assistant_model=drafter, loaded with "
            "AutoModel.from_pretrained(<the drafter folder or Hub id>, trust_remote_code=True)."
        )
    return run(model, *args, **kwargs)
'''

# Options that select another candidate source in transformers; beside a SlimSpec drafter they are refused.
_OTHER_ASSISTANTS = ("prompt_lookup_num_tokens", "assistant_early_exit", "assistant_tokenizer")


def generate_with_drafter(drafter, target, *args, **kwargs):
    """``target.generate(*args, **kwargs)`` decoded speculatively with ``drafter``: transformers' own ``generate``
    prepares everything and calls ``speculative_decode`` as its ``custom_generate``. An unattached drafter is bound
    to ``target`` for the call only (its shared input embedding), and left as it was."""
    refuse_broken_contract()
    kwargs = _by_name(type(target).generate, target, args, kwargs)
    kwargs.pop("assistant_model", None)
    for option in _OTHER_ASSISTANTS:
        if kwargs.get(option) is not None:
            raise ValueError(f"{option} selects another candidate generator; do not combine it with a SlimSpec "
                             f"drafter (for prompt lookup beside the drafter, set prompt_lookup_num_tokens on the "
                             f"drafter's generation_config).")
    streamer = kwargs.pop("streamer", None)
    _stop_strings_as_criterion(target, kwargs)

    def loop(model, input_ids, logits_processor=None, stopping_criteria=None, generation_config=None,
             **model_kwargs):
        return speculative_decode(model, input_ids, logits_processor, stopping_criteria, generation_config,
                                  drafter=drafter, streamer=streamer, **model_kwargs)

    with _bound(drafter, target):
        return type(target).generate(target, streamer=streamer, custom_generate=loop, **kwargs)


def _by_name(function, target, args, kwargs) -> dict:
    """A call's arguments all by name (positional ones bound to ``function``'s parameters, ``**kwargs`` merged)."""
    if not args:
        return dict(kwargs)
    arguments = inspect.signature(function).bind(target, *args, **kwargs).arguments
    arguments.pop(next(iter(arguments)))  # the target itself
    return {**{k: v for k, v in arguments.items() if k != "kwargs"}, **arguments.get("kwargs", {})}


def _stop_strings_as_criterion(target, kwargs: dict) -> None:
    """transformers drops ``tokenizer`` before it calls a callable ``custom_generate`` (5.8-5.25), so it could not
    build its stop-string criterion: build transformers' own ``StopStringCriteria`` here from the same arguments
    and hand it over beside the caller's criteria."""
    tokenizer = kwargs.pop("tokenizer", None)
    config = kwargs.get("generation_config") or target.generation_config
    stop_strings = kwargs.get("stop_strings", getattr(config, "stop_strings", None))
    if not stop_strings:
        return
    if tokenizer is None:
        raise ValueError("stop_strings needs generate(..., tokenizer=tokenizer), as without a drafter.")
    from transformers import StoppingCriteriaList, StopStringCriteria

    criteria = StoppingCriteriaList(kwargs.get("stopping_criteria") or [])
    criteria.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=stop_strings))
    kwargs["stopping_criteria"], kwargs["stop_strings"] = criteria, None


class _bound:
    """Inside the block an unattached drafter reads ``target``'s input embedding (checked to fit first); outside
    it, the drafter is as before. A drafter attached to ``target`` is left alone."""

    def __init__(self, drafter, target):
        self.drafter, self.target, self.saved = drafter, target, None

    def __enter__(self):
        drafter = self.drafter
        if drafter.attached_target is self.target:
            return drafter
        check_target(drafter, self.target)
        if drafter.embed_tokens is None:
            self.saved = (drafter.get_input_embeddings(),)
            drafter.use_target_embeddings(self.target.get_input_embeddings())
        return drafter

    def __exit__(self, *exc):
        if self.saved is not None:
            self.drafter.use_target_embeddings(self.saved[0])


def check_target(drafter, target) -> None:
    """Raise ValueError naming every reason ``drafter`` cannot decode ``target``."""
    check_target_fits(drafter, target)
    check_rollback(target)
    drafter.check_vocab_maps()


def check_target_fits(drafter, target) -> None:
    """Raise ValueError naming every mismatch between a target and the drafter's config."""
    cfg = drafter.config
    text = target.config.get_text_config() if hasattr(target.config, "get_text_config") else target.config
    if getattr(target.config, "is_encoder_decoder", False):
        raise ValueError("SlimSpec drafters assist decoder-only targets; this target is encoder-decoder.")
    problems = []
    for name, want in (("hidden_size", cfg.target_hidden_size), ("vocab_size", cfg.vocab_size),
                       ("num_hidden_layers", cfg.target_num_hidden_layers)):
        got = getattr(text, name, None)
        if got != want:
            problems.append(f"target {name} is {got}, drafter expects {want}")
    embedding = target.get_input_embeddings()
    weight = getattr(embedding, "weight", None)
    if cfg.share_target_embeddings and weight is not None and tuple(weight.shape) != (cfg.vocab_size, cfg.hidden_size):
        problems.append(f"target input embedding is {tuple(weight.shape)}, drafter needs "
                        f"({cfg.vocab_size}, {cfg.hidden_size}) to share it")
    if problems:
        name = getattr(target.config, "_name_or_path", "") or type(target).__name__
        raise ValueError(f"this drafter was built for a different target than {name}: " + "; ".join(problems)
                         + f". The drafter was made for "
                         f"{cfg.target_name_or_path or cfg.target_model_type or 'another model'}.")


def check_rollback(target) -> None:
    """Raise ValueError where the target has layers whose state a crop cannot roll back (recurrent, linear
    attention): a rejected draft would stay in that state."""
    text = target.config.get_text_config() if hasattr(target.config, "get_text_config") else target.config
    others = sorted(set(getattr(text, "layer_types", None) or []) - ROLLBACK_LAYER_TYPES)
    if others:
        raise ValueError(f"this target has {others} layers: their recurrent state keeps every token it saw, so a "
                         f"rejected draft cannot be rolled back. SlimSpec rolls back attention caches only "
                         f"({sorted(ROLLBACK_LAYER_TYPES)}); decode this target without a drafter.")


def attach(drafter, target):
    """Bind ``drafter`` to ``target`` for ``target.generate(assistant_model=drafter)``. Returns the drafter.

    Sets one instance attribute, ``target.generate``: calls with this drafter as ``assistant_model`` (and no
    ``custom_generate`` of their own) run ``generate_with_drafter``; every other call is the class's ``generate``
    with the same arguments. ``detach`` removes it."""
    refuse_broken_contract()
    check_target(drafter, target)
    if drafter.attached_target is not None:
        detach(drafter)
    if "generate" in vars(target):
        raise RuntimeError("this target's generate is already replaced (attached to another SlimSpec drafter, or "
                           "loaded with a custom_generate repository): detach that drafter first.")

    def generate(*args, **kwargs):
        class_generate = type(target).generate
        try:
            arguments = _by_name(class_generate, target, args, kwargs)
        except TypeError:  # let the class's generate name the problem
            arguments = kwargs
        if arguments.get("assistant_model") is drafter and arguments.get("custom_generate") is None:
            return generate_with_drafter(drafter, target, **arguments)  # already by name
        return class_generate(target, *args, **kwargs)

    generate.__slimspec__ = drafter
    generate.__doc__ = type(target).generate.__doc__
    target.generate = generate
    drafter._attached.module = target
    if drafter.embed_tokens is None:
        drafter.use_target_embeddings(target.get_input_embeddings())
    optimize_for_cpu(drafter)
    return drafter


def detach(drafter):
    """Undo ``attach``: the target gets back exactly its own attributes; the drafter forgets the target."""
    target = drafter.attached_target
    if target is not None:
        installed = vars(target).get("generate")
        if installed is not None and getattr(installed, "__slimspec__", None) is drafter:
            del target.generate
    drafter._attached.module = None
    if drafter.embed_tokens is None:
        drafter.use_target_embeddings(None)
    restore(drafter)
    return drafter


# ----------------------------------------------------------------------------------------------------------------------
# The drafter's decoding API (a mixin of SlimSpecDrafter)
# ----------------------------------------------------------------------------------------------------------------------
_NOT_ATTACHED = (
    "this SlimSpec drafter is not attached to the model you called generate() on: call drafter.attach(target) "
    "before target.generate(..., assistant_model=drafter), or pass custom_generate=<the drafter's folder or Hub id> "
    "and trust_remote_code=True to that generate call."
)


class _PerThread(threading.local):
    """Per-thread call records (unregistered, never saved; a copied or pickled drafter starts without them)."""

    stats = None

    def __deepcopy__(self, memo):
        return _PerThread()

    def __reduce__(self):
        return (_PerThread, ())


class SlimSpecGenerationMixin:
    """What a drafter does for decoding, beside its forward: ``attach``/``detach``, ``calibrate``,
    ``speculative_generate`` and the statistics of this thread's last call. Everything here reaches transformers
    only inside functions, so loading a drafter never depends on transformers' generation code."""

    def attach(self, target):
        """Bind to ``target`` so that ``target.generate(**inputs, assistant_model=drafter)`` drafts with this model
        (``attach`` above); returns the drafter. The target is held without being registered: ``parameters()``,
        ``state_dict()``, ``save_pretrained`` and ``.to()`` of the drafter never include or move it."""
        return attach(self, target)

    def detach(self):
        """Undo ``attach``: the target is back to exactly its original attributes."""
        return detach(self)

    @property
    def attached_target(self):
        return self._attached.module

    def calibrate(self, target, **kwargs) -> "Calibration":
        """``calibrate(drafter, target, ...)`` above: whether packing the target pays here, and the costs."""
        return calibrate(self, target, **kwargs)

    def speculative_generate(self, target, *args, **kwargs):
        """``target.generate(*args, **kwargs)`` decoded with this drafter, attached or not (``generate_with_drafter``);
        the drafter folder's ``custom_generate/generate.py`` calls it."""
        return generate_with_drafter(self, target, *args, **kwargs)

    @property
    def last_generate_stats(self):
        """``SlimSpecGenerateStats`` of this thread's last ``generate`` call with this drafter (None before one):
        two threads sharing a drafter each read their own."""
        return self.__dict__.setdefault("_calls", _PerThread()).stats

    @last_generate_stats.setter
    def last_generate_stats(self, stats) -> None:
        self.__dict__.setdefault("_calls", _PerThread()).stats = stats

    def save_custom_generate(self, folder) -> None:
        """Write the ``custom_generate/generate.py`` recipe into a drafter folder (``save_pretrained`` calls it)."""
        recipe = pathlib.Path(folder) / "custom_generate" / "generate.py"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(CUSTOM_GENERATE_SOURCE)

    def generate(self, *args, **kwargs):
        """A drafter does not generate on its own; transformers' stock assistant path lands here when the drafter
        was passed as ``assistant_model`` without ``attach`` or ``custom_generate``."""
        raise RuntimeError(_NOT_ATTACHED)

    def _supports_logits_to_keep(self):  # the first thing transformers' stock assistant path asks an assistant
        raise RuntimeError(_NOT_ATTACHED)


# ----------------------------------------------------------------------------------------------------------------------
# The contract with transformers, read from its source
# ----------------------------------------------------------------------------------------------------------------------
_LOOP_KEYWORDS = ("logits_processor", "stopping_criteria", "generation_config")
_CHECKED: dict = {}  # transformers version -> the problems found in its generate (read once per version)


def loop_contract_problems(source: Optional[str] = None) -> list:
    """What ``speculative_decode`` needs from transformers, checked in ``GenerationMixin.generate``'s source (the
    installed release's, or ``source``) -> the missing pieces, each named ([] when all are there):

    1. ``generate`` takes ``custom_generate`` and ``assistant_model``;
    2. a callable ``custom_generate`` (or a name bound to it) is called as the decoding loop with at most two
       positional arguments (the model, input_ids), ``logits_processor=``, ``stopping_criteria=``,
       ``generation_config=`` and the prepared model kwargs (``**``);
    3. a string ``custom_generate`` is loaded with ``load_custom_generate`` and called with ``model=`` and the
       ``generate`` arguments (``**``);
    4. ``DynamicCache`` has ``crop`` and ``get_seq_length``, and keeps each layer's keys and values as
       ``cache.layers[i].keys`` / ``.values`` (tree drafting gathers the accepted path there, ``keep_positions``)."""
    from transformers import DynamicCache, GenerationMixin

    if source is None:
        source = inspect.getsource(GenerationMixin.generate)
    tree = ast.parse(textwrap.dedent(source))
    function = next((node for node in tree.body if isinstance(node, ast.FunctionDef)), None)
    if function is None:
        return ["GenerationMixin.generate is not a function whose source can be read"]
    arguments = function.args
    parameters = {a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs}
    problems = [f"generate() has no `{name}` parameter" for name in ("custom_generate", "assistant_model")
                if name not in parameters]
    aliases, grown = {"custom_generate"}, True
    while grown:  # names bound to the callable: ``decoding_method = custom_generate`` and so on
        before = set(aliases)
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                aliases |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        grown = aliases != before
    calls = [node for node in ast.walk(function) if isinstance(node, ast.Call)]

    def keywords(call):
        return {k.arg for k in call.keywords}

    loop_calls = [c for c in calls if isinstance(c.func, ast.Name) and c.func.id in aliases]
    if not any(set(_LOOP_KEYWORDS) <= keywords(c) and None in keywords(c) and len(c.args) <= 2 for c in loop_calls):
        problems.append("generate() does not call a callable custom_generate as the decoding loop with (model, "
                        "input_ids), " + ", ".join(f"{k}=" for k in _LOOP_KEYWORDS) + " and **model_kwargs")
    if "load_custom_generate" not in source or not any({"model", None} <= keywords(c) for c in calls):
        problems.append("generate() does not load a string custom_generate with load_custom_generate and call it "
                        "with model= and the generate arguments")
    problems += [f"DynamicCache has no {name}()" for name in ("crop", "get_seq_length")
                 if not callable(getattr(DynamicCache, name, None))]
    cache, key = DynamicCache(), torch.zeros(1, 1, 2, 1)
    cache.update(key, key, 0)
    layer = (getattr(cache, "layers", None) or [None])[0]
    if not all(isinstance(getattr(layer, name, None), torch.Tensor) and getattr(layer, name).shape == key.shape
               for name in ("keys", "values")):
        problems.append("DynamicCache does not keep a layer's keys/values as cache.layers[i].keys/.values")
    return problems


def refuse_broken_contract() -> None:
    """Raise RuntimeError, before anything runs, where this transformers release breaks ``loop_contract_problems``
    (read once per version)."""
    import transformers

    version = transformers.__version__
    if version not in _CHECKED:
        _CHECKED[version] = loop_contract_problems()
    if _CHECKED[version]:
        low, high = TESTED_TRANSFORMERS
        raise RuntimeError(
            f"SlimSpec speculative decoding cannot run on transformers {version}: " + "; ".join(_CHECKED[version])
            + f". It was tested with transformers {low} to {high}: install one of those "
            f"(`pip install 'transformers=={high}'`), or a SlimSpec release that supports {version}.")
