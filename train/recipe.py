"""The reference build as data: the members (``MEMBERS``), the shared recipe (``Recipe``), and where each build
step caches its output. ``slimspec-train reference`` and ``slimspec-train ship`` read these; nothing here runs a
build.

Everything is cached under ``<cache>/reference/<target>/`` (``cache`` = ~/.cache/slimspec or $SLIMSPEC_CACHE),
keyed by configuration: ``data-<key>`` holds the self-distillation data (keyed by the data settings), ``text-<key>``
the teacher-forced text, and ``<member>-<key>`` a Hub-ready drafter (keyed by the whole recipe).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path

from .fit_config import FitConfig

# The members: FitConfig fields of each, plus where a member comes from ("convert_from": converted from another
# member and healed), whether it keeps learning-curve snapshots ("curve") and whether a recipe's init_from continues
# it ("stages": a further build stage of the shipped drafter).
MEMBERS = {
    "dense": dict(head_rank=None),
    "truncated-32k": dict(head_rank=None, draft_vocab=32000),
    "slimspec-d8": dict(head_rank="d/8", curve=True, stages=True),
    "slimspec-d16": dict(head_rank="d/16"),
    "slimspec-d4": dict(head_rank="d/4", grow_to_rank="d/4", stages=True),  # a stage from d/8 widens its head
    "converted-d8-healed": dict(convert_from="dense", rank="d/8"),
}
BUILD_KEYS = ("convert_from", "rank", "curve", "stages")  # member keys that are not FitConfig fields
TEXT_BLOCK = 600  # teacher-forced texts per data folder (Recipe.text_blocks)
SAMPLED = ":sampled"  # a prompt group with this suffix gets sampled responses only (Recipe.parts)


@dataclass(frozen=True)
class Recipe:
    """Data and training settings shared by every member (the cache key)."""

    prompts: str = "builtin"  # the built-in train split (HumanEval prompts + Python-docs prose); see data_prompts
    prompt_limit: int | None = 640  # only the first N of the 909 (data generation is ~2 s per response here)
    max_new_tokens: int = 128
    sampled: bool = False
    topk: int = 64
    text: str | None = "stdlib,docs,packages,humaneval"  # teacher-forced text data mixed in (None: responses only)
    text_limit: int | None = 120  # the first N texts of the interleaved sources, built in blocks (text_blocks)
    text_window: int = 512
    candidates: int = 16384  # candidate softmax for training: batch top-k ids + this many frequent tokens (0: full)
    max_steps: int = 1200  # the budget: max_steps x batch_size x window positions at most (~780 per step here)
    batch_size: int = 4
    window: int = 256
    ttt_steps: int = 3
    lr: float = 4e-4
    loss: str = "kl"
    loss_on: str = FitConfig.loss_on
    precision: str = "auto"  # bf16 autocast where this CPU has native bf16 matmuls, else fp32
    heal_steps: int = 50
    seed: int = 0
    init_from: str | None = None  # SlimSpec d/8 and d/4 only: continue from this drafter folder (a further build stage)

    def parts(self) -> list:
        """One recipe per data folder: ``prompts`` groups separated by "," ("builtin+composed,varied": the data
        already built for "builtin+composed" stays as it is, and "varied" gets a folder of its own). A group ending
        in ":sampled" ("composed+varied:sampled") holds sampled responses only (T = 1, the target's own
        distribution) to its prompts, beside the greedy ones another group already has."""
        return [replace(self, prompts=group.strip()) for group in self.prompts.split(",")]

    def response_modes(self) -> list:
        """do_sample per response a prompt of this one-group recipe gets: [False] (greedy), [False, True]
        (``sampled``: greedy and sampled) or [True] (a ":sampled" group)."""
        if self.prompts.endswith(SAMPLED):
            return [True]
        return [False, True] if self.sampled else [False]

    def data_settings(self) -> dict:
        """What the self-distillation data of one group depends on (its cache key). Composed prompts change with the
        code that writes them, so beyond the built-in ones the key holds a digest of the prompts themselves: edited
        templates make new data, never a mix of old and new shards."""
        settings = dict(prompts=self.prompts, prompt_limit=self.prompt_limit, max_new_tokens=self.max_new_tokens,
                        sampled=self.sampled, topk=self.topk)
        if self.prompts != "builtin":
            settings["prompts_digest"] = _key({"prompts": data_prompts(self)})
        return settings

    def text_blocks(self) -> list:
        """The teacher-forced text in blocks of ``TEXT_BLOCK`` texts, as (skip, count) pairs: a folder each, so that
        a later stage with a larger ``text_limit`` builds only the texts past what an earlier stage built."""
        if self.text_limit is None or self.text_limit <= TEXT_BLOCK:
            return [(0, self.text_limit)]
        return [(skip, min(TEXT_BLOCK, self.text_limit - skip)) for skip in range(0, self.text_limit, TEXT_BLOCK)]

    def text_block_items(self, texts: list) -> list:
        """``texts`` (all the sources hold) cut into the recipe's blocks; a block past their end is an error naming
        how many there are."""
        blocks = [texts[skip:][:count] for skip, count in self.text_blocks()]
        if not all(blocks):
            raise ValueError(f"text_limit={self.text_limit}: the text sources {self.text!r} hold {len(texts)} texts; "
                             f"set text_limit to at most {len(texts)}")
        return blocks

    def text_settings(self, skip: int = 0, count: int | None = None) -> dict:
        """What one block of teacher-forced text depends on (its cache key); the first block's key is the one a
        recipe of at most ``TEXT_BLOCK`` texts has always had."""
        settings = dict(text=self.text, text_limit=count, window=self.text_window, topk=self.topk)
        return dict(settings, text_skip=skip) if skip else settings

    def positions(self) -> int:
        return self.max_steps * self.batch_size * self.window

    def override(self, spec: str | None) -> "Recipe":
        """This recipe with fields set from "name=value,name=value" (``--recipe`` on the command line); "none" sets
        an optional field to None. A bigger machine builds a bigger reference: more data, larger batches."""
        if not spec:
            return self
        fields = {f.name: f for f in dataclass_fields(self)}
        changes = {}
        for item in re.split(r",(?=\s*[A-Za-z_-]+=)", spec):  # a value may hold commas (text=stdlib,docs)
            name, sep, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in fields:
                raise ValueError(f"--recipe {item!r}: use name=value with a name from {sorted(fields)}")
            default = getattr(Recipe, name)
            if value.lower() == "none":
                changes[name] = None
            elif isinstance(default, bool):
                changes[name] = value.lower() in ("1", "true", "yes")
            elif isinstance(default, (int, float)):
                changes[name] = type(default)(value)
            else:
                changes[name] = value
        return replace(self, **changes)


def _key(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def reference_root(target_name: str) -> Path:
    from slimspec.targets import cache_root

    return cache_root() / "reference" / target_name


def data_folder(target_name: str, recipe: Recipe) -> Path:
    """The data folder of a one-group recipe (``Recipe.parts``)."""
    if "," in recipe.prompts:
        raise ValueError(f"prompts {recipe.prompts!r} has several data groups: use data_folders")
    return reference_root(target_name) / f"data-{_key(recipe.data_settings())}"


def data_folders(target_name: str, recipe: Recipe) -> list:
    """The self-distillation data folders of the recipe, one per prompt group."""
    return [data_folder(target_name, part) for part in recipe.parts()]


def text_folders(target_name: str, recipe: Recipe) -> list:
    """The teacher-forced text folders of the recipe, one per block (``Recipe.text_blocks``); none without text."""
    if not recipe.text:
        return []
    return [reference_root(target_name) / f"text-{_key(recipe.text_settings(skip, count))}"
            for skip, count in recipe.text_blocks()]


def member_folder(target_name: str, name: str, recipe: Recipe) -> Path:
    return reference_root(target_name) / f"{name}-{_key(dict(asdict(recipe), member=name))}"


def is_built(folder: Path) -> bool:
    return (folder / "model.safetensors").exists() and (folder / "training.json").exists()


def data_prompts(recipe: Recipe) -> list:
    """The train prompts the reference data is generated from: ``recipe.prompts`` names one source or several
    joined by "+" ("builtin": HumanEval and Python-docs prose, the train split; "composed": ``slimspec.compose``,
    openings of stories, recipes, letters, news, dialogues, lists and more; "varied": its second source, diaries,
    speeches, biographies, travel, opinion, interviews and more; "everyday": its third, emails, forum posts, product
    pages, manuals, postcards, poems, notices, short stories about ordinary people and more; "found":
    ``slimspec.found``, openings of text people wrote: news, encyclopedia paragraphs, a novel, film plots and
    reviews, questions, chat), interleaved one of each in turn, the first
    ``prompt_limit`` of them; groups separated by "," (each its own data folder) one after the other; a group's
    ":sampled" suffix changes its responses (``Recipe.response_modes``), not its prompts."""
    from slimspec.compose import composed_prompts, everyday_prompts, varied_prompts
    from slimspec.found import found_prompts
    from slimspec.prompts import builtin_prompts, interleaved

    if "," in recipe.prompts:
        return [p for part in recipe.parts() for p in data_prompts(part)]
    sources = {"builtin": lambda: builtin_prompts("train"), "composed": composed_prompts, "varied": varied_prompts,
               "everyday": everyday_prompts, "found": found_prompts}
    names = recipe.prompts.removesuffix(SAMPLED).split("+")
    unknown = [n for n in names if n not in sources]
    if unknown:
        raise ValueError(f"reference data prompts {unknown}: use {', '.join(sources)}, several joined by '+' (one "
                         f"data folder) or ',' (a folder each), a group ending in {SAMPLED!r} for sampled responses")
    prompts = interleaved(sources[n]() for n in names)
    return prompts[: recipe.prompt_limit] if recipe.prompt_limit else prompts


def data_responses_left(target_name: str, recipe: Recipe) -> int:
    """How many target responses the reference data still needs (0: complete), over every prompt group."""
    if "," in recipe.prompts:
        return sum(data_responses_left(target_name, part) for part in recipe.parts())
    meta = data_folder(target_name, recipe) / "meta.json"
    done = sum(s["sequences"] for s in json.loads(meta.read_text())["shards"]) if meta.exists() else 0
    return len(data_prompts(recipe)) * len(recipe.response_modes()) - done


def parse_member_steps(spec: str | None, names: list) -> dict:
    """"truncated-32k=580,dense=330" -> {name: steps}: members trained for their own number of steps instead of
    the recipe's, e.g. the steps that cost them the CPU time d/8's budget costs (an equal-time comparison)."""
    steps = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in names or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"--member-steps {item!r}: use NAME=STEPS with NAME one of {names} and STEPS >= 1")
        steps[name] = int(value)
    return steps


def member_recipe(recipe: Recipe, name: str, steps: dict | None) -> Recipe:
    """The recipe one member trains with: ``recipe``, with its own step count where ``steps`` gives one."""
    return replace(recipe, max_steps=steps[name]) if steps and name in steps else recipe


def curve_steps(max_steps: int, points: int = 4) -> list:
    """Doubling budgets ending at max_steps: e.g. 600 -> [75, 150, 300, 600]."""
    return sorted({max(1, max_steps >> i) for i in range(points)})


def build_command(recipe_changes: dict) -> str:
    """The command that builds the reference d/8 with these recipe fields changed from the defaults."""
    changes = ",".join(f"{k}={'none' if v is None else v}" for k, v in recipe_changes.items())
    return "slimspec-train reference --only slimspec-d8" + (f" --recipe {changes}" if changes else "")
