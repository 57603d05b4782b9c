"""Generic language-model baseline (``lm-generic``): an unpersonalised LM writes the post.

The plain-generation baseline behind PETGEN's ablations (He, Ahamad, Kumar, "PETGEN:
Personalized Text Generation Attack on Deep Sequence Embedding-based Classification
Models", KDD 2021): a language model trained on the platform's posts samples a new post
on the target context — no user conditioning (no history, recency or relevancy
signals) and no attack loss. It measures how much a detector is moved by *any* fluent,
on-topic post, the floor that a personalised, detector-aware generator must beat.

Deviations from the paper:

* The generator is advseq's own :class:`~advseq.lm.PostLM` (a small word-level GPT-2,
  conditioned on the context by prefix) instead of PETGEN's RelGAN relational-memory
  generator, and it is trained by maximum likelihood only (no GAN stage). It is the same
  model as the reference LM of the ``perplexity_ref`` metric (one cached model per
  training split and seed).
* ``candidates > 1`` is an optional black-box strengthening (not in the paper): sample
  k posts per user and keep the one the detector finds closest to the goal, using score
  queries when granted (else labels) within the query budget — the sample-and-rerank
  search of :func:`advseq.candidates.pick_best`. The default, k = 1, is plain generation
  and queries nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from advseq.attack import Attack, AttackOutput, AttackSpec, AttackTask
from advseq.candidates import pick_best
from advseq.config import SEED, Float, Int, Table
from advseq.errors import ConfigError
from advseq.lm import PostLM, reference_lm
from advseq.schema import Dataset
from advseq.threat import ThreatModel


class GenericLMAttack(Attack):
    """Sample a post on the target context from an unpersonalised LM of the training posts."""

    name = "lm-generic"
    fluency_models = frozenset({"reference-lm"})    # it samples from the reference LM
    paper = ("He, Ahamad, Kumar. PETGEN. KDD 2021 (plain LM generation baseline; advseq's "
             "word-level GPT-2 PostLM instead of RelGAN)")
    param_rules = {"temperature": Float(0, 100, low_open=True), "top_p": Float(0, 1, low_open=True),
                   "candidates": Int(1, 10_000), "lm": Table(none=True), "seed": SEED}

    def __init__(self, *, temperature: float = 1.0, top_p: float = 0.9, candidates: int = 1,
                 lm: dict[str, Any] | None = None, seed: int = 0) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.candidates = candidates
        #: PostLM hyper-parameters; None = PostLM's defaults, i.e. the reference LM itself
        self.lm = lm
        self.seed = seed
        if lm is not None:
            if "seed" in lm:
                raise ConfigError("lm-generic: set the LM's seed with the attack's seed, not in lm")
            try:
                PostLM(**{**lm, "seed": seed})
            except TypeError as err:
                raise ConfigError(f"lm-generic: bad lm settings: {err}") from None

    @classmethod
    def params_on_device(cls, params: dict[str, Any], device: str) -> dict[str, Any]:
        """Its LM runs on ``device`` (advseq.device.on_device; the CPU changes nothing)."""
        lm = dict(params.get("lm") or {})
        given = lm.get("device")
        if given is not None and given != device:
            raise ConfigError(f"--device {device} and lm.device={given} disagree; give one of them")
        if device == "cpu" or given is not None:
            return params
        return {**params, "lm": {**lm, "device": device}}

    @property
    def requires(self) -> frozenset[str]:  # type: ignore[override]
        """Plain generation needs nothing; re-ranking k > 1 candidates needs labels (every
        threat mode grants them) and uses scores when granted."""
        return frozenset({"label"}) if self.candidates > 1 else frozenset()

    def prepare(self, train: Dataset, threat: ThreatModel, spec: AttackSpec) -> None:
        """Train the LM on the training users' posts, or load it from the reference-LM
        cache (the same model serves as the ``perplexity_ref`` reference)."""
        self.lm_: PostLM = reference_lm(train, seed=self.seed, **(self.lm or {}))

    def sample(self, task: AttackTask) -> list[str]:
        """``candidates`` posts for one user on the task's context. The sampling seed
        comes from (attack seed, user id) and the call holds only this user's rows, so the
        posts do not depend on the other users of a batch."""
        if not hasattr(self, "lm_"):
            raise ConfigError("lm-generic: call prepare() with the training users first")
        seed = self.rng(task, "lm").getrandbits(63)
        return self.lm_.sample([task.context] * self.candidates, temperature=self.temperature,
                               top_p=self.top_p, seed=seed, max_tokens=task.max_tokens)

    def run(self, tasks: Sequence[AttackTask], threat: ThreatModel) -> list[AttackOutput]:
        samples = [self.sample(t) for t in tasks]
        if self.candidates == 1:
            return [AttackOutput(s[0]) for s in samples]
        return pick_best(tasks, samples, threat, self.candidates)
