"""``hotflip``: HotFlip at word level (Ebrahimi, Rao, Lowd, Dou. "HotFlip: White-Box
Adversarial Examples for Text Classification". ACL 2018).

Starting from a post (the user's own earlier post, as the copycat baseline writes it),
it substitutes words guided by the gradient of the detector's loss (toward the target
verdict) with respect to the one-hot post: the first-order change of replacing token
``a`` at position ``i`` with ``b`` is ``g[i, b] - g[i, a]``, estimated for the whole
vocabulary and all positions in one backward pass. A beam search over positions keeps
the ``beam_width`` best posts, scoring each of the ``candidates`` best estimated flips
exactly, and stops when the detector's verdict reaches the target or after
``max_flips`` substitutions.

Deviations: the paper flips characters (and words in its extension) in a CNN's input;
here the unit is a word of the detector's vocabulary, the post is one post appended to
the user's sequence, and each position is flipped at most once. White-box (the deployed
detector's gradients) or transfer (a surrogate's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from advseq.attack import Attack, AttackOutput, AttackTask
from advseq.threat import ThreatModel
from attacks.copycat import CopycatAttack
from attacks.token_search import (
    TokenPost,
    encode_post,
    exact_scores,
    forbidden_mask,
    losses_from_probs,
    one_hot,
)


class HotFlipAttack(Attack):
    """Gradient-guided word substitutions with beam search (HotFlip, word level)."""

    name = "hotflip"
    requires = frozenset({"gradient"})
    paper = "Ebrahimi et al. HotFlip: White-Box Adversarial Examples for Text Classification. ACL 2018"

    def __init__(self, *, beam_width: int = 3, candidates: int = 10, max_flips: int = 5,
                 seed: int = 0) -> None:
        self.beam_width = beam_width
        self.candidates = candidates
        self.max_flips = max_flips
        self.seed = seed

    def run(self, tasks: Sequence[AttackTask], threat: ThreatModel) -> list[AttackOutput]:
        vocab = threat.vocab
        starts = CopycatAttack(seed=self.seed).run(tasks, threat)
        posts = [encode_post(o.post, vocab, min(t.max_tokens, threat.max_post_tokens))
                 for t, o in zip(tasks, starts, strict=True)]
        return hotflip_search(tasks, posts, threat, beam_width=self.beam_width,
                              candidates=self.candidates, max_flips=self.max_flips)


def hotflip_search(tasks: Sequence[AttackTask], posts: Sequence[TokenPost], threat: ThreatModel, *,
                   beam_width: int = 3, candidates: int = 10, max_flips: int = 5,
                   allowed: Sequence[torch.Tensor] | None = None) -> list[AttackOutput]:
    """Beam search over word substitutions in ``posts`` (one per task), guided by the
    first-order estimate; ``allowed[u]`` (``[T, V]`` bools, optional) restricts which
    tokens may be written at each position of post ``u``."""
    vocab = threat.vocab
    V = len(vocab)
    forbidden = forbidden_mask(vocab)
    targets = np.array([t.target for t in tasks], dtype=np.float64)
    # Each beam: (ids tuple, changed positions tuple, loss, prob)
    p0 = exact_scores(threat, [t.history for t in tasks], [p.ids for p in posts])
    beams = [[(tuple(p.ids), (), float(losses_from_probs(p0[u:u + 1], targets[u:u + 1])[0]), float(p0[u]))]
             for u, p in enumerate(posts)]
    done = [_reached(p0[u], targets[u]) for u in range(len(tasks))]
    status = ["ok"] * len(tasks)
    for _ in range(max_flips):
        active = [u for u in range(len(tasks)) if not done[u]]
        active = [u for u in active if _afford(threat, tasks[u], len(beams[u]) * (1 + candidates), status, u)]
        if not active:
            break
        flat = [(u, b) for u in active for b in beams[u]]
        hist = [tasks[u].history for u, _ in flat]
        x, lengths = one_hot([b[0] for _, b in flat], V, max(len(b[0]) for _, b in flat))
        _, grad = threat.gradient(hist, x, lengths, [tasks[u].target for u, _ in flat])
        cur = (grad * x).sum(-1, keepdim=True)                  # g[i, a] at each position
        delta = grad - cur                                      # first-order change per flip
        delta[:, :, forbidden] = float("inf")
        delta[x.bool()] = float("inf")                          # no-op flips
        for n, (u, b) in enumerate(flat):
            delta[n, len(b[0]):] = float("inf")
            if allowed is not None:
                block = delta[n, : len(b[0])]
                block[~allowed[u][: len(b[0])].to(block.device)] = float("inf")
            if b[1]:
                delta[n, list(b[1])] = float("inf")              # each position once
        k = min(candidates, delta[0].numel())
        top = torch.topk(-delta.reshape(len(flat), -1), k, dim=1).indices
        cand_users, cand_hist, cand_ids, cand_changed = [], [], [], []
        for n, (u, b) in enumerate(flat):
            for flat_idx in top[n].tolist():
                pos, tok = divmod(flat_idx, V)
                if not torch.isfinite(delta[n, pos, tok]):
                    continue
                ids = list(b[0])
                ids[pos] = tok
                cand_users.append(u)
                cand_hist.append(tasks[u].history)
                cand_ids.append(tuple(ids))
                cand_changed.append(tuple(sorted((*b[1], pos))))
        if not cand_ids:
            break
        probs = exact_scores(threat, cand_hist, cand_ids)
        losses = losses_from_probs(probs, targets[cand_users])
        pools: dict[int, list] = {u: list(beams[u]) for u in active}
        for u, ids, ch, loss, p in zip(cand_users, cand_ids, cand_changed, losses, probs, strict=True):
            pools[u].append((ids, ch, float(loss), float(p)))
        for u in active:
            seen, ranked = set(), []
            for beam in sorted(pools[u], key=lambda b: b[2]):
                if beam[0] not in seen:
                    seen.add(beam[0])
                    ranked.append(beam)
            beams[u] = ranked[: beam_width]
            done[u] = _reached(beams[u][0][3], targets[u])
    outputs = []
    for u, post in enumerate(posts):
        ids, changed, _, prob = beams[u][0]
        flipped = TokenPost(list(ids), post.words)
        outputs.append(AttackOutput(flipped.text(threat.vocab, changed), status[u],
                                    {"flips": len(changed), "surrogate_prob": round(prob, 6)}))
    return outputs


def _reached(prob: float, target: float) -> bool:
    return (prob >= 0.5) == bool(target)


def _afford(threat: ThreatModel, task: AttackTask, n: int, status: list[str], u: int) -> bool:
    left = threat.remaining(task.user_id)
    if left is not None and left < n:
        status[u] = "budget_exhausted"
        return False
    return True
