"""The held-out prompt set is balanced and disjoint from every offline training source."""

from slimspec.heldout import CATEGORIES, HELD_OUT, held_out_prompts
from slimspec.prompts import builtin_prompts, offline_texts


def test_held_out_set_is_balanced():
    assert set(CATEGORIES) == {"prose", "code", "math", "lists", "dialogue", "other"}
    assert all(len(HELD_OUT[c]) >= 8 for c in CATEGORIES)
    prompts = held_out_prompts()
    assert len(prompts) == sum(map(len, HELD_OUT.values())) and len({p for _, p in prompts}) == len(prompts)
    assert [c for c, _ in held_out_prompts(1)] == list(CATEGORIES)


def test_held_out_prompts_never_appear_in_training_sources():
    training = offline_texts(split="train") + builtin_prompts("train")
    corpus = "\n".join(training)
    leaked = [p for _, p in held_out_prompts() if p.strip()[:60] in corpus]
    assert leaked == []
