# coding=utf-8
# Copyright 2026 The SlimSpec authors. Licensed under the Apache License, Version 2.0.
"""CPU kernels for SlimSpec drafters and their targets, swapped in from outside the model.

Hub custom code: standard library and torch only. The model (``modeling_slimspec``) is plain ``nn.Linear``s; this
file swaps faster kernels in and out, as gpt-fast's ``quantize.py`` does for its ``model.py``:

    optimize_for_cpu(module, min_elements)  every CPU fp32/bf16 ``nn.Linear`` of ``module`` (a drafter or a target)
                                            with at least ``min_elements`` weights becomes a ``PackedLinear`` that
                                            holds the same parameters (same state-dict keys) and a oneDNN-packed
                                            copy of its weight; returns how many
    restore(module)                         every ``PackedLinear`` replaced by the ``nn.Linear`` it came from: the
                                            module exactly as before

Why packing: at batch 1 a linear is a matrix-vector product, memory bound, and its cost is how fast the kernel
streams the weight. oneDNN's linear against a weight reordered for it once (``_reorder_linear_weight``) streams it
faster than ``F.linear`` on some CPUs and slower on others (``docs/cpu-kernels.md`` has the measurements by machine
class), so whether to pack a target is measured (``generation_slimspec.calibrate``), never assumed.

A ``PackedLinear`` uses its packed copy only while it is fresh (the same storage, in-place version, dtype and
shape as the parameter it was packed from), nothing needs gradients, and the input is a CPU tensor in the weight's
dtype; otherwise it runs ``F.linear``. The rule is fixed, so the same inputs always take the same kernel, and
nothing process-wide is switched. State dict, ``save_pretrained`` and training are unaffected; a copied or pickled
module keeps its ``PackedLinear``s but starts without packed copies (opaque oneDNN tensors neither copy nor
pickle) and runs ``F.linear`` until packed again.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

# Weights under this many entries stay ``nn.Linear`` in a drafter: oneDNN's call has a fixed cost above
# ``F.linear``'s (docs/cpu-kernels.md). Targets are packed whole (``min_elements=0``).
PACK_MIN_ELEMENTS = 1 << 18

# A bf16 weight with a short inner dimension K (the low-rank head's up factor [V, r]) is packed as ``SEGMENTS``
# segments side by side, [N / g, g K], when g K <= SEGMENT_MAX_WIDTH, and each of up to ``SEGMENT_MAX_ROWS`` rows is
# multiplied as g rows that each hold it in one segment: the same bytes then stream as a wide product
# (docs/cpu-kernels.md). More rows (a prefill) take ``F.linear``: the g-fold zeros would cost compute there.
SEGMENTS, SEGMENT_MAX_WIDTH, SEGMENT_MAX_ROWS = 4, 512, 8


def segments_for(weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> int:
    """How many segments a packed single-row product over ``weight`` [N, K] uses: ``SEGMENTS`` for bias-free bf16
    weights with SEGMENTS K <= SEGMENT_MAX_WIDTH and N divisible by SEGMENTS, else 1 (the plain product)."""
    n, k = weight.shape
    fits = weight.dtype == torch.bfloat16 and SEGMENTS * k <= SEGMENT_MAX_WIDTH and n % SEGMENTS == 0
    return SEGMENTS if fits and bias is None else 1


def segment_view(weight: torch.Tensor, segments: int) -> torch.Tensor:
    """[N, K] -> [N / g, g K] (g = segments), row i = weight rows i, N/g + i, ..., (g - 1) N/g + i side by side."""
    n, k = weight.shape
    return weight.view(segments, n // segments, k).transpose(0, 1).reshape(n // segments, segments * k)


def segment_rows(x: torch.Tensor, segments: int) -> torch.Tensor:
    """x [M, K] -> [M g, g K]: row m g + j holds x[m] in columns [j K, (j + 1) K), zeros elsewhere, so that
    ``segment_rows(x, g) @ segment_view(W, g).T`` is ``(x @ W.T)`` as [M g, N / g], i.e. [M, N] row by row."""
    m, k = x.shape
    rows = x.new_zeros(m, segments, segments, k)
    rows.diagonal(dim1=1, dim2=2).copy_(x.unsqueeze(-1).expand(m, k, segments))
    return rows.view(m * segments, segments * k)


def _identity(weight: torch.Tensor) -> tuple:
    return weight.data_ptr(), weight._version, weight.dtype, tuple(weight.shape), tuple(weight.stride())


class Packed:
    """A oneDNN-packed copy of a [N, K] CPU weight (or of its ``segment_view``) and the identity of the parameter it
    was packed from; empty (``tensor`` None) once copied or unpickled."""

    __slots__ = ("tensor", "source", "segments")

    def __init__(self, tensor: Optional[torch.Tensor] = None, source: tuple = (), segments: int = 1):
        self.tensor, self.source, self.segments = tensor, source, segments

    def usable(self, x: torch.Tensor, weight: torch.Tensor) -> bool:
        return (self.tensor is not None and x.device.type == "cpu" and x.dtype == weight.dtype
                and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
                and self.source == _identity(weight))

    def __deepcopy__(self, memo):
        return Packed()

    def __reduce__(self):
        return (Packed, ())


def pack_weight(weight: torch.Tensor, min_elements: Optional[int] = None, segments: int = 1) -> Optional[Packed]:
    """Pack a CPU fp32/bf16 weight [N, K] (as ``segment_view(weight, segments)`` when segments > 1) for oneDNN; None
    where this torch build or CPU cannot, or where the weight has fewer than ``min_elements`` entries (default
    ``PACK_MIN_ELEMENTS``)."""
    if weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.bfloat16) or weight.dim() != 2:
        return None
    if segments < 1 or weight.shape[0] % segments:
        raise ValueError(f"segments must be >= 1 and divide the weight's {weight.shape[0]} rows, got {segments}")
    if weight.numel() < (PACK_MIN_ELEMENTS if min_elements is None else min_elements):
        return None
    mkldnn = torch.ops.mkldnn
    if not torch.backends.mkldnn.is_available() or not hasattr(mkldnn, "_reorder_linear_weight"):
        return None
    if weight.dtype == torch.bfloat16 and not mkldnn._is_mkldnn_bf16_supported():
        return None
    with torch.no_grad():
        try:
            source = weight.detach() if segments == 1 else segment_view(weight.detach(), segments)
            packed = Packed(mkldnn._reorder_linear_weight(source, 1), _identity(weight), segments)
            probe = torch.linspace(-1, 1, weight.shape[1], dtype=weight.dtype).view(1, -1)
            ok = torch.allclose(packed_linear(probe, packed).float(), F.linear(probe, weight).float(), rtol=2e-2,
                                atol=1e-2 * float(weight.abs().sum(1).max()) + 1e-6)
        except (RuntimeError, AttributeError):
            return None
    return packed if ok else None


def packed_linear(x: torch.Tensor, packed: Packed, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x [M, K] @ the packed weight (+ bias) -> [M, N]; a segmented weight takes at most SEGMENT_MAX_ROWS rows."""
    if packed.segments == 1:
        return torch.ops.mkldnn._linear_pointwise(x, packed.tensor, bias, "none", [], "")
    rows = segment_rows(x, packed.segments)
    return torch.ops.mkldnn._linear_pointwise(rows, packed.tensor, None, "none", [], "").view(x.shape[0], -1)


class _Held:
    """The ``nn.Linear`` a ``PackedLinear`` replaced, held without registering it (it shares the parameters)."""

    __slots__ = ("module",)

    def __init__(self, module: nn.Linear):
        self.module = module


class PackedLinear(nn.Module):
    """An ``nn.Linear`` with a oneDNN-packed copy of its weight: the same ``weight``/``bias`` parameters (so the same
    state-dict keys), x [..., K] -> [..., N]. Inputs are flattened to [M, K] first, so [1, K] and [1, 1, K] take
    the same kernel; a segmented copy serves up to ``SEGMENT_MAX_ROWS`` rows (a drafting step, a tree level), and
    everything the packed copy cannot serve runs ``F.linear``."""

    def __init__(self, linear: nn.Linear, packed: Packed):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.register_parameter("bias", linear.bias)
        self.original = _Held(linear)
        self.packed = packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if self.packed.usable(flat, self.weight) and (self.packed.segments == 1
                                                        or flat.shape[0] <= SEGMENT_MAX_ROWS):
            y = packed_linear(flat, self.packed, self.bias)
            return y.view(*x.shape[:-1], y.shape[-1])
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"segments={self.packed.segments}")


def optimize_for_cpu(module: nn.Module, min_elements: Optional[int] = None) -> int:
    """Replace every ``nn.Linear`` of ``module`` whose weight ``pack_weight`` packs (CPU, fp32/bf16, at least
    ``min_elements`` entries, default ``PACK_MIN_ELEMENTS``; bf16 short-K weights segmented, ``segments_for``) by a
    ``PackedLinear``; returns how many
    (0 on GPUs and where this torch build cannot pack). Packs anew what an earlier call packed; ``restore`` undoes
    it exactly."""
    restore(module)
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            packed = pack_weight(child.weight, min_elements, segments_for(child.weight, child.bias))
            if packed is not None:
                setattr(parent, name, PackedLinear(child, packed))
                count += 1
    return count


def restore(module: nn.Module) -> int:
    """Put back the ``nn.Linear`` each ``PackedLinear`` of ``module`` replaced; returns how many."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PackedLinear):
                setattr(parent, name, child.original.module)
                count += 1
    return count


def packed_count(module: nn.Module) -> int:
    """How many of ``module``'s linears are packed."""
    return sum(isinstance(m, PackedLinear) for m in module.modules())


def first_argmax(logits: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """The index of the first maximum of each row of logits [R, V] -> [R, 1], as ``argmax`` returns it.

    On a CPU, ``argmax`` (and ``max`` with indices) over a large vocabulary runs several times slower than ``amax``,
    which streams the row at memory speed. So: split each row into chunks of ``chunk`` entries (the tail past the
    last whole chunk is one more), take each chunk's maximum, and ``argmax`` over the first chunk holding the row's
    maximum only:  i* = j* chunk + argmax_i x[j* chunk + i],  j* = the first j with max(chunk j) = max(row)."""
    rows, vocab = logits.shape
    whole = vocab // chunk
    if whole < 2 or logits.device.type != "cpu":
        return logits.argmax(-1, keepdim=True)
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    maxima = logits.as_strided((rows, whole, chunk), (logits.stride(0), chunk, 1)).amax(-1)  # [R, whole]
    if whole * chunk < vocab:
        maxima = torch.cat([maxima, logits[:, whole * chunk :].amax(-1, keepdim=True)], dim=-1)
    first = (maxima == maxima.amax(-1, keepdim=True)).to(torch.uint8).argmax(-1, keepdim=True)  # [R, 1]: j*
    window = (first * chunk + torch.arange(chunk, device=logits.device)).clamp_max(vocab - 1)  # [R, chunk]
    return window.gather(1, logits.gather(1, window).argmax(-1, keepdim=True))
