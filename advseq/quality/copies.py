"""Copied and degenerate posts: exact and near copies of posts the writer could have seen,
and posts in which one word makes up most of the words."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from advseq.quality.bleu import bleu_tokens

#: word-set Jaccard similarity at or above which a post counts as a near copy
NEAR_COPY_JACCARD = 0.8
#: a post of 4+ words is repetitive when one word makes up more than this share of them;
#: a judge LM finds such runs ("happy 😂 😂 😂 ...") very likely, so perplexity alone
#: would call them fluent
REPETITIVE_SHARE = 0.5


def repetitive_flags(posts: Sequence[str]) -> np.ndarray:
    """Per post: does one word make up more than :data:`REPETITIVE_SHARE` of its 4+ words?"""
    out = np.zeros(len(posts), dtype=bool)
    for i, post in enumerate(posts):
        words = bleu_tokens(post)
        out[i] = len(words) >= 4 and Counter(words).most_common(1)[0][1] > REPETITIVE_SHARE * len(words)
    return out


def _copy_key(text: str) -> str:
    return " ".join(bleu_tokens(text))


def _jaccard_at_least(words: set[str], other: set[str], threshold: float) -> bool:
    """Whether two word sets overlap by Jaccard >= ``threshold`` (never for an empty one)."""
    return bool(words) and bool(other) and len(words & other) / len(words | other) >= threshold


def is_near_copy(text: str, others: Sequence[str], *, threshold: float = NEAR_COPY_JACCARD) -> bool:
    """Whether ``text`` is an exact copy (the same tokens, lowercased; two empty posts
    are copies too) or a near copy (word-set Jaccard >= ``threshold``) of any of
    ``others``: the rule that keeps the K posts one attacker writes for a user distinct."""
    key = _copy_key(text)
    words = set(key.split())
    for other in others:
        other_key = _copy_key(other)
        if other_key == key or _jaccard_at_least(words, set(other_key.split()), threshold):
            return True
    return False


def copy_flags(posts: Sequence[str], histories: Sequence[Sequence[str]], corpus: Sequence[str], *,
               threshold: float = NEAR_COPY_JACCARD) -> tuple[np.ndarray, np.ndarray]:
    """Per post: is it an exact copy (same tokens, lowercased) of a post the writer could
    have seen — one of ``corpus`` (the training users' posts) or of its own user's earlier
    posts (``histories``) — and is it a near copy (word-set Jaccard >= ``threshold``)?
    Exact copies are near copies too. Batched: one sparse product against the corpus."""
    from sklearn.feature_extraction.text import CountVectorizer

    keys = [_copy_key(p) for p in posts]
    seen = {_copy_key(t) for t in corpus}
    exact = np.array([bool(k) and (k in seen or any(k == _copy_key(h) for h in hist))
                      for k, hist in zip(keys, histories, strict=True)], dtype=bool)
    near = exact.copy()
    docs = list(dict.fromkeys(seen))
    if docs and any(keys):
        vec = CountVectorizer(binary=True, analyzer=str.split).fit(docs + keys)
        a, b = vec.transform(keys), vec.transform(docs)
        a_len = np.asarray(a.sum(1)).ravel()
        b_len = np.asarray(b.sum(1)).ravel()
        for s in range(0, len(keys), 256):
            inter = (a[s:s + 256] @ b.T).tocoo()
            union = a_len[s + inter.row] + b_len[inter.col] - inter.data
            jac = inter.data / np.maximum(union, 1)
            hit = np.zeros(min(256, len(keys) - s), dtype=bool)
            hit[inter.row[jac >= threshold]] = True
            near[s:s + len(hit)] |= hit
    for i, (k, hist) in enumerate(zip(keys, histories, strict=True)):
        if near[i] or not k:
            continue
        words = set(k.split())
        if any(_jaccard_at_least(words, set(_copy_key(h).split()), threshold) for h in hist):
            near[i] = True
    return exact, near
