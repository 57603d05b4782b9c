"""``hlstm``: PETGEN's two-level LSTM detector (He, Ahamad, Kumar, KDD 2021).

Token embedding (512) -> post-level LSTM (256; last state = post vector) ->
sequence-level LSTM (128) over up to 30 left-padded posts; features = all post vectors
concatenated + the final sequence state -> linear. Defaults are the paper's sizes.

Deviations from the authors' code, all for speed or generalisation, none in the
architecture: batched (the authors run one user per forward pass), one logit with a
sigmoid instead of a 2-way softmax (equivalent), Adam with early stopping on a
validation split (20% of the training users) instead of 200 epochs of SGD, dropout 0.5
on the features, word dropout 0.1 and a minimum token frequency of 5.
The embedding is an ``nn.Embedding`` whose weight also multiplies soft token
distributions, which is the authors' bias-free linear layer over one-hot tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from advseq.config import DIM_MAX, Int
from advseq.neural import NeuralDetector, PostBatch, SequenceModule


class HierarchicalLSTM(SequenceModule):
    length_sliced = True        # the post LSTM stops at the longest post of a call

    def __init__(self, vocab_size: int, emb_dim: int, post_hidden: int, seq_hidden: int,
                 max_posts: int, dropout: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=0)
        self.post_lstm = nn.LSTM(emb_dim, post_hidden, batch_first=True)
        self.seq_lstm = nn.LSTM(post_hidden, seq_hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(max_posts * post_hidden + seq_hidden, 1)
        self.post_dim = post_hidden

    def encode_posts(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # The state after each post's last real token; trailing padding cannot reach it.
        # Unpacked: faster than pack_padded_sequence on CPU at these sizes.
        out, _ = self.post_lstm(emb[:, : int(lengths.max())])
        return out[torch.arange(len(lengths), device=out.device), lengths - 1]

    def classify(self, post_vecs: torch.Tensor, batch: PostBatch) -> torch.Tensor:
        _, (h, _) = self.seq_lstm(post_vecs)
        feats = torch.cat([post_vecs.flatten(1), h[-1]], dim=1)
        return self.head(self.drop(feats)).squeeze(-1)

    def prefix_state(self, post_vecs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sequence LSTM's (h, c) after the first slots, ``[B, seq_hidden]`` each."""
        _, (h, c) = self.seq_lstm(post_vecs)
        return h[0], c[0]

    def classify_from(self, state: tuple[torch.Tensor, torch.Tensor], post_vecs: torch.Tensor,
                      batch: PostBatch, new: int) -> torch.Tensor:
        """:meth:`classify` with the sequence LSTM run over the last ``new`` slots only."""
        h0, c0 = state
        _, (h, _) = self.seq_lstm(post_vecs[:, -new:], (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous()))
        feats = torch.cat([post_vecs.flatten(1), h[-1]], dim=1)
        return self.head(self.drop(feats)).squeeze(-1)


HLSTM_DEFAULTS = {"epochs": 15, "patience": 4, "dropout": 0.5, "valid_size": 0.2,
                  "word_dropout": 0.1, "min_freq": 5}


class HierarchicalLSTMDetector(NeuralDetector):
    """PETGEN's two-level LSTM (embedding 512 -> post LSTM 256 -> sequence LSTM 128)."""

    name = "hlstm"
    param_rules = {"emb_dim": Int(1, DIM_MAX), "post_hidden": Int(1, DIM_MAX), "seq_hidden": Int(1, DIM_MAX)}

    def __init__(self, *, emb_dim: int = 512, post_hidden: int = 256, seq_hidden: int = 128,
                 **common) -> None:
        # Regularisation: at the paper's sizes the model overfits a few hundred users within
        # a few epochs without it (bench/results/detectors.md).
        for key, value in HLSTM_DEFAULTS.items():
            common.setdefault(key, value)
        super().__init__(**common)
        self.emb_dim = emb_dim
        self.post_hidden = post_hidden
        self.seq_hidden = seq_hidden

    def build_module(self) -> SequenceModule:
        return HierarchicalLSTM(len(self.vocab_), self.emb_dim, self.post_hidden, self.seq_hidden,
                                self.max_posts, self.dropout)
