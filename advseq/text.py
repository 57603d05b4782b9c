"""Word-level tokenizer and vocabulary shared by detectors and generators.

No NLTK data is needed: a regular expression splits URLs, @mentions, #hashtags, words
(with inner apostrophes/hyphens) and single punctuation marks.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from advseq.errors import ConfigError

PAD, UNK, BOS, EOS, SEP = "<pad>", "<unk>", "<bos>", "<eos>", "<sep>"
SPECIALS = (PAD, UNK, BOS, EOS, SEP)
URL_TOKEN = "<url>"

_URL = r"(?:https?://|www\.)\S*[^\s.,!?;:)\]'\"…]"
_TOKEN_RE = re.compile(
    rf"(?P<url>{_URL})|[@#]\w+|\d+(?:[.,:]\d+)+|\w+(?:['’\-]\w+)*|[^\w\s]",
    re.UNICODE | re.IGNORECASE,
)
_NO_SPACE_BEFORE = set(".,!?;:%)]}'’\"")
_NO_SPACE_AFTER = set("([{$#@")


@dataclass(frozen=True)
class Tokenizer:
    """Splits text into word tokens.

    ``lowercase`` folds case; ``replace_urls`` maps every URL to ``<url>`` so link
    targets do not blow up the vocabulary.
    """

    lowercase: bool = True
    replace_urls: bool = True

    def tokenize(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        if not self.replace_urls:
            return [m.group(0) for m in _TOKEN_RE.finditer(text)]
        return [URL_TOKEN if m.group("url") else m.group(0) for m in _TOKEN_RE.finditer(text)]

    def truncate(self, text: str, max_tokens: int) -> str:
        """``text`` cut after its ``max_tokens``-th token, original characters kept."""
        end = None
        for i, m in enumerate(_TOKEN_RE.finditer(text)):
            if i == max_tokens:
                break
            end = m.end()
        else:
            return text
        return text[:end] if end is not None else ""

    @staticmethod
    def detokenize(tokens: Sequence[str]) -> str:
        """Join tokens with spaces, closing up around punctuation."""
        out: list[str] = []
        glue = True
        for tok in tokens:
            if out and not glue and not (len(tok) == 1 and tok in _NO_SPACE_BEFORE):
                out.append(" ")
            out.append(tok)
            glue = len(tok) == 1 and tok in _NO_SPACE_AFTER
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Vocabulary:
    """Token <-> id mapping with fixed special ids: pad 0, unk 1, bos 2, eos 3, sep 4."""

    pad_id, unk_id, bos_id, eos_id, sep_id = range(5)

    def __init__(self, tokens: Sequence[str], tokenizer: Tokenizer | None = None,
                 counts: dict[str, int] | None = None) -> None:
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ConfigError(f"a vocabulary must start with the special tokens {SPECIALS}")
        if len(set(tokens)) != len(tokens):
            raise ConfigError("a vocabulary must not list a token twice")
        self.itos = tokens
        self.stoi = {t: i for i, t in enumerate(tokens)}
        self.tokenizer = tokenizer or Tokenizer()
        self.counts = counts or {}

    @classmethod
    def build(cls, texts: Iterable[str], tokenizer: Tokenizer | None = None, *,
              min_freq: int = 2, max_size: int | None = None) -> Vocabulary:
        """Most frequent tokens first (ties broken alphabetically, so builds are
        deterministic); tokens seen fewer than ``min_freq`` times map to ``<unk>``;
        ``max_size`` caps the total size including the specials."""
        tokenizer = tokenizer or Tokenizer()
        if min_freq < 1:
            raise ConfigError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size <= len(SPECIALS):
            raise ConfigError(f"max_size must exceed the {len(SPECIALS)} special tokens")
        counter: Counter[str] = Counter()
        for text in texts:
            counter.update(tokenizer.tokenize(text))
        for s in SPECIALS:
            counter.pop(s, None)
        ranked = sorted((t for t, c in counter.items() if c >= min_freq),
                        key=lambda t: (-counter[t], t))
        if max_size is not None:
            ranked = ranked[: max_size - len(SPECIALS)]
        return cls(list(SPECIALS) + ranked, tokenizer, {t: counter[t] for t in ranked})

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def token_id(self, token: str) -> int:
        return self.stoi.get(token, self.unk_id)

    def encode(self, text: str, *, max_len: int | None = None, bos: bool = False,
               eos: bool = False) -> list[int]:
        """Token ids of ``text``, cut to ``max_len`` (bos/eos included in the count)."""
        ids = [self.stoi.get(t, self.unk_id) for t in self.tokenizer.tokenize(text)]
        if max_len is not None:
            ids = ids[: max(0, max_len - int(bos) - int(eos))]
        if bos:
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def encode_batch(self, texts: Sequence[str], max_len: int, *, bos: bool = False,
                     eos: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ids ``[N, max_len]`` (int64) and lengths ``[N]``; empty texts give
        length 0."""
        out = np.full((len(texts), max_len), self.pad_id, dtype=np.int64)
        lengths = np.zeros(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            ids = self.encode(text, max_len=max_len, bos=bos, eos=eos)
            out[i, : len(ids)] = ids
            lengths[i] = len(ids)
        return out, lengths

    def decode(self, ids: Iterable[int], *, skip_special: bool = True, stop_at_eos: bool = True) -> str:
        tokens = []
        for i in ids:
            i = int(i)
            if stop_at_eos and i == self.eos_id:
                break
            if skip_special and i < len(SPECIALS):
                continue
            tokens.append(self.itos[i] if 0 <= i < len(self.itos) else self.itos[self.unk_id])
        return self.tokenizer.detokenize(tokens)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "advseq-vocab/1", "tokenizer": self.tokenizer.to_dict(),
                "tokens": self.itos, "counts": [self.counts.get(t, 0) for t in self.itos]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        if data.get("format") != "advseq-vocab/1" or not isinstance(data.get("tokens"), list):
            raise ConfigError("not an advseq vocabulary (expected format 'advseq-vocab/1')")
        counts = dict(zip(data["tokens"], data.get("counts") or [], strict=False))
        return cls(data["tokens"], Tokenizer(**data.get("tokenizer", {})),
                   {t: c for t, c in counts.items() if c})

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot read vocabulary ({err})") from None
        return cls.from_dict(data)
