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
        if slot in ("people", "speakers", "sports"):
            fields["a"], fields["b"] = value
        elif slot == "method":
            fields["cls"], fields["method"], fields["doc"] = value
        elif slot == "function":
            fields["name"], fields["args"], fields["doc"] = value
            fields["name_title"] = "".join(part.title() for part in value[0].split("_"))
        elif slot in ("numbers", "amounts"):
            fields["x"], fields["y"] = value
        else:
            fields[slot] = value
            fields[f"{slot}_title"] = value[:1].upper() + value[1:]
    fields["day"] = DAYS[len(template + "".join(map(str, values))) % len(DAYS)]
    return template.format(**fields)


def _order(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()



# The second source, "varied": genres and registers the first one lacks (diaries, speeches, biographies, travel
# writing, opinion pieces, sports reports, FAQs, notes, interviews, ...), with their own fillers, so that its data
# adds what the drafter has not seen rather than more of the same.
SUBJECTS = ["the Amazon river", "the Industrial Revolution", "sharks", "the stock market", "dinosaurs",
            "the Northern Lights", "coffee", "the Great Wall of China", "electricity", "the Renaissance", "hurricanes",
            "the telephone", "plastic pollution", "sleep", "the Roman Empire", "Mars", "gravity", "whales",
            "the Vikings", "chocolate", "the railway", "ants", "cheese", "castles", "satellites", "rice",
            "the microscope", "bird migration", "public libraries", "board games", "kites", "the postal service",
            "salt", "bridges", "earthworms", "the calendar", "glass", "maps", "clocks", "wool"]
PERSONS = ["Maria Alvarez", "Thomas Okafor", "Ingrid Larsen", "Kenji Watanabe", "Amara Nwosu", "Pierre Dubois",
           "Hannah Weiss", "Rahul Mehta", "Sofia Rossi", "Daniel Byrne", "Leila Haddad", "Oliver Grant"]
ROLES = ["chemist", "novelist", "architect", "football coach", "painter", "engineer", "nurse", "composer",
         "mountain climber", "chef", "astronomer", "teacher"]
TOWNS = ["Porto", "Accra", "Kyoto", "Vancouver", "Cusco", "Bergen", "Perth", "Alexandria", "Boulder", "Busan",
         "Galway", "Tbilisi"]
DIARY = ["finally finished painting the spare room", "missed the last bus home", "met my new neighbours",
         "got a letter from my grandmother", "tried to bake bread for the first time", "went swimming in the lake",
         "lost my wallet at the market", "started a new job", "saw a fox in the garden", "fixed the old radio",
         "ran my first five kilometres", "argued with my brother", "visited the art museum", "planted a tree",
         "forgot my umbrella again"]
OCCASIONS = ["our school's hundredth birthday", "the opening of the new community centre", "Emma and Jack's wedding",
             "the retirement of our head librarian", "the end of a wonderful season", "our team's first year",
             "the reopening of the town hall", "the graduating class", "a record harvest", "the new hospital wing",
             "twenty years of the choir", "the winners of the science fair"]
SPORTS = [("Harbour City", "Valley Rovers"), ("Northfield United", "Eastport Athletic"), ("Riverside", "Old Town"),
          ("Westbrook Wolves", "Stonebridge"), ("Lakeside Lions", "Hillcrest"), ("Port Ellen", "Kingsford Rangers")]
OPINIONS = ["schools should start later in the morning", "cities should ban cars from the centre",
            "homework does more harm than good", "everyone should learn to cook", "museums should be free",
            "phones should be banned in classrooms", "people should work four days a week",
            "every town needs a public library", "children should learn to code", "fast fashion should be taxed"]
QUERIES = ["How long does delivery take?", "Can I return an item I bought online?", "Do you offer student discounts?",
           "How do I reset my password?", "Is parking available at the venue?", "Can I bring my dog?",
           "What payment methods do you accept?", "How do I cancel my membership?", "Are children allowed?",
           "When does the shop close on Sundays?"]
SPEAKERS = [("Interviewer", "Dr. Patel"), ("Host", "Chef Rosa"), ("Reporter", "Mayor Collins"), ("Emma", "Noah"),
            ("Receptionist", "Caller"), ("Shopkeeper", "Customer"), ("Student", "Professor"), ("Kim", "Alex")]
REMARKS = ["what made you choose this career?", "the train is running late again.", "I think I left the oven on.",
           "could you tell us how it all started?", "I'd like to book a table for two.", "is this seat taken?",
           "have you finished the report yet?", "we need to talk about the budget.",
           "what is the hardest part of your job?", "I just got the tickets for Saturday!"]
ITEMS = ["a picnic", "a rainy weekend", "the first day of school", "a birthday party", "moving house", "a job fair",
         "a camping trip", "a long flight", "a power cut", "a new puppy"]
AMOUNTS = [(24, 6), (15, 4), (60, 5), (48, 8), (32, 2), (75, 3), (90, 6), (14, 7), (100, 20), (66, 11), (40, 8),
           (28, 4)]
METHODS = [("Stack", "push", "Add item to the top of the stack."),
           ("BankAccount", "deposit", "Add amount to the balance and return the new balance."),
           ("Inventory", "remove_item", "Remove one unit of name; raise KeyError if it is missing."),
           ("Timer", "elapsed", "Return the seconds since the timer started."),
           ("Playlist", "shuffle", "Return the songs in a random order."),
           ("Grid", "neighbours", "Return the cells next to (row, col) inside the grid."),
           ("Library", "checkout", "Mark the book as borrowed by member."),
           ("Temperature", "to_kelvin", "Return the temperature in kelvin."),
           ("ShoppingCart", "total", "Return the price of every item in the cart, added up."),
           ("Matrix", "transpose", "Return a new matrix with rows and columns swapped.")]
TABLES = ["customers", "orders", "employees", "books", "students", "products", "flights", "invoices"]

VARIED_GENRES = {
    "diary": [("Dear diary,\nToday I {diary}, and", "diary"),
              ("{day} night. I still can't believe I {diary}.", "diary"),
              ("Journal entry\n\nThis morning I {diary}. It", "diary")],
    "speech": [("Good evening, everyone, and thank you for coming tonight to celebrate {occasion}.", "occasion"),
               ("Friends and neighbours, we are gathered here today for {occasion}. When I", "occasion")],
    "biography": [("{person} grew up in {town} and became a famous {role}. As a child,", "person", "town", "role"),
                  ("Early life\n\n{person}, the {role}, grew up in {town}, where", "person", "role", "town")],
    "travel": [("A weekend in {town}\n\nIf you only have two days in {town}, start", "town"),
               ("{town} is a city best explored on foot. Begin your walk at", "town"),
               ("Travel tips for {town}: when to go, where to stay and what to eat.\n\n", "town")],
    "explainer": [("Have you ever wondered how {subject} works? Let's find out!", "subject"),
                  ("{subject_title}, explained for kids.\n\n", "subject"),
                  ("Here is a simple explanation of {subject}. Imagine", "subject")],
    "opinion": [("Opinion: Why {opinion}\n\nFor years,", "opinion"), ("I believe {opinion}. Here is why.", "opinion"),
                ("Some people say {opinion}. I disagree, because", "opinion")],
    "sports": [("{a} beat {b} on {day} night in a match that", "sports"),
               ("Match report: {a} against {b}\n\nThe first half", "sports")],
    "faq": [("Frequently asked questions\n\nQ: {query}\nA:", "query"),
            ("Customer help centre\n\n{query}\n\n", "query")],
    "message": [("Hey! Just wanted to tell you about {item}.", "item"),
                ("Hi all,\n\nQuick update about {item}:", "item"),
                ("Note to self: things to remember before {item}.\n", "item")],
    "history": [("In the year 1850, {subject} changed forever when", "subject"),
                ("The story of {subject} is older than most people think. Long before", "subject")],
    "essay": [("Essay: {subject_title}\n\nIntroduction\n\n", "subject"),
              ("In this essay I will explain the importance of {subject}. First,", "subject")],
    "narrative": [("I was twelve when I first saw {subject}. My father", "subject"),
                  ("The day I {diary}, everything went wrong. It started when", "diary")],
    "definition": [("Glossary\n\n{subject_title}: ", "subject"),
                   ("What is meant by {subject}? In short, it", "subject")],
    "interview": [("{a}: Welcome to the show. {remark_title}\n{b}:", "speakers", "remark"),
                  ("{a}: {remark_title}\n{b}: Oh, really?\n{a}:", "speakers", "remark")],
    "checklist": [("Everything you need for {item}:\n-", "item"), ("My plan for {item}\n1.", "item"),
                  ("Top tips for {item}:\n1.", "item")],
    "word problem": [("Tom has {x} stickers and gives the same number to each of {y} friends. How many does each "
                      "friend get?\n", "amounts"),
                     ("A baker makes {x} rolls and packs them in bags of {y}. How many bags does she fill?\nAnswer:",
                      "amounts"),
                     ("If {y} notebooks cost {x} dollars, how much does one notebook cost?\nSolution:", "amounts")],
    "class code": [("class {cls}:\n    def {method}(self):\n        \"\"\"{doc}\"\"\"\n", "method"),
                   ("# {doc}\nclass {cls}:\n    def __init__(self):\n", "method")],
    "sql": [("-- List every row of {table} created this month\nSELECT", "table"),
            ("-- How many {table} are there per country?\nSELECT country,", "table")],
}
VARIED_FILLERS = {"diary": DIARY, "occasion": OCCASIONS, "person": PERSONS, "role": ROLES, "town": TOWNS,
                  "subject": SUBJECTS, "opinion": OPINIONS, "sports": SPORTS, "query": QUERIES, "item": ITEMS,
                  "speakers": SPEAKERS, "remark": REMARKS, "amounts": AMOUNTS, "method": METHODS, "table": TABLES}
VARIED_PER_GENRE = 64
SOURCES = {"composed": (GENRES, FILLERS, None), "varied": (VARIED_GENRES, VARIED_FILLERS, VARIED_PER_GENRE)}


def composed_by_genre(source: str = "composed", capped: bool = True) -> dict:
    """{genre: [prompt, ...]} of one source ("composed" or "varied"): every template with every combination of its
    fillers, in a fixed pseudo-random order (by hash, so adding a filler does not reorder the rest); a "varied"
    genre keeps its first ``VARIED_PER_GENRE`` unless not ``capped``."""
    genres, fillers, cap = SOURCES[source]
    out = {}
    for genre, templates in genres.items():
        prompts = set()
        for template, *slots in templates:
            for values in itertools.product(*(fillers[s] for s in slots)):
                prompts.add(_fill(template, tuple(slots), values))
        out[genre] = sorted(prompts, key=_order)[: cap if capped else None]
    return out


def composed_prompts(limit: int | None = None, source: str = "composed") -> list:
    """One source's prompts, genres interleaved (one of each in turn), the first ``limit`` of them."""
    by_genre = composed_by_genre(source)
    mixed = []
    for i in range(max(map(len, by_genre.values()))):
        mixed += [prompts[i] for prompts in by_genre.values() if i < len(prompts)]
    return mixed[:limit] if limit else mixed


def varied_prompts(limit: int | None = None) -> list:
    """The second composed source (other genres, registers and topics than ``composed_prompts``)."""
    return composed_prompts(limit, source="varied")


def varied_rest_prompts(per_genre: int = 24) -> list:
    """The "varied" genres' prompts past the ``VARIED_PER_GENRE`` that training takes (the same templates with
    other fillers), up to ``per_genre`` of each, genre by genre: responses to them are text a drafter trained on
    every composed prompt never saw (``slimspec-train data --prompts varied-rest``, for ``slimspec-train
    tree-scale``); never a reference recipe's source."""
    return [p for prompts in composed_by_genre("varied", capped=False).values()
            for p in prompts[VARIED_PER_GENRE : VARIED_PER_GENRE + per_genre]]


def composition(prompts: list) -> dict:
    """{genre: count} of composed ``prompts`` of either source (what the data holds, for the model card and
    reports); a prompt of neither source counts as "other"."""
    genre_of = {p: g for source in SOURCES for g, ps in composed_by_genre(source, capped=False).items() for p in ps}
    counts = {}
    for p in prompts:
        g = genre_of.get(p, "other")
        counts[g] = counts.get(g, 0) + 1
    return counts
