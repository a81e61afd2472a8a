"""The drafter, the adapter and a training step on a CUDA GPU, in fp16 and bf16. Skipped where no GPU exists; run
them on a GPU machine with ``python -m pytest -q tests/test_cuda.py``."""

import json

import pytest
import torch

from conftest import randomize, tiny_config
from kernels_slimspec import optimize_for_cpu
from modeling_slimspec import SlimSpecDrafter
from test_generate import drafter_for, plain_and_assisted, prompts, tiny_target

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("head_rank", ["d/8", None])
def test_drafter_forward_on_cuda_matches_cpu(dtype, head_rank):
    torch.manual_seed(0)
    cpu = randomize(SlimSpecDrafter(tiny_config(head_rank=head_rank))).eval()
    gpu = randomize(SlimSpecDrafter(tiny_config(head_rank=head_rank))).eval().to("cuda", dtype)
    assert optimize_for_cpu(gpu) == 0  # nothing to pack on a GPU
    feats, tokens = torch.randn(1, 7, 72), torch.randint(0, 97, (1, 7))
    with torch.no_grad():
        want = cpu(input_ids=tokens, target_hidden_states=feats).logits
        got = gpu(input_ids=tokens.cuda(), target_hidden_states=feats.cuda().to(dtype)).logits
    assert got.device.type == "cuda" and got.dtype == dtype
    torch.testing.assert_close(got.float().cpu(), want, atol=0.05 * float(want.abs().max()), rtol=0.05)


@pytest.mark.parametrize("dtype", HALF)
def test_greedy_identity_with_a_half_precision_drafter_on_cuda(dtype):
    """The target in fp32 on the GPU decides every token; a half-precision drafter only proposes."""
    target = tiny_target().to("cuda")
    drafter = drafter_for(target).to("cuda", dtype).attach(target)
    try:
        for ids in prompts(6, 101, seed=3):
            plain, assisted = plain_and_assisted(target, drafter, ids.cuda(), max_new_tokens=20)
            assert torch.equal(plain, assisted)
        assert drafter.last_generate_stats.verification_passes > 0
    finally:
        drafter.detach()


@pytest.mark.parametrize("bf16", [False, True])
def test_training_steps_on_cuda(tmp_path, bf16):
    from slimspec.train.data import generate_data, generate_text_data
    from slimspec.train.fit import fit
    from slimspec.train.fit_config import FitConfig
    from test_train import PROMPTS, tiny_tokenizer

    target = tiny_target().to("cuda")
    data = tmp_path / "data"
    generate_data(target=target, tokenizer=tiny_tokenizer(), prompts=PROMPTS, out=str(data), layer_ids=[2, 3, 3],
                  max_new_tokens=8, batch_size=4, shard_prompts=4, progress=False)
    texts = [" ".join(f"t{(5 * i + j * j) % 97 + 4}" for j in range(40 + 7 * i)) for i in range(3)]
    generate_text_data(target=target, tokenizer=tiny_tokenizer(), texts=texts, out=str(tmp_path / "text"),
                       layer_ids=[2, 3, 3], window=16, batch_size=3, progress=False)
    result = fit(target=target, data=f"{data},{tmp_path / 'text'}", out=str(tmp_path / "drafter"), progress=False,
                 config=FitConfig(head_rank="d/8", ttt_steps=2, batch_size=2, window=16, max_steps=3, save_every=100,
                                  bf16=bf16, candidates=8, workers=2))
    assert result["finished"] and all(torch.isfinite(torch.tensor(h["loss"])) for h in result["history"])
    assert (tmp_path / "drafter" / "model.safetensors").exists()
    assert "(CUDA)" in json.loads((tmp_path / "drafter" / "training.json").read_text())["machine"]
