"""Candidate posts shared by several attacks: the user's own earlier posts (the copycat
post that search attacks start from and edit) and choosing the candidate the detector
finds closest to the goal. When the attacker writes several posts for a user, candidates
that are near copies of the posts it already wrote (``task.written``) are skipped: the K
posts of one user must be distinct (:func:`is_near_copy`)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

from advseq.attack import AttackOutput, AttackTask
from advseq.quality.copies import is_near_copy
from advseq.text import Tokenizer
from advseq.threat import ThreatModel

_TOK = Tokenizer(lowercase=False, replace_urls=False)


def truncate_post(text: str, max_tokens: int) -> str:
    """``text`` cut to its first ``max_tokens`` tokens (case and URLs kept)."""
    return _TOK.truncate(text, max_tokens)


def own_posts(task: AttackTask) -> list[str]:
    """The user's posts before the new one (all their posts if there are none), each cut
    to the task's token limit."""
    posts = [p.text for p in task.history.posts] or [p.text for p in task.user.posts]
    return [truncate_post(t, task.max_tokens) for t in posts]


def fresh(task: AttackTask, candidates: Sequence[str]) -> list[str]:
    """``candidates`` without near copies of the posts already written for the task's user
    (all of them when every one is a near copy, or nothing was written yet)."""
    if not task.written:
        return list(candidates)
    kept = [c for c in candidates if not is_near_copy(c, task.written)]
    return kept or list(candidates)


def copycat_posts(tasks: Sequence[AttackTask], rng: Callable[[AttackTask], random.Random]) -> list[str]:
    """For each task, one of the user's own posts drawn with ``rng(task)`` (an attack's
    :meth:`~advseq.attack.Attack.rng`): the copycat baseline's post, which HotFlip,
    UniTrigger and the TextAttack recipes start from. Posts near copies of the ones
    already written for the user are skipped while others are left."""
    return [rng(t).choice(fresh(t, own_posts(t))) for t in tasks]


def pick_best(tasks: Sequence[AttackTask], candidates: Sequence[Sequence[str]], threat: ThreatModel,
              max_candidates: int) -> list[AttackOutput]:
    """For each task, the candidate post the detector finds closest to the task's target
    (scores if granted, else the first candidate whose label matches), within budget.
    Near copies of the posts already written for the user are skipped while others are
    left."""
    outputs = []
    use_score = threat.has("score")
    for task, cands in zip(tasks, candidates, strict=True):
        cands = fresh(task, list(dict.fromkeys(cands)))[:max_candidates]
        left = threat.remaining(task.user_id)
        status = "ok"
        if left is not None and left < len(cands):
            cands, status = cands[:max(1, left)], "budget_exhausted"
        users = [task.with_post(c) for c in cands]
        if use_score:
            p = threat.score(users)
            dist = np.abs(p - task.target)
            best = int(np.argmin(dist))
            outputs.append(AttackOutput(cands[best], status if dist[best] >= 0.5 else "ok",
                                        {"candidates": len(cands), "score": round(float(p[best]), 6)}))
        else:
            labels = threat.label(users)
            hits = np.flatnonzero(labels == task.target)
            best = int(hits[0]) if hits.size else 0
            outputs.append(AttackOutput(cands[best], "ok" if hits.size else status,
                                        {"candidates": len(cands)}))
    return outputs
