"""``unitrigger``: universal adversarial triggers (Wallace, Feng, Kandpal, Gardner, Singh.
"Universal Adversarial Triggers for Attacking and Analyzing NLP". EMNLP 2019).

One sequence of ``trigger_tokens`` words, searched once over the training users the
attacker may see, is appended to every attacked user's post (the copycat post: one of
their own earlier posts). The search follows the paper: start from "the the the",
average the gradient of the loss toward the target verdict over a batch of training
users, rank every vocabulary token at each trigger position by the first-order
(HotFlip) estimate, score the ``candidates`` best per position exactly on the batch,
keep the best trigger, repeat for ``iterations`` batches (beam width 1, as in the
paper's main experiments). The posts are cut so that post + trigger fit ``max_tokens``.

Deviations: the trigger is appended to a post in a user's sequence rather than
prepended to a single input, and it is searched in the (white-box or surrogate)
detector's word vocabulary.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch

from advseq.attack import Attack, AttackOutput, AttackSpec, AttackTask
from advseq.candidates import copycat_posts
from advseq.config import SEED, Int, Text
from advseq.errors import ConfigError
from advseq.schema import Dataset
from advseq.text import Tokenizer
from advseq.threat import ThreatModel
from advseq.token_search import (
    TokenPost,
    encode_post,
    exact_scores,
    forbidden_mask,
    losses_from_probs,
    one_hot,
)


class UniversalTriggerAttack(Attack):
    """A universal trigger of k words, searched with gradients over training users."""

    name = "unitrigger"
    requires = frozenset({"gradient"})
    paper = "Wallace et al. Universal Adversarial Triggers for Attacking and Analyzing NLP. EMNLP 2019"
    param_rules = {"trigger_tokens": Int(1, 64), "iterations": Int(0, 100_000), "batch_users": Int(1, 100_000),
                   "candidates": Int(1, 100_000), "init": Text(limit=100), "seed": SEED}

    def __init__(self, *, trigger_tokens: int = 3, iterations: int = 15, batch_users: int = 32,
                 candidates: int = 10, init: str = "the", seed: int = 0) -> None:
        self.trigger_tokens = trigger_tokens
        self.iterations = iterations
        self.batch_users = batch_users
        self.candidates = candidates
        self.init = init
        self.seed = seed

    def _bases(self, tasks: Sequence[AttackTask], threat: ThreatModel) -> list[TokenPost]:
        """The copycat posts, cut so that post + trigger fit the token limit."""
        vocab = threat.vocab
        starts = copycat_posts(tasks, self.rng)
        return [encode_post(post, vocab, max(1, min(t.max_tokens, threat.max_post_tokens) - self.trigger_tokens))
                for t, post in zip(tasks, starts, strict=True)]

    def prepare(self, train: Dataset, threat: ThreatModel, spec: AttackSpec) -> None:
        vocab = threat.vocab
        V = len(vocab)
        forbidden = forbidden_mask(vocab)
        tasks = [spec.task(u) for u in train if spec.targets(u)]
        if not tasks:
            raise ConfigError("unitrigger needs targeted users in the training split")
        bases = [p.ids for p in self._bases(tasks, threat)]
        init_id = vocab.token_id(self.init)
        if forbidden[init_id]:
            init_id = len(forbidden) - int((~forbidden).sum())  # first ordinary token
        trigger = [init_id] * self.trigger_tokens
        rng = random.Random(self.seed)
        history: list[dict] = []
        k = self.trigger_tokens
        for it in range(self.iterations):
            idx = rng.sample(range(len(tasks)), min(self.batch_users, len(tasks)))
            hist = [tasks[i].history for i in idx]
            targets = np.array([tasks[i].target for i in idx], dtype=np.float64)
            seqs = [bases[i] + trigger for i in idx]
            x, lengths = one_hot(seqs, V, max(map(len, seqs)))
            probs, grad = threat.gradient(hist, x, lengths, targets.tolist())
            current = float(losses_from_probs(probs, targets).mean())
            # Average gradient at each trigger position (positions differ per user).
            g = torch.stack([grad[n, len(bases[i]):len(bases[i]) + k] for n, i in enumerate(idx)]).mean(0)
            cur = g.gather(1, torch.tensor(trigger)[:, None])
            delta = g - cur
            delta[:, forbidden] = float("inf")
            cands = []
            for j in range(k):
                for tok in torch.topk(-delta[j], self.candidates).indices.tolist():
                    if tok != trigger[j] and torch.isfinite(delta[j, tok]):
                        cands.append(trigger[:j] + [tok] + trigger[j + 1:])
            if not cands:
                break
            flat_hist = [h for _ in cands for h in hist]
            flat_seqs = [bases[i] + c for c in cands for i in idx]
            p = exact_scores(threat, flat_hist, flat_seqs).reshape(len(cands), len(idx))
            losses = losses_from_probs(p, targets[None, :]).mean(1)
            best = int(np.argmin(losses))
            history.append({"iteration": it + 1, "loss": round(current, 5),
                            "best_candidate_loss": round(float(losses[best]), 5)})
            if losses[best] < current:
                trigger = cands[best]
        self.trigger_ids_ = trigger
        self.trigger_ = Tokenizer.detokenize([vocab.itos[i] for i in trigger])
        self.search_history_ = history

    def run(self, tasks: Sequence[AttackTask], threat: ThreatModel) -> list[AttackOutput]:
        if not hasattr(self, "trigger_"):
            raise ConfigError("unitrigger: call prepare() first (the evaluator does)")
        return [AttackOutput(f"{post.text(threat.vocab)} {self.trigger_}", "ok", {"trigger": self.trigger_})
                for post in self._bases(tasks, threat)]
