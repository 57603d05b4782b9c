"""Shared machinery for torch detectors.

:class:`TorchDetector` owns the training loop (early stopping on a validation split,
best-epoch checkpoint), batched prediction and safetensors persistence for any model
over batched user tensors (the ``sentence-encoder`` uses it directly).

:class:`NeuralDetector` adds what token-level detectors (hlstm, cnn, ties, transformer)
share: the vocabulary, left-padded ``[B, P, T]`` token tensors, word dropout, and
soft-post scoring for white-box attacks. Its model is a :class:`SequenceModule` with
three parts — token embedding (also over soft token distributions), post encoder
``[M, T, E] -> [M, H]`` and sequence classifier ``[B, P, H] -> [B]``.

Only real posts go through the post encoder (all posts of a batch in one call); padding
slots are zero vectors. Users keep their last ``max_posts`` posts, left-padded so the most
recent post is always in the last slot, each cut to ``max_tokens`` tokens.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advseq import history_cache
from advseq.config import SEED, Bool, Choice, Device, Float, Int
from advseq.detector import Detector, SoftPostDetector
from advseq.errors import ConfigError
from advseq.history_cache import HistoryCache, weights_key
from advseq.post_tensors import (  # re-exported: detectors import them from here
    PostBatch,
    PostEncoderCache,
    appended_deltas,
    tensorize,
    time_deltas,
)
from advseq.schema import User
from advseq.storage import (
    VOCAB_FILE,
    WEIGHTS_FILE,
    atomic_write_with,
    load_safetensors,
    read_vocabulary,
    require_file,
    save_safetensors,
)
from advseq.text import SPECIALS, Tokenizer, Vocabulary

__all__ = ["NeuralDetector", "PostBatch", "PostEncoderCache", "SequenceModule", "TorchDetector",
           "appended_deltas", "length_mask", "masked_mean", "tensorize", "time_deltas"]


class SequenceModule(nn.Module):
    """A detector network in three parts. Subclasses set ``self.embedding`` (an
    ``nn.Embedding`` with ``padding_idx=0``), ``self.post_dim`` and implement
    :meth:`encode_posts` and :meth:`classify`."""

    embedding: nn.Embedding
    post_dim: int
    #: whether :meth:`encode_posts` reads each post only up to its length, so a post's vector
    #: does not depend on the other posts of a call (:func:`~advseq.history_cache.encode_by_length`)
    length_sliced: bool = False
    #: whether :meth:`encode_ids` itself runs each post only to its end (posts of many
    #: lengths in one call), so callers need not group posts by length for it
    packs_ids: bool = False

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """``[M, T] -> [M, T, E]``."""
        return self.embedding(ids)

    def embed_soft(self, probs: torch.Tensor) -> torch.Tensor:
        """``[M, T, V] -> [M, T, E]``: a soft token is the probability-weighted mix of
        embedding rows, so a one-hot row equals :meth:`embed_ids`."""
        return probs @ self.embedding.weight

    @abstractmethod
    def encode_posts(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[M, T, E]`` token embeddings (valid prefix of ``lengths``) -> ``[M, H]``."""

    def encode_ids(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[M, T]`` token ids -> ``[M, H]``: :meth:`encode_posts` of their embeddings. A
        module may encode ids faster outside autograd (the same vectors up to float
        rounding)."""
        return self.encode_posts(self.embed_ids(ids), lengths)

    @abstractmethod
    def classify(self, post_vecs: torch.Tensor, batch: PostBatch) -> torch.Tensor:
        """``[B, P, H]`` post vectors (zeros at empty slots, ``batch.mask``) -> logits ``[B]``."""

    def prefix_state(self, post_vecs: torch.Tensor) -> Any:
        """The sequence classifier's state after the first ``S`` slots of windows
        (``post_vecs`` ``[B, S, H]``), from which :meth:`classify_from` goes on: a tensor or
        tuple of tensors with the batch first. Only modules that override it keep one
        (:attr:`keeps_state`); the history cache then runs only the new slots per query."""
        raise NotImplementedError

    def classify_from(self, state: Any, post_vecs: torch.Tensor, batch: PostBatch, new: int) -> torch.Tensor:
        """:meth:`classify` of the windows ``post_vecs`` ``[B, P, H]`` given ``state``, the
        :meth:`prefix_state` of their first ``P - new`` slots (the same logits up to float
        rounding)."""
        raise NotImplementedError

    @property
    def keeps_state(self) -> bool:
        """Whether :meth:`prefix_state` is offered (overridden)."""
        return type(self).prefix_state is not SequenceModule.prefix_state

    def post_vectors(self, batch: PostBatch) -> torch.Tensor:
        """Encode every real post of the batch in one call; ``[B, P, H]``."""
        B, P, T = batch.ids.shape
        flat = batch.mask.reshape(-1)
        where = flat.nonzero().squeeze(1)
        vec = self.encode_ids(batch.ids.reshape(-1, T)[where], batch.lengths.reshape(-1)[where])
        out = vec.new_zeros(B * P, vec.shape[-1]).index_copy(0, where, vec)
        return out.view(B, P, -1)

    def forward(self, batch: PostBatch) -> torch.Tensor:
        return self.classify(self.post_vectors(batch), batch)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


def length_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


class TorchDetector(Detector):
    """Base of detectors trained with torch on batched user tensors: the training loop
    (Adam, early stopping on a validation split carved from the training users, class
    weights, gradient clipping, best-epoch checkpoint), batched prediction and safetensors
    persistence. Subclasses provide :meth:`_prepare`, :meth:`tensorize` and
    :meth:`build_module`; a batch needs ``labels``, ``index()`` and ``to()``."""

    param_rules = {
        "max_posts": Int(2, 10_000), "epochs": Int(1, 100_000), "batch_size": Int(1, 1 << 20),
        "lr": Float(0, low_open=True), "weight_decay": Float(0), "dropout": Float(0, 1, high_open=True),
        "patience": Int(0), "valid_size": Float(0, 1, high_open=True), "monitor": Choice("auc", "loss"),
        "class_weight": Choice(None, "balanced"), "grad_clip": Float(0), "seed": SEED, "device": Device(),
    }

    def __init__(
        self,
        *,
        max_posts: int = 30,
        epochs: int = 30,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        dropout: float = 0.3,
        patience: int = 5,
        valid_size: float = 0.1,
        monitor: str = "auc",
        class_weight: str | None = None,
        grad_clip: float = 1.0,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self.max_posts = max_posts
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.patience = patience
        self.valid_size = valid_size
        self.monitor = monitor
        self.class_weight = class_weight
        self.grad_clip = grad_clip
        self.seed = seed
        self.device = device
        self.fit_info_ = {}

    @abstractmethod
    def _prepare(self, train: Sequence[User]) -> None:
        """Learn what the module's size depends on (e.g. the vocabulary) from ``train``."""

    @abstractmethod
    def tensorize(self, users: Sequence[User]) -> Any:
        """The batch object for ``users``."""

    def _augment(self, batch: Any, gen: torch.Generator) -> Any:
        """Training-time augmentation of a batch (identity by default)."""
        return batch

    def _save_extra(self, path: Path) -> dict[str, Any]:
        return {}

    def _load_extra(self, path: Path, state: dict[str, Any]) -> None:
        """Restore what :meth:`build_module` needs before the weights are loaded."""

    @abstractmethod
    def build_module(self) -> nn.Module:
        """The untrained network (called after :meth:`_prepare` or :meth:`_load_extra`)."""

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)      # checked against what torch offers when constructed

    def _state_arrays(self) -> list[np.ndarray]:
        self._check_fitted()
        return [v.detach().cpu().numpy() for v in self.module_.state_dict().values()]

    def _check_fitted(self) -> None:
        if not hasattr(self, "module_"):
            raise ConfigError(f"{type(self).__name__} is not trained: call fit() or load()")

    # ---- training ----------------------------------------------------------------------
    #: :meth:`fine_tune` continues training (advseq.torch_fit)
    can_fine_tune = True

    def fit(self, train: Sequence[User], valid: Sequence[User] | None = None, *,
            checkpoint_dir: str | Path | None = None, progress: bool | None = None,
            **kwargs: Any) -> TorchDetector:
        from advseq.torch_fit import train_loop

        return train_loop(self, train, valid, epochs=self.epochs, fresh=True,
                          checkpoint_dir=checkpoint_dir, progress=progress)

    def fine_tune(self, train: Sequence[User], valid: Sequence[User] | None = None, *,
                  epochs: int, progress: bool | None = None) -> TorchDetector:
        """Continue training this fitted detector on ``train`` for up to ``epochs``
        epochs (same optimiser settings, a fresh optimiser, early stopping as in
        :meth:`fit`), keeping its vocabulary and starting from its weights: the warm start
        of adversarial retraining (``advseq retrain --fine-tune-epochs``)."""
        from advseq.torch_fit import train_loop

        self._check_fitted()
        return train_loop(self, train, valid, epochs=epochs, fresh=False, progress=progress)

    # ---- inference ---------------------------------------------------------------------
    @torch.no_grad()
    def _logits(self, data: Any, batch_size: int = 256) -> torch.Tensor:
        self.module_.eval()
        device = self.torch_device
        out = [self.module_(data.index(torch.arange(s, min(s + batch_size, len(data.labels)))).to(device))
               for s in range(0, len(data.labels), batch_size)]
        return torch.cat(out) if out else torch.zeros(0)

    def predict_proba(self, users: Sequence[User]) -> np.ndarray:
        self._check_fitted()
        if not users:
            return np.zeros(0)
        return torch.sigmoid(self._logits(self.tensorize(users))).cpu().double().numpy()

    # ---- persistence -------------------------------------------------------------------
    def _save_state(self, path: Path) -> dict[str, Any]:
        self._check_fitted()
        state = {k: v.detach().cpu().contiguous() for k, v in self.module_.state_dict().items()}
        save_safetensors(path / WEIGHTS_FILE, state)
        return {"weights": WEIGHTS_FILE, **self._save_extra(path)}

    def _load_state(self, path: Path, state: dict[str, Any]) -> None:
        weights = require_file(path / WEIGHTS_FILE)
        self._load_extra(path, state)
        module = self.build_module()
        load_safetensors(module, weights, what=type(self).__name__)
        self.module_ = module.to(self.torch_device).eval().requires_grad_(False)


class NeuralDetector(TorchDetector, SoftPostDetector):
    """Token-level neural detectors (a :class:`SequenceModule` over the detector's own
    vocabulary), with the white-box soft-post capability."""

    param_rules = {"max_tokens": Int(1, 10_000), "min_freq": Int(1), "max_vocab": Int(len(SPECIALS) + 1),
                   "lowercase": Bool(), "word_dropout": Float(0, 1, high_open=True)}

    def __init__(self, *, max_tokens: int = 30, min_freq: int = 2, max_vocab: int = 30000,
                 lowercase: bool = True, word_dropout: float = 0.0, **common: Any) -> None:
        super().__init__(**common)
        self.max_tokens = max_tokens
        self.min_freq = min_freq
        self.max_vocab = max_vocab
        self.lowercase = lowercase
        self.word_dropout = word_dropout

    def _augment(self, batch: PostBatch, gen: torch.Generator) -> PostBatch:
        """Word dropout: each real token becomes <unk> with probability ``word_dropout``."""
        if not self.word_dropout:
            return batch
        drop = (torch.rand(batch.ids.shape, generator=gen) < self.word_dropout) & (batch.ids != 0)
        return replace(batch, ids=batch.ids.masked_fill(drop, self.vocab_.unk_id))

    @abstractmethod
    def build_module(self) -> SequenceModule:
        """The untrained network for ``len(self.vocab_)`` tokens."""

    @property
    def max_post_tokens(self) -> int:  # type: ignore[override]
        return self.max_tokens

    def _prepare(self, train: Sequence[User]) -> None:
        texts = (p.text for u in train for p in u.posts[-self.max_posts:])
        self.vocab_ = Vocabulary.build(texts, Tokenizer(lowercase=self.lowercase),
                                       min_freq=self.min_freq, max_size=self.max_vocab)
        self._encode = PostEncoderCache(self.vocab_, self.max_tokens)

    def tensorize(self, users: Sequence[User], *, reserve: int = 0) -> PostBatch:
        return tensorize(users, self._encode, self.max_posts, reserve=reserve)

    def _save_extra(self, path: Path) -> dict[str, Any]:
        atomic_write_with(path / VOCAB_FILE, self.vocab_.save)
        return {"vocab": VOCAB_FILE, "vocab_size": len(self.vocab_)}

    def _load_extra(self, path: Path, state: dict[str, Any]) -> None:
        self.vocab_ = read_vocabulary(path / VOCAB_FILE)
        self._encode = PostEncoderCache(self.vocab_, self.max_tokens)

    # ---- queries on a history and new posts (attacks) ----------------------------------
    def _query_cache(self) -> HistoryCache | None:
        """This detector's :class:`~advseq.history_cache.HistoryCache` when one may serve
        (switched on, frozen weights), rebuilt when the weights changed; else None."""
        key = weights_key(self.module_) if history_cache.enabled() else None
        if key is None:
            return None
        cache = self.__dict__.get("_history_cache")
        if cache is None or cache.module is not self.module_ or cache.key != key:
            cache = self._history_cache = HistoryCache(self.module_, self._encode, self.max_posts)
        return cache

    def query_proba(self, users: Sequence[User]) -> np.ndarray:
        """:meth:`predict_proba` for an attack's score queries: the same scores, each post's
        vector taken from the history cache where it was encoded before."""
        self._check_fitted()
        self.module_.eval()
        cache = self._query_cache()
        if cache is None or not users:
            return self.predict_proba(users)
        with torch.no_grad():
            out = [self.module_.classify(*cache.users(users[s:s + 256])) for s in range(0, len(users), 256)]
        return torch.sigmoid(torch.cat(out)).cpu().double().numpy()

    def soft_post_logits(self, histories: Sequence[User], soft_post: torch.Tensor,
                         lengths: torch.Tensor) -> torch.Tensor:
        """See :meth:`advseq.detector.SoftPostDetector.soft_post_logits`. K soft posts take
        the last K slots; where K exceeds ``max_posts`` only the last ``max_posts`` are
        read, exactly as for K real posts."""
        self._check_fitted()
        soft_post, lengths = _posts_form(len(histories), soft_post, lengths, len(self.vocab_), "soft_post")
        B, K, T, V = soft_post.shape
        R = min(K, self.max_posts)                    # the slots the detector reads
        soft = soft_post[:, K - R:].to(self.torch_device).reshape(B * R, T, V)
        return self._appended_logits(histories, lengths, K, emb=self.module_.embed_soft(soft))

    def token_post_logits(self, histories: Sequence[User], ids: torch.Tensor,
                          lengths: torch.Tensor) -> torch.Tensor:
        """:meth:`soft_post_logits` of the one-hot posts of token ids ``ids`` (``[B, T]``
        with lengths ``[B]``, or ``[B, K, T]`` with ``[B, K]``) without building the
        ``[..., V]`` matrix: the exact score of those tokens as real posts."""
        self._check_fitted()
        ids, lengths = _posts_form(len(histories), ids, lengths, None, "ids")
        B, K, T = ids.shape
        R = min(K, self.max_posts)
        flat = ids[:, K - R:].to(self.torch_device).reshape(B * R, T)
        return self._appended_logits(histories, lengths, K, ids=flat)

    def token_post_gradient(self, histories: Sequence[User], ids: torch.Tensor, lengths: torch.Tensor,
                            target: torch.Tensor, columns: torch.Tensor | None = None) -> tuple[np.ndarray, torch.Tensor]:
        """P(malicious) and the gradient ``[B, (K,) T, V]`` of the cross-entropy toward
        ``target`` (``[B]``) at the one-hot posts of ``ids`` (as :meth:`token_post_logits`)
        without building them: one-hot rows embed to the rows of ``ids`` exactly, and the
        gradient is the embedded posts' gradient times the embedding matrix (the product
        autograd forms on the soft path; rows past a post's end are zero). Given token ids
        ``columns``, only those tokens' entries are computed (the others are zero)."""
        self._check_fitted()
        one = ids.dim() == 2
        ids, lengths = _posts_form(len(histories), ids, lengths, None, "ids")
        B, K, T = ids.shape
        R = min(K, self.max_posts)
        weight = self.module_.embedding.weight
        flat = ids[:, K - R:].to(self.torch_device).reshape(B * R, T)
        emb = self.module_.embed_ids(flat).detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self._appended_logits(histories, lengths, K, emb=emb)
            tgt = target.to(dtype=logits.dtype, device=logits.device).expand_as(logits)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, tgt, reduction="sum")
            (g_emb,) = torch.autograd.grad(loss, emb)
        flat_grad = g_emb.reshape(-1, g_emb.shape[-1])
        valid = (torch.arange(T, device=flat.device)[None, :] < lengths[:, K - R:].reshape(-1, 1).to(flat.device))
        rows = valid.reshape(-1).nonzero().squeeze(1)
        grad = flat_grad.new_zeros(len(flat_grad), len(weight))
        if columns is None:
            grad.index_copy_(0, rows, flat_grad.index_select(0, rows).mm(weight.t()))
        else:
            columns = columns.to(weight.device)
            part = flat_grad.index_select(0, rows).mm(weight.index_select(0, columns).t())
            grad[rows[:, None], columns[None, :]] = part
        grad = grad.view(B, R, T, -1)
        if R < K:                                      # slots the detector does not read
            grad = torch.cat([grad.new_zeros(B, K - R, T, grad.shape[-1]), grad], 1)
        probs = torch.sigmoid(logits).detach().cpu().double().numpy()
        return probs, grad[:, 0] if one else grad

    def _appended_logits(self, histories: Sequence[User], lengths: torch.Tensor, K: int, *,
                         emb: torch.Tensor | None = None, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits with the new posts after each history, given embedded (``emb``,
        ``[B * R, T, E]``) or as token ids (``ids``, ``[B * R, T]``): the R read slots of K,
        ``lengths`` ``[B, K]``."""
        posts = emb if emb is not None else ids
        assert posts is not None
        B, P, T = len(histories), self.max_posts, posts.shape[1]
        R = min(K, P)
        self.module_.eval()
        lengths = lengths[:, K - R:].to(self.torch_device).clamp(min=1, max=T)
        new = history_cache.encode_by_length(self.module_, lengths.reshape(-1), emb=emb, ids=ids).view(B, R, -1)
        cache = self._query_cache()
        state = None
        if cache is not None:
            old, batch, *rest = cache.windows(histories, K, states=history_cache.fast())
            state = rest[0] if rest else None
        else:
            batch = self.tensorize(histories, reserve=K).to(self.torch_device)
            old = self.module_.post_vectors(batch)[:, :P - R] if batch.mask.any() else \
                new.new_zeros(B, P - R, new.shape[-1])      # no history post in the window
        post_vecs = torch.cat([old.to(new.dtype), new], dim=1)
        mask = batch.mask.clone()
        mask[:, P - R:] = True
        lens = batch.lengths.clone()
        lens[:, P - R:] = lengths
        batch = replace(batch, mask=mask, lengths=lens)
        if state is not None:
            return self.module_.classify_from(state, post_vecs, batch, R)
        return self.module_.classify(post_vecs, batch)


def _posts_form(B: int, posts: torch.Tensor, lengths: torch.Tensor, V: int | None,
                what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``posts`` as K posts per user (``[B, K, T(, V)]``, lengths ``[B, K]``), from one post
    (``[B, T(, V)]``, lengths ``[B]``) or K; a wrong shape is a :class:`ConfigError`."""
    one, many = (3, 4) if V is not None else (2, 3)
    tail = f", V={V}" if V is not None else ""
    if posts.dim() == one:                            # one post per user
        posts, lengths = posts.unsqueeze(1), lengths.unsqueeze(1)
    elif posts.dim() != many:
        raise ConfigError(f"{what} must be [B={B}, T{tail}] or [B={B}, K, T{tail}], got {list(posts.shape)}")
    if posts.shape[0] != B or (V is not None and posts.shape[-1] != V) or posts.shape[1] < 1 \
            or tuple(lengths.shape) != tuple(posts.shape[:2]):
        raise ConfigError(f"{what} must be [B={B}, T{tail}] with lengths [B] or "
                          f"[B={B}, K, T{tail}] with lengths [B, K], got {list(posts.shape)} "
                          f"and lengths {list(lengths.shape)}")
    return posts, lengths
