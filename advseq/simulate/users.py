"""Users' post sequences (items, timestamps, stances, spam) and :func:`simulate`, which
draws the whole platform."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from advseq.errors import ConfigError
from advseq.schema import BENIGN, MALICIOUS, Dataset, Post, User
from advseq.simulate.catalogue import Catalogue, Item, build_catalogue
from advseq.simulate.lexicon import CATEGORIES
from advseq.simulate.params import (
    BURST_PROB,
    EXPLORE_PROB,
    HYPE_RATE,
    MALICIOUS_KINDS,
    OTHER_GAP_DAYS,
    RELEVANT_BLOCK_PROB,
    RELEVANT_SHARE,
    SESSION_GAP_MIN,
    START_MAX,
    START_MIN,
)
from advseq.simulate.personas import Persona, draw_persona, draw_style
from advseq.simulate.text import UserGen


def _item_sequence(rng: random.Random, p: Persona, cata: Catalogue, n: int) -> list[Item]:
    drift_at = rng.randint(n // 3, n - 1) if p.drifts else n
    seq: list[Item] = []
    for t in range(n):
        cats = p.interests if t < drift_at else p.drift_to
        if p.kind != "benign" and rng.random() < p.focus:
            seq.append(rng.choice(p.targets))
            continue
        if seq and rng.random() < p.return_prob:
            seq.append(rng.choice(seq))
            continue
        if rng.random() < EXPLORE_PROB:
            key = rng.choice(CATEGORIES).key
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


def _stance(rng: random.Random, p: Persona, item: Item) -> str:
    if p.kind != "benign" and item in p.targets:
        if item.brand == p.fav_brand:
            return "pos" if rng.random() < 0.9 else "mixed"
        return "neg" if rng.random() < 0.85 else "mixed"
    r = rng.random()
    if r < p.positivity:
        return "pos"
    return "mixed" if r < p.positivity + (1 - p.positivity) / 2 else "neg"


def _extra(rng: random.Random, p: Persona, item: Item, stance: str) -> str | None:
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


def _simulate_user(uid: str, label: int, kind: str, seed: int, index: int, cata: Catalogue,
                   min_posts: int, max_posts: int) -> User:
    # one RNG per user, derived from (seed, index): users do not depend on each other's draws
    rng = random.Random(f"advseq-demo:{seed}:user:{index}")
    n = rng.randint(min_posts, max_posts)
    persona = draw_persona(rng, kind, cata)
    gen = UserGen(rng, persona, draw_style(rng, label == MALICIOUS), cata)
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
    cata = build_catalogue(seed)
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

