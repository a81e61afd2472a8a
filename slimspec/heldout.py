"""The balanced held-out prompt sets: what drafters are judged on, by category.

Written for this purpose and never used for training: none of it comes from the offline training sources (the
standard library, its docs, package descriptions, HumanEval) or the composed training prompts, and
``tests/test_prompts.py`` checks that no held-out prompt shares a run of words with them. The target is a base
model, so every prompt is an opening to be continued.

``HELD_OUT`` ("a", the first set) is written as openings of finished texts; ``HELD_OUT_B`` ("b") was written
later, apart from it and in another style: the short, plain openings a user types to a small base model (a fairy
tale, a recipe, a cover letter, a schoolbook sentence, a to-do list, a chat line). Reports give both side by side,
so that a gain on one and not the other shows fit, not generalization.
"""

from __future__ import annotations

HELD_OUT = {
    "prose": [
        "The lighthouse keeper had not seen a ship in eleven days when the fog finally lifted, and what he saw",
        "Cities that grew up around rivers share a peculiar rhythm. In the morning, barges",
        "My grandmother kept her recipes in a tin box with a dented lid. Every card was written in",
        "The history of the bicycle is a story of small improvements. The first machines had no pedals at all;",
        "When the power went out across the valley, the people of the town did something unexpected:",
        "Autumn arrives in the mountains long before it reaches the coast. By the end of August the birches",
        "The museum's newest exhibit opened on a rainy Tuesday, and by noon the line stretched",
        "Good bread needs only four ingredients, but the baker's real tools are time and",
    ],
    "code": [
        "def moving_average(values, window):\n    \"\"\"Return the simple moving average of values over window.\"\"\"\n",
        "import json\n\n\ndef load_settings(path):\n    \"\"\"Read a JSON settings file and fill in defaults.\"\"\"\n    with open(path) as f:\n",
        "class Stack:\n    \"\"\"A last-in, first-out stack backed by a list.\"\"\"\n\n    def __init__(self):\n",
        "def is_palindrome(text: str) -> bool:\n    \"\"\"True if text reads the same forwards and backwards, ignoring case and spaces.\"\"\"\n",
        "# Count how often each word appears in a file\nfrom collections import Counter\n\n\ndef word_counts(path):\n",
        "function debounce(fn, delay) {\n  // Call fn only after delay ms have passed without another call\n",
        "SELECT customers.name, COUNT(orders.id) AS order_count\nFROM customers\n",
        "def binary_search(items, target):\n    \"\"\"Return the index of target in the sorted list items, or -1.\"\"\"\n    lo, hi = 0, len(items) - 1\n",
    ],
    "math": [
        "To solve 3x + 7 = 22, first subtract 7 from both sides to get",
        "The area of a circle with radius 5 is computed as follows: A = pi * r^2 =",
        "Problem: A train travels 180 kilometres in 2.5 hours. What is its average speed?\nSolution:",
        "The derivative of f(x) = x^3 - 4x^2 + 2x is found term by term:",
        "Prove that the sum of two even numbers is even.\nProof: Let a = 2m and b = 2n for integers m and n. Then",
        "Compound interest: if 1,000 dollars is invested at 5% per year for 3 years, the balance is",
        "The first ten prime numbers are 2, 3, 5, 7,",
        "A rectangle has a perimeter of 30 cm and a length of 9 cm. To find its width,",
    ],
    "lists": [
        "Packing list for a weekend camping trip:\n1. Tent\n2. Sleeping bag\n3.",
        "Ten tips for better sleep:\n- Go to bed at the same time every night\n-",
        "The planets of the solar system, in order from the Sun:\n1. Mercury\n2.",
        "Ingredients for a simple tomato soup:\n- 1 kg ripe tomatoes\n- 1 onion\n-",
        "Steps to change a flat tyre:\n1. Park on flat ground and switch on the hazard lights.\n2.",
        "Common HTTP status codes:\n- 200 OK\n- 301 Moved Permanently\n-",
        "Days of the week in French:\nMonday - lundi\nTuesday - mardi\n",
        "Things to check before submitting a pull request:\n* The tests pass locally\n*",
    ],
    "dialogue": [
        "Customer: Hi, I ordered a blue jacket last week but received a green one.\nAgent:",
        "Teacher: Who can tell me why the sky looks blue?\nStudent:",
        "Alice: Are you coming to the concert on Friday?\nBob: I'd love to, but",
        "Interviewer: What made you decide to become a nurse?\nCandidate:",
        "User: How do I reverse a list in Python?\nAssistant:",
        "Doctor: How long have you had the headaches?\nPatient:",
        "Q: What is the capital of Australia?\nA: Canberra.\nQ: What is the largest ocean?\nA:",
        "Tom: I think we're lost.\nMaria: We can't be lost, we've been following",
    ],
    "other": [
        "Dear Ms. Alvarez,\n\nThank you for your letter of 3 March. I am writing to",
        "| Country | Capital | Population (millions) |\n|---|---|---|\n| France | Paris | 68 |\n|",
        "<html>\n<head>\n  <title>My first page</title>\n</head>\n<body>\n",
        "Meeting notes, 14 May\nAttendees: Priya, Jonas, Lee\nAgenda:\n",
        "Roses are red,\nViolets are blue,\n",
        "WARNING: Do not operate this device near water. To reduce the risk of fire or electric shock,",
        "{\n  \"name\": \"weather-station\",\n  \"version\": \"1.2.0\",\n  \"dependencies\": {\n",
        "Abstract. We study the problem of scheduling jobs on parallel machines and show that",
    ],
}

HELD_OUT_B = {
    "prose": [
        "Once upon a time there was a little fox who lived at the edge of a great forest. Every morning he",
        "How to make banana bread: Preheat the oven to 180 degrees and grease a loaf tin. In a large bowl,",
        "Dear Hiring Manager,\n\nI am excited to apply for the junior data analyst position at your company. In my "
        "last job",
        "The Amazon rainforest is the largest tropical rainforest in the world, covering much of",
        "It was the last day of summer, and the whole town had gathered at the harbour to watch",
        "My name is Sam and I have been learning to play the guitar for two years. The hardest part",
        "Photosynthesis is the process by which green plants use sunlight to",
        "The old train station had been closed for decades, but one night in November a light",
    ],
    "code": [
        "# Python function that checks whether a number is prime\ndef is_prime(n):\n",
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
        "// JavaScript: add up the numbers in an array\nfunction sum(numbers) {\n",
        "import csv\n\nwith open(\"data.csv\") as f:\n    reader = csv.DictReader(f)\n",
        "class Counter:\n    def __init__(self):\n        self.count = 0\n\n    def increment(self):\n",
        "#include <stdio.h>\n\nint main(void) {\n",
        "def reverse_words(sentence):\n    # split the sentence into words and join them in reverse order\n",
        "SELECT name, email FROM users WHERE",
    ],
    "math": [
        "What is 15% of 240? To find 15% of a number, multiply it by",
        "Solve for x: 2x - 5 = 11.\nStep 1: Add 5 to both sides:",
        "A box holds 4 red balls and 6 blue balls. If one ball is drawn at random, the probability that it is red is",
        "The angles of a triangle add up to 180 degrees. If two of them are 50 and 60 degrees, the third one is",
        "Convert 3/8 to a decimal: 3 divided by 8 equals",
        "In a right triangle a^2 + b^2 = c^2. If a = 6 and b = 8, then c =",
        "Simplify the expression 3(x + 4) - 2x:",
        "A car uses 6 litres of fuel per 100 km. How much fuel does it need for a 350 km trip? Answer:",
    ],
    "lists": [
        "My to-do list for Saturday:\n1. Clean the kitchen\n2.",
        "Top 5 books everyone should read:\n1.",
        "What you need to start a vegetable garden:\n-",
        "Reasons to learn a second language:\n1. It helps you travel\n2.",
        "Shopping list:\n- milk\n- eggs\n-",
        "Five fun facts about octopuses:\n1.",
        "Checklist before a long drive:\n[ ] Check the tyre pressure\n[ ]",
        "The seven continents are:\n1. Africa\n2.",
    ],
    "dialogue": [
        "A: Hey, do you know a good place to eat around here?\nB:",
        "Mom: Did you finish your homework?\nKid:",
        "Person 1: I can't believe it's already December.\nPerson 2:",
        "Waiter: Good evening, are you ready to order?\nGuest:",
        "Q: Why do cats purr?\nA:",
        "John: The printer is broken again.\nSarah: Did you try",
        "Coach: Great game today. What do you think we could do better?\nPlayer:",
        "Me: Can you recommend a movie for tonight?\nFriend:",
    ],
    "other": [
        "BREAKING NEWS: Heavy rain flooded several parts of the city on Monday, and officials",
        "In this paper, we propose a simple method for",
        "Product review: I bought these headphones a month ago and",
        "Step-by-step guide to setting up a new laptop:\nStep 1:",
        "Haiku about the sea:\n",
        "Subject: Team lunch on Friday\n\nHi everyone,\n\n",
        "Weather forecast for tomorrow: sunny in the morning, with clouds",
        "Chapter 1\n\nThe storm had been raging for three days when",
    ],
}

HELD_OUT_SETS = {"a": HELD_OUT, "b": HELD_OUT_B}
CATEGORIES = tuple(HELD_OUT)


def held_out_prompts(per_category: int | None = None, held_out: str = "a") -> list:
    """[(category, prompt)] of one held-out set ("a" or "b") in a fixed order, categories interleaved;
    ``per_category`` takes the first n of each."""
    prompts = HELD_OUT_SETS[held_out]
    n = per_category or max(len(v) for v in prompts.values())
    out = []
    for i in range(n):
        out += [(c, prompts[c][i]) for c in CATEGORIES if i < len(prompts[c])]
    return out
