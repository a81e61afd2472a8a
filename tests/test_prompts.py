"""The held-out prompt sets are balanced and disjoint from every training source: the offline texts, the built-in
prompts and the composed prompts."""

import re

import pytest

from slimspec.compose import (GENRES, SOURCES, VARIED_PER_GENRE, composed_by_genre, composed_prompts, composition,
                              everyday_prompts, varied_prompts, varied_rest_prompts)
from slimspec.found import word_runs
from slimspec.heldout import CATEGORIES, HELD_OUT_SETS, held_out_prompts
from slimspec.prompts import builtin_prompts, offline_texts


@pytest.mark.parametrize("name", sorted(HELD_OUT_SETS))
def test_held_out_sets_are_balanced(name):
    prompts = HELD_OUT_SETS[name]
    assert tuple(prompts) == CATEGORIES == ("prose", "code", "math", "lists", "dialogue", "other")
    assert all(len(prompts[c]) >= 8 for c in CATEGORIES)
    listed = held_out_prompts(held_out=name)
    assert len(listed) == sum(map(len, prompts.values())) and len({p for _, p in listed}) == len(listed)
    assert [c for c, _ in held_out_prompts(1, held_out=name)] == list(CATEGORIES)


def test_the_two_held_out_sets_share_nothing():
    a, b = ({p for _, p in held_out_prompts(held_out=n)} for n in ("a", "b"))
    assert not a & b and not word_runs(a) & word_runs(b)


@pytest.mark.parametrize("name", sorted(HELD_OUT_SETS))
def test_held_out_prompts_never_appear_in_training_sources(name):
    training = offline_texts(split="train") + builtin_prompts("train")
    corpus = "\n".join(training)
    leaked = [p for _, p in held_out_prompts(held_out=name) if p.strip()[:60] in corpus]
    assert leaked == []


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("name", sorted(HELD_OUT_SETS))
def test_composed_prompts_share_no_run_of_six_words_with_a_held_out_prompt(name, source):
    held = word_runs(p for _, p in held_out_prompts(held_out=name))
    shared = held & word_runs(composed_prompts(source=source))
    assert shared == set(), sorted(shared)[:5]


def test_varied_rest_is_new_to_every_recipe_and_the_held_out_sets():
    """The prompts for measuring a drafter on text it never trained on: none is a training source's, none shares a
    run of six words with a held-out prompt, and only genres with more than the cap have any."""
    rest = varied_rest_prompts()
    assert rest and len(set(rest)) == len(rest)
    assert not set(rest) & {p for source in SOURCES for p in composed_prompts(source=source)}
    held = word_runs(p for n in HELD_OUT_SETS for _, p in held_out_prompts(held_out=n))
    assert not held & word_runs(rest)
    full = composed_by_genre("varied", capped=False)
    assert composition(rest) == {g: min(24, len(ps) - VARIED_PER_GENRE) for g, ps in full.items()
                                 if len(ps) > VARIED_PER_GENRE}
    assert len(varied_rest_prompts(2)) == 2 * len(composition(rest))


@pytest.mark.parametrize("source", ["varied", "everyday"])
def test_each_further_source_adds_new_genres_and_prompts(source):
    """A further source's genres and prompts are its own (no genre name or prompt of an earlier source), every slot
    is filled, each genre keeps at most the source's cap, and the genres come in turn."""
    earlier = list(SOURCES)[: list(SOURCES).index(source)]
    mine = composed_by_genre(source)
    assert not [g for e in earlier for g in mine if g in composed_by_genre(e)]
    assert all(8 <= len(v) <= SOURCES[source][2] for v in mine.values())
    everything = composed_prompts(source=source)
    assert len(set(everything)) == len(everything)
    assert not set(everything) & {p for e in earlier for p in composed_prompts(source=e)}
    assert not [p for p in everything if re.search(r"\{[a-z_]+\}", p)]
    assert composition(everything[: len(mine)]) == {genre: 1 for genre in mine}


def test_everyday_prompts_read_as_written():
    """The filled-in article agrees with its noun ("an accountant", "a baker") and the everyday source is the
    "everyday" recipe group's prompts."""
    from train.recipe import Recipe, data_prompts

    everything = composed_prompts(source="everyday")
    assert not [p for p in everything if re.search(r"\ba [aeiou]", p, re.IGNORECASE)]
    assert any(" an accountant" in p for p in everything)
    assert data_prompts(Recipe(prompts="everyday", prompt_limit=None)) == everyday_prompts() == everything


def test_composed_prompts_cover_every_genre_in_turn():
    by_genre = composed_by_genre()
    assert set(by_genre) == set(GENRES) and all(len(v) >= 16 for v in by_genre.values())
    first = composed_prompts(len(GENRES))
    assert composition(first) == {genre: 1 for genre in GENRES}  # one of each genre before any repeats
    everything = composed_prompts()
    assert len(set(everything)) == len(everything) == sum(map(len, by_genre.values()))
    assert not [p for p in everything if re.search(r"\{[a-z_]+\}", p)]  # every slot filled


def test_composed_data_is_keyed_by_its_prompts(monkeypatch):
    """The built-in data's cache key is as it was; composed data's key follows the composed prompts, so editing the
    templates can never resume old shards with new prompts."""
    from slimspec import compose
    from slimspec.train.recipe import Recipe, _key

    builtin = Recipe()
    assert _key(builtin.data_settings()) == _key(dict(prompts="builtin", prompt_limit=640, max_new_tokens=128,
                                                      sampled=False, topk=64))
    composed = Recipe(prompts="builtin+composed", prompt_limit=None)
    before = _key(composed.data_settings())
    monkeypatch.setattr(compose, "composed_prompts", lambda limit=None: ["An edited template"])
    assert _key(composed.data_settings()) != before and _key(builtin.data_settings()) == _key(Recipe().data_settings())


def test_teacher_forced_text_grows_in_blocks_that_keep_their_folders():
    """A larger text_limit reuses the folders a smaller one built: the first block keeps the key a recipe of at most
    600 texts always had (stage 13's found text), the next blocks get folders of their own; a limit past what the
    sources hold is refused naming their count."""
    from slimspec.train.recipe import TEXT_BLOCK, Recipe, text_folders

    small, large = (Recipe(prompts="varied", text="found", text_limit=n) for n in (600, 1300))
    assert text_folders("t", small)[0].name == "text-040870fdc7" and TEXT_BLOCK == 600
    assert large.text_blocks() == [(0, 600), (600, 600), (1200, 100)]
    assert text_folders("t", large)[0] == text_folders("t", small)[0] and len(set(text_folders("t", large))) == 3
    assert text_folders("t", Recipe()) == text_folders("t", Recipe(text_limit=120)) and Recipe().text_blocks() == [
        (0, 120)]
    assert text_folders("t", Recipe(text=None)) == []
    texts = [f"text {i}" for i in range(1250)]
    assert [len(b) for b in large.text_block_items(texts)] == [600, 600, 50]
    assert large.text_block_items(texts)[1][0] == "text 600"
    with pytest.raises(ValueError, match="hold 1100 texts; set text_limit to at most 1100"):
        large.text_block_items(texts[:1100])


def test_prompt_groups_keep_their_own_data_folders():
    """"builtin+composed,varied": the first group's folder is the one "builtin+composed" alone has (its data is
    reused), the second gets its own; the prompts are the groups' one after the other."""
    from slimspec.train.recipe import Recipe, data_folder, data_folders, data_prompts

    both = Recipe(prompts="builtin+composed,varied", prompt_limit=None)
    first = Recipe(prompts="builtin+composed", prompt_limit=None)
    folders = data_folders("t", both)
    assert folders[0] == data_folder("t", first) and folders[1] == data_folder("t", Recipe(prompts="varied",
                                                                                             prompt_limit=None))
    assert data_prompts(both) == data_prompts(first) + composed_prompts(source="varied")
    with pytest.raises(ValueError, match="data_folders"):
        data_folder("t", both)
    with pytest.raises(ValueError, match="varied"):
        data_prompts(Recipe(prompts="builtin+novels"))


def test_a_sampled_group_gets_its_own_folder_and_one_sampled_response_per_prompt(tmp_path, monkeypatch):
    """"varied,varied:sampled": the same prompts twice, greedy responses in one folder, sampled ones in another."""
    from slimspec.train.recipe import Recipe, data_folders, data_prompts, data_responses_left

    monkeypatch.setenv("SLIMSPEC_CACHE", str(tmp_path))
    recipe = Recipe(prompts="varied,varied:sampled", prompt_limit=None)
    greedy, sampled = recipe.parts()
    assert greedy.response_modes() == [False] and sampled.response_modes() == [True]
    assert Recipe(sampled=True).response_modes() == [False, True]
    first, second = data_folders("t", recipe)
    assert first != second and data_prompts(sampled) == data_prompts(greedy) == varied_prompts()
    assert data_responses_left("t", recipe) == 2 * len(varied_prompts())
    with pytest.raises(ValueError, match="sampled"):
        data_prompts(Recipe(prompts="varied:greedy"))
