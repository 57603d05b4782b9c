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

import json
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from advseq.attack import Attack, AttackOutput, AttackSpec, AttackTask
from advseq.candidates import copycat_posts, is_near_copy, own_posts
from advseq.config import SEED, Int, Text
from advseq.errors import ConfigError
from advseq.multipost import still_writing
from advseq.schema import Dataset
from advseq.storage import atomic_write_json
from advseq.text import Tokenizer
from advseq.threat import ThreatModel
from advseq.token_search import (
    TokenPost,
    encode_post,
    exact_scores,
    exact_slot_scores,
    forbidden_mask,
    id_matrix,
    losses_from_probs,
    slot_ids,
)

_STATE_FILE = "unitrigger.json"   #: the learned trigger(s), for the shards of a run


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
        forbidden = forbidden_mask(vocab)
        tasks = [spec.task(u) for u in train if spec.targets(u)]
        if not tasks:
            raise ConfigError("unitrigger needs targeted users in the training split")
        if spec.posts > 1:
            self._prepare_joint(tasks, threat, spec.posts)
            return
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
            ids, lengths = id_matrix(seqs, max(map(len, seqs)))
            probs, grad = threat.token_gradient(hist, ids, lengths, targets.tolist())
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

    def save_prepared(self, folder: Path) -> bool:
        """The learned trigger(s), so the shards of a run attack with them without searching again."""
        state = {"trigger_ids": self.trigger_ids_, "trigger": self.trigger_,
                 "search_history": self.search_history_,
                 "slot_triggers": getattr(self, "slot_triggers_", None)}
        atomic_write_json(folder / _STATE_FILE, state)
        return True

    def load_prepared(self, folder: Path) -> bool:
        path = folder / _STATE_FILE
        if not path.is_file():
            return False
        state = json.loads(path.read_text(encoding="utf-8"))
        self.trigger_ids_, self.trigger_ = list(state["trigger_ids"]), state["trigger"]
        self.search_history_ = state["search_history"]
        if state["slot_triggers"] is not None:
            self.slot_triggers_ = list(state["slot_triggers"])
        return True

    def run(self, tasks: Sequence[AttackTask], threat: ThreatModel) -> list[AttackOutput]:
        if not hasattr(self, "trigger_"):
            raise ConfigError("unitrigger: call prepare() first (the evaluator does)")
        return [AttackOutput(f"{post.text(threat.vocab)} {self.trigger_}", "ok", {"trigger": self.trigger_})
                for post in self._bases(tasks, threat)]

    # ---- K posts -----------------------------------------------------------------------
    def _slot_bases(self, tasks: Sequence[AttackTask], threat: ThreatModel, k_max: int) -> list[list[TokenPost]]:
        """For training: K copycat bases per task (slot 0 the one-post attack's, slot k
        drawn with the slot's rng among the posts that are no near copy of the earlier
        bases; a user with too few such posts repeats one: only the written posts must be
        distinct)."""
        vocab = threat.vocab
        out = []
        for task, first in zip(tasks, self._bases(tasks, threat), strict=True):
            n = max(1, min(task.max_tokens, threat.max_post_tokens) - self.trigger_tokens)
            posts, texts = [first], [first.text(vocab)]
            pool = own_posts(task)
            for k in range(1, k_max):
                options = [p for p in pool if not is_near_copy(p, texts)] or pool
                text = self.rng(replace(task, slot=k)).choice(options)
                posts.append(encode_post(text, vocab, n))
                texts.append(text)
            out.append(posts)
        return out

    def _prepare_joint(self, tasks: Sequence[AttackTask], threat: ThreatModel, k_max: int) -> None:
        """One trigger per slot, searched together: each iteration takes the gradient over
        the ``[B, K, T, V]`` soft posts of a batch of training users, ranks every token
        at every position of every slot's trigger by the averaged first-order estimate,
        scores the ``candidates`` best per position exactly on the batch (all K posts in
        place) and keeps the best change."""
        vocab = threat.vocab
        forbidden = forbidden_mask(vocab)
        bases = [[p.ids for p in row] for row in self._slot_bases(tasks, threat, k_max)]
        init_id = vocab.token_id(self.init)
        if forbidden[init_id]:
            init_id = len(forbidden) - int((~forbidden).sum())  # first ordinary token
        n = self.trigger_tokens
        triggers = [[init_id] * n for _ in range(k_max)]
        rng = random.Random(self.seed)
        history: list[dict] = []
        for it in range(self.iterations):
            idx = rng.sample(range(len(tasks)), min(self.batch_users, len(tasks)))
            hist = [tasks[i].history for i in idx]
            targets = np.array([tasks[i].target for i in idx], dtype=np.float64)
            seqs = [[b + t for b, t in zip(bases[i], triggers, strict=True)] for i in idx]
            ids, lengths = slot_ids(seqs, max(len(s) for row in seqs for s in row))
            probs, grad = threat.token_gradient(hist, ids, lengths, targets.tolist())
            current = float(losses_from_probs(probs, targets).mean())
            cands = []
            for k in range(k_max):
                # average gradient at slot k's trigger positions (they differ per user)
                g = torch.stack([grad[m, k, len(bases[i][k]):len(bases[i][k]) + n]
                                 for m, i in enumerate(idx)]).mean(0)
                delta = g - g.gather(1, torch.tensor(triggers[k])[:, None])
                delta[:, forbidden] = float("inf")
                for j in range(n):
                    for tok in torch.topk(-delta[j], self.candidates).indices.tolist():
                        if tok != triggers[k][j] and torch.isfinite(delta[j, tok]):
                            trig = [*triggers[k][:j], tok, *triggers[k][j + 1:]]
                            cands.append([*triggers[:k], trig, *triggers[k + 1:]])
            if not cands:
                break
            flat_hist = [h for _ in cands for h in hist]
            flat = [[b + t for b, t in zip(bases[i], c, strict=True)] for c in cands for i in idx]
            p = exact_slot_scores(threat, flat_hist, flat).reshape(len(cands), len(idx))
            losses = losses_from_probs(p, targets[None, :]).mean(1)
            best = int(np.argmin(losses))
            history.append({"iteration": it + 1, "loss": round(current, 5),
                            "best_candidate_loss": round(float(losses[best]), 5)})
            if losses[best] < current:
                triggers = cands[best]
        self.slot_triggers_ = [Tokenizer.detokenize([vocab.itos[i] for i in t]) for t in triggers]
        self.trigger_ids_, self.trigger_ = triggers[0], self.slot_triggers_[0]
        self.search_history_ = history

    def write_posts(self, tasks: Sequence[AttackTask], threat: ThreatModel,
                    spec: AttackSpec) -> list[list[AttackOutput]]:
        """One post: :meth:`run`. K posts (after a ``prepare`` for K): post k is a
        copycat post plus slot k's trigger; between posts the attacker checks each user
        as the sequential strategy does (:func:`advseq.multipost.still_writing`)."""
        if spec.posts == 1:
            return super().write_posts(tasks, threat, spec)
        triggers = getattr(self, "slot_triggers_", None)
        if triggers is None or len(triggers) != spec.posts:
            raise ConfigError(f"unitrigger: call prepare() for {spec.posts} posts first (the evaluator does)")
        written: list[list[AttackOutput]] = [[] for _ in tasks]
        current = list(tasks)
        active = list(range(len(tasks)))
        for k, trigger in enumerate(triggers):
            if k:
                active = still_writing(active, current, written, threat)
            nxt = []
            for i in active:
                post = self._slot_post(current[i], threat, trigger)
                if post is None:
                    written[i][-1].info.setdefault("stopped", "near_copy")
                    continue
                written[i].append(AttackOutput(post, "ok", {"trigger": trigger}))
                current[i] = spec.next_task(current[i], post)
                nxt.append(i)
            active = nxt
        return written

    def _slot_post(self, task: AttackTask, threat: ThreatModel, trigger: str) -> str | None:
        """The task's copycat post (slot 0: the one-post attack's) plus ``trigger``, drawn
        among the user's posts that give no near copy of the written ones; None if none."""
        vocab = threat.vocab
        n = max(1, min(task.max_tokens, threat.max_post_tokens) - self.trigger_tokens)
        real = task.history.posts[:len(task.history.posts) - len(task.written)]
        pool = own_posts(replace(task, history=task.user.with_posts(real)))
        options = [t for t in (f"{encode_post(p, vocab, n).text(vocab)} {trigger}" for p in pool)
                   if not is_near_copy(t, task.written)]
        return self.rng(task).choice(options) if options else None

