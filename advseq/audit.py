"""Dataset summary and the shortcut audit behind ``advseq data info``.

The shortcut audit cross-validates trivial detectors that read no text — number of
posts, mean post length, share of posts starting with "RT @" — so a user sees how much a
dataset leaks through metadata before trusting a detector's score.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from advseq.schema import Dataset, User
from advseq.text import Tokenizer

SHORTCUT_FEATURES = {
    "n_posts": "number of posts",
    "mean_post_chars": "mean post length (characters)",
    "share_rt": 'share of posts starting with "RT @"',
    "share_quick_gaps": "share of gaps under one hour between posts (timestamps)",
}


def _summary(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"min": 0.0, "median": 0.0, "mean": 0.0, "max": 0.0}
    return {"min": float(values.min()), "median": float(np.median(values)),
            "mean": round(float(values.mean()), 3), "max": float(values.max())}


def user_features(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Text-free features ``[n_users, 4]`` (columns as in SHORTCUT_FEATURES) and labels."""
    feats = np.array([
        (len(u.posts),
         sum(len(p.text) for p in u.posts) / len(u.posts),
         sum(p.text.startswith("RT @") for p in u.posts) / len(u.posts),
         _quick_gap_share(u))
        for u in dataset
    ], dtype=np.float64)
    return feats, np.asarray(dataset.labels)


def _quick_gap_share(user: User) -> float:
    ts = [p.timestamp for p in user.posts]
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False) if a is not None and b is not None]
    return sum(g < 3600 for g in gaps) / len(gaps) if gaps else 0.0


def shortcut_audit(dataset: Dataset, *, folds: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """Cross-validated accuracy/F1 (malicious = positive) of detectors reading no text:
    a one-threshold rule (decision stump) per feature, a depth-3 tree on all of them, and
    the majority class. The timestamp feature is audited only when timestamps exist."""
    from sklearn.dummy import DummyClassifier
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.tree import DecisionTreeClassifier

    X, y = user_features(dataset)
    keys = list(SHORTCUT_FEATURES)
    if not any(p.timestamp is not None for u in dataset for p in u.posts):
        keys.remove("share_quick_gaps")
    n_min = int(min(np.bincount(y, minlength=2)))
    k = min(folds, n_min)
    if k < 2:
        return []
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    rows = []
    models: list[tuple[str, str, Any, list[int]]] = [
        ("majority", "always the majority class", DummyClassifier(strategy="most_frequent"), [0]),
    ]
    cols = [list(SHORTCUT_FEATURES).index(k) for k in keys]
    for key, j in zip(keys, cols, strict=True):
        models.append((key, f"threshold on {SHORTCUT_FEATURES[key]}", DecisionTreeClassifier(max_depth=1), [j]))
    models.append(("all_metadata", f"depth-3 tree on all {len(keys)}",
                   DecisionTreeClassifier(max_depth=3, random_state=seed), cols))
    for key, desc, model, cols in models:
        res = cross_validate(model, X[:, cols], y, cv=cv, scoring=("accuracy", "f1"))
        rows.append({
            "shortcut": key, "description": desc, "folds": k,
            "accuracy": round(float(res["test_accuracy"].mean()), 4),
            "accuracy_std": round(float(res["test_accuracy"].std()), 4),
            "f1": round(float(res["test_f1"].mean()), 4),
        })
    return rows


def describe(dataset: Dataset, *, tokenizer: Tokenizer | None = None, audit: bool = True,
             seed: int = 0) -> dict[str, Any]:
    """Everything ``advseq data info`` prints, as a JSON-ready dict."""
    tokenizer = tokenizer or Tokenizer()
    labels = np.asarray(dataset.labels)
    vocab: Counter[str] = Counter()
    tokens_per_post: dict[int, list[int]] = defaultdict(list)
    text_classes: dict[str, set[int]] = defaultdict(set)
    text_users: Counter[str] = Counter()
    context_classes: dict[str, set[int]] = defaultdict(set)
    posts_with_context = posts_with_ts = posts_with_rel = rel_ones = 0
    rel_by_class: dict[int, list[float]] = defaultdict(list)
    users_with_context = 0
    for u in dataset:
        has_ctx = False
        for t in {p.text for p in u.posts}:
            text_users[t] += 1
            text_classes[t].add(u.label)
        for p in u.posts:
            toks = tokenizer.tokenize(p.text)
            vocab.update(toks)
            tokens_per_post[u.label].append(len(toks))
            if p.context is not None:
                posts_with_context += 1
                context_classes[p.context].add(u.label)
                has_ctx = True
            if p.timestamp is not None:
                posts_with_ts += 1
            if p.relevancy is not None:
                posts_with_rel += 1
                rel_ones += p.relevancy >= 0.5
                rel_by_class[u.label].append(p.relevancy)
        users_with_context += has_ctx
    n_posts = np.array([len(u.posts) for u in dataset])
    by_class = {}
    for lab, name in ((0, "benign"), (1, "malicious")):
        mask = labels == lab
        by_class[name] = {
            "users": int(mask.sum()),
            "posts_per_user": _summary(n_posts[mask]),
            "tokens_per_post": _summary(np.asarray(tokens_per_post[lab])),
            "relevancy_share_1": (round(float(np.mean(np.asarray(rel_by_class[lab]) >= 0.5)), 4)
                                  if rel_by_class[lab] else None),
        }
    both = sorted(t for t, c in text_classes.items() if len(c) == 2)
    out: dict[str, Any] = {
        "name": dataset.name,
        "source": dataset.source,
        "checksum": dataset.checksum(),
        "users": len(dataset),
        "labels": {"benign": int((labels == 0).sum()), "malicious": int((labels == 1).sum())},
        "posts": int(n_posts.sum()),
        "by_class": by_class,
        "contexts": {
            "posts_with_context": posts_with_context,
            "users_with_context": users_with_context,
            "distinct": len(context_classes),
            "in_both_classes": sum(len(c) == 2 for c in context_classes.values()),
        },
        "posts_with_timestamp": posts_with_ts,
        "posts_with_relevancy": posts_with_rel,
        "relevancy_share_1": round(rel_ones / posts_with_rel, 4) if posts_with_rel else None,
        "vocabulary": {"distinct_tokens": len(vocab),
                       "min_freq_2": sum(c >= 2 for c in vocab.values())},
        "duplicates": {
            "distinct_posts": len(text_users),
            "posts_shared_by_users": sum(c > 1 for c in text_users.values()),
            "posts_in_both_classes": len(both),
            "examples_in_both_classes": [t[:80] for t in both[:8]],
        },
    }
    if dataset.warnings:
        out["load_warnings"] = len(dataset.warnings)
        out["skipped"] = dataset.skipped
    if audit:
        out["shortcut_audit"] = shortcut_audit(dataset, seed=seed)
    return out
