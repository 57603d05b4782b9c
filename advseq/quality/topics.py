"""Topic similarity: LDA models with several topic counts, fitted on a dataset's contexts
(on its posts when it has none), and 1 - cosine distance of topic distributions averaged
over the models."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from advseq.quality.bleu import sample_indices
from advseq.quality.items import QualityItem
from advseq.schema import Dataset, has_context

TOPIC_COUNTS = (2, 7, 12, 17)
LDA_MAX_DOCS = 5000          #: LDA on posts (no contexts) fits on a seeded sample this big
LDA_MAX_ITER = 20


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
