"""Assisted generation: target.generate(assistant_model=drafter) is lossless.

Greedy: token-identical to the target alone (fp32), for any drafter. Sampling: the target's distribution,
checked with a chi-square test that is shown to fail when the drafter misreports its distribution."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import generation_slimspec
from configuration_slimspec import SlimSpecConfig
from conftest import randomize
from modeling_slimspec import SlimSpecDrafter


def tiny_target(vocab=101, seed=0, layers=6):
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=256, pad_token_id=None,
                      bos_token_id=None, eos_token_id=None)
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.pad_token_id = 0
    return model


def drafter_for(target, seed=1, scale=0.3, **overrides):
    torch.manual_seed(seed)
    cfg = SlimSpecConfig.from_target_config(target.config, **{"head_rank": "d/8", "intermediate_size": 64, **overrides})
    drafter = randomize(SlimSpecDrafter(cfg), seed=seed, scale=scale).eval()
    return drafter


@pytest.fixture(scope="module")
def target():
    return tiny_target()


def prompts(n, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab, (1, int(torch.randint(1, 14, (1,), generator=g))), generator=g) for _ in range(n)]


def plain_and_assisted(target, drafter, ids, **kw):
    plain = target.generate(ids, do_sample=False, **kw)
    assisted = target.generate(ids, do_sample=False, assistant_model=drafter, **kw)
    return plain, assisted


@pytest.mark.parametrize("num_assistant_tokens", [1, 3, 6])
@pytest.mark.parametrize("head", [dict(head_rank="d/8"), dict(head_rank=None), dict(head_rank="d/8", draft_vocab_size=30)])
def test_greedy_is_token_identical(target, num_assistant_tokens, head):
    drafter = drafter_for(target, **head)
    if drafter.d2t is not None:
        drafter.set_vocab_maps(torch.randperm(101, generator=torch.Generator().manual_seed(5))[:30])
    drafter.generation_config.num_assistant_tokens = num_assistant_tokens
    drafter.attach(target)
    try:
        for i, ids in enumerate(prompts(8, 101, seed=num_assistant_tokens)):
            plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=[1, 5, 17, 30][i % 4])
            assert torch.equal(plain, assisted), (ids, plain, assisted)
            stats = drafter.last_generate_stats
            assert stats.new_tokens == plain.shape[1] - ids.shape[1]
            assert all(d <= num_assistant_tokens for d in stats.drafted_per_pass)
    finally:
        drafter.detach()


def test_every_draft_rejected_still_identical(target):
    """A draft vocabulary holding none of the tokens the target emits: every draft is rejected."""
    ids_list = prompts(6, 101, seed=11)
    emitted = set()
    for ids in ids_list:
        emitted |= set(target.generate(ids, do_sample=False, max_new_tokens=20)[0].tolist())
    never = [t for t in range(101) if t not in emitted][:12]
    drafter = drafter_for(target, draft_vocab_size=len(never))
    with pytest.raises(ValueError, match="never set"):
        drafter.attach(target)  # a truncated drafter without vocab maps cannot draft
    drafter.set_vocab_maps(torch.tensor(never))
    drafter.attach(target)
    try:
        for ids in ids_list:
            plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=20)
            assert torch.equal(plain, assisted)
            stats = drafter.last_generate_stats
            assert sum(stats.accepted_per_pass) == 0 and sum(stats.drafted_per_pass) > 0
            assert stats.tau == 1.0
    finally:
        drafter.detach()


def oracle_pair():
    """Target and drafter whose final norms are zero: both give all-zero logits, so after the same logits
    processors the drafter proposes exactly the target's next token. Every draft is accepted."""
    target = tiny_target(vocab=50, seed=3)
    drafter = drafter_for(target)
    with torch.no_grad():
        target.model.norm.weight.zero_()
        drafter.norm.weight.zero_()
    return target, drafter


@pytest.mark.parametrize("K", [2, 5])
def test_drafts_running_into_eos_and_max_length(K):
    target, drafter = oracle_pair()
    drafter.generation_config.num_assistant_tokens = K
    drafter.attach(target)
    ids = torch.tensor([[7, 8, 9]])
    try:
        # eos = token 0, suppressed for the first 7 new tokens: the target emits 1 x 7, then 0 and stops; the
        # drafter's all-accepted block runs into that eos mid-block.
        for max_new in (4, 7, 8, 12, 30):
            kw = dict(max_new_tokens=max_new, eos_token_id=0, min_new_tokens=7)
            plain, assisted = plain_and_assisted(target, drafter, ids, **kw)
            assert torch.equal(plain, assisted), (max_new, plain, assisted)
            stats = drafter.last_generate_stats
            # the oracle is always right; only the last pass may be cut by eos or the length budget
            assert stats.accepted_per_pass[:-1] == stats.drafted_per_pass[:-1]
        assert plain.shape[1] == 3 + 8 and plain[0, -1] == 0
        assert drafter.last_generate_stats.tau > 1.5
    finally:
        drafter.detach()


def forward_hooks(module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_attach_detach_and_no_registration(target, tmp_path):
    drafter = drafter_for(target)
    ids = prompts(1, 101)[0]
    target(ids, output_hidden_states=True)  # transformers installs its own output-capturing hooks, once, lazily
    before_attrs = dict(vars(target))
    before_params = {n for n, _ in drafter.named_parameters()}
    hooks_before = forward_hooks(target)
    assert drafter.attach(target) is drafter and drafter.attached_target is target
    assert {n for n, _ in drafter.named_parameters()} == before_params  # the target is not a submodule
    assert not any("model.layers" in k or "embed" in k for k in drafter.state_dict())
    drafter.to(torch.float64)
    assert target.dtype == torch.float32  # .to() on the drafter never moves the target
    drafter.to(torch.float32)
    drafter.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").stat().st_size < 2_000_000
    unassisted = target.generate(ids, do_sample=False, max_new_tokens=8)  # unaffected while attached
    target.generate(ids, do_sample=False, max_new_tokens=8, assistant_model=drafter)
    drafter.detach()
    assert target.generate(ids, do_sample=False, max_new_tokens=8).tolist() == unassisted.tolist()
    assert vars(target).keys() == before_attrs.keys()
    assert forward_hooks(target) == hooks_before  # attaching, assisted generation and detaching add no hooks
    with pytest.raises(RuntimeError, match="attach"):
        drafter(input_ids=ids, target_hidden_states=torch.zeros(1, ids.shape[1], 144))


def test_unattached_drafter_is_a_clear_error(target):
    drafter = drafter_for(target)
    ids = prompts(1, 101)[0]
    with pytest.raises(Exception, match="attach"):
        target.generate(ids, do_sample=False, max_new_tokens=5, assistant_model=drafter)


def test_wrong_target_and_batch_errors(target):
    drafter = drafter_for(target)
    other = tiny_target(vocab=103)
    with pytest.raises(ValueError, match="vocab_size is 103, drafter expects 101"):
        drafter.attach(other)
    shallow = tiny_target(layers=4)
    with pytest.raises(ValueError, match="num_hidden_layers is 4, drafter expects 6"):
        drafter.attach(shallow)
    drafter.attach(target)
    try:
        with pytest.raises(ValueError, match="batch-size 1"):
            target.generate(torch.ones(2, 4, dtype=torch.long), do_sample=False, max_new_tokens=3, assistant_model=drafter)
    finally:
        drafter.detach()


def test_rebinding_to_a_second_target(target):
    drafter = drafter_for(target)
    second = tiny_target(seed=9)
    drafter.attach(target)
    drafter.attach(second)  # re-binds: the first target is released
    assert "generate" not in vars(target) and drafter.attached_target is second
    ids = prompts(1, 101, seed=4)[0]
    plain, assisted = plain_and_assisted(second, drafter, ids, max_new_tokens=12)
    assert torch.equal(plain, assisted)
    drafter.detach()


def test_drafter_dtype_differs_from_target(target):
    drafter = drafter_for(target).to(torch.bfloat16)
    drafter.attach(target)
    try:
        for ids in prompts(4, 101, seed=8):
            plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=15)
            assert torch.equal(plain, assisted)
    finally:
        drafter.detach()


def test_generation_config_travels_with_the_drafter(target, tmp_path):
    """Draft length, schedule and the hybrid's prompt lookup settings are saved and reloaded with the drafter."""
    drafter = drafter_for(target)
    drafter.generation_config.num_assistant_tokens = 3
    drafter.generation_config.num_assistant_tokens_schedule = "heuristic"
    with_lookup(drafter, 6, ngram=3, min_ngram=2).save_pretrained(tmp_path)
    assert (tmp_path / "generation_config.json").exists()
    loaded = SlimSpecDrafter.from_pretrained(tmp_path)
    assert loaded.generation_config.num_assistant_tokens == 3
    assert loaded.generation_config.num_assistant_tokens_schedule == "heuristic"
    assert loaded.generation_config.prompt_lookup_num_tokens == 6
    assert loaded.generation_config.max_matching_ngram_size == 3
    assert loaded.generation_config.min_matching_ngram_size == 2
    loaded.attach(target)
    try:
        for ids in [prompts(1, 101, seed=2)[0], *repeating_prompts(2, 101, seed=2)]:
            plain, assisted = plain_and_assisted(target, loaded, ids, max_new_tokens=20)
            assert torch.equal(plain, assisted)
        assert loaded.last_generate_stats.accepted_by_source()["lookup"] > 0  # the reloaded drafter is hybrid
    finally:
        loaded.detach()


# ----------------------------------------------------------------------------------------------------------------------
# Hybrid drafting: prompt lookup beside the drafter, in one candidate generator
# ----------------------------------------------------------------------------------------------------------------------
def repeating_prompts(n, vocab, seed=0):
    """Prompts made of a random pattern (2..6 tokens) repeated 2..4 times: the context holds n-grams to look up."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        pattern = torch.randint(1, vocab, (1, int(torch.randint(2, 7, (1,), generator=g))), generator=g)
        out.append(pattern.repeat(1, int(torch.randint(2, 5, (1,), generator=g))))
    return out


def with_lookup(drafter, tokens, ngram=None, min_ngram=None):
    drafter.generation_config.prompt_lookup_num_tokens = tokens
    drafter.generation_config.max_matching_ngram_size = ngram
    drafter.generation_config.min_matching_ngram_size = min_ngram
    return drafter


def test_lookup_continuation_follows_transformers_rule():
    """Longest n-gram first, leftmost earlier occurrence, continuation may run into the suffix; and the same
    answer as transformers' PromptLookupCandidateGenerator on random sequences with many repeats."""
    from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

    def find(ids, ngram, tokens):
        return generation_slimspec.lookup_continuation(torch.tensor(ids), ngram, tokens).tolist()

    assert find([2, 5, 1, 2, 7, 1, 2], 2, 9) == [7, 1, 2]  # "1 2" matched before "2" alone
    assert find([2, 5, 1, 2, 7, 1, 2], 1, 9) == [5, 1, 2, 7, 1, 2]  # leftmost "2"
    assert find([1, 2, 3, 1, 2], 2, 2) == [3, 1] and find([4, 4], 2, 5) == [4]
    assert find([1, 2, 3], 2, 5) == [] and find([7], 3, 5) == []
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        ids = torch.randint(0, 4, (1, int(torch.randint(1, 16, (1,), generator=g))), generator=g)
        ngram, tokens = int(torch.randint(1, 4, (1,), generator=g)), int(torch.randint(1, 6, (1,), generator=g))
        theirs, _ = PromptLookupCandidateGenerator(eos_token_id=torch.tensor([99]), num_output_tokens=tokens,
                                                   max_matching_ngram_size=ngram, max_length=1000).get_candidates(ids)
        assert find(ids[0].tolist(), ngram, tokens) == theirs[0, ids.shape[1]:].tolist(), (ids, ngram, tokens)


def lookup_generator(drafter, **config):
    from transformers import GenerationConfig

    return generation_slimspec.SlimSpecProposer(drafter, None, GenerationConfig(**config), None, 1)


def test_lookup_blocks_end_at_eos_and_the_length_budget(target):
    drafter = with_lookup(drafter_for(target), 4)

    def block(ids, budget=10, **config):
        found = lookup_generator(drafter, **{"max_length": 100, **config})._lookup(torch.tensor([ids]), budget)
        return None if found is None else found[0][0, len(ids):].tolist()

    ids = [5, 6, 8, 9, 4, 5, 6]
    assert block(ids) == [8, 9, 4, 5] and block(ids, budget=2) == [8, 9]
    assert block(ids, eos_token_id=9) == [8, 9] and block(ids, eos_token_id=[3, 8]) == [8]
    assert block([1, 2, 3]) is None
    tokens, logits = lookup_generator(drafter, max_length=100, do_sample=True)._lookup(torch.tensor([ids]), 3)
    assert logits.shape == (1, 3, 101) and logits.dtype == torch.float32
    assert torch.equal(logits.softmax(-1), torch.nn.functional.one_hot(tokens[:, -3:], 101).float())
    with pytest.raises(ValueError, match="max_matching_ngram_size"):
        lookup_generator(with_lookup(drafter, 4, ngram=-1))
    with pytest.raises(ValueError, match=r"1 <= min_matching_ngram_size \(3\) <= max_matching_ngram_size \(2\)"):
        lookup_generator(with_lookup(drafter, 4, ngram=2, min_ngram=3))


def test_lookup_needs_a_match_of_at_least_min_matching_ngram_size(target):
    """The last 1 / 2 / 3 tokens recur earlier: a block exactly when the longest match reaches the minimum."""
    ids = torch.tensor([[5, 6, 7, 8, 40, 6, 7, 9, 41, 7]])  # "7": 1-gram match; "6 7" would be 2, "..., 6, 7" not
    for min_ngram, want in [(None, [8, 40, 6]), (1, [8, 40, 6]), (2, None)]:
        drafter = with_lookup(drafter_for(target), 3, ngram=3, min_ngram=min_ngram)
        found = lookup_generator(drafter, max_length=100)._lookup(ids, 10)
        assert (None if found is None else found[0][0, ids.shape[1]:].tolist()) == want, min_ngram
    ids = torch.tensor([[5, 6, 7, 8, 40, 6, 7]])  # "6 7": a 2-gram match
    for min_ngram, want in [(2, [8, 40, 6]), (3, None)]:
        drafter = with_lookup(drafter_for(target), 3, ngram=3, min_ngram=min_ngram)
        found = lookup_generator(drafter, max_length=100)._lookup(ids, 10)
        assert (None if found is None else found[0][0, ids.shape[1]:].tolist()) == want, min_ngram


@pytest.mark.parametrize("tokens,ngram,min_ngram", [(1, 1, None), (4, None, None), (10, 3, 2)])
@pytest.mark.parametrize("head", [dict(head_rank="d/8"), dict(head_rank="d/8", draft_vocab_size=30)])
def test_hybrid_greedy_is_token_identical(target, tokens, ngram, min_ngram, head):
    drafter = with_lookup(drafter_for(target, **head), tokens, ngram, min_ngram)
    if drafter.d2t is not None:
        drafter.set_vocab_maps(torch.randperm(101, generator=torch.Generator().manual_seed(5))[:30])
    drafter.generation_config.num_assistant_tokens = 3
    drafter.attach(target)
    runs = []
    try:
        for i, ids in enumerate(repeating_prompts(6, 101, seed=tokens) + prompts(2, 101, seed=tokens)):
            plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=[1, 5, 17, 30][i % 4])
            assert torch.equal(plain, assisted), (ids, plain, assisted)
            stats = drafter.last_generate_stats
            assert sum(stats.accepted_per_pass) + stats.verification_passes + 1 == stats.new_tokens
            assert len(stats.source_per_pass) == stats.verification_passes
            for source, drafted in zip(stats.source_per_pass, stats.drafted_per_pass):
                assert drafted <= {"lookup": tokens, "drafter": 3, "none": 0}[source]
            runs.append(stats)
    finally:
        drafter.detach()
    merged = generation_slimspec.SlimSpecGenerateStats.merge(runs)
    assert merged.accepted_by_source()["lookup"] > 0 and merged.drafted_by_source()["drafter"] > 0


def test_hybrid_drafter_ingests_lookup_passes_lazily_and_exactly(target, monkeypatch):
    """Lookup passes leave the drafter alone (their features are kept); the next drafter pass ingests every kept
    position in one forward, and its state equals a drafter fed the whole verified context at once."""
    drafter = with_lookup(drafter_for(target), 4, 2)
    drafter.generation_config.num_assistant_tokens = 3
    calls, ingest = [], generation_slimspec.SlimSpecProposer._ingest

    def recorded(self, input_ids):
        kept = len(self.pending)
        g, logits = ingest(self, input_ids)
        calls.append((input_ids.clone(), kept, logits.clone()))
        return g, logits

    monkeypatch.setattr(generation_slimspec.SlimSpecProposer, "_ingest", recorded)
    drafter.attach(target)
    try:
        for ids in repeating_prompts(6, 101, seed=3):
            target.generate(ids, do_sample=False, max_new_tokens=30, assistant_model=drafter)
    finally:
        drafter.detach()
    assert max(kept for _, kept, _ in calls) >= 2  # some drafter pass came after lookup passes
    drafter.use_target_embeddings(target.get_input_embeddings())
    layers = list(drafter.config.target_layer_ids)
    with torch.no_grad():
        for ids, _, logits in calls:
            states = target(ids, output_hidden_states=True).hidden_states
            feats = torch.cat([states[i][:, :-1] for i in layers], dim=-1)  # position t with token t + 1
            fresh = drafter(input_ids=ids[:, 1:], target_hidden_states=feats, logits_to_keep=1).logits[:, -1]
            torch.testing.assert_close(logits, fresh, rtol=1e-4, atol=1e-4)


def test_hybrid_blocks_run_into_eos_and_max_length():
    """The oracle target emits 1 x 7 then eos 0; the prompt holds "1 1 0": with matches of 2 tokens, the drafter
    drafts after "9 1" (no match) and lookup proposes the block [0] (it ends at the eos) after every "1 1", which the
    target rejects until min_new_tokens allows its eos."""
    target, drafter = oracle_pair()
    drafter.generation_config.num_assistant_tokens = 2
    with_lookup(drafter, 3, ngram=2, min_ngram=2).attach(target)
    ids, runs = torch.tensor([[2, 1, 1, 0, 7, 8, 9]]), []
    try:
        for max_new in (2, 4, 7, 8, 12):
            kw = dict(max_new_tokens=max_new, eos_token_id=0, min_new_tokens=7)
            plain, assisted = plain_and_assisted(target, drafter, ids, **kw)
            assert torch.equal(plain, assisted), (max_new, plain, assisted)
            runs.append(drafter.last_generate_stats)
    finally:
        drafter.detach()
    accepted = generation_slimspec.SlimSpecGenerateStats.merge(runs).accepted_by_source()
    assert accepted["lookup"] > 0 and accepted["drafter"] > 0


def test_hybrid_is_off_by_default_and_a_lookup_option_on_the_call_is_refused(target):
    drafter = drafter_for(target).attach(target)
    try:
        ids = repeating_prompts(1, 101)[0]
        plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=12)
        assert torch.equal(plain, assisted) and "lookup" not in drafter.last_generate_stats.source_per_pass
        with pytest.raises(ValueError, match="drafter's generation_config"):
            target.generate(ids, do_sample=False, max_new_tokens=4, assistant_model=drafter,
                            prompt_lookup_num_tokens=3)
    finally:
        drafter.detach()


def test_bfloat16_target_with_float32_drafter():
    """A bf16 target drafted by an fp32 drafter: generation runs, statistics add up, and on this tiny model the
    output matches plain greedy (bf16 near-ties that batched verification can flip do not occur here)."""
    target = tiny_target(seed=5).to(torch.bfloat16)
    drafter = drafter_for(target).attach(target)
    try:
        for ids in prompts(4, 101, seed=12):
            plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=12)
            stats = drafter.last_generate_stats
            assert assisted.shape == plain.shape
            assert sum(stats.accepted_per_pass) + stats.verification_passes + 1 == stats.new_tokens == 12
            assert torch.equal(plain, assisted)
    finally:
        drafter.detach()


def test_attached_generate_binds_arguments_however_they_are_passed(target):
    """attach's ``target.generate`` recognises the drafter as ``assistant_model`` by keyword or by position (transformers'
    own ``generate`` runs either way), and leaves every other call to the class's ``generate``."""
    drafter = drafter_for(target).attach(target)
    ids = prompts(1, 101, seed=4)[0]
    plain = target.generate(ids, do_sample=False, max_new_tokens=12)
    by_keyword = target.generate(ids, do_sample=False, max_new_tokens=12, assistant_model=drafter)
    passes = drafter.last_generate_stats.target_passes
    drafter.last_generate_stats = None
    by_position = target.generate(ids, None, None, None, None, None, drafter, do_sample=False, max_new_tokens=12)
    assert torch.equal(plain, by_keyword) and torch.equal(plain, by_position)
    assert drafter.last_generate_stats.target_passes == passes < 12  # both drafted
    drafter.last_generate_stats = None
    assert torch.equal(target.generate(ids, do_sample=False, max_new_tokens=12), plain)
    assert drafter.last_generate_stats is None  # a call without the drafter is the class's generate


def test_hidden_states_are_found_when_transformers_renames_the_field():
    from types import SimpleNamespace

    states = tuple([None, None] + [torch.zeros(1, 3, 4)] * 5)  # 6 layers -> 7 entries, some None
    assert generation_slimspec.target_hidden_states(SimpleNamespace(hidden_states=states), 7) is states
    renamed = SimpleNamespace(logits=torch.zeros(1, 3, 9), all_layer_states=states, cache=None)
    assert generation_slimspec.target_hidden_states(renamed, 7) is states
    assert generation_slimspec.target_hidden_states(SimpleNamespace(logits=torch.zeros(1)), 7) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_drafting_is_deterministic_and_switches_no_global_flag(target, dtype, monkeypatch, pack_tiny_heads):
    """Two runs give the same drafts, and drafting never writes a process-wide torch switch (another thread's
    matmuls must not change kernel mid-call): every write to torch.backends.mkldnn.enabled is recorded."""
    writes = []
    switch_type = type(torch.backends.mkldnn)
    flag = switch_type.__dict__["enabled"]
    monkeypatch.setattr(switch_type, "enabled", property(lambda self: flag.__get__(self, switch_type),
                                                         lambda self, value: writes.append(value)), raising=False)
    original = generation_slimspec.SlimSpecProposer.propose
    drafted = []

    def spy(self, input_ids):
        ids, logits = original(self, input_ids)
        drafted.append(ids[0, input_ids.shape[1]:].tolist())
        return ids, logits

    monkeypatch.setattr(generation_slimspec.SlimSpecProposer, "propose", spy)
    runs = []
    for _ in range(2):
        drafter = drafter_for(target, head_rank="d/8", seed=3).to(dtype)
        drafted.clear()
        drafter.attach(target)
        try:
            for ids in prompts(3, 101, seed=11):
                target.generate(ids, do_sample=False, max_new_tokens=12, assistant_model=drafter)
        finally:
            drafter.detach()
        runs.append(list(drafted))
    assert any(runs[0]) and runs[0] == runs[1]
    assert writes == []
