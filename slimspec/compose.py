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

from .prompts import interleaved

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
        if slot in ("people", "speakers", "sports", "pair"):
            fields["a"], fields["b"] = value
        elif slot == "method":
            fields["cls"], fields["method"], fields["doc"] = value
        elif slot == "function":
            fields["name"], fields["args"], fields["doc"] = value
            fields["name_title"] = "".join(part.title() for part in value[0].split("_"))
            fields["camel"] = value[0][:1] + fields["name_title"][1:]
        elif slot in ("numbers", "amounts", "number_pair"):
            fields["x"], fields["y"] = value
        else:
            fields[slot] = value
            fields[f"{slot}_title"] = value[:1].upper() + value[1:]
            fields[f"{slot}_a"] = ("an " if value[:1].lower() in "aeiou" else "a ") + value
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

# The third source, "everyday": what people type to a base model in a day (emails, forum posts, product pages,
# manuals, postcards, poems, notices, field notes, film and book reviews, short stories about ordinary people, ...),
# with filler pools of their own (names, jobs, objects, animals, hobbies, foods, places, research questions), far
# larger than the first two sources', so that its data brings new words and scenes rather than new templates alone.
NAMES = ["Priya", "Marcus", "Elena", "Tariq", "Chloe", "Jonas", "Aiko", "Samuel", "Fatima", "Lucas", "Nadia",
         "Owen", "Mei", "Gabriel", "Zara", "Hugo", "Isla", "Kofi", "Rosa", "Ivan", "Lena", "Mateo", "Ruth", "Yusuf",
         "Clara", "Diego", "Freya", "Anil", "Beatrice", "Tomas"]
JOBS = ["bus driver", "florist", "software developer", "dentist", "librarian", "plumber", "journalist",
        "pharmacist", "carpenter", "flight attendant", "accountant", "gardener", "translator", "zookeeper",
        "firefighter", "photographer", "nurse practitioner", "marine biologist", "tailor", "park ranger",
        "data analyst", "barista", "electrician", "school principal", "veterinarian", "baker", "pilot",
        "museum curator", "social worker", "mechanic"]
OBJECTS = ["brass key", "old camera", "red umbrella", "handwritten map", "broken watch", "violin case",
           "jar of buttons", "paper boat", "leather notebook", "silver locket", "wooden box", "postcard from Rome",
           "pair of muddy boots", "telescope", "birthday card", "sealed envelope", "chipped teacup", "bicycle bell",
           "photograph of a stranger", "snow globe", "typewriter", "compass", "glass bottle", "library book",
           "kite with no string"]
ANIMALS = ["hedgehog", "otter", "giraffe", "octopus", "badger", "flamingo", "tortoise", "squirrel", "koala", "heron",
           "beaver", "camel", "dolphin", "raccoon", "peacock", "lynx", "frog", "panda", "seal", "crow", "goat",
           "bat", "moth", "polar bear", "salmon", "gecko", "robin", "elephant", "jellyfish", "wolf"]
FRIENDS = ["mole", "swan", "donkey", "hare", "owl chick", "duck", "lizard", "field mouse", "rabbit", "pony"]
THEMES = ["the history of umbrellas", "how bridges carry weight", "why leaves change colour", "the science of baking",
          "how vaccines are tested", "the origins of the alphabet", "how airplanes stay in the air",
          "the life of a honey farmer", "how recycling plants sort waste", "the invention of the bicycle chain",
          "how coral grows", "the chemistry of soap", "how submarines dive", "the history of the fork",
          "how rain forms", "the first public parks", "how magnets work", "the story of zero",
          "how the heart pumps blood", "why the sea is salty", "how cheese is made", "the history of football",
          "how trains switch tracks", "the discovery of penicillin", "how volcanoes form islands",
          "the economics of coffee", "how languages change", "the life cycle of a star", "how glass is blown",
          "the history of the calendar", "why cats sleep so much", "how earthquakes are measured",
          "the craft of bookbinding", "how solar cells make power", "the migration of monarch butterflies",
          "how tunnels are dug", "the history of chocolate", "how a bill becomes law", "how maps are made",
          "the role of fungi in forests"]
COUNTRIES = ["Portugal", "Kenya", "Japan", "Canada", "Peru", "Norway", "New Zealand", "Morocco", "Iceland",
             "Vietnam", "Chile", "Greece", "Scotland", "Mexico", "India", "Croatia", "Ghana", "Thailand",
             "Argentina", "Finland"]
HAPPENINGS = ["a water main burst under the high street", "the town council voted to build a skate park",
              "a rare white deer was spotted in the woods", "the local bakery celebrated its fiftieth year",
              "two students built a solar-powered boat", "the ferry service was cancelled because of high winds",
              "a time capsule from 1925 was opened", "the hospital opened a new children's ward",
              "a power failure left thousands without light", "the marathon raised money for the food bank",
              "a missing parrot was found three streets away", "the museum returned a stolen painting",
              "the school choir won a national prize", "a new cycle lane opened along the river",
              "the library extended its opening hours", "a sinkhole appeared in a supermarket car park"]
FOODS = ["shakshuka", "lemon drizzle cake", "miso soup", "stuffed peppers", "cornbread", "pad thai", "falafel",
         "blueberry scones", "chicken pot pie", "ratatouille", "peanut noodles", "cinnamon rolls", "minestrone",
         "fish pie", "guacamole", "sweet potato fries", "lamb kofta", "rice pudding", "gazpacho", "pesto pasta",
         "black bean chili", "cheese souffle", "coconut dal", "bread pudding", "tuna salad"]
GADGETS = ["a cordless drill", "a baby monitor", "a portable speaker", "a digital thermometer", "a label printer",
           "an air fryer", "a fitness tracker", "a home weather station", "a sewing machine", "a dashcam",
           "a water filter jug", "a video doorbell", "a tablet stand", "a heated blanket", "a bread maker",
           "a solar phone charger", "a kids' scooter", "a noise machine", "a garden hose reel", "a travel pillow"]
HOBBIES = ["birdwatching", "knitting", "rock climbing", "pottery", "sourdough baking", "chess", "calligraphy",
           "beekeeping", "kayaking", "watercolour painting", "woodworking", "amateur astronomy", "origami",
           "bouldering", "gardening on a balcony", "learning the ukulele", "trail running", "fly fishing",
           "home brewing", "stamp collecting", "urban sketching", "bread making", "film photography", "sailing",
           "foraging for mushrooms"]
QUESTIONS_RESEARCH = ["predicting river floods from rainfall records", "measuring noise in city parks",
                      "sorting handwritten digits", "estimating crop yields from satellite images",
                      "detecting leaks in water pipes", "reducing food waste in school canteens",
                      "compressing audio recordings", "forecasting electricity demand",
                      "tracking bird populations with microphones", "improving battery life in phones",
                      "translating between related languages", "planning bus routes in small towns",
                      "finding typos in source code", "counting trees from aerial photographs",
                      "recommending books to new readers", "scheduling nurses in hospitals"]
WORKS = ["The Glass Orchard", "A Winter in Lisbon", "The Last Cartographer", "Salt and Iron", "Nine Bright Lanterns",
         "The Quiet Engine", "Letters from the Valley", "The Clockmaker's Daughter", "North of Nowhere",
         "The Paper Garden", "Under a Copper Sky", "The Long Way Home", "Small Hours", "The Orange Door",
         "Echoes of the Reef", "A Map of Small Things"]
PAIRS = [("Sara", "Mike"), ("Receptionist", "Visitor"), ("Pharmacist", "Customer"), ("Coach", "Runner"),
         ("Landlord", "Tenant"), ("Mum", "Josh"), ("Driver", "Passenger"), ("Librarian", "Reader"),
         ("Chef", "Waiter"), ("Nina", "Omar"), ("Boss", "Assistant"), ("Vet", "Pet owner")]
LINES = ["I think someone took my parking space again.", "do you have this in a smaller size?",
         "the meeting has been moved to three o'clock.", "I can't find the charger anywhere.",
         "how long will the repairs take?", "there's a strange noise coming from the engine.",
         "we're out of coffee beans.", "could you explain the bill to me?", "I got the job!",
         "the cat knocked over the plant again.", "is it going to rain tomorrow?",
         "I need this by the end of the day.", "which platform does the train leave from?",
         "my internet has stopped working.", "can we split the cost of the gift?",
         "what should I bring to the party?"]
SUBJECT_LINES = ["Change of plans for Saturday", "Invoice for October", "Welcome to the team", "Quick question",
                 "Lost and found", "Reminder: library books due", "Your order has shipped", "Thank you!",
                 "Office move next week", "Minutes from today's call", "Holiday rota", "Fundraiser update"]
NOTICES = ["the swimming pool will be closed for cleaning", "the car park will be resurfaced",
           "the water will be turned off on Tuesday", "the lifts are out of service",
           "the school play has been moved to Friday", "bins will now be collected on Mondays",
           "the fire alarm will be tested this morning", "the staff kitchen must be kept tidy",
           "the garden will be sprayed against weeds", "the front entrance is closed for repairs"]
NUMBER_PAIRS = [(8, 40), (15, 60), (25, 200), (12, 150), (30, 90), (5, 75), (40, 250), (9, 27), (14, 56), (20, 80),
                (6, 48), (35, 140), (18, 72), (45, 300), (11, 99), (16, 64)]
FUNCTIONS_B = [("clamp", "value, low, high", "Keep value between low and high."),
               ("first_word", "sentence", "Return the first word of sentence."),
               ("sum_of_squares", "numbers", "Return the sum of the squares of numbers."),
               ("count_words", "text", "Return how many words are in text."),
               ("is_even", "n", "True if n is divisible by two."),
               ("initials", "full_name", "Return the initials of a full name, like 'A.B.'."),
               ("seconds_to_minutes", "seconds", "Convert seconds to a 'm:ss' string."),
               ("longest_word", "words", "Return the longest word in a list."),
               ("title_case", "text", "Capitalize the first letter of each word in text."),
               ("pairwise_sums", "values", "Return the sums of neighbouring values."),
               ("parse_date", "text", "Turn 'YYYY-MM-DD' into a (year, month, day) tuple."),
               ("mask_email", "email", "Hide all but the first letter of the name in an email address."),
               ("grade", "score", "Return 'A' to 'F' for a score from 0 to 100."),
               ("dedupe_sorted", "items", "Remove repeated neighbours from a sorted list."),
               ("max_gap", "numbers", "Return the largest difference between neighbouring numbers."),
               ("vowel_positions", "word", "Return the indexes of the vowels in word.")]

EVERYDAY_GENRES = {
    "short story": [("{name} found the {object} on the kitchen table the morning after", "name", "object"),
                    ("As {job_a}, {name} had seen many strange things, but nothing like the", "job", "name"),
                    ("Everyone at work knew that {name} kept {object_a} in the bottom drawer. Nobody knew why",
                     "name", "object")],
    "children's story": [("There once was a little {animal} who wanted more than anything to", "animal"),
                         ("The {animal} and the {animal2} were the best of friends, until the day", "animal",
                          "animal2"),
                         ("Every evening the young {animal} climbed to the top of the hill to", "animal")],
    "article": [("This article is about {theme}.\n\n", "theme"), ("Key facts: {theme}\n\nMost people", "theme"),
                ("A short introduction to {theme}.\n\nTo understand it, we", "theme")],
    "local news": [("{country} - Local news: {happening}, residents said on {day}.", "country", "happening"),
                   ("LATEST: {happening_title}. Witnesses told reporters that", "happening"),
                   ("Town gazette, {day} edition. This week {happening}, and", "happening")],
    "cover letter": [("To whoever reads this application,\n\nI have worked as {job_a} for six years, and", "job"),
                     ("Dear {name},\n\nPlease accept this letter as my application to join your team as {job_a}.",
                      "name", "job")],
    "email": [("Subject: {subject_line}\n\nHello {name},\n\n", "subject_line", "name"),
              ("From: {name}\nSubject: {subject_line}\n\nDear all,\n", "name", "subject_line")],
    "home cooking": [("How to make {food} at home\n\nYou will need:\n", "food"),
               ("My family's favourite {food} recipe. The secret is", "food"),
               ("{food_title}\nPrep time: 15 minutes\nCook time:", "food")],
    "product page": [("Product description: {gadget}.\n\nFeatures:\n-", "gadget"),
                     ("Meet {gadget} that finally does what it promises.", "gadget"),
                     ("Customer question about {gadget}: does it work without", "gadget")],
    "manual": [("User manual for {gadget}\n\n1. Safety instructions\n", "gadget"),
               ("Before you use {gadget} for the first time, please", "gadget")],
    "hobby guide": [("Getting started with {hobby}\n\n", "hobby"),
                    ("Everything I wish I had known when I started {hobby}:\n1.", "hobby"),
                    ("A complete beginner's introduction to {hobby}. The equipment you need is", "hobby")],
    "research abstract": [("Abstract\nBackground: {research_title} is hard because", "research"),
                          ("Summary. This thesis is about {research}. We collected", "research"),
                          ("We present a method for {research} that needs no", "research")],
    "book review": [("Book review: {work}\n\nI picked up {work} on a whim and", "work"),
                    ("{work} is the kind of novel that", "work"),
                    ("Film review: {work} (two hours, rated PG)\n\nThe film opens with", "work")],
    "postcard": [("Greetings from {country}! We arrived on {day} and", "country"),
                 ("Dear {name},\nThe weather in {country} is", "name", "country"),
                 ("Travel diary, day three in {country}. This morning we", "country")],
    "field notes": [("Field notes: the {animal}.\nObserved near the river at dawn,", "animal"),
                    ("Did you know? The {animal} can", "animal"),
                    ("Animal facts for children: the {animal}\n\nWhere it lives:", "animal")],
    "poem": [("A poem about the {animal}\n\n", "animal"), ("Ode to {food}\n\n", "food"),
             ("A short poem for {job_a}\n\n", "job")],
    "notice": [("NOTICE TO ALL RESIDENTS\n\nPlease be aware that {notice}.", "notice"),
               ("Attention staff: from next week {notice}. This means", "notice")],
    "forum post": [("Has anyone tried {hobby}? I'm thinking of starting and", "hobby"),
                   ("Forum > Kitchen > Help with my {food}\n\nMy {food} always comes out", "food"),
                   ("Question for the group: is {gadget} worth the money? I", "gadget")],
    "conversation": [("{a}: {line_title}\n{b}:", "pair", "line"),
                     ("{a}: Morning!\n{b}: Morning. Listen, {line}\n{a}:", "pair", "line")],
    "lists": [("Ten facts about the {animal}:\n1.", "animal"), ("Best things to do in {country}:\n1.", "country"),
              ("Shopping list for {food}:\n-", "food"), ("Pros and cons of {hobby}\nPros:\n-", "hobby")],
    "sums": [("What is {x} percent of {y}? First,", "number_pair"),
             ("A garden is {x} m long and {y} m wide. Its area is", "number_pair"),
             ("{name} saves {x} dollars a week. How many weeks until {name} has {y} dollars?\nSolution:", "name",
              "number_pair"),
             ("Write {x}/{y} in its simplest form.\n", "number_pair")],
    "functions": [("def {name}({args}):\n    # {doc}\n", "function"),
                  ("def {name}({args}):\n    \"\"\"{doc}\n\n    >>> {name}(", "function"),
                  ("// {doc}\nfunction {camel}({args}) {{\n", "function")],
}
EVERYDAY_FILLERS = {"name": NAMES, "job": JOBS, "object": OBJECTS, "animal": ANIMALS, "animal2": FRIENDS,
                    "theme": THEMES, "country": COUNTRIES, "happening": HAPPENINGS, "food": FOODS,
                    "gadget": GADGETS, "hobby": HOBBIES, "research": QUESTIONS_RESEARCH, "work": WORKS,
                    "pair": PAIRS, "line": LINES, "subject_line": SUBJECT_LINES, "notice": NOTICES,
                    "number_pair": NUMBER_PAIRS, "function": FUNCTIONS_B}
EVERYDAY_PER_GENRE = 150
SOURCES = {"composed": (GENRES, FILLERS, None), "varied": (VARIED_GENRES, VARIED_FILLERS, VARIED_PER_GENRE),
           "everyday": (EVERYDAY_GENRES, EVERYDAY_FILLERS, EVERYDAY_PER_GENRE)}


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
    mixed = interleaved(by_genre.values())
    return mixed[:limit] if limit else mixed


def varied_prompts(limit: int | None = None) -> list:
    """The second composed source (other genres, registers and topics than ``composed_prompts``)."""
    return composed_prompts(limit, source="varied")


def everyday_prompts(limit: int | None = None) -> list:
    """The third composed source (emails, forum posts, product pages, postcards, ... with filler pools of its own)."""
    return composed_prompts(limit, source="everyday")


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
