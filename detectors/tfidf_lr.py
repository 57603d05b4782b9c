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

from advseq.config import SEED, AnyOf, Bool, Choice, Float, Int, ParamError
from advseq.detector import Detector
from advseq.errors import ConfigError
from advseq.schema import User
from advseq.storage import load_safetensors_arrays, read_json_file

POST_JOIN = "\n"


class TfidfLogisticDetector(Detector):
    """TF-IDF (char 2-5 n-grams) of the concatenated posts + logistic regression."""

    name = "tfidf-lr"
    param_rules = {
        "analyzer": Choice("char_wb", "char", "word"), "ngram_min": Int(1, 100), "ngram_max": Int(1, 100),
        "min_df": AnyOf(Int(1), Float(0, 1, ints=False), what="a count >= 1 or a share in [0.0, 1.0]"),
        "max_features": Int(1, none=True), "sublinear_tf": Bool(), "lowercase": Bool(),
        "C": Float(0, low_open=True), "max_posts": Int(0, none=True),
        "class_weight": Choice(None, "balanced"), "seed": SEED,
    }

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
        if ngram_min > ngram_max:
            raise ParamError("ngram_max", f"must be >= ngram_min ({ngram_min}), got {ngram_max}", self.name)

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
        if not hasattr(self, "coef_"):
            raise ConfigError("tfidf-lr is not trained: call fit() or load()")
        # scikit-learn's fitted vocabulary holds numpy ints, a loaded one Python ints; the
        # idf is float32 when fitted, float64 when loaded: one form for both, so a model
        # and its saved copy share a fingerprint
        vocab = getattr(self.vectorizer_, "vocabulary_", None) or self.vectorizer_.vocabulary
        terms = json.dumps(sorted((t, int(i)) for t, i in vocab.items())).encode()
        return [np.frombuffer(terms, dtype=np.uint8), np.asarray(self.vectorizer_.idf_, dtype=np.float64),
                self.coef_, np.array([self.intercept_])]

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
        terms_file = path / "ngrams.json"
        terms = read_json_file(terms_file, "the n-gram vocabulary")
        if not isinstance(terms, list) or not terms or not all(isinstance(t, str) for t in terms) \
                or len(set(terms)) != len(terms):
            raise ConfigError(f"{terms_file}: must be a list of distinct n-gram strings")
        n = len(terms)
        arrays = load_safetensors_arrays(path / "model.safetensors", {
            "idf": lambda s: s == (n,), "coef": lambda s: s == (n,), "intercept": lambda s: s == (1,)})
        self.vectorizer_ = self._vectorizer({t: i for i, t in enumerate(terms)})
        self.vectorizer_.idf_ = arrays["idf"]
        self.coef_ = arrays["coef"]
        self.intercept_ = float(arrays["intercept"][0])
