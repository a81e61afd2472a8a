"""Training pieces on a tiny target and tiny self-distillation data."""

import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from modeling_slimspec import SlimSpecCache
from slimspec.train import losses
from slimspec.train.data import DistillationData, collate, generate_data
from slimspec.train.fit import fit
from slimspec.train.fit_config import FitConfig
from slimspec.train.step import batch_loss, build_drafter, target_support
from slimspec.train.ttt import ttt_mask, ttt_unroll
from test_generate import tiny_target


def tiny_tokenizer(vocab=101):
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0", eos_token="t1", unk_token="t3")


PROMPTS = [" ".join(f"t{(7 * i + 3 * j) % 97 + 4}" for j in range(3 + i % 5)) for i in range(10)]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    target = tiny_target()
    folder = tmp_path_factory.mktemp("data")
    meta = generate_data(target=target, tokenizer=tiny_tokenizer(), prompts=PROMPTS, out=str(folder),
                         layer_ids=[2, 3, 3], max_new_tokens=12, batch_size=4, shard_prompts=4, progress=False)
    return target, folder, meta


# --- losses -------------------------------------------------------------------------------------------------------
def test_losses_match_hand_computed_values():
    p = torch.tensor([[0.75, 0.25]])
    q_logits = torch.log(torch.tensor([[0.5, 0.5]]))
    ids, logp = torch.tensor([[0, 1]]), p.log()
    logq = losses.draft_logq(q_logits, ids)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert losses.forward_kl(logq, logp).item() == pytest.approx(kl, rel=1e-6)
    assert losses.hard_ce(logq, logp).item() == pytest.approx(-math.log(0.5), rel=1e-6)
    alpha = min(0.75, 0.5) + min(0.25, 0.5)  # = 0.75 = 1 - TV
    assert losses.acceptance(logq, logp).item() == pytest.approx(alpha, rel=1e-6)
    assert losses.lk_log(logq, logp).item() == pytest.approx(-math.log(alpha), rel=1e-6)
    assert losses.lk_tv(logq, logp).item() == pytest.approx((1 - alpha) * kl + alpha * (1 - alpha), rel=1e-6)
    same = losses.forward_kl(logp, logp)
    assert same.item() == pytest.approx(0.0, abs=1e-7) and losses.acceptance(logp, logp).item() == pytest.approx(1.0)


def test_losses_on_a_support_normalize_q_over_the_full_vocabulary():
    """p on a 2-token support inside a 4-token vocabulary, in any order, with an empty (-inf) slot: q's mass on the
    other tokens counts, so the values equal the dense formulas with p zero off the support."""
    q = torch.tensor([[0.4, 0.1, 0.3, 0.2]])
    ids, logp = torch.tensor([[2, 0, 1]]), torch.tensor([[math.log(0.6), math.log(0.4), float("-inf")]])
    kl = 0.6 * math.log(0.6 / 0.3) + 0.4 * math.log(0.4 / 0.4)
    logq = losses.draft_logq(q.log(), ids)
    assert losses.forward_kl(logq, logp).item() == pytest.approx(kl, rel=1e-6)
    assert losses.hard_ce(logq, logp).item() == pytest.approx(-math.log(0.3), rel=1e-6)
    assert losses.acceptance(logq, logp).item() == pytest.approx(0.3 + 0.4, rel=1e-6)


@pytest.mark.parametrize("rank", ["d/8", None])
def test_chunked_head_loss_matches_full_logits(tiny_data, rank):
    """support_logq (chunked logsumexp, recomputed softmax in backward) equals log_softmax of the full logits at the
    support ids, with the same gradients for g and the head weights, and finds the same argmax."""
    from slimspec.train.head_loss import support_logq

    target, folder, _ = tiny_data
    drafter, _ = build_drafter(target, FitConfig(head_rank=rank, head_init="random"), DistillationData(folder))
    torch.manual_seed(0)
    g = torch.randn(7, drafter.config.hidden_size, requires_grad=True)
    ids = torch.randint(0, drafter.config.vocab_size, (7, 5))
    weights = torch.randn(7, 5)
    grads = []
    for chunked in (True, False):
        drafter.zero_grad()
        g.grad = None
        if chunked:
            logq, best = support_logq(drafter, g, ids, chunk=16)  # 101 = 6 chunks of 16 + a ragged one
        else:
            logits = drafter.head(g)
            logq, best = losses.draft_logq(logits, ids), logits.argmax(-1)
        (logq * weights).sum().backward()
        grads.append((logq.detach(), best, g.grad.clone(), [p.grad.clone() for p in drafter.lm_head.parameters()]))
    (a, best_a, ga, pa), (b, best_b, gb, pb) = grads
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert torch.equal(best_a, best_b)
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-5)
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    drafter.detach()


def test_candidate_softmax_restricts_the_normalizer(tiny_data):
    """With every id a candidate the candidate softmax is the full one; with a subset it is log_softmax over those
    rows (gradients included), and the argmax is the best candidate."""
    from slimspec.train.head_loss import candidate_ids, support_logq

    target, folder, _ = tiny_data
    drafter, _ = build_drafter(target, FitConfig(head_rank="d/8", head_init="random"), DistillationData(folder))
    torch.manual_seed(0)
    g = torch.randn(6, drafter.config.hidden_size)
    ids = torch.randint(0, 101, (6, 4))
    full, _ = support_logq(drafter, g, ids)
    every, _ = support_logq(drafter, g, ids, candidates=torch.arange(101))
    torch.testing.assert_close(every, full, atol=1e-5, rtol=1e-5)
    cand = candidate_ids(ids, torch.tensor([7, 3, 90]))
    assert cand.tolist() == sorted(set(ids.flatten().tolist()) | {3, 7, 90})
    g.requires_grad_(True)
    logq, best = support_logq(drafter, g, ids, chunk=4, candidates=cand)
    logits = drafter.head(g)[:, cand]
    torch.testing.assert_close(logq, torch.log_softmax(logits.float(), -1).gather(-1, torch.searchsorted(cand, ids)),
                               atol=1e-5, rtol=1e-5)
    assert torch.equal(best, cand[logits.argmax(-1)])
    assert (logq.detach() > full).all()  # a smaller normalizer: each log q rises
    logq.sum().backward()
    assert g.grad is not None and drafter.lm_head.up.weight.grad.abs().sum(-1)[cand].gt(0).all()
    drafter.detach()


def test_chunked_head_loss_bf16_matmuls_stay_close(tiny_data):
    """With bf16 matmuls (bf16 training) the chunked log q and its gradients stay within bf16 rounding of the fp32
    computation, under autocast as in training, and the argmax agrees."""
    from slimspec.train.head_loss import support_logq

    target, folder, _ = tiny_data
    drafter, _ = build_drafter(target, FitConfig(head_rank="d/8", head_init="random"), DistillationData(folder))
    torch.manual_seed(0)
    g = torch.randn(7, drafter.config.hidden_size, requires_grad=True)
    ids = torch.randint(0, drafter.config.vocab_size, (7, 5))
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        drafter.zero_grad()
        g.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            logq, best = support_logq(drafter, g, ids, chunk=16, dtype=dtype)
        logq.sum().backward()
        out[dtype] = (logq.detach().float(), best, g.grad.clone(), drafter.lm_head.up.weight.grad.clone())
    (a, best_a, ga, wa), (b, best_b, gb, wb) = out[torch.float32], out[torch.bfloat16]
    assert b.dtype == torch.float32 and not torch.equal(a, b)  # the bf16 path really ran in bf16
    torch.testing.assert_close(b, a, atol=0.05, rtol=0.02)
    torch.testing.assert_close(gb, ga, atol=0.05, rtol=0.05)
    torch.testing.assert_close(wb, wa, atol=0.05, rtol=0.05)
    assert (best_a == best_b).float().mean() >= 6 / 7
    drafter.detach()


# --- training-time test -------------------------------------------------------------------------------------------
def test_ttt_mask():
    m = ttt_mask(4, 2).int()
    assert m.shape == (4, 12)
    # step-0 block: positions <= t - 2; step-1 block: position t - 1; step-2 block: position t (itself)
    assert m[3].tolist() == [1, 1, 0, 0] + [0, 0, 1, 0] + [0, 0, 0, 1]
    assert m[0].tolist() == [0, 0, 0, 0] + [0, 0, 0, 0] + [1, 0, 0, 0]
    assert ttt_mask(5, 0).equal(torch.ones(5, 5, dtype=torch.bool).tril())


def test_ttt_unroll_replays_chain_drafting(tiny_data):
    """Step j at position t of the unroll equals the j-th drafting step of a chain whose prefix ends at t - j,
    drafting the true tokens, run with the inference cache."""
    target, folder, _ = tiny_data
    drafter, _ = build_drafter(target, FitConfig(head_rank="d/8", head_init="random"), DistillationData(folder))
    item = DistillationData(folder)[0]
    tokens, feats = item["tokens"][None], item["feats"][None].float()
    T = feats.shape[1]
    with torch.no_grad():
        outs = ttt_unroll(drafter, tokens, feats, steps=3)
        for end in (2, T - 3):  # prefix = positions 0..end
            cache = SlimSpecCache()
            out = drafter(input_ids=tokens[:, 1 : end + 2], target_hidden_states=feats[:, : end + 1],
                          past_key_values=cache, logits_to_keep=-1)
            g = out.last_hidden_state[:, -1:]
            torch.testing.assert_close(g[0, 0], outs[0][0, end], atol=1e-5, rtol=1e-5)
            for j in (1, 2):
                out = drafter(input_ids=tokens[:, end + 1 + j : end + 2 + j], hidden_states=g, past_key_values=cache,
                              logits_to_keep=-1)
                g = out.last_hidden_state
                torch.testing.assert_close(g[0, 0], outs[j][0, end + j], atol=1e-5, rtol=1e-5)
    drafter.detach()


# --- data ---------------------------------------------------------------------------------------------------------
def test_data_records_and_resume(tiny_data, tmp_path):
    target, folder, meta = tiny_data
    assert len(meta["shards"]) == 3 and meta["tokens"] > 0 and meta["tokens_per_s"] > 0
    ds = DistillationData(folder, window=8)
    item = ds[0]
    assert item["feats"].shape == (len(item["tokens"]) - 1, 3 * 48) and item["feats"].dtype == torch.bfloat16
    assert item["loss_mask"].any() and item["target_ids"].shape == (len(item["tokens"]) - 1, 64)
    # the stored top-k is the target's distribution of token t + 2 at position t: the records are faithful
    tokens = item["tokens"][None]
    with torch.no_grad():
        want = torch.log_softmax(target(tokens).logits[0].float(), dim=-1)
    t = 3
    torch.testing.assert_close(item["target_logp"][t], want[t + 1].topk(64).values, atol=2e-3, rtol=2e-3)
    assert torch.equal(item["target_ids"][t, :5], want[t + 1].topk(5).indices)
    assert 64 / 101 < meta["topk_mass"] <= 1.0  # a random target: near-flat, the top 64 of 101 hold more than 64/101
    again = generate_data(target=target, tokenizer=tiny_tokenizer(), prompts=PROMPTS, out=str(folder),
                          layer_ids=[2, 3, 3], max_new_tokens=12, batch_size=4, shard_prompts=4, progress=False)
    assert again["shards"] == meta["shards"]  # finished shards are skipped
    with pytest.raises(ValueError, match="other settings"):
        generate_data(target=target, tokenizer=tiny_tokenizer(), prompts=PROMPTS, out=str(folder), layer_ids=[2, 3, 3],
                      max_new_tokens=5, batch_size=4, shard_prompts=4, progress=False)
    with pytest.raises(ValueError, match="items_digest"):  # as many prompts, other ones: never a mix of shards
        generate_data(target=target, tokenizer=tiny_tokenizer(), prompts=PROMPTS[::-1], out=str(folder),
                      layer_ids=[2, 3, 3], max_new_tokens=12, batch_size=4, shard_prompts=4, progress=False)


def test_data_skip_and_limit_choose_a_further_block():
    """``slimspec-train data --skip N --limit M``: the M prompts (or texts) after the first N; a skip past the end
    is refused naming how many there are."""
    from argparse import Namespace

    from slimspec.train.cli import _chosen, build_parser

    args = build_parser().parse_args(["data", "--text", "found", "--skip", "600", "--limit", "600", "--out", "x"])
    assert (args.skip, args.limit) == (600, 600)
    items = list(range(1000))
    assert _chosen(items, args) == list(range(600, 1000)) and _chosen(items, Namespace(skip=0, limit=3)) == [0, 1, 2]
    with pytest.raises(ValueError, match="there are 1000 prompts or texts"):
        _chosen(items, Namespace(skip=1000, limit=None))


def test_sampled_only_data_holds_one_sampled_response_per_prompt(tiny_data, tmp_path):
    """modes=[True]: a folder of sampled responses only (one per prompt), not the greedy ones; a folder of the
    older modes keeps the settings its meta.json was written with."""
    target = tiny_data[0]
    kw = dict(target=target, tokenizer=tiny_tokenizer(), prompts=PROMPTS, layer_ids=[2, 3, 3], max_new_tokens=12,
              batch_size=4, shard_prompts=4, progress=False)
    greedy = generate_data(out=str(tmp_path / "greedy"), modes=[False], **kw)
    sampled = generate_data(out=str(tmp_path / "sampled"), modes=[True], **kw)
    assert "modes" not in greedy and greedy["sampled"] is False and sampled["modes"] == [True]
    assert [sum(s["sequences"] for s in m["shards"]) for m in (greedy, sampled)] == [len(PROMPTS)] * 2
    tokens = [[DistillationData(tmp_path / name, window=64)[i]["tokens"].tolist() for i in range(len(PROMPTS))]
              for name in ("greedy", "sampled")]
    assert sum(g != s for g, s in zip(*tokens)) >= len(PROMPTS) // 2  # a near-flat target: draws leave the greedy path
    with pytest.raises(ValueError, match="do_sample flags"):
        generate_data(out=str(tmp_path / "bad"), modes=[], **kw)


def test_text_windows_in_a_batch_are_the_records_of_single_windows(tiny_data):
    """Several full windows per target forward (the GPU setting) give each window's single-forward records: no
    padding enters a batch, and the short tail runs alone."""
    from slimspec.train.data import _text_records

    target = tiny_data[0]
    text = " ".join(f"t{(3 * j * j + j) % 97 + 4}" for j in range(70))  # full windows of 16 and a tail
    alone = list(_text_records(target, tiny_tokenizer(), text, [2, 3, 3], 16, 8, batch_size=1))
    batched = list(_text_records(target, tiny_tokenizer(), text, [2, 3, 3], 16, 8, batch_size=3))
    assert len(alone) == len(batched) >= 4 and len(alone[-1][0]) < len(alone[0][0])
    for a, b in zip(alone, batched):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[3], b[3])
        torch.testing.assert_close(a[2], b[2], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a[4], b[4], atol=1e-4, rtol=1e-4)


def test_text_data_is_teacher_forced_and_mixes_with_responses(tiny_data, tmp_path):
    from slimspec.train.data import generate_text_data

    target, folder, meta = tiny_data
    texts = [" ".join(f"t{(5 * i + j * j) % 97 + 4}" for j in range(30 + 7 * i)) for i in range(5)]
    text_meta = generate_text_data(target=target, tokenizer=tiny_tokenizer(), texts=texts, out=str(tmp_path / "text"),
                                   layer_ids=[2, 3, 3], window=16, shard_texts=2, progress=False)
    assert len(text_meta["shards"]) == 3 and text_meta["tokens"] > sum(30 + 7 * i for i in range(5))  # windows
    text = DistillationData(tmp_path / "text", window=8)
    item = text[0]  # the start of a window of existing text: every position is trained (no prompt to skip) ...
    assert item["loss_mask"][:-1].all()
    with torch.no_grad():  # ... on the target's own next-token distribution there, though the target did not write it
        want = torch.log_softmax(target(item["tokens"][None]).logits[0].float(), dim=-1)
    for t in (0, 4):
        torch.testing.assert_close(item["target_logp"][t], want[t + 1].topk(64).values, atol=2e-3, rtol=2e-3)
    mixed = DistillationData(f"{folder},{tmp_path / 'text'}", window=8)
    assert len(mixed) == len(DistillationData(folder, window=8)) + len(text)
    assert mixed.meta["tokens"] == meta["tokens"] + text_meta["tokens"]
    assert mixed.feature_rows(10).shape == (20, 3 * 48)  # each source contributes to the feature scale
    generate_data(target=tiny_target(layers=8), tokenizer=tiny_tokenizer(), prompts=PROMPTS[:2], out=str(tmp_path / "o"),
                  layer_ids=[2, 4, 5], max_new_tokens=4, batch_size=2, shard_prompts=2, progress=False)
    with pytest.raises(ValueError, match="cannot be mixed"):
        DistillationData([folder, tmp_path / "o"])


def test_truncated_vocab_from_frequencies(tiny_data):
    target, folder, _ = tiny_data
    ds = DistillationData(folder)
    drafter, columns = build_drafter(target, FitConfig(head_rank="d/8", draft_vocab=20), ds)
    counts = ds.token_counts(101)
    drafter.check_vocab_maps()
    kept = set(columns.tolist())
    top = torch.argsort(-counts.float(), stable=True)[:20]
    assert kept == set(top.tolist()) and counts[list(kept)].min() >= counts.sort(descending=True).values[19]
    # the target's top-k moves to draft ids; entries outside the draft vocabulary drop out, the rest renormalize
    batch = collate([ds[0]])
    ids, logp, covered = target_support(batch, columns, 101)
    b, t = covered.nonzero()[0].tolist()
    kept_k = torch.isin(batch["target_ids"][b, t], columns)
    assert torch.isfinite(logp[b, t]).eq(kept_k).all()
    assert torch.equal(columns[ids[b, t][kept_k]], batch["target_ids"][b, t][kept_k])
    assert logp[b, t][kept_k].exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    drafter.detach()


# --- fitting ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("candidates", [0, 20])
def test_one_step_lowers_the_loss_and_the_target_stays_frozen(tiny_data, candidates):
    target, folder, _ = tiny_data
    before = {k: v.clone() for k, v in target.state_dict().items()}
    cfg = FitConfig(head_rank="d/8", ttt_steps=3, lr=3e-3, candidates=candidates)
    ds = DistillationData(folder, window=16)
    drafter, columns = build_drafter(target, cfg, ds)
    frequent = torch.argsort(-ds.token_counts(101), stable=True)
    batch = collate([ds[i] for i in range(4)])
    opt = torch.optim.AdamW(drafter.parameters(), lr=cfg.lr)
    loss0, agreement = batch_loss(drafter, batch, cfg, frequent=frequent)
    assert len(agreement) == 3
    loss0.backward()
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        loss1, _ = batch_loss(drafter, batch, cfg, frequent=frequent)
    assert float(loss1) < float(loss0.detach())
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    drafter.detach()


@pytest.mark.parametrize("field,value,match", [
    ("loss", "mse", r"FitConfig.loss must be one of 'kl', 'ce', 'lk', 'lk_tv', 'lk_log'; got 'mse'"),
    ("loss_on", "prompt", r"FitConfig.loss_on must be one of 'response', 'all'; got 'prompt'"),
    ("trainable", "body", r"FitConfig.trainable must be one of 'all', 'head'; got 'body'"),
    ("head_init", "zeros", r"FitConfig.head_init must be one of 'target', 'random'; got 'zeros'"),
    ("batch_size", 0, r"FitConfig.batch_size must be an int >= 1, got 0"),
    ("save_every", 0, r"FitConfig.save_every must be an int >= 1, got 0"),
    ("candidates", -1, r"FitConfig.candidates must be an int >= 0, got -1"),
    ("draft_vocab", 0, r"FitConfig.draft_vocab must be an int >= 1, got 0"),
    ("head_rank", "half", r"head rank 'half' is not understood"),
])
def test_fit_config_checks_its_fields_when_made(field, value, match):
    from dataclasses import replace

    with pytest.raises(ValueError, match=match):
        FitConfig(**{field: value})
    with pytest.raises(ValueError, match=match):
        replace(FitConfig(), **{field: value})


def test_resume_reproduces_an_uninterrupted_run(tiny_data, tmp_path):
    target, folder, _ = tiny_data
    base = dict(head_rank="d/8", ttt_steps=2, batch_size=2, window=16, seed=3)
    straight = tmp_path / "straight"
    fit(target=target, data=str(folder), out=str(straight), progress=False,
        config=FitConfig(max_steps=4, save_every=4, snapshot_steps=(2,), **base))
    resumed = tmp_path / "resumed"
    first = fit(target=target, data=str(folder), out=str(resumed), config=FitConfig(max_steps=4, save_every=4, **base),
                progress=False, stop_after=2)  # interrupted after 2 steps; its checkpoint stays
    assert first == dict(steps=2, history=first["history"], finished=False, resumed_at=0)
    assert not (resumed / "model.safetensors").exists()
    result = fit(target=target, data=str(folder), out=str(resumed), config=FitConfig(max_steps=4, save_every=4, **base),
                 progress=False)
    assert result["steps"] == 4 and result["finished"] and len(result["history"]) == 4  # the whole history ...
    assert result["resumed_at"] == 2  # ... and where this call took it up
    assert result["history"][:2] == first["history"]  # ... the interrupted segment's included
    import json

    saved = json.loads((resumed / "training.json").read_text())["history"]
    assert [h["step"] for h in saved] == [1, 2, 3, 4]
    assert {"README.md", "config.json", "generation_config.json", "model.safetensors", "modeling_slimspec.py"} <= {
        p.name for p in resumed.iterdir()}  # a Hub-ready folder with its model card
    from safetensors.torch import load_file

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-6)
    from modeling_slimspec import SlimSpecDrafter  # a learning-curve snapshot is a loadable drafter of step 2

    snap = load_file(straight / "snapshots" / "step_2" / "model.safetensors")
    assert sorted(snap) == sorted(a) and not all(torch.equal(snap[k], a[k]) for k in a)
    SlimSpecDrafter.from_pretrained(straight / "snapshots" / "step_2")


def test_feature_scale_is_folded_into_fc_on_save(tiny_data, tmp_path):
    """Training sees feats * scale; the saved drafter computes the same outputs from the raw features."""
    from modeling_slimspec import SlimSpecDrafter
    from slimspec.train.step import feature_scale, save_drafter

    target, folder, _ = tiny_data
    ds = DistillationData(folder)
    drafter, _ = build_drafter(target, FitConfig(head_rank="d/8", head_init="random"), ds)
    scale = feature_scale(ds)
    rms = (collate([ds[i] for i in range(len(ds))])["feats"].float() * scale).pow(2)
    assert scale.shape == (3 * 48,) and 0.5 < rms[rms > 0].mean().item() < 2.0  # about unit RMS after scaling
    item = ds[0]
    tokens, feats = item["tokens"][None], item["feats"][None].float()
    with torch.no_grad():
        trained = ttt_unroll(drafter, tokens, feats * scale, steps=2)
    save_drafter(drafter, tmp_path / "d", scale)
    drafter.detach()
    loaded = SlimSpecDrafter.from_pretrained(tmp_path / "d").attach(target)
    with torch.no_grad():
        raw = ttt_unroll(loaded, tokens, feats, steps=2)
    for a, b in zip(trained, raw):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    loaded.detach()


def test_learning_curve_budget_rule():
    from slimspec.train.recipe import curve_steps
    from slimspec.train.reference import choose_budget

    assert curve_steps(320) == [40, 80, 160, 320]
    pts = [dict(steps=40, tau=1.5), dict(steps=80, tau=1.7), dict(steps=160, tau=1.74), dict(steps=320, tau=1.9)]
    assert choose_budget(pts) is None  # 80 -> 160 adds 2.4%, but 160 -> 320 adds 9%: not a plateau
    flat = pts[:3] + [dict(steps=320, tau=1.76)]
    assert choose_budget(flat) == 80  # 80 -> 160 and 160 -> 320 both add under 3%
    assert choose_budget(pts[:2]) is None  # every doubling still helped


def test_healing_lowers_the_kl_to_the_dense_head(tiny_data, tmp_path):
    """dense drafter -> factorized at d/16 -> healed (head only, distilled from the dense head): KL drops."""
    from slimspec.convert import convert_drafter
    from slimspec.train.step import load_teacher_head

    target, folder, _ = tiny_data
    dense_dir, slim_dir, healed_dir = tmp_path / "dense", tmp_path / "slim", tmp_path / "healed"
    fit(target=target, data=str(folder), out=str(dense_dir), progress=False,
        config=FitConfig(head_rank=None, ttt_steps=1, max_steps=3, batch_size=2, window=16, save_every=100))
    convert_drafter(source=str(dense_dir), output=str(slim_dir), rank=3, validate=False, progress=False)
    teacher = load_teacher_head(str(dense_dir))
    cfg = FitConfig(init_from=str(slim_dir), trainable="head", teacher=str(dense_dir), ttt_steps=1, max_steps=30,
                    batch_size=4, window=16, lr=1e-2, save_every=100)

    def kl_to_dense(path):
        from modeling_slimspec import SlimSpecDrafter

        drafter = SlimSpecDrafter.from_pretrained(path).attach(target)
        batch = collate([DistillationData(folder, window=16)[i] for i in range(6)])
        with torch.no_grad():  # KL over the full vocabulary (training only sees the teacher's top-k)
            g = ttt_unroll(drafter, batch["tokens"], batch["feats"].float(), 1)[0][batch["loss_mask"]]
            p = torch.log_softmax(drafter.norm(g) @ teacher.T, dim=-1)
            loss = losses.forward_kl(torch.log_softmax(drafter.head(g), dim=-1), p).mean()
        drafter.detach()
        return float(loss)

    before = kl_to_dense(slim_dir)
    fit(target=target, data=str(folder), out=str(healed_dir), config=cfg, progress=False)
    after = kl_to_dense(healed_dir)
    assert after < 0.85 * before, (before, after)
    from safetensors.torch import load_file

    a, b = load_file(slim_dir / "model.safetensors"), load_file(healed_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("lm_head."))  # only the head was trained


def test_healing_with_lora_merges_adapters_before_saving(tiny_data, tmp_path):
    from safetensors.torch import load_file

    target, folder, _ = tiny_data
    base, healed = tmp_path / "base", tmp_path / "healed"
    fit(target=target, data=str(folder), out=str(base), progress=False,
        config=FitConfig(max_steps=2, batch_size=2, window=16, ttt_steps=1, save_every=100))
    fit(target=target, data=str(folder), out=str(healed), progress=False,
        config=FitConfig(init_from=str(base), trainable="head", lora_rank=4, lr=1e-2, max_steps=3, batch_size=2,
                         window=16, ttt_steps=1, save_every=100))
    a, b = load_file(base / "model.safetensors"), load_file(healed / "model.safetensors")
    assert sorted(a) == sorted(b) and not any("lora" in k for k in b)  # adapters merged, names unchanged
    assert not torch.equal(a["midlayer.self_attn.q_proj.weight"], b["midlayer.self_attn.q_proj.weight"])
    assert torch.equal(a["fc.weight"], b["fc.weight"])  # not adapted, frozen


def test_a_further_stage_starts_from_the_saved_drafter_exactly(tiny_data, tmp_path):
    """init_from with every weight trainable: the saved fc holds the training feature scale folded in, so the stage
    unfolds it (training sees unit-RMS features, as a new drafter does) and folds it back on save: with a zero
    learning rate the stage writes back the drafter it started from."""
    from safetensors.torch import load_file

    from slimspec.train.step import feature_scale

    target, folder, _ = tiny_data
    common = dict(head_rank="d/8", ttt_steps=2, batch_size=2, window=16, save_every=100)
    fit(target=target, data=str(folder), out=str(tmp_path / "one"), progress=False,
        config=FitConfig(max_steps=3, **common))
    stage = FitConfig(max_steps=2, lr=0.0, init_from=str(tmp_path / "one"), **common)
    fit(target=target, data=str(folder), out=str(tmp_path / "two"), progress=False, config=stage, stop_after=1)
    one = load_file(tmp_path / "one" / "model.safetensors")
    training = load_file(next((tmp_path / "two" / ".checkpoints").glob("step_1/model*.safetensors")))
    scale = feature_scale(DistillationData(folder))  # what the training weights see: unit-RMS features
    torch.testing.assert_close(training["fc.weight"], one["fc.weight"] / scale[None, :], rtol=1e-5, atol=0)
    fit(target=target, data=str(folder), out=str(tmp_path / "two"), progress=False, config=stage)
    two = load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-7)


def test_a_stage_with_a_wider_rank_grows_the_head_without_changing_a_logit(tiny_data, tmp_path):
    """grow_to_rank d/4 continuing a d/8 drafter: the head is widened as LoRA starts (new rows of down at the old rows'
    scale, zero columns of up), so with a zero learning rate the saved drafter's logits are the original's; one step
    with a learning rate moves the new columns; a narrower head is refused, naming the fix."""
    from modeling_slimspec import SlimSpecDrafter
    from slimspec.train.step import grow_head, target_head_weight

    target, folder, _ = tiny_data
    common = dict(ttt_steps=2, batch_size=2, window=16, save_every=100)
    fit(target=target, data=str(folder), out=str(tmp_path / "d8"), progress=False,
        config=FitConfig(head_rank="d/8", max_steps=3, **common))
    for name, lr, grow in (("d4", 0.0, "d/4"), ("d4-moved", 1e-2, "d/4"), ("kept", 0.0, None)):
        fit(target=target, data=str(folder), out=str(tmp_path / name), progress=False,
            config=FitConfig(head_rank="d/4", grow_to_rank=grow, max_steps=1, lr=lr, init_from=str(tmp_path / "d8"),
                             **common))
    d8, d4, moved, kept = (SlimSpecDrafter.from_pretrained(str(tmp_path / n)).eval()
                           for n in ("d8", "d4", "d4-moved", "kept"))
    r, d = d8.config.head_rank, d8.config.hidden_size
    assert kept.config.head_rank == r  # never implicit: without grow_to_rank a stage keeps the saved head
    assert d4.config.head_rank == 2 * r == d // 4 and d4.lm_head.up.weight.shape[1] == 2 * r
    assert not d4.lm_head.up.weight[:, r:].any() and moved.lm_head.up.weight[:, r:].norm(dim=0).min() > 0
    rows, scale = d4.lm_head.down.weight[r:], float(d8.lm_head.down.weight.detach().norm(dim=1).median())
    torch.testing.assert_close(rows @ rows.T, scale**2 * torch.eye(r), rtol=0, atol=1e-4 * scale**2)
    h = torch.randn(5, d)
    torch.testing.assert_close(d4.head(h), d8.head(h), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="slimspec-convert --rank"):
        grow_head(d4, r, target_head_weight(target))
    other = SlimSpecDrafter.from_pretrained(str(tmp_path / "d8")).eval()  # a target head of another width: the new
    grow_head(other, "d/4", torch.randn(target_head_weight(target).shape[0], d + 3))  # rows are random directions
    rows = other.lm_head.down.weight[r:].detach()
    torch.testing.assert_close(rows @ rows.T, scale**2 * torch.eye(r), rtol=0, atol=1e-4 * scale**2)
    assert (rows - d4.lm_head.down.weight[r:]).abs().max() > 0.1 * scale  # not the target's directions
    torch.testing.assert_close(other.head(h), d8.head(h), rtol=1e-5, atol=1e-5)
    for bad in ("d/0", "dense"):  # FitConfig checks the rank's form when made
        with pytest.raises(ValueError, match="FitConfig.grow_to_rank"):
            FitConfig(grow_to_rank=bad)
    with pytest.raises(ValueError, match="set head_rank='d/4' instead"):  # nothing to widen from scratch
        FitConfig(head_rank="d/8", grow_to_rank="d/4")
    assert FitConfig(head_rank="d/4", grow_to_rank="d/4").grow_to_rank == "d/4"  # the d/4 member built from scratch


def test_ship_replaces_a_shipped_drafter_only_when_tau_rises_5_percent(tmp_path):
    """The shipped drafter is replaced only by one 5% better on the same evaluation; a folder ship did not write
    is refused before anything is evaluated."""
    import json

    from slimspec.train.ship import replace_refusal, ship

    out = tmp_path / "shipped"
    assert replace_refusal(out, dict(tau=1.0, max_k=6, per_category_prompts=None)) is None  # nothing there yet
    out.mkdir()
    (out / "evaluation.json").write_text(json.dumps(dict(tau=2.0, max_k=6)))
    assert "needs 2.100" in replace_refusal(out, dict(tau=2.09, max_k=6, per_category_prompts=None))
    assert replace_refusal(out, dict(tau=2.10, max_k=6, per_category_prompts=None)) is None
    assert "evaluated differently" in replace_refusal(out, dict(tau=3.0, max_k=5, per_category_prompts=None))
    # with both held-out sets measured, their mean decides: recorded, or measured now for a folder without it
    held = lambda mean: dict(tau=9.0, max_k=6, per_category_prompts=None, held_out=dict(mean=mean))  # noqa: E731
    assert replace_refusal(out, dict(held(3.0), previous_held_out=dict(mean=2.0))) is None
    assert "needs 2.100" in replace_refusal(out, dict(held(2.09), previous_held_out=dict(mean=2.0)))
    (out / "evaluation.json").write_text(json.dumps(dict(tau=2.0, max_k=6, held_out=dict(mean=2.5))))
    assert "mean of sets a and b) 2.600 does not raise" in replace_refusal(out, held(2.6))
    assert replace_refusal(out, held(2.625)) is None
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(FileExistsError, match="not written by ship"):
        ship(tmp_path / "nowhere", other, progress=False)


def test_a_staged_build_lists_every_stage(tmp_path):
    """Each stage's budget and tau come from the earlier shipped folders' evaluation.json, oldest first: through
    ``init_from`` for folders shipped before stages were recorded, else their own list."""
    import json

    from slimspec.train.ship import earlier_stages

    def shipped(name, steps, tau, **extra):
        folder = tmp_path / name
        folder.mkdir()
        summary = dict(steps=steps, trained_positions=10 * steps, train_minutes=steps / 60, tau=tau, data="d")
        (folder / "evaluation.json").write_text(json.dumps(dict(summary, **extra)))
        return folder, summary

    one, first = shipped("one", 100, 1.5, recipe={})
    two, second = shipped("two", 200, 1.8, recipe=dict(init_from=str(one)))
    assert earlier_stages(None) == [] and earlier_stages(str(tmp_path / "gone")) == []
    assert earlier_stages(str(one)) == [first] and earlier_stages(str(two)) == [first, second]
    three, _ = shipped("three", 300, 2.0, stages=[first, second, dict(first, steps=7)])
    assert earlier_stages(str(three))[-1]["steps"] == 7  # a recorded list is taken as it is
    built = tmp_path / "built"  # a stage built on two but never shipped: its training.json, no evaluation.json
    built.mkdir()
    history = [dict(trained=5, seconds=3.0)] * 4
    (built / "training.json").write_text(json.dumps(dict(history=history, data="", recipe=dict(init_from=str(two)))))
    assert earlier_stages(str(built)) == [first, second, dict(data="", steps=4, trained_positions=20,
                                                              train_minutes=0.2, tau=None)]


def test_ship_prompt_lookup_option_is_checked_when_parsed(capsys):
    """A malformed --prompt-lookup is refused by the parser, before minutes of evaluation."""
    from slimspec.train.cli import build_parser

    assert build_parser().parse_args(["ship", "--prompt-lookup", "10,3"]).prompt_lookup == (10, 3, 1)
    assert build_parser().parse_args(["ship", "--prompt-lookup", "10,3,2"]).prompt_lookup == (10, 3, 2)
    for bad in ("10", "10,3,4", "10,3,2,1", "ten,3", "0,3", "10,3,0"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["ship", "--prompt-lookup", bad])
        assert "--prompt-lookup" in capsys.readouterr().err


def test_a_resumed_builds_card_says_which_steps_its_wall_time_covers():
    from slimspec.train.ship import _resumed

    assert _resumed(dict(steps=7200, wall_from_step=1080)) == (
        " for steps 1081-7200, after resuming from a checkpoint")
    assert _resumed(dict(steps=7200, wall_from_step=0)) == "" and _resumed(dict(steps=10)) == ""


def test_reference_members_can_train_for_their_own_steps(tmp_path, monkeypatch):
    """--member-steps: a member trains with the recipe at its own step count (the same cache folder as a build
    with that max_steps), bad specs are refused naming the fix, and the report shows each member's steps."""
    from slimspec.train.recipe import MEMBERS, Recipe, member_folder, member_recipe, parse_member_steps
    from slimspec.train.reference import format_report

    monkeypatch.setenv("SLIMSPEC_CACHE", str(tmp_path))
    names = list(MEMBERS)
    steps = parse_member_steps("truncated-32k=580, dense=330", names)
    assert steps == {"truncated-32k": 580, "dense": 330} and parse_member_steps(None, names) == {}
    recipe = Recipe(max_steps=1200)
    assert member_recipe(recipe, "slimspec-d8", steps) == recipe
    assert member_folder("t", "truncated-32k", member_recipe(recipe, "truncated-32k", steps)) == member_folder(
        "t", "truncated-32k", Recipe(max_steps=580))
    assert member_folder("t", "truncated-32k", Recipe(max_steps=580)) != member_folder("t", "truncated-32k", recipe)
    for bad in ("dense", "dense=0", "dense=x", "d4=10"):
        with pytest.raises(ValueError, match="NAME=STEPS"):
            parse_member_steps(bad, names)
    member = dict(per_position_acceptance=[0.5, 0.25], head_params=21e6, tau=1.75, train_seconds=600,
                  step_seconds=0.84)
    report = dict(target="t", recipe=vars(recipe) | dict(candidates=16384), num_assistant_tokens=2, prompts=4,
                  dtype="bf16", member_steps={"truncated-32k": 580},
                  members={"slimspec-d8": dict(member, steps=1200), "truncated-32k": dict(member, steps=580)})
    text = format_report(report)
    assert "1200 steps (truncated-32k 580)" in text and "| truncated-32k | 21.0M | 580 | 1.75 |" in text
    assert "| 10.0 | 0.84 |" in text


def test_median_step_seconds_ignores_setup_and_pauses():
    from slimspec.train.step import median_step_seconds

    history = [dict(seconds=s) for s in (30.0, 0.8, 0.9, 455.0, 0.85)]  # setup step, then a build paused once
    assert median_step_seconds(history) == 0.9 and median_step_seconds([]) is None
    assert median_step_seconds([dict(seconds=2.0)]) == 2.0


def test_held_out_evaluation_reports_both_sets_per_category():
    """``slimspec-train heldout``'s measurement: tau per category of each set, the set's pass-weighted total, and the
    mean of the sets (the number the 5% shipping rule reads); an oracle drafter accepts every draft."""
    from slimspec.heldout import CATEGORIES
    from slimspec.train.evaluate import evaluate_held_out, held_out_table
    from test_generate import oracle_pair

    target, drafter = oracle_pair()
    result = evaluate_held_out(target, tiny_tokenizer(50), drafter, per_category=1, num_assistant_tokens=3,
                               max_new_tokens=9, progress=False)
    for name in ("a", "b"):
        assert set(result[name]) == {*CATEGORIES, "all"} and result[name]["all"]["prompts"] == 6
        assert all(result[name][c]["tau"] == 4.0 for c in CATEGORIES)  # 9 tokens: prefill 1, then 2 passes of 4
    assert result["mean"] == 4.0 and "| b | 4.00 |" in held_out_table(result)


def test_held_out_evaluation_adds_found_rest_when_asked(monkeypatch):
    """``slimspec-train heldout --found-rest N``: tau on real text no recipe trains on, beside the sets (not in the
    mean)."""
    import slimspec.found
    from slimspec.train.evaluate import evaluate_held_out, held_out_table
    from test_generate import oracle_pair

    asked = []
    monkeypatch.setattr(slimspec.found, "found_rest_prompts",
                        lambda n: asked.append(n) or ["A real opening of a news story", "Question: why?\nAnswer:"])
    target, drafter = oracle_pair()
    kwargs = dict(per_category=1, num_assistant_tokens=3, max_new_tokens=9, progress=False)
    plain = evaluate_held_out(target, tiny_tokenizer(50), drafter, **kwargs)
    result = evaluate_held_out(target, tiny_tokenizer(50), drafter, found_rest=2, **kwargs)
    assert "found-rest" not in plain and asked == [2]
    assert result["found-rest"]["prompts"] == 2 and result["found-rest"]["tau"] == 4.0
    assert result["mean"] == plain["mean"]
    assert held_out_table(result).endswith("found-rest (openings of real text no recipe trains on, 2 prompts): "
                                           "**4.00**")
    assert "found-rest" not in held_out_table(plain)


def test_target_confidence_reads_the_targets_own_probabilities():
    """``slimspec-train heldout --confidence``: the target's probability of each greedy token it chose. A uniform
    head gives 1/V at every position, a sharp one ~1."""
    from slimspec.train.evaluate import confidence_table, target_confidence

    target, tok = tiny_target(), tiny_tokenizer()
    with torch.no_grad():
        target.lm_head.weight.zero_()
    flat = target_confidence(target, tok, PROMPTS[:3], max_new_tokens=5, progress=False)
    assert flat["positions"] == 15 and flat["mean_p"] == pytest.approx(1 / 101) and flat["p_half"] == 0
    with torch.no_grad():
        target.lm_head.weight.copy_(torch.randn_like(target.lm_head.weight) * 1000)
    sharp = target_confidence(target, tok, PROMPTS[:3], max_new_tokens=5, progress=False)
    assert sharp["mean_p"] > 0.95 and sharp["p_half"] == 1.0
    assert "| a | 15 | 0.010 | 0% | 0% |" in confidence_table({"a": flat})


def successor_pair(V=101):
    """A tiny target that always continues with the successor token (x -> x + 1: every layer adds nothing, row j of
    its head is the embedding of j - 1) and a dense drafter that reads only the target's features at t (the embedding
    of x_t); ``propose(shift)`` sets the drafter's head to propose x_t + shift. Under the target's own continuation
    (or any successor text) the first draft at t is for token t + 2 = x_t + 2: shift 2 is always right, shift 1
    (off by one position) never."""
    from test_generate import drafter_for

    target = tiny_target(vocab=V)
    e = torch.nn.functional.normalize(torch.randn(V, 48, generator=torch.Generator().manual_seed(0)), dim=-1)
    with torch.no_grad():
        for layer in target.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        target.model.embed_tokens.weight.copy_(e)
        target.lm_head.weight.copy_(50 * e.roll(1, dims=0))
    drafter = drafter_for(target, head_rank=None)
    d = drafter.config.hidden_size
    with torch.no_grad():
        drafter.midlayer.self_attn.o_proj.weight.zero_()
        drafter.midlayer.mlp.down_proj.weight.zero_()
        drafter.midlayer.hidden_norm.weight.fill_(1.0)
        drafter.norm.weight.fill_(1.0)
        drafter.fc.weight.zero_()
        drafter.fc.weight[:, :d].copy_(torch.eye(d, 48))  # g_t = the embedding of x_t

    def propose(shift):
        with torch.no_grad():
            drafter.lm_head.weight.copy_(50 * e.roll(shift, dims=0)[:, :d])
        return drafter

    return target, propose


def test_target_confidence_scores_the_drafters_first_draft_per_range_of_p():
    """With a drafter, ``--confidence`` also says how often its first draft is the target's greedy token per range of
    the target's p: always for the drafter proposing the right token, never for one off by a position."""
    from slimspec.train.evaluate import confidence_table, target_confidence

    (target, propose), tok = successor_pair(), tiny_tokenizer()
    scores = {shift: target_confidence(target, tok, PROMPTS[:3], max_new_tokens=6, drafter=propose(shift),
                                       progress=False) for shift in (2, 1)}
    right, off = scores[2]["bins"], scores[1]["bins"]
    assert right["0.9-1"] == dict(share=1.0, drafter=1.0) and right["0-0.5"] == dict(share=0.0, drafter=None)
    assert off["0.9-1"]["drafter"] == 0.0
    assert "| 100% (100%) |" in confidence_table({"a": scores[2]}) and "| - |" in confidence_table({"a": scores[2]})


def test_text_agreement_scores_the_first_draft_along_a_text():
    """``--text-agreement``: teacher-forced along a text, the drafter's first draft at t against the target's top
    choice of token t + 2. Along a successor text the right drafter hits every position and the one off by a
    position none; along a text that jumps, the target's choice follows the text's token t + 1, which the drafter
    proposing x_t + 2 cannot know, so it misses every one."""
    from slimspec.train.evaluate import text_agreement, text_agreement_table

    (target, propose), tok = successor_pair(), tiny_tokenizer()
    # words from t40 on: the tiny tokenizer splits its special tokens (t0, t1, t3) out of longer words
    steady, jumps = " ".join(f"t{i}" for i in range(40, 70)), " ".join(f"t{i}" for i in range(40, 100, 3))
    right = text_agreement(target, tok, propose(2), [steady, steady[:20]], progress=False)
    assert right["positions"] == 28 + len(steady[:20].split()) - 2 and right["drafter"] == 1.0
    assert right["bins"]["0.9-1"] == dict(share=1.0, drafter=1.0)
    assert text_agreement(target, tok, propose(1), [steady], progress=False)["drafter"] == 0.0
    assert text_agreement(target, tok, propose(2), [jumps], progress=False)["drafter"] == 0.0
    assert "| train | 31 | 1.000 | 100.0% | - | - | 100% (100%) |" in text_agreement_table({"train": right})
    with pytest.raises(ValueError, match="3 tokens or more"):
        text_agreement(target, tok, propose(2), ["t40"], progress=False)


def test_least_loss_head_keeps_every_logit_of_states_inside_its_rank():
    """States spanning an r-dimensional subspace: the rank-r least-loss head gives the full head's logits exactly,
    where the head's own top-r singular directions (blind to the states) do not; at r = d it is the head itself."""
    from slimspec.train.head_ceiling import least_loss_head

    g = torch.Generator().manual_seed(0)
    E = torch.randn(300, 16, generator=g) * torch.linspace(3, 0.1, 16)  # a head with a decaying spectrum
    h = torch.randn(200, 3, generator=g) @ torch.randn(3, 16, generator=g)  # states in a 3-dim subspace
    down, up = least_loss_head(E, h, 3)
    assert down.shape == (3, 16) and up.shape == (300, 3)
    torch.testing.assert_close((h @ down.T) @ up.T, h @ E.T, atol=1e-3, rtol=1e-3)
    V = torch.linalg.svd(E, full_matrices=False).Vh[:3]
    assert ((h @ V.T @ V) @ E.T - h @ E.T).abs().max() > 1.0
    down, up = least_loss_head(E, torch.randn(200, 16, generator=g), 16)
    torch.testing.assert_close(up @ down, E, atol=1e-3, rtol=1e-3)


def test_head_ceiling_scores_a_fitted_head_on_texts_fitted_and_unseen():
    """At full rank the head starts as the target's own (every top-1 agrees); at rank 1 it cannot, and fitting
    lowers its loss. A target whose logits are not its output layer's (a soft cap it does not apply) is refused."""
    from slimspec.train.head_ceiling import final_states, head_ceiling, head_ceiling_table

    target, tok = tiny_target(), tiny_tokenizer()
    texts = [" ".join(f"t{(5 * i + 11 * j) % 55 + 40}" for j in range(12)) for i in range(8)]
    result = head_ceiling(target, tok, texts[:6], texts[6:], [48, 1], steps=30, batch=32, lr=1e-2, fit_texts=2,
                          progress=False)
    assert result["positions"] == dict(train=66, fit=22, **{"held-out": 22})
    full, one = result["ranks"][48], result["ranks"][1]
    assert full["start"]["fit"]["agreement"] == 1.0 and full["start"]["held-out"]["agreement"] == 1.0
    assert one["start"]["held-out"]["agreement"] < 0.5
    assert one["loss"]["last"] < one["loss"]["first"]
    table = head_ceiling_table(result)
    assert "| 48 | start | - | 100.0% | 100.0% |" in table and "| 1 | fitted |" in table
    target.config.final_logit_softcapping = 1.0
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        final_states(target, tok, texts[:1], progress=False)


def test_report_commands_show_folders_relative_or_under_home(tmp_path, monkeypatch):
    """A report's command shows a folder relative to the working directory, a cached one under ~, others whole."""
    from slimspec.train.cli import shown_path

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert shown_path(tmp_path / "work" / "drafters" / "d8") == "drafters/d8"
    assert shown_path(tmp_path / "home" / ".cache" / "m") == "~/.cache/m"
    assert shown_path(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")


def test_the_card_states_the_composed_data_by_genre():
    from slimspec.train.ship import composed_text

    assert composed_text({}) == ""  # the default recipe: built-in prompts only
    text = composed_text(dict(prompts="builtin+composed", prompt_limit=None))
    assert text.startswith("; composed prompts by genre: story 360, fairy tale 240") and "code 48" in text
    sampled = composed_text(dict(prompts="builtin+composed,composed:sampled", prompt_limit=None))
    assert sampled == text + "; a sampled response (T = 1) to 1,588 of them besides the greedy one"


def test_held_out_curve_reads_snapshots_and_minutes(tmp_path):
    """``slimspec-train heldout --curve``: the start, each snapshot and the final drafter on both sets, against the
    run's step minutes; twice the budget extrapolated along log2(minutes) from the last two points."""
    import json

    from slimspec.train.evaluate import held_out_curve
    from test_generate import oracle_pair

    target, drafter = oracle_pair()
    drafter.save_pretrained(tmp_path)
    drafter.save_pretrained(tmp_path / "snapshots" / "step_2")
    (tmp_path / "training.json").write_text(json.dumps(dict(history=[dict(seconds=60.0)] * 4)))
    start = dict(a=dict(all=dict(tau=2.0)), b=dict(all=dict(tau=3.0)), mean=2.5)
    curve = held_out_curve(target, tiny_tokenizer(50), tmp_path, start=start, per_category=1, progress=False)
    measured = held_out_curve(target, tiny_tokenizer(50), tmp_path, start=tmp_path / "snapshots" / "step_2",
                              per_category=1, progress=False)  # a start folder is measured like the others
    assert measured["points"][0]["mean"] == measured["points"][1]["mean"] and measured["points"][0]["minutes"] == 0
    assert [(p["steps"], p["minutes"]) for p in curve["points"]] == [(0, 0.0), (2, 2.0), (4, 4.0)]
    means = [p["mean"] for p in curve["points"]]
    assert means[0] == 2.5 and means[1] == means[2] > 5  # the oracle accepts every draft (K = 5)
    assert curve["twice_the_budget"] == dict(minutes=8.0, mean=means[2], per_doubling=0.0)


def test_data_curve_fits_unseen_agreement_per_doubling_of_the_text_each_drafter_read(tmp_path, capsys):
    """``slimspec-train data-curve``: each report's drafter (named by its command) is traced to the distinct text
    it trained on (text folders' meta.json; self-distilled ones add none); per series the unseen agreement is fitted
    linear in log2(texts), and a report that cannot be placed is refused naming what to run."""
    import json

    from slimspec.train.cli import main
    from slimspec.train.evaluate import data_curve

    exact = data_curve([dict(series="s", texts=t, unseen=0.3 + 0.01 * math.log2(t)) for t in (600, 1200, 2400)]
                       + [dict(series="one", texts=600, unseen=0.5)])
    assert exact["series"]["s"]["per_doubling"] == pytest.approx(0.01)
    assert exact["series"]["s"]["twice_the_text"]["texts"] == 4800
    assert exact["series"]["s"]["twice_the_text"]["unseen"] == pytest.approx(0.3 + 0.01 * math.log2(4800))
    assert exact["series"]["s"]["last_per_doubling"] == pytest.approx(0.01)
    assert exact["series"]["one"]["per_doubling"] is None and exact["series"]["one"]["twice_the_text"] is None

    def folder(name, kind, count, tokens):
        path = tmp_path / name
        path.mkdir()
        meta = dict(kind="text", texts=count) if kind == "text" else dict(prompts=count)
        (path / "meta.json").write_text(json.dumps(dict(meta, tokens=tokens)))
        return str(path)

    responses, first, second = folder("data", "prompts", 256, 999), folder("t1", "text", 600, 10), folder("t2", "text",
                                                                                                          600, 30)
    reports = []
    for i, (data, unseen) in enumerate([([responses, first], 0.39), ([responses, first, second], 0.40)]):
        drafter = tmp_path / f"drafter{i}"
        drafter.mkdir()
        (drafter / "config.json").write_text(json.dumps(dict(head_rank=80)))
        (drafter / "training.json").write_text(json.dumps(dict(data=",".join(data), history=[{}] * 3,
                                                               config=dict(trainable="head", lr=1e-3))))
        split = dict(positions=100, drafter=unseen)
        reports.append(tmp_path / f"report{i}.json")
        reports[-1].write_text(json.dumps(dict(command=f"slimspec-train heldout --drafter {drafter} --k 5",
                                               machine="m", text_agreement={"found, train split": dict(split),
                                                                            "found, held-out split": split})))
    recorded = tmp_path / "report2.json"  # heldout now records what its drafter trained on: no folder needed
    split = dict(positions=100, drafter=0.41)
    recorded.write_text(json.dumps(dict(command="slimspec-train heldout --drafter /gone", trained_on=dict(
        texts=2400, tokens=50, steps=5, series="head only, rank 80, lr 0.001"), text_agreement={
        "found, train split": split, "found, held-out split": split})))
    assert main(["data-curve", *map(str, reports + [recorded]), "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "data-curve.md").read_text()
    assert "| head only, rank 80, lr 0.001 | report1 | 1,200 | 40 | 3 | 40.0% | **40.0%** |" in table
    assert "+1.00 points | +1.00 points | 42.0% at 4,800 texts" in table
    assert (tmp_path / "out" / "data-curve.png").exists()
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(dict(command="slimspec-train heldout --drafter x")))
    assert main(["data-curve", str(bare), "--out", str(tmp_path / "out")]) != 0
    assert "no text agreement in it; measure it with slimspec-train heldout" in capsys.readouterr().err


# --- tree score calibration ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_the_tree_logit_scale_fit_recovers_how_sharp_the_argmax_is(alpha):
    """Rows whose argmax label is drawn from softmax(alpha * z): the fit finds alpha (and tells the two apart)."""
    from slimspec.train.tree_scale import fit_logit_scale, logit_scale_loss

    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(3000, 50, generator=g)
    best = torch.multinomial(torch.softmax(alpha * logits, -1), 1, generator=g)[:, 0]
    fitted = fit_logit_scale(logits, best)
    assert fitted == pytest.approx(alpha, rel=0.15)
    assert logit_scale_loss(logits, best, fitted) < logit_scale_loss(logits, best, 3 - alpha)


def test_tree_scale_is_measured_only_on_data_the_drafter_never_trained_on(tiny_data, tmp_path):
    import json

    from slimspec.train.tree_scale import drafting_rows, measure_tree_scale

    target, folder, _ = tiny_data
    (tmp_path / "training.json").write_text(json.dumps(dict(data=f"{folder},/elsewhere/text")))
    with pytest.raises(ValueError, match="never saw"):
        measure_tree_scale(str(tmp_path), str(folder), progress=False)
    drafter, _ = build_drafter(target, FitConfig(head_rank="d/8", head_init="random"), DistillationData(folder))
    logits, best = drafting_rows(drafter, DistillationData(folder), rows=40, ttt_steps=2, progress=False)
    assert logits.shape == (40, target.config.vocab_size) and best.shape == (40,)
    drafter.detach()
