"""PETGEN's settings, apart from the model, so that the attack plugin and the CLI can
read and check them without importing torch."""

from __future__ import annotations

import inspect
from typing import Any

from advseq.config import SEED, Bool, Configurable, Device, Float, Int, Table
from advseq.errors import ConfigError


class PETGENSettings(Configurable):
    """Every setting of the PETGEN generator: architecture and MLE pre-training
    (``n_prefix`` .. ``mle_lr``, ``lm``: the reference PostLM's hyper-parameters),
    adversarial fine-tuning (``adv_steps`` .. ``recent_k``: which terms, their weights),
    best-of-k selection rounds (``select`` .. ``select_margin``) and sampling
    (``candidates`` .. ``context_boost``)."""

    param_rules = {
        "n_prefix": Int(1, 256), "max_posts": Int(1, 10_000), "mle_positions": Int(1, 1000),
        "mle_epochs": Int(0, 10_000), "mle_lr": Float(0, low_open=True), "adv_steps": Int(0, 1_000_000),
        "batch_size": Int(1, 1 << 20), "lr": Float(0, low_open=True), "d_lr": Float(0, low_open=True),
        "tau": Float(0, low_open=True), "gan": Bool(), "attack": Bool(), "recency": Bool(none=True),
        "relevancy": Bool(), "w_gan": Float(0), "w_attack": Float(0), "w_recency": Float(0),
        "w_relevancy": Float(0), "w_mle": Float(0), "recent_k": Int(1, 1000), "select": Bool(),
        "rounds": Int(0, 100), "select_k": Int(1, 10_000), "select_epochs": Int(0, 10_000),
        "select_real_share": Float(0, 1), "select_temperature": Float(0, low_open=True, none=True),
        "select_margin": Float(0, 0.5, high_open=True, none=True), "candidates": Int(1, 10_000),
        "temperature": Float(0, 100, low_open=True), "top_p": Float(0, 1, low_open=True),
        "max_repeats": Int(1, 10_000, none=True), "no_repeat_ngram": Int(2, 100, none=True),
        "context_boost": Float(0), "lm": Table(none=True), "seed": SEED, "device": Device(),
    }

    def __init__(self, *, n_prefix: int = 4, max_posts: int = 20, mle_positions: int = 4,
                 mle_epochs: int = 3, mle_lr: float = 2e-3, adv_steps: int = 60,
                 batch_size: int = 32, lr: float = 1e-3, d_lr: float = 3e-4, tau: float = 1.0,
                 gan: bool = True, attack: bool = True, recency: bool = True, relevancy: bool = True,
                 w_gan: float = 0.5, w_attack: float = 1.0, w_recency: float = 0.2,
                 w_relevancy: float = 0.2, w_mle: float = 0.3, recent_k: int = 3,
                 select: bool = True, rounds: int = 3, select_k: int = 16, select_epochs: int = 3,
                 select_real_share: float = 0.25, select_temperature: float | None = None,
                 select_margin: float | None = None,
                 candidates: int = 32, temperature: float = 0.8, top_p: float = 0.9,
                 max_repeats: int | None = 4, no_repeat_ngram: int | None = None,
                 context_boost: float = 0.0, lm: dict[str, Any] | None = None, seed: int = 0,
                 device: str = "cpu") -> None:
        self.n_prefix = n_prefix
        self.max_posts = max_posts
        self.mle_positions = mle_positions
        self.mle_epochs = mle_epochs
        self.mle_lr = mle_lr
        self.adv_steps = adv_steps
        self.batch_size = batch_size
        self.lr = lr
        self.d_lr = d_lr
        self.tau = tau
        self.gan = gan
        self.attack = attack
        self.recency = recency
        self.relevancy = relevancy
        self.w_gan = w_gan
        self.w_attack = w_attack
        self.w_recency = w_recency
        self.w_relevancy = w_relevancy
        self.w_mle = w_mle
        self.recent_k = recent_k
        self.select = select
        self.rounds = rounds
        self.select_k = select_k
        self.select_epochs = select_epochs
        self.select_real_share = select_real_share
        self.select_temperature = select_temperature
        self.select_margin = select_margin
        self.candidates = candidates
        self.temperature = temperature
        self.top_p = top_p
        self.max_repeats = max_repeats
        self.no_repeat_ngram = no_repeat_ngram
        self.context_boost = context_boost
        self.lm = lm
        self.seed = seed
        self.device = device

    def lm_params(self) -> dict[str, Any]:
        """The reference LM's settings: ``lm``, on PETGEN's ``device`` unless ``lm`` names one
        (the CPU adds nothing, so the CPU's cached LM is the one it always was)."""
        lm = dict(self.lm or {})
        if self.device != "cpu":
            lm.setdefault("device", self.device)
        return lm


#: Every PETGEN setting and its default, in the constructor's order.
DEFAULTS: dict[str, Any] = {
    name: p.default for name, p in inspect.signature(PETGENSettings.__init__).parameters.items()
    if p.kind is p.KEYWORD_ONLY
}


def check_names(params: dict[str, Any], owner: str, extra: tuple[str, ...] = ()) -> None:
    """A :class:`~advseq.errors.ConfigError` naming the first key of ``params`` that is
    neither a PETGEN setting nor one of ``extra`` (``owner`` says who was given it)."""
    unknown = [k for k in params if k not in DEFAULTS and k not in extra]
    if unknown:
        known = ", ".join(dict.fromkeys([*extra, *DEFAULTS]))   # each name once
        raise ConfigError(f"{owner}: unknown parameter {unknown[0]!r}; known: {known}")
