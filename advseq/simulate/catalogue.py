"""The platform's catalogue: items (the posts' contexts) of every category, their
descriptions, popularity and the brands that hire shills."""

from __future__ import annotations

import random
from dataclasses import dataclass

from advseq.simulate.lexicon import CATEGORIES, MODEL_SUFFIX, TITLE_NOUNS, Category


@dataclass(frozen=True)
class Item:
    index: int
    cat: Category
    brand: str
    name: str
    context: str
    price: int
    features: tuple[str, ...]  # the features its description names


@dataclass
class Catalogue:
    items: list[Item]
    by_cat: dict[str, list[Item]]
    by_brand: dict[str, list[Item]]
    popularity: dict[str, list[float]]  # per category, aligned with by_cat
    shill_prone: dict[str, list[str]]  # per category: brands that hire shills


def _describe(rng: random.Random, cat: Category, brand: str, name: str,
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


def build_catalogue(seed: int) -> Catalogue:
    rng = random.Random(f"advseq-demo:{seed}:catalogue")
    items: list[Item] = []
    by_cat: dict[str, list[Item]] = {}
    by_brand: dict[str, list[Item]] = {}
    popularity: dict[str, list[float]] = {}
    shill_prone: dict[str, list[str]] = {}
    for cat in CATEGORIES:
        cat_items: list[Item] = []
        for brand in cat.brands:
            n_items = rng.randint(2, 4)
            for model in rng.sample(cat.models, n_items):
                if cat.group == "book":
                    name = f"{model} {rng.choice(TITLE_NOUNS)}"
                    while any(i.name == name for i in cat_items):
                        name = f"{model} {rng.choice(TITLE_NOUNS)}"
                elif cat.group == "place":
                    name = f"{brand} {model}"
                else:
                    name = f"{brand} {model}{rng.choice(MODEL_SUFFIX)}"
                price = rng.randint(*cat.price)
                context, features = _describe(rng, cat, brand, name, price)
                item = Item(len(items), cat, brand, name, context, price, features)
                items.append(item)
                cat_items.append(item)
                by_brand.setdefault(brand, []).append(item)
        by_cat[cat.key] = cat_items
        # Zipf-like popularity over a random order of the category's items
        ranks = list(range(1, len(cat_items) + 1))
        rng.shuffle(ranks)
        popularity[cat.key] = [1.0 / r**0.8 for r in ranks]
        shill_prone[cat.key] = rng.sample(cat.brands, 2)
    return Catalogue(items, by_cat, by_brand, popularity, shill_prone)

