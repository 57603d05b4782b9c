"""Post text: one user's sentences from the template grammar, cut to a per-post length and
written in the user's own style."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from advseq.simulate.catalogue import Catalogue, Item
from advseq.simulate.lexicon import (
    AGAIN,
    ALL_BRANDS,
    CAT_ADJ,
    CAT_DETAILS,
    CONTRACTIONS,
    COPY,
    COURIER,
    DAMAGE,
    DURATIONS,
    EMPHASIS,
    FIRST_NAMES,
    HOLIDAYS,
    INTENS,
    NEEDS,
    NEG_ADJ,
    OCCASIONS,
    PCTS,
    PLACES,
    POOLS,
    POS_ADJ,
    REACTIONS,
    RELATIONS,
    SEATS,
    STAFF,
    STARS,
    STORES,
    SUPPORT,
    TEXTING,
    TIME_AGO,
    TRIPS,
    TYPOS,
    VALUE,
    WEATHER,
    Category,
    is_plural,
)
from advseq.simulate.params import POST_WORDS_BOUNDS
from advseq.simulate.personas import Persona, Style


def _word_regex(words: Sequence[str]) -> re.Pattern[str]:
    alternatives = sorted(words, key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in alternatives) + r")\b")


_CONTRACTION_RE = _word_regex(list(CONTRACTIONS))
_TEXTING_RE = _word_regex(list(TEXTING))
_TYPO_RE = _word_regex(list(TYPOS))
_EMPHASIS_RE = _word_regex(EMPHASIS)
_BRAND_RE = _word_regex(ALL_BRANDS)
_SENTENCE_START_RE = re.compile(r"(^|[.!?]\s+)([a-z])")
_PRONOUN_I_RE = re.compile(r"\bi\b")
_FULL_STOP_RE = re.compile(r"(?<![.\d])\.(?=\s|$)")


class Slots(dict[str, str]):
    """Fills template fields on first use (so one sentence reuses one value per field)."""

    def __init__(self, gen: UserGen, item: Item, used_aspects: list[str]) -> None:
        super().__init__()
        self.gen = gen
        self.item = item
        self.used = used_aspects

    def __missing__(self, key: str) -> str:
        value = self.gen.slot(key, self)
        self[key] = value
        return value


class UserGen:
    """Writes one user's posts with the user's persona and style, drawing from the
    user's own RNG."""

    def __init__(self, rng: random.Random, persona: Persona, style: Style,
                 cata: Catalogue) -> None:
        self.rng = rng
        self.p = persona
        self.s = style
        self.cata = cata
        self.attack_target: Item | None = None

    # -- slots ------------------------------------------------------------------------
    def _aspect(self, cat: Category, used: list[str]) -> str:
        free = [a for a in cat.aspects if a not in used] or list(cat.aspects)
        aspect = self.rng.choice(free)
        used.append(aspect)
        return aspect

    def _pos_adj(self, cat: Category) -> str:
        r = self.rng.random()
        if r < 0.4:
            return self.rng.choice(self.s.fav_adjectives)
        if r < 0.65:
            return self.rng.choice(CAT_ADJ[cat.key][0])
        return self.rng.choice(POS_ADJ)

    def slot(self, key: str, slots: Slots) -> str:
        rng, item, cat = self.rng, slots.item, slots.item.cat
        if key in ("aspect", "aspect2"):
            return self._aspect(cat, slots.used)
        # verb agreement with the aspect filled into the same sentence
        if key in ("is", "s", "it_feels"):
            plural = is_plural(slots["aspect"])
            return {"is": ("is", "are"), "s": ("s", ""),
                    "it_feels": ("it feels", "they feel")}[key][plural]
        if key == "is2":
            return "are" if is_plural(slots["aspect2"]) else "is"
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
            "trip": lambda: rng.choice(TRIPS),
            "detail": lambda: rng.choice(CAT_DETAILS[cat.key]),
            "damage": lambda: rng.choice(DAMAGE),
            "support": lambda: rng.choice(SUPPORT),
            "courier": lambda: rng.choice(COURIER),
            "staff": lambda: rng.choice(STAFF),
            "copy": lambda: rng.choice(COPY),
            "holiday": lambda: rng.choice(HOLIDAYS),
            "place": lambda: rng.choice(PLACES),
            "job": lambda: self.s.job,
            "city": lambda: self.s.city,
            "hobby": lambda: self.s.hobby,
            "reaction": lambda: rng.choice(REACTIONS),
            "weather": lambda: rng.choice(WEATHER),
            "seat": lambda: rng.choice(SEATS),
            "occasion": lambda: rng.choice(OCCASIONS),
            "pos2": lambda: rng.choice([a for a in POS_ADJ if a != slots["pos"]]),
            "neg": lambda: (rng.choice(CAT_ADJ[cat.key][1]) if rng.random() < 0.35
                            else rng.choice(NEG_ADJ)),
            "intens": lambda: (self.s.fav_intens if rng.random() < 0.6 else rng.choice(INTENS)),
            "duration": lambda: rng.choice(DURATIONS),
            "time_ago": lambda: rng.choice(TIME_AGO),
            "relation": lambda: (f"friend {rng.choice(FIRST_NAMES)}" if rng.random() < 0.25
                                 else rng.choice(RELATIONS)),
            "needs": lambda: rng.choice(NEEDS),
            "value": lambda: rng.choice(VALUE),
            "price": lambda: f"${max(5, round(item.price * rng.uniform(0.8, 1.15)))}",
            "pct": lambda: str(rng.choice(PCTS)),
            "other_brand": lambda: rng.choice([b for b in cat.brands if b != item.brand]),
            "stars_pos": lambda: rng.choice(STARS["pos"]),
            "stars_neg": lambda: rng.choice(STARS["neg"]),
            "stars_mid": lambda: rng.choice(STARS["mid"]),
            "again_yes": lambda: AGAIN[cat.group][0],
            "again_no": lambda: AGAIN[cat.group][1],
            "store": lambda: rng.choice(self.p.stores or STORES),
            "sponsor": lambda: self.p.fav_brand or item.brand,
            "sponsor_item": lambda: rng.choice(self._sponsor_items()).name,
            "sponsor_noun": lambda: self._sponsor_items()[0].cat.noun,
            "target": lambda: self._target().name,
            "target_brand": lambda: self._target().brand,
            "t_aspect": lambda: rng.choice(self._target().cat.aspects),
            "t_is": lambda: "are" if is_plural(slots["t_aspect"]) else "is",
            "t_noun": lambda: self._target().cat.noun,
            "t_owned": lambda: self._target().cat.owned,
        }
        return simple[key]()

    def _sponsor_items(self) -> list[Item]:
        return self.cata.by_brand[self.p.fav_brand] if self.p.fav_brand else [self.cata.items[0]]

    def _target(self) -> Item:
        assert self.attack_target is not None
        return self.attack_target

    def _sentence(self, pool: str, item: Item, used: list[str], group: str | None = None) -> str:
        template = self.rng.choice(POOLS[pool][group or item.cat.group])
        return template.format_map(Slots(self, item, used))

    # -- one post ---------------------------------------------------------------------
    def post(self, item: Item, stance: str, *, revisit: bool, extra: str | None) -> str:
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

    def _pick_attack_target(self, item: Item) -> Item:
        """The post's own item when it is a competitor target, else a random one."""
        attackable = [t for t in self.p.targets if t.brand != self.p.fav_brand]
        if item in attackable or not attackable:
            return item
        return self.rng.choice(attackable)

    def _typo(self, word: str) -> str:
        # "teh" everywhere would drown the other habits: the commonest word errs less often
        rate = self.s.typo_rate / 4 if word == "the" else self.s.typo_rate
        return TYPOS[word] if self.rng.random() < rate else word

    def _stylise(self, text: str) -> str:
        rng, s = self.rng, self.s
        if s.contractions:
            text = _CONTRACTION_RE.sub(lambda m: CONTRACTIONS[m.group(1)], text)
        if s.texting:
            text = _TEXTING_RE.sub(
                lambda m: TEXTING[m.group(1)] if rng.random() < 0.7 else m.group(1), text)
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

