"""Encoded histories, reused across an attack's queries to a token-level detector.

A white-box or score attack asks about one history again and again, each time with a
different new post: every HotFlip candidate, every gradient step of a refinement, every
sampled PETGEN candidate. A :class:`~advseq.neural.SequenceModule` encodes each post on
its own (``encode_posts``) before its sequence classifier reads the window, so the
vectors of the history's posts do not depend on the new post. :class:`HistoryCache`
encodes them once, outside autograd (the detector is frozen and gradients are taken with
respect to the new post only), and a query encodes just its new post(s), then runs
``classify`` over the window. The numbers are those of encoding the whole window again,
up to float rounding from encoding posts in other batches.

What is kept, and under which key:

* a history (a :class:`~advseq.schema.User`, as attacks pass ``task.history``) by object
  identity. ``User`` is frozen and has no weak references (``slots``), so an entry holds
  the object itself (its id cannot be reused while the entry lives) and is used only
  while a fingerprint (user id, number of posts, last post's text and time) still
  matches. Per number K of new posts it keeps the tensors
  :func:`~advseq.post_tensors.tensorize` gives with ``reserve=K`` (the window shifted
  for K posts) and the vectors of the history posts in that window;
* a post's text, for its vector: what histories are built from, and what full users (a
  history plus a candidate, as score queries send them) are assembled from.

Both are least-recently-used, bounded by entry counts. A cache belongs to one module and
serves only while its weights are the ones it was built with (the same parameter
tensors, none modified in place: torch's version counters), the module is in eval mode
and no parameter takes gradients; otherwise a query encodes everything as before.

A module whose sequence classifier runs a recurrent state over the window (the hlstm's
sequence LSTM) may also offer :meth:`~advseq.neural.SequenceModule.prefix_state`: a
window then keeps that state after its history slots, and a query runs the classifier
over the new slots only (:meth:`~advseq.neural.SequenceModule.classify_from`). Modules
without it (attention over the window, time-gap features read with every slot) classify
the whole window: the generic fallback.

``ADVSEQ_HISTORY_CACHE=0`` in the environment, or :func:`switched` in code, turns the
cache off; ``ADVSEQ_FAST_QUERIES=0`` (``switched(..., fast=False)``) turns off the
faster query paths added after it — the kept classifier state, token-id gradients
(:meth:`~advseq.threat.ThreatModel.token_gradient`) and score queries batched across
users — which give the same numbers up to float rounding (benchmarks compare them in one
process).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from advseq.post_tensors import PostBatch, PostEncoderCache, tensorize

if TYPE_CHECKING:
    from advseq.neural import SequenceModule
    from advseq.schema import User

ENV = "ADVSEQ_HISTORY_CACHE"
_enabled = os.environ.get(ENV, "1").strip() != "0"
FAST_ENV = "ADVSEQ_FAST_QUERIES"
_fast = os.environ.get(FAST_ENV, "1").strip() != "0"

#: posts encoded per call when the cache fills in missing texts
ENCODE_CHUNK = 512


def enabled() -> bool:
    """Whether detectors keep history caches (``ADVSEQ_HISTORY_CACHE`` is not ``0``)."""
    return _enabled


def fast() -> bool:
    """Whether the faster query paths serve (``ADVSEQ_FAST_QUERIES`` is not ``0``)."""
    return _fast


@contextmanager
def switched(on: bool, *, fast: bool | None = None) -> Iterator[None]:
    """Turn the caches on or off inside a ``with`` block (caches already built are kept
    but not used while off); ``fast`` likewise the faster query paths (unchanged if
    None)."""
    global _enabled, _fast
    before = _enabled, _fast
    _enabled = bool(on)
    if fast is not None:
        _fast = bool(fast)
    try:
        yield
    finally:
        _enabled, _fast = before


def encode_by_length(module: SequenceModule, lengths: torch.Tensor, *, emb: torch.Tensor | None = None,
                     ids: torch.Tensor | None = None) -> torch.Tensor:
    """``module.encode_posts(emb, lengths)`` (or ``module.encode_ids(ids, lengths)``, given
    token ids); outside autograd, with the faster paths on and a
    :attr:`~advseq.neural.SequenceModule.length_sliced` module, the posts of each length
    are encoded together, so no step runs past a post's end (the same vectors)."""
    if ids is not None:
        posts, encode = ids, module.encode_ids
    elif emb is not None:
        posts, encode = emb, module.encode_posts
    else:
        raise TypeError("encode_by_length needs emb or ids")
    if not (_fast and module.length_sliced and len(lengths) > 1) or (torch.is_grad_enabled() and posts.requires_grad) \
            or (ids is not None and module.packs_ids):
        return encode(posts, lengths)
    sorted_len, order = torch.sort(lengths, stable=True)
    counts = torch.unique_consecutive(sorted_len, return_counts=True)[1].tolist()
    if len(counts) == 1:
        return encode(posts, lengths)
    parts, start = [], 0
    for n in counts:
        rows = order[start:start + n]
        parts.append(encode(posts.index_select(0, rows), lengths.index_select(0, rows)))
        start += n
    vec = torch.cat(parts)
    return vec.new_empty(vec.shape).index_copy_(0, order, vec)


def weights_key(module: torch.nn.Module) -> tuple[Any, ...] | None:
    """What a cache's vectors depend on: each parameter tensor and its in-place version;
    ``None`` where no cache may serve (training mode, or weights taking gradients)."""
    if module.training:
        return None
    params = list(module.parameters())
    if any(p.requires_grad for p in params):
        return None
    return tensors_key(params)


def tensors_key(tensors: Iterable[torch.Tensor]) -> tuple[Any, ...]:
    """Each tensor's identity, storage and in-place version: equal keys mean the values
    a cache derived from them still hold."""
    return tuple((id(t), t.data_ptr(), t._version) for t in tensors)


def _fingerprint(user: User) -> tuple[Any, ...]:
    last = user.posts[-1] if user.posts else None
    return (user.user_id, len(user.posts), None if last is None else (last.text, last.timestamp))


@dataclass
class _Window:
    """One history's part of a batch for K new posts: the tensors of
    ``tensorize([history], reserve=K)`` (``[P, T]``, ``[P]``, ``[P]``, ``[P]``) and the
    vectors of the ``P - R`` history slots (zeros where empty)."""

    ids: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor
    dt: torch.Tensor
    vecs: torch.Tensor
    posts: int          #: history posts in the window
    #: the module's prefix_state after the history slots (computed on first use)
    state: Any = None
    has_state: bool = False


class HistoryCache:
    """Post vectors and tensorized windows of the histories a detector was asked about
    (the module doc). ``module`` must be frozen and in eval mode (:func:`weights_key`)."""

    def __init__(self, module: SequenceModule, encode: PostEncoderCache, max_posts: int, *,
                 histories: int = 1024, texts: int = 50_000) -> None:
        key = weights_key(module)
        if key is None:
            raise ValueError("a history cache needs a frozen module in eval mode")
        self.module = module
        self.key = key
        self.encode = encode
        self.max_posts = max_posts
        self.max_histories = histories
        self.max_texts = texts
        self.device = next(module.parameters()).device
        self._texts: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._histories: OrderedDict[int, tuple[User, tuple[Any, ...], dict[int, _Window]]] = OrderedDict()
        #: posts encoded, and post vectors served from the cache (for benchmarks)
        self.encoded = 0
        self.reused = 0

    def serves(self, module: torch.nn.Module) -> bool:
        """Whether this cache's vectors are ``module``'s now."""
        return module is self.module and weights_key(module) == self.key

    # ---- post vectors by text ------------------------------------------------------
    @torch.no_grad()
    def vectors(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), H]``: each text's post vector, encoding only the texts not held."""
        held = self._texts
        missing = list(dict.fromkeys(t for t in texts if t not in held))
        fresh: dict[str, torch.Tensor] = {}
        T = self.encode.max_tokens
        if _fast and self.module.length_sliced:       # posts of one length encoded together
            missing.sort(key=lambda t: len(self.encode(t)))
        for s in range(0, len(missing), ENCODE_CHUNK):
            part = missing[s:s + ENCODE_CHUNK]
            ids = torch.zeros(len(part), T, dtype=torch.long)
            lengths = torch.zeros(len(part), dtype=torch.long)
            for n, text in enumerate(part):
                tok = torch.from_numpy(self.encode(text))
                ids[n, : len(tok)] = tok
                lengths[n] = len(tok)
            ids, lengths = ids.to(self.device), lengths.to(self.device)
            vec = encode_by_length(self.module, lengths, ids=ids)
            fresh.update(zip(part, vec.clone().unbind(0), strict=True))
        self.encoded += len(missing)
        self.reused += len(texts) - len(missing)
        rows = []
        for text in texts:
            v = fresh.get(text)
            if v is None:
                v = held[text]
                held.move_to_end(text)
            rows.append(v)
        held.update(fresh)
        while len(held) > self.max_texts:
            held.popitem(last=False)
        if not rows:
            return torch.zeros(0, self.module.post_dim, device=self.device)
        return torch.stack(rows)

    # ---- histories by identity -----------------------------------------------------
    def _window(self, history: User, k: int) -> _Window:
        fp = _fingerprint(history)
        entry = self._histories.get(id(history))
        if entry is None or entry[0] is not history or entry[1] != fp:
            entry = (history, fp, {})
            self._histories[id(history)] = entry
            while len(self._histories) > self.max_histories:
                self._histories.popitem(last=False)
        else:
            self._histories.move_to_end(id(history))
        win = entry[2].get(k)
        if win is None:
            P = self.max_posts
            keep = P - min(k, P)
            b = tensorize([history], self.encode, P, reserve=k).to(self.device)
            posts = history.posts[-keep:] if keep > 0 else ()
            vecs = torch.zeros(keep, self.module.post_dim, device=self.device)
            if posts:
                vecs[keep - len(posts):] = self.vectors([p.text for p in posts])
            win = _Window(b.ids[0], b.lengths[0], b.mask[0], b.dt[0], vecs, len(posts))
            entry[2][k] = win
        else:
            self.reused += win.posts
        return win

    @torch.no_grad()
    def _state(self, win: _Window) -> Any:
        if not win.has_state:
            win.state = self.module.prefix_state(win.vecs.unsqueeze(0)) if len(win.vecs) else None
            win.has_state = True
        return win.state

    def windows(self, histories: Sequence[User], k: int, *, states: bool = False) -> tuple[Any, ...]:
        """For ``k`` new posts after each history: the history slots' vectors
        ``[B, P - R, H]`` (R = min(k, P); no autograd) and the batch
        ``tensorize(histories, reserve=k)`` gives, on the module's device. With
        ``states``, also the module's ``prefix_state`` after the history slots, batched
        (tensors with the batch first; None where the module keeps none)."""
        wins: list[_Window] = []
        slot: dict[int, int] = {}
        index = []
        for h in histories:
            w = self._window(h, k)
            j = slot.get(id(w))
            if j is None:
                j = slot[id(w)] = len(wins)
                wins.append(w)
            index.append(j)
        fields = [torch.stack([getattr(w, f) for w in wins]) for f in ("ids", "lengths", "mask", "dt", "vecs")]
        if index != list(range(len(wins))):
            idx = torch.tensor(index, device=self.device)
            fields = [f.index_select(0, idx) for f in fields]
        ids, lengths, mask, dt, vecs = fields
        labels = torch.tensor([float(h.label) for h in histories], device=self.device)
        batch = PostBatch(ids, lengths, mask, dt, labels)
        if not states:
            return vecs, batch
        return vecs, batch, self._stacked_states(wins, index)

    def _stacked_states(self, wins: list[_Window], index: list[int]) -> Any:
        if not self.module.keeps_state:
            return None
        each = [self._state(w) for w in wins]
        if each[0] is None:
            return None
        parts = list(zip(*each, strict=True)) if isinstance(each[0], tuple) else [each]
        out = [torch.cat(p) for p in parts]
        if index != list(range(len(wins))):
            idx = torch.tensor(index, device=self.device)
            out = [t.index_select(0, idx) for t in out]
        return tuple(out) if isinstance(each[0], tuple) else out[0]

    # ---- whole users (history + new post as real posts) ----------------------------
    def users(self, users: Sequence[User]) -> tuple[torch.Tensor, PostBatch]:
        """``[B, P, H]`` post vectors and ``tensorize(users)`` for whole users, every post's
        vector from the text cache (the batch ``module.post_vectors`` would encode)."""
        P = self.max_posts
        batch = tensorize(users, self.encode, P).to(self.device)
        texts: list[str] = []
        where: list[int] = []
        for b, u in enumerate(users):
            posts = u.posts[-P:]
            texts.extend(p.text for p in posts)
            where.extend(range(b * P + P - len(posts), (b + 1) * P))
        vec = self.vectors(texts)
        out = vec.new_zeros(len(users) * P, self.module.post_dim)
        out = out.index_copy(0, torch.tensor(where, dtype=torch.long, device=self.device), vec)
        return out.view(len(users), P, -1), batch
