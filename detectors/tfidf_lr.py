"""``tfidf-lr``: the classical reference — TF-IDF over a user's concatenated posts plus
logistic regression (scikit-learn). Every deep detector should beat it.

Character n-grams (2-5, within word boundaries, sublinear tf) by default; word n-grams
with ``analyzer="word"``. Saved as JSON (n-gram vocabulary) + safetensors (idf, weights):
no pickle. Label and score capabilities only: it has no soft-token input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from advseq.detector import Detector
from advseq.errors import ConfigError
from advseq.schema import User

POST_JOIN = "\n"


class TfidfLogisticDetector(Detector):
    """TF-IDF (char 2-5 n-grams) of the concatenated posts + logistic regression."""

    name = "tfidf-lr"

    def __init__(self, *, analyzer: str = "char_wb", ngram_min: int = 2, ngram_max: int = 5,
                 min_df: int = 2, max_features: int | None = 300_000, sublinear_tf: bool = True,
                 lowercase: bool = True, C: float = 10.0, max_posts: int | None = None,
                 class_weight: str | None = None, seed: int = 0) -> None:
        self.analyzer = analyzer
        self.ngram_min = ngram_min
        self.ngram_max = ngram_max
        self.min_df = min_df
        self.max_features = max_features
        self.sublinear_tf = sublinear_tf
        self.lowercase = lowercase
        self.C = C
        self.max_posts = max_posts
        self.class_weight = class_weight
        self.seed = seed
        self.fit_info_ = {}
        if analyzer not in ("char_wb", "char", "word"):
            raise ConfigError(f"analyzer must be char_wb, char or word, got {analyzer!r}")

    def _vectorizer(self, vocabulary: dict[str, int] | None = None):  # -> TfidfVectorizer
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(analyzer=self.analyzer, ngram_range=(self.ngram_min, self.ngram_max),
                               min_df=1 if vocabulary else self.min_df,
                               max_features=None if vocabulary else self.max_features,
                               sublinear_tf=self.sublinear_tf, lowercase=self.lowercase,
                               vocabulary=vocabulary, dtype=np.float32)

    def _docs(self, users: Sequence[User]) -> list[str]:
        k = self.max_posts
        return [POST_JOIN.join(p.text for p in (u.posts[-k:] if k else u.posts)) for u in users]

    def fit(self, train: Sequence[User], valid: Sequence[User] | None = None, **kwargs: Any) -> TfidfLogisticDetector:
        from sklearn.linear_model import LogisticRegression

        t0 = time.perf_counter()
        train = list(train) + list(valid or [])
        self.vectorizer_ = self._vectorizer()
        X = self.vectorizer_.fit_transform(self._docs(train))
        y = np.array([u.label for u in train])
        lr = LogisticRegression(C=self.C, max_iter=5000, class_weight=self.class_weight,
                                random_state=self.seed)
        lr.fit(X, y)
        self.coef_ = lr.coef_.ravel().astype(np.float64)
        self.intercept_ = float(lr.intercept_[0])
        seconds = time.perf_counter() - t0
        self.fit_info_ = {"epochs": 1, "n_train": len(train), "features": int(X.shape[1]),
                          "train_seconds": round(seconds, 3),
                          "train_users_per_second": round(len(train) / seconds, 2)}
        return self

    def _state_arrays(self) -> list[np.ndarray]:
        terms = json.dumps(sorted(self.vectorizer_.vocabulary_.items())).encode()
        return [np.frombuffer(terms, dtype=np.uint8), self.vectorizer_.idf_, self.coef_,
                np.array([self.intercept_])]

    def decision_function(self, users: Sequence[User]) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise ConfigError("tfidf-lr is not trained: call fit() or load()")
        X = self.vectorizer_.transform(self._docs(users))
        return np.asarray(X @ self.coef_).ravel() + self.intercept_

    def predict_proba(self, users: Sequence[User]) -> np.ndarray:
        if not users:
            return np.zeros(0)
        return 1.0 / (1.0 + np.exp(-self.decision_function(users)))

    def _save_state(self, path: Path) -> dict[str, Any]:
        from safetensors.numpy import save_file

        terms = sorted(self.vectorizer_.vocabulary_, key=self.vectorizer_.vocabulary_.get)
        (path / "ngrams.json").write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
        save_file({"idf": self.vectorizer_.idf_.astype(np.float64), "coef": self.coef_,
                   "intercept": np.array([self.intercept_])}, str(path / "model.safetensors"))
        return {"ngrams": "ngrams.json", "weights": "model.safetensors"}

    def _load_state(self, path: Path, state: dict[str, Any]) -> None:
        from safetensors.numpy import load_file

        try:
            terms = json.loads((path / "ngrams.json").read_text(encoding="utf-8"))
            arrays = load_file(str(path / "model.safetensors"))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot load tfidf-lr state ({err})") from None
        self.vectorizer_ = self._vectorizer({t: i for i, t in enumerate(terms)})
        self.vectorizer_.idf_ = arrays["idf"]
        self.coef_ = arrays["coef"]
        self.intercept_ = float(arrays["intercept"][0])
