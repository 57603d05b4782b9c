"""PETGEN's realism/style critic: a CNN over (soft) token distributions."""

from __future__ import annotations

import torch
from torch import nn


class SoftTokenCNN(nn.Module):
    """Scores how real a post looks. Input ``[B, T, V]`` token distributions (one-hot for
    real posts, Gumbel-softmax for generated ones) and lengths ``[B]``; output logits ``[B]``."""

    def __init__(self, vocab_size: int, emb_dim: int = 64, filters: int = 32,
                 widths: tuple[int, ...] = (2, 3, 4, 5), dropout: float = 0.25) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(vocab_size, emb_dim) * 0.1)
        self.convs = nn.ModuleList(nn.Conv1d(emb_dim, filters, w, padding=w - 1) for w in widths)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(filters * len(widths), 1)

    def forward(self, probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = (probs @ self.embedding).transpose(1, 2)                     # [B, E, T]
        T = probs.shape[1]
        pad = torch.arange(T, device=probs.device)[None, :] >= lengths[:, None]
        feats = []
        for conv in self.convs:
            h = torch.relu(conv(x))[:, :, :T].masked_fill(pad.unsqueeze(1), float("-inf"))
            feats.append(h.amax(2))
        return self.out(self.drop(torch.cat(feats, 1))).squeeze(-1)
