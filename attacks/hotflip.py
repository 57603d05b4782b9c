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

from advseq.attack import Attack, AttackOutput, AttackTask
from advseq.candidates import copycat_posts
from advseq.config import SEED, Int
from advseq.threat import ThreatModel
from advseq.token_search import encode_post, hotflip_search


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
