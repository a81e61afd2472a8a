"""CPU kernels swapped in from outside the model (kernels_slimspec): packed linears agree with nn.Linear, are used
only while fresh, are undone exactly, and copy and pickle; the split argmax is argmax; calibration measures whether
packing a target pays and keeps its result only while the setup is unchanged."""

import copy
import pickle
import warnings

import pytest
import torch
from torch import nn

import generation_slimspec
import kernels_slimspec as k
from conftest import randomize, tiny_config
from modeling_slimspec import SlimSpecDrafter, SlimSpecLowRankHead
from test_generate import drafter_for, prompts, tiny_target

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
# bf16 packing needs native bf16 matmuls (AVX-512 BF16 / AMX); elsewhere pack_weight must refuse it
BF16 = ONEDNN and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def global_torch_state():
    return (torch.backends.mkldnn.enabled, torch.get_num_threads(), torch.is_grad_enabled(),
            torch.are_deterministic_algorithms_enabled(), torch.get_default_dtype())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_head_agrees_is_deterministic_and_switches_nothing(dtype, pack_tiny_heads):
    torch.manual_seed(0)
    head = SlimSpecLowRankHead(64, 8, 3000).to(dtype)
    x = torch.randn(1, 1, 64, dtype=dtype)
    with torch.no_grad():
        want = torch.nn.functional.linear(torch.nn.functional.linear(x.float(), head.down.weight.float()),
                                          head.up.weight.float())
        state = global_torch_state()
        packed = k.optimize_for_cpu(head)
        got3, got2, again = head(x), head(x.view(1, 64)), head(x)  # [1, 1, d] and [1, d]: the same kernel
        batched = head(x.expand(5, 1, 64))  # a few rows (a tree level): the segmented copy as well
        prefill = head(x.expand(k.SEGMENT_MAX_ROWS + 1, 1, 64))  # more rows: F.linear
        assert global_torch_state() == state
    can = ONEDNN and (dtype == torch.float32 or BF16)
    assert packed == (2 if can else 0) and isinstance(head.up, k.PackedLinear) == can
    if can:
        assert head.up.packed.segments == (k.SEGMENTS if dtype == torch.bfloat16 else 1)  # segmented for bf16
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=0.05, rtol=0.02)
    torch.testing.assert_close(got3.float(), want, **tol)
    assert got3.shape == (1, 1, 3000) and torch.equal(got2, got3.view(1, 3000)) and torch.equal(again, got3)
    torch.testing.assert_close(batched.float(), want.expand(5, 1, 3000), **tol)
    torch.testing.assert_close(prefill.float(), want.expand(k.SEGMENT_MAX_ROWS + 1, 1, 3000), **tol)
    twin = SlimSpecLowRankHead(64, 8, 3000).to(dtype)  # packed separately: the same kernel, bit-identical logits
    twin.load_state_dict(head.state_dict())
    k.optimize_for_cpu(twin)
    with torch.no_grad():
        assert torch.equal(twin(x), got3)


@pytest.mark.skipif(not ONEDNN, reason="no oneDNN in this torch build")
@pytest.mark.parametrize("segments", [1, 2, 4])
def test_segmented_packed_product_is_the_plain_product_in_order(segments):
    torch.manual_seed(0)
    weight, x = torch.randn(1000, 8), torch.randn(3, 8)
    for rows in (1, 3):  # the math: row m g + j is row m's logits [j N/g, (j + 1) N/g)
        torch.testing.assert_close(k.segment_rows(x[:rows], segments) @ k.segment_view(weight, segments).T,
                                   (x[:rows] @ weight.T).view(rows * segments, -1))
    packed = k.pack_weight(weight, min_elements=0, segments=segments)
    assert packed is not None and packed.segments == segments
    for rows in (1, 3):
        torch.testing.assert_close(k.packed_linear(x[:rows], packed), torch.nn.functional.linear(x[:rows], weight),
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="divide the weight's 1000 rows"):
        k.pack_weight(weight, min_elements=0, segments=3)


def test_bf16_packing_follows_the_cpu_class():
    """Where bf16 matmuls are not native (AVX2-only CPUs), packing a bf16 weight is refused: F.linear runs."""
    packed = k.pack_weight(torch.randn(64, 32).bfloat16(), min_elements=0)
    assert (packed is not None) == BF16


@pytest.mark.skipif(not ONEDNN, reason="no oneDNN in this torch build")
def test_stale_packed_weights_are_never_used(pack_tiny_heads):
    torch.manual_seed(0)
    head = SlimSpecLowRankHead(64, 8, 1000)
    with torch.inference_mode():
        assert k.optimize_for_cpu(head) == 2
        head(torch.randn(1, 64))
    assert not head.up.weight.is_inference()
    head(torch.randn(4, 64)).sum().backward()  # still trainable: gradients take F.linear
    assert head.up.weight.grad is not None and head.up.weight.grad.shape == (1000, 8)
    torch.optim.SGD(head.parameters(), lr=1.0).step()  # in place: the packed copies are now stale
    x = torch.randn(1, 64)
    with torch.no_grad():
        want = torch.nn.functional.linear(torch.nn.functional.linear(x, head.down.weight), head.up.weight)
        torch.testing.assert_close(head(x), want, atol=1e-5, rtol=1e-5)
        head.up.weight.data = head.up.weight.data * 2  # new storage: stale as well
        torch.testing.assert_close(head(x), 2 * want, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not ONEDNN, reason="no oneDNN in this torch build")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_packed_drafter_steps_as_before_and_restore_is_exact(dtype, pack_tiny_heads):
    """Every linear of the drafter (body and head) is swapped; a drafting step matches the plain drafter and its
    single-token step calls the packed kernel for each linear it runs; the state dict is the same; ``restore`` puts
    back the very same modules."""
    if dtype == torch.bfloat16 and not BF16:
        pytest.skip("bf16 is not packed on this CPU class (tested above)")
    torch.manual_seed(0)
    drafter = randomize(SlimSpecDrafter(tiny_config(head_rank=8)), seed=0).eval().to(dtype)
    originals = {name: m for name, m in drafter.named_modules() if type(m) is nn.Linear}
    keys = list(drafter.state_dict())
    d_t = drafter.config.target_hidden_size
    feats, ids = torch.randn(1, 5, 3 * d_t, dtype=dtype), torch.randint(0, drafter.config.vocab_size, (1, 6))

    def step(model):
        with torch.no_grad():
            first = model(input_ids=ids[:, :5], target_hidden_states=feats, use_cache=True, logits_to_keep=1)
            out = model(input_ids=ids[:, 5:], hidden_states=first.last_hidden_state[:, -1:],
                        past_key_values=first.past_key_values, logits_to_keep=1)
        return out.last_hidden_state, out.logits

    want = step(drafter)
    assert k.optimize_for_cpu(drafter) == len(originals) == 10  # fc, q, k, v, o, gate, up, down, head down/up
    assert list(drafter.state_dict()) == keys
    calls, original = [], torch.ops.mkldnn._linear_pointwise
    try:
        k.torch.ops.mkldnn._linear_pointwise = lambda *a: calls.append(a[1]) or original(*a)
        got = step(drafter)
    finally:
        k.torch.ops.mkldnn._linear_pointwise = original
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=0.1, rtol=0.05)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.float(), w.float(), **tol)
    stepped = {id(m.packed.tensor) for m in drafter.modules() if isinstance(m, k.PackedLinear) and m is not drafter.fc}
    assert stepped <= {id(t) for t in calls}  # the single-token step runs every linear but fc through the kernel
    assert k.restore(drafter) == 10 and k.packed_count(drafter) == 0
    assert all(dict(drafter.named_modules())[name] is m for name, m in originals.items())


def test_packed_modules_copy_and_pickle_unpacked(pack_tiny_heads):
    drafter = randomize(SlimSpecDrafter(tiny_config(head_rank=8)), seed=0).eval()
    assert k.optimize_for_cpu(drafter) > 0 or not ONEDNN
    x = torch.randn(1, 1, drafter.config.hidden_size)
    with torch.no_grad():
        want = drafter.head(x)
        for clone in (copy.deepcopy(drafter), pickle.loads(pickle.dumps(drafter))):
            assert all(m.packed.tensor is None for m in clone.modules() if isinstance(m, k.PackedLinear))
            torch.testing.assert_close(clone.head(x), want, atol=1e-5, rtol=1e-5)  # the same head, by F.linear


# --- the target ------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not ONEDNN, reason="no oneDNN in this torch build")
def test_a_packed_target_keeps_its_outputs_and_restores_exactly():
    target, untouched = tiny_target(), tiny_target()
    linears = [m for m in target.modules() if type(m) is nn.Linear]
    assert k.optimize_for_cpu(target, min_elements=0) == len(linears) > 0
    ids = torch.randint(1, 101, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(target(ids).logits, untouched(ids).logits, rtol=1e-5, atol=1e-5)
    for ids in prompts(4, 101, seed=4):
        want = untouched.generate(ids, do_sample=False, max_new_tokens=24)
        assert torch.equal(target.generate(ids, do_sample=False, max_new_tokens=24), want)
        drafter = drafter_for(target).attach(target)
        assert torch.equal(target.generate(ids, do_sample=False, max_new_tokens=24, assistant_model=drafter), want)
        drafter.detach()
    assert k.restore(target) == len(linears)
    assert [m for m in target.modules() if type(m) is nn.Linear] == linears  # the very same modules


# --- calibration -----------------------------------------------------------------------------------------------------
def test_calibration_keeps_the_faster_setup_and_goes_stale_with_the_target(monkeypatch):
    target = tiny_target()
    drafter = drafter_for(target).attach(target)
    times = {"as loaded": 0.004, "packed": 0.002}
    monkeypatch.setattr(generation_slimspec, "_target_pass_seconds", lambda t, lengths, *a: [
        times["packed" if k.packed_count(t) else "as loaded"]] * len(lengths))
    cal = drafter.calibrate(target, max_k=3)
    assert cal.packed == (ONEDNN and k.packed_count(target) > 0) and len(cal.costs.target_pass) == 4
    assert generation_slimspec.calibration_for(drafter, target) is cal
    times.update({"as loaded": 0.001})  # now packing loses: the target is left as loaded
    cal = drafter.calibrate(target, max_k=3)
    assert not cal.packed and k.packed_count(target) == 0 and cal.pass_ms["as loaded"] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid calibration: nothing is timed, nothing said
        assert generation_slimspec.measured_costs(drafter, target, 3) is cal.costs
    with torch.no_grad():
        next(target.parameters()).mul_(1.0)  # changed in place: the measurement no longer holds
    assert generation_slimspec.calibration_for(drafter, target) is None
    with pytest.warns(UserWarning, match="calibrate"):
        generation_slimspec.measured_costs(drafter, target, 3)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_first_argmax_is_argmax_with_ties_on_any_thread_count(threads, dtype):
    """The chunked reduction gives argmax's answer, the first maximum, in every row: with many ties, with the
    maximum in two chunks (the earlier wins), in the tail past the last whole chunk, in a strided row, and for
    vocabularies too small to chunk."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(threads)
        for vocab in (12, 1000, 1024, 2048, 5000, 9 * 1024 + 7):
            for rows in (1, 3, 17):
                for _ in range(8):
                    x = torch.randint(-3, 4, (rows, vocab), generator=g).to(dtype)  # small integers: many ties
                    got = k.first_argmax(x)
                    assert got.shape == (rows, 1) and torch.equal(got, x.float().argmax(-1, keepdim=True)), (vocab, x)
            x = torch.zeros(2, vocab, dtype=dtype)
            x[0, [vocab - 1, vocab // 2 + 1]] = 1  # the maximum twice: the earlier one wins
            x[1, vocab - 1] = 1  # the last entry: the tail where the vocabulary has one
            assert k.first_argmax(x).view(-1).tolist() == [vocab // 2 + 1, vocab - 1]
            wide = torch.randn(3, 2 * vocab, generator=g).to(dtype)[:, ::2]  # a strided view
            assert torch.equal(k.first_argmax(wide), wide.float().argmax(-1, keepdim=True))
    finally:
        torch.set_num_threads(saved)
