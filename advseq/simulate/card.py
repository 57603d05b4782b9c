"""The dataset card: a Markdown README documenting a simulated dataset's provenance, the
simulator's mechanisms and parameters, its statistics, caveats and shortcut audit."""

from __future__ import annotations

import hashlib
import statistics

from advseq.audit import shortcut_audit
from advseq.schema import BENIGN, MALICIOUS, Dataset, User
from advseq.simulate.catalogue import build_catalogue
from advseq.simulate.lexicon import CATEGORIES
from advseq.simulate.params import (
    BENIGN_FAN_SHARE,
    BURST_PROB,
    DEAL_RATE,
    DRIFT_PROB,
    EXPLORE_PROB,
    FAN_FOCUS,
    HYPE_RATE,
    MALICIOUS_KINDS,
    OTHER_GAP_DAYS,
    POSITIVITY,
    POST_WORDS_BOUNDS,
    POST_WORDS_MEAN,
    RELEVANT_BLOCK_PROB,
    RELEVANT_SHARE,
    RETURN_PROB,
    SESSION_GAP_MIN,
    SPAM_RATE,
    SPONSOR_FROM_SHILL_PRONE,
    SPONSOR_IN_INTERESTS,
    SUPERLATIVE_RATE,
    TARGET_FOCUS,
)
from advseq.simulate.users import simulate


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
    cata = build_catalogue(seed)
    benign = [u for u in dataset if u.label == BENIGN]
    malicious = [u for u in dataset if u.label == MALICIOUS]
    sb, sm = _class_stats(benign), _class_stats(malicious)
    n_posts = dataset.n_posts
    contexts = {p.context for u in dataset for p in u.posts}
    cats = ", ".join(c.key for c in CATEGORIES)
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

**Items (the contexts).** A review platform with {len(cata.items)} items in {len(CATEGORIES)}
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
