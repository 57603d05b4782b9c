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

from advseq import history_cache
from advseq.config import DIM_MAX, Int
from advseq.neural import NeuralDetector, PostBatch, SequenceModule


class HierarchicalLSTM(SequenceModule):
    length_sliced = True        # the post LSTM stops at the longest post of a call
    packs_ids = True            # encode_ids runs each post only to its end, in one call

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

    def encode_ids(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """:meth:`encode_posts` of the embedded ids. Outside autograd (eval mode, no
        gradients, the faster query paths on) the post LSTM's input side is read from a
        table of each token's gate inputs (embedding times input weights plus biases),
        so a step is one gather and the recurrent product: the same vectors up to float
        rounding, in about half the time of ``nn.LSTM`` on CPU."""
        if self.training or torch.is_grad_enabled() or not history_cache.fast():
            return super().encode_ids(ids, lengths)
        lengths = torch.where(lengths > 0, lengths, int(lengths.max()))
        sorted_len, order = torch.sort(lengths, descending=True, stable=True)
        T = int(sorted_len[0])
        table = self._gate_table
        x = table.rows(self, ids.index_select(0, order)[:, :T])   # [M, T, 4H], longest first
        w_hh = table.w_hh
        H, M = self.post_dim, len(ids)
        # rows still running at step t: a prefix of the sorted rows (packed, as pack_padded_sequence)
        running = (sorted_len[None, :] > torch.arange(T, device=ids.device)[:, None]).sum(1).tolist()
        h, c = x.new_zeros(M, H), x.new_zeros(M, H)
        for t, n in enumerate(running):
            g = torch.addmm(x[:n, t], h[:n], w_hh)
            s = torch.sigmoid(g[:, : 3 * H])                          # input, forget, output
            c_n = torch.addcmul(s[:, H:2 * H] * c[:n], s[:, :H], torch.tanh(g[:, 3 * H:]))
            h_n = s[:, 2 * H:] * torch.tanh(c_n)
            if n == M:
                h, c = h_n, c_n
            else:
                h, c = torch.cat([h_n, h[n:]]), torch.cat([c_n, c[n:]])
        return h.new_empty(h.shape).index_copy_(0, order, h)

    @property
    def _gate_table(self) -> _GateTable:
        table = self.__dict__.get("_gates")
        if table is None or not table.serves(self):
            table = self.__dict__["_gates"] = _GateTable(self)
        return table

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


class _GateTable:
    """The post LSTM's gate inputs per token, ``embedding[v] @ W_ih.T + b_ih + b_hh``
    with the gates reordered (input, forget, output, cell), filled in fixed blocks of
    token ids as calls first need them: a row's value does not depend on which call
    asked first, so resumed runs read the same numbers. Valid while the weights it was
    built from are unchanged (tensor identity and in-place versions)."""

    BLOCK = 256

    def __init__(self, module: HierarchicalLSTM) -> None:
        self.key = self._key(module)
        lstm = module.post_lstm
        H = module.post_dim
        order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)]) \
            .to(lstm.weight_ih_l0.device)
        self.w_ih = lstm.weight_ih_l0.detach().index_select(0, order).t().contiguous()
        self.bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().index_select(0, order)
        self.w_hh = lstm.weight_hh_l0.detach().index_select(0, order).t().contiguous()
        V = module.embedding.num_embeddings
        self.table = self.w_ih.new_zeros(V, 4 * H)
        self.filled = torch.zeros((V + self.BLOCK - 1) // self.BLOCK, dtype=torch.bool)

    @staticmethod
    def _key(module: HierarchicalLSTM) -> tuple:
        lstm = module.post_lstm
        return history_cache.tensors_key((module.embedding.weight, lstm.weight_ih_l0, lstm.bias_ih_l0,
                                          lstm.bias_hh_l0, lstm.weight_hh_l0))

    def serves(self, module: HierarchicalLSTM) -> bool:
        return self._key(module) == self.key

    def rows(self, module: HierarchicalLSTM, ids: torch.Tensor) -> torch.Tensor:
        blocks = torch.unique(ids.reshape(-1).cpu() // self.BLOCK)
        missing = blocks[~self.filled[blocks]].tolist()
        weight = module.embedding.weight.detach()
        V = len(weight)
        for b in missing:
            lo, hi = b * self.BLOCK, min(V, (b + 1) * self.BLOCK)
            self.table[lo:hi] = torch.addmm(self.bias, weight[lo:hi], self.w_ih)
            self.filled[b] = True
        return self.table[ids]


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
