"""What machine a measurement ran on: every report names it, because CPU speed answers depend on the CPU class
(native bf16 matmuls or not) as much as on the code."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16_matmuls() -> bool:
    """Whether oneDNN runs bf16 matmuls natively here (AVX-512 BF16 / AMX); False on AVX2-only CPUs."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def describe() -> dict:
    return dict(cpu=cpu_model(), capability=torch.backends.cpu.get_cpu_capability(),
                native_bf16=native_bf16_matmuls(), threads=torch.get_num_threads(), torch=torch.__version__)


def describe_line(device=None) -> str:
    """The CPU's class in one line; with a CUDA ``device``, the GPU first."""
    m = describe()
    line = (f"{m['cpu']}, {m['capability']}, native bf16 matmuls: {'yes' if m['native_bf16'] else 'no'}, "
            f"{m['threads']} threads, torch {m['torch']}")
    if device is not None and torch.device(device).type == "cuda":
        line = f"{torch.cuda.get_device_name(device)} (CUDA) with {line}"
    return line


def training_device() -> torch.device:
    """Where data generation and training run: the GPU when one is visible (CUDA), else the CPU. Evaluation and
    benchmarks stay on the CPU, the machine the drafter is measured for."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fast_dtype(device=None) -> torch.dtype:
    """The dtype that runs the target and training fastest on ``device`` (default: the CPU): on a CPU, bf16 where
    matmuls are native bf16, else fp32 (an AVX2-only CPU ran a batched bf16 matmul at 1.3 GFLOP/s against 111 in
    fp32); on a GPU, bf16 where it supports it."""
    if device is not None and torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if native_bf16_matmuls() else torch.float32


def resolve_dtype(name: str, device=None) -> torch.dtype:
    """"auto" (``fast_dtype`` on ``device``), "bf16" or "fp32"."""
    choices = {"bf16": torch.bfloat16, "fp32": torch.float32}
    if name == "auto":
        return fast_dtype(device)
    if name not in choices:
        raise ValueError(f"dtype {name!r}: use auto, bf16 or fp32")
    return choices[name]


def fastest_setup(targets: dict) -> tuple:
    """The fastest plain setup among ``targets`` ({name: (target, tokenizer)}, e.g. the same model in bf16 and
    fp32), each as loaded or with its linears packed, timed by ``generation_slimspec.prepare_target`` (what
    ``drafter.calibrate`` does first), the targets in turn twice, each setup's fastest round kept -> (best name,
    {"<name>, <setup>": ms per plain decoding pass}). Every target is left in its own faster setup."""
    from generation_slimspec import prepare_target

    measured = {}
    for _ in range(2):  # the targets in turn, twice: a slow moment of the machine does not decide the dtype
        for name, (target, _) in targets.items():
            measured[name] = prepare_target(target, rounds=1, earlier=measured.get(name))
    passes = {f"{name}, {setup}": ms for name, pass_ms in measured.items() for setup, ms in pass_ms.items()}
    return min(measured, key=lambda name: min(measured[name].values())), passes
