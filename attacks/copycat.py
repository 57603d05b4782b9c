"""Copycat baselines (PETGEN, He et al. KDD 2021, Section 5: "Copycat").

``copycat``: the attacker re-posts one of its own earlier posts — the paper's version,
which picks one at random (``choice="random"``, needs no access to the detector).
``choice="best"`` is a black-box strengthening: it queries the detector with each
distinct earlier post (within the budget) and keeps the one closest to the goal.

``copycat-benign``: a variant that copies a *benign* training user's post on the same
context (exact context match; else the most similar context by TF-IDF cosine; else any
benign post) — the attacker may read the public posts of the training users.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from advseq.attack import Attack, AttackOutput, AttackSpec, AttackTask
from advseq.candidates import fresh, own_posts, pick_best, truncate_post
from advseq.config import SEED, Choice, Int
from advseq.errors import ConfigError
from advseq.schema import BENIGN, Dataset
from advseq.threat import ThreatModel


class CopycatAttack(Attack):
    """Re-post one of the user's own earlier posts (PETGEN's Copycat baseline)."""

    name = "copycat"
    paper = "He, Ahamad, Kumar. PETGEN. KDD 2021 (Copycat baseline)"
    param_rules = {"choice": Choice("random", "best"), "max_candidates": Int(1, 100_000), "seed": SEED}

    def __init__(self, *, choice: str = "random", max_candidates: int = 50, seed: int = 0) -> None:
        self.choice = choice
        self.max_candidates = max_candidates
        self.seed = seed

    @property
    def requires(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({"label"}) if self.choice == "best" else frozenset()

    def candidates(self, task: AttackTask) -> list[str]:
        return own_posts(task)

    def run(self, tasks: Sequence[AttackTask], threat: ThreatModel) -> list[AttackOutput]:
        if self.choice == "best":
            return pick_best(tasks, [self.candidates(t) for t in tasks], threat, self.max_candidates)
        return [AttackOutput(self.rng(t).choice(fresh(t, self.candidates(t)))) for t in tasks]


class BenignCopycatAttack(CopycatAttack):
    """Copy a benign training user's post on the same context."""

    name = "copycat-benign"
    paper = "Variant of PETGEN's Copycat baseline (copies benign users)"

    def prepare(self, train: Dataset, threat: ThreatModel, spec: AttackSpec) -> None:
        by_context: dict[str, list[str]] = {}
        pool: list[str] = []
        for u in train:
            if u.label != BENIGN:
                continue
            for p in u.posts:
                pool.append(p.text)
                if p.context:
                    by_context.setdefault(p.context, []).append(p.text)
        if not pool:
            raise ConfigError("copycat-benign needs benign users in the training split")
        self._by_context = by_context
        self._pool = pool
        self._contexts = sorted(by_context)
        self._vectorizer: Any = None
        if self._contexts:
            from sklearn.feature_extraction.text import TfidfVectorizer

            self._vectorizer = TfidfVectorizer(sublinear_tf=True).fit(self._contexts)
            self._context_matrix = self._vectorizer.transform(self._contexts)

    def _nearest_context(self, context: str) -> str | None:
        if self._vectorizer is None:
            return None
        sims = (self._context_matrix @ self._vectorizer.transform([context]).T).toarray().ravel()
        return self._contexts[int(np.argmax(sims))] if sims.max() > 0 else None

    def candidates(self, task: AttackTask) -> list[str]:
        if not hasattr(self, "_pool"):
            raise ConfigError("copycat-benign: call prepare() with the training users first")
        posts: list[str] = []
        if task.context:
            posts = self._by_context.get(task.context) or \
                self._by_context.get(self._nearest_context(task.context) or "", [])
        if not posts:
            rng = self.rng(task, "pool")
            posts = rng.sample(self._pool, min(len(self._pool), self.max_candidates))
        return [truncate_post(t, task.max_tokens) for t in posts]
