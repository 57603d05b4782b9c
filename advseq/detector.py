"""The detector interface: what advseq attacks.

A detector follows scikit-learn's conventions: hyper-parameters are constructor
arguments stored verbatim, ``fit`` returns ``self``, learned state ends in ``_``. It
saves to a folder (``config.json`` + weights as safetensors + ``vocab.json`` where it has
one) and loads back from the path alone through :func:`load_detector`.

What a detector can offer an attacker is declared in ``capabilities``:

* ``label``    — the decision only,
* ``score``    — P(malicious),
* ``gradient`` — white-box: it accepts a new post as a *soft* token distribution over its
  vocabulary (:class:`SoftPostDetector`) and is differentiable with respect to it.

Attacks never see a detector directly, only :class:`advseq.threat.ThreatModel`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from advseq.config import Configurable, build
from advseq.errors import CapabilityError, ConfigError
from advseq.schema import User
from advseq.storage import CONFIG_FILE, construct, read_model_config, write_model_config

if TYPE_CHECKING:
    import torch

    from advseq.text import Vocabulary

FORMAT = "advseq-detector/1"
ALL_CAPABILITIES = frozenset({"label", "score", "gradient"})


class Detector(Configurable, ABC):
    """Base class of every detector (first-party, third-party, or a wrapped callable)."""

    #: registry name (the entry-point name)
    name: ClassVar[str] = ""
    #: what an attacker may be granted on this detector
    capabilities: ClassVar[frozenset[str]] = frozenset({"label", "score"})

    fit_info_: dict[str, Any]

    @abstractmethod
    def fit(self, train: Sequence[User], valid: Sequence[User] | None = None, **kwargs: Any) -> Detector:
        """Train on ``train`` (early stopping on ``valid`` where the model uses it)."""

    @abstractmethod
    def predict_proba(self, users: Sequence[User]) -> np.ndarray:
        """P(malicious) for each user, shape ``[len(users)]``, batched internally."""

    #: whether :meth:`fine_tune` can continue training a fitted detector (the torch
    #: detectors); retraining's warm start (``fine_tune_epochs``) needs it
    can_fine_tune: ClassVar[bool] = False

    def fine_tune(self, train: Sequence[User], valid: Sequence[User] | None = None, *,
                  epochs: int, progress: bool | None = None) -> Detector:
        """Continue training on ``train`` for up to ``epochs`` epochs from what the
        detector learned; only where :attr:`can_fine_tune`."""
        raise CapabilityError(f"detector {self.name!r} cannot fine-tune: it trains from scratch only")

    def fingerprint(self) -> str:
        """A hash of the configuration and learned state: equal for the same trained model
        (lets attackers cache what they trained against it)."""
        import hashlib

        params = self.get_params()
        if "device" in params:      # where a model runs is not what it is
            params["device"] = "cpu"
        h = hashlib.sha256(json.dumps({"detector": self.name, "params": params},
                                      sort_keys=True, default=str).encode())
        for arr in self._state_arrays():
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]

    def _state_arrays(self) -> list[np.ndarray]:
        """Arrays of the learned state, for :meth:`fingerprint` (override per detector)."""
        return [np.frombuffer(str(id(self)).encode(), dtype=np.uint8)]

    def predict(self, users: Sequence[User], threshold: float = 0.5) -> np.ndarray:
        return (self.predict_proba(users) >= threshold).astype(np.int64)

    # ---- persistence ---------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` and the learned state into folder ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {"detector": self.name, "params": self.get_params(),
                  "fit_info": getattr(self, "fit_info_", {})}
        extra = self._save_state(path)
        if extra:
            config["state"] = extra
        write_model_config(path, FORMAT, config)   # last: a readable config means complete
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> Detector:
        """The detector saved in folder ``path``, on ``device`` (default: the CPU, whatever
        device it was trained on; see :meth:`to_device`)."""
        path = Path(path)
        config = read_config(path)
        params = config["params"]
        if isinstance(params, dict) and isinstance(params.get("device"), str):
            from advseq.device import device_problem

            if device_problem(params["device"], available=False, auto=False) is None:
                params = {**params, "device": "cpu"}   # a bad name is refused by construct
        det = construct(cls, params, path)
        det.fit_info_ = config.get("fit_info", {})
        det._load_state(path, config.get("state") or {})
        return det.to_device(device) if device is not None else det

    def to_device(self, device: str) -> Detector:
        """Run on ``device`` from now on (a checked name, :mod:`advseq.device`): a detector
        with a ``device`` setting takes it and moves its network there; one without runs
        on the CPU. Returns the detector."""
        from advseq.device import takes_device

        if takes_device(type(self)):
            self.device = device
            module = getattr(self, "module_", None)
            if module is not None:
                import torch

                module.to(torch.device(device))
        return self

    def _save_state(self, path: Path) -> dict[str, Any] | None:
        """Write learned state (safetensors/JSON, never pickle); return JSON-able extras
        for config.json."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    def _load_state(self, path: Path, state: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be loaded")


class SoftPostDetector(Detector):
    """A detector that scores ``history + new post`` where the new post is a soft token
    distribution over its vocabulary, differentiably: the white-box capability."""

    capabilities: ClassVar[frozenset[str]] = ALL_CAPABILITIES
    vocab_: Vocabulary
    max_post_tokens: int

    @abstractmethod
    def soft_post_logits(self, histories: Sequence[User], soft_post: torch.Tensor,
                         lengths: torch.Tensor) -> torch.Tensor:
        """Logit of P(malicious) for each user with one or K new posts appended.

        ``histories``: the posts that precede the new ones (B users); ``soft_post``:
        ``[B, T, V]`` probabilities over ``vocab_`` for one post, with ``lengths`` ``[B]``
        tokens used per post, or ``[B, K, T, V]`` for K posts written in that order, with
        ``lengths`` ``[B, K]``. One-hot rows give the exact score of the same texts
        appended as real posts, each at the time an attack writes it (the last post's
        time plus the user's median gap, then a median gap apart; a replaced post's time is
        not in the history, so under replace-last the gaps are the history's), and where
        the K posts and the history exceed what the detector reads, the oldest posts drop
        out as they would for real posts. Returns ``[B]``, attached to the autograd graph.
        """


class CallableDetector(Detector):
    """Wrap your own detector: any callable ``users -> P(malicious)``.

    Every attack, evaluator and report then works on it with the ``label``/``score``
    capabilities. Provide ``soft_post_logits`` (same contract as
    :meth:`SoftPostDetector.soft_post_logits`; the ``[B, K, T, V]`` form is needed only
    by K-post relaxations such as ``advseq ceiling --posts K``) plus ``vocab`` to grant
    ``gradient``::

        det = CallableDetector(lambda users: my_model.predict(users))
    """

    name = "callable"

    def __init__(self, fn: Callable[[Sequence[User]], Sequence[float]], *,
                 soft_post_logits: Callable[..., Any] | None = None,
                 vocab: Vocabulary | None = None, max_post_tokens: int = 30) -> None:
        self.fn = fn
        self._soft = soft_post_logits
        self.vocab_ = vocab
        self.max_post_tokens = max_post_tokens
        self.fit_info_ = {}
        if (soft_post_logits is None) != (vocab is None):
            raise ConfigError("CallableDetector needs both soft_post_logits and vocab for gradients")

    def get_params(self) -> dict[str, Any]:
        return {}  # a wrapped callable has no config; it cannot be saved

    @property
    def capabilities(self) -> frozenset[str]:  # type: ignore[override]
        return ALL_CAPABILITIES if self._soft is not None else frozenset({"label", "score"})

    def fit(self, train: Sequence[User], valid: Sequence[User] | None = None, **kwargs: Any) -> CallableDetector:
        return self  # already trained by its owner

    def predict_proba(self, users: Sequence[User]) -> np.ndarray:
        out = np.asarray(self.fn(list(users)), dtype=np.float64).reshape(-1)
        if out.shape != (len(users),):
            raise ConfigError(f"the wrapped detector returned {out.shape[0]} scores for {len(users)} users")
        return out

    def soft_post_logits(self, histories: Sequence[User], soft_post: torch.Tensor,
                         lengths: torch.Tensor) -> torch.Tensor:
        if self._soft is None:
            raise ConfigError("this wrapped detector was given no soft_post_logits")
        return self._soft(histories, soft_post, lengths)


def read_config(path: Path) -> dict[str, Any]:
    """The ``config.json`` of a saved detector folder, validated."""
    return read_model_config(path, FORMAT, "detector", required=("detector", "params"),
                             types={"detector": str, "params": dict, "fit_info": dict, "state": dict})


def create_detector(name: str, **params: Any) -> Detector:
    """A new, untrained detector from the registry."""
    from advseq import registry

    return build(registry.detectors.get(name), params, name)


def load_detector(path: str | Path, *, device: str | None = None) -> Detector:
    """Load any saved detector from its folder (the registry says which class), on
    ``device`` (default: the CPU)."""
    from advseq import registry

    path = Path(path)
    config = read_config(path)
    try:
        cls = registry.detectors.get(config["detector"])
    except ConfigError as err:
        raise ConfigError(f"{path / CONFIG_FILE}: {err}") from None
    return cls.load(path, device=device)
