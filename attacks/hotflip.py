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

K posts (``AttackSpec.posts`` > 1): the posts are searched together
(:func:`write_joint`). The search begins as the one-post attack (its first slot is
exactly the one-post search, so a user at the goal after one post gets the one-post
attack's post and queries); a user still short of the goal after ``max_flips`` steps
gets one more slot — a copycat post, drawn with the slot's random numbers among the
user's posts that are no near copy of the posts so far — and the beam search goes on
over all slots at once (:func:`advseq.token_search.joint_search`): one gradient query
per beam over the ``[B, K, T, V]`` soft posts ranks a flip in an earlier post beside
one in the new post, so an earlier post is still edited with the later ones in view
(the sequential strategy has fixed it by then), and a flip that makes a post a near
copy of another is never scored. Up to K slots; each beam's state is scored as the
detector scores the written posts. A user stops with the posts written when the goal
is reached (on a surrogate never: :func:`advseq.multipost.short_of_goal`), so fewer
than K posts: each post is one more for a platform to see, and the records'
``posts_to_evade`` then counts the posts an evader needs (starting from K posts at once
instead reaches the goal no more often on the demo data, with every evader needing all
K).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from advseq.attack import Attack, AttackOutput, AttackSpec, AttackTask
from advseq.candidates import copycat_posts, is_near_copy, own_posts
from advseq.config import SEED, Int
from advseq.multipost import short_of_goal
from advseq.threat import ThreatModel
from advseq.token_search import (
    Beam,
    encode_post,
    hotflip_search,
    joint_search,
    score_beams,
    slot_texts,
)


class HotFlipAttack(Attack):
    """Gradient-guided word substitutions with beam search (HotFlip, word level)."""

    name = "hotflip"
    requires = frozenset({"gradient"})
    paper = "Ebrahimi et al. HotFlip: White-Box Adversarial Examples for Text Classification. ACL 2018"
    param_rules = {"beam_width": Int(1, 1000), "candidates": Int(1, 100_000), "max_flips": Int(0, 1000),
                   "seed": SEED}

    def __init__(self, *, beam_width: int = 3, candidates: int = 10, max_flips: int = 5,
                 seed: int = 0) -> None:
        self.beam_width = beam_width
        self.candidates = candidates
        self.max_flips = max_flips
        self.seed = seed

    def run(self, tasks: Sequence[AttackTask], threat: ThreatModel) -> list[AttackOutput]:
        vocab = threat.vocab
        starts = copycat_posts(tasks, self.rng)
        posts = [encode_post(post, vocab, min(t.max_tokens, threat.max_post_tokens))
                 for t, post in zip(tasks, starts, strict=True)]
        return hotflip_search(tasks, posts, threat, beam_width=self.beam_width,
                              candidates=self.candidates, max_flips=self.max_flips)

    def write_posts(self, tasks: Sequence[AttackTask], threat: ThreatModel,
                    spec: AttackSpec) -> list[list[AttackOutput]]:
        """One post: :meth:`run` (the one-post attack). K posts: the joint search of the
        module doc, growing one slot at a time (:func:`write_joint`)."""
        if spec.posts == 1:
            return super().write_posts(tasks, threat, spec)
        return write_joint(self, tasks, threat, spec.posts)


def write_joint(attack: HotFlipAttack, tasks: Sequence[AttackTask], threat: ThreatModel,
                k_max: int) -> list[list[AttackOutput]]:
    """Up to ``k_max`` posts per task, searched together (the module doc's K posts)."""
    vocab = threat.vocab
    limits = [min(t.max_tokens, threat.max_post_tokens) for t in tasks]
    first = [encode_post(post, vocab, n) for post, n in zip(copycat_posts(tasks, attack.rng), limits, strict=True)]
    words: list[list[list[str]]] = [[p.words] for p in first]
    status = ["ok"] * len(tasks)
    stopped: list[str | None] = [None] * len(tasks)
    beams = score_beams(tasks, [[((tuple(p.ids),), ((),))] for p in first], threat)
    live = list(range(len(tasks)))
    for k in range(1, k_max + 1):
        if k > 1:
            live = _grow(attack, tasks, live, beams, words, limits, threat, status, stopped)
        if not live:
            break
        sub = [status[u] for u in live]
        found = joint_search([tasks[u] for u in live], [beams[u] for u in live], [words[u] for u in live],
                             threat, beam_width=attack.beam_width, candidates=attack.candidates,
                             max_flips=attack.max_flips, status=sub)
        for u, b, st in zip(live, found, sub, strict=True):
            beams[u], status[u] = b, st
        live = [u for u in live if status[u] == "ok" and short_of_goal(threat, beams[u][0][3], tasks[u].target)]
    outputs = []
    for u in range(len(tasks)):
        best = beams[u][0]
        texts = slot_texts(best, words[u], vocab)
        outs = [AttackOutput(text, "ok", {"flips": len(ch)}) for text, ch in zip(texts, best[1], strict=True)]
        last = {**outs[-1].info, "surrogate_prob": round(best[3], 6)}
        if stopped[u]:
            last["stopped"] = stopped[u]
        outs[-1] = AttackOutput(outs[-1].post, status[u], last)
        outputs.append(outs)
    return outputs


def _grow(attack: HotFlipAttack, tasks: Sequence[AttackTask], live: list[int], beams: list[list[Beam]],
          words: list[list[list[str]]], limits: list[int], threat: ThreatModel, status: list[str],
          stopped: list[str | None]) -> list[int]:
    """Give each live user's beams one more slot: a copycat post (drawn with the slot's
    rng) that is no near copy of the user's posts so far, scored with one query per beam;
    the users that cannot (no distinct post left, or not the queries) stop as they are."""
    vocab = threat.vocab
    grown, states = [], []
    for u in live:
        task = tasks[u]
        k = len(beams[u][0][0])
        texts = slot_texts(beams[u][0], words[u], vocab)
        options = [p for p in (encode_post(t, vocab, limits[u]) for t in own_posts(task))
                   if not is_near_copy(p.text(vocab), [*texts, *task.written])]
        if not options:
            stopped[u] = "near_copy"
            continue
        post = attack.rng(replace(task, slot=k)).choice(options)
        new = [(b[0] + (tuple(post.ids),), b[1] + ((),)) for b in beams[u]
               if b is beams[u][0] or not is_near_copy(post.text(vocab), slot_texts(b, words[u], vocab))]
        if not threat.affordable([task.history], len(new))[0]:
            status[u] = "budget_exhausted"
            continue
        words[u].append(post.words)
        grown.append(u)
        states.append(new)
    for u, b in zip(grown, score_beams([tasks[u] for u in grown], states, threat), strict=True):
        beams[u] = b
    return grown
