"""The balanced held-out prompt set: what drafters are judged on, by category.

Written for this purpose and never used for training: none of it comes from the offline training sources (the
standard library, its docs, package descriptions, HumanEval), and ``tests/test_prompts.py`` checks that no
held-out prompt appears in them. The target is a base model, so every prompt is an opening to be continued.
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

CATEGORIES = tuple(HELD_OUT)


def held_out_prompts(per_category: int | None = None) -> list:
    """[(category, prompt)] in a fixed order, categories interleaved; ``per_category`` takes the first n of each."""
    n = per_category or max(len(v) for v in HELD_OUT.values())
    out = []
    for i in range(n):
        out += [(c, HELD_OUT[c][i]) for c in CATEGORIES if i < len(HELD_OUT[c])]
    return out
