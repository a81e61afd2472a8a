"""Tree drafting (EAGLE-2 dynamic trees) on our loop: greedy token-identical to plain generate on plain (Llama)
and sliding-window (Gemma 3) targets, trees that run into eos, max_new_tokens and stop strings, the drafter's tree
scores equal to drafting each path as a chain, the accepted path kept in the target's cache, the hybrid tree's
sources, the settings saved and validated, and sampling with trees."""

import math

import pytest
import torch
from transformers import DynamicCache, Gemma3ForCausalLM, Gemma3TextConfig

import generation_slimspec
from generation_slimspec import (DraftTree, keep_positions, log_normalizer_, top_choices, tree_attention,
                                 tree_logit_scale, tree_setting)
from test_generate import (drafter_for, oracle_pair, plain_and_assisted, prompts, repeating_prompts, tiny_target,
                           with_lookup)
from test_loop import word_tokenizer

TREE = dict(tree_total_tokens=12, tree_depth=4, tree_top_k=3)


def tiny_gemma3(vocab=8, window=6, seed=0):
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=16, vocab_size=vocab, sliding_window=window,
                           layer_types=["sliding_attention"] * 2 + ["full_attention"] + ["sliding_attention"] * 3,
                           max_position_embeddings=256, pad_token_id=0, bos_token_id=None, eos_token_id=None)
    return Gemma3ForCausalLM(cfg).eval()


def with_tree(drafter, **settings):
    for name, value in {**TREE, **settings}.items():
        setattr(drafter.generation_config, name, value)
    return drafter


@pytest.fixture
def kept_rows(monkeypatch):
    """Every accepted path's rows, as the loop hands them to keep_positions."""
    seen, keep = [], generation_slimspec.keep_positions

    def spy(cache, start, rows):
        seen.append(list(rows))
        return keep(cache, start, rows)

    monkeypatch.setattr(generation_slimspec, "keep_positions", spy)
    return seen


# --- greedy: token-identical -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: tiny_target(vocab=8), lambda: tiny_target(vocab=101), tiny_gemma3],
                         ids=["llama-vocab8", "llama-vocab101", "gemma3-window6"])
def test_tree_greedy_is_token_identical(make, kept_rows):
    """A vocabulary of 8 makes a random drafter's top 3 often hold the target's token, and not always first: the
    accepted paths then leave the block's prefix (the cache gathers them); Gemma 3's window of 6 is passed by far."""
    target = make()
    vocab = target.config.vocab_size
    drafter = with_tree(drafter_for(target)).attach(target)
    for i, ids in enumerate(prompts(6, vocab, seed=3) + [torch.randint(1, vocab, (1, 20))]):
        plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=[9, 25][i % 2])
        assert torch.equal(plain, assisted), (ids, plain, assisted)
        stats = drafter.last_generate_stats
        assert set(stats.source_per_pass) == {"tree"} and max(stats.drafted_per_pass) == TREE["tree_total_tokens"]
    if vocab == 8:
        assert any(rows != list(range(len(rows))) for rows in kept_rows)  # paths off the block's prefix
        assert max(len(rows) for rows in kept_rows) >= 3  # and deeper than one node


def test_a_sharper_tree_score_reorders_nodes_and_stays_token_identical():
    """tree_logit_scale changes which nodes a pass keeps (nodes across branches and depths are ranked otherwise),
    never what the target produces."""
    target = tiny_target(vocab=8)
    kept = {}
    for alpha in (1.0, 3.0):
        drafter = with_tree(drafter_for(target), tree_total_tokens=6, tree_logit_scale=alpha).attach(target)
        kept[alpha] = []
        for ids in prompts(4, 8, seed=5):
            plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=12)
            assert torch.equal(plain, assisted), (alpha, ids)
            kept[alpha].append(drafter.last_generate_stats.accepted_per_pass)
        drafter.detach()
    assert kept[1.0] != kept[3.0]  # the trees differed (the accepted lengths per pass show it)


@pytest.mark.parametrize("total", [1, 4, 24])
def test_trees_running_into_eos_and_max_length(total):
    """The oracle target emits 1 x 7 then eos 0; its drafter proposes exactly that, so the tree's best path runs
    into the eos and into max_new_tokens mid-tree."""
    target, drafter = oracle_pair()
    with_tree(drafter, tree_total_tokens=total, tree_depth=5, tree_top_k=2).attach(target)
    ids = torch.tensor([[7, 8, 9]])
    for max_new in (1, 4, 7, 8, 12, 30):
        kw = dict(max_new_tokens=max_new, eos_token_id=0, min_new_tokens=7)
        plain, assisted = plain_and_assisted(target, drafter, ids, **kw)
        assert torch.equal(plain, assisted), (max_new, plain, assisted)
    assert plain.shape[1] == 3 + 8 and plain[0, -1] == 0
    assert drafter.last_generate_stats.tau > (1.5 if total > 1 else 1.3)


def test_tree_stop_strings_end_where_the_target_alone_stops():
    target, tokenizer = tiny_target(), word_tokenizer()
    drafter = with_tree(drafter_for(target)).attach(target)
    for ids in prompts(4, 101, seed=21):
        words = tokenizer.convert_ids_to_tokens(target.generate(ids, do_sample=False, max_new_tokens=20)[0,
                                                                                                          ids.shape[1]:])
        kw = dict(max_new_tokens=20, stop_strings=[words[5][-1] + " " + words[6][:2]], tokenizer=tokenizer)
        plain, assisted = plain_and_assisted(target, drafter, ids, **kw)
        assert torch.equal(plain, assisted)
        assert plain.shape[1] < ids.shape[1] + 20


def test_tree_with_a_logits_processor_is_token_identical():
    """A repetition penalty reshapes every row by its own prefix: the tree's rows must see their own paths."""
    target = tiny_target(vocab=8)
    drafter = with_tree(drafter_for(target)).attach(target)
    for ids in prompts(5, 8, seed=9):
        plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=20, repetition_penalty=1.5)
        assert torch.equal(plain, assisted)


# --- the parts -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 1.7])
def test_tree_scores_equal_drafting_each_path_as_a_chain(monkeypatch, alpha):
    """Each node's score (cumulative log-probability, of softmax(alpha * logits) with tree_logit_scale alpha) from
    the batched frontier forwards, with their tree mask and positions, equals drafting its path one token at a time
    from the same state."""
    target = tiny_target(vocab=101)
    drafter = with_tree(drafter_for(target), tree_total_tokens=30, tree_logit_scale=alpha).attach(target)
    checked, draft_tree = [], generation_slimspec.SlimSpecProposer._draft_tree

    def recheck(self, input_ids, g, logits, depth):
        tree = draft_tree(self, input_ids, g, logits, depth)
        for node in range(len(tree)):
            path = [node]
            while tree.parents[path[0]] >= 0:
                path.insert(0, tree.parents[path[0]])
            self.cache.crop(self.stable)
            state, row, score = g, logits, 0.0
            for i, step in enumerate(path):
                log_p = torch.log_softmax(alpha * row.float(), -1)[0]
                draft = int((drafter.draft_to_target_ids(torch.arange(log_p.shape[0])) == tree.tokens[step])
                            .nonzero()[0])
                score += float(log_p[draft])
                if i < len(path) - 1:
                    out = drafter(input_ids=torch.tensor([[tree.tokens[step]]]), hidden_states=state,
                                  past_key_values=self.cache, logits_to_keep=1)
                    state, row = out.last_hidden_state, out.logits[:, -1]
            assert score == pytest.approx(tree.scores[node], abs=1e-4), (node, path)
            checked.append(len(path))
        return tree

    monkeypatch.setattr(generation_slimspec.SlimSpecProposer, "_draft_tree", recheck)
    for ids in prompts(3, 101, seed=4):
        target.generate(ids, do_sample=False, max_new_tokens=6, assistant_model=drafter)
    assert max(checked) == TREE["tree_depth"]


@pytest.mark.parametrize("vocab", [8192, 8192 + 300, 700])  # whole chunks; a tail past the last; no whole chunk
def test_top_choices_are_topk_with_argmax_first_and_the_normalizer_is_logsumexp(vocab):
    """The chunked top-k (the k chunks with the largest maxima, then their top k) is ``topk``: on random rows, on
    rows whose top k share one chunk or sit in the tail, and with ties, where the first is ``argmax``'s choice."""
    torch.manual_seed(0)
    rows = torch.randn(6, vocab)
    rows[1, 10:14] = 50.0 + torch.arange(4.0)  # all in one chunk
    rows[2, -3:] = torch.tensor([60.0, 61.0, 59.0])  # the row's end (the tail where there is one)
    rows[3, [5, 3000 % vocab, vocab - 1]] = 70.0  # a three-way tie: argmax takes index 5
    rows[4] = 0.0  # all equal
    values, indices = top_choices(rows, 4, chunk=512)
    want_values, _ = rows.topk(4, dim=-1)
    torch.testing.assert_close(values, want_values, rtol=0, atol=0)
    torch.testing.assert_close(rows.gather(-1, indices), values, rtol=0, atol=0)
    assert all(len(set(row)) == 4 for row in indices.tolist())
    assert indices[:, 0].tolist() == rows.argmax(-1).tolist()  # argmax picks the first maximum
    assert indices[1].tolist() == [13, 12, 11, 10] and indices[3, 0] == 5 and indices[4, 0] == 0
    for alpha in (1.0, 1.7):
        want = torch.logsumexp(alpha * rows, dim=-1, keepdim=True)
        torch.testing.assert_close(log_normalizer_(rows.clone(), alpha), want, rtol=1e-6, atol=1e-5)


def test_tree_attention_masks_ancestors_and_windows():
    """Root, two children of the root (a, b), a child of a (c): each attends to the context, its ancestors and
    itself; in a sliding layer only keys less than the window behind its own position."""
    tree = DraftTree()
    a = tree.add(5, -1, -0.1, "drafter")
    tree.add(6, -1, -0.2, "drafter")
    tree.add(7, a, -0.3, "drafter")
    positions, masks = tree_attention(tree, 4, {"full_attention": None, "sliding_attention": 3}, torch.float32,
                                      torch.device("cpu"))
    assert positions.tolist() == [[4, 5, 5, 6]]
    full, sliding = (masks[k][0, 0] == 0 for k in ("full_attention", "sliding_attention"))
    assert full.int().tolist() == [[1, 1, 1, 1, 1, 0, 0, 0],
                                   [1, 1, 1, 1, 1, 1, 0, 0],
                                   [1, 1, 1, 1, 1, 0, 1, 0],
                                   [1, 1, 1, 1, 1, 1, 0, 1]]
    assert sliding.int().tolist() == [[0, 0, 1, 1, 1, 0, 0, 0],
                                      [0, 0, 0, 1, 1, 1, 0, 0],
                                      [0, 0, 0, 1, 1, 0, 1, 0],
                                      [0, 0, 0, 0, 1, 1, 0, 1]]


def test_keep_positions_leaves_the_cache_of_the_path_alone():
    """After a forward over a block, keeping rows [0, 2, 3] leaves the keys and values a forward over exactly those
    tokens (at their positions) would have left."""
    target = tiny_target()
    ids = torch.randint(1, 101, (1, 9), generator=torch.Generator().manual_seed(0))
    cache = DynamicCache()
    target(input_ids=ids[:, :5], past_key_values=cache, use_cache=True)
    target(input_ids=ids[:, 5:], past_key_values=cache, use_cache=True,
           position_ids=torch.tensor([[5, 6, 6, 7]]),  # rows 1 and 2 are siblings, row 3 continues row 2
           attention_mask=torch.tensor([[1] * 6 + [0] * 3, [1] * 7 + [0] * 2, [1] * 6 + [0, 1, 0], [1] * 6 + [0, 1, 1]])
           .bool()[None, None].float().log())
    keep_positions(cache, 5, [0, 2, 3])
    alone = DynamicCache()
    target(input_ids=torch.cat([ids[:, :6], ids[:, 7:9]], dim=-1), past_key_values=alone, use_cache=True)
    assert cache.get_seq_length() == 8
    for mine, theirs in zip(cache.layers, alone.layers):
        torch.testing.assert_close(mine.keys, theirs.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mine.values, theirs.values, rtol=1e-5, atol=1e-5)


def test_pruning_keeps_the_most_probable_nodes_as_a_tree():
    tree = DraftTree()
    a = tree.add(1, -1, -0.5, "drafter")
    b = tree.add(2, -1, -1.0, "drafter")
    tree.add(3, a, -0.5, "drafter")  # as probable as its parent: still after it
    tree.add(4, b, -3.0, "drafter")
    kept = tree.pruned(3)
    assert kept.tokens == [1, 2, 3] and kept.parents == [-1, -1, 0] and kept.depths == [1, 1, 2]


# --- hybrid tree -----------------------------------------------------------------------------------------------------
def test_hybrid_tree_adds_the_lookup_branch_and_counts_sources():
    """Repeating prompts give prompt lookup matches: its continuation is a branch beside the drafter's subtree (a
    token both proposed is shared), verified in the same pass; the stats say where accepted tokens came from."""
    target = tiny_target()
    drafter = with_lookup(with_tree(drafter_for(target)), 6).attach(target)
    runs = []
    for ids in repeating_prompts(8, 101, seed=2):
        plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=24)
        assert torch.equal(plain, assisted)
        runs.append(drafter.last_generate_stats)
    stats = generation_slimspec.SlimSpecGenerateStats.merge(runs)
    assert set(stats.source_per_pass) == {"tree"}
    assert max(stats.drafted_per_pass) > TREE["tree_total_tokens"]  # the lookup branch came on top
    accepted, drafted = stats.accepted_by_source(), stats.drafted_by_source()
    assert accepted.get("lookup", 0) > 0 and "drafter" in drafted
    assert sum(accepted.values()) == sum(stats.accepted_per_pass)
    assert sum(drafted.values()) == sum(stats.drafted_per_pass)


# --- settings --------------------------------------------------------------------------------------------------------
def test_tree_settings_are_saved_reloaded_and_validated(tmp_path):
    from transformers import AutoModel

    target = tiny_target()
    drafter = with_tree(drafter_for(target), tree_total_tokens=10, tree_depth=3, tree_top_k=2)
    drafter.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, trust_remote_code=True)
    assert tree_setting(loaded.generation_config) == (10, 3, 2, 2)
    assert tree_setting(drafter_for(target).generation_config) == (0, 6, 4, 4)  # off by default
    assert tree_logit_scale(loaded.generation_config) == 1.0  # EAGLE-2's scores unless measured
    drafter.generation_config.tree_logit_scale = 1.5
    drafter.save_pretrained(tmp_path)
    assert tree_logit_scale(AutoModel.from_pretrained(tmp_path, trust_remote_code=True).generation_config) == 1.5
    for bad, named in ((dict(tree_total_tokens=-1), "tree_total_tokens"), (dict(tree_depth=2.5), "tree_depth"),
                       (dict(tree_top_k="4"), "tree_top_k"), (dict(tree_frontier=-2), "tree_frontier"),
                       (dict(tree_logit_scale=0), "tree_logit_scale"), (dict(tree_logit_scale="2"), "tree_logit_scale"),
                       (dict(tree_logit_scale=float("nan")), "tree_logit_scale")):
        with pytest.raises(ValueError, match=named):
            with_tree(drafter_for(target), **bad).speculative_generate(target, torch.tensor([[1, 2]]), max_new_tokens=3)


def test_targets_a_tree_mask_cannot_describe_are_refused_by_name():
    from types import SimpleNamespace

    chunked = SimpleNamespace(config=SimpleNamespace(layer_types=["chunked_attention", "full_attention"]))
    with pytest.raises(ValueError, match="chunked_attention.*tree_total_tokens = 0"):
        generation_slimspec.attention_windows(chunked)
    target = tiny_target()
    target.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="flash_attention_2.*sdpa"):
        with_tree(drafter_for(target)).speculative_generate(target, torch.tensor([[1, 2]]), max_new_tokens=3)


def test_sampling_drafts_trees(monkeypatch):
    """With do_sample the loop drafts trees too (recursive rejection sampling, tests/test_sampling.py), scored by
    the drafter's own probabilities (a sampled node is accepted with the target's probability of it): the
    greedy-calibrated tree_logit_scale applies to greedy calls only."""
    target = tiny_target()
    drafter = with_tree(drafter_for(target), tree_logit_scale=3.0).attach(target)
    scales, draft_tree = [], generation_slimspec.SlimSpecProposer._draft_tree

    def spy(self, *args):
        scales.append(self.tree_scale)
        return draft_tree(self, *args)

    monkeypatch.setattr(generation_slimspec.SlimSpecProposer, "_draft_tree", spy)
    torch.manual_seed(0)
    target.generate(torch.tensor([[1, 2, 3]]), do_sample=True, max_new_tokens=12, assistant_model=drafter)
    assert "tree" in drafter.last_generate_stats.source_per_pass and set(scales) == {1.0}
    target.generate(torch.tensor([[1, 2, 3]]), do_sample=False, max_new_tokens=4, assistant_model=drafter)
    assert scales[-1] == 3.0


# --- the "cost" schedule chooses the shape ----------------------------------------------------------------------------
def test_tree_size_follows_the_measured_verification_cost():
    from generation_slimspec import DraftCosts, choose_tree_size

    scores = [-0.1, -0.3, -0.5, -1.0, -2.0, -3.0, -4.0, -5.0]
    flat = DraftCosts(target_pass=[0.1] * 9, draft=0.002, tree_level=0.003)
    assert choose_tree_size(flat, scores, 1.0, 4)[0] == 8  # verifying more costs nothing: every node
    steep = DraftCosts(target_pass=[0.1 + 0.02 * n for n in range(9)], draft=0.002, tree_level=0.003)
    size, rate = choose_tree_size(steep, scores, 1.0, 4)
    assert 0 < size < 8
    tokens = 1 + sum(2.718281828 ** s for s in sorted(scores, reverse=True)[:size])
    assert rate == pytest.approx(tokens / (steep.target_pass[size] + 0.002 + 3 * 0.003), rel=1e-6)
    assert choose_tree_size(steep, scores, 0.05, 4)[0] == 0  # a drafter that is never right: plain decoding
    prohibitive = DraftCosts(target_pass=[0.1] + [10.0] * 8, draft=0.002, tree_level=0.003)
    assert choose_tree_size(prohibitive, scores, 1.0, 4)[0] == 0


def test_a_tree_grows_a_level_only_where_the_level_can_pay():
    """next_level_pays: the bound on what level + 1 adds (the frontier's probability) against one more tree level."""
    from generation_slimspec import DraftCosts, choose_tree_size, next_level_pays, tree_seconds

    costs = DraftCosts(target_pass=[0.1 + 0.001 * n for n in range(40)], draft=0.01, tree_level=0.02)
    scores = [-0.05, -3.0, -3.5, -4.0]  # level 1: one confident child
    assert next_level_pays(costs, scores, [-0.05], 1.0, 1)  # its children may add ~0.95 tokens for 0.02 s
    assert not next_level_pays(costs, scores, [-3.0], 1.0, 1)  # at most 0.05 tokens: not worth a level
    assert not next_level_pays(costs, scores, [-0.05], 0.02, 1)  # a drafter whose nodes are rarely accepted
    free = DraftCosts(target_pass=costs.target_pass, draft=0.01, tree_level=0.0)
    assert next_level_pays(free, scores, [-3.0], 1.0, 1)  # a free level always may
    size, rate = choose_tree_size(costs, scores, 1.0, 1)  # the rule, at its edge: the bound equals the rate
    tokens = rate * tree_seconds(costs, size, 1)
    edge = math.log(rate * tree_seconds(costs, size, 2) - tokens)
    assert next_level_pays(costs, scores, [edge + 1e-6], 1.0, 1) and not next_level_pays(costs, scores, [edge - 1e-6],
                                                                                         1.0, 1)


@pytest.mark.parametrize("level_ms", [0.0, 50.0])
def test_the_cost_schedule_drafts_no_deeper_than_pays(monkeypatch, level_ms):
    """With a drafter that spreads its probability (random tiny weights), a tree level priced at half a target pass
    stops the "cost" schedule's trees short of tree_depth; a free level lets every tree reach it (unless an eos
    ends every branch). Outputs stay identical."""
    from generation_slimspec import DraftCosts

    costs = DraftCosts(target_pass=[0.1 + 0.001 * n for n in range(40)], draft=0.01, tree_level=level_ms / 1e3)
    monkeypatch.setattr(generation_slimspec, "measured_costs", lambda *a, **k: costs)
    target = tiny_target(vocab=8)
    drafter = with_tree(drafter_for(target), num_assistant_tokens_schedule="cost", num_assistant_tokens=4,
                        tree_total_tokens=24, tree_depth=5).attach(target)
    levels, draft_tree = [], generation_slimspec.SlimSpecProposer._draft_tree

    def spy(self, *args):
        tree = draft_tree(self, *args)
        levels.append((self.tree_levels, max(tree.depths, default=0), args[-1]))
        return tree

    monkeypatch.setattr(generation_slimspec.SlimSpecProposer, "_draft_tree", spy)
    monkeypatch.setattr(generation_slimspec.SlimSpecProposer, "wants_tree", lambda self, ids: True)  # trees only
    for ids in prompts(4, 8, seed=9):
        plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=20)
        assert torch.equal(plain, assisted)
    assert levels and all(drafted >= deepest for drafted, deepest, _ in levels)
    full = sum(drafted == depth for drafted, _, depth in levels)
    if level_ms:
        assert full < len(levels) // 2
    else:
        assert full > 0.9 * len(levels)


def test_interpolated_pass_costs():
    from generation_slimspec import interpolated

    assert interpolated([1, 2, 4, 8], [1.0, 2.0, 4.0, 6.0]) == pytest.approx([1, 2, 3, 4, 4.5, 5, 5.5, 6])


def test_pass_costs_are_measured_interleaved_and_priced_monotone(monkeypatch):
    """calibrate times every pass length once per round (a busy moment weighs on all of them alike), and a longer
    pass is never priced below a shorter one: a dip measured at 17 nodes must not make a 17-node tree look cheaper
    than a 9-token chain."""
    target = tiny_target()
    drafter = with_tree(drafter_for(target), tree_total_tokens=24, tree_depth=4).attach(target)
    order, forward = [], generation_slimspec.TargetForward.__call__

    def spy(self, ids, cache, **kw):
        order.append(ids.shape[1])
        return forward(self, ids, cache, **kw)

    monkeypatch.setattr(generation_slimspec.TargetForward, "__call__", spy)
    drafter.calibrate(target, max_k=3, prepare=False, repeats=2)
    lengths = [1, 2, 3, 4, 8, 12, 16, 24, 25]
    assert order[1:] == lengths * 3  # the context's prefill, then a warm-up round and 2 timed rounds
    monkeypatch.setattr(generation_slimspec, "_target_pass_seconds",
                        lambda target, lengths, context, repeats: [1.0, 1.1, 1.2, 1.3, 1.6, 1.7, 1.2, 1.9, 2.0])
    costs = drafter.calibrate(target, max_k=3, prepare=False).costs
    assert costs.target_pass[15] == costs.target_pass[11] == pytest.approx(1.7)  # the dip at 16 is priced as 12
    assert all(a <= b for a, b in zip(costs.target_pass, costs.target_pass[1:]))
    drafter.detach()


@pytest.mark.parametrize("cheap", [True, False])
def test_the_cost_schedule_drafts_a_tree_only_where_it_pays(monkeypatch, cheap):
    """Measured costs where verifying 40 tokens costs what one does and a tree level costs nothing beside a chain
    step, and a drafter that is always right (the oracle): a tree produces at least what its own most probable
    chain would have, for less, and more than plain decoding, so the schedule keeps drafting trees. Where every
    extra verified token costs a whole pass, it tries the tree once, and decodes plainly after that (the tree is
    tried again after 8 passes at the earliest, and later calls start from what earlier ones saw). Outputs stay
    identical either way."""
    from generation_slimspec import DraftCosts

    slope = 0.0 if cheap else 0.1
    costs = DraftCosts(target_pass=[0.1 + slope * n for n in range(40)], draft=0.01, tree_level=0.0)
    monkeypatch.setattr(generation_slimspec, "measured_costs", lambda *a, **k: costs)
    monkeypatch.setattr(generation_slimspec.TreeRecord, "scale", lambda self: 1.0)  # passes take what is priced
    target, drafter = oracle_pair() if cheap else (tiny_target(vocab=8), None)  # always right / rarely right
    drafter = with_tree(drafter or drafter_for(target), num_assistant_tokens_schedule="cost",
                        num_assistant_tokens=4).attach(target)
    runs = []
    for ids in prompts(6, 8, seed=5):
        plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=30)
        assert torch.equal(plain, assisted)
        runs.append(drafter.last_generate_stats)
    sources = [s for run in runs for s in run.source_per_pass]
    if cheap:
        assert sources.count("tree") > 0.9 * len(sources)
    else:
        assert 0 < sources.count("tree") <= 1 + len(sources) // 8 and sources.count("none") > 0.8 * len(sources)
    # sampling keeps a record of its own: what greedy trees produced does not decide for sampled ones
    greedy = (costs.tree_record.passes, costs.tree_record.tree_tokens)
    assert costs.sampled_tree_record.passes == 0 < greedy[0]
    torch.manual_seed(0)
    target.generate(prompts(1, 8, seed=6)[0], do_sample=True, max_new_tokens=12, assistant_model=drafter)
    assert costs.sampled_tree_record.passes > 0 and (costs.tree_record.passes, costs.tree_record.tree_tokens) == greedy


@pytest.mark.parametrize("slower", [1.0, 3.0])
def test_trees_that_take_longer_than_priced_give_way_to_the_chain(monkeypatch, slower):
    """Costs under which trees pay (the oracle drafter, verification free), but tree passes that take ``slower``
    times their priced seconds where chain passes take theirs: at 1 the schedule keeps the tree (one chain pass
    every ``probe`` tree passes keeps the chain timed); at 3 the timed chain passes show the tree losing, and
    chains take over. Outputs stay identical."""
    from generation_slimspec import DraftCosts, SlimSpecProposer, chain_seconds

    costs = DraftCosts(target_pass=[0.1] * 40, draft=0.01, tree_level=0.0)
    monkeypatch.setattr(generation_slimspec, "measured_costs", lambda *a, **k: costs)
    record_tree, record = SlimSpecProposer.record_tree, SlimSpecProposer.record

    def timed_tree(self, tree, path, length, seconds=None):
        return record_tree(self, tree, path, length, seconds=slower * self.tree_cost if self.tree_cost else seconds)

    def timed_chain(self, drafted, accepted, length, expected=None, seconds=None):
        return record(self, drafted, accepted, length, expected, seconds=chain_seconds(self.costs, drafted))

    monkeypatch.setattr(SlimSpecProposer, "record_tree", timed_tree)
    monkeypatch.setattr(SlimSpecProposer, "record", timed_chain)
    target, drafter = oracle_pair()
    drafter = with_tree(drafter, num_assistant_tokens_schedule="cost", num_assistant_tokens=4).attach(target)
    sources = []
    for ids in prompts(8, 50, seed=5):
        plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=40)
        assert torch.equal(plain, assisted)
        sources += drafter.last_generate_stats.source_per_pass
    assert costs.tree_record.scale() == pytest.approx(slower)
    trees = sources.count("tree") / len(sources)
    assert (trees > 0.85) if slower == 1.0 else (trees < 0.5), (trees, sources)


@pytest.mark.parametrize("lookup_pays", [True, False])
def test_a_hybrid_tree_takes_a_lookup_block_priced_above_the_tree(monkeypatch, lookup_pays):
    """Under the "cost" schedule a hybrid tree pass whose context has a lookup match priced above the tree's rate
    is a lookup block instead (verifying the drafter's tree beside it would only add its cost); priced below, the
    tree (with the lookup branch) stays. Outputs stay identical."""
    from generation_slimspec import DraftCosts, SlimSpecProposer

    costs = DraftCosts(target_pass=[0.1] * 40, draft=0.01, tree_level=0.0)
    monkeypatch.setattr(generation_slimspec, "measured_costs", lambda *a, **k: costs)
    monkeypatch.setattr(generation_slimspec.TreeRecord, "scale", lambda self: 1.0)  # passes take what is priced
    monkeypatch.setattr(SlimSpecProposer, "lookup_choice",
                        lambda self, found: (min(found, 4), 1e6 if lookup_pays else 0.0))
    target, drafter = oracle_pair()  # the drafter's tree always beats its chain and plain decoding
    drafter = with_lookup(with_tree(drafter, num_assistant_tokens_schedule="cost", num_assistant_tokens=4),
                          6).attach(target)
    sources = []
    for ids in repeating_prompts(6, 50, seed=2):
        plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=24)
        assert torch.equal(plain, assisted)
        sources += drafter.last_generate_stats.source_per_pass
    if lookup_pays:
        assert sources.count("lookup") > sources.count("tree") > 0, sources
    else:
        assert "lookup" not in sources and sources.count("tree") > 0.8 * len(sources), sources


def test_a_frontier_of_one_is_a_chain_with_alternatives(kept_rows, monkeypatch):
    """tree_frontier = 1 expands only each level's most probable node: the drafter's chain, each position also
    offering its top-k alternatives as leaves (one drafter row per level, as a chain); still token-identical."""
    target = tiny_target(vocab=8)
    drafter = with_tree(drafter_for(target), tree_total_tokens=40, tree_depth=4, tree_top_k=3, tree_frontier=1)
    drafter.attach(target)
    trees, draft_tree = [], generation_slimspec.SlimSpecProposer._draft_tree

    def spy(self, *args):
        trees.append(draft_tree(self, *args))
        return trees[-1]

    monkeypatch.setattr(generation_slimspec.SlimSpecProposer, "_draft_tree", spy)
    for ids in prompts(4, 8, seed=7):
        plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=20)
        assert torch.equal(plain, assisted)
    full = [t for t in trees if max(t.depths) == 4]
    assert full and all(len(t) == 12 for t in full)  # 3 alternatives at each of 4 depths
    for tree in full:
        expanded = {p for p in tree.parents if p >= 0}
        assert [tree.depths[i] for i in sorted(expanded)] == [1, 2, 3]  # one node per level has children
