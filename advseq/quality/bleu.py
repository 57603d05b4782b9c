"""BLEU the way NLTK computes it (``sentence_bleu``, smoothing method1, uniform weights),
without NLTK's cost.

NLTK re-counts every reference for every hypothesis (O(hyps x refs)); here each reference
set is counted once, keeping per n-gram the two largest counts over references, which also
answers "every reference but this one" (self-BLEU, the leave-one-out yardstick) exactly.
Tests check both against plain loops over NLTK.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from advseq.text import Tokenizer

BLEU_ORDERS = (2, 3, 4, 5)
SELF_BLEU_ORDERS = (2, 3, 4)
SELF_BLEU_MAX = 500          #: self-BLEU samples this many posts at most (seeded)
SMOOTHING_EPSILON = 0.1      #: NLTK SmoothingFunction().method1's default

_TOKENIZER = Tokenizer()


@functools.lru_cache(maxsize=1 << 16)
def _tokens(text: str) -> tuple[str, ...]:
    return tuple(_TOKENIZER.tokenize(text))


def bleu_tokens(text: str) -> list[str]:
    """The tokens BLEU compares: advseq's tokenizer, lowercased. Memoized: every quality
    report tokenizes the same real posts and histories again."""
    return list(_tokens(text))


def _ngram_counts(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(zip(*(tokens[i:] for i in range(n)), strict=False))


class _ReferenceSet:
    """One set of tokenised references, counted once for every hypothesis scored against
    it. Per order and n-gram: (largest count, the reference holding it, second largest
    count), so the clip count without any one reference is a lookup."""

    def __init__(self, refs: Sequence[Sequence[str]], max_n: int) -> None:
        self.lengths = np.array([len(r) for r in refs], dtype=np.int64)
        self.tables: list[dict[tuple[str, ...], list[int]]] = []
        for n in range(1, max_n + 1):
            table: dict[tuple[str, ...], list[int]] = {}
            for j, ref in enumerate(refs):
                for gram, c in _ngram_counts(ref, n).items():
                    entry = table.get(gram)
                    if entry is None:
                        table[gram] = [c, j, 0]
                    elif c > entry[0]:
                        entry[2], entry[0], entry[1] = entry[0], c, j
                    elif c > entry[2]:
                        entry[2] = c
            self.tables.append(table)

    def closest_lengths(self, hyp_lengths: np.ndarray, leave_out: np.ndarray) -> np.ndarray:
        """NLTK's closest reference length per hypothesis (ties: the shorter), ignoring
        reference ``leave_out[i]`` for hypothesis ``i``; -1 where no reference is left."""
        refs = self.lengths
        if len(refs) == 0:
            return np.full(len(hyp_lengths), -1, dtype=np.int64)
        key = np.abs(refs[None, :] - hyp_lengths[:, None]) * (int(refs.max()) + 1) + refs[None, :]
        rows = np.flatnonzero(leave_out >= 0)
        key[rows, leave_out[rows]] = np.iinfo(np.int64).max
        best = key.argmin(axis=1)
        out = refs[best].copy()
        out[key[np.arange(len(best)), best] == np.iinfo(np.int64).max] = -1
        return out

    def clipped(self, hyp: Sequence[str], n: int, leave_out: int) -> tuple[int, int]:
        """(clipped matches, hypothesis n-grams) of order ``n``: NLTK's modified precision."""
        counts = _ngram_counts(hyp, n)
        table = self.tables[n - 1]
        matched = 0
        for gram, c in counts.items():
            entry = table.get(gram)
            if entry is not None:
                matched += min(c, entry[2] if entry[1] == leave_out else entry[0])
        return matched, max(1, sum(counts.values()))


def _set_bleu(hyps: Sequence[Sequence[str]], refs: _ReferenceSet, orders: Sequence[int],
              leave_out: np.ndarray) -> dict[int, np.ndarray]:
    """Sentence BLEU of each tokenised hypothesis against one reference set (minus
    ``leave_out[i]`` when >= 0), per order; nan where no reference is left."""
    max_n = max(orders)
    hyp_len = np.array([len(h) for h in hyps], dtype=np.int64)
    closest = refs.closest_lengths(hyp_len, leave_out)
    out = {n: np.full(len(hyps), np.nan) for n in orders}
    for i, hyp in enumerate(hyps):
        if closest[i] < 0:
            continue
        prec = [refs.clipped(hyp, k, int(leave_out[i])) for k in range(1, max_n + 1)]
        h, r = int(hyp_len[i]), int(closest[i])
        if prec[0][0] == 0:  # no unigram in common: NLTK returns 0
            for n in orders:
                out[n][i] = 0.0
            continue
        bp = 1.0 if h > r else math.exp(1 - r / h)
        logs = [math.log(m / d if m else SMOOTHING_EPSILON / d) for m, d in prec]
        for n in orders:
            w = 1.0 / n
            out[n][i] = bp * math.exp(math.fsum(w * x for x in logs[:n]))
    return out


def bleu_scores(hyps: Sequence[str], refs_per_hyp: Sequence[Sequence[str]],
                orders: Sequence[int] = BLEU_ORDERS, *,
                leave_out: Sequence[int] | None = None) -> dict[int, np.ndarray]:
    """Per-hypothesis sentence BLEU for each order in ``orders`` (``{n: float [N]}``, nan
    where a hypothesis has no reference). Hypotheses that share a reference list (equal
    content) share its counting. ``leave_out[i]`` (index into ``refs_per_hyp[i]``, or -1)
    drops one reference for hypothesis ``i``."""
    if len(refs_per_hyp) != len(hyps):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs_per_hyp)} reference lists")
    skip = np.full(len(hyps), -1, dtype=np.int64) if leave_out is None else np.asarray(leave_out, dtype=np.int64)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, refs in enumerate(refs_per_hyp):
        groups.setdefault(tuple(refs), []).append(i)
    out = {n: np.full(len(hyps), np.nan) for n in orders}
    tokens = [bleu_tokens(h) for h in hyps]
    for refs, idx in groups.items():
        ref_set = _ReferenceSet([bleu_tokens(r) for r in refs], max(orders))
        scores = _set_bleu([tokens[i] for i in idx], ref_set, orders, skip[idx])
        for n in orders:
            out[n][idx] = scores[n]
    return out


def nanmean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else None


def bleu(hyps: Sequence[str], refs_per_hyp: Sequence[Sequence[str]], n: int) -> float | None:
    """Mean sentence BLEU-n (NLTK, smoothing method1, uniform weights over 1..n-grams) of
    each hypothesis against its references; None when no hypothesis has any."""
    return nanmean(bleu_scores(hyps, refs_per_hyp, (n,))[n])


def sample_indices(n: int, k: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of ``k`` out of ``n`` (all of them if n <= k)."""
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def self_bleu_scores(hyps: Sequence[str], orders: Sequence[int] = SELF_BLEU_ORDERS, *,
                     max_hyps: int = SELF_BLEU_MAX, seed: int = 0) -> dict[int, float | None]:
    """Mean self-BLEU per order: each hypothesis against all the others. Above
    ``max_hyps`` hypotheses, a seeded sample of ``max_hyps`` is scored among itself."""
    idx = sample_indices(len(hyps), max_hyps, seed)
    sample = [hyps[i] for i in idx]
    if len(sample) < 2:
        return {n: None for n in orders}
    tokens = [bleu_tokens(h) for h in sample]
    scores = _set_bleu(tokens, _ReferenceSet(tokens, max(orders)), orders,
                       np.arange(len(sample), dtype=np.int64))
    return {n: nanmean(scores[n]) for n in orders}


def self_bleu(hyps: Sequence[str], n: int, *, max_hyps: int = SELF_BLEU_MAX, seed: int = 0) -> float | None:
    """Mean self-BLEU-n (diversity; lower = more diverse); see :func:`self_bleu_scores`."""
    return self_bleu_scores(hyps, (n,), max_hyps=max_hyps, seed=seed)[n]
