"""Draft length: transformers' heuristic schedule, and SlimSpec's "cost" schedule, which chooses it from this
machine's measured costs and the acceptance it observes; and the call statistics the schedules read."""

import pytest
import torch

import generation_slimspec
from test_generate import (drafter_for, oracle_pair, plain_and_assisted, prompts, repeating_prompts, tiny_target,
                           with_lookup)


@pytest.fixture(scope="module")
def target():
    return tiny_target()


def test_heuristic_schedule_adapts_draft_length():
    target, drafter = oracle_pair()
    drafter.generation_config.num_assistant_tokens = 2
    drafter.generation_config.num_assistant_tokens_schedule = "heuristic"
    drafter.attach(target)
    target.generate(torch.tensor([[3, 4]]), do_sample=False, max_new_tokens=20)
    target.generate(torch.tensor([[3, 4]]), do_sample=False, max_new_tokens=20, assistant_model=drafter)
    drafter.detach()
    drafted = drafter.last_generate_stats.drafted_per_pass
    assert drafted[:3] == [2, 4, 6]  # all accepted: +2 per pass
    assert drafter.generation_config.num_assistant_tokens > 2  # "heuristic" persists on the drafter


# --- the "cost" schedule: draft length from measured costs --------------------------------------------------------
MS = 1e-3
# target pass for 1..6 new tokens (Gemma 3 270M, ~60 cached tokens) on the two CPU classes this project has met
NATIVE_BF16 = generation_slimspec.DraftCosts([31.8 * MS, 32.0 * MS, 32.2 * MS, 32.4 * MS, 32.6 * MS, 32.9 * MS], 3 * MS)
AVX2_BF16 = generation_slimspec.DraftCosts([63 * MS, 100 * MS, 140 * MS, 175 * MS, 205 * MS, 234 * MS], 3 * MS)
AVX2_FP32_PREPARED = generation_slimspec.DraftCosts([133 * MS, 146 * MS, 160 * MS, 173 * MS, 186 * MS, 199 * MS], 8 * MS)


def test_draft_length_follows_the_machine_and_the_drafter():
    choose, expected = generation_slimspec.choose_draft_length, generation_slimspec.expected_tokens
    strong, good, weak = [0.9, 0.85, 0.8], [0.7, 0.6, 0.55], [0.35, 0.13, 0.05, 0.02, 0.01]
    # hand-computed: verifying 6 tokens costs about one step on native bf16, so a strong drafter drafts the most
    assert choose(NATIVE_BF16, strong, 5) == 5 and choose(NATIVE_BF16, good, 5) == 3 and choose(NATIVE_BF16, weak, 5) == 1
    # AVX2 bf16: one draft still pays for a good drafter (1.7 tokens / 103 ms > 1 / 63 ms), nothing for a weak one
    assert choose(AVX2_BF16, good, 5) == 1 and choose(AVX2_BF16, weak, 5) == 0
    assert choose(AVX2_FP32_PREPARED, good, 5) == 2 and choose(NATIVE_BF16, strong, 2) == 2 and choose(NATIVE_BF16, [0.0], 5) == 0
    for costs in (NATIVE_BF16, AVX2_BF16, AVX2_FP32_PREPARED):  # the choice is the argmax of tokens per second
        for acc in (strong, good, weak):
            rates = [1 / costs.target_pass[0]] + [expected(acc, k) / (costs.target_pass[k] + k * costs.draft)
                                                  for k in range(1, 6)]
            assert choose(costs, acc, 5) == max(range(6), key=lambda k: (rates[k], -k))
    assert expected([0.5], 3) == 1 + 0.5 + 0.25 + 0.125


def test_acceptance_estimate_moves_from_the_prior_to_what_is_observed():
    est = generation_slimspec.AcceptanceEstimate([0.8, 0.6], max_k=3, strength=4)
    assert est.rates() == [0.8, 0.6, 0.6]
    for _ in range(40):
        est.observe(drafted=3, accepted=0)  # every first draft rejected: positions 2 and 3 are never offered
    first, second, third = est.rates()
    assert first < 0.1 and second == 0.6 and third == 0.6
    est.observe(drafted=3, accepted=3)
    assert est.offered == [41, 1, 1] and est.accepted == [1, 1, 1]


@pytest.mark.parametrize("costs,first_k", [(AVX2_BF16, 0), (NATIVE_BF16, 3)])
def test_cost_schedule_drafts_only_where_it_pays_and_stays_identical(target, monkeypatch, costs, first_k):
    monkeypatch.setattr(generation_slimspec, "measured_costs", lambda *a, **k: costs)
    drafter = drafter_for(target)
    drafter.generation_config.num_assistant_tokens_schedule = "cost"
    drafter.generation_config.slimspec_acceptance = [0.5, 0.6, 0.55]  # AVX2 bf16: 1.5 / 103 ms < 1 / 63 ms
    drafter.attach(target)
    try:
        for ids in prompts(4, 101, seed=5):
            plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=12)
            assert torch.equal(plain, assisted)
            stats = drafter.last_generate_stats
            assert stats.chosen_draft_lengths[0] == first_k and (sum(stats.drafted_per_pass) > 0) == (first_k > 0)
    finally:
        drafter.detach()


def test_cost_schedule_stops_drafting_when_acceptance_collapses(target, monkeypatch):
    """A drafter promising high acceptance that is in fact random: observed rejections pull the estimate down
    until drafting no longer pays, within the same generate call."""
    monkeypatch.setattr(generation_slimspec, "measured_costs", lambda *a, **k: AVX2_BF16)
    drafter = drafter_for(target, seed=7)
    drafter.generation_config.num_assistant_tokens_schedule = "cost"
    drafter.generation_config.slimspec_acceptance = [0.7, 0.6, 0.55]
    drafter.attach(target)
    try:
        ids = prompts(1, 101, seed=9)[0]
        plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=40)
        assert torch.equal(plain, assisted)
        chosen = drafter.last_generate_stats.chosen_draft_lengths
        assert chosen[0] == 1 and chosen[-1] == 0  # drafting paid on the promise, and stops on the evidence
    finally:
        drafter.detach()


def test_costs_are_measured_on_the_real_target(target):
    drafter = drafter_for(target).attach(target)
    calibration = drafter.calibrate(target, prepare=False, max_k=3, context=16, repeats=1)
    costs = calibration.costs
    assert len(costs.target_pass) == 4 and all(t > 0 for t in costs.target_pass) and costs.draft > 0
    assert costs.sample_draft > 0
    assert generation_slimspec.measured_costs(drafter, target, 3) is costs  # kept for this target and setup
    assert generation_slimspec.calibration_for(drafter, tiny_target(seed=2)) is None  # another target: none


def test_conditional_acceptance_counts_only_passes_that_reached_the_position():
    stats = generation_slimspec.SlimSpecGenerateStats(drafted_per_pass=[3, 3, 3, 2], accepted_per_pass=[0, 1, 3, 2])
    assert stats.conditional_acceptance() == [3 / 4, 2 / 3, 1.0]
    assert stats.per_position_acceptance() == [3 / 4, 2 / 4, 1 / 3]  # unconditional: reaching position j + 1


def test_stats_by_source_and_drafter_only_acceptance():
    """Accepted drafts by source and their shares; acceptance per position counts the drafter's passes only."""
    stats = generation_slimspec.SlimSpecGenerateStats(
        drafted_per_pass=[3, 5, 3, 0, 4, 2], accepted_per_pass=[0, 5, 1, 0, 2, 2],
        source_per_pass=["drafter", "lookup", "drafter", "none", "lookup", "drafter"])
    assert stats.drafted_by_source() == dict(drafter=8, lookup=9)
    assert stats.accepted_by_source() == dict(drafter=3, lookup=7)
    assert stats.accepted_share() == dict(drafter=0.3, lookup=0.7)
    assert stats.tau == (10 + 6) / 6  # every source counts in tau
    assert stats.conditional_acceptance() == [2 / 3, 1 / 2, 0.0]  # passes (3, 0), (3, 1), (2, 2)
    assert stats.per_position_acceptance() == [2 / 3, 1 / 3, 0.0]
    nothing = generation_slimspec.SlimSpecGenerateStats(drafted_per_pass=[2], accepted_per_pass=[0],
                                                        source_per_pass=["lookup"])
    assert nothing.accepted_share() == dict(lookup=0.0)


def test_stats_of_several_calls_add_up_field_by_field():
    """Merging keeps every field (prompt_length included): counts are summed and per-pass lists concatenated."""
    from dataclasses import fields

    Stats = generation_slimspec.SlimSpecGenerateStats
    a = Stats(prompt_length=4, new_tokens=6, target_passes=3, drafted_per_pass=[3, 3], accepted_per_pass=[1, 2],
              chosen_draft_lengths=[3], source_per_pass=["drafter", "lookup"])
    tree = dict(drafted=dict(drafter=3, lookup=1), accepted=dict(drafter=1, lookup=1))
    b = Stats(prompt_length=7, new_tokens=2, target_passes=3, drafted_per_pass=[2, 4], accepted_per_pass=[0, 2],
              chosen_draft_lengths=[2, 0], source_per_pass=["drafter", "tree"], tree_sources=[tree])
    merged = Stats.merge([a, b])
    assert merged == a + b == Stats(prompt_length=11, new_tokens=8, target_passes=6, drafted_per_pass=[3, 3, 2, 4],
                                    accepted_per_pass=[1, 2, 0, 2], chosen_draft_lengths=[3, 2, 0],
                                    source_per_pass=["drafter", "lookup", "drafter", "tree"], tree_sources=[tree])
    # a tree pass counts its nodes by their own source
    assert merged.accepted_by_source() == dict(drafter=2, lookup=3) and merged.drafted_by_source()["drafter"] == 8
    assert all(getattr(merged, f.name) != getattr(Stats(), f.name) for f in fields(Stats))  # no field left behind
    assert a.drafted_per_pass == [3, 3] and Stats.merge([]) == Stats()  # the parts are unchanged
    assert merged.tau == (5 + 4) / 4 and merged.acceptance_rate == 5 / 12


def test_cost_schedule_learns_only_from_drafter_passes(target, monkeypatch):
    """Hybrid under the "cost" schedule: the draft length is re-chosen after drafter passes only; where drafting
    does not pay (K = 0, no hidden states asked of the target) lookup still proposes."""
    drafter = with_lookup(drafter_for(target), 4)
    drafter.generation_config.num_assistant_tokens_schedule = "cost"
    drafter.generation_config.slimspec_acceptance = [0.5, 0.6, 0.55]
    drafter.attach(target)
    try:
        for costs, drafting in ((NATIVE_BF16, True), (AVX2_BF16, False)):
            monkeypatch.setattr(generation_slimspec, "measured_costs", lambda *a, costs=costs, **k: costs)
            for ids in repeating_prompts(4, 101, seed=3):
                plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=20)
                assert torch.equal(plain, assisted)
                stats = drafter.last_generate_stats
                drafter_passes = [d for d, s in zip(stats.drafted_per_pass, stats.source_per_pass) if s == "drafter"]
                assert len(stats.chosen_draft_lengths) == 1 + len(drafter_passes)
                assert bool(drafter_passes) == drafting and "lookup" in stats.source_per_pass
    finally:
        drafter.detach()


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_cost_schedule_proposes_lookup_blocks_only_where_they_pay(target, monkeypatch, slope):
    """Hybrid under the "cost" schedule on repeating prompts: where verifying more tokens costs nothing, lookup
    blocks run at full length; where each verified token costs a whole pass (a bf16 target without native bf16
    matmuls, exaggerated), no block of any length beats plain decoding and none is proposed."""
    from generation_slimspec import DraftCosts

    costs = DraftCosts(target_pass=[0.1 + slope * n for n in range(12)], draft=0.05)
    monkeypatch.setattr(generation_slimspec, "measured_costs", lambda *a, **k: costs)
    drafter = with_lookup(drafter_for(target), 6)
    drafter.generation_config.num_assistant_tokens_schedule = "cost"
    drafter.attach(target)
    runs = []
    for ids in repeating_prompts(6, 101, seed=3):
        plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=20)
        assert torch.equal(plain, assisted)
        runs.append(drafter.last_generate_stats)
    lookup = [d for run in runs for d, s in zip(run.drafted_per_pass, run.source_per_pass) if s == "lookup"]
    if slope:
        assert lookup == []
    else:
        assert lookup and max(lookup) == 6


def promising_random_drafter(target, costs, monkeypatch):
    """A random drafter on the "cost" schedule with these measured costs, promising 0.9 acceptance, attached."""
    monkeypatch.setattr(generation_slimspec, "measured_costs", lambda *a, **k: costs)
    drafter = drafter_for(target, seed=7)
    drafter.generation_config.num_assistant_tokens_schedule = "cost"
    drafter.generation_config.num_assistant_tokens = 3
    drafter.generation_config.slimspec_acceptance = [0.9, 0.9, 0.9]
    return drafter.attach(target)


def test_sampling_learns_its_acceptance_across_calls(target, monkeypatch):
    """Sampling accepts less than the saved (greedy) acceptance. A random drafter promising 0.9, sampling with
    top_k=1 (so its drafts are nearly always rejected): the first call starts from the promise and learns within
    the call; the next call with the same sampling settings starts from what the first saw (one probe pass, then
    plain decoding); a call with other settings starts from the promise again, and greedy calls always do."""
    costs = generation_slimspec.DraftCosts([50 * MS, 60 * MS, 70 * MS, 80 * MS], 3 * MS)  # its own records
    drafter = promising_random_drafter(target, costs, monkeypatch)
    ids = prompts(1, 101, seed=9)[0]

    def sampled(**settings):
        torch.manual_seed(0)
        target.generate(ids, do_sample=True, max_new_tokens=40, assistant_model=drafter, **settings)
        return drafter.last_generate_stats

    try:
        first = sampled(top_k=1)
        assert first.chosen_draft_lengths[0] == 3 and first.chosen_draft_lengths[-1] == 0
        (shared, _), = costs.sampled_acceptance.values()
        seen = shared.offered[0]
        assert seen == first.drafted_per_pass.count(3) + first.drafted_per_pass.count(2) + (
            first.drafted_per_pass.count(1))  # every drafter pass of the call
        second = sampled(top_k=1)
        assert second.chosen_draft_lengths[0] == 1 and sum(second.drafted_per_pass) == 1  # the probe only
        assert shared.offered[0] == seen + 1
        assert sampled(top_k=1, temperature=0.5).chosen_draft_lengths[0] == 3 and len(costs.sampled_acceptance) == 2
        plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=12)
        assert torch.equal(plain, assisted) and drafter.last_generate_stats.chosen_draft_lengths[0] == 3
    finally:
        drafter.detach()


@pytest.mark.parametrize("sample_draft", [0.0, 1.0])
def test_sampling_prices_each_drafts_draw(target, monkeypatch, sample_draft):
    """When sampling, a draft also costs its draw from the vocabulary and its rows in the acceptance test
    (``DraftCosts.sample_draft``, measured by ``calibrate``): where that makes drafting too dear, the call decodes
    plainly after its probe; greedy calls do not pay it."""
    costs = generation_slimspec.DraftCosts([50 * MS, 52 * MS, 54 * MS, 56 * MS], 1 * MS, sample_draft=sample_draft)
    drafter = promising_random_drafter(target, costs, monkeypatch)
    try:
        torch.manual_seed(0)
        target.generate(prompts(1, 101, seed=9)[0], do_sample=True, top_k=1, max_new_tokens=20,
                        assistant_model=drafter)
        drafted = sum(drafter.last_generate_stats.drafted_per_pass)
        assert drafted == 1 if sample_draft else drafted > 3
        assert costs.draft == 1 * MS  # the measured costs stay as measured
    finally:
        drafter.detach()
