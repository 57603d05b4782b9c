"""Users as tensors for token-level detectors: left-padded ``[B, P, T]`` token ids of each
user's last ``max_posts`` posts (the most recent in the last slot), their lengths and the
time gaps between posts, with slots kept free for posts an attack appends.

Split from :mod:`advseq.neural`, which re-exports every name here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from advseq.errors import ConfigError
from advseq.schema import Post, User
from advseq.text import Vocabulary


@dataclass
class PostBatch:
    """Tensors for B users: ``ids [B,P,T]``, ``lengths [B,P]`` (0 = empty slot),
    ``mask [B,P]``, ``dt [B,P]`` (log1p minutes since the previous post, 0 if unknown),
    ``labels [B]``."""

    ids: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor
    dt: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device) -> PostBatch:
        return PostBatch(*(t.to(device) for t in (self.ids, self.lengths, self.mask, self.dt, self.labels)))

    def index(self, idx: torch.Tensor) -> PostBatch:
        return PostBatch(self.ids[idx], self.lengths[idx], self.mask[idx], self.dt[idx], self.labels[idx])


class PostEncoderCache:
    """Token ids per post text, cached: attacks re-score users whose history is unchanged."""

    def __init__(self, vocab: Vocabulary, max_tokens: int, max_entries: int = 500_000) -> None:
        self.vocab = vocab
        self.max_tokens = max_tokens
        self.max_entries = max_entries
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, text: str) -> np.ndarray:
        ids = self._cache.get(text)
        if ids is None:
            ids = np.asarray(self.vocab.encode(text, max_len=self.max_tokens) or [self.vocab.unk_id],
                             dtype=np.int64)
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[text] = ids
        return ids


def time_deltas(user: User) -> np.ndarray:
    """log1p(minutes since the previous post) per post; 0 where timestamps are missing."""
    ts = [p.timestamp for p in user.posts]
    out = np.zeros(len(ts), dtype=np.float32)
    for i in range(1, len(ts)):
        a, b = ts[i - 1], ts[i]
        if a is not None and b is not None:
            out[i] = math.log1p(max(0.0, b - a) / 60.0)
    return out


def appended_deltas(history: User, k: int) -> np.ndarray:
    """:func:`time_deltas` of ``k`` posts appended to ``history`` the way an attack writes
    them (:class:`advseq.attack.AttackSpec`: the first at the last post's time plus the
    user's median gap, each next one a median gap later), shape ``[k]``."""
    from advseq.attack import _next_timestamp  # the one rule for a written post's time

    first = _next_timestamp(history.posts, None)
    if first is None:
        return np.zeros(k, dtype=np.float32)
    last = next(p.timestamp for p in reversed(history.posts) if p.timestamp is not None)
    gap = first - last
    written = tuple(Post("", None, first + j * gap, None) for j in range(k))
    return time_deltas(history.with_posts((*history.posts, *written)))[-k:]


def tensorize(users: Sequence[User], encode: PostEncoderCache, max_posts: int, *,
              reserve: int = 0) -> PostBatch:
    """Left-padded tensors for ``users``. With ``reserve`` = K new posts, the last
    R = min(K, ``max_posts``) slots are left empty for the ones the detector reads, only
    ``max_posts - R`` history posts are kept (as when K real posts are appended), and the
    empty slots' ``dt`` is theirs in :func:`appended_deltas`."""
    B, P, T = len(users), max_posts, encode.max_tokens
    if reserve < 0:
        raise ConfigError(f"reserve must be >= 0 new posts, got {reserve}")
    ids = np.zeros((B, P, T), dtype=np.int64)
    lengths = np.zeros((B, P), dtype=np.int64)
    dt = np.zeros((B, P), dtype=np.float32)
    R = min(reserve, P)
    keep = end = P - R
    for b, u in enumerate(users):
        posts = u.posts[-keep:] if keep > 0 else ()
        deltas = time_deltas(u)[-keep:] if keep > 0 else ()
        start = end - len(posts)
        for j, (post, d) in enumerate(zip(posts, deltas, strict=True)):
            tok = encode(post.text)
            ids[b, start + j, : len(tok)] = tok
            lengths[b, start + j] = len(tok)
            dt[b, start + j] = d
        if reserve:
            dt[b, end:] = appended_deltas(u, reserve)[reserve - R:]
    labels = np.array([u.label for u in users], dtype=np.float32)
    lengths_t = torch.from_numpy(lengths)
    return PostBatch(torch.from_numpy(ids), lengths_t, lengths_t > 0, torch.from_numpy(dt),
                     torch.from_numpy(labels))


def one_hot_ids(ids: torch.Tensor, lengths: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The one-hot soft posts of token ids: ``ids`` ``[..., T]`` with ``lengths`` ``[...]``
    -> ``[..., T, V]``, rows past a post's length all zero (for a detector that takes soft
    posts but offers no token path)."""
    T = ids.shape[-1]
    valid = torch.arange(T, device=ids.device) < lengths.unsqueeze(-1)
    x = torch.zeros(*ids.shape, vocab_size, device=ids.device)
    x.scatter_(-1, ids.clamp(min=0).unsqueeze(-1), valid.unsqueeze(-1).to(x.dtype))
    return x
