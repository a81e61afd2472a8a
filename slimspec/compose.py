"""Composed self-distillation prompts: openings of what people write, in many genres, topics and registers.

The built-in prompts (HumanEval and Python-docs prose) cover code and technical prose only; the drafter then meets
stories, recipes, letters, news, dialogues and lists for the first time at inference. Here each genre has a few
opening templates and a pool of fillers (topics, characters, places, dishes, products, ...); ``composed_prompts``
enumerates template x fillers deterministically, interleaves the genres, and takes as many as asked. The target
writes the responses (EAGLE's own recipe: train on the target's continuations of prompts, never on other text).
``tests/test_prompts.py`` checks that no composed prompt shares a run of words with any held-out prompt.
"""

from __future__ import annotations

import hashlib
import itertools

TOPICS = ["volcanoes", "the printing press", "honeybees", "coral reefs", "the Silk Road", "black holes", "tea",
          "the immune system", "glaciers", "the Roman aqueducts", "solar panels", "the piano", "penguins",
          "earthquakes", "the first airplanes", "vaccines", "the moon landing", "chess", "deserts", "wind turbines",
          "the human heart", "paper money", "lighthouses", "the Great Barrier Reef", "bicycles", "electric cars",
          "the water cycle", "ancient Egypt", "jazz", "recycling", "the internet", "owls", "rainbows", "bread",
          "the Olympic Games", "antibiotics", "tides", "the Eiffel Tower", "mushrooms", "submarines"]
CHARACTERS = ["young baker", "retired sailor", "curious robot", "lonely dragon", "clever fox", "tired detective",
              "shy princess", "old shepherd", "talking cat", "travelling musician", "brave little mouse",
              "forgetful wizard"]
PLACES = ["small mountain village", "busy harbour town", "kingdom beneath the sea", "quiet farm", "city of glass",
          "snowy forest", "desert oasis", "floating island", "crowded market", "abandoned castle"]
DISHES = ["lentil soup", "apple pie", "vegetable curry", "pancakes", "lemon chicken", "tomato pasta",
          "chocolate cookies", "fried rice", "potato salad", "banana muffins", "fish tacos", "mushroom risotto",
          "carrot cake", "chickpea stew", "garlic bread", "pumpkin soup", "beef stew", "spinach omelette",
          "oatmeal cookies", "greek salad"]
PRODUCTS = ["wireless earbuds", "a standing desk", "a coffee grinder", "running shoes", "a robot vacuum",
            "a hiking backpack", "an e-reader", "a blender", "a camping tent", "a mechanical keyboard",
            "a rice cooker", "a smart watch", "an electric kettle", "a yoga mat", "a desk lamp"]
TASKS = ["plant tomatoes", "write a good cover letter", "start running", "learn to juggle", "fix a leaking tap",
         "save money each month", "train a puppy", "make a budget spreadsheet", "brew coffee at home",
         "prepare for a job interview", "clean a laptop keyboard", "build a birdhouse", "repaint a door",
         "grow herbs on a windowsill", "learn a new language", "organize a small kitchen", "sharpen a knife",
         "change a bicycle tyre", "write a short speech", "back up a phone"]
CITIES = ["Lisbon", "Nairobi", "Osaka", "Toronto", "Lima", "Oslo", "Melbourne", "Cairo", "Denver", "Seoul"]
EVENTS = ["a new library will open next spring", "the river reached its highest level in fifty years",
          "the city will plant ten thousand trees", "a local team won the national championship",
          "the old bridge will close for repairs", "scientists found a new species of frog nearby",
          "bus fares will fall in January", "the annual food festival drew record crowds"]
PEOPLE = [("Anna", "Ben"), ("Customer", "Support"), ("Teacher", "Pupil"), ("Nurse", "Patient"), ("Dad", "Lily"),
          ("Manager", "Intern"), ("Tourist", "Guide"), ("Grandma", "Leo")]
QUESTIONS = ["have you seen my keys anywhere?", "what time does the museum open?", "can you help me with this form?",
             "why is the sky getting so dark?", "how was your first week?", "where should we go on holiday?",
             "did you remember to buy milk?", "what do you think of the new plan?"]
FUNCTIONS = [("count_vowels", "text", "Return how many vowels are in text."),
             ("celsius_to_fahrenheit", "celsius", "Convert a temperature from Celsius to Fahrenheit."),
             ("flatten", "nested", "Flatten a list of lists into one list."),
             ("is_leap_year", "year", "True if year is a leap year in the Gregorian calendar."),
             ("word_frequencies", "text", "Return a dict mapping each word in text to its count."),
             ("median", "values", "Return the median of a non-empty list of numbers."),
             ("chunk", "items, size", "Split items into lists of at most size elements."),
             ("capitalize_words", "sentence", "Capitalize the first letter of every word."),
             ("average", "numbers", "Return the mean of a list of numbers."),
             ("remove_duplicates", "items", "Return items without duplicates, keeping the first occurrence."),
             ("count_lines", "path", "Return the number of lines in the file at path."),
             ("is_anagram", "a, b", "True if a and b contain the same letters."),
             ("merge_dicts", "first, second", "Return a new dict with the keys of both; second wins on conflicts."),
             ("to_snake_case", "name", "Convert a CamelCase name to snake_case."),
             ("running_total", "values", "Return the cumulative sums of values."),
             ("safe_divide", "a, b", "Return a / b, or None when b is zero.")]
NUMBERS = [(12, 4), (45, 3), (120, 8), (7, 9), (250, 5), (36, 6), (18, 12), (90, 15), (64, 16), (35, 7),
           (144, 12), (81, 9), (300, 25), (56, 8), (27, 3), (200, 40)]

GENRES = {
    "story": [("Long ago, in a {place}, there lived a {character} who", "place", "character"),
              ("The {character} had never left the {place}, until one morning", "character", "place"),
              ("Nobody in the {place} believed the {character} when", "place", "character")],
    "fairy tale": [("Once upon a time, a {character} set out from the {place} to find", "character", "place"),
                   ("In a {place} far away, a {character} made a wish that", "place", "character")],
    "recipe": [("{dish_title}\n\nIngredients:\n-", "dish"), ("Here is how I make {dish}. First,", "dish"),
               ("{dish_title} (serves four)\n\nStep 1:", "dish")],
    "letter": [("Dear Sir or Madam,\n\nI am writing to ask about {topic}.", "topic"),
               ("Dear Hiring Committee,\n\nI would like to apply for the job you advertised. As a {character}, I",
                "character"),
               ("Hi Sam,\n\nThanks for the book about {topic}! I", "topic")],
    "encyclopedic": [("Few subjects have been studied as closely as {topic}. Since", "topic"),
                     ("The history of {topic} begins", "topic"), ("{topic_title}: an overview.\n\n", "topic")],
    "how-to": [("How to {task}:\n1.", "task"), ("A beginner's guide to how to {task}. The first thing", "task"),
               ("If you want to {task}, you will need", "task")],
    "news": [("{city}, {day} - Officials said today that {event}.", "city", "event"),
             ("Residents of {city} learned this week that {event}. The", "city", "event")],
    "review": [("Review of {product}: after three weeks of daily use,", "product"),
               ("I was not sure about {product} at first, but", "product"),
               ("Three stars for {product}. The good part:", "product"),
               ("Would I buy {product} again? Honestly,", "product")],
    "abstract": [("Abstract. We study {topic} and show that", "topic"),
                 ("Abstract: This report reviews what is known about {topic}, with a focus on", "topic")],
    "dialogue": [("{a}: {question_title}\n{b}:", "people", "question"),
                 ("{a}: Hello!\n{b}: Hi, {question}\n{a}:", "people", "question")],
    "list": [("Things to know about {topic}:\n1.", "topic"), ("What to pack to {task}:\n-", "task"),
             ("Five questions about {topic}:\n1.", "topic")],
    "math": [("Problem: A shop sells pens at {x} cents each. How much do {y} pens cost?\nSolution:", "numbers"),
             ("Problem: {x} apples are shared equally among {y} children. How many does each get?\nAnswer:",
              "numbers"),
             ("Compute {x} x {y} step by step:", "numbers"),
             ("A train travels {x} km in {y} hours. Its average speed is", "numbers"),
             ("What is {x} divided by {y}? Show your work.\n", "numbers")],
    "code": [("def {name}({args}):\n    \"\"\"{doc}\"\"\"\n", "function"),
             ("# {doc}\ndef {name}({args}):\n", "function"),
             ("import unittest\n\n\nclass Test{name_title}(unittest.TestCase):\n    def test_{name}(self):\n", "function")],
}
FILLERS = {"place": PLACES, "character": CHARACTERS, "dish": DISHES, "topic": TOPICS, "task": TASKS,
           "city": CITIES, "event": EVENTS, "product": PRODUCTS, "people": PEOPLE, "question": QUESTIONS,
           "function": FUNCTIONS, "numbers": NUMBERS}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]


def _fill(template: str, slots: tuple, values: tuple) -> str:
    fields = {}
    for slot, value in zip(slots, values):
        if slot == "people":
            fields["a"], fields["b"] = value
        elif slot == "function":
            fields["name"], fields["args"], fields["doc"] = value
            fields["name_title"] = "".join(part.title() for part in value[0].split("_"))
        elif slot == "numbers":
            fields["x"], fields["y"] = value
        else:
            fields[slot] = value
            fields[f"{slot}_title"] = value[:1].upper() + value[1:]
    fields["day"] = DAYS[len(template + "".join(map(str, values))) % len(DAYS)]
    return template.format(**fields)


def _order(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def composed_by_genre() -> dict:
    """{genre: [prompt, ...]}: every template with every combination of its fillers, in a fixed pseudo-random
    order (by hash, so adding a filler does not reorder the rest)."""
    out = {}
    for genre, templates in GENRES.items():
        prompts = set()
        for template, *slots in templates:
            for values in itertools.product(*(FILLERS[s] for s in slots)):
                prompts.add(_fill(template, tuple(slots), values))
        out[genre] = sorted(prompts, key=_order)
    return out


def composed_prompts(limit: int | None = None) -> list:
    """The composed prompts, genres interleaved (one of each in turn), the first ``limit`` of them."""
    by_genre = composed_by_genre()
    mixed = []
    for i in range(max(map(len, by_genre.values()))):
        mixed += [prompts[i] for prompts in by_genre.values() if i < len(prompts)]
    return mixed[:limit] if limit else mixed


def composition(prompts: list) -> dict:
    """{genre: count} of composed ``prompts`` (what the data holds, for the model card and reports)."""
    genre_of = {p: g for g, ps in composed_by_genre().items() for p in ps}
    counts = {}
    for p in prompts:
        g = genre_of.get(p, "other")
        counts[g] = counts.get(g, 0) + 1
    return counts
