# coding=utf-8
# Copyright 2026 The SlimSpec authors. Licensed under the Apache License, Version 2.0.
"""Assisted generation with a SlimSpec drafter: ``target.generate(**inputs, assistant_model=drafter)``.

Hub custom code (imported by ``modeling_slimspec``): standard library, torch and transformers only.

Mechanism, and why. An EAGLE-3 drafter reads the *target's* hidden states at three layers for every accepted
position. transformers (>= 5.8) lets a ``CandidateGenerator`` declare ``requires_model_outputs = True`` and
``model_kwargs_overrides = {"output_hidden_states": [layer indices]}``: the target's verification forward then
returns exactly those layers, and the decoding loop hands the previous forward's outputs to ``get_candidates``
together with ``n_last_matches``. That is the documented extension point DFlash uses, so:

* we do not fork the decoding loop (acceptance, sampling, stopping criteria and caches stay transformers' own);
* we add no forward hooks to the target and monkeypatch nothing globally;
* the only change to the target is one *instance* attribute, ``_get_candidate_generator``, which ``attach`` sets
  and ``detach`` removes: it returns our generator when ``assistant_model`` is the attached drafter and defers to
  the class's own method otherwise (so ``generate`` without the drafter is unaffected while attached).

The version probe (``assisted_generation_support``) checks for the ``requires_model_outputs`` protocol and the
``_get_candidate_generator`` hook and explains what is missing on older releases.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field, fields
from typing import Optional

import torch
from transformers.generation import CandidateGenerator


def assisted_generation_support(target=None) -> Optional[str]:
    """None if this transformers can drive a SlimSpec drafter, else a sentence saying why not."""
    import transformers

    if not hasattr(CandidateGenerator, "requires_model_outputs"):
        return (
            f"transformers {transformers.__version__} lacks CandidateGenerator.requires_model_outputs (added in 5.8): "
            f"upgrade with `pip install -U 'transformers>=5.8'`."
        )
    if target is not None and not callable(getattr(type(target), "_get_candidate_generator", None)):
        return f"{type(target).__name__} has no _get_candidate_generator: it is not a transformers generative model."
    return None


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
    source_per_pass: list = field(default_factory=list)  # "drafter" | "lookup" | "none", per verification pass

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

    def _sum_by_source(self, values: list) -> dict:
        """{source: sum of ``values`` (one per verification pass) over its passes}, for sources that drafted."""
        out = {}
        for source, drafted, value in zip(self._sources(), self.drafted_per_pass, values):
            if drafted:
                out[source] = out.get(source, 0) + value
        return out

    def drafted_by_source(self) -> dict:
        """Drafts proposed per source: {"drafter": n, "lookup": m} (sources that proposed something)."""
        return self._sum_by_source(self.drafted_per_pass)

    def accepted_by_source(self) -> dict:
        """Accepted drafts per source that proposed them: {"drafter": n, "lookup": m}."""
        return self._sum_by_source(self.accepted_per_pass)

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
    n = K + 1 verifies K drafts); draft: one drafter step (body, head and token choice); overhead: the adapter's
    own work per cycle."""

    target_pass: list
    draft: float
    overhead: float = 0.0


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
        rate = expected_tokens(acceptance, k) / (costs.target_pass[k] + k * costs.draft + costs.overhead)
        if rate > best_rate:
            best_k, best_rate = k, rate
    return best_k


class AcceptanceEstimate:
    """Per-position acceptance a_j = P(draft j accepted | drafts before it accepted), as a prior (the drafter's
    measured acceptance, weighted as ``strength`` observations) updated with what this generation observes."""

    def __init__(self, prior: list, max_k: int, strength: float = 16.0):
        prior = list(prior) or [0.5]
        self.prior = [float(prior[min(j, len(prior) - 1)]) for j in range(max_k)]
        self.strength = strength
        self.offered = [0] * max_k
        self.accepted = [0] * max_k

    def observe(self, drafted: int, accepted: int) -> None:
        """A verification pass: drafts 1..accepted were accepted, draft accepted + 1 (if drafted) was not."""
        for j in range(min(drafted, accepted + 1, len(self.offered))):
            self.offered[j] += 1
            self.accepted[j] += int(j < accepted)

    def rates(self) -> list:
        return [(p * self.strength + a) / (self.strength + n)
                for p, a, n in zip(self.prior, self.accepted, self.offered)]


_MEASURED: dict = {}  # measured costs per (target, dtypes, threads, max_k), for the life of the process


def measured_costs(drafter, target, max_k: int, context: int = 64, repeats: int = 3) -> DraftCosts:
    """Time, once per process and setting, a target forward over 1..max_k + 1 new tokens after ``context`` cached
    tokens, and one drafter step (medians of ``repeats``); the "cost" schedule decides from these numbers."""
    key = (id(target), target.dtype, drafter.dtype, torch.get_num_threads(), max_k, context)
    if key not in _MEASURED:
        _MEASURED[key] = _measure(drafter, target, max_k, context, repeats)
    return _MEASURED[key]


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2]


@torch.inference_mode()
def _measure(drafter, target, max_k: int, context: int, repeats: int) -> DraftCosts:
    device = next(target.parameters()).device
    vocab = drafter.config.vocab_size
    ids = torch.randint(1, vocab, (1, context + max_k + 1), generator=torch.Generator().manual_seed(0)).to(device)
    layers = sorted(set(drafter.config.target_layer_ids))
    out = target(input_ids=ids[:, :context], use_cache=True)
    cache = getattr(out, "cache", None)  # the newer name first: reading the old one warns on releases that renamed it
    cache = cache if cache is not None else getattr(out, "past_key_values", None)
    cache_kw = _cache_keyword(target)

    def verify(n):
        extra = cache.get_seq_length() - context
        if extra > 0:
            cache.crop(-extra)  # a negative crop removes that many tokens, the one form every release accepts
        target(input_ids=ids[:, context : context + n], use_cache=True, output_hidden_states=layers,
               **{cache_kw: cache})

    target_pass = [_median_seconds(lambda: verify(n), repeats) for n in range(1, max_k + 2)]
    d_t = drafter.config.target_hidden_size
    feats = torch.randn(1, context, 3 * d_t, generator=torch.Generator().manual_seed(1)).to(drafter.device)
    first = drafter(input_ids=ids[:, 1 : context + 1].to(drafter.device), target_hidden_states=feats, use_cache=True,
                    logits_to_keep=1)
    draft_cache, g = first.past_key_values, first.last_hidden_state[:, -1:]

    def draft():
        draft_cache.crop(context)
        step = drafter(input_ids=ids[:, :1].to(drafter.device), hidden_states=g, past_key_values=draft_cache,
                       logits_to_keep=1)
        first_argmax(step.logits[:, -1])

    return DraftCosts(target_pass=target_pass, draft=_median_seconds(draft, repeats))


def first_argmax(logits: torch.Tensor) -> torch.Tensor:
    """The index of the first maximum of one logits row: [1, V] -> [1, 1], as ``argmax`` returns it.

    torch reduces a single row on one thread; split into as many rows as threads (when they divide V), each row's
    maximum comes in parallel, and the first row holding the overall maximum gives the first index:
    i* = j* V/n + argmax_i x[j* V/n + i], j* = the first j whose row maximum is the largest. (bf16, V = 262,144,
    2 threads: 85 us against 154 for ``max(-1)``; ``argmax`` took 835.)"""
    rows = torch.get_num_threads()
    if rows < 2 or logits.shape[-1] % rows:
        return logits.max(-1, keepdim=True).indices
    values, indices = logits.reshape(rows, -1).max(-1)  # [rows]: each row's first maximum
    row = values.max(0).indices  # the first row with the overall maximum
    return (indices[row] + row * (logits.shape[-1] // rows)).view(1, 1)


def _cache_keyword(target) -> str:
    """The name under which this transformers release's forward takes the KV cache."""
    parameters = inspect.signature(target.forward).parameters
    return "past_key_values" if "past_key_values" in parameters or "cache" not in parameters else "cache"


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
# The candidate generator
# ----------------------------------------------------------------------------------------------------------------------
class SlimSpecCandidateGenerator(CandidateGenerator):
    """Drafts K tokens per cycle with an EAGLE-3 drafter fed by the target's hidden states.

    Cycle n (after the target verified cycle n-1): the target's last forward returned hidden states for positions
    [seen, cur_len - 1) (the previous bonus token and the accepted drafts); rejected positions are never used.
    The drafter's cache is cropped back to ``stable`` (dropping its own speculative steps), the new
    (feature_t, token_{t+1}) pairs are appended, and K tokens are drafted autoregressively from the drafter's own
    pre-norm outputs. (Without prompt lookup ``seen == stable`` at every cycle.)

    Sampling: draft token k is drawn from softmax(l_k), where l_k are the drafter's logits over the *full* target
    vocabulary (-inf outside a truncated draft vocabulary) after the same logits processors the target uses
    (temperature, top-k, top-p, ...), and exactly those l_k are returned, so transformers' speculative sampling
    (accept with prob min(1, p/q), else resample from norm(max(p - q, 0))) reproduces the target's distribution.

    Hybrid drafting (prompt lookup + the drafter), on when the drafter's generation_config sets
    ``prompt_lookup_num_tokens`` (None or 0: off, the default) and optionally ``max_matching_ngram_size`` (default
    2), transformers' own names, and ``min_matching_ngram_size`` (default 1, as transformers' prompt lookup), saved
    and reloaded with the drafter. Each cycle:

    1. the target's features of the verified positions are kept (they exist only in this pass's outputs);
    2. lookup: if the last n tokens (n = max_matching_ngram_size down to min_matching_ngram_size) occurred earlier
       in input_ids, the block is the tokens that followed (``lookup_continuation``: up to prompt_lookup_num_tokens,
       never past max_length - 1, ending before an eos or a completed stop string as the drafter's blocks do);
    3. else (no match, or nothing left of it) the drafter ingests every kept position in one forward and drafts
       its K tokens exactly as without lookup.

    Why a minimum: alone, prompt lookup has nothing better than a one-token match; beside a trained drafter, a short
    match is the weaker guess. Balanced held-out set, bf16 Gemma 3 270M, the shipped drafter (``slimspec-bench
    cpu``): tokens/s with n-grams up to 3 and at least 1 / 2 / 3 tokens: 86.8 / 89.0 / 85.2 (prompt lookup alone
    75.6, the drafter alone 65.2).

    Ingesting lazily costs nothing in quality (the drafter sees the same positions, only later and in one batch) and
    saves the drafter's forward, whose full-vocabulary head reads all its weights for one row, on every lookup pass.

    A block comes from one source. Lossless: a lookup token is a draft drawn with certainty, so for sampling its
    logits row is a point mass (``point_mass_logits``) and speculative sampling keeps the target's distribution;
    greedy verification is unchanged. ``stats.source_per_pass`` records the source; the "cost" and "heuristic"
    schedules learn only from drafter passes (lookup acceptance is another distribution).
    """

    requires_model_outputs = True

    def __init__(self, drafter, generation_config, logits_processor, input_ids, tokenizer=None):
        self.drafter = drafter
        self.layer_ids = list(drafter.config.target_layer_ids)
        self.num_states = drafter.config.target_num_hidden_layers + 1  # embedding output + one per layer
        # Indices into outputs.hidden_states; the target returns None at the others.
        self.model_kwargs_overrides = {"output_hidden_states": sorted(set(self.layer_ids))}
        self.do_sample = bool(generation_config.do_sample)
        self.logits_processor = logits_processor if logits_processor is not None and len(logits_processor) else None
        self.max_length = generation_config.max_length
        draft_config = drafter.generation_config
        self.schedule = getattr(draft_config, "num_assistant_tokens_schedule", "constant") or "constant"
        self.num_assistant_tokens = int(draft_config.num_assistant_tokens)
        self.confidence_threshold = float(getattr(draft_config, "assistant_confidence_threshold", 0.0) or 0.0)
        self.lookup_tokens, self.ngram_size, self.min_ngram_size = hybrid_setting(draft_config)  # tokens 0: off
        self.source = "none"  # who proposed the current block: "drafter" | "lookup" | "none"
        self.stop_strings = _stop_string_criteria(generation_config, tokenizer)
        eos = generation_config.eos_token_id
        self.eos_ids = set() if eos is None else set([eos] if isinstance(eos, int) else [int(e) for e in eos])
        self.cache = None
        self.stable = 0  # drafter cache positions backed by target features
        self.pending = []  # [1, n, 3d] target features of verified positions not yet ingested: [stable, seen)
        self.stats = SlimSpecGenerateStats(prompt_length=input_ids.shape[1])
        drafter.last_generate_stats = self.stats
        self.acceptance = None
        if self.schedule == "cost":
            self._start_cost_schedule(drafter, draft_config)

    def _start_cost_schedule(self, drafter, draft_config):
        """Draft length from this machine's measured costs and the drafter's acceptance (``choose_draft_length``),
        revised after every pass as acceptance is observed; num_assistant_tokens is the longest draft allowed.
        When no length pays, this generation decodes plainly: no drafts and no hidden states asked of the target."""
        self.max_k = self.num_assistant_tokens
        self.costs = measured_costs(drafter, drafter.attached_target, self.max_k)
        self.acceptance = AcceptanceEstimate(getattr(draft_config, "slimspec_acceptance", None) or [], self.max_k)
        self.num_assistant_tokens = choose_draft_length(self.costs, self.acceptance.rates(), self.max_k)
        self.stats.chosen_draft_lengths.append(self.num_assistant_tokens)
        if self.num_assistant_tokens == 0:
            self.requires_model_outputs = False
            self.model_kwargs_overrides = {}

    # -- one cycle ------------------------------------------------------------------------------------------------
    def get_candidates(self, input_ids, model_kwargs=None, model_outputs=None, is_first_iteration=False,
                       n_last_matches=0, **kwargs):
        """input_ids: [1, cur_len] -> (candidate_ids [1, cur_len + K], candidate_logits [1, K, V] or None).
        The rule (class docstring): keep the features, then a lookup block if the context has a match, else the
        drafter's (ingesting what was kept)."""
        cur_len = input_ids.shape[1]
        self.source = "none"
        if is_first_iteration or cur_len == self.stats.prompt_length:
            # The target's prefill produces the first token and the prompt's hidden states; nothing to draft from.
            # (The length test catches the call without model outputs once the "cost" schedule turned drafting off.)
            return input_ids, None
        if self.requires_model_outputs:  # 1. the drafter is on: this pass's features are available only now
            if model_outputs is None:
                return input_ids, None
            self._keep_features(input_ids, target_hidden_states(model_outputs, self.num_states))
        budget = self.max_length - cur_len - 1  # the target adds one token after the block
        block = self._lookup(input_ids, budget) if self.lookup_tokens and budget > 0 else None  # 2. lookup
        if block is not None:
            self.source = "lookup"
            return block
        K = min(self.num_assistant_tokens, budget)  # 3. the drafter
        if K <= 0 or not self.requires_model_outputs:
            return input_ids, None
        self.source = "drafter"
        return self._draft(input_ids, *self._ingest(input_ids), K)

    def _lookup(self, input_ids, budget: int):
        """The lookup block, or None without a match: (candidate_ids [1, cur_len + K], point-mass logits [1, K, V]
        when sampling, else None), K <= min(prompt_lookup_num_tokens, budget)."""
        found = lookup_continuation(input_ids[0], self.ngram_size, min(self.lookup_tokens, budget),
                                    min_ngram=self.min_ngram_size)
        ids = input_ids
        for token in found.view(-1, 1, 1):
            extended = torch.cat([ids, token], dim=-1)
            if self._stops(token, extended):
                break
            ids = extended
        if ids.shape[1] == input_ids.shape[1]:
            return None
        drafts = ids[:, input_ids.shape[1] :]
        return ids, (point_mass_logits(drafts, self.drafter.config.vocab_size) if self.do_sample else None)

    def _draft(self, input_ids, g, logits, K: int):
        """K drafter tokens from its state after ingesting (g [1, 1, d], logits [1, V_d]) -> get_candidates' pair."""
        cur_len = input_ids.shape[1]
        drafter = self.drafter
        ids, chosen_logits = input_ids, []
        for k in range(K):
            token, q_logits, confident = self._select(ids, logits)
            extended = torch.cat([ids, token.to(ids.device)], dim=-1)
            if self._stops(token, extended):
                break
            ids = extended
            chosen_logits.append(q_logits)
            if k == K - 1 or not confident:
                break
            out = drafter(input_ids=token.to(drafter.device), hidden_states=g, past_key_values=self.cache,
                          logits_to_keep=1)
            g, logits = out.last_hidden_state, out.logits[:, -1]
        if ids.shape[1] == cur_len:
            return input_ids, None
        candidate_logits = torch.stack(chosen_logits, dim=1) if self.do_sample else None
        return ids, candidate_logits

    def _stops(self, token, extended) -> bool:
        """Whether draft ``token`` ([1, 1]), giving ``extended`` [1, L + 1], would stop generation (an eos or a
        completed stop string). Stopping criteria look only at the end of an accepted block (and some transformers
        releases keep tokens after an accepted eos): a block ends *before* such a draft, so the target's own token
        at that position ends the block, exactly as without an assistant."""
        return int(token) in self.eos_ids or (
            self.stop_strings is not None and bool(self.stop_strings(extended, None)[0]))

    @property
    def seen(self) -> int:
        """Positions whose target features are in hand: [0, stable) ingested, then the kept ones."""
        return self.stable + sum(features.shape[1] for features in self.pending)

    def _keep_features(self, input_ids, hidden_states):
        """Keep the target's features of the positions its last forward verified, [seen, cur_len - 1): that
        forward started at position ``seen`` (the previous pass's bonus token); its rows after these are the
        rejected drafts'."""
        new = input_ids.shape[1] - 1 - self.seen
        missing = [i for i in self.layer_ids if hidden_states is None or hidden_states[i] is None]
        if missing:
            raise RuntimeError(f"the target returned no hidden states at layers {missing}: was output_hidden_states "
                               f"overridden? SlimSpec needs outputs.hidden_states{self.layer_ids}.")
        rows = hidden_states[self.layer_ids[0]].shape[1]
        if rows < new:
            raise RuntimeError(f"the target's last forward covered {rows} positions but {new} need features: "
                               f"generation from a pre-filled past_key_values is not supported by SlimSpec.")
        self.pending.append(torch.cat([hidden_states[i][:, :new] for i in self.layer_ids], dim=-1))

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
            token = torch.multinomial(probs, num_samples=1)
        else:
            token = logits.argmax(-1, keepdim=True)
            probs = None
        confident = True
        if self.confidence_threshold > 0:
            probs = torch.softmax(logits, dim=-1) if probs is None else probs
            confident = bool(probs.gather(-1, token) >= self.confidence_threshold)
        return token, (logits if self.do_sample else None), confident

    # -- after verification ---------------------------------------------------------------------------------------
    def update_candidate_strategy(self, input_ids, scores, num_matches):
        """Record the pass and its source; after a drafter pass adapt K: the "cost" schedule re-chooses it from the
        observed acceptance, the "heuristic" schedules add 2 if all drafts were accepted, else remove 1."""
        drafted = scores.shape[1] - 1
        stats = self.stats
        stats.target_passes += 1
        stats.new_tokens = input_ids.shape[1] - stats.prompt_length
        if stats.target_passes > 1:  # the first pass is the prefill
            stats.drafted_per_pass.append(drafted)
            stats.accepted_per_pass.append(int(num_matches))
            stats.source_per_pass.append(self.source if drafted > 0 else "none")
        drafter_pass = drafted > 0 and self.source == "drafter"  # lookup passes teach the schedules nothing
        if self.acceptance is not None and drafter_pass:
            self.acceptance.observe(drafted, int(num_matches))
            self.num_assistant_tokens = choose_draft_length(self.costs, self.acceptance.rates(), self.max_k)
            stats.chosen_draft_lengths.append(self.num_assistant_tokens)
        if self.schedule in ("heuristic", "heuristic_transient") and drafter_pass:
            if num_matches == drafted:
                self.num_assistant_tokens += 2
            else:
                self.num_assistant_tokens = max(1, self.num_assistant_tokens - 1)
            if self.schedule == "heuristic":  # persists on the drafter, as transformers does for its assistants
                self.drafter.generation_config.num_assistant_tokens = self.num_assistant_tokens


def target_hidden_states(outputs, num_states: int):
    """The per-layer hidden states of a target forward (``num_states`` = layers + 1 entries), found by name where
    this transformers release uses a known one, else by shape: ``model_kwargs_overrides`` asks for them, and a
    future release that renames the output field must not break drafters already published."""
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


def _stop_string_criteria(generation_config, tokenizer):
    """transformers' own StopStringCriteria for ``generate(stop_strings=..., tokenizer=...)``, or None."""
    if not getattr(generation_config, "stop_strings", None):
        return None
    if tokenizer is None:
        raise ValueError("stop_strings needs generate(..., tokenizer=tokenizer), as without an assistant.")
    from transformers import StopStringCriteria

    return StopStringCriteria(tokenizer=tokenizer, stop_strings=generation_config.stop_strings)


# ----------------------------------------------------------------------------------------------------------------------
# attach / detach
# ----------------------------------------------------------------------------------------------------------------------
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


def attach(drafter, target):
    """Bind ``drafter`` to ``target`` for ``target.generate(assistant_model=drafter)``. Returns the drafter."""
    reason = assisted_generation_support(target)
    if reason:
        raise RuntimeError(f"SlimSpec assisted generation is unavailable: {reason}")
    check_target_fits(drafter, target)
    drafter.check_vocab_maps()
    if drafter.attached_target is not None:
        detach(drafter)
    if "_get_candidate_generator" in vars(target):
        raise RuntimeError("this target is already bound to another SlimSpec drafter (or patched): detach that first.")
    class_method = type(target)._get_candidate_generator
    signature = inspect.signature(class_method)

    def _get_candidate_generator(*args, **kwargs):
        # transformers calls this private hook by keyword today; bind by name whatever the calling convention, and
        # recognise the drafter among the arguments by identity, not by the name of the parameter that carries it.
        try:
            arguments = signature.bind(target, *args, **kwargs).arguments
        except TypeError:
            arguments = dict(kwargs)
        if not any(value is drafter for value in arguments.values()):
            return class_method(target, *args, **kwargs)
        return _candidate_generator(drafter, arguments)

    _get_candidate_generator.__slimspec__ = drafter
    target._get_candidate_generator = _get_candidate_generator
    drafter._attached.module = target
    if drafter.embed_tokens is None:
        drafter.use_target_embeddings(target.get_input_embeddings())
    drafter.optimize_for_cpu()
    return drafter


def _candidate_generator(drafter, arguments: dict) -> SlimSpecCandidateGenerator:
    """Our generator from the arguments transformers passed to ``_get_candidate_generator`` (bound by name)."""
    missing = [name for name in ("input_ids", "generation_config") if arguments.get(name) is None]
    if missing:
        import transformers

        raise RuntimeError(f"transformers {transformers.__version__} called _get_candidate_generator without "
                           f"{missing}; this SlimSpec release does not know that calling convention.")
    input_ids, config = arguments["input_ids"], arguments["generation_config"]
    if input_ids.shape[0] != 1:
        raise ValueError(f"assisted generation in transformers is batch-size 1 only; got a batch of "
                         f"{input_ids.shape[0]}. Generate one sequence at a time.")
    for option in ("prompt_lookup_num_tokens", "assistant_early_exit"):
        if getattr(config, option, None) is not None:
            raise ValueError(f"{option} selects another candidate generator; do not combine it with a SlimSpec "
                             f"drafter (for prompt lookup beside the drafter, set prompt_lookup_num_tokens on "
                             f"the drafter's generation_config).")
    return SlimSpecCandidateGenerator(drafter, config, arguments.get("logits_processor"), input_ids,
                                      tokenizer=arguments.get("target_tokenizer"))


def detach(drafter):
    """Undo ``attach``: the target gets back exactly its own attributes; the drafter forgets the target."""
    target = drafter.attached_target
    if target is not None:
        hook = vars(target).get("_get_candidate_generator")
        if hook is not None and getattr(hook, "__slimspec__", None) is drafter:
            del target._get_candidate_generator
    drafter._attached.module = None
    if drafter.embed_tokens is None:
        drafter.use_target_embeddings(None)
    drafter.unpack_for_cpu()
    return drafter
