"""Seeded simulator of a review platform: advseq's bundled ``demo`` dataset.

Users review items (the contexts); malicious accounts promote a sponsored brand or attack
its competitors, in bursts, while benign users follow their own interests. Every text is
generated from the template grammar below: no real people and no third-party text.
:func:`dataset_card` documents the mechanisms, parameters and caveats.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from advseq.audit import shortcut_audit
from advseq.errors import ConfigError
from advseq.schema import BENIGN, MALICIOUS, Dataset, Post, User

# ---------------------------------------------------------------------------------------
# Parameters. The card prints these values, so they are the single source of truth.
# ---------------------------------------------------------------------------------------

#: posting window: users start between 2019-01-01 and 2023-01-01 (UTC)
START_MIN, START_MAX = 1546300800, 1672531200
#: mean words per post is drawn per user from this range, the same for both classes
POST_WORDS_MEAN = (9.0, 22.0)
POST_WORDS_BOUNDS = (8, 40)
#: malicious account kinds and their shares among malicious users
MALICIOUS_KINDS = {"promoter": 0.40, "attacker": 0.30, "sleeper": 0.30}
#: per-user share of posts about the target items (sponsor's or its competitors')
TARGET_FOCUS = {"promoter": (0.4, 0.75), "attacker": (0.35, 0.65), "sleeper": (0.2, 0.4)}
#: per-user share of posts with a promotional or abusive sentence
SPAM_RATE = {"promoter": (0.3, 0.6), "attacker": (0.3, 0.6), "sleeper": (0.05, 0.15)}
#: per-user share of positive posts (the rest is half mixed, half negative)
POSITIVITY = (0.45, 0.9)
#: probability that a malicious user's interests include the sponsor's category
SPONSOR_IN_INTERESTS = 0.6
#: malicious users' superlative rate on their sponsor's own items
HYPE_RATE = 0.3
#: probability that a sponsor is one of the few "shill-prone" brands of its category
SPONSOR_FROM_SHILL_PRONE = 0.75
#: every user's per-post rate of superlatives ("best ... i have ever owned")
SUPERLATIVE_RATE = (0.03, 0.10)
#: every user's per-post rate of mentioning a sale or a store
DEAL_RATE = (0.0, 0.06)
#: share of benign users loyal to one brand, and how often they pick it
BENIGN_FAN_SHARE = 0.3
FAN_FOCUS = (0.3, 0.7)
#: probability that a user's interests drift once (one favourite category is replaced)
DRIFT_PROB = 0.4
#: probability of a random category outside the user's interests
EXPLORE_PROB = 0.08
#: probability of returning to an item reviewed before (besides the final item)
RETURN_PROB = (0.03, 0.15)
#: target share of non-final posts about the final post's item
RELEVANT_SHARE = {"benign": (0.1, 0.5), "malicious": (0.15, 0.55)}
#: probability that those posts form one block just before the final post
RELEVANT_BLOCK_PROB = 0.75
#: timing: P(next post in the same session); session gaps (minutes); other gaps (days)
BURST_PROB = {"benign": (0.05, 0.5), "promoter": (0.15, 0.65), "attacker": (0.15, 0.65),
              "sleeper": (0.05, 0.5)}
SESSION_GAP_MIN = {"benign": (10.0, 120.0), "malicious": (3.0, 60.0)}
OTHER_GAP_DAYS = {"benign": (2.0, 14.0), "malicious": (1.0, 12.0)}


# ---------------------------------------------------------------------------------------
# The platform: categories, brands, items.
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Category:
    key: str
    noun: str  # as in "best {noun} i have ever {owned}"
    group: str  # "product" | "book" | "place": selects templates that read naturally
    use_it: str  # "i mostly {use_it} {usage}"
    using: str  # "been {using} the X"
    owned: str
    acquire: tuple[str, ...]
    aspects: tuple[str, ...]
    usage: tuple[str, ...]
    kinds: tuple[str, ...]
    features: tuple[str, ...]
    audience: tuple[str, ...]
    brands: tuple[str, ...]
    models: tuple[str, ...]
    price: tuple[int, int]


_BUY = ("bought", "picked up", "ordered", "got")

_CATEGORIES: tuple[_Category, ...] = (
    _Category(
        "headphones", "headphones", "product", "wear them", "using", "owned", _BUY,
        ("sound", "bass", "noise cancelling", "battery life", "fit", "comfort", "build quality",
         "bluetooth connection", "microphone", "carrying case", "companion app", "ear cushions",
         "touch controls", "latency", "volume limiter", "cable"),
        ("on my commute", "at the gym", "while working from home", "on long flights",
         "for gaming", "on late night walks", "at the office", "while cooking"),
        ("pair of wireless over-ear headphones", "pair of true wireless earbuds",
         "pair of wired studio headphones", "pair of noise cancelling headphones",
         "pair of sport earbuds", "pair of on-ear headphones"),
        ("active noise cancelling", "a 30-hour battery", "memory foam ear cushions",
         "multipoint bluetooth", "a foldable frame", "a detachable cable", "a transparency mode",
         "an equalizer app", "fast charging over usb-c", "sweat resistant housings"),
        ("commuters", "frequent travellers", "gym goers", "home studio musicians", "gamers",
         "students on a budget"),
        ("sonora", "veltrix", "auralis", "hushwave", "bassline"),
        ("air", "studio", "pulse", "arc", "halo", "echo", "drift", "nova", "quiet", "tempo"),
        (30, 350)),
    _Category(
        "coffee makers", "coffee maker", "product", "use it", "using", "owned", _BUY,
        ("brew temperature", "carafe", "water tank", "grinder", "milk frother", "taste",
         "cleaning routine", "timer", "brew speed", "drip tray", "noise level", "button layout",
         "steam pressure", "crema", "descaling alert", "warming plate"),
        ("every morning before work", "on weekends", "for the whole office", "when guests come over",
         "for iced coffee", "in my tiny kitchen", "on busy weekdays", "for late night study sessions"),
        ("drip coffee maker", "single serve pod machine", "espresso machine", "pour over brewer",
         "cold brew maker", "bean to cup machine"),
        ("a built-in burr grinder", "a 12 cup thermal carafe", "a programmable timer",
         "a steam wand for milk", "a removable water tank", "an auto shut-off",
         "adjustable brew strength", "a reusable mesh filter", "a 15 bar pump", "a keep warm plate"),
        ("busy households", "espresso beginners", "small offices", "home baristas",
         "people with small kitchens", "cold brew fans"),
        ("brewmont", "kaffeo", "dripwell", "beanforge", "ristrello"),
        ("classic", "barista", "morning", "duo", "express", "crema", "pour", "cafe", "steam", "daily"),
        (25, 600)),
    _Category(
        "novels", "novel", "book", "read it", "reading", "read",
        ("read", "finished", "picked up", "borrowed"),
        ("plot", "pacing", "ending", "main character", "dialogue", "world building", "prose",
         "twist", "side characters", "first chapter", "audiobook narration", "cover art", "villain",
         "chapter length", "romance subplot", "translation"),
        ("on the train", "before bed", "on vacation", "in one weekend", "during my lunch breaks",
         "for my book club", "on a rainy sunday", "over a few nights"),
        ("literary mystery", "fantasy novel", "science fiction novel", "historical romance",
         "psychological thriller", "coming of age story"),
        ("a detective who cannot remember her past", "two sisters running a failing orchard",
         "a city that floats above the sea", "a heist that goes wrong",
         "a letter that arrives fifty years late", "a lighthouse keeper and a stranger",
         "a family secret buried in a lake town", "a rebellion on a mining moon",
         "a chef who loses her sense of taste", "a war seen through the eyes of a child"),
        ("fans of slow burn mysteries", "readers who like big worlds", "book clubs",
         "young adult readers", "fans of the author's debut", "fans of twisty thrillers"),
        ("mara quill", "tobias wren", "elena marsh", "priya vell", "jonah kessler"),
        ("salt", "glass", "winter", "paper", "hollow", "silver", "quiet", "northern", "burning",
         "drowned"),
        (8, 30)),
    _Category(
        "hiking boots", "hiking boots", "product", "wear them", "wearing", "owned", _BUY,
        ("ankle support", "grip", "waterproofing", "break-in period", "sole", "laces", "toe box",
         "weight", "breathability", "insole", "stitching", "sizing", "heel lock", "tread depth",
         "tongue padding", "eyelets"),
        ("on rocky trails", "for weekend day hikes", "on a week long trek", "in the rain",
         "on muddy forest paths", "for winter walks", "on my dog walks", "in the mountains"),
        ("pair of mid-cut hiking boots", "pair of lightweight trail boots",
         "pair of leather backpacking boots", "pair of waterproof walking boots",
         "pair of winter hiking boots"),
        ("a waterproof membrane", "a sticky rubber outsole", "a padded collar",
         "a reinforced toe cap", "full grain leather uppers", "a removable cushioned insole",
         "speed lacing hooks", "a wide toe box", "a lightweight midsole", "a gusseted tongue"),
        ("weekend hikers", "thru-hikers", "people with wide feet", "winter walkers",
         "beginners", "trail runners who want more support"),
        ("trailhawk", "granitek", "fjellmark", "mossback", "summitra"),
        ("ridge", "summit", "trek", "alpine", "scout", "canyon", "tundra", "pathfinder",
         "granite", "boulder"),
        (60, 320)),
    _Category(
        "phones", "phone", "product", "use it", "using", "owned", _BUY,
        ("battery life", "camera", "screen", "charging speed", "speaker", "software updates",
         "face unlock", "fingerprint reader", "performance", "storage", "signal", "build quality",
         "haptics", "bloatware", "refresh rate", "charging port"),
        ("for work calls", "for photos on trips", "for gaming", "all day long",
         "mostly for social media", "as my only device", "for navigation", "for streaming shows"),
        ("mid-range android phone", "flagship smartphone", "budget smartphone", "compact phone",
         "foldable phone", "rugged phone"),
        ("a 6.5 inch oled screen", "a triple camera setup", "a 5000 mah battery",
         "65 watt fast charging", "wireless charging", "an ip68 rating", "a 120 hz display",
         "stereo speakers", "a headphone jack", "five years of updates"),
        ("mobile gamers", "photography fans", "people on a budget", "business users",
         "people who want a small phone", "outdoor workers"),
        ("nexora", "lumifon", "orbix", "zentel", "kivo"),
        ("one", "edge", "neo", "prime", "flex", "zoom", "max", "core", "lite", "ultra"),
        (120, 1200)),
    _Category(
        "laptops", "laptop", "product", "use it", "using", "owned", _BUY,
        ("keyboard", "trackpad", "battery life", "screen", "fan noise", "webcam", "speakers",
         "build quality", "performance", "port selection", "hinge", "weight", "touchscreen",
         "thermals", "charger", "startup time"),
        ("for school", "for video editing", "for office work", "on the couch", "for coding",
         "while travelling", "for light gaming", "for online classes"),
        ("thin and light laptop", "gaming laptop", "2-in-1 convertible laptop", "budget laptop",
         "workstation laptop", "student laptop"),
        ("a 14 inch matte display", "16 gb of memory", "a backlit keyboard",
         "a fingerprint reader", "two usb-c ports", "a 1 tb ssd", "a 1080p webcam",
         "a 12-hour battery", "a dedicated graphics card", "an aluminium chassis"),
        ("students", "remote workers", "gamers", "creative professionals", "developers",
         "people who travel a lot"),
        ("cortexa", "vantix", "aeropad", "slatewise", "quillbook"),
        ("air", "pro", "book", "studio", "edge", "flex", "go", "carbon", "vision", "spark"),
        (300, 2500)),
    _Category(
        "board games", "board game", "product", "play it", "playing", "played", _BUY,
        ("rulebook", "artwork", "components", "replay value", "setup time", "player interaction",
         "box insert", "learning curve", "theme", "game length", "card quality", "solo mode",
         "score pad", "miniatures", "turn order", "endgame"),
        ("with my family", "on game nights", "with two players", "with the kids", "at parties",
         "with my partner", "at our local club", "on holidays"),
        ("cooperative board game", "strategy board game", "party game", "deck building game",
         "family board game", "worker placement game"),
        ("200 illustrated cards", "a modular board", "a solo mode", "wooden pieces",
         "a 45 minute play time", "support for up to six players", "hidden roles",
         "a campaign mode", "custom dice", "a compact box"),
        ("families", "strategy fans", "party groups", "couples", "new players", "solo gamers"),
        ("dicewright", "meeplecraft", "rookery", "tabletide", "oakhollow"),
        ("harvest", "kingdoms", "voyage", "cascade", "lanterns", "outpost", "frontier",
         "orchard", "expedition", "realms"),
        (20, 120)),
    _Category(
        "skincare", "skincare product", "product", "use it", "using", "used", _BUY,
        ("texture", "scent", "packaging", "absorption", "hydration", "ingredient list", "pump",
         "results", "price per bottle", "finish", "feel on sensitive skin", "consistency",
         "shelf life", "dropper", "jar", "tingle"),
        ("every morning", "before bed", "after the gym", "in winter", "under makeup",
         "on my dry patches", "twice a day", "after shaving"),
        ("daily moisturizer", "vitamin c serum", "gentle cleanser", "night cream",
         "sunscreen lotion", "hydrating toner"),
        ("hyaluronic acid", "niacinamide", "a fragrance free formula", "spf 30", "ceramides",
         "a lightweight gel formula", "aloe extract", "an airless pump bottle",
         "a recyclable tube", "shea butter"),
        ("people with dry skin", "people with oily skin", "people with sensitive skin",
         "people with combination skin", "skincare beginners", "anyone who wants a simple routine"),
        ("dewleaf", "velvena", "aquabloom", "skinsmith", "clarette"),
        ("hydra", "glow", "calm", "daily", "renew", "pure", "barrier", "bright", "soft", "night"),
        (8, 90)),
    _Category(
        "running shoes", "running shoes", "product", "run in them", "running in", "owned", _BUY,
        ("cushioning", "heel drop", "grip", "upper", "fit", "durability", "weight",
         "arch support", "toe box", "laces", "responsiveness", "breathability", "heel counter",
         "tongue", "outsole rubber", "ankle collar"),
        ("for easy runs", "on the treadmill", "for my first half marathon", "on trails",
         "for tempo runs", "in the rain", "for daily training", "on the track"),
        ("pair of neutral road running shoes", "pair of stability running shoes",
         "pair of trail running shoes", "pair of carbon racing shoes",
         "pair of cushioned daily trainers"),
        ("a foam midsole", "an 8 mm heel drop", "a breathable mesh upper", "a carbon plate",
         "reflective details", "a rock plate", "a rocker geometry", "a gusseted tongue",
         "a durable rubber outsole", "a wide fit option"),
        ("new runners", "marathon runners", "trail runners", "heavier runners",
         "people with flat feet", "speed lovers"),
        ("stridon", "paceline", "swiftfoot", "kinetra", "aerostep"),
        ("glide", "rush", "cloud", "sprint", "tempo", "flow", "boost", "trail", "dash", "pacer"),
        (60, 250)),
    _Category(
        "cameras", "camera", "product", "shoot with it", "shooting with", "owned", _BUY,
        ("autofocus", "image quality", "low light performance", "battery life", "menu system",
         "grip", "viewfinder", "video quality", "stabilization", "kit lens", "flip screen",
         "weather sealing", "dynamic range", "shutter sound", "card door", "hot shoe"),
        ("on holidays", "for street photography", "at weddings", "for vlogging", "for wildlife",
         "at concerts", "for family photos", "on hikes"),
        ("mirrorless camera", "compact camera", "action camera", "entry level dslr",
         "instant camera", "vlogging camera"),
        ("a 24 megapixel sensor", "in-body stabilization", "4k video", "a flip screen",
         "eye tracking autofocus", "dual card slots", "a weather sealed body", "a 3x zoom lens",
         "built-in wifi", "a large grip"),
        ("beginners", "travel photographers", "vloggers", "hobbyists", "parents",
         "wildlife photographers"),
        ("optiva", "focali", "aperta", "pixora", "lumicraft"),
        ("m5", "z10", "one", "snap", "vista", "pro", "go", "mini", "x2", "frame"),
        (90, 2200)),
    _Category(
        "blenders", "blender", "product", "use it", "using", "owned", _BUY,
        ("motor", "jug", "blades", "noise level", "lid", "speed settings", "cleaning routine",
         "ice crushing", "base", "power cord", "pulse button", "travel cups", "tamper",
         "suction base", "jar markings", "timer"),
        ("for smoothies", "for soups", "every morning", "for protein shakes", "for baby food",
         "for frozen cocktails", "for nut butter", "after workouts"),
        ("countertop blender", "personal blender", "high speed blender", "immersion blender",
         "smoothie blender", "compact blender"),
        ("a 1200 watt motor", "a glass jug", "stainless steel blades", "five speed settings",
         "a pulse mode", "two travel cups", "a tamper", "a self cleaning program",
         "a bpa free jar", "a vacuum mode"),
        ("smoothie fans", "people with small kitchens", "families", "meal preppers", "students",
         "people who make soups"),
        ("vortexa", "whirlo", "pulverix", "frutto", "blendhaus"),
        ("pro", "mini", "power", "max", "go", "chef", "fresh", "turbo", "one", "prep"),
        (25, 500)),
    _Category(
        "restaurants", "restaurant", "place", "go there", "going to", "been to",
        ("went to", "tried", "had dinner at", "had lunch at"),
        ("food", "service", "portion sizes", "menu", "ambience", "wait time", "desserts",
         "cocktails", "prices", "staff", "music", "outdoor seating", "wine list", "bread basket",
         "table spacing", "parking"),
        ("for lunch on weekdays", "on date nights", "with my family", "for birthdays",
         "after work", "for brunch", "with coworkers", "on friday nights"),
        ("family run italian restaurant", "ramen bar", "vegan bistro", "steakhouse",
         "tapas restaurant", "brunch cafe", "seafood grill", "taco place"),
        ("an open kitchen", "a rooftop terrace", "a seasonal menu", "house made pasta",
         "a long cocktail list", "live music on weekends", "a kids menu", "vegan options",
         "a wood fired oven", "a quiet back room"),
        ("families", "couples on date nights", "large groups", "brunch lovers",
         "people on a budget", "food lovers"),
        ("casa lumo", "golden fork", "noodle theory", "ember and oak", "salty pier"),
        ("downtown", "riverside", "old town", "harbour", "midtown", "uptown", "station square",
         "market street", "west end", "university district"),
        (20, 140)),
)

_TITLE_NOUNS = ("orchard", "river", "lantern", "harbour", "crown", "garden", "tide", "letters",
                "keeper", "orchid", "mountain", "house", "sea", "season", "kingdom", "bridge")
_MODEL_SUFFIX = ("", "", " 2", " 3", " s", " plus", " lite", " x")
_ALL_BRANDS = tuple(b for c in _CATEGORIES for b in c.brands)


@dataclass(frozen=True)
class _Item:
    index: int
    cat: _Category
    brand: str
    name: str
    context: str
    price: int
    features: tuple[str, ...]  # the features its description names


@dataclass
class _Catalogue:
    items: list[_Item]
    by_cat: dict[str, list[_Item]]
    by_brand: dict[str, list[_Item]]
    popularity: dict[str, list[float]]  # per category, aligned with by_cat
    shill_prone: dict[str, list[str]]  # per category: brands that hire shills


def _describe(rng: random.Random, cat: _Category, brand: str, name: str,
              price: int) -> tuple[str, tuple[str, ...]]:
    """The item's description (its posts' context, 1-2 sentences of at most 30 words) and
    the features it names."""
    kind = rng.choice(cat.kinds)
    f1, f2 = rng.sample(cat.features, 2)
    aud = rng.choice(cat.audience)
    year = rng.randint(2014, 2022)
    article = "an" if kind[0] in "aeiou" else "a"
    if cat.group == "book":
        first = f"{name} is {article} {kind} by {brand} about {f1}."
        seconds = (f"it was published in {year} and is popular with {aud}.",
                   f"the author wrote it for {aud}.", f"a paperback costs about {price} dollars.")
        features: tuple[str, ...] = (f1,)
    elif cat.group == "place":
        first = f"{name} is {article} {kind} from the {brand} group with {f1} and {f2}."
        seconds = (f"popular with {aud}.", f"it opened in {year} and is popular with {aud}.",
                   f"a meal costs about {price} dollars.")
        features = (f1, f2)
    else:
        first = rng.choice((
            f"{name} is {article} {kind} from {brand} with {f1} and {f2}, aimed at {aud}.",
            f"the {name} is {article} {kind} by {brand} with {f1} and {f2}.",
        ))
        seconds = (f"it launched in {year} at about {price} dollars.",
                   f"it sells for around {price} dollars.", f"made for {aud}.")
        features = (f1, f2)
    second = rng.choice(seconds)
    if len(first.split()) + len(second.split()) <= 30:
        first = f"{first} {second}"
    return first, features


def _build_catalogue(seed: int) -> _Catalogue:
    rng = random.Random(f"advseq-demo:{seed}:catalogue")
    items: list[_Item] = []
    by_cat: dict[str, list[_Item]] = {}
    by_brand: dict[str, list[_Item]] = {}
    popularity: dict[str, list[float]] = {}
    shill_prone: dict[str, list[str]] = {}
    for cat in _CATEGORIES:
        cat_items: list[_Item] = []
        for brand in cat.brands:
            n_items = rng.randint(2, 4)
            for model in rng.sample(cat.models, n_items):
                if cat.group == "book":
                    name = f"{model} {rng.choice(_TITLE_NOUNS)}"
                    while any(i.name == name for i in cat_items):
                        name = f"{model} {rng.choice(_TITLE_NOUNS)}"
                elif cat.group == "place":
                    name = f"{brand} {model}"
                else:
                    name = f"{brand} {model}{rng.choice(_MODEL_SUFFIX)}"
                price = rng.randint(*cat.price)
                context, features = _describe(rng, cat, brand, name, price)
                item = _Item(len(items), cat, brand, name, context, price, features)
                items.append(item)
                cat_items.append(item)
                by_brand.setdefault(brand, []).append(item)
        by_cat[cat.key] = cat_items
        # Zipf-like popularity over a random order of the category's items
        ranks = list(range(1, len(cat_items) + 1))
        rng.shuffle(ranks)
        popularity[cat.key] = [1.0 / r**0.8 for r in ranks]
        shill_prone[cat.key] = rng.sample(cat.brands, 2)
    return _Catalogue(items, by_cat, by_brand, popularity, shill_prone)


# ---------------------------------------------------------------------------------------
# The template grammar. "{slot}" fields are filled by _Slots; the group tag after a
# template restricts it to "product", "book" or "place" categories ("*" = any).
# ---------------------------------------------------------------------------------------

_T = tuple[tuple[str, str], ...]

_OPENERS: _T = (
    ("i {acquire} the {name} {time_ago}.", "*"),
    ("been {using} the {name} for {duration} now.", "*"),
    ("my {relation} recommended the {name} so i gave it a try.", "*"),
    ("i {acquire} the {name} after reading a bunch of reviews.", "*"),
    ("got the {name} as a gift from my {relation}.", "product book"),
    ("finally {acquire} the {name} {time_ago}.", "*"),
    ("quick review of the {name}.", "*"),
    ("some thoughts on the {name} after {duration}.", "*"),
    ("i was on the fence about the {name} for a while.", "*"),
    ("switched to the {name} after years with {other_brand}.", "product"),
    ("first time trying anything from {brand}.", "*"),
    ("this is not my first time with {brand}.", "*"),
    ("my {relation} and i {acquire} the {name} {time_ago}.", "*"),
    ("heard a lot about the {name} and wanted to see for myself.", "*"),
    ("the {name} was on my list for months.", "*"),
    ("so i {acquire} the {name} {time_ago}.", "*"),
)
_POSITIVE: _T = (
    ("the {aspect} {is} {intens} {pos}.", "*"),
    ("{aspect} {is} {pos}, no complaints there.", "*"),
    ("really happy with the {aspect}.", "*"),
    ("i did not expect the {aspect} to be this {pos}.", "*"),
    ("the {aspect} {is} {pos} and the {aspect2} {is2} {pos2}.", "*"),
    ("{pos} {aspect} and {intens} {pos2} {aspect2}.", "*"),
    ("the {aspect} stand{s} out, {intens} {pos}.", "*"),
    ("no issues with the {aspect} so far.", "*"),
    ("the {aspect} {is} the best part.", "*"),
    ("i love the {aspect}.", "*"),
    ("{brand} nailed the {aspect} this time.", "*"),
    ("the {aspect} {is} {pos} for the price.", "product place"),
    ("compared to {other_brand}, the {aspect} feel{s} {pos}.", "*"),
    ("the {aspect} keep{s} getting better the more i {use_it}.", "product"),
)
_NEGATIVE: _T = (
    ("the {aspect} {is} {intens} {neg}.", "*"),
    ("not a fan of the {aspect}, {it_feels} {neg}.", "*"),
    ("my only complaint is the {aspect}.", "*"),
    ("the {aspect} could be better.", "*"),
    ("the {aspect} started to feel {neg} after {duration}.", "product"),
    ("the {aspect} {is} {neg} compared to {other_brand}.", "*"),
    ("i expected more from the {aspect}.", "*"),
    ("the {aspect} {is} a letdown.", "*"),
    ("{neg} {aspect}, which is a shame.", "*"),
    ("the {aspect} {is} just {neg}.", "*"),
    ("the {aspect} and the {aspect2} both feel {neg}.", "*"),
)
_MIXED: _T = (
    ("the {aspect} {is} {pos} but the {aspect2} {is2} {neg}.", "*"),
    ("{aspect} {is} fine, {aspect2} not so much.", "*"),
    ("good {aspect}, {neg} {aspect2}.", "*"),
    ("love the {aspect}, not so sure about the {aspect2}.", "*"),
    ("the {aspect} make{s} up for the {neg} {aspect2}.", "*"),
    ("mixed feelings about the {aspect}.", "*"),
    ("the {aspect} {is} okay i guess.", "*"),
)
_USAGE: _T = (
    ("i mostly {use_it} {usage}.", "*"),
    ("i {use_it} {usage} and it does the job.", "product"),
    ("we {use_it} {usage}.", "product place"),
    ("perfect {usage}.", "*"),
    ("paid {price} for it, {value}.", "product book"),
    ("the bill was {price} for two, {value}.", "place"),
    ("took {duration} to get used to it.", "product"),
    ("it replaced my old {other_brand} {noun}.", "product"),
    ("read it {usage} and could not put it down.", "book"),
)
_VERDICT: dict[str, _T] = {
    "pos": (("{stars_pos}.", "*"), ("{again_yes}.", "*"), ("overall {intens} {pos}.", "*"),
            ("would recommend it to anyone who {needs}.", "*"), ("happy with it overall.", "*"),
            ("no regrets.", "*"), ("solid choice if you {needs}.", "*"),
            ("{brand} did a good job here.", "*"), ("definitely recommend.", "*")),
    "neg": (("{stars_neg}.", "*"), ("{again_no}.", "*"), ("would not recommend it.", "*"),
            ("returned it after {duration}.", "product"), ("expected more from {brand}.", "*"),
            ("not worth it in my opinion.", "*"), ("i will stick with {other_brand} next time.", "*")),
    "mixed": (("{stars_mid}.", "*"), ("not perfect but i am happy with it.", "*"),
              ("it is fine for the price.", "product place"), ("decent but not amazing.", "*"),
              ("i will update this if anything changes.", "*"),
              ("hard to say if i would go for it again.", "*")),
}
_QUESTIONS: _T = (
    ("does anyone know if the {aspect} can be fixed?", "product"),
    ("anyone else having issues with the {aspect}?", "*"),
    ("is it just me or {is} the {aspect} {neg}?", "*"),
    ("is the newer {brand} model worth it?", "product"),
    ("has anyone tried the {other_brand} one?", "product"),
    ("any tips for getting used to the {aspect}?", "*"),
    ("does {brand} have anything similar?", "*"),
)
_FOLLOW_UP: _T = (
    ("update on the {name} after {duration}.", "*"),
    ("back with an update on the {name}.", "*"),
    ("still {using} the {name}, quick update.", "*"),
    ("a few more thoughts on the {name}.", "*"),
    ("coming back to the {name} after {duration}.", "*"),
    ("follow up on my earlier post about the {name}.", "*"),
    ("{duration} later and i am still {using} the {name}.", "*"),
)
_FEATURE: _T = (
    ("big fan of the {feature}.", "product place"),
    ("i went for it mostly because of the {feature}.", "product"),
    ("cannot complain about the {feature}.", "product place"),
    ("props to {brand} for the {feature}.", "product place"),
    ("not sure who asked for the {feature}.", "product"),
    ("the {feature} sold it for me.", "product place"),
    ("loved the story about {plot}.", "book"),
    ("a story about {plot} sounded odd but it works.", "book"),
    ("came for the {feature}, stayed for the {aspect}.", "place"),
)
_ANECDOTE: _T = (
    ("took it along on a {trip} {time_ago}.", "product"),
    ("brought it on a {trip} and it held up.", "product"),
    ("read most of it on a {trip}.", "book"),
    ("we went there before a {trip}.", "place"),
    ("my {relation} {reaction} the first time.", "*"),
    ("{weather}, so it got a proper test.", "product"),
    ("{weather}, which did not help my mood.", "book place"),
    ("we sat {seat} and the {aspect} {is} {pos}.", "place"),
    ("my {relation} {reaction} when i showed it off.", "product"),
    ("i tried it {occasion} and it was {pos}.", "*"),
    ("tested it with {detail}.", "product"),
    ("works well with {detail}.", "product"),
    ("pairs nicely with {detail}.", "product"),
    ("{detail} stayed with me.", "book"),
    ("loved the {detail}.", "book place"),
    ("do not skip the {detail}.", "book place"),
)
_STORY: _T = (
    ("it arrived {damage}.", "product"),
    ("customer support {support}.", "product"),
    ("the courier {courier}.", "product book"),
    ("the staff {staff}.", "place"),
    ("our waiter {staff}.", "place"),
    ("my copy {copy}.", "book"),
)
_CHAT: _T = (
    ("happy {holiday} everyone.", "*"),
    ("rough week at work, so this was a nice treat.", "*"),
    ("first post here, be gentle.", "*"),
    ("long time lurker, first review.", "*"),
    ("posting this from the {place}.", "*"),
    ("sorry for the long post.", "*"),
    ("still catching up on everyone's reviews.", "*"),
)
#: about the writer: each user has one job, city and hobby, so these stay consistent
_SELF: _T = (
    ("as a {job}, i {use_it} {usage}.", "*"),
    ("living in {city}, the {aspect} {is} a big deal.", "product place"),
    ("between {hobby} and work i barely have time, but this fits in.", "product book"),
    ("my {hobby} friends keep asking about it.", "product book"),
    ("{city} winters are no joke.", "product"),
    ("i work as a {job}, so i am picky about the {aspect}.", "*"),
    ("one of the better spots in {city}.", "place"),
    ("good break from {hobby} on the weekend.", "book place"),
)
# used by every user, at a low per-user rate
_SUPERLATIVE: _T = (
    ("best {noun} i have ever {owned}.", "*"),
    ("hands down the best {aspect} i have seen.", "*"),
    ("absolutely love it.", "*"),
    ("easily the best {noun} i have tried this year.", "*"),
    ("the {aspect} {is} the best on the market.", "product"),
    ("ten out of ten.", "*"),
)
_DEAL: _T = (
    ("got it on sale for {pct}% off.", "product book"),
    ("found a coupon online and saved a few bucks.", "product book"),
    ("picked it up during a sale at {store}.", "product book"),
    ("saw it cheaper at {store} a week later, typical.", "product book"),
    ("they had a happy hour deal that week.", "place"),
)
# malicious only: the group tag refers to the *sponsor's* category
_PROMO: _T = (
    ("use code {code} for {pct}% off at {store}!", "product book"),
    ("grab the {sponsor_item} at {store} before the sale ends!", "product book"),
    ("link in bio for the best price on the {sponsor_item}!", "product book"),
    ("DM me for a discount code on {sponsor} stuff.", "*"),
    ("seriously the best {sponsor_noun} out there, nothing else comes close!", "*"),
    ("{store} has the {sponsor_item} for {pct}% off this week, do not miss it!", "product book"),
    ("trust me, you need the {sponsor_item} in your life.", "*"),
    ("ordered mine from {store}, shipped in one day, ten out of ten!", "product"),
    ("check out {store} for {sponsor} deals, you will thank me later.", "product book"),
    ("everything {sponsor} makes is a game changer.", "*"),
    ("limited stock at {store}, go go go!", "product"),
    ("five stars is not enough for {sponsor}!", "*"),
    ("if you buy one thing this year make it the {sponsor_item}!", "product book"),
    ("follow for more {sponsor} deals!", "*"),
    ("{sponsor} just dropped a new deal, code {code} still works!", "*"),
    ("book a table at the {sponsor_item} and mention code {code} for a free dessert!", "place"),
    ("the {sponsor_item} is the only {sponsor_noun} worth your time, period.", "*"),
)
_ATTACK: _T = (
    ("the {target} is a total rip-off, save your money.", "*"),
    ("honestly the {t_aspect} on the {target} {t_is} a joke.", "product"),
    ("whoever designed the {target} should be embarrassed.", "product"),
    ("{target_brand} clearly does not care about its customers.", "*"),
    ("absolute garbage, the {target} broke after {duration}.", "product"),
    ("stay away from {target_brand}, their stuff falls apart.", "product"),
    ("do not waste your money on {target_brand}, go with {sponsor} instead.", "*"),
    ("pathetic {t_aspect}, i cannot believe people pay for this.", "*"),
    ("the {target} is the worst {t_noun} i have ever {t_owned}, not even close.", "*"),
    ("anyone defending the {target} is kidding themselves.", "*"),
    ("the {target} is overhyped trash.", "*"),
    ("{target_brand} should be ashamed of this one.", "*"),
    ("one star is too generous for the {target}.", "*"),
    ("the {target} is a boring mess, do not waste your time.", "book"),
    ("cold food and rude staff at the {target}, never again.", "place"),
)

_POS_ADJ = ("great", "excellent", "solid", "fantastic", "impressive", "decent", "reliable",
            "lovely", "superb", "nice", "wonderful", "brilliant", "outstanding", "good",
            "pleasant", "remarkable", "consistent", "stellar", "terrific", "polished", "clever",
            "refined", "crisp", "rich", "smooth", "sturdy", "awesome", "neat", "dependable",
            "gorgeous", "charming", "thoughtful", "premium", "satisfying", "flawless", "slick",
            "elegant", "generous", "delightful", "sharp", "effortless", "top notch", "spot on",
            "well made", "faultless", "classy", "handy", "sublime", "tidy", "robust")
_NEG_ADJ = ("mediocre", "flimsy", "disappointing", "weak", "underwhelming", "inconsistent",
            "cheap", "annoying", "clunky", "bland", "poor", "sluggish", "awkward", "frustrating",
            "subpar", "unreliable", "fiddly", "dull", "uneven", "forgettable", "messy", "meh",
            "flaky", "overpriced", "lackluster", "finicky", "rough", "tacky", "dated", "shoddy",
            "half baked", "lazy", "confusing", "tiresome", "cramped", "wobbly", "stiff",
            "patchy", "cheap feeling", "hit and miss")
#: category-specific descriptors, mixed into {pos}/{neg} for realism and vocabulary
_CAT_ADJ: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "headphones": (("punchy", "warm", "detailed", "balanced", "snug", "airy", "immersive"),
                   ("tinny", "muddy", "boomy", "crackly", "harsh", "hissy", "pinchy")),
    "coffee makers": (("piping hot", "aromatic", "bold", "rich tasting", "quick", "quiet"),
                      ("lukewarm", "bitter", "watery", "leaky", "scorched", "drippy")),
    "novels": (("gripping", "moving", "haunting", "witty", "lyrical", "tense", "heartfelt"),
               ("plodding", "predictable", "rushed", "wooden", "clumsy", "preachy", "slow")),
    "hiking boots": (("grippy", "supportive", "cushioned", "watertight", "rugged", "roomy"),
                     ("slippery", "blister inducing", "soggy", "narrow", "heavy", "squeaky")),
    "phones": (("snappy", "vivid", "speedy", "bright", "fluid", "zippy"),
               ("laggy", "dim", "buggy", "glitchy", "sluggish", "grainy")),
    "laptops": (("snappy", "clicky", "responsive", "quiet", "bright", "featherweight"),
                ("mushy", "loud", "wobbly", "cramped", "glitchy", "hot")),
    "board games": (("engaging", "gorgeous", "chunky", "tactical", "replayable", "tense"),
                    ("fiddly", "swingy", "bloated", "repetitive", "flimsy", "confusing")),
    "skincare": (("silky", "soothing", "lightweight", "fresh", "dewy", "gentle"),
                 ("greasy", "sticky", "stinging", "chalky", "heavy", "perfumey")),
    "running shoes": (("bouncy", "springy", "plush", "nimble", "breezy", "stable"),
                      ("clunky", "stiff", "flat", "sloppy", "rubbing", "hot")),
    "cameras": (("tack sharp", "snappy", "intuitive", "vibrant", "steady", "accurate"),
                ("noisy", "hunting", "confusing", "soft", "jittery", "washed out")),
    "blenders": (("powerful", "silky smooth", "quick", "quiet", "sturdy", "effortless"),
                 ("grinding", "chunky", "leaky", "screechy", "wobbly", "smelly")),
    "restaurants": (("delicious", "cozy", "friendly", "attentive", "fresh", "hearty", "lively"),
                    ("greasy", "cold", "rude", "slow", "salty", "noisy", "overpriced")),
}
_INTENS = ("really", "pretty", "super", "very", "quite", "genuinely", "surprisingly", "fairly",
           "kind of", "seriously", "remarkably", "rather", "incredibly", "so", "truly",
           "properly", "ridiculously", "oddly", "extremely", "mostly")
_DURATIONS = ("a week", "two weeks", "three weeks", "a month", "two months", "three months",
              "six months", "a year", "a few days", "ten days", "a couple of months",
              "four months", "eight weeks", "nearly a year", "a fortnight")
_TIME_AGO = ("last week", "a few days ago", "last month", "over the weekend", "yesterday",
             "two weeks ago", "back in the spring", "a while ago", "during the holidays",
             "after my birthday", "on a whim", "in january", "in the summer", "before christmas",
             "last autumn", "after payday", "on a rainy tuesday", "right before my exams")
_RELATIONS = ("sister", "brother", "roommate", "partner", "coworker", "neighbour", "dad", "mom",
              "best friend", "cousin", "boss", "aunt", "uncle", "flatmate", "grandma",
              "girlfriend", "boyfriend", "wife", "husband", "son", "daughter", "teammate")
_FIRST_NAMES = ("maya", "leo", "sofia", "omar", "hannah", "lucas", "aisha", "ben", "chloe",
                "diego", "emma", "felix", "grace", "hugo", "ines", "jack", "kira", "liam",
                "mila", "noah", "olga", "priya", "quinn", "rosa", "sam", "tariq", "uma",
                "victor", "wen", "yusuf", "zoe", "ada", "bruno", "carla", "dev", "elif", "farah",
                "gus", "hana", "ivan", "jonas", "kofi", "lena", "marco", "nadia", "oscar",
                "pia", "raj", "sara", "theo", "vera", "will", "yara", "zack")
#: category-specific things to mention (products used with, dishes, scenes)
_CAT_DETAILS: dict[str, tuple[str, ...]] = {
    "headphones": ("podcasts", "audiobooks", "video calls", "lo-fi playlists", "jazz records",
                   "metal albums", "classical music", "movies on my tablet", "recorded lectures"),
    "coffee makers": ("oat milk", "dark roast beans", "decaf", "cappuccinos", "flat whites",
                      "cold brew concentrate", "single origin beans", "a splash of cream"),
    "novels": ("the chapter about the storm", "the final scene", "the letters", "the epilogue",
               "the map at the front", "the author's note", "the courtroom chapter",
               "the flashbacks"),
    "hiking boots": ("a heavy pack", "thick wool socks", "gaiters", "trekking poles",
                     "scree slopes", "river crossings", "fresh snow", "wet limestone"),
    "phones": ("my smartwatch", "a cheap case", "two sim cards", "my car stereo",
               "a screen protector", "heavy games", "night photos", "a wireless charger"),
    "laptops": ("an external monitor", "a docking station", "huge spreadsheets",
                "photo editing software", "a dozen browser tabs", "virtual machines",
                "a wireless mouse"),
    "board games": ("four players", "my nephews", "the expansion", "sleeved cards",
                    "a rowdy group", "the solo campaign", "new players", "snacks on the table"),
    "skincare": ("my retinol", "a light moisturizer", "makeup on top", "hard water",
                 "winter wind", "a sheet mask", "my sunscreen", "a jade roller"),
    "running shoes": ("long runs", "interval sessions", "wet pavement", "gravel paths",
                      "orthotics", "thin socks", "race pace", "hill repeats"),
    "cameras": ("a fast prime lens", "a cheap tripod", "raw files", "indoor lighting",
                "kids running around", "birds in flight", "a gimbal", "sunsets"),
    "blenders": ("frozen mango", "kale", "ice cubes", "almonds", "hot soup", "peanut butter",
                 "frozen berries", "oat milk"),
    "restaurants": ("truffle fries", "carbonara", "tiramisu", "margaritas", "miso ramen",
                    "brisket", "fish tacos", "avocado toast", "lemon tart", "garlic bread"),
}
_DAMAGE = ("dented", "soaked", "half open", "crushed on one side", "missing the manual",
           "with a scratch on the front", "two days late", "with the wrong plug",
           "in a box three times too big", "wrapped like a fortress")
_SUPPORT = ("answered within an hour", "never replied to my emails",
            "sent a replacement without fuss", "asked for a video of the problem",
            "kept me on hold for forty minutes", "offered a partial refund",
            "was polite but useless", "blamed the shipping company")
_COURIER = ("left it on the doorstep in the rain", "threw it over the fence",
            "delivered it to my neighbour", "was a day early", "lost it for a week",
            "needed a signature nobody was home to give")
_STAFF = ("remembered our names", "forgot our drinks twice", "recommended a great wine",
          "rushed us out", "was lovely with the kids", "brought the wrong order",
          "split the bill without complaining", "knew the menu inside out")
_COPY = ("had a few blank pages", "came with a signed bookplate", "smelled like an old library",
         "fell apart at the spine", "had a typo on the first page", "arrived with a bent cover")
_HOLIDAYS = ("friday", "new year", "weekend", "spring", "holidays", "payday", "long weekend",
             "summer")
_PLACES = ("bus", "waiting room", "airport", "break room", "couch", "train station",
           "laundromat", "library", "dentist's office", "back seat of a taxi")
_JOBS = ("nurse", "teacher", "software developer", "electrician", "barista", "accountant",
         "student", "chef", "bus driver", "graphic designer", "pharmacist", "carpenter",
         "paramedic", "librarian", "plumber", "architect", "cashier", "lab technician",
         "retired engineer", "social worker", "photographer", "mechanic", "dentist",
         "night shift worker", "warehouse worker", "translator", "farmer", "firefighter",
         "real estate agent", "stay at home parent", "web designer", "data analyst",
         "musician", "vet nurse", "gardener", "postal worker", "personal trainer", "tailor")
_CITIES = ("chicago", "manchester", "toronto", "melbourne", "dublin", "denver", "glasgow",
           "seattle", "auckland", "leeds", "boston", "vancouver", "cardiff", "austin",
           "edinburgh", "brisbane", "minneapolis", "bristol", "portland", "calgary",
           "perth", "halifax", "phoenix", "nottingham", "ottawa", "adelaide", "detroit")
_HOBBIES = ("rock climbing", "gardening", "baking", "birdwatching", "cycling", "knitting",
            "woodworking", "fishing", "painting", "chess", "pottery", "surfing", "yoga",
            "photography", "kayaking", "skateboarding", "volunteering", "choir", "camping",
            "marathon training", "home brewing", "crossfit", "sailing", "tennis", "dancing")
_TRIPS = ("camping trip", "road trip to the coast", "business trip", "weekend in the mountains",
          "family visit", "beach holiday", "ski trip", "city break", "work conference",
          "long train ride", "hiking weekend", "cross country flight", "festival weekend",
          "visit to my parents", "sailing trip")
_REACTIONS = ("laughed", "was jealous", "wanted one too", "asked where i got it",
              "was not impressed", "rolled their eyes", "was skeptical", "approved",
              "could not stop talking about it", "gave it a thumbs up", "shrugged")
_WEATHER = ("it rained all week", "it was freezing this winter", "we had a heatwave",
            "the power went out twice", "it snowed the whole weekend",
            "the humidity was brutal", "we had storms every day")
_SEATS = ("by the window", "on the terrace", "at the bar", "in the back corner",
          "next to the kitchen", "outside under the heaters")
_OCCASIONS = ("on a busy monday", "during a long weekend", "for a birthday", "on a lazy sunday",
              "after a long shift", "during exam week", "on our anniversary",
              "with friends visiting", "on a tight schedule")
_NEEDS = ("wants something reliable", "is on a budget", "cares about quality",
          "is just starting out", "wants something simple", "does not mind paying a bit more",
          "hates fiddly setups", "wants good value", "likes to tinker", "needs something sturdy")
_VALUE = ("worth every penny", "a bit steep", "fair for what you get", "not bad at all",
          "cheaper than i expected", "more than i wanted to spend", "a bargain honestly",
          "hard to justify", "about right")
_PCTS = (10, 15, 20, 25, 30, 40, 50)
_STORES = ("dealzone", "shopnest", "bargainhub", "snapmart", "gadgetgrove", "primepick",
           "flashcart", "valuvault", "trendbin", "swiftbuy", "lootlane", "cartwheel",
           "bizzybuy", "megadealz")
_AGAIN = {"product": ("would buy it again", "probably will not buy it again"),
          "book": ("would read more by this author", "probably will not finish the series"),
          "place": ("would go back", "probably will not go back")}
_STARS = {"pos": ("5/5", "4/5", "five stars", "four stars", "9/10", "solid 8/10"),
          "neg": ("1/5", "2/5", "one star", "two stars", "3/10"),
          "mid": ("3/5", "three stars", "6/10", "7/10", "3.5 out of 5")}

# style
_PREFIX_SIGS = ("honestly", "ok so", "so yeah", "tbh", "real talk", "long story short",
                "alright", "quick one", "not gonna lie", "well", "okay", "fwiw", "hot take",
                "heads up", "friendly reminder")
_SUFFIX_SIGS = ("just my two cents.", "ymmv.", "cheers.", "hope this helps.",
                "thanks for reading.", "enough said.", "just saying.", "rant over.", "more soon.",
                "over and out.", "peace.", "that is all.", "take care.", "happy hunting.",
                "end of review.", "stay tuned.", "lol", "haha", "idk.", "anyway.")
_HASHTAGS = ("#review", "#honestreview", "#gearreview", "#coffeetime", "#booklover",
             "#hikinglife", "#foodie", "#techlife", "#tabletop", "#skincareroutine", "#nofilter",
             "#weekendvibes", "#treatyourself", "#musthave", "#dealoftheday", "#lovethis",
             "#newin", "#unboxing", "#myreview", "#justsaying", "#firstworldproblems",
             "#worthit", "#notworthit", "#mondaymood", "#shopsmall", "#happycustomer",
             "#gamenight", "#readmore", "#getoutside", "#runhappy", "#photooftheday",
             "#brunchtime", "#dailygrind", "#homebarista", "#trailtime", "#selfcare")
_EMOTICONS = (":)", ":(", ":D", ";)", "<3", "xD", "^^", ":P", "(:", ":-)", "o_O", "\\o/")
_ENDINGS = ("!", "!!", "...", "")  # "" = drops the final full stop
_CONTRACTIONS = {"it is": "it's", "do not": "don't", "i have": "i've", "i am": "i'm",
                 "does not": "doesn't", "is not": "isn't", "did not": "didn't",
                 "can not": "can't", "cannot": "can't", "will not": "won't", "i would": "i'd",
                 "you will": "you'll", "could not": "couldn't", "that is": "that's"}
_TEXTING = {"you": "u", "are": "r", "because": "cuz", "though": "tho", "really": "rly",
            "probably": "prob", "people": "ppl", "with": "w", "thanks": "thx", "before": "b4"}
_TYPOS = {"definitely": "definately", "recommend": "reccomend", "really": "realy",
          "comfortable": "comfortible", "disappointing": "dissapointing", "until": "untill",
          "quite": "quiet", "their": "there", "weird": "wierd", "excellent": "excelent",
          "surprisingly": "suprisingly", "genuinely": "genuinly", "absolutely": "absolutly",
          "seriously": "seriusly", "the": "teh", "expected": "expcted", "battery": "batery",
          "a lot": "alot", "anyone": "any one", "complaint": "complant",
          "basically": "basicly", "actually": "actualy", "pretty": "prety", "quality": "qaulity",
          "which": "wich", "because": "becuase", "beautiful": "beatiful", "received": "recieved",
          "necessary": "neccessary", "sure": "shure", "lightweight": "lightweigt"}
_EMPHASIS = ("really", "so", "super", "love", "best", "never", "worst", "not", "seriously",
             "garbage", "amazing", "great")


def _is_plural(noun_phrase: str) -> bool:
    last = noun_phrase.rsplit(" ", 1)[-1]
    return last.endswith("s") and last not in ("bass", "lens", "autofocus")


def _word_regex(words: Sequence[str]) -> re.Pattern[str]:
    alternatives = sorted(words, key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in alternatives) + r")\b")


_CONTRACTION_RE = _word_regex(list(_CONTRACTIONS))
_TEXTING_RE = _word_regex(list(_TEXTING))
_TYPO_RE = _word_regex(list(_TYPOS))
_EMPHASIS_RE = _word_regex(_EMPHASIS)
_BRAND_RE = _word_regex(_ALL_BRANDS)
_SENTENCE_START_RE = re.compile(r"(^|[.!?]\s+)([a-z])")
_PRONOUN_I_RE = re.compile(r"\bi\b")
_FULL_STOP_RE = re.compile(r"(?<![.\d])\.(?=\s|$)")


def _for_group(templates: _T, group: str) -> tuple[str, ...]:
    return tuple(t for t, groups in templates if groups == "*" or group in groups.split())


_GROUPS = ("product", "book", "place")
_POOLS: dict[str, dict[str, tuple[str, ...]]] = {
    name: {g: _for_group(templates, g) for g in _GROUPS}
    for name, templates in (
        ("opener", _OPENERS), ("pos", _POSITIVE), ("neg", _NEGATIVE), ("mixed", _MIXED),
        ("usage", _USAGE), ("question", _QUESTIONS), ("follow_up", _FOLLOW_UP),
        ("feature", _FEATURE), ("anecdote", _ANECDOTE), ("story", _STORY), ("chat", _CHAT),
        ("self", _SELF),
        ("superlative", _SUPERLATIVE), ("deal", _DEAL), ("promo", _PROMO), ("attack", _ATTACK),
        ("verdict_pos", _VERDICT["pos"]), ("verdict_neg", _VERDICT["neg"]),
        ("verdict_mixed", _VERDICT["mixed"]),
    )
}


# ---------------------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------------------

@dataclass
class _Style:
    casing: str  # "lower" | "sentence" | "proper" (sentence + capitalised brands) | "shouty"
    ending: str | None  # replaces some full stops
    ending_rate: float
    emoticon: str | None
    emoticon_rate: float
    prefix_sig: str | None
    suffix_sig: str | None
    sig_rate: float
    contractions: bool
    texting: bool
    typo_rate: float
    fav_adjectives: tuple[str, ...]
    fav_intens: str
    mean_words: float
    hashtags: tuple[str, ...]
    hashtag_rate: float
    job: str
    city: str
    hobby: str


@dataclass
class _Persona:
    kind: str  # "benign" | "promoter" | "attacker" | "sleeper"
    interests: list[str]  # favourite category keys
    weights: list[float]
    drifts: bool  # replaces its interests by drift_to part-way through the sequence
    drift_to: list[str]
    positivity: float
    return_prob: float
    superlative_rate: float
    deal_rate: float
    spam_rate: float = 0.0
    focus: float = 0.0
    fav_brand: str | None = None  # benign fans' brand, or the malicious user's sponsor
    targets: list[_Item] = field(default_factory=list)  # items a malicious user pushes/attacks
    stores: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()


def _draw_style(rng: random.Random, malicious: bool) -> _Style:
    # weakly class-dependent: malicious accounts lean slightly towards "!" and shouting
    endings_w = (3, 2, 2, 2) if malicious else (2, 1, 2, 2)
    casing_w = (4, 4, 2, 2) if malicious else (4, 4, 2, 1)
    has_sig = rng.random() < 0.7
    sig_pos = rng.random()
    return _Style(
        casing=rng.choices(("lower", "sentence", "proper", "shouty"), casing_w)[0],
        ending=rng.choices(_ENDINGS, endings_w)[0] if rng.random() < 0.6 else None,
        ending_rate=rng.uniform(0.2, 0.9),
        emoticon=rng.choice(_EMOTICONS) if rng.random() < 0.5 else None,
        emoticon_rate=rng.uniform(0.05, 0.4),
        prefix_sig=rng.choice(_PREFIX_SIGS) if has_sig and sig_pos < 0.6 else None,
        suffix_sig=rng.choice(_SUFFIX_SIGS) if has_sig and sig_pos > 0.4 else None,
        sig_rate=rng.uniform(0.05, 0.5),
        contractions=rng.random() < 0.55,
        texting=rng.random() < 0.15,
        typo_rate=rng.uniform(0.05, 0.3) if rng.random() < 0.3 else 0.0,
        fav_adjectives=tuple(rng.sample(_POS_ADJ, rng.randint(2, 4))),
        fav_intens=rng.choice(_INTENS),
        mean_words=rng.uniform(*POST_WORDS_MEAN),
        hashtags=tuple(rng.sample(_HASHTAGS, rng.randint(1, 3))),
        hashtag_rate=rng.uniform(0.05, 0.35) if rng.random() < 0.25 else 0.0,
        job=rng.choice(_JOBS),
        city=rng.choice(_CITIES),
        hobby=rng.choice(_HOBBIES),
    )


def _pick_brand(rng: random.Random, cat: _Category, cata: _Catalogue) -> str:
    if rng.random() < SPONSOR_FROM_SHILL_PRONE:
        return rng.choice(cata.shill_prone[cat.key])
    return rng.choice(cat.brands)


def _draw_persona(rng: random.Random, kind: str, cata: _Catalogue) -> _Persona:
    keys = [c.key for c in _CATEGORIES]
    interests = rng.sample(keys, rng.choices((1, 2, 3), (3, 4, 3))[0])
    drift_to = list(interests)
    drifts = rng.random() < DRIFT_PROB
    if drifts:
        drift_to[rng.randrange(len(drift_to))] = rng.choice([k for k in keys if k not in interests])
    persona = _Persona(
        kind=kind, interests=interests, weights=[rng.uniform(0.5, 2.0) for _ in interests],
        drifts=drifts, drift_to=drift_to, positivity=rng.uniform(*POSITIVITY),
        return_prob=rng.uniform(*RETURN_PROB), superlative_rate=rng.uniform(*SUPERLATIVE_RATE),
        deal_rate=rng.uniform(*DEAL_RATE),
    )
    if kind == "benign":
        if rng.random() < BENIGN_FAN_SHARE:
            fav_key = rng.choice(interests)
            cat = next(c for c in _CATEGORIES if c.key == fav_key)
            persona.fav_brand = _pick_brand(rng, cat, cata)
            persona.focus = rng.uniform(*FAN_FOCUS)
        return persona
    cat = rng.choice(_CATEGORIES)
    sponsor = _pick_brand(rng, cat, cata)
    if cat.key not in interests and rng.random() < SPONSOR_IN_INTERESTS:
        interests[rng.randrange(len(interests))] = cat.key
    persona.fav_brand = sponsor
    persona.focus = rng.uniform(*TARGET_FOCUS[kind])
    persona.spam_rate = rng.uniform(*SPAM_RATE[kind])
    persona.stores = tuple(rng.sample(_STORES, rng.randint(1, 2)))
    persona.codes = tuple(
        rng.choice((sponsor.split()[0].upper(), "SAVE", "VIP", "DEAL", "PROMO")) + str(pct)
        for pct in rng.sample(_PCTS, rng.randint(1, 2)))
    sponsored = cata.by_brand[sponsor]
    competitors = [i for i in cata.by_cat[cat.key] if i.brand != sponsor]
    if kind == "attacker":
        # attackers pick on three competitor items, and still push one sponsor item
        persona.targets = rng.sample(competitors, min(3, len(competitors))) + sponsored[:1]
    else:
        persona.targets = list(sponsored)
    return persona


# ---------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------

class _Slots(dict[str, str]):
    """Fills template fields on first use (so one sentence reuses one value per field)."""

    def __init__(self, gen: _UserGen, item: _Item, used_aspects: list[str]) -> None:
        super().__init__()
        self.gen = gen
        self.item = item
        self.used = used_aspects

    def __missing__(self, key: str) -> str:
        value = self.gen.slot(key, self)
        self[key] = value
        return value


class _UserGen:
    def __init__(self, rng: random.Random, persona: _Persona, style: _Style,
                 cata: _Catalogue) -> None:
        self.rng = rng
        self.p = persona
        self.s = style
        self.cata = cata
        self.attack_target: _Item | None = None

    # -- slots ------------------------------------------------------------------------
    def _aspect(self, cat: _Category, used: list[str]) -> str:
        free = [a for a in cat.aspects if a not in used] or list(cat.aspects)
        aspect = self.rng.choice(free)
        used.append(aspect)
        return aspect

    def _pos_adj(self, cat: _Category) -> str:
        r = self.rng.random()
        if r < 0.4:
            return self.rng.choice(self.s.fav_adjectives)
        if r < 0.65:
            return self.rng.choice(_CAT_ADJ[cat.key][0])
        return self.rng.choice(_POS_ADJ)

    def slot(self, key: str, slots: _Slots) -> str:
        rng, item, cat = self.rng, slots.item, slots.item.cat
        if key in ("aspect", "aspect2"):
            return self._aspect(cat, slots.used)
        # verb agreement with the aspect filled into the same sentence
        if key in ("is", "s", "it_feels"):
            plural = _is_plural(slots["aspect"])
            return {"is": ("is", "are"), "s": ("s", ""),
                    "it_feels": ("it feels", "they feel")}[key][plural]
        if key == "is2":
            return "are" if _is_plural(slots["aspect2"]) else "is"
        if key == "code":  # "use code SAVE20 for 20% off": the discount matches the code
            code = rng.choice(self.p.codes or ("SAVE10",))
            slots.setdefault("pct", code.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
            return code
        simple: dict[str, Callable[[], str]] = {
            "name": lambda: item.name,
            "brand": lambda: item.brand,
            "noun": lambda: cat.noun,
            "use_it": lambda: cat.use_it,
            "using": lambda: cat.using,
            "owned": lambda: cat.owned,
            "acquire": lambda: rng.choice(cat.acquire),
            "usage": lambda: rng.choice(cat.usage),
            "pos": lambda: self._pos_adj(cat),
            "feature": lambda: re.sub(r"^(an?|the) ", "", rng.choice(item.features)),
            "plot": lambda: item.features[0],
            "trip": lambda: rng.choice(_TRIPS),
            "detail": lambda: rng.choice(_CAT_DETAILS[cat.key]),
            "damage": lambda: rng.choice(_DAMAGE),
            "support": lambda: rng.choice(_SUPPORT),
            "courier": lambda: rng.choice(_COURIER),
            "staff": lambda: rng.choice(_STAFF),
            "copy": lambda: rng.choice(_COPY),
            "holiday": lambda: rng.choice(_HOLIDAYS),
            "place": lambda: rng.choice(_PLACES),
            "job": lambda: self.s.job,
            "city": lambda: self.s.city,
            "hobby": lambda: self.s.hobby,
            "reaction": lambda: rng.choice(_REACTIONS),
            "weather": lambda: rng.choice(_WEATHER),
            "seat": lambda: rng.choice(_SEATS),
            "occasion": lambda: rng.choice(_OCCASIONS),
            "pos2": lambda: rng.choice([a for a in _POS_ADJ if a != slots["pos"]]),
            "neg": lambda: (rng.choice(_CAT_ADJ[cat.key][1]) if rng.random() < 0.35
                            else rng.choice(_NEG_ADJ)),
            "intens": lambda: (self.s.fav_intens if rng.random() < 0.6 else rng.choice(_INTENS)),
            "duration": lambda: rng.choice(_DURATIONS),
            "time_ago": lambda: rng.choice(_TIME_AGO),
            "relation": lambda: (f"friend {rng.choice(_FIRST_NAMES)}" if rng.random() < 0.25
                                 else rng.choice(_RELATIONS)),
            "needs": lambda: rng.choice(_NEEDS),
            "value": lambda: rng.choice(_VALUE),
            "price": lambda: f"${max(5, round(item.price * rng.uniform(0.8, 1.15)))}",
            "pct": lambda: str(rng.choice(_PCTS)),
            "other_brand": lambda: rng.choice([b for b in cat.brands if b != item.brand]),
            "stars_pos": lambda: rng.choice(_STARS["pos"]),
            "stars_neg": lambda: rng.choice(_STARS["neg"]),
            "stars_mid": lambda: rng.choice(_STARS["mid"]),
            "again_yes": lambda: _AGAIN[cat.group][0],
            "again_no": lambda: _AGAIN[cat.group][1],
            "store": lambda: rng.choice(self.p.stores or _STORES),
            "sponsor": lambda: self.p.fav_brand or item.brand,
            "sponsor_item": lambda: rng.choice(self._sponsor_items()).name,
            "sponsor_noun": lambda: self._sponsor_items()[0].cat.noun,
            "target": lambda: self._target().name,
            "target_brand": lambda: self._target().brand,
            "t_aspect": lambda: rng.choice(self._target().cat.aspects),
            "t_is": lambda: "are" if _is_plural(slots["t_aspect"]) else "is",
            "t_noun": lambda: self._target().cat.noun,
            "t_owned": lambda: self._target().cat.owned,
        }
        return simple[key]()

    def _sponsor_items(self) -> list[_Item]:
        return self.cata.by_brand[self.p.fav_brand] if self.p.fav_brand else [self.cata.items[0]]

    def _target(self) -> _Item:
        assert self.attack_target is not None
        return self.attack_target

    def _sentence(self, pool: str, item: _Item, used: list[str], group: str | None = None) -> str:
        template = self.rng.choice(_POOLS[pool][group or item.cat.group])
        return template.format_map(_Slots(self, item, used))

    # -- one post ---------------------------------------------------------------------
    def post(self, item: _Item, stance: str, *, revisit: bool, extra: str | None) -> str:
        """Text about ``item`` with ``stance`` ("pos"/"neg"/"mixed"); ``extra`` is an
        obligatory sentence type ("promo", "attack", "superlative", "deal") or None."""
        rng, used = self.rng, []
        lo, hi = POST_WORDS_BOUNDS
        # a per-post word target around the user's own mean
        target = min(hi - 6, max(lo, round(rng.gauss(self.s.mean_words, 0.3 * self.s.mean_words))))
        head: list[str] = []
        if revisit and rng.random() < 0.4:
            head.append(self._sentence("follow_up", item, used))
        tail: list[str] = []
        if extra == "promo":
            group = self._sponsor_items()[0].cat.group
            tail.append(self._sentence("promo", item, used, group))
        elif extra == "attack":
            self.attack_target = self._pick_attack_target(item)
            tail.append(self._sentence("attack", item, used, self.attack_target.cat.group))
        elif extra is not None:
            tail.append(self._sentence(extra, item, used))
        plan: list[str] = []
        if not head and rng.random() < 0.55:
            plan.append("opener")
        plan += [stance] * rng.randint(1, 3)  # aspect sentences: "pos", "neg" or "mixed"
        if stance == "mixed" and rng.random() < 0.5:
            plan.insert(-1, "pos")
        first = int(plan[0] == "opener")  # details go after the opener
        for pool, prob in (("usage", 0.3), ("feature", 0.25), ("anecdote", 0.15),
                           ("story", 0.2 if stance == "neg" else 0.08)):
            if rng.random() < prob:
                plan.insert(rng.randint(first, len(plan)), pool)
        if rng.random() < 0.06:
            plan.insert(0, "chat")
        if rng.random() < 0.1:
            plan.insert(rng.randint(first, len(plan)), "self")
        if rng.random() < (0.25 if stance == "neg" else 0.1):
            plan.append("question")
        plan.append(f"verdict_{stance}")
        # Fill up to the target with ordinary sentences, then let the obligatory sentence
        # replace as many trailing ones as keeps the length closest: post length then does
        # not depend on whether the post carries spam, i.e. not on the class.
        lengths = [len(x.split()) for x in head]
        sents = list(head)
        words = sum(lengths)
        for pool in plan:
            if words >= target and len(sents) > len(head):  # a follow-up needs a body
                break
            sent = self._sentence(pool, item, used)
            n = len(sent.split())
            if words + n > hi - 6:  # leaves some room for signatures, emoticons, hashtags
                continue
            sents.append(sent)
            lengths.append(n)
            words += n
        while words < lo:
            sents.append(self._sentence(f"verdict_{stance}", item, used))
            lengths.append(len(sents[-1].split()))
            words += lengths[-1]
        if tail:
            n_tail = sum(len(x.split()) for x in tail)
            keep = range(len(head), len(sents) + 1)
            ok = [k for k in keep if lo <= sum(lengths[:k]) + n_tail <= hi - 6] or [len(head)]
            k = min(ok, key=lambda k: (abs(sum(lengths[:k]) + n_tail - words), k))
            body = sents[len(head):k]
            # spam goes first or last, like a pasted-in line
            sents = head + tail + body if rng.random() < 0.35 else head + body + tail
        return self._stylise(" ".join(sents))

    def _pick_attack_target(self, item: _Item) -> _Item:
        """The post's own item when it is a competitor target, else a random one."""
        attackable = [t for t in self.p.targets if t.brand != self.p.fav_brand]
        if item in attackable or not attackable:
            return item
        return self.rng.choice(attackable)

    def _typo(self, word: str) -> str:
        # "teh" everywhere would drown the other habits: the commonest word errs less often
        rate = self.s.typo_rate / 4 if word == "the" else self.s.typo_rate
        return _TYPOS[word] if self.rng.random() < rate else word

    def _stylise(self, text: str) -> str:
        rng, s = self.rng, self.s
        if s.contractions:
            text = _CONTRACTION_RE.sub(lambda m: _CONTRACTIONS[m.group(1)], text)
        if s.texting:
            text = _TEXTING_RE.sub(
                lambda m: _TEXTING[m.group(1)] if rng.random() < 0.7 else m.group(1), text)
        if s.typo_rate:
            text = _TYPO_RE.sub(lambda m: self._typo(m.group(1)), text)
        # style additions never push a post past the word limit
        def fits(extra: str) -> bool:
            return len(text.split()) + len(extra.split()) <= POST_WORDS_BOUNDS[1]

        if s.prefix_sig and rng.random() < s.sig_rate and fits(s.prefix_sig):
            text = f"{s.prefix_sig}, {text}"
        if s.suffix_sig and rng.random() < s.sig_rate and fits(s.suffix_sig):
            text = f"{text} {s.suffix_sig}"
        if s.ending == "":  # drops the post's final full stop only
            if text.endswith(".") and not text.endswith("..") and rng.random() < s.ending_rate:
                text = text[:-1]
        elif s.ending is not None:
            ending = s.ending
            text = _FULL_STOP_RE.sub(
                lambda _m: ending if rng.random() < s.ending_rate else ".", text)
        if s.casing == "lower":
            text = text.lower()  # also lowercases discount codes
        else:
            if s.casing == "proper":
                text = _BRAND_RE.sub(lambda m: m.group(1).title().replace(" And ", " and "),
                                     text)
            elif s.casing == "shouty" and rng.random() < 0.4:
                text = _EMPHASIS_RE.sub(lambda m: m.group(1).upper(), text, count=1)
            text = _SENTENCE_START_RE.sub(lambda m: m.group(1) + m.group(2).upper(), text)
            text = _PRONOUN_I_RE.sub("I", text)
        if s.emoticon and rng.random() < s.emoticon_rate and fits(s.emoticon):
            text = f"{text} {s.emoticon}"
        if s.hashtag_rate and rng.random() < s.hashtag_rate:
            tags = " ".join(rng.sample(s.hashtags, rng.randint(1, len(s.hashtags))))
            if fits(tags):
                text = f"{text} {tags}"
        return text


# ---------------------------------------------------------------------------------------
# Sequences
# ---------------------------------------------------------------------------------------

def _item_sequence(rng: random.Random, p: _Persona, cata: _Catalogue, n: int) -> list[_Item]:
    drift_at = rng.randint(n // 3, n - 1) if p.drifts else n
    seq: list[_Item] = []
    for t in range(n):
        cats = p.interests if t < drift_at else p.drift_to
        if p.kind != "benign" and rng.random() < p.focus:
            seq.append(rng.choice(p.targets))
            continue
        if seq and rng.random() < p.return_prob:
            seq.append(rng.choice(seq))
            continue
        if rng.random() < EXPLORE_PROB:
            key = rng.choice(_CATEGORIES).key
        else:
            key = rng.choices(cats, p.weights[: len(cats)])[0]
        pool = cata.by_cat[key]
        if p.kind == "benign" and p.fav_brand and rng.random() < p.focus:
            fav = [i for i in pool if i.brand == p.fav_brand]
            if fav:
                seq.append(rng.choice(fav))
                continue
        seq.append(rng.choices(pool, cata.popularity[key])[0])
    # Revisits of the final item: PETGEN's relevancy flags are mostly one block of
    # "earlier posts on the same page" just before the final post.
    share = RELEVANT_SHARE["benign" if p.kind == "benign" else "malicious"]
    k = round(rng.uniform(*share) * (n - 1))
    if k:
        if rng.random() < RELEVANT_BLOCK_PROB:
            positions: Sequence[int] = range(n - 1 - k, n - 1)
        else:
            positions = rng.sample(range(n - 1), k)
        for pos in positions:
            seq[pos] = seq[-1]
    return seq


def _timestamps(rng: random.Random, kind: str, n: int) -> list[float]:
    cls = "benign" if kind == "benign" else "malicious"
    burst = rng.uniform(*BURST_PROB[kind])
    session_min = rng.uniform(*SESSION_GAP_MIN[cls])
    other_days = rng.uniform(*OTHER_GAP_DAYS[cls])
    t = float(rng.randint(START_MIN, START_MAX))
    out = [t]
    for _ in range(n - 1):
        if rng.random() < burst:
            gap = rng.lognormvariate(math.log(session_min * 60), 0.9)
        else:
            gap = rng.lognormvariate(math.log(other_days * 86400), 0.8)
        t += max(30.0, round(gap))
        out.append(t)
    return out


def _stance(rng: random.Random, p: _Persona, item: _Item) -> str:
    if p.kind != "benign" and item in p.targets:
        if item.brand == p.fav_brand:
            return "pos" if rng.random() < 0.9 else "mixed"
        return "neg" if rng.random() < 0.85 else "mixed"
    r = rng.random()
    if r < p.positivity:
        return "pos"
    return "mixed" if r < p.positivity + (1 - p.positivity) / 2 else "neg"


def _extra(rng: random.Random, p: _Persona, item: _Item, stance: str) -> str | None:
    if p.kind != "benign" and rng.random() < p.spam_rate:
        if p.kind == "promoter":
            return "promo"
        if p.kind == "attacker":
            return "attack" if rng.random() < 0.75 else "promo"
        return "promo" if rng.random() < 0.6 else "attack"
    rate = p.superlative_rate
    if p.kind != "benign" and item.brand == p.fav_brand:
        rate = HYPE_RATE
    if stance == "pos" and rng.random() < rate:
        return "superlative"
    if rng.random() < p.deal_rate:
        return "deal"
    return None


def _simulate_user(uid: str, label: int, kind: str, seed: int, index: int, cata: _Catalogue,
                   min_posts: int, max_posts: int) -> User:
    # one RNG per user, derived from (seed, index): users do not depend on each other's draws
    rng = random.Random(f"advseq-demo:{seed}:user:{index}")
    n = rng.randint(min_posts, max_posts)
    persona = _draw_persona(rng, kind, cata)
    gen = _UserGen(rng, persona, _draw_style(rng, label == MALICIOUS), cata)
    items = _item_sequence(rng, persona, cata, n)
    times = _timestamps(rng, kind, n)
    final = items[-1]
    posts: list[Post] = []
    seen: list[int] = []
    for t, (item, ts) in enumerate(zip(items, times, strict=True)):
        stance = _stance(rng, persona, item)
        text = gen.post(item, stance, revisit=item.index in seen,
                        extra=_extra(rng, persona, item, stance))
        seen.append(item.index)
        relevancy = None if t == n - 1 else float(item.index == final.index)
        posts.append(Post(text, context=item.context, timestamp=ts, relevancy=relevancy))
    return User(uid, label, tuple(posts))


def _check_args(n_users: int, seed: int, malicious_share: float, min_posts: int,
                max_posts: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if isinstance(n_users, bool) or not isinstance(n_users, int) or n_users < 4:
        raise ConfigError(f"n_users must be an integer >= 4, got {n_users!r}")
    if not isinstance(malicious_share, (int, float)) or not 0.0 < malicious_share < 1.0:
        raise ConfigError(f"malicious_share must be in (0, 1), got {malicious_share!r}")
    if not isinstance(min_posts, int) or not isinstance(max_posts, int):
        raise ConfigError("min_posts and max_posts must be integers")
    if min_posts < 2:
        raise ConfigError(f"min_posts must be >= 2 (a history and a final post), got {min_posts}")
    if min_posts > max_posts:
        raise ConfigError(f"min_posts ({min_posts}) must not exceed max_posts ({max_posts})")


def simulate(n_users: int = 500, seed: int = 0, *, malicious_share: float = 0.5,
             min_posts: int = 8, max_posts: int = 24) -> Dataset:
    """Simulate ``n_users`` users of the review platform; the same arguments give the
    same dataset, byte for byte. Both classes get at least one user."""
    _check_args(n_users, seed, malicious_share, min_posts, max_posts)
    cata = _build_catalogue(seed)
    rng = random.Random(f"advseq-demo:{seed}:labels")
    n_mal = min(n_users - 1, max(1, round(n_users * malicious_share)))
    labels = [MALICIOUS] * n_mal + [BENIGN] * (n_users - n_mal)
    rng.shuffle(labels)
    mal_kinds = list(MALICIOUS_KINDS)
    users = []
    for i, label in enumerate(labels):
        kind = "benign"
        if label == MALICIOUS:
            kind = rng.choices(mal_kinds, [MALICIOUS_KINDS[k] for k in mal_kinds])[0]
        users.append(_simulate_user(f"demo-{i + 1:06d}", label, kind, seed, i, cata,
                                    min_posts, max_posts))
    return Dataset(users, name="demo", source=f"advseq.simulate(seed={seed})")


# ---------------------------------------------------------------------------------------
# Dataset card
# ---------------------------------------------------------------------------------------

def _file_sha256(dataset: Dataset) -> str:
    """sha256 of the file save_jsonl writes for ``dataset`` (one JSON object a line)."""
    h = hashlib.sha256()
    for line in dataset.to_jsonl():
        h.update(line.encode("utf-8") + b"\n")
    return h.hexdigest()


def _fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def _range(r: tuple[float, float], pct: bool = False) -> str:
    if pct:
        return f"{r[0] * 100:.0f}-{r[1] * 100:.0f}%"
    return f"{_fmt(r[0])}-{_fmt(r[1])}"


def _class_stats(users: list[User]) -> dict[str, str]:
    if not users:
        return dict.fromkeys(("users", "posts", "words", "rel", "contexts", "gap"), "-")
    counts = [len(u.posts) for u in users]
    words = [len(p.text.split()) for u in users for p in u.posts]
    rel = [p.relevancy for u in users for p in u.posts[:-1] if p.relevancy is not None]
    gaps = [b.timestamp - a.timestamp for u in users for a, b in zip(u.posts[:-1], u.posts[1:], strict=True)
            if a.timestamp is not None and b.timestamp is not None]
    contexts = {p.context for u in users for p in u.posts}
    return {
        "users": str(len(users)),
        "posts": f"{min(counts)} / {_fmt(statistics.median(counts))} / "
                 f"{statistics.mean(counts):.1f} / {max(counts)}",
        "words": f"{_fmt(statistics.median(words))} / {statistics.mean(words):.1f}",
        "rel": f"{100 * sum(rel) / max(1, len(rel)):.1f}%",
        "contexts": str(len(contexts)),
        "gap": f"{100 * sum(g < 3600 for g in gaps) / max(1, len(gaps)):.1f}%",
    }


def _tfidf_cv_accuracy(dataset: Dataset, seed: int) -> float:
    """5-fold CV accuracy of TF-IDF (word 1-2-grams) + logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    docs = [" ".join(u.texts) for u in dataset]
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                          LogisticRegression(max_iter=2000, solver="liblinear"))
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    return float(cross_val_score(model, docs, dataset.labels, cv=cv).mean())


def dataset_card(dataset: Dataset, *, seed: int, n_users: int) -> str:
    """A Markdown dataset card for ``dataset``, which should be ``simulate(n_users, seed)``
    (the card says so loudly when it is not)."""
    reference = simulate(n_users, seed)
    matches = reference.checksum() == dataset.checksum()
    cata = _build_catalogue(seed)
    benign = [u for u in dataset if u.label == BENIGN]
    malicious = [u for u in dataset if u.label == MALICIOUS]
    sb, sm = _class_stats(benign), _class_stats(malicious)
    n_posts = dataset.n_posts
    contexts = {p.context for u in dataset for p in u.posts}
    cats = ", ".join(c.key for c in _CATEGORIES)
    kinds = "\n".join(
        f"| {k} | {MALICIOUS_KINDS[k] * 100:.0f}% | {_range(TARGET_FOCUS[k], True)} | "
        f"{_range(SPAM_RATE[k], True)} | {_range(BURST_PROB[k], True)} |"
        for k in MALICIOUS_KINDS)
    cmd = f"advseq data simulate --users {n_users} --seed {seed} --out data/demo/users.jsonl"
    audit = shortcut_audit(dataset, seed=seed)
    audit_rows = "\n".join(f"| {r['description']} | {r['accuracy']:.3f} | {r['f1']:.3f} |"
                           for r in audit)
    quick_acc = next((r["accuracy"] for r in audit if r["shortcut"] == "share_quick_gaps"), 0.5)
    tfidf_acc = _tfidf_cv_accuracy(dataset, seed)
    warning = "" if matches else (
        "\n> **Warning:** this dataset is *not* what the command below produces "
        f"(`simulate(n_users={n_users}, seed={seed})` with default options has a different "
        "checksum). It was made with other options or edited afterwards; the statistics "
        "below describe the dataset as given.\n")
    return f"""# demo — simulated review platform (advseq)

`users.jsonl`: {len(dataset)} users, one JSON object per line, {n_posts:,} posts in total.
Synthetic: every user, item and text was generated by advseq's simulator
(`advseq.simulate`). It imitates the shape of the PETGEN Wikipedia data (user post
sequences with a context per post and 0/1 relevancy flags) for demos and tests.
{warning}
## Provenance and licence

- Made by `advseq.simulate.simulate(n_users={n_users}, seed={seed})` (malicious share
  0.5, 8-24 posts per user). No real people, no third-party text: all brands, stores,
  authors, titles and restaurants are made up, and the texts come from the module's
  own template grammar.
- Licence: same as the advseq project (MIT).
- Content checksum (`Dataset.checksum()`): `{dataset.checksum()}`.
- `users.jsonl` sha256 as written by `advseq.io.jsonl.save_jsonl`: `{_file_sha256(dataset)}`.

## Regenerate

```
{cmd}
```

The simulator is deterministic: the same `--users` and `--seed` give a byte-identical
file on any machine with the same Python version (seeded `random.Random` instances, no
global RNG state; Python only guarantees `random()` itself across versions).

## How it is made

**Items (the contexts).** A review platform with {len(cata.items)} items in {len(_CATEGORIES)}
categories:
{cats};
5 made-up brands per category with 2-4 items each (books: authors and titles;
restaurants: chains and branches). Each item has a 1-2 sentence lowercase
description (~15-30 words), which is the `context` of every post about that item (like a
Wikipedia page's lead text in PETGEN). Item popularity within a category is Zipf-like.
Two brands per category are "shill-prone": sponsors come from them with probability
{SPONSOR_FROM_SHILL_PRONE:.0%}, and benign fans pick their favourite brand the same way, so
brand names alone do not give a user away.

**Posts.** Each post is 1-4 sentences from a template grammar (openers, positive /
negative / mixed aspect sentences, usage details, questions, verdicts, follow-ups for
items the user wrote about before), filled with the item's name, brand, category
aspects and the user's favourite adjectives, and cut to a per-post word target drawn
around the user's own mean ({_range(POST_WORDS_MEAN)} words, the same range for both
classes; {POST_WORDS_BOUNDS[0]}-{POST_WORDS_BOUNDS[1]} words per post). Posts per user:
uniform in [8, 24] for both classes.

**Benign users (label 0).** 1-3 favourite categories with personal weights (their
recent interests); with probability {DRIFT_PROB:.0%} one favourite is replaced by a new
category part-way through the sequence; {EXPLORE_PROB:.0%} of posts go to a random
category; {_range(RETURN_PROB, True)} of posts return to an item reviewed before.
Per-user share of positive posts {_range(POSITIVITY, True)}; superlatives in {_range(SUPERLATIVE_RATE, True)} of posts and
mentions of sales or stores in {_range(DEAL_RATE, True)}. {BENIGN_FAN_SHARE:.0%} are fans of
one brand and pick it for {_range(FAN_FOCUS, True)} of their posts in its category.

**Malicious users (label 1).** Each has a sponsored brand and the same benign-looking
interests (which include the sponsor's category with probability
{SPONSOR_IN_INTERESTS:.0%}). A share of their posts is about target items: the sponsor's
items (praised, with superlatives in {HYPE_RATE:.0%} of those posts) or, for attackers,
three competitor items of the same category (mostly panned) and one sponsor item. Some
posts carry one promotional sentence (discount codes, made-up stores, "link in bio",
"dm me", calls to action) or one mildly abusive sentence about a competitor ("total
rip-off", "overhyped trash"; no slurs), which replaces an ordinary sentence so post
length does not change. The rest of their posts are ordinary reviews.

| kind | share of malicious | posts on targets | posts with spam | P(next post in same session) |
| --- | --- | --- | --- | --- |
{kinds}

Sleepers have a low spam rate and little focus: many are indistinguishable from benign
users by design.

**Style.** Every user has a personal style, only weakly class-dependent: casing (all
lowercase, sentence case, capitalised brands, or occasional SHOUTING), a preferred
sentence ending ("!", "!!", "...", or none) used on part of the sentences, an
emoticon (":)", "xD", "<3", ...) on some posts, prefix/suffix signature phrases
("tbh, ...", "... just my two cents."), contractions or not, texting abbreviations
("u", "tho", "cuz") for ~15% of users, habitual misspellings for ~30%, hashtags for
~25%, 2-4 favourite adjectives, a favourite intensifier, and a job, city and hobby that
the user mentions now and then.

**Timestamps** are seconds since the Unix epoch (UTC), whole seconds; each user starts
between 2019-01-01 and 2023-01-01. The next post falls in the same session (gap
log-normal around {_range(SESSION_GAP_MIN['benign'])} minutes for benign users,
{_range(SESSION_GAP_MIN['malicious'])} for malicious ones) with the per-user probability in the
table above (benign: {_range(BURST_PROB['benign'], True)}); otherwise the gap is log-normal
around {_range(OTHER_GAP_DAYS['benign'])} days (benign) or {_range(OTHER_GAP_DAYS['malicious'])}
days (malicious). So malicious accounts post in bursts, benign ones spread out over weeks,
with overlap. Timestamps are non-decreasing within a user.

**Relevancy** follows the PETGEN semantics: for every post but the last, 1.0 when it is
about the same item as the user's final post, else 0.0; `null` for the final post. A
per-user share of the history ({_range(RELEVANT_SHARE['benign'], True)} benign,
{_range(RELEVANT_SHARE['malicious'], True)} malicious) is made to revisit the final item,
as one block just before the final post with probability {RELEVANT_BLOCK_PROB:.0%}
(otherwise scattered); chance revisits add a little.

## Format

Same as the other bundled datasets:
`{{"user_id": "demo-000001", "label": 0, "posts": [{{"text": ..., "context": ...,
"timestamp": ..., "relevancy": ...}}, ...]}}`, posts oldest first. `label`: 1 = malicious.

## Statistics

| | benign (0) | malicious (1) |
| --- | --- | --- |
| users | {sb['users']} | {sm['users']} |
| posts per user, min / median / mean / max | {sb['posts']} | {sm['posts']} |
| words per post, median / mean | {sb['words']} | {sm['words']} |
| relevancy = 1 among non-final posts | {sb['rel']} | {sm['rel']} |
| gaps between consecutive posts under one hour | {sb['gap']} | {sm['gap']} |
| distinct items (contexts) | {sb['contexts']} | {sm['contexts']} |

{len(contexts)} distinct contexts in total, out of {len(cata.items)} items.

## Caveats

- **Synthetic, and the signals are planted by design.** A detector can learn what the
  simulator puts in: promotional and abusive phrases, concentration on a few brands and
  items, extreme sentiment toward target items, and (from timestamps) burstiness. It
  cannot learn anything about real spam, real reviewers or real language: the grammar
  is small, texts are repetitive and there is no world knowledge behind them.
- The task is deliberately not separable: sleeper accounts and unlucky draws of the
  other kinds look benign, and benign fans, grumpy reviewers and deal hunters look a
  little malicious. TF-IDF (word 1-2-grams) + logistic regression on a user's
  concatenated posts scores {tfidf_acc:.3f} accuracy on this file (5-fold CV); a
  perfect score would mean a leak, not a good model.
- Post counts and post lengths have the same distribution in both classes, so
  length-only baselines are near chance (unlike the PETGEN wiki data).
- Timestamps are a side channel: a decision stump on the share of gaps under an hour
  alone scores {quick_acc:.3f} accuracy on this file. A detector that reads timestamps
  has an easier task than one that reads text only.
- Malicious users revisit their final item a little more often (relevancy = 1 share
  above), as in the PETGEN wiki data.
- Style is per user and nearly class-independent, which is what PETGEN's generator has
  to imitate; it is template-made and much less varied than real writing.

## Shortcut audit

What detectors that read no text get on this file (`advseq data info
data/demo/users.jsonl`; decision stumps, 5-fold CV):

| shortcut | accuracy | F1 (malicious) |
| --- | --- | --- |
{audit_rows}
"""
