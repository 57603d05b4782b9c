"""``ties``: a TIES-style detector (Noorshams, Verma, Hofleitner, "TIES: Temporal
Interaction Embeddings for Enhancing Social Media Integrity at Facebook", KDD 2020).

TIES represents an account as the time-ordered sequence of its interactions, each
embedded from *what* happened combined with *when*, and classifies the sequence with a
recurrent / attention model. Kept here: each post becomes an interaction embedding =
content embedding (mean of word embeddings, projected) + an embedding of the
log-bucketed time gap since the previous post + an embedding of its position from the
end; a bidirectional GRU reads the sequence and attention pooling summarises it.

Not kept: TIES's entity embeddings pre-trained on Facebook's interaction graph
(users, pages, action types) — advseq's datasets have no entity graph, only post text
and free-text contexts — and its production features. Accepts soft tokens (white-box).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advseq.config import DIM_MAX, Int
from advseq.neural import NeuralDetector, PostBatch, SequenceModule, length_mask

#: log1p(minutes) bucket edges: < 1 min, ~3 min, ~20 min, ~2.5 h, ~1 day, ~1 week, more
GAP_EDGES = (0.7, 1.4, 3.0, 5.0, 7.3, 9.2)


class TemporalInteractionModel(SequenceModule):
    def __init__(self, vocab_size: int, emb_dim: int, hidden: int, max_posts: int,
                 dropout: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=0)
        self.content = nn.Sequential(nn.Linear(emb_dim, hidden), nn.Tanh())
        self.post_dim = hidden
        self.gap = nn.Embedding(len(GAP_EDGES) + 2, hidden)   # +1 bucket for "unknown"
        self.position = nn.Embedding(max_posts, hidden)
        self.register_buffer("edges", torch.tensor(GAP_EDGES), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.att = nn.Linear(2 * hidden, 1)
        self.head = nn.Linear(2 * hidden, 1)

    def encode_posts(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        m = length_mask(lengths, emb.shape[1]).unsqueeze(-1).to(emb.dtype)
        return self.content((emb * m).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(emb.dtype))

    def classify(self, post_vecs: torch.Tensor, batch: PostBatch) -> torch.Tensor:
        B, P, _ = post_vecs.shape
        gap_ids = torch.bucketize(batch.dt, self.edges) + 1
        gap_ids = gap_ids.masked_fill(batch.dt <= 0, 0)           # 0 = first post / unknown
        pos = torch.arange(P - 1, -1, -1, device=post_vecs.device)  # 0 = most recent slot
        x = post_vecs + self.gap(gap_ids) + self.position(pos)[None]
        x = self.drop(x) * batch.mask.unsqueeze(-1)
        h, _ = self.gru(x)
        scores = self.att(h).squeeze(-1).masked_fill(~batch.mask, float("-inf"))
        pooled = (torch.softmax(scores, dim=1).unsqueeze(-1) * h).sum(1)
        return self.head(self.drop(pooled)).squeeze(-1)


class TIESDetector(NeuralDetector):
    """TIES-style temporal interaction embeddings (content + time gap + position) + bi-GRU with attention."""

    name = "ties"
    param_rules = {"emb_dim": Int(1, DIM_MAX), "hidden": Int(1, DIM_MAX)}

    def __init__(self, *, emb_dim: int = 128, hidden: int = 128, **common: Any) -> None:
        super().__init__(**common)
        self.emb_dim = emb_dim
        self.hidden = hidden

    def build_module(self) -> SequenceModule:
        return TemporalInteractionModel(len(self.vocab_), self.emb_dim, self.hidden,
                                        self.max_posts, self.dropout)
