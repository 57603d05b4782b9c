"""Shared pieces of the gradient-guided token attacks (HotFlip, UniTrigger).

Posts live in the detector's vocabulary as id sequences; the detector scores them as
one-hot soft posts through :meth:`advseq.threat.ThreatModel.soft_logits` (exact for real
tokens), and its gradient with respect to the one-hot matrix gives HotFlip's
first-order estimate of every substitution at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from advseq.schema import User
from advseq.text import SPECIALS, Tokenizer, Vocabulary
from advseq.threat import ThreatModel


@dataclass
class TokenPost:
    """A post as detector ids plus the original-case token strings they came from."""

    ids: list[int]
    words: list[str]

    def text(self, vocab: Vocabulary, changed: Sequence[int] = ()) -> str:
        """Original words where unchanged (keeps case and out-of-vocabulary words),
        vocabulary tokens where a position was changed."""
        changed = set(changed)
        words = [vocab.itos[i] if j in changed else w
                 for j, (i, w) in enumerate(zip(self.ids, self.words, strict=True))]
        return Tokenizer.detokenize(words)


def encode_post(text: str, vocab: Vocabulary, max_tokens: int) -> TokenPost:
    tok = vocab.tokenizer
    raw = Tokenizer(lowercase=False, replace_urls=tok.replace_urls).tokenize(text)[:max_tokens]
    ids = [vocab.token_id(t.lower() if tok.lowercase else t) for t in raw]
    if not ids:
        ids, raw = [vocab.unk_id], ["..."]
    return TokenPost(ids, raw)


def one_hot(batch: Sequence[Sequence[int]], vocab_size: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, length, V]`` one-hot matrix and lengths ``[N]`` (rows past a post's end are 0)."""
    x = torch.zeros(len(batch), length, vocab_size)
    lengths = torch.tensor([len(ids) for ids in batch], dtype=torch.long)
    for n, ids in enumerate(batch):
        x[n, torch.arange(len(ids)), torch.as_tensor(list(ids), dtype=torch.long)] = 1.0
    return x, lengths


def forbidden_mask(vocab: Vocabulary) -> torch.Tensor:
    """Tokens an attack may not write: the special tokens (pad, unk, bos, eos, sep)."""
    mask = torch.zeros(len(vocab), dtype=torch.bool)
    mask[: len(SPECIALS)] = True
    return mask


def target_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-item cross-entropy toward the target verdict (lower = closer to the goal)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")


@torch.no_grad()
def exact_scores(threat: ThreatModel, histories: Sequence[User], batch: Sequence[Sequence[int]],
                 chunk: int = 64) -> np.ndarray:
    """P(malicious) for each (history, id sequence) pair; one query per pair."""
    V = len(threat.vocab)
    out = []
    for s in range(0, len(batch), chunk):
        part = batch[s:s + chunk]
        x, lengths = one_hot(part, V, max(len(p) for p in part))
        out.append(torch.sigmoid(threat.soft_logits(histories[s:s + chunk], x, lengths)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def losses_from_probs(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
