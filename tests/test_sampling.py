"""Sampling with a drafter keeps the target's distribution: a chi-square test against the exact joint
distribution of short continuations (by enumeration), for the drafter, for hybrid blocks and for draft trees, each
with a negative control that gets the rule wrong and must fail."""

import pytest
import torch
from transformers.generation import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

import generation_slimspec
from test_generate import drafter_for, tiny_target

def processors(temperature, top_k, top_p):
    procs = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k:
        procs.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p))
    return procs


@torch.no_grad()
def exact_joint(target, prompt, steps, procs):
    """P(x_1..x_steps | prompt) for every continuation, by enumeration: {tuple: prob}."""
    dist = {(): 1.0}
    for _ in range(steps):
        nxt = {}
        for seq, p in dist.items():
            ids = torch.cat([prompt, torch.tensor([seq], dtype=torch.long).view(1, -1)], dim=1)
            logits = procs(ids, target(ids).logits[:, -1].float())
            probs = torch.softmax(logits, -1)[0]
            for tok in torch.nonzero(probs > 1e-12).flatten().tolist():
                nxt[seq + (tok,)] = p * float(probs[tok])
        dist = nxt
    return dist


def chi_square_pvalue(samples, dist, min_expected=5.0):
    from scipy.stats import chi2

    n = len(samples)
    counts = {}
    for s in samples:
        counts[s] = counts.get(s, 0) + 1
    cells = sorted(dist, key=lambda s: -dist[s])
    big = [c for c in cells if dist[c] * n >= min_expected]
    rest_p = 1.0 - sum(dist[c] for c in big)
    obs = [counts.get(c, 0) for c in big] + [n - sum(counts.get(c, 0) for c in big)]
    exp = [dist[c] * n for c in big] + [rest_p * n]
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp) if e > 0)
    return float(chi2.sf(stat, df=len([e for e in exp if e > 0]) - 1))


def sample_assisted(target, drafter, prompt, steps, n, gen_kw):
    """n assisted samples (seeds 0..n-1) -> (their new tokens as tuples, the runs' merged statistics)."""
    out, stats = [], []
    for seed in range(n):
        torch.manual_seed(seed)
        seq = target.generate(prompt, do_sample=True, max_new_tokens=steps, assistant_model=drafter, **gen_kw)
        out.append(tuple(seq[0, prompt.shape[1]:].tolist()))
        stats.append(drafter.last_generate_stats)
    return out, generation_slimspec.SlimSpecGenerateStats.merge(stats)


def sampled_tail_pvalue(target, drafter, prompt, steps, gen_kw, n=1500):
    """Chi-square p-value that assisted samples of tokens 2..steps follow the target's exact distribution (token 1
    comes from the prefill, without drafts), and the runs' merged statistics."""
    dist = exact_joint(target, prompt, steps, processors(**gen_kw))
    samples, stats = sample_assisted(target, drafter, prompt, steps, n, gen_kw)
    tail = {}
    for s, p in dist.items():
        tail[s[1:]] = tail.get(s[1:], 0.0) + p
    return chi_square_pvalue([s[1:] for s in samples], tail), stats


SAMPLING_CASES = [dict(temperature=1.0, top_k=0, top_p=1.0), dict(temperature=0.7, top_k=4, top_p=0.9)]


def sampling_pair(lookup_tokens=None):
    """A 6-token target and a sharp drafter unlike it, attached, 2 drafts per pass; prompt lookup of
    ``lookup_tokens`` beside it when given (hybrid)."""
    target = tiny_target(vocab=6, seed=4)
    drafter = drafter_for(target, scale=1.0, head_rank=None).attach(target)
    drafter.generation_config.num_assistant_tokens = 2
    drafter.generation_config.prompt_lookup_num_tokens = lookup_tokens
    return target, drafter


@pytest.mark.parametrize("gen_kw", SAMPLING_CASES)
def test_sampling_matches_target_distribution(gen_kw):
    """The first token comes from the prefill (no draft); tokens 2 and 3 are drafted and verified."""
    target, drafter = sampling_pair()
    pvalue, stats = sampled_tail_pvalue(target, drafter, torch.tensor([[1, 2, 3]]), 3, gen_kw)
    drafter.detach()
    assert sum(stats.drafted_per_pass) > 0
    assert pvalue > 1e-3


def test_sampling_test_detects_a_wrong_draft_distribution(monkeypatch):
    """Negative control: a drafter that samples from one distribution but reports another must fail the test."""
    target, drafter = sampling_pair()
    original = generation_slimspec.SlimSpecProposer._select

    def misreporting_select(self, ids, draft_logits):
        token, logits, confident = original(self, ids, draft_logits)
        return token, torch.zeros_like(logits), confident  # claims uniform q while sampling a sharp q

    monkeypatch.setattr(generation_slimspec.SlimSpecProposer, "_select", misreporting_select)
    pvalue, _ = sampled_tail_pvalue(target, drafter, torch.tensor([[1, 2, 3]]), 3, SAMPLING_CASES[0])
    drafter.detach()
    assert pvalue < 1e-6


HYBRID_PROMPT = torch.tensor([[1, 2, 3, 1]])  # the first sampled token is often in it: lookup fires, else the drafter


@pytest.mark.parametrize("gen_kw", SAMPLING_CASES)
def test_hybrid_sampling_matches_target_distribution(gen_kw):
    """Hybrid blocks: lookup tokens (point masses) and drafter tokens in the same runs; tokens 2..4 verified."""
    target, drafter = sampling_pair(lookup_tokens=3)
    pvalue, stats = sampled_tail_pvalue(target, drafter, HYBRID_PROMPT, 4, gen_kw)
    drafter.detach()
    drafted = stats.drafted_by_source()
    assert drafted["lookup"] > 100 and drafted["drafter"] > 100, drafted
    assert max(d for d, s in zip(stats.drafted_per_pass, stats.source_per_pass) if s == "lookup") >= 2
    assert pvalue > 1e-3


def test_hybrid_sampling_test_detects_lookup_tokens_scored_as_uniform(monkeypatch):
    """Negative control: lookup tokens reported with a uniform q instead of their point mass must fail the test
    (the drafter's own tokens stay correctly scored)."""
    target, drafter = sampling_pair(lookup_tokens=3)
    original = generation_slimspec.SlimSpecProposer._lookup

    def uniform_lookup(self, input_ids, budget):
        block = original(self, input_ids, budget)
        return None if block is None else (block[0], torch.zeros_like(block[1]))

    monkeypatch.setattr(generation_slimspec.SlimSpecProposer, "_lookup", uniform_lookup)
    pvalue, stats = sampled_tail_pvalue(target, drafter, HYBRID_PROMPT, 4, SAMPLING_CASES[0])
    drafter.detach()
    assert stats.drafted_by_source()["lookup"] > 100
    assert pvalue < 1e-6


def tree_pair():
    """``sampling_pair`` with prompt lookup beside it, drafting trees: top-2 children, 3 levels, 5 nodes."""
    target, drafter = sampling_pair(lookup_tokens=3)
    for name, value in dict(tree_total_tokens=5, tree_depth=3, tree_top_k=2).items():
        setattr(drafter.generation_config, name, value)
    return target, drafter


@pytest.mark.parametrize("gen_kw", SAMPLING_CASES)
def test_tree_sampling_matches_target_distribution(gen_kw, monkeypatch):
    """Recursive rejection sampling over each node's children (drafter and lookup branches): tokens 2..4 verified
    as trees; second children are accepted too, and paths go more than one node deep."""
    target, drafter = tree_pair()
    original, paths = generation_slimspec.accept_tree_sampled, []

    def recording(tree, *args):
        path, tokens, scores = original(tree, *args)
        first_child = [tree.parents.index(tree.parents[node]) for node in path]  # of each path node's parent
        paths.append((len(path), any(node != first for node, first in zip(path, first_child))))
        return path, tokens, scores

    monkeypatch.setattr(generation_slimspec, "accept_tree_sampled", recording)
    pvalue, stats = sampled_tail_pvalue(target, drafter, HYBRID_PROMPT, 4, gen_kw)
    drafter.detach()
    assert stats.source_per_pass.count("tree") > 500 and max(n for n, _ in paths) >= 2
    assert sum(second for _, second in paths) > 50  # a later sibling accepted after the first was rejected
    assert pvalue > 1e-3


def test_tree_sampling_test_detects_rejected_siblings_left_in(monkeypatch):
    """Negative control: trying the next sibling (and the final draw) without removing the rejected one must fail."""
    monkeypatch.setattr(generation_slimspec, "without", lambda p, token: p)
    target, drafter = tree_pair()
    pvalue, stats = sampled_tail_pvalue(target, drafter, HYBRID_PROMPT, 4, SAMPLING_CASES[0])
    drafter.detach()
    assert stats.source_per_pass.count("tree") > 500
    assert pvalue < 1e-6


def test_speculative_sampling_reports_each_positions_acceptance_probability():
    """``accept_sampled``'s expected acceptance, sum_x min(p(x), q(x)) per draft position, is the rate at which the
    first draft is accepted over draws from q (what the "cost" schedule learns from when sampling)."""
    torch.manual_seed(0)
    scores, draft_logits = torch.randn(1, 3, 6), torch.randn(1, 2, 6)
    p, q = scores.softmax(-1), draft_logits.softmax(-1)
    accepted, draws = 0, 4000
    for _ in range(draws):
        drafts = torch.multinomial(q[0], 1).view(1, -1)
        n, tokens, expected = generation_slimspec.accept_sampled(drafts, draft_logits, scores)
        accepted += n >= 1
    assert expected == pytest.approx(torch.minimum(p[0, :2], q[0]).sum(-1).tolist())
    assert accepted / draws == pytest.approx(expected[0], abs=0.03)
    estimate = generation_slimspec.AcceptanceEstimate([0.9, 0.9], max_k=2, strength=4)
    estimate.observe_expected([0.3, 0.5])
    assert estimate.rates() == pytest.approx([(3.6 + 0.3) / 5, (3.6 + 0.5) / 5])


def test_sample_from_draws_the_given_distribution():
    """The inverse-CDF draw the loop samples with: unnormalized weights, zeros never drawn, one row per row."""
    torch.manual_seed(0)
    weights = torch.tensor([[0.2, 0.0, 1.2, 0.6]])
    draws = torch.cat([generation_slimspec.sample_from(weights) for _ in range(20000)]).flatten()
    assert (torch.bincount(draws, minlength=4) / 20000).tolist() == pytest.approx([0.1, 0.0, 0.6, 0.3], abs=0.01)
    rows = generation_slimspec.sample_from(torch.tensor([[0.0, 0.0, 3.0], [5.0, 0.0, 0.0]]))
    assert rows.tolist() == [[2], [0]]
