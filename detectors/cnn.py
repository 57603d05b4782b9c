"""``cnn``: a TextCNN post encoder (Kim, EMNLP 2014: parallel 1-D convolutions of widths
2-4 with max-pooling over time) and a GRU over the sequence of post vectors.

The fast deep detector: convolutions over all posts of a batch at once, a small GRU
over at most ``max_posts`` post vectors. Accepts soft tokens (white-box).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advseq.config import DIM_MAX, Int, Items
from advseq.neural import NeuralDetector, PostBatch, SequenceModule, length_mask, masked_mean


class TextCNNSequence(SequenceModule):
    def __init__(self, vocab_size: int, emb_dim: int, filters: int, widths: tuple[int, ...],
                 seq_hidden: int, dropout: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(emb_dim, filters, w, padding=w - 1) for w in widths)
        self.post_dim = filters * len(widths)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(self.post_dim, seq_hidden, batch_first=True)
        self.head = nn.Linear(seq_hidden + self.post_dim, 1)

    def encode_posts(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        T = int(lengths.max())
        x = emb[:, :T].transpose(1, 2)                       # [M, E, T]
        pad = ~length_mask(lengths, T)
        pooled = []
        for conv in self.convs:
            h = torch.relu(conv(x))[:, :, :T]                # position t sees tokens t-w+1..t
            pooled.append(h.masked_fill(pad.unsqueeze(1), float("-inf")).amax(dim=2))
        return torch.cat(pooled, dim=1)

    def classify(self, post_vecs: torch.Tensor, batch: PostBatch) -> torch.Tensor:
        out, _ = self.gru(self.drop(post_vecs))
        feats = torch.cat([out[:, -1], masked_mean(post_vecs, batch.mask, 1)], dim=1)
        return self.head(self.drop(feats)).squeeze(-1)


class TextCNNDetector(NeuralDetector):
    """TextCNN post encoder (widths 2-4) + GRU over posts; the fast deep detector."""

    name = "cnn"
    param_rules = {"emb_dim": Int(1, DIM_MAX), "filters": Int(1, DIM_MAX), "widths": Items(Int(1, 64), max_len=16),
                   "seq_hidden": Int(1, DIM_MAX)}

    def __init__(self, *, emb_dim: int = 128, filters: int = 64, widths: tuple[int, ...] | list[int] = (2, 3, 4),
                 seq_hidden: int = 64, **common: Any) -> None:
        super().__init__(**common)
        self.emb_dim = emb_dim
        self.filters = filters
        self.widths = tuple(widths)
        self.seq_hidden = seq_hidden

    def build_module(self) -> SequenceModule:
        return TextCNNSequence(len(self.vocab_), self.emb_dim, self.filters, self.widths,
                               self.seq_hidden, self.dropout)
