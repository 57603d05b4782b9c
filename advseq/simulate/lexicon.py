"""The simulator's words: categories, template grammar and word lists, from ``lexicon.json``.

``lexicon.json`` holds every word the simulator writes, read once at import and frozen
into tuples here; list order in the file is the order of the random draws, so reordering
an entry changes the generated data. Its sections:

* ``categories``: the platform's item categories (:class:`Category`), each with its own
  aspects, usages, item kinds, features, audiences, made-up brands, model names and price
  range; ``title_nouns`` and ``model_suffixes`` build item names.
* ``templates``: the template grammar, one pool per sentence type. ``"{slot}"`` fields
  are filled by :class:`advseq.simulate.text.Slots`; the group tag after a template
  restricts it to ``product``, ``book`` or ``place`` categories (``*`` = any). ``self``
  sentences are about the writer (each user has one job, city and hobby, so these stay
  consistent); ``superlative`` and ``deal`` sentences are used by every user at a low
  per-user rate; ``promo`` and ``attack`` are malicious only, and their group tag refers
  to the *sponsor's* (or the attacked item's) category.
* ``adjectives``: positive and negative adjectives, plus category-specific descriptors
  mixed into ``{pos}``/``{neg}`` for realism and vocabulary; ``category_details``:
  category-specific things to mention (products used with, dishes, scenes).
* ``slot_words``, ``discount_pcts``, ``again``, ``stars``: the values of the other slots.
* ``style``: signatures, hashtags, emoticons, sentence endings (``""`` drops the final
  full stop), contractions, texting abbreviations, habitual misspellings and the words a
  shouting user capitalises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

_DATA: dict[str, Any] = json.loads(
    resources.files(__package__).joinpath("lexicon.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Category:
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


def _frozen(value: Any) -> Any:
    """``value`` with every JSON list turned into a tuple (dicts keep their key order)."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    return value


CATEGORIES: tuple[Category, ...] = tuple(
    Category(**_frozen(c)) for c in _DATA["categories"])
TITLE_NOUNS: tuple[str, ...] = _frozen(_DATA["title_nouns"])
MODEL_SUFFIX: tuple[str, ...] = _frozen(_DATA["model_suffixes"])
ALL_BRANDS = tuple(b for c in CATEGORIES for b in c.brands)

_adjectives = _frozen(_DATA["adjectives"])
POS_ADJ: tuple[str, ...] = _adjectives["pos"]
NEG_ADJ: tuple[str, ...] = _adjectives["neg"]
#: per category key: (positive, negative) descriptors
CAT_ADJ: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    k: (v["pos"], v["neg"]) for k, v in _adjectives["by_category"].items()}
CAT_DETAILS: dict[str, tuple[str, ...]] = _frozen(_DATA["category_details"])

_slot_words = _frozen(_DATA["slot_words"])
INTENS: tuple[str, ...] = _slot_words["intensifiers"]
DURATIONS: tuple[str, ...] = _slot_words["durations"]
TIME_AGO: tuple[str, ...] = _slot_words["time_ago"]
RELATIONS: tuple[str, ...] = _slot_words["relations"]
FIRST_NAMES: tuple[str, ...] = _slot_words["first_names"]
DAMAGE: tuple[str, ...] = _slot_words["damage"]
SUPPORT: tuple[str, ...] = _slot_words["support"]
COURIER: tuple[str, ...] = _slot_words["courier"]
STAFF: tuple[str, ...] = _slot_words["staff"]
COPY: tuple[str, ...] = _slot_words["copy"]
HOLIDAYS: tuple[str, ...] = _slot_words["holidays"]
PLACES: tuple[str, ...] = _slot_words["places"]
JOBS: tuple[str, ...] = _slot_words["jobs"]
CITIES: tuple[str, ...] = _slot_words["cities"]
HOBBIES: tuple[str, ...] = _slot_words["hobbies"]
TRIPS: tuple[str, ...] = _slot_words["trips"]
REACTIONS: tuple[str, ...] = _slot_words["reactions"]
WEATHER: tuple[str, ...] = _slot_words["weather"]
SEATS: tuple[str, ...] = _slot_words["seats"]
OCCASIONS: tuple[str, ...] = _slot_words["occasions"]
NEEDS: tuple[str, ...] = _slot_words["needs"]
VALUE: tuple[str, ...] = _slot_words["value"]
STORES: tuple[str, ...] = _slot_words["stores"]
PCTS: tuple[int, ...] = _frozen(_DATA["discount_pcts"])
#: per category group: ("would buy it again", "probably will not ...")
AGAIN: dict[str, tuple[str, str]] = _frozen(_DATA["again"])
#: per stance ("pos", "neg", "mid"): star ratings
STARS: dict[str, tuple[str, ...]] = _frozen(_DATA["stars"])

_style = _frozen(_DATA["style"])
PREFIX_SIGS: tuple[str, ...] = _style["prefix_signatures"]
SUFFIX_SIGS: tuple[str, ...] = _style["suffix_signatures"]
HASHTAGS: tuple[str, ...] = _style["hashtags"]
EMOTICONS: tuple[str, ...] = _style["emoticons"]
ENDINGS: tuple[str, ...] = _style["endings"]
CONTRACTIONS: dict[str, str] = _style["contractions"]
TEXTING: dict[str, str] = _style["texting"]
TYPOS: dict[str, str] = _style["typos"]
EMPHASIS: tuple[str, ...] = _style["emphasis"]


def _for_group(templates: tuple[tuple[str, str], ...], group: str) -> tuple[str, ...]:
    return tuple(t for t, groups in templates if groups == "*" or group in groups.split())


_GROUPS = ("product", "book", "place")
#: per sentence type, per category group: the templates that apply
POOLS: dict[str, dict[str, tuple[str, ...]]] = {
    name: {g: _for_group(templates, g) for g in _GROUPS}
    for name, templates in _frozen(_DATA["templates"]).items()
}


def is_plural(noun_phrase: str) -> bool:
    last = noun_phrase.rsplit(" ", 1)[-1]
    return last.endswith("s") and last not in ("bass", "lens", "autofocus")
