"""Text-quality metrics of written posts, offline, next to the same users' real posts.

PETGEN's measures, computed the authors' way where they said how:

* **realism** — ``bleu_2``..``bleu_5``: NLTK ``sentence_bleu`` (smoothing method1,
  uniform weights) of each post against the *set* of all real last posts;
  ``bleu_history_2``..``bleu_history_5``: against the user's own earlier posts;
* **diversity** — ``self_bleu_2``..``self_bleu_4``: each post against all the others
  (lower = more diverse);
* **fluency** — ``perplexity_judge`` (SmolLM2, an LM advseq did not train) and
  ``perplexity_ref`` (advseq's reference LM trained on the training users' posts);
* **topic** — LDA with 2, 7, 12 and 17 topics fitted on the contexts (on the posts when
  a dataset has none), similarity = 1 - cosine distance of topic distributions averaged
  over the four models: to the target context, to the user's most recent earlier post,
  and to the user's earlier posts on the same context (the mean over all of them, where
  the authors drew one at random; users with none are left out);
* **style** — cosine similarity of character 2-4-gram profiles (within words) of the
  post and the user's concatenated earlier posts.

BLEU here gives NLTK's numbers without NLTK's cost: NLTK re-counts every reference for
every hypothesis (O(hyps x refs)); we count each reference set once and keep, per
n-gram, the two largest counts over references, which also answers "every reference but
this one" (self-BLEU, the leave-one-out yardstick) exactly. Tests check both against
plain loops over NLTK.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from advseq.attack import AttackSpec
from advseq.errors import ResourceMissing
from advseq.schema import Dataset, DataSplit, Post, User, has_context
from advseq.text import Tokenizer

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

BLEU_ORDERS = (2, 3, 4, 5)
SELF_BLEU_ORDERS = (2, 3, 4)
TOPIC_COUNTS = (2, 7, 12, 17)
SELF_BLEU_MAX = 500          #: self-BLEU samples this many posts at most (seeded)
LDA_MAX_DOCS = 5000          #: LDA on posts (no contexts) fits on a seeded sample this big
LDA_MAX_ITER = 20
SAME_CONTEXT_RELEVANCY = 0.5
STYLE_NGRAMS = (2, 4)
SMOOTHING_EPSILON = 0.1      #: NLTK SmoothingFunction().method1's default

METRICS = (
    *(f"bleu_{n}" for n in BLEU_ORDERS),
    *(f"bleu_history_{n}" for n in BLEU_ORDERS),
    *(f"self_bleu_{n}" for n in SELF_BLEU_ORDERS),
    "perplexity_judge", "perplexity_ref",
    "topic_sim_context", "topic_sim_recent", "topic_sim_same_context",
    "style_similarity",
    "copy_exact", "copy_near", "repetitive",
)
#: word-set Jaccard similarity at or above which a post counts as a near copy
NEAR_COPY_JACCARD = 0.8
#: a post of 4+ words is repetitive when one word makes up more than this share of them
#: (under 1% of real posts on wiki and pan19-bots-en); a judge LM finds such runs
#: ("happy 😂 😂 😂 ...") very likely, so perplexity alone would call them fluent
REPETITIVE_SHARE = 0.5

_TOKENIZER = Tokenizer()


class PerplexityModel(Protocol):
    """What ``quality_report`` needs of a reference LM (``advseq.lm.PostLM``)."""

    def perplexity(self, posts: Sequence[str], contexts: Sequence[str | None] | None) -> float: ...


# --------------------------------------------------------------------------- BLEU

def bleu_tokens(text: str) -> list[str]:
    """The tokens BLEU compares: advseq's tokenizer, lowercased."""
    return _TOKENIZER.tokenize(text)


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


def _nanmean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else None


def bleu(hyps: Sequence[str], refs_per_hyp: Sequence[Sequence[str]], n: int) -> float | None:
    """Mean sentence BLEU-n (NLTK, smoothing method1, uniform weights over 1..n-grams) of
    each hypothesis against its references; None when no hypothesis has any."""
    return _nanmean(bleu_scores(hyps, refs_per_hyp, (n,))[n])


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
    return {n: _nanmean(scores[n]) for n in orders}


def self_bleu(hyps: Sequence[str], n: int, *, max_hyps: int = SELF_BLEU_MAX, seed: int = 0) -> float | None:
    """Mean self-BLEU-n (diversity; lower = more diverse); see :func:`self_bleu_scores`."""
    return self_bleu_scores(hyps, (n,), max_hyps=max_hyps, seed=seed)[n]


# --------------------------------------------------------------------------- style

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


# --------------------------------------------------------------------------- topics

@dataclass
class TopicModels:
    """LDA models with several topic counts over one vocabulary (fitted once per
    dataset, seed and topic counts)."""

    vectorizer: Any                 #: sklearn CountVectorizer (English stop words)
    models: list[Any]               #: one LatentDirichletAllocation per topic count
    corpus: str                     #: "contexts" or "posts": what the models were fitted on
    n_docs: int

    def topics(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Topic distributions of ``texts``, one ``float [N, k]`` per model; each distinct
        text is inferred once."""
        uniq = list(dict.fromkeys(texts))
        pos = {t: i for i, t in enumerate(uniq)}
        idx = np.array([pos[t] for t in texts], dtype=np.int64)
        if not uniq:
            return [np.zeros((0, m.n_components)) for m in self.models]
        x = self.vectorizer.transform(uniq)
        return [m.transform(x)[idx] for m in self.models]

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """1 - cosine distance of the topic distributions of ``a[i]`` and ``b[i]``,
        averaged over the models (``float [N]``)."""
        if len(a) != len(b):
            raise ValueError(f"{len(a)} texts vs {len(b)} texts")
        if not a:
            return np.zeros(0)
        both = self.topics([*a, *b])
        sims = []
        for theta in both:
            u, v = theta[: len(a)], theta[len(a):]
            sims.append((u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)))
        return np.mean(sims, axis=0)


_TOPIC_CACHE: dict[tuple[str, int, tuple[int, ...]], TopicModels] = {}
_TOPIC_LOCK = threading.Lock()


def _topic_corpus(data: Dataset, seed: int) -> tuple[list[str], str]:
    contexts = list(dict.fromkeys(p.context for u in data for p in u.posts
                                  if has_context(p.context)))
    if contexts:
        return contexts, "contexts"
    posts = [p.text for u in data for p in u.posts]
    return [posts[i] for i in sample_indices(len(posts), LDA_MAX_DOCS, seed)], "posts"


def topic_models(data: Dataset, *, seed: int = 0,
                 topic_counts: Sequence[int] = TOPIC_COUNTS) -> TopicModels:
    """LDA models (one per topic count, seeded) fitted on the distinct contexts of
    ``data``, or on (a seeded sample of at most 5,000 of) its posts when it has no
    contexts. Cached in-process per (data checksum, seed, topic counts)."""
    from sklearn.decomposition import LatentDirichletAllocation
    from sklearn.feature_extraction.text import CountVectorizer

    key = (data.checksum(), seed, tuple(topic_counts))
    with _TOPIC_LOCK:
        if key in _TOPIC_CACHE:
            return _TOPIC_CACHE[key]
        docs, corpus = _topic_corpus(data, seed)
        vec = CountVectorizer(stop_words="english")
        try:
            x = vec.fit_transform(docs)
        except ValueError:  # only stop words: fall back to the posts
            if corpus == "posts":
                raise
            posts = [p.text for u in data for p in u.posts]
            docs, corpus = [posts[i] for i in sample_indices(len(posts), LDA_MAX_DOCS, seed)], "posts"
            x = vec.fit_transform(docs)
        models = [LatentDirichletAllocation(n_components=k, learning_method="batch",
                                            max_iter=LDA_MAX_ITER, random_state=seed).fit(x)
                  for k in topic_counts]
        _TOPIC_CACHE[key] = TopicModels(vec, models, corpus, len(docs))
        return _TOPIC_CACHE[key]


# --------------------------------------------------------------------------- copies

def repetitive_flags(posts: Sequence[str]) -> np.ndarray:
    """Per post: does one word make up more than :data:`REPETITIVE_SHARE` of its 4+ words?"""
    out = np.zeros(len(posts), dtype=bool)
    for i, post in enumerate(posts):
        words = bleu_tokens(post)
        out[i] = len(words) >= 4 and Counter(words).most_common(1)[0][1] > REPETITIVE_SHARE * len(words)
    return out


def _copy_key(text: str) -> str:
    return " ".join(bleu_tokens(text))


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
        for h in hist:
            other = set(_copy_key(h).split())
            if other and len(words & other) / len(words | other) >= threshold:
                near[i] = True
                break
    return exact, near


# --------------------------------------------------------------------------- report

@dataclass(frozen=True)
class QualityItem:
    """One post to score with what it is compared to."""

    post: str
    history: tuple[Post, ...]   #: the user's posts before it, oldest first
    context: str | None         #: its target context
    use_relevancy: bool         #: history relevancy flags refer to this target context

    @property
    def history_texts(self) -> list[str]:
        return [p.text for p in self.history]

    def same_context(self) -> list[str]:
        """Earlier posts on the target context: same context, or relevancy >= 0.5 when
        the flags refer to this context."""
        return [p.text for p in self.history
                if (self.context and p.context == self.context)
                or (self.use_relevancy and p.relevancy is not None
                    and p.relevancy >= SAME_CONTEXT_RELEVANCY)]


def topic_similarities(items: Sequence[QualityItem], topics: TopicModels) -> dict[str, float | None]:
    """Mean topic similarity of each post to its target context, the user's most recent
    earlier post and the user's earlier posts on the same context (mean per user, then
    over users who have any)."""
    pairs: list[tuple[str, str, int, int]] = []  # (post, other text, kind, item index)
    for i, it in enumerate(items):
        if has_context(it.context):
            pairs.append((it.post, it.context or "", 0, i))
        if it.history:
            pairs.append((it.post, it.history[-1].text, 1, i))
        pairs.extend((it.post, text, 2, i) for text in it.same_context())
    sims = topics.similarity([p[0] for p in pairs], [p[1] for p in pairs])
    kinds = np.array([p[2] for p in pairs], dtype=np.int64)
    owners = np.array([p[3] for p in pairs], dtype=np.int64)
    out: dict[str, float | None] = {}
    for k, name in enumerate(("topic_sim_context", "topic_sim_recent")):
        sel = sims[kinds == k]
        out[name] = float(sel.mean()) if len(sel) else None
    sel = kinds == 2
    if sel.any():
        total = np.bincount(owners[sel], weights=sims[sel], minlength=len(items))
        count = np.bincount(owners[sel], minlength=len(items))
        out["topic_sim_same_context"] = float((total[count > 0] / count[count > 0]).mean())
    else:
        out["topic_sim_same_context"] = None
    return out


_REF_LM_CACHE: dict[tuple[str, int], PerplexityModel] = {}


def _reference_lm(train: Dataset, seed: int) -> PerplexityModel:
    """advseq's reference LM on the training users (imported lazily: heavy), cached
    in-process per (training data, seed)."""
    from advseq.lm import reference_lm

    key = (train.checksum(), seed)
    if key not in _REF_LM_CACHE:
        _REF_LM_CACHE[key] = reference_lm(train, seed=seed)
    return _REF_LM_CACHE[key]


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def quality_metrics(items: Sequence[QualityItem], refs: Sequence[str], *,
                    leave_out: Sequence[int] | None = None, topics: TopicModels,
                    judge: Any | None = None, ref_lm: PerplexityModel | None = None,
                    corpus: Sequence[str] | None = None, seed: int = 0) -> dict[str, float | None]:
    """Every metric of :data:`METRICS` for one set of posts. ``refs`` is the shared BLEU
    reference set; ``leave_out[i]`` the index in ``refs`` of post ``i``'s own copy (-1:
    none). ``judge`` / ``ref_lm`` None leave their perplexity None; ``corpus`` (the
    training posts) None leaves the copy shares None."""
    posts = [it.post for it in items]
    out: dict[str, float | None] = dict.fromkeys(METRICS)
    if not items:
        return out
    shared = bleu_scores(posts, [refs] * len(posts), BLEU_ORDERS, leave_out=leave_out)
    history = bleu_scores(posts, [it.history_texts for it in items], BLEU_ORDERS)
    selfb = self_bleu_scores(posts, SELF_BLEU_ORDERS, seed=seed)
    for n in BLEU_ORDERS:
        out[f"bleu_{n}"] = _round(_nanmean(shared[n]))
        out[f"bleu_history_{n}"] = _round(_nanmean(history[n]))
    for n in SELF_BLEU_ORDERS:
        out[f"self_bleu_{n}"] = _round(selfb[n])
    if judge is not None:
        out["perplexity_judge"] = _round(judge.perplexity(posts), 4)
    if ref_lm is not None:
        out["perplexity_ref"] = _round(ref_lm.perplexity(posts, [it.context for it in items]), 4)
    out.update({k: _round(v) for k, v in topic_similarities(items, topics).items()})
    out["style_similarity"] = _round(style_similarity(posts, [it.history_texts for it in items]))
    if corpus is not None:
        exact, near = copy_flags(posts, [it.history_texts for it in items], corpus)
        out["copy_exact"], out["copy_near"] = _round(exact.mean()), _round(near.mean())
    out["repetitive"] = _round(float(repetitive_flags(posts).mean()))
    return out


def _items(records: Sequence[dict[str, Any]], data: Dataset,
           spec: AttackSpec) -> tuple[list[QualityItem], list[QualityItem], list[User]]:
    """(attack items, real yardstick items, their users) of the targeted records."""
    attack, real, users = [], [], []
    for rec in records:
        if not rec.get("targeted") or rec.get("post") is None:
            continue
        user = data[rec["user_id"]]
        last = user.posts[-1]
        task = spec.task(user)
        attack.append(QualityItem(rec["post"], tuple(task.history.posts), rec.get("context"),
                                  rec.get("context") == last.context))
        real.append(QualityItem(last.text, user.posts[:-1], last.context, True))
        users.append(user)
    return attack, real, users


def quality_report(records: Sequence[dict[str, Any]], data: Dataset, split: DataSplit,
                   spec: AttackSpec | None = None, *, seed: int = 0,
                   ref_lm: PerplexityModel | None = None, judge: bool | Any = True,
                   topic_counts: Sequence[int] = TOPIC_COUNTS) -> dict[str, Any]:
    """Text quality of the posts an attack wrote (``attack``) and of the same users' real
    last posts (``real``, the yardstick), from the evaluator's per-user ``records``.

    BLEU references are the real last posts of the scored test users (the real yardstick
    leaves each post's own copy out). ``ref_lm``: any object with
    ``perplexity(posts, contexts)``; None trains advseq's reference LM on
    ``split.train``. ``judge``: True for SmolLM2, False for none, or an object with
    ``perplexity(texts)``.
    """
    t0 = time.perf_counter()
    spec = spec or AttackSpec()
    notes: list[str] = []
    attack_items, real_items, users = _items(records, data, spec)
    ids = {r["user_id"] for r in records}
    ref_users = [u for u in split.test if u.user_id in ids]
    refs = [u.posts[-1].text for u in ref_users]
    ref_pos = {u.user_id: i for i, u in enumerate(ref_users)}
    leave_out = [ref_pos.get(u.user_id, -1) for u in users]
    notes.append(f"bleu_*: references = the {len(refs)} real last posts of the scored test users; "
                 "the real yardstick leaves each post's own copy out")
    if len(attack_items) > SELF_BLEU_MAX:
        notes.append(f"self_bleu_*: a seeded sample of {SELF_BLEU_MAX} of {len(attack_items)} posts")

    judge_obj: Any | None = None
    judge_name: str | None = None
    if judge is True:
        from advseq.judge import MODEL_NAME, PerplexityJudge

        judge_obj, judge_name = PerplexityJudge.shared(), MODEL_NAME
    elif judge not in (False, None):
        judge_obj, judge_name = judge, getattr(judge, "name", type(judge).__name__)
    if judge_obj is None:
        notes.append("perplexity_judge: not computed (judge disabled)")
    elif attack_items:
        try:
            if hasattr(judge_obj, "load"):
                judge_obj.load()
        except ResourceMissing as err:
            notes.append(f"perplexity_judge: not computed ({err})")
            judge_obj, judge_name = None, None
        if judge_obj is not None and getattr(judge_obj, "dtype", "float32") != "float32":
            notes.append(f"perplexity_judge: computed in {judge_obj.dtype}")

    lm: PerplexityModel | None = ref_lm
    if lm is None and attack_items:
        try:
            lm = _reference_lm(split.train, seed)
        except ModuleNotFoundError as err:
            if err.name != "advseq.lm":
                raise
            notes.append("perplexity_ref: not computed (advseq.lm is not available)")
        except ResourceMissing as err:
            notes.append(f"perplexity_ref: not computed ({err})")

    topics = topic_models(data, seed=seed, topic_counts=topic_counts)
    if topics.corpus == "posts":
        notes.append(f"topic_sim_*: the data has no contexts; LDA ({', '.join(map(str, topic_counts))} "
                     f"topics) fitted on {topics.n_docs} posts")
    n_attack = sum(bool(it.same_context()) for it in attack_items)
    n_real = sum(bool(it.same_context()) for it in real_items)
    notes.append(f"topic_sim_same_context: users with earlier posts on the target context (same "
                 f"context, or relevancy >= {SAME_CONTEXT_RELEVANCY}): {n_attack} of "
                 f"{len(attack_items)} (attack), {n_real} of {len(real_items)} (real)")

    corpus = [p.text for u in split.train for p in u.posts]
    notes.append(f"copy_exact / copy_near: share of posts that repeat (same tokens / word-set Jaccard "
                 f">= {NEAR_COPY_JACCARD}) one of the {len(corpus)} training posts or the user's own "
                 "earlier posts")
    notes.append(f"repetitive: share of posts of 4+ words in which one word makes up more than "
                 f"{REPETITIVE_SHARE:.0%} of the words")
    attack = quality_metrics(attack_items, refs, topics=topics, judge=judge_obj, ref_lm=lm,
                             corpus=corpus, seed=seed)
    real = quality_metrics(real_items, refs, leave_out=leave_out, topics=topics, judge=judge_obj,
                           ref_lm=lm, corpus=corpus, seed=seed)
    return {"attack": attack, "real": real, "n_posts": len(attack_items),
            "topic_corpus": topics.corpus, "judge": judge_name, "notes": notes,
            "seconds": round(time.perf_counter() - t0, 3)}
