"""The threat-model wrapper: the only view of a detector an attack ever gets.

It grants capabilities by mode — ``white-box`` (label + score + gradient), ``score``
(label + score) and ``label`` (decision only) — refuses what the mode withholds before
anything runs, counts every query per user, and enforces a per-user query budget with
:class:`~advseq.errors.QueryBudgetExceeded` (reported apart from a failed attack).
The ``transfer`` mode is built from these: the attack gets a ``white-box`` wrapper on a
surrogate, and the evaluator scores the written posts once on the deployed detector.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from advseq.errors import CapabilityError, ConfigError, QueryBudgetExceeded

if TYPE_CHECKING:
    import numpy as np
    import torch

    from advseq.detector import Detector
    from advseq.schema import User
    from advseq.text import Vocabulary

MODES: dict[str, frozenset[str]] = {
    "white-box": frozenset({"label", "score", "gradient"}),
    "score": frozenset({"label", "score"}),
    "label": frozenset({"label"}),
}
# Every mode an attack run can take: the query modes above, then transfer (the attacker
# attacks its own surrogate white-box; the deployed detector only scores the result).
THREAT_MODES: tuple[str, ...] = (*MODES, "transfer")
# The attacker's surrogate when a run names none, and the seed offset that keeps it from
# sharing the deployed detector's initialisation.
SURROGATE_DETECTOR = "cnn"
SURROGATE_SEED_OFFSET = 1000


def surrogate_seed(seed: int) -> int:
    """The seed the attacker's surrogate is trained with, for a run seeded ``seed``."""
    return seed + SURROGATE_SEED_OFFSET


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`THREAT_MODES`, else a :class:`ConfigError`."""
    if mode not in THREAT_MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose from {', '.join(THREAT_MODES)}")
    return mode


def applicability(requires: Iterable[str], mode: str, capabilities: Iterable[str], *,
                  attack: str = "the attack", detector: str = "the detector") -> str | None:
    """Why an attack that needs ``requires`` cannot run in threat ``mode`` against a
    detector offering ``capabilities`` — or ``None`` when it can.

    In a query mode the detector must offer everything the mode grants (a
    :class:`ThreatModel` refuses otherwise) and the mode must grant what the attack
    needs. In ``transfer`` mode the attack works white-box on the surrogate, so
    ``capabilities`` are the surrogate's and must cover the attack's needs. ``attack``
    and ``detector`` name the two in the reason, verbatim.
    """
    check_mode(mode)
    needs, offered = frozenset(requires), frozenset(capabilities)
    if mode == "transfer":
        missing = needs - offered
        if missing:
            return (f"{attack} needs {', '.join(sorted(missing))}, which the surrogate "
                    f"{detector} cannot provide; pick a surrogate detector with soft-token "
                    "gradients (hlstm, cnn, ties, transformer)")
        return None
    granted = MODES[mode]
    unoffered = granted - offered
    if "gradient" in unoffered:
        return f"{detector} offers no gradients ({mode} needs them); see its transfer/score rows"
    if unoffered:
        return f"{detector} offers no {', '.join(sorted(unoffered))}, which {mode} mode needs"
    withheld = needs - granted
    if withheld - {"score"}:
        return f"{attack} needs {', '.join(sorted(needs))}, which {mode} mode withholds"
    if withheld:
        return f"{attack} needs scores, which {mode} mode withholds"
    return None


class ThreatModel:
    """A detector seen through a threat model.

    ``mode`` is a name from :data:`MODES` or an explicit set of capabilities;
    ``budget`` caps the queries per user (``None`` = unlimited). ``surrogate`` marks the
    attacker's own stand-in for the deployed detector (transfer mode): its answers only
    guide the attack, the deployed detector decides success.
    """

    def __init__(self, detector: Detector, mode: str | Iterable[str] = "white-box", *,
                 budget: int | None = None, threshold: float = 0.5, surrogate: bool = False) -> None:
        if isinstance(mode, str):
            if mode not in MODES:
                raise ConfigError(f"unknown threat mode {mode!r}; choose from {', '.join(MODES)}")
            granted, self.mode = MODES[mode], mode
        else:
            granted, self.mode = frozenset(mode), "custom"
        offered = frozenset(detector.capabilities)
        if not granted <= offered:
            raise CapabilityError(
                f"mode {self.mode!r} grants {sorted(granted)} but detector "
                f"{detector.name or type(detector).__name__!r} only offers {sorted(offered)}")
        if budget is not None and budget < 1:
            raise ConfigError(f"query budget must be >= 1, got {budget}")
        self._detector = detector
        self.capabilities = granted
        self.budget = budget
        self.threshold = threshold
        self.surrogate = surrogate
        self.queries: Counter[str] = Counter()

    def reaches(self, prob: float, target: int, margin: float = 0.0) -> bool:
        """Whether a detector probability ``prob`` gives the verdict ``target`` — with a
        ``margin``, by at least that much past the threshold (``prob >= threshold + margin``
        for a positive verdict, ``prob < threshold - margin`` for a negative one)."""
        return prob >= self.threshold + margin if target else prob < self.threshold - margin

    # ---- capability checks ---------------------------------------------------------
    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def require(self, needed: Iterable[str], who: str = "this attack") -> None:
        missing = sorted(set(needed) - self.capabilities)
        if missing:
            raise CapabilityError(
                f"{who} needs {', '.join(missing)} but the {self.mode!r} threat model grants only "
                f"{', '.join(sorted(self.capabilities))}")

    # ---- query accounting ----------------------------------------------------------
    def remaining(self, user_id: str) -> int | None:
        return None if self.budget is None else self.budget - self.queries[user_id]

    def affordable(self, users: Sequence[User], n: int = 1) -> list[bool]:
        """Whether each user still has ``n`` queries left."""
        if self.budget is None:
            return [True] * len(users)
        return [self.queries[u.user_id] + n <= self.budget for u in users]

    def _charge(self, users: Sequence[User]) -> None:
        counts = Counter(u.user_id for u in users)
        if self.budget is not None:
            for uid, n in counts.items():
                if self.queries[uid] + n > self.budget:
                    raise QueryBudgetExceeded(uid, self.budget)
        self.queries.update(counts)

    @property
    def total_queries(self) -> int:
        return sum(self.queries.values())

    # ---- queries -------------------------------------------------------------------
    def label(self, users: Sequence[User]) -> np.ndarray:
        """The detector's decision (1 = malicious) per user; one query each."""
        self.require({"label"})
        self._charge(users)
        return (self._proba(users) >= self.threshold).astype("int64")

    def score(self, users: Sequence[User]) -> np.ndarray:
        """P(malicious) per user; one query each."""
        self.require({"score"}, "a score query")
        self._charge(users)
        return self._proba(users)

    def _proba(self, users: Sequence[User]) -> np.ndarray:
        # A detector's ``query_proba`` (where it has one) is its predict_proba through the
        # caches an attack's repeated queries on one history hit (advseq.history_cache).
        return getattr(self._detector, "query_proba", self._detector.predict_proba)(users)

    def soft_logits(self, histories: Sequence[User], soft_post: torch.Tensor,
                    lengths: torch.Tensor) -> torch.Tensor:
        """Differentiable logit of P(malicious) with a soft new post (``[B, T, V]``) or K
        soft posts (``[B, K, T, V]``) after each history; one query per user. See
        :meth:`advseq.detector.SoftPostDetector.soft_post_logits`."""
        self.require({"gradient"}, "a gradient query")
        self._charge(histories)
        return self._detector.soft_post_logits(histories, soft_post, lengths)  # type: ignore[attr-defined]

    def token_logits(self, histories: Sequence[User], ids: torch.Tensor,
                     lengths: torch.Tensor) -> torch.Tensor:
        """:meth:`soft_logits` of the one-hot posts of token ids (``[B, T]`` with lengths
        ``[B]``, or ``[B, K, T]`` with ``[B, K]``): the exact score of those tokens written
        as real posts, without the ``[..., V]`` matrix where the detector has a token path
        (``token_post_logits``); one query per user, white-box only (the ids are the
        detector's vocabulary)."""
        self.require({"gradient"}, "a token-id query")
        self._charge(histories)
        det = self._detector
        if hasattr(det, "token_post_logits"):
            return det.token_post_logits(histories, ids, lengths)  # type: ignore[attr-defined]
        from advseq.post_tensors import one_hot_ids

        return det.soft_post_logits(histories, one_hot_ids(ids, lengths, len(self.vocab)),  # type: ignore[attr-defined]
                                    lengths)

    def gradient(self, histories: Sequence[User], soft_post: torch.Tensor, lengths: torch.Tensor,
                 target: int | Sequence[int]) -> tuple[np.ndarray, torch.Tensor]:
        """(P(malicious), d loss / d soft_post) where loss is the cross-entropy toward
        ``target`` (0 = be judged benign): descending the gradient moves toward it."""
        self.require({"gradient"}, "a gradient query")
        self._charge(histories)
        return self._soft_gradient(histories, soft_post, lengths, target)

    def token_gradient(self, histories: Sequence[User], ids: torch.Tensor, lengths: torch.Tensor,
                       target: int | Sequence[int], *,
                       columns: torch.Tensor | None = None) -> tuple[np.ndarray, torch.Tensor]:
        """:meth:`gradient` at the one-hot posts of token ids (``[B, T]`` with lengths
        ``[B]``, or ``[B, K, T]`` with ``[B, K]``): the same numbers, without the one-hot
        matrix where the detector has a token path (``token_post_gradient``); one query per
        user, white-box only. ``columns`` (token ids) says which tokens' entries the caller
        reads: a token path may leave the others zero."""
        import torch

        from advseq import history_cache

        self.require({"gradient"}, "a gradient query")
        self._charge(histories)
        det = self._detector
        if hasattr(det, "token_post_gradient") and history_cache.fast():
            return det.token_post_gradient(histories, ids, lengths,  # type: ignore[attr-defined]
                                           torch.as_tensor(target, dtype=torch.float32), columns)
        from advseq.post_tensors import one_hot_ids

        return self._soft_gradient(histories, one_hot_ids(ids, lengths, len(self.vocab)), lengths, target)

    def _soft_gradient(self, histories: Sequence[User], soft_post: torch.Tensor, lengths: torch.Tensor,
                       target: int | Sequence[int]) -> tuple[np.ndarray, torch.Tensor]:
        import torch

        x = soft_post.detach().clone().requires_grad_(True)
        logits = self._detector.soft_post_logits(histories, x, lengths)  # type: ignore[attr-defined]
        tgt = torch.as_tensor(target, dtype=logits.dtype, device=logits.device).expand_as(logits)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, tgt, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        return torch.sigmoid(logits).detach().cpu().double().numpy(), grad

    # ---- white-box facts -----------------------------------------------------------
    @property
    def vocab(self) -> Vocabulary:
        """The detector's vocabulary (the space of soft posts); white-box only."""
        self.require({"gradient"}, "reading the detector's vocabulary")
        return self._detector.vocab_  # type: ignore[attr-defined]

    @property
    def max_post_tokens(self) -> int:
        return int(getattr(self._detector, "max_post_tokens", 30))

    @property
    def fingerprint(self) -> str:
        """Identifies the detector and the granted capabilities (not the detector itself)."""
        import hashlib

        blob = f"{self._detector.fingerprint()}|{sorted(self.capabilities)}|{self.threshold}"
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "capabilities": sorted(self.capabilities), "budget": self.budget,
                "threshold": self.threshold, "fingerprint": self.fingerprint}
