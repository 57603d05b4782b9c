"""Choosing the most natural post for a user among candidates (PETGEN's natural
choice at attack time and in training's selection rounds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from advseq.attack import AttackTask
from advseq.schema import has_context
from advseq.text import SPECIALS


class Naturalness:
    """How natural a post is for its user, judged by the attacker's own language model of
    the platform's posts (advseq's reference :class:`~advseq.lm.PostLM`, which the
    generator is warm-started from): among one user's options, the Borda count of two
    ranks — fluency (mean NLL per token given the target context, lower first) and
    closeness to the user's own posts (cosine between the post's mean word embedding and
    the mean of the user's history posts' ones).

    Both ranks, because either alone drifts: the likeliest posts run short, the closest in
    words run long; together they keep posts of the users' own length (docs/petgen.md).
    The evaluator's judge is a different model.

    ``context=True`` adds a third rank, closeness to the target context (the same cosine
    against the context's mean word embedding), for tasks that have a context.
    """

    def __init__(self, lm: Any, *, context: bool = False) -> None:
        self.lm = lm
        self.context = context
        self._wte = lm.model_.transformer.wte.weight.detach().float().cpu()

    @torch.no_grad()
    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length mean word embedding of each text (special tokens left out)."""
        ids, lengths = self.lm.vocab_.encode_batch(texts, self.lm.max_post_tokens)
        ids_t = torch.from_numpy(ids)
        keep = (torch.arange(ids.shape[1])[None] < torch.from_numpy(lengths)[:, None]) & (ids_t >= len(SPECIALS))
        v = (self._wte[ids_t] * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)
        return torch.nn.functional.normalize(v, dim=-1)

    def scores(self, tasks: Sequence[AttackTask], options: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Per task, the Borda score of each option (higher = more natural)."""
        flat = [(n, c) for n, opts in enumerate(options) for c in opts]
        if not flat:
            return [np.zeros(0) for _ in options]
        nll, count = self.lm.token_nll([c for _, c in flat], [tasks[n].context for n, _ in flat])
        fluency = -nll / np.maximum(count, 1)
        hist = torch.stack([torch.nn.functional.normalize(self._embed([p.text for p in t.history.posts]).mean(0), dim=0)
                            if t.history.posts else torch.zeros(self._wte.shape[1]) for t in tasks])
        emb = self._embed([c for _, c in flat])
        close = (emb * hist[[n for n, _ in flat]]).sum(-1).numpy()
        has_ctx = [self.context and has_context(t.context) for t in tasks]
        on_ctx = np.zeros(len(flat))
        if any(has_ctx):
            ctx = self._embed([t.context or "" for t in tasks])
            on_ctx = (emb * ctx[[n for n, _ in flat]]).sum(-1).numpy()
        out, s = [], 0
        for n, opts in enumerate(options):
            k = len(opts)
            score = _ranks(fluency[s:s + k]) + _ranks(close[s:s + k])
            if has_ctx[n]:
                score += _ranks(on_ctx[s:s + k])
            out.append(score)
            s += k
        return out

    def best(self, tasks: Sequence[AttackTask], options: Sequence[Sequence[str]]) -> list[int]:
        """For each task, the index of its most natural option (0 where it has none or one;
        ties go to the earlier option)."""
        many = [n for n, opts in enumerate(options) if len(opts) > 1]
        best = [0] * len(options)
        for n, sc in zip(many, self.scores([tasks[n] for n in many], [options[n] for n in many]), strict=True):
            best[n] = int(np.argmax(sc))
        return best


def _ranks(values: np.ndarray) -> np.ndarray:
    """0 for the smallest value ... n-1 for the largest (stable)."""
    return np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(np.float64)

