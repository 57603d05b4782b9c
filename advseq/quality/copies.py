"""Copied and degenerate posts: exact and near copies of posts the writer could have seen,
and posts in which one word makes up most of the words."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

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


class _CorpusIndex:
    """The copy keys of a corpus and their binary word vectors: built once per corpus and
    reused by every call that checks posts against it (each quality report, each round of
    an attack that keeps its posts apart from the training posts)."""

    def __init__(self, corpus: Sequence[str]) -> None:
        from sklearn.feature_extraction.text import CountVectorizer

        self.seen = {_copy_key(t) for t in corpus}
        docs = sorted(self.seen)
        self.vec: Any = None
        if docs:
            try:
                self.vec = CountVectorizer(binary=True, analyzer=str.split).fit(docs)
            except ValueError:      # no word in any corpus post: nothing to be near
                return
            self.docs_t = self.vec.transform(docs).T.tocsr()
            self.doc_len = np.asarray(self.docs_t.sum(0)).ravel()

    def near_rows(self, keys: Sequence[str], threshold: float) -> np.ndarray:
        """Per key: word-set Jaccard >= ``threshold`` with some corpus post? Words the
        corpus lacks count in the key's size but can match nothing."""
        hit = np.zeros(len(keys), dtype=bool)
        if self.vec is None:
            return hit
        a = self.vec.transform(keys)
        a_len = np.array([len(set(k.split())) for k in keys], dtype=np.int64)
        for s in range(0, len(keys), 256):
            inter = (a[s:s + 256] @ self.docs_t).tocoo()
            union = a_len[s + inter.row] + self.doc_len[inter.col] - inter.data
            jac = inter.data / np.maximum(union, 1)
            hit[s + inter.row[jac >= threshold]] = True
        return hit


_CORPUS_INDEX: OrderedDict[tuple[int, int], tuple[tuple[str, ...], _CorpusIndex]] = OrderedDict()
_CORPUS_INDEX_MAX = 4


def _corpus_index(corpus: Sequence[str]) -> _CorpusIndex:
    """The :class:`_CorpusIndex` of ``corpus``, kept for the last few corpora seen."""
    texts = tuple(corpus)
    key = (len(texts), hash(texts))
    hit = _CORPUS_INDEX.get(key)
    if hit is not None and hit[0] == texts:
        _CORPUS_INDEX.move_to_end(key)
        return hit[1]
    index = _CorpusIndex(texts)
    _CORPUS_INDEX[key] = (texts, index)
    while len(_CORPUS_INDEX) > _CORPUS_INDEX_MAX:
        _CORPUS_INDEX.popitem(last=False)
    return index


def copy_flags(posts: Sequence[str], histories: Sequence[Sequence[str]], corpus: Sequence[str], *,
               threshold: float = NEAR_COPY_JACCARD) -> tuple[np.ndarray, np.ndarray]:
    """Per post: is it an exact copy (same tokens, lowercased) of a post the writer could
    have seen — one of ``corpus`` (the training users' posts) or of its own user's earlier
    posts (``histories``) — and is it a near copy (word-set Jaccard >= ``threshold``)?
    Exact copies are near copies too. Batched: one sparse product against the corpus,
    whose index is built once per corpus."""
    index = _corpus_index(corpus)
    keys = [_copy_key(p) for p in posts]
    exact = np.array([bool(k) and (k in index.seen or any(k == _copy_key(h) for h in hist))
                      for k, hist in zip(keys, histories, strict=True)], dtype=bool)
    near = exact.copy()
    if any(keys):
        near |= index.near_rows(keys, threshold)
    for i, (k, hist) in enumerate(zip(keys, histories, strict=True)):
        if near[i] or not k:
            continue
        words = set(k.split())
        if any(_jaccard_at_least(words, set(_copy_key(h).split()), threshold) for h in hist):
            near[i] = True
    return exact, near
