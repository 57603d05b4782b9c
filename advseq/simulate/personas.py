"""Simulated users: each user's personal writing style and persona (interests, sentiment,
and for malicious accounts the sponsor, targets, stores and discount codes)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from advseq.simulate.catalogue import Catalogue, Item
from advseq.simulate.lexicon import (
    CATEGORIES,
    CITIES,
    EMOTICONS,
    ENDINGS,
    HASHTAGS,
    HOBBIES,
    INTENS,
    JOBS,
    PCTS,
    POS_ADJ,
    PREFIX_SIGS,
    STORES,
    SUFFIX_SIGS,
    Category,
)
from advseq.simulate.params import (
    BENIGN_FAN_SHARE,
    DEAL_RATE,
    DRIFT_PROB,
    FAN_FOCUS,
    POSITIVITY,
    POST_WORDS_MEAN,
    RETURN_PROB,
    SPAM_RATE,
    SPONSOR_FROM_SHILL_PRONE,
    SPONSOR_IN_INTERESTS,
    SUPERLATIVE_RATE,
    TARGET_FOCUS,
)


@dataclass
class Style:
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
class Persona:
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
    targets: list[Item] = field(default_factory=list)  # items a malicious user pushes/attacks
    stores: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()


def draw_style(rng: random.Random, malicious: bool) -> Style:
    # weakly class-dependent: malicious accounts lean slightly towards "!" and shouting
    endings_w = (3, 2, 2, 2) if malicious else (2, 1, 2, 2)
    casing_w = (4, 4, 2, 2) if malicious else (4, 4, 2, 1)
    has_sig = rng.random() < 0.7
    sig_pos = rng.random()
    return Style(
        casing=rng.choices(("lower", "sentence", "proper", "shouty"), casing_w)[0],
        ending=rng.choices(ENDINGS, endings_w)[0] if rng.random() < 0.6 else None,
        ending_rate=rng.uniform(0.2, 0.9),
        emoticon=rng.choice(EMOTICONS) if rng.random() < 0.5 else None,
        emoticon_rate=rng.uniform(0.05, 0.4),
        prefix_sig=rng.choice(PREFIX_SIGS) if has_sig and sig_pos < 0.6 else None,
        suffix_sig=rng.choice(SUFFIX_SIGS) if has_sig and sig_pos > 0.4 else None,
        sig_rate=rng.uniform(0.05, 0.5),
        contractions=rng.random() < 0.55,
        texting=rng.random() < 0.15,
        typo_rate=rng.uniform(0.05, 0.3) if rng.random() < 0.3 else 0.0,
        fav_adjectives=tuple(rng.sample(POS_ADJ, rng.randint(2, 4))),
        fav_intens=rng.choice(INTENS),
        mean_words=rng.uniform(*POST_WORDS_MEAN),
        hashtags=tuple(rng.sample(HASHTAGS, rng.randint(1, 3))),
        hashtag_rate=rng.uniform(0.05, 0.35) if rng.random() < 0.25 else 0.0,
        job=rng.choice(JOBS),
        city=rng.choice(CITIES),
        hobby=rng.choice(HOBBIES),
    )


def _pick_brand(rng: random.Random, cat: Category, cata: Catalogue) -> str:
    if rng.random() < SPONSOR_FROM_SHILL_PRONE:
        return rng.choice(cata.shill_prone[cat.key])
    return rng.choice(cat.brands)


def draw_persona(rng: random.Random, kind: str, cata: Catalogue) -> Persona:
    keys = [c.key for c in CATEGORIES]
    interests = rng.sample(keys, rng.choices((1, 2, 3), (3, 4, 3))[0])
    drift_to = list(interests)
    drifts = rng.random() < DRIFT_PROB
    if drifts:
        drift_to[rng.randrange(len(drift_to))] = rng.choice([k for k in keys if k not in interests])
    persona = Persona(
        kind=kind, interests=interests, weights=[rng.uniform(0.5, 2.0) for _ in interests],
        drifts=drifts, drift_to=drift_to, positivity=rng.uniform(*POSITIVITY),
        return_prob=rng.uniform(*RETURN_PROB), superlative_rate=rng.uniform(*SUPERLATIVE_RATE),
        deal_rate=rng.uniform(*DEAL_RATE),
    )
    if kind == "benign":
        if rng.random() < BENIGN_FAN_SHARE:
            fav_key = rng.choice(interests)
            cat = next(c for c in CATEGORIES if c.key == fav_key)
            persona.fav_brand = _pick_brand(rng, cat, cata)
            persona.focus = rng.uniform(*FAN_FOCUS)
        return persona
    cat = rng.choice(CATEGORIES)
    sponsor = _pick_brand(rng, cat, cata)
    if cat.key not in interests and rng.random() < SPONSOR_IN_INTERESTS:
        interests[rng.randrange(len(interests))] = cat.key
    persona.fav_brand = sponsor
    persona.focus = rng.uniform(*TARGET_FOCUS[kind])
    persona.spam_rate = rng.uniform(*SPAM_RATE[kind])
    persona.stores = tuple(rng.sample(STORES, rng.randint(1, 2)))
    persona.codes = tuple(
        rng.choice((sponsor.split()[0].upper(), "SAVE", "VIP", "DEAL", "PROMO")) + str(pct)
        for pct in rng.sample(PCTS, rng.randint(1, 2)))
    sponsored = cata.by_brand[sponsor]
    competitors = [i for i in cata.by_cat[cat.key] if i.brand != sponsor]
    if kind == "attacker":
        # attackers pick on three competitor items, and still push one sponsor item
        persona.targets = rng.sample(competitors, min(3, len(competitors))) + sponsored[:1]
    else:
        persona.targets = list(sponsored)
    return persona

