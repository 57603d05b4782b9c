"""``transformer``: a Transformer post encoder (token self-attention, mean-pooled)
followed by a Transformer encoder across the user's posts (Vaswani et al., 2017), with
learned position embeddings at both levels and the post's time gap as a feature.
Accepts soft tokens (white-box).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advseq.config import DIM_MAX, Int, ParamError
from advseq.neural import NeuralDetector, PostBatch, SequenceModule, length_mask, masked_mean


class HierarchicalTransformer(SequenceModule):
    def __init__(self, vocab_size: int, d_model: int, heads: int, post_layers: int,
                 seq_layers: int, max_tokens: int, max_posts: int, dropout: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.token_pos = nn.Embedding(max_tokens, d_model)
        self.post_pos = nn.Embedding(max_posts, d_model)
        self.gap = nn.Linear(1, d_model)

        def layer() -> nn.TransformerEncoderLayer:
            return nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model,
                                              dropout=dropout, batch_first=True, norm_first=True)

        self.post_encoder = nn.TransformerEncoder(layer(), post_layers, enable_nested_tensor=False)
        self.seq_encoder = nn.TransformerEncoder(layer(), seq_layers, enable_nested_tensor=False)
        self.post_dim = d_model
        self.norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 * d_model, 1)

    def encode_posts(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        T = int(lengths.max())
        mask = length_mask(lengths, T)
        x = emb[:, :T] + self.token_pos(torch.arange(T, device=emb.device))[None]
        h = self.post_encoder(x, src_key_padding_mask=~mask)
        return masked_mean(h, mask, 1)

    def classify(self, post_vecs: torch.Tensor, batch: PostBatch) -> torch.Tensor:
        P = post_vecs.shape[1]
        pos = torch.arange(P - 1, -1, -1, device=post_vecs.device)   # 0 = most recent slot
        x = post_vecs + self.post_pos(pos)[None] + self.gap(batch.dt.unsqueeze(-1))
        h = self.norm(self.seq_encoder(self.drop(x), src_key_padding_mask=~batch.mask))
        feats = torch.cat([h[:, -1], masked_mean(h, batch.mask, 1)], dim=1)
        return self.head(self.drop(feats)).squeeze(-1)


class TransformerDetector(NeuralDetector):
    """Transformer post encoder + Transformer encoder across posts."""

    name = "transformer"
    param_rules = {"d_model": Int(1, DIM_MAX), "heads": Int(1, 1024), "post_layers": Int(0, 64),
                   "seq_layers": Int(0, 64)}

    def __init__(self, *, d_model: int = 128, heads: int = 4, post_layers: int = 1,
                 seq_layers: int = 2, **common: Any) -> None:
        super().__init__(**common)
        if d_model % heads:
            raise ParamError("heads", f"must divide d_model ({d_model}), got {heads}", self.name)
        self.d_model = d_model
        self.heads = heads
        self.post_layers = post_layers
        self.seq_layers = seq_layers

    def build_module(self) -> SequenceModule:
        return HierarchicalTransformer(len(self.vocab_), self.d_model, self.heads, self.post_layers,
                                       self.seq_layers, self.max_tokens, self.max_posts, self.dropout)
