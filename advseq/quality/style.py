"""Style similarity: cosine similarity of character 2-4-gram profiles (within words) of a
post and the user's concatenated earlier posts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

STYLE_NGRAMS = (2, 4)


def char_ngrams(text: str, ngram_range: tuple[int, int] = STYLE_NGRAMS) -> list[str]:
    """Character n-grams of each lowercased, space-padded word (``" cat "`` -> ``" c"``,
    ``"ca"``, ...); only full-length n-grams."""
    lo, hi = ngram_range
    out: list[str] = []
    for word in text.lower().split():
        w = f" {word} "
        for n in range(lo, min(hi, len(w)) + 1):
            out.extend(w[i:i + n] for i in range(len(w) - n + 1))
    return out


def _row_cosine(a: csr_matrix, b: csr_matrix) -> np.ndarray:
    """Cosine similarity of matching rows of two sparse matrices (0 for an empty row)."""
    dot = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    na = np.sqrt(np.asarray(a.multiply(a).sum(axis=1)).ravel())
    nb = np.sqrt(np.asarray(b.multiply(b).sum(axis=1)).ravel())
    denom = na * nb
    return np.divide(dot, denom, out=np.zeros_like(dot, dtype=float), where=denom > 0)


def style_similarities(posts: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Cosine similarity of the character 2-4-gram count profiles of ``posts[i]`` and
    ``references[i]`` (``float [N]``)."""
    if len(posts) != len(references):
        raise ValueError(f"{len(posts)} posts but {len(references)} references")
    if not posts:
        return np.zeros(0)
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(analyzer=char_ngrams, dtype=np.float64)
    try:
        x = vec.fit_transform([*posts, *references]).tocsr()
    except ValueError:  # no n-gram at all (every text empty)
        return np.zeros(len(posts))
    return _row_cosine(x[: len(posts)], x[len(posts):])


def style_similarity(posts: Sequence[str], histories: Sequence[Sequence[str]]) -> float | None:
    """Mean over users (with earlier posts) of the style similarity of the post to the
    user's concatenated earlier posts; None when no user has any."""
    keep = [i for i, h in enumerate(histories) if len(h)]
    if not keep:
        return None
    return float(style_similarities([posts[i] for i in keep],
                                    [" ".join(histories[i]) for i in keep]).mean())
