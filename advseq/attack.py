"""The attack interface: TextAttack's decomposition, re-cut for users.

* **goal** — ``evasion`` (default): a malicious user the detector flags is judged benign
  after the attack; ``flip``: any correctly classified user's verdict changes (PETGEN's
  training objective).
* **placement** — ``append`` a new post after the user's posts (default), or
  ``replace-last``: the new post takes the place of the real last post (the PETGEN
  authors' protocol; the real last post is then the realism reference).
* **target context** — the context of the user's last post, or one given for all users.
* **constraints** — :class:`AttackSpec` (max tokens; attacks add their own, e.g. a
  sentence-similarity floor).
* **search / generator** — the attack itself: :meth:`Attack.run` writes one post per
  task, seeing the detector only through :class:`~advseq.threat.ThreatModel`;
  :meth:`Attack.write_posts` writes ``AttackSpec.posts`` (K) posts per user, by default
  one at a time with the earlier ones in the history (:mod:`advseq.multipost`).

An attack declares the capabilities it needs in ``requires``; the evaluator refuses to
start one the threat model does not grant.
"""

from __future__ import annotations

import hashlib
import random
import statistics
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from advseq.config import Configurable
from advseq.errors import ConfigError
from advseq.schema import BENIGN, MALICIOUS, Dataset, Post, User

if TYPE_CHECKING:
    from advseq.threat import ThreatModel

GOALS = ("evasion", "flip")
PLACEMENTS = ("append", "replace-last")
STATUSES = ("ok", "budget_exhausted", "failed")
MAX_POSTS = 64      #: the most posts (K) one attacker may write per user
#: the models behind the quality report's two perplexities: the judge (SmolLM2, an LM
#: advseq did not train) and advseq's reference LM of the training posts
FLUENCY_MODELS = ("judge", "reference-lm")


@dataclass(frozen=True)
class AttackSpec:
    """Settings shared by every attack in one comparison."""

    goal: str = "evasion"
    placement: str = "append"
    context: str | None = None      #: None = each user's last-post context
    max_tokens: int = 30
    #: K, the posts the attacker writes per user (a budget of the threat model); with
    #: ``replace-last`` the first replaces the real last post and K - 1 follow it
    posts: int = 1

    def __post_init__(self) -> None:
        if self.goal not in GOALS:
            raise ConfigError(f"goal must be one of {', '.join(GOALS)}, got {self.goal!r}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")
        if self.max_tokens < 1:
            raise ConfigError("max_tokens must be >= 1")
        if isinstance(self.posts, bool) or not isinstance(self.posts, int) \
                or not 1 <= self.posts <= MAX_POSTS:
            raise ConfigError(f"posts (K) must be an integer from 1 to {MAX_POSTS}, got {self.posts!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a dict; ``posts`` only when K > 1, so one-post runs keep the
        records, hashes and manifests they had before K existed."""
        out = asdict(self)
        if self.posts == 1:
            del out["posts"]
        return out

    def targets(self, user: User) -> bool:
        """Whether the attacker writes for this user: under evasion only malicious users
        attack; under flip every user does."""
        return self.goal == "flip" or user.label == MALICIOUS

    def target_label(self, user: User) -> int:
        """The verdict the attacker wants for ``user``."""
        return BENIGN if self.goal == "evasion" else 1 - user.label

    def task(self, user: User) -> AttackTask:
        history = user.posts if self.placement == "append" else user.posts[:-1]
        context = self.context if self.context is not None else user.posts[-1].context
        return AttackTask(
            user=user,
            history=user.with_posts(history),
            context=context,
            target=self.target_label(user),
            timestamp=_next_timestamp(user.posts if self.placement == "append" else user.posts[:-1],
                                      user.posts[-1] if self.placement == "replace-last" else None),
            max_tokens=self.max_tokens,
            posts=self.posts,
        )

    def next_task(self, task: AttackTask, text: str) -> AttackTask:
        """The task for the post after ``task``'s, once ``text`` was written for it: the
        history gains ``text`` (on ``task``'s context, at its timestamp), the new post
        comes one median gap of the user's real posts later, on the same context."""
        gap = _median_gap(task.user.posts)
        timestamp = None if task.timestamp is None or gap is None else task.timestamp + gap
        return replace(task, history=task.with_post(text), timestamp=timestamp, slot=task.slot + 1,
                       written=(*task.written, text), attempt=0)


def _median_gap(posts: Sequence[Post]) -> float | None:
    """The median time between consecutive timestamped posts (0 with one), or None
    when no post has a timestamp."""
    ts = [p.timestamp for p in posts if p.timestamp is not None]
    if not ts:
        return None
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False) if b >= a]
    return statistics.median(gaps) if gaps else 0.0


def _next_timestamp(history: Sequence[Post], replaced: Post | None) -> float | None:
    """When the new post is written: the replaced post's time, or the last post's time
    plus the user's median gap."""
    if replaced is not None:
        return replaced.timestamp
    gap = _median_gap(history)
    if gap is None:
        return None
    return next(p.timestamp for p in reversed(history) if p.timestamp is not None) + gap


@dataclass
class AttackTask:
    """One user to attack: the posts before the new one, where and what to aim for."""

    user: User                 #: the original user
    history: User              #: the posts that precede the new post (same id and label)
    context: str | None        #: the target context of the new post
    target: int                #: the verdict the attacker wants
    timestamp: float | None    #: the new post's timestamp
    max_tokens: int = 30
    slot: int = 0              #: 0-based index of the post being written (of ``posts``)
    posts: int = 1             #: K, the posts the attacker writes for this user
    #: the posts this attacker already wrote for the user (the last posts of ``history``)
    written: tuple[str, ...] = ()
    #: retry number of this slot (a retry after a near copy draws other random numbers)
    attempt: int = 0

    @property
    def user_id(self) -> str:
        return self.user.user_id

    def with_post(self, text: str) -> User:
        """The user as the detector sees them with ``text`` as the new post."""
        return self.history.with_posts(
            (*self.history.posts, Post(text, self.context, self.timestamp, None)))


@dataclass
class AttackOutput:
    """What an attack wrote for one task. ``status``: ``ok`` (done, successful or not),
    ``budget_exhausted`` (stopped by the query budget; ``post`` is the best so far) or
    ``failed`` (nothing sensible to write; ``post`` may be a fallback)."""

    post: str
    status: str = "ok"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")


class Attack(Configurable, ABC):
    """Base class of every attack plugin.

    Hyper-parameters are constructor arguments (stored verbatim); ``seed`` makes the
    attack repeatable: per-user randomness comes from :meth:`rng`, so a user's post does
    not depend on which other users share its batch (resumed runs stay identical).
    """

    #: registry name
    name: ClassVar[str] = ""
    #: capabilities the attack needs from the threat model (label / score / gradient)
    requires: ClassVar[frozenset[str]] = frozenset()
    #: the paper it implements, for reports
    paper: ClassVar[str] = ""
    #: the text-quality models the attack writes or chooses its posts with (names from
    #: :data:`FLUENCY_MODELS`): their perplexity of its posts is no independent opinion,
    #: and the quality report says so
    fluency_models: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(cls.fluency_models) - set(FLUENCY_MODELS)
        if unknown:
            raise TypeError(f"{cls.__name__}.fluency_models: unknown {sorted(unknown)}; "
                            f"expected names from {list(FLUENCY_MODELS)}")

    seed: int
    #: a folder the evaluator gives the attack for state worth keeping across a resume
    #: (e.g. a trained generator); None outside the evaluator
    workdir: Path | None = None

    def prepare(self, train: Dataset, threat: ThreatModel, spec: AttackSpec) -> None:  # noqa: B027
        """Learn anything needed before attacking (e.g. a universal trigger or a
        language model) from the training users the attacker may see. Default: nothing."""

    def save_prepared(self, folder: Path) -> bool:
        """Save what :meth:`prepare` learned into ``folder``, so that other processes (the
        shards of a run) attack with it without preparing again (:meth:`load_prepared`).
        False: nothing is worth saving (preparing again only loads cached models or builds
        cheap indexes). Default: False."""
        return False

    def load_prepared(self, folder: Path) -> bool:
        """Take back what :meth:`save_prepared` put in ``folder`` instead of :meth:`prepare`;
        False when nothing is there. Default: False."""
        return False

    @abstractmethod
    def run(self, tasks: Sequence[AttackTask], threat: ThreatModel) -> list[AttackOutput]:
        """Write one post per task (same order)."""

    def write_posts(self, tasks: Sequence[AttackTask], threat: ThreatModel,
                    spec: AttackSpec) -> list[list[AttackOutput]]:
        """Write up to ``spec.posts`` posts per task (same order; each list holds the
        user's posts in writing order, at least one). Default: the generic sequential
        strategy (:func:`advseq.multipost.write_sequential`): post 1 by :meth:`run`,
        then each next post with the earlier ones in the history, for the users the
        attacker's check finds short of the goal. Joint attacks override this."""
        from advseq.multipost import write_sequential

        return write_sequential(self, tasks, threat, spec)

    def rng(self, task: AttackTask, salt: str = "") -> random.Random:
        """A generator seeded by (attack seed, user id, salt), and the task's slot and
        retry when they are not 0 (so a one-post attack draws what it always drew)."""
        key = f"{self.seed}|{task.user_id}|{salt}"
        if task.slot:
            key += f"|slot{task.slot}"
        if task.attempt:
            key += f"|try{task.attempt}"
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return random.Random(int.from_bytes(digest, "little"))

    def np_rng(self, task: AttackTask, salt: str = "") -> np.random.Generator:
        return np.random.default_rng(self.rng(task, salt).getrandbits(63))


def create_attack(name: str, **params: Any) -> Attack:
    """A new attack from the registry; a bad, unknown or twice-given setting is named."""
    from advseq import registry
    from advseq.config import build

    return build(registry.attacks.get(name), params, name)
