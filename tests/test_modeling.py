import json

import pytest
import torch

import eagle3_reference as ref
from conftest import randomize, tiny_config
from modeling_slimspec import SlimSpecCache, SlimSpecDrafter

ATOL = 2e-4


def make(seed=0, **overrides):
    torch.manual_seed(seed)
    return randomize(SlimSpecDrafter(tiny_config(**overrides)), seed=seed).eval()


def prefix(T=9, seed=1, cfg=None):
    g = torch.Generator().manual_seed(seed)
    cfg = cfg or tiny_config()
    feats = torch.randn(1, T, 3 * cfg.target_hidden_size, generator=g)
    tokens = torch.randint(0, cfg.vocab_size, (1, T), generator=g)
    return feats, tokens


def test_shapes_and_logits_to_keep(tiny_drafter):
    feats, tokens = prefix()
    out = tiny_drafter(input_ids=tokens, target_hidden_states=feats)
    assert out.logits.shape == (1, 9, 97) and out.last_hidden_state.shape == (1, 9, 32)
    last = tiny_drafter(input_ids=tokens, target_hidden_states=feats, logits_to_keep=1)
    assert last.logits.shape == (1, 1, 97)
    torch.testing.assert_close(last.logits[:, 0], out.logits[:, -1])
    assert tiny_drafter(input_ids=tokens, target_hidden_states=feats, logits_to_keep=-1).logits is None


@pytest.mark.parametrize("head_rank", [None, 8])
@pytest.mark.parametrize("norm_before_residual", [False, True])
def test_first_step_matches_eagle3_equations(head_rank, norm_before_residual):
    model = make(head_rank=head_rank, norm_before_residual=norm_before_residual)
    feats, tokens = prefix()
    with torch.no_grad():
        out = model(input_ids=tokens, target_hidden_states=feats)
    sd = model.state_dict()
    g, logits = ref.first_step(sd, model.config, sd["embed_tokens.weight"], feats[0], tokens[0])
    torch.testing.assert_close(out.last_hidden_state[0].double(), g, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(out.logits[0].double(), logits, atol=ATOL, rtol=1e-4)


def test_norm_before_residual_changes_the_output():
    feats, tokens = prefix()
    a = make(norm_before_residual=False)(input_ids=tokens, target_hidden_states=feats).logits
    b = make(norm_before_residual=True)(input_ids=tokens, target_hidden_states=feats).logits
    assert (a - b).abs().max() > 1e-2  # the variant flag really switches the residual


@pytest.mark.parametrize("head_rank", [None, 8])
def test_multi_step_drafting_matches_equations(head_rank):
    """Prefix pass with target features, then 4 drafting steps feeding back the drafter's own output, cached."""
    model = make(head_rank=head_rank)
    feats, tokens = prefix(T=7)
    drafted = [5, 60, 12, 33]
    with torch.no_grad():
        out = model(input_ids=tokens, target_hidden_states=feats, use_cache=True, logits_to_keep=1)
        cache, g = out.past_key_values, out.last_hidden_state[:, -1:]
        got = [out.logits[0, -1]]
        for tok in drafted:
            out = model(input_ids=torch.tensor([[tok]]), hidden_states=g, past_key_values=cache)
            g = out.last_hidden_state
            got.append(out.logits[0, -1])
    sd = model.state_dict()
    want = ref.chain(sd, model.config, sd["embed_tokens.weight"], feats[0], tokens[0], drafted)
    torch.testing.assert_close(torch.stack(got).double(), want, atol=ATOL, rtol=1e-4)
    assert len(cache) == 7 + len(drafted)


def test_cache_one_token_at_a_time_equals_full_pass(tiny_drafter):
    feats, tokens = prefix(T=11)
    with torch.no_grad():
        full = tiny_drafter(input_ids=tokens, target_hidden_states=feats)
        cache = SlimSpecCache()
        steps = [tiny_drafter(input_ids=tokens[:, t:t + 1], target_hidden_states=feats[:, t:t + 1], past_key_values=cache)
                 for t in range(11)]
        chunks = SlimSpecCache()
        parts = [tiny_drafter(input_ids=tokens[:, a:b], target_hidden_states=feats[:, a:b], past_key_values=chunks)
                 for a, b in ((0, 4), (4, 5), (5, 11))]
    torch.testing.assert_close(torch.cat([s.logits for s in steps], 1), full.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([p.logits for p in parts], 1), full.logits, atol=1e-5, rtol=1e-5)


def test_crop_discards_speculative_entries(tiny_drafter):
    feats, tokens = prefix(T=8)
    with torch.no_grad():
        cache = SlimSpecCache()
        tiny_drafter(input_ids=tokens[:, :6], target_hidden_states=feats[:, :6], past_key_values=cache)
        junk = torch.randn(1, 3, 32)
        tiny_drafter(input_ids=tokens[:, :3], hidden_states=junk, past_key_values=cache)  # speculative steps
        cache.crop(6)
        resumed = tiny_drafter(input_ids=tokens[:, 6:], target_hidden_states=feats[:, 6:], past_key_values=cache)
        full = tiny_drafter(input_ids=tokens, target_hidden_states=feats)
    torch.testing.assert_close(resumed.logits, full.logits[:, 6:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cannot crop"):
        cache.crop(99)


def test_full_rank_low_rank_head_reproduces_dense():
    """At r = min(d, V) the factorized head is exact: with W = up @ down both drafters give the same logits."""
    low = make(head_rank=32)
    dense = SlimSpecDrafter(tiny_config(head_rank=None)).eval()
    sd = {k: v for k, v in low.state_dict().items() if not k.startswith("lm_head.")}
    sd["lm_head.weight"] = low.lm_head.up.weight.detach() @ low.lm_head.down.weight.detach()
    dense.load_state_dict(sd, strict=True)
    torch.testing.assert_close(low.lm_head.dense_weight(), sd["lm_head.weight"])
    feats, tokens = prefix()
    with torch.no_grad():
        torch.testing.assert_close(low(input_ids=tokens, target_hidden_states=feats).logits,
                                   dense(input_ids=tokens, target_hidden_states=feats).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("overrides", [dict(head_rank=None), dict(head_rank=8), dict(head_rank=8, draft_vocab_size=40),
                                       dict(share_target_embeddings=True)])
def test_save_load_round_trip_is_bit_exact(tmp_path, overrides):
    model = make(**overrides)
    if model.d2t is not None:
        model.set_vocab_maps(torch.randperm(97, generator=torch.Generator().manual_seed(3))[:40])
    embedding = torch.nn.Embedding(97, 32)
    if model.embed_tokens is None:
        model.use_target_embeddings(embedding)
    feats, tokens = prefix()
    with torch.no_grad():
        before = model(input_ids=tokens, target_hidden_states=feats).logits
    model.save_pretrained(tmp_path)
    loaded = SlimSpecDrafter.from_pretrained(tmp_path).eval()
    a, b = model.state_dict(), loaded.state_dict()
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    if loaded.embed_tokens is None:
        loaded.use_target_embeddings(embedding)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=tokens, target_hidden_states=feats).logits, before)


def test_vocab_maps_are_an_offset_table():
    model = make(draft_vocab_size=40)
    with pytest.raises(ValueError, match="never set"):
        model.check_vocab_maps()  # fresh maps select nothing: never a silent identity
    kept = torch.arange(0, 80, 2)
    model.set_vocab_maps(kept)
    assert torch.equal(model.d2t, kept - torch.arange(40))  # offsets, not absolute ids
    assert torch.equal(model.draft_to_target_ids(torch.tensor([0, 1, 39])), torch.tensor([0, 2, 78]))
    full = model.to_target_logits(torch.arange(40.0).view(1, 40))
    assert full.shape == (1, 97) and full[0, 78] == 39 and torch.isinf(full[0, 1]) and full[0, 1] < 0
    with torch.no_grad():
        model.d2t[5] = 500  # offset runs past the vocabulary
    with pytest.raises(ValueError, match="offset table"):
        model.check_vocab_maps()
    model.set_vocab_maps(kept)
    with torch.no_grad():
        model.t2d[1] = True  # t2d marks 41 tokens
    with pytest.raises(ValueError, match="t2d marks 41"):
        model.check_vocab_maps()
    with torch.no_grad():
        model.t2d[1], model.t2d[0] = True, False  # right count, wrong tokens
    with pytest.raises(ValueError, match="disagree"):
        model.check_vocab_maps()
    with pytest.raises(ValueError, match="expected 40"):
        model.set_vocab_maps(torch.arange(39))


def test_truncated_drafter_without_maps_refuses_to_load(tmp_path):
    from safetensors.torch import load_file, save_file

    model = make(draft_vocab_size=40)
    model.set_vocab_maps(torch.arange(40))
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["d2t"], weights["t2d"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="t2d marks 0 target tokens"):
        SlimSpecDrafter.from_pretrained(tmp_path)


def test_head_is_never_tied_to_embeddings(tiny_drafter, tmp_path):
    tiny_drafter.tie_weights()
    head_ptrs = {p.data_ptr() for p in tiny_drafter.lm_head.parameters()}
    assert tiny_drafter.embed_tokens.weight.data_ptr() not in head_ptrs
    # a dense head has the embedding's shape [V, d], so transformers could tie it: a save/load round trip keeps both
    model = make(head_rank=None, tie_word_embeddings=True)  # asking for tying changes nothing
    head, embedding = model.lm_head.weight.detach().clone(), model.embed_tokens.weight.detach().clone()
    assert head.shape == embedding.shape and not torch.equal(head, embedding)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is False
    loaded = SlimSpecDrafter.from_pretrained(tmp_path)
    loaded.tie_weights()
    assert loaded.lm_head.weight.data_ptr() != loaded.embed_tokens.weight.data_ptr()
    assert torch.equal(loaded.lm_head.weight, head) and torch.equal(loaded.embed_tokens.weight, embedding)


def test_shared_target_embedding_is_used_not_owned():
    own = make(share_target_embeddings=False)
    shared = SlimSpecDrafter(tiny_config(share_target_embeddings=True)).eval()
    sd = own.state_dict()
    target_embedding = torch.nn.Embedding(97, 32)
    with torch.no_grad():
        target_embedding.weight.copy_(sd.pop("embed_tokens.weight"))
    shared.load_state_dict(sd, strict=True)
    assert not any("embed" in k for k in shared.state_dict())
    feats, tokens = prefix()
    with pytest.raises(RuntimeError, match="attach"):
        shared(input_ids=tokens, target_hidden_states=feats)
    shared.use_target_embeddings(target_embedding)
    assert all(p is not target_embedding.weight for p in shared.parameters())
    with torch.no_grad():
        torch.testing.assert_close(shared(input_ids=tokens, target_hidden_states=feats).logits,
                                   own(input_ids=tokens, target_hidden_states=feats).logits)
    with pytest.raises(ValueError, match="wrong target"):
        shared.use_target_embeddings(torch.nn.Embedding(96, 32))


def test_bad_inputs_are_named(tiny_drafter):
    feats, tokens = prefix()
    with pytest.raises(ValueError, match="exactly one"):
        tiny_drafter(input_ids=tokens)
    with pytest.raises(ValueError, match="3 \\* target_hidden_size"):
        tiny_drafter(input_ids=tokens, target_hidden_states=feats[..., :50])
    with pytest.raises(ValueError, match="hidden_size=32"):
        tiny_drafter(input_ids=tokens, hidden_states=feats)


def test_bf16_drafter_tracks_fp32(tiny_drafter):
    feats, tokens = prefix()
    with torch.no_grad():
        a = tiny_drafter(input_ids=tokens, target_hidden_states=feats).logits
        b = tiny_drafter.to(torch.bfloat16)(input_ids=tokens, target_hidden_states=feats).logits
    assert b.dtype == torch.bfloat16
    assert (a - b.float()).abs().max() < 0.1 * a.abs().max()
