import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # tests run from a checkout even before `pip install -e .`
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from configuration_slimspec import SlimSpecConfig  # noqa: E402
from modeling_slimspec import SlimSpecDrafter  # noqa: E402


def tiny_config(**overrides) -> SlimSpecConfig:
    """A drafter small enough for exhaustive checks: d=32, 4 heads (2 kv), target d_t=24 with 6 layers, V=97."""
    kwargs = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                  target_hidden_size=24, target_num_hidden_layers=6, vocab_size=97, head_rank=8,
                  share_target_embeddings=False, rms_norm_eps=1e-6)
    kwargs.update(overrides)
    return SlimSpecConfig(**kwargs)


def randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Give every float parameter non-trivial values (norm weights away from 1) so equations are exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture
def tiny_drafter():
    torch.manual_seed(0)
    return randomize(SlimSpecDrafter(tiny_config())).eval()


@pytest.fixture
def pack_tiny_heads(monkeypatch):
    """Let tiny test heads take the oneDNN-packed kernel path, which real heads take (see ``kernels_slimspec.pack_weight``)."""
    import kernels_slimspec

    monkeypatch.setattr(kernels_slimspec, "PACK_MIN_ELEMENTS", 0)


@pytest.fixture(autouse=True)
def detach_drafters_after_each_test(monkeypatch):
    """Every drafter a test attached is detached after it, passed or failed, so that no test's failure leaves a
    target bound for the next one."""
    attached = []
    attach = SlimSpecDrafter.attach

    def recording_attach(self, target):
        attached.append(self)
        return attach(self, target)

    monkeypatch.setattr(SlimSpecDrafter, "attach", recording_attach)
    yield
    for drafter in attached:
        if drafter.attached_target is not None:
            drafter.detach()
