"""``textattack``: run an offline-capable TextAttack recipe on the new post.

TextAttack (Morris, Lifland, Yoo, Grigsby, Jin, Qi. "TextAttack: A Framework for
Adversarial Attacks, Data Augmentation, and Adversarial Training in NLP". EMNLP 2020
demos) assembles an attack from a goal function, constraints, a transformation and a
search method; a recipe is a ``build(model_wrapper)`` that reproduces one paper. This
adapter runs the recipes that work without downloads (see ``RECIPES``):

* ``deepwordbug`` — Gao, Lanchantin, Soffa, Qi. "Black-box Generation of Adversarial
  Text Sequences to Evade Deep Learning Classifiers". IEEE S&P Workshops 2018.
* ``pruthi`` — Pruthi, Dhingra, Lipton. "Combating Adversarial Misspellings with Robust
  Word Recognition". ACL 2019 (the attack side: one typo-like character edit).
* ``pwws`` — Ren, Deng, He, Che. "Generating Natural Language Adversarial Examples
  through Probability Weighted Word Saliency". ACL 2019 (WordNet synonyms; needs WordNet).
* ``leap`` — Xiao et al. "LEAP: Efficient and Automated Test Method for NLP Software".
  ASE 2023 (WordNet synonyms, Levy-flight PSO; needs WordNet; thousands of queries).
* ``badchar-invisible`` / ``badchar-deletions`` / ``badchar-reorderings`` — Boucher,
  Shumailov, Anderson, Papernot. "Bad Characters: Imperceptible NLP Attacks". IEEE S&P
  2022 (invisible / deletion / bidi-reordering control characters, differential
  evolution).

How it fits advseq. The attacked text is the NEW POST only, starting from the copycat
post (:func:`advseq.candidates.copycat_posts`); TextAttack's model wrapper puts
each candidate post into the user's sequence and scores the whole user through the
:class:`~advseq.threat.ThreatModel` (so every query is counted and budgeted there).

Deviations from the recipes as published in TextAttack:

* the goal function is replaced by ``TargetedClassification(target_class=task.target)``
  (evasion: be judged benign; flip: the opposite of the label), with
  ``query_budget = threat.remaining(user)`` and skipping of users already at the goal;
  BadCharacters' default of continuing past the goal is therefore not kept;
* every recipe also gets advseq's shared length constraint (at most ``task.max_tokens``
  advseq tokens, :class:`~advseq.attack.AttackSpec`);
* ``input-reduction`` is left out (it is not an attack on a label), the TextBugger
  recipe has its own offline plugin (``textbugger``), and BadCharacters' homoglyph mode
  is left out: it reads a data file missing from the textattack 0.3.11 wheel. Recipes
  needing counter-fitted embeddings, USE, a masked LM, HowNet or POS tagging cannot run
  offline and are not offered.

textattack is imported lazily, inside :meth:`TextAttackAttack.run`, after
:func:`advseq.runtime.prepare_textattack`; it is kept quiet (no progress bars, its
logger at ERROR) and never needs the network.
"""

from __future__ import annotations

import contextlib
import logging
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from advseq.attack import Attack, AttackOutput, AttackSpec, AttackTask
from advseq.candidates import copycat_posts
from advseq.config import SEED, Text
from advseq.errors import ConfigError, QueryBudgetExceeded, ResourceMissing
from advseq.schema import Dataset
from advseq.text import Tokenizer
from advseq.threat import ThreatModel

if TYPE_CHECKING:
    from types import ModuleType

_TOK = Tokenizer(lowercase=False, replace_urls=False)


# ---- importing textattack ------------------------------------------------------------
def import_textattack() -> ModuleType:
    """``textattack``, imported offline and quietly.

    Its import runs ``logging.config.dictConfig`` (which disables every logger that
    already exists) and emits deprecation warnings; both are undone or hidden here.
    """
    import sys

    if "textattack" in sys.modules:
        return sys.modules["textattack"]
    from advseq.runtime import prepare_textattack

    prepare_textattack()
    existing = {name: lg.disabled for name, lg in logging.root.manager.loggerDict.items()
                if isinstance(lg, logging.Logger)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import textattack
    for name, disabled in existing.items():
        logging.getLogger(name).disabled = disabled
    for name in list(logging.root.manager.loggerDict):
        if name == "textattack" or name.startswith("textattack."):
            logging.getLogger(name).setLevel(logging.ERROR)
    return textattack


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """Within the block, TextAttack's download helpers refuse and ``nltk.download`` is a
    no-op: e.g. ``WordSwapWordNet()`` calls ``nltk.download("omw-1.4")`` (multilingual
    WordNet, not needed for English) every time it is built."""
    import nltk
    from textattack.shared import utils as ta_utils

    def refuse(what: object, *args: Any, **kwargs: Any) -> Any:
        raise ResourceMissing(f"textattack tried to download {what!r}; advseq runs offline and "
                              "offers only components that need no download")

    saved = (nltk.download, ta_utils.download_from_s3, ta_utils.download_from_url)
    nltk.download = lambda *args, **kwargs: False
    ta_utils.download_from_s3 = ta_utils.download_from_url = refuse
    try:
        yield
    finally:
        nltk.download, ta_utils.download_from_s3, ta_utils.download_from_url = saved


@contextlib.contextmanager
def seeded(rng: random.Random) -> Iterator[None]:
    """Seed the global ``random`` and ``numpy.random`` generators (which TextAttack's
    random transformations and scipy's differential evolution draw from) from ``rng``,
    and restore their previous states afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(rng.getrandbits(64))
    np.random.seed(rng.getrandbits(32))
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


# ---- the model wrapper ---------------------------------------------------------------
class UserSequenceWrapper:
    """TextAttack model wrapper: a list of candidate posts -> ``[N, 2]`` probabilities
    (benign, malicious) of the current user's whole sequence with each candidate as the
    new post, queried through the threat model (which counts and budgets them).

    The probabilities are mapped monotonically so that TextAttack's ``argmax`` agrees
    with the threat model's decision ``P(malicious) >= threshold`` for any threshold.
    """

    def __init__(self) -> None:
        self.model = self  # TextAttack reads ``wrapper.model`` for a compatibility check
        self.threat: ThreatModel | None = None
        self.task: AttackTask | None = None
        self.scores: dict[str, float] = {}   #: post -> P(malicious) for the current user

    def bind(self, threat: ThreatModel, task: AttackTask) -> None:
        self.threat, self.task, self.scores = threat, task, {}

    def __call__(self, text_input_list: Sequence[str], **kwargs: Any) -> np.ndarray:
        if self.threat is None or self.task is None:
            raise RuntimeError("UserSequenceWrapper used before bind()")
        texts = [t if isinstance(t, str) else " ".join(t) for t in text_input_list]
        p = np.asarray(self.threat.score([self.task.with_post(t) for t in texts]), dtype=np.float64)
        self.scores.update(zip(texts, p.tolist(), strict=True))
        t = float(self.threat.threshold)
        q = np.where(p < t, 0.5 * p / max(t, 1e-12), 0.5 + 0.5 * (p - t) / max(1.0 - t, 1e-12))
        q = np.where(p >= t, np.maximum(q, np.nextafter(0.5, 1.0)), q)  # ties go to malicious
        q = np.clip(q, 0.0, 1.0)
        return np.stack([1.0 - q, q], axis=1)


# ---- shared driver -------------------------------------------------------------------
class TextAttackAttack(Attack):
    """Base of advseq plugins built from TextAttack: subclasses assemble a
    ``textattack.Attack`` in :meth:`build` around the given model wrapper; this class
    runs it per user on the new post (from the copycat post) and maps TextAttack's
    outcomes to :class:`~advseq.attack.AttackOutput`:

    * skipped (the copycat post already reaches the goal) -> ``ok``, the start post;
    * succeeded / maximized -> ``ok``, the perturbed post;
    * failed because the query budget ran out -> ``budget_exhausted``, the best post;
    * failed otherwise (no candidate left) -> ``ok`` (a finished, unsuccessful attack, as
      every attack reports it), the best post TextAttack kept; ``info["outcome"]`` says
      "failed".
    """

    requires = frozenset({"score"})
    param_rules = {"seed": SEED}
    seed: int

    def build(self, wrapper: UserSequenceWrapper) -> Any:
        """The ``textattack.Attack`` to run (textattack is importable here)."""
        raise NotImplementedError

    def begin_user(self, task: AttackTask) -> None:  # noqa: B027
        """Per-user set-up before TextAttack runs (e.g. reset caches). Default: nothing."""

    def prepare(self, train: Dataset, threat: ThreatModel, spec: AttackSpec) -> None:
        """Import textattack and assemble the attack before the clock for posts starts."""
        self._textattack()

    # -- internals ---------------------------------------------------------------------
    def _textattack(self) -> tuple[Any, UserSequenceWrapper, Any, Any]:
        state = getattr(self, "_ta_state", None)
        if state is None:
            import_textattack()
            from textattack.goal_functions import TargetedClassification

            wrapper = UserSequenceWrapper()
            with warnings.catch_warnings(), no_downloads():  # its compatibility check warns
                warnings.simplefilter("ignore")
                attack = self.build(wrapper)
                goal = TargetedClassification(wrapper, target_class=0, allow_skip=True)
            set_goal(attack, goal)
            length = length_constraint()
            attack.constraints.insert(0, length)   # cheap: before any sentence encoder
            state = self._ta_state = (attack, wrapper, goal, length)
        return state

    def run(self, tasks: Sequence[AttackTask], threat: ThreatModel) -> list[AttackOutput]:
        if not tasks:
            return []
        starts = copycat_posts(tasks, self.rng)
        return [self._attack_one(task, start, threat)
                for task, start in zip(tasks, starts, strict=True)]

    def _attack_one(self, task: AttackTask, start: str, threat: ThreatModel) -> AttackOutput:
        attack, wrapper, goal, length = self._textattack()   # imports textattack first
        from textattack.attack_results import (
            MaximizedAttackResult,
            SkippedAttackResult,
            SuccessfulAttackResult,
        )

        left = threat.remaining(task.user_id)
        if left is not None and left < 2:   # one query could only re-score the start post
            return AttackOutput(start, "budget_exhausted", {"outcome": "not_started"})
        wrapper.bind(threat, task)
        goal.target_class = task.target
        goal.query_budget = float("inf") if left is None else left
        length.max_tokens = task.max_tokens
        self.begin_user(task)
        attack.clear_cache()
        budget_hit = False
        with seeded(self.rng(task, "textattack")), no_downloads():
            try:
                result = attack.attack(start, 1 - task.target)
            except QueryBudgetExceeded:   # safety net: TextAttack counts at least as many
                result, budget_hit = None, True
            except (IndexError, ValueError):
                # Some search methods index an empty result list once the budget is spent.
                if goal.num_queries < goal.query_budget:
                    raise
                result, budget_hit = None, True
            finally:
                attack.clear_cache()
        info: dict[str, Any] = {}
        if result is None:
            return AttackOutput(start, "budget_exhausted", {"outcome": "budget"})
        budget_hit = budget_hit or goal.num_queries >= goal.query_budget
        if isinstance(result, SkippedAttackResult):
            info.update(outcome="skipped", words_changed=0)
            return AttackOutput(start, "ok", {**info, **_score(wrapper, start)})
        final = result.perturbed_result.attacked_text
        post = final.text
        info.update(words_changed=int(final.words_diff_num(result.original_result.attacked_text)))
        if "similarity_score" in final.attack_attrs:
            info["similarity"] = round(float(final.attack_attrs["similarity_score"]), 6)
        info.update(_score(wrapper, post))
        if isinstance(result, SuccessfulAttackResult | MaximizedAttackResult):
            return AttackOutput(post, "ok", {**info, "outcome": "succeeded"
                                             if isinstance(result, SuccessfulAttackResult) else "maximized"})
        if budget_hit:
            return AttackOutput(post, "budget_exhausted", {**info, "outcome": "budget"})
        # Searched every allowed edit without reaching the goal: a finished, unsuccessful
        # attack ("ok", as for every attack); the outcome stays in info.
        return AttackOutput(post, "ok", {**info, "outcome": "failed"})


def _score(wrapper: UserSequenceWrapper, post: str) -> dict[str, float]:
    p = wrapper.scores.get(post)
    return {} if p is None else {"score": round(p, 6)}


def set_goal(attack: Any, goal: Any) -> None:
    """Replace a built ``textattack.Attack``'s goal function everywhere it is wired."""
    attack.goal_function = goal
    attack.search_method.goal_function = goal
    attack.search_method.get_goal_results = goal.get_results


def length_constraint() -> Any:
    """A TextAttack constraint: the post has at most ``max_tokens`` advseq tokens (set
    per user). Character bugs can split a word (an inserted space, ``@``, an invisible
    character), so a post could otherwise outgrow the shared length limit."""
    from textattack.constraints import Constraint

    class MaxPostTokens(Constraint):
        def __init__(self) -> None:
            super().__init__(compare_against_original=False)
            self.max_tokens = 30

        def call_many(self, transformed_texts: list[Any], reference_text: Any) -> list[Any]:
            # Applies to every transformation; differential evolution's candidates carry
            # no ``last_transformation`` for the base class's compatibility check.
            return [t for t in transformed_texts if self._check_constraint(t, reference_text)]

        def _check_constraint(self, transformed_text: Any, reference_text: Any) -> bool:
            return len(_TOK.tokenize(transformed_text.text)) <= self.max_tokens

        def extra_repr_keys(self) -> list[str]:
            return ["max_tokens"]

    return MaxPostTokens()


# ---- the generic recipe plugin -------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    cls: str                         #: class name in ``textattack.attack_recipes``
    paper: str
    wordnet: bool = False
    kwargs: tuple[tuple[str, Any], ...] = ()


_BADCHAR = "Boucher et al. Bad Characters: Imperceptible NLP Attacks. IEEE S&P 2022"
RECIPES: dict[str, Recipe] = {
    "deepwordbug": Recipe("DeepWordBugGao2018", "Gao et al. Black-box Generation of Adversarial "
                          "Text Sequences to Evade Deep Learning Classifiers. IEEE S&P Workshops 2018"),
    "pruthi": Recipe("Pruthi2019", "Pruthi et al. Combating Adversarial Misspellings with Robust "
                     "Word Recognition. ACL 2019"),
    "pwws": Recipe("PWWSRen2019", "Ren et al. Generating Natural Language Adversarial Examples "
                   "through Probability Weighted Word Saliency. ACL 2019", wordnet=True),
    "leap": Recipe("LEAP2023", "Xiao et al. LEAP: Efficient and Automated Test Method for NLP "
                   "Software. ASE 2023", wordnet=True),
    "badchar-invisible": Recipe("BadCharacters2021", _BADCHAR, kwargs=(
        ("goal_function_type", "targeted_classification"), ("perturbation_type", "invisible"))),
    "badchar-deletions": Recipe("BadCharacters2021", _BADCHAR, kwargs=(
        ("goal_function_type", "targeted_classification"), ("perturbation_type", "deletions"))),
    "badchar-reorderings": Recipe("BadCharacters2021", _BADCHAR, kwargs=(
        ("goal_function_type", "targeted_classification"), ("perturbation_type", "reorderings"))),
}


class TextAttackRecipeAttack(TextAttackAttack):
    """Any offline-capable TextAttack recipe (deepwordbug, pruthi, pwws, ...) on the new post."""

    name = "textattack"
    param_rules = {"recipe": Text(limit=100)}

    def __init__(self, *, recipe: str = "deepwordbug", seed: int = 0) -> None:
        if recipe not in RECIPES:
            raise ConfigError(f"unknown textattack recipe {recipe!r}; offline-capable recipes: "
                              f"{', '.join(RECIPES)}")
        if RECIPES[recipe].wordnet:
            from advseq.runtime import require_wordnet

            try:
                require_wordnet()
            except ResourceMissing as err:
                raise ResourceMissing(f"textattack recipe {recipe!r} needs WordNet. {err}") from None
        self.recipe = recipe
        self.seed = seed

    @property
    def paper(self) -> str:  # type: ignore[override]
        return f"{RECIPES[self.recipe].paper} (TextAttack recipe, Morris et al. EMNLP 2020)"

    def build(self, wrapper: UserSequenceWrapper) -> Any:
        from textattack import attack_recipes

        info = RECIPES[self.recipe]
        return getattr(attack_recipes, info.cls).build(wrapper, **dict(info.kwargs))
