"""PETGEN's personalised generator, on advseq's :class:`~advseq.lm.PostLM` decoder.

The decoder (a small GPT-2 over advseq's word vocabulary, pre-trained on the training
users' posts) is conditioned on the user by ``n_prefix`` learned prefix vectors placed
before ``<bos> context <sep>``. They come from :class:`ConditionEncoder`:

* every history post is encoded (mean of the decoder's token embeddings, projected),
* the target context likewise,
* attention over the history posts scores each post from its vector and the context's,
  plus learned weights on its *relevancy* (written on the target context) and its
  *recency* (position from the end) — so posts on the target context and recent posts
  count more,
* the attention-weighted history vector and the context vector make the prefix.

So the same model writes differently for different users. For adversarial training the
generator emits straight-through Gumbel-softmax token distributions, which flow into the
discriminator, the MMD terms, and — mapped onto the detector's vocabulary — the detector.

Deviation from the paper: a GPT-2 decoder instead of RelGAN's relational memory, chosen
because it trains on CPU in minutes with the same conditioning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from advseq.lm.masks import sdpa_mask
from advseq.schema import Post, User
from advseq.text import SPECIALS, Vocabulary

if TYPE_CHECKING:
    from advseq.attack import AttackTask

_BARRED = (Vocabulary.pad_id, Vocabulary.unk_id, Vocabulary.bos_id, Vocabulary.sep_id)


@dataclass
class CondBatch:
    """Everything the generator conditions on, for B users (ids in the generator's vocab).

    ``hist_* [B, P, T]`` history posts (left-padded: the most recent in the last slot),
    ``rel [B, P]`` relevancy to the target context, ``prefix_* [B, L]`` the left-padded
    ``<bos> context <sep>``, ``recent_* [B, K, T]`` the last K posts and ``same_* [B, S, T]``
    the earlier posts on the target context (MMD references), ``target_* [B, T+1]`` a real
    post + ``<eos>`` (MLE target and real sample for the discriminator; may be empty),
    ``labels [B]`` the verdict the attacker wants."""

    hist_ids: torch.Tensor
    hist_len: torch.Tensor
    rel: torch.Tensor
    prefix_ids: torch.Tensor
    prefix_mask: torch.Tensor
    recent_ids: torch.Tensor
    recent_len: torch.Tensor
    same_ids: torch.Tensor
    same_len: torch.Tensor
    target_ids: torch.Tensor
    target_len: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device) -> CondBatch:
        return CondBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def index(self, idx: torch.Tensor) -> CondBatch:
        return CondBatch(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class CondExample:
    """One generation task: the posts before the new one, its context, an optional real
    post to learn from, and the target verdict."""

    history: Sequence[Post]
    context: str | None
    target_post: str | None
    label: float
    #: relevancy of each history post to ``context`` (None: derive from contexts)
    relevancy: Sequence[float] | None = None


def _flags(history: Sequence[Any], context: str | None, final_context: str | None) -> list[float]:
    """Relevancy of each history post to ``context``: the dataset's 0/1 flag when the
    target is the user's final context, else (and when missing) equal contexts."""
    out = []
    for p in history:
        if context is not None and context == final_context and p.relevancy is not None:
            out.append(float(p.relevancy >= 0.5))
        else:
            out.append(float(context is not None and p.context == context))
    return out


def task_example(task: AttackTask) -> CondExample:
    """What the generator conditions on for an attack task (the real last post is the
    realism reference). For a later slot of K posts the history holds the posts written
    before (:meth:`advseq.attack.AttackSpec.next_task`), so the post is conditioned on
    them like on the user's own."""
    user = task.user
    flags = _flags(task.history.posts, task.context, user.posts[-1].context)
    real = len(task.history.posts) - len(task.written)   # the user's own posts come first
    if (real == len(user.posts) and task.context is not None
            and task.context == user.posts[-1].context):
        flags[real - 1] = 1.0  # append: the real last post is on the target context
    # Posts the attacker already wrote (K posts) follow, on the task's context: they count
    # as earlier posts on it and as the most recent ones.
    # Without contexts (tweets) nothing is relevant: the relevancy term and relevancy
    # attention stay off, as in pre-training, instead of treating "no context" as one context.
    return CondExample(task.history.posts, task.context, user.posts[-1].text, float(task.target), flags)


def mle_examples(users: Sequence[User], positions: int) -> list[CondExample]:
    """Each user's last ``positions`` posts as targets, given the posts before them."""
    out = []
    for u in users:
        final_ctx = u.posts[-1].context
        for j in range(max(1, len(u.posts) - positions), len(u.posts)):
            target = u.posts[j]
            ctx = target.context
            history = u.posts[:j]
            flags = _flags(history, ctx, final_ctx) if j == len(u.posts) - 1 else \
                [float(ctx is not None and p.context == ctx) for p in history]
            out.append(CondExample(history, ctx, target.text, float(u.label), flags))
    return out


class Encoder:
    """Turns :class:`CondExample` lists into :class:`CondBatch` tensors (cached token ids)."""

    def __init__(self, vocab: Vocabulary, *, max_posts: int, max_tokens: int,
                 max_context_tokens: int, recent_k: int = 3, max_same: int = 5) -> None:
        self.vocab = vocab
        self.max_posts = max_posts
        self.max_tokens = max_tokens
        self.max_context_tokens = max_context_tokens
        self.recent_k = recent_k
        self.max_same = max_same
        self._cache: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        out = self._cache.get(text)
        if out is None:
            out = self.vocab.encode(text, max_len=self.max_tokens) or [self.vocab.unk_id]
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[text] = out
        return out

    def _fill(self, rows: Sequence[Sequence[str]], slots: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(rows), slots, self.max_tokens, dtype=torch.long)
        lens = torch.zeros(len(rows), slots, dtype=torch.long)
        for b, texts in enumerate(rows):
            texts = list(texts)[-slots:]
            start = slots - len(texts) if left else 0
            for j, t in enumerate(texts):
                tok = self.ids(t)
                ids[b, start + j, : len(tok)] = torch.tensor(tok)
                lens[b, start + j] = len(tok)
        return ids, lens

    def __call__(self, examples: Sequence[CondExample]) -> CondBatch:
        B = len(examples)
        hist_ids, hist_len = self._fill([[p.text for p in e.history] for e in examples],
                                        self.max_posts, left=True)
        rel = torch.zeros(B, self.max_posts)
        same_rows = []
        for b, e in enumerate(examples):
            flags = list(e.relevancy) if e.relevancy is not None else [
                float(e.context is not None and p.context == e.context) for p in e.history]
            kept = flags[-self.max_posts:]
            if kept:
                rel[b, self.max_posts - len(kept):] = torch.tensor(kept, dtype=torch.float)
            same_rows.append([p.text for p, f in zip(e.history, flags, strict=True) if f >= 0.5])
        recent_ids, recent_len = self._fill([[p.text for p in e.history] for e in examples],
                                            self.recent_k, left=True)
        same_ids, same_len = self._fill(same_rows, self.max_same, left=False)
        prefix = [[Vocabulary.bos_id,
                   *(self.vocab.encode(e.context, max_len=self.max_context_tokens) if e.context else []),
                   Vocabulary.sep_id] for e in examples]
        L = max(len(p) for p in prefix)
        prefix_ids = torch.zeros(B, L, dtype=torch.long)
        prefix_mask = torch.zeros(B, L, dtype=torch.long)
        for b, p in enumerate(prefix):
            prefix_ids[b, L - len(p):] = torch.tensor(p)
            prefix_mask[b, L - len(p):] = 1
        target_ids = torch.zeros(B, self.max_tokens + 1, dtype=torch.long)
        target_len = torch.zeros(B, dtype=torch.long)
        for b, e in enumerate(examples):
            if e.target_post:
                tok = self.ids(e.target_post) + [Vocabulary.eos_id]
                target_ids[b, : len(tok)] = torch.tensor(tok)
                target_len[b] = len(tok)
        labels = torch.tensor([float(e.label) for e in examples])
        return CondBatch(hist_ids, hist_len, rel, prefix_ids, prefix_mask, recent_ids, recent_len,
                         same_ids, same_len, target_ids, target_len, labels)


def mean_embedding(ids: torch.Tensor, lengths: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean token embedding ``[..., E]`` of id rows ``[..., T]`` (zeros where length is 0)."""
    T = ids.shape[-1]
    m = (torch.arange(T, device=ids.device) < lengths.unsqueeze(-1)).to(weight.dtype)
    # F.embedding, not weight[ids]: its CPU backward is deterministic, index_put_'s is not
    return (nn.functional.embedding(ids, weight) * m.unsqueeze(-1)).sum(-2) / lengths.clamp(min=1).unsqueeze(-1).to(weight.dtype)


class ConditionEncoder(nn.Module):
    """History posts + target context -> ``n_prefix`` prefix vectors (and the attention)."""

    def __init__(self, dim: int, n_prefix: int) -> None:
        super().__init__()
        self.n_prefix = n_prefix
        self.post = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.ctx = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.score = nn.Sequential(nn.Linear(2 * dim, dim), nn.Tanh(), nn.Linear(dim, 1))
        self.relevancy_weight = nn.Parameter(torch.tensor(1.0))
        self.recency_weight = nn.Parameter(torch.tensor(1.0))
        self.out = nn.Linear(2 * dim, n_prefix * dim)

    def forward(self, b: CondBatch, wte: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, P, _ = b.hist_ids.shape
        h = self.post(mean_embedding(b.hist_ids, b.hist_len, wte))                # [B, P, E]
        ctx_ids = b.prefix_ids * b.prefix_mask
        ctx_len = b.prefix_mask.sum(1)
        c = self.ctx(mean_embedding(ctx_ids, ctx_len, wte))                     # [B, E]
        recency = -torch.arange(P - 1, -1, -1, device=h.device, dtype=h.dtype) / P  # 0 = newest
        s = self.score(torch.cat([h, c.unsqueeze(1).expand_as(h)], -1)).squeeze(-1)
        s = s + self.relevancy_weight * b.rel + self.recency_weight * recency
        s = s.masked_fill(b.hist_len == 0, -math.inf)
        empty = (b.hist_len == 0).all(1, keepdim=True)
        attn = torch.softmax(s.masked_fill(empty, 0.0), dim=1)
        u = (attn.unsqueeze(-1) * h).sum(1)
        prefix = self.out(torch.cat([u, c], -1)).view(B, self.n_prefix, -1)
        return prefix, attn


class PersonalizedGenerator(nn.Module):
    """The GPT-2 decoder of a PostLM plus the condition encoder."""

    def __init__(self, decoder: nn.Module, n_prefix: int) -> None:
        super().__init__()
        self.decoder = decoder
        self.encoder = ConditionEncoder(decoder.config.n_embd, n_prefix)

    @property
    def wte(self) -> torch.Tensor:
        return self.decoder.transformer.wte.weight

    def prefix(self, b: CondBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prefix embeddings ``[B, n_prefix + L, E]`` and mask."""
        cond, _ = self.encoder(b, self.wte)
        ctx = self.decoder.transformer.wte(b.prefix_ids)
        mask = torch.cat([torch.ones(len(b), cond.shape[1], dtype=b.prefix_mask.dtype,
                                     device=cond.device), b.prefix_mask], 1)
        return torch.cat([cond, ctx], 1), mask

    def target_logits(self, b: CondBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced next-token logits ``[B, T, V]`` for the target posts (+ ``<eos>``)
        and the targets' mask ``[B, T]``: position ``t`` predicts target token ``t``."""
        emb, mask = self.prefix(b)
        L = emb.shape[1]
        T = int(b.target_len.max())
        tgt = b.target_ids[:, :T]
        tmask = (torch.arange(T, device=tgt.device)[None] < b.target_len[:, None]).to(mask.dtype)
        inputs = torch.cat([emb, self.decoder.transformer.wte(tgt[:, :-1])], 1)
        full_mask = torch.cat([mask, tmask[:, :-1]], 1)
        pos = (full_mask.cumsum(1) - 1).clamp(min=0)
        hidden = self.decoder.transformer(inputs_embeds=inputs, position_ids=pos,
                                          attention_mask=sdpa_mask(full_mask, full_mask.shape[1])).last_hidden_state
        return self.decoder.lm_head(hidden[:, L - 1:L - 1 + T]), tmask

    def mle_loss(self, b: CondBatch) -> torch.Tensor:
        """Teacher-forced cross-entropy of the target posts (+ ``<eos>``)."""
        logits, tmask = self.target_logits(b)
        tgt = b.target_ids[:, : logits.shape[1]]
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                           reduction="none").view_as(tgt)
        return (loss * tmask).sum() / tmask.sum().clamp(min=1)

    def gumbel(self, b: CondBatch, max_tokens: int, tau: float,
               gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample posts with straight-through Gumbel-softmax.

        Returns ``y [B, T, V]`` (one-hot values, soft gradients; zero after the end),
        ``ids [B, T]`` and ``lengths [B]`` (tokens before ``<eos>``, at least 1)."""
        emb, mask = self.prefix(b)
        B = emb.shape[0]
        device = emb.device
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        out = self.decoder.transformer(inputs_embeds=emb, attention_mask=sdpa_mask(mask, mask.shape[1]),
                                       position_ids=pos, use_cache=True)
        past, hidden = out.past_key_values, out.last_hidden_state[:, -1]
        next_pos = pos[:, -1:] + 1
        V = self.wte.shape[0]
        barred = torch.zeros(V, dtype=torch.bool, device=device)
        barred[list(_BARRED)] = True
        ys, ids = [], []
        ended = torch.zeros(B, dtype=torch.bool, device=device)
        lengths = torch.full((B,), max_tokens, dtype=torch.long, device=device)
        for t in range(max_tokens):
            logits = self.decoder.lm_head(hidden)
            bar = barred.clone()
            if t == 0:
                bar[Vocabulary.eos_id] = True
            logits = logits.masked_fill(bar, -1e9)
            u = torch.rand(logits.shape, generator=gen, device="cpu").to(device).clamp(1e-9, 1 - 1e-9)
            soft = torch.softmax((logits - torch.log(-torch.log(u))) / tau, -1)
            idx = soft.argmax(-1)
            hard = nn.functional.one_hot(idx, V).to(soft.dtype)
            y = hard - soft.detach() + soft
            is_eos = idx == Vocabulary.eos_id
            lengths = torch.where(~ended & is_eos, torch.full_like(lengths, t), lengths)
            ended = ended | is_eos
            ys.append(y)
            ids.append(idx)
            if bool(ended.all()) or t == max_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=device)], 1)
            out = self.decoder.transformer(inputs_embeds=(y @ self.wte).unsqueeze(1),
                                           attention_mask=sdpa_mask(mask, 1), position_ids=next_pos,
                                           past_key_values=past, use_cache=True)
            past, hidden = out.past_key_values, out.last_hidden_state[:, -1]
            next_pos = next_pos + 1
        y = torch.stack(ys, 1)
        ids_t = torch.stack(ids, 1)
        lengths = lengths.clamp(min=1, max=y.shape[1])
        keep = (torch.arange(y.shape[1], device=device)[None] < lengths[:, None]).to(y.dtype)
        return y * keep.unsqueeze(-1), ids_t * keep.long(), lengths


def vocab_map(source: Vocabulary, target: Vocabulary) -> torch.Tensor:
    """For each source token id, the target id of the same token (``<unk>`` if absent);
    specials map to themselves."""
    out = torch.full((len(source),), target.unk_id, dtype=torch.long)
    out[: len(SPECIALS)] = torch.arange(len(SPECIALS))
    for i, tok in enumerate(source.itos[len(SPECIALS):], start=len(SPECIALS)):
        out[i] = target.stoi.get(tok, target.unk_id)
    return out


def map_distribution(y: torch.Tensor, index: torch.Tensor, target_size: int) -> torch.Tensor:
    """Move token distributions ``[B, T, Vs]`` onto another vocabulary ``[B, T, Vt]``
    (probability mass of tokens sharing a target id adds up); differentiable."""
    out = y.new_zeros(*y.shape[:-1], target_size)
    return out.index_add(-1, index.to(y.device), y)
