"""``ensemble``: several detectors of one kind trained with different seeds, averaged.

Its score is the sigmoid of the members' mean logit (``combine="mean"``), or of the most
suspicious member's logit (``combine="max"``: it flags a user when any member does).
Deployed, it is a sturdier detector; as the attacker's surrogate in transfer mode it is
the classic way to make adversarial text transfer (Liu et al., "Delving into Transferable
Adversarial Examples and Black-box Attacks", ICLR 2017: what fools several models fools
an unseen one more often): a post must move every member, not one model's quirks. With
``combine="max"`` a post evades the surrogate only when it evades every member, the
stricter goal (on wiki it transferred no better than the mean: README).

Members are trained with seeds ``seed, seed + 1, ...`` on the same users (one validation
split, carved with ``seed``, for all of them) and saved in
``members/<i>/`` of the ensemble's folder. The ensemble offers what every member offers;
``gradient`` needs members with one vocabulary (detectors of one kind trained on the same
users have it), and then a soft post (or K soft posts) is scored by every member,
differentiably.

    advseq train DATA -d ensemble -p member=hlstm -p size=3 --seed 1000 -o surrogate-ens
    advseq train DATA -d ensemble -p member=hlstm -p combine=max --seed 1000 -o surrogate-any
    advseq attack DATA -d DEPLOYED -a petgen --mode transfer --surrogate surrogate-ens
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from advseq.config import SEED, Choice, Int, ParamError, Table, Text
from advseq.detector import ALL_CAPABILITIES, Detector, create_detector, load_detector
from advseq.errors import ConfigError
from advseq.schema import User

if TYPE_CHECKING:
    import torch

    from advseq.text import Vocabulary

MEMBERS_DIR = "members"
COMBINE = ("mean", "max")
_EPS = 1e-7


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


class _Offered:
    """``capabilities``: on the class, the most an ensemble can offer (what pre-flight
    checks read before a model exists); on a trained ensemble, what its members offer."""

    def __get__(self, obj: EnsembleDetector | None, owner: type) -> frozenset[str]:
        return ALL_CAPABILITIES if obj is None else obj._offered()


def _probe_params(params: dict[str, Any]) -> dict[str, Any]:
    """Member settings to check on this machine: a GPU named by a well-formed ``device``
    is checked when members are trained (a saved ensemble loads on a CPU-only machine)."""
    from advseq.device import device_problem

    device = params.get("device")
    if isinstance(device, str) and device_problem(device, available=False, auto=False) is None:
        return {**params, "device": "cpu"}
    return params


class EnsembleDetector(Detector):
    """Several detectors of one kind trained with different seeds, scored by their mean (or
    largest) logit."""

    name = "ensemble"
    param_rules = {"member": Text(), "size": Int(1, 100), "member_params": Table(none=True),
                   "combine": Choice(*COMBINE), "seed": SEED}

    def __init__(self, *, member: str = "hlstm", size: int = 3,
                 member_params: dict[str, Any] | None = None, combine: str = "mean",
                 seed: int = 0) -> None:
        if member == self.name:
            raise ParamError("member", "an ensemble's members cannot be ensembles", self.name)
        if member_params and "seed" in member_params:
            raise ParamError("member_params.seed", "members take seeds seed, seed + 1, ...; leave it out",
                             self.name)
        self.member = member
        self.size = size
        self.member_params = dict(member_params or {})
        self.combine = combine
        self.seed = seed
        self.members_: list[Detector] = []
        self.fit_info_ = {}
        # fail early on a bad kind or parameter; its class says what members can offer
        try:
            probe = create_detector(member, seed=seed, **_probe_params(self.member_params))
        except ParamError as err:
            raise ParamError(f"member_params.{err.key}", err.problem, self.name) from None
        self._member_caps = frozenset(probe.capabilities)

    capabilities = _Offered()  # type: ignore[assignment]

    # ---- where it runs: its members' device ----------------------------------------
    @classmethod
    def params_on_device(cls, params: dict[str, Any], device: str) -> dict[str, Any]:
        """An ensemble's settings for ``device``: its members get it (advseq.device.on_device)."""
        from advseq import registry
        from advseq.device import on_device

        member = registry.detectors.get(params.get("member", "hlstm"))
        placed = on_device(member, params.get("member_params") or {}, device,
                           what="member_params.device")
        return {**params, "member_params": placed} if placed else params

    def to_device(self, device: str) -> EnsembleDetector:
        for m in self.members_:
            m.to_device(device)
        return self

    # ---- what it offers ------------------------------------------------------------
    def _offered(self) -> frozenset[str]:
        if not self.members_:
            return self._member_caps
        caps = frozenset.intersection(*(frozenset(m.capabilities) for m in self.members_))
        if "gradient" in caps and not self._one_vocabulary():
            caps -= {"gradient"}
        return caps & ALL_CAPABILITIES

    def _one_vocabulary(self) -> bool:
        first = self.members_[0].vocab_.itos  # type: ignore[attr-defined]
        return all(m.vocab_.itos == first for m in self.members_[1:])  # type: ignore[attr-defined]

    @property
    def vocab_(self) -> Vocabulary:
        if not self.members_ or "gradient" not in self.capabilities:
            raise AttributeError("vocab_: the ensemble's members do not share one vocabulary")
        return self.members_[0].vocab_  # type: ignore[attr-defined]

    @property
    def max_post_tokens(self) -> int:
        return min(int(getattr(m, "max_post_tokens", 30)) for m in self.members_) if self.members_ else 30

    # ---- training and scoring ------------------------------------------------------
    def fit(self, train: Sequence[User], valid: Sequence[User] | None = None, *,
            checkpoint_dir: str | Path | None = None, progress: bool | None = None,
            **kwargs: Any) -> EnsembleDetector:
        t0 = time.perf_counter()
        train = list(train)
        members = [create_detector(self.member, seed=self.seed + i, **self.member_params)
                   for i in range(self.size)]
        valid_size = float(getattr(members[0], "valid_size", 0.0) or 0.0)
        if valid is None and valid_size > 0:
            # One validation split for all: members then see the same users and build one
            # vocabulary (the soft-post gradient needs it); they differ by their seeds.
            from advseq.torch_fit import carve_validation

            train, valid = carve_validation(train, valid_size, self.seed)
        self.members_ = []
        for i, det in enumerate(members):
            ckpt = Path(checkpoint_dir) / str(i) if checkpoint_dir is not None else None
            det.fit(train, valid, checkpoint_dir=ckpt, progress=progress, **kwargs)
            self.members_.append(det)
        infos = [getattr(m, "fit_info_", {}) for m in self.members_]
        self.fit_info_ = {"members": infos, "epochs": sum(int(i.get("epochs", 1)) for i in infos),
                          "train_seconds": round(time.perf_counter() - t0, 3)}
        return self

    def _require_fitted(self) -> None:
        if not self.members_:
            raise ConfigError("the ensemble is not trained: fit() it or load it from a folder")

    def predict_proba(self, users: Sequence[User]) -> np.ndarray:
        self._require_fitted()
        return self._combined([m.predict_proba(users) for m in self.members_])

    def query_proba(self, users: Sequence[User]) -> np.ndarray:
        """:meth:`predict_proba` through each member's ``query_proba`` where it has one
        (its history cache: :meth:`advseq.neural.NeuralDetector.query_proba`)."""
        self._require_fitted()
        return self._combined([getattr(m, "query_proba", m.predict_proba)(users) for m in self.members_])

    def _combined(self, probs: list[np.ndarray]) -> np.ndarray:
        each = np.array([_logit(p) for p in probs])
        logits = each.max(axis=0) if self.combine == "max" else each.mean(axis=0)
        return 1.0 / (1.0 + np.exp(-logits))

    def soft_post_logits(self, histories: Sequence[User], soft_post: torch.Tensor,
                         lengths: torch.Tensor) -> torch.Tensor:
        self._require_fitted()
        if "gradient" not in self.capabilities:
            raise ConfigError(f"ensemble of {self.member!r}: its members offer no soft-post gradient "
                              "with one shared vocabulary")
        import torch

        # [B, T, V] or [B, K, T, V]: every member reads the shape itself (one vocabulary).
        each = torch.stack([m.soft_post_logits(histories, soft_post, lengths)  # type: ignore[attr-defined]
                            for m in self.members_])
        return each.amax(dim=0) if self.combine == "max" else each.mean(dim=0)

    def token_post_logits(self, histories: Sequence[User], ids: torch.Tensor,
                          lengths: torch.Tensor) -> torch.Tensor:
        """:meth:`soft_post_logits` of one-hot posts given as token ids (``[B, T]`` or
        ``[B, K, T]``), each member scoring them through its own token path."""
        self._require_fitted()
        if "gradient" not in self.capabilities:
            raise ConfigError(f"ensemble of {self.member!r}: its members offer no soft-post gradient "
                              "with one shared vocabulary")
        import torch

        from advseq.post_tensors import one_hot_ids

        def member(m: Detector) -> torch.Tensor:
            if hasattr(m, "token_post_logits"):
                return m.token_post_logits(histories, ids, lengths)
            return m.soft_post_logits(histories, one_hot_ids(ids, lengths, len(self.vocab_)),  # type: ignore[attr-defined]
                                      lengths)

        each = torch.stack([member(m) for m in self.members_])
        return each.amax(dim=0) if self.combine == "max" else each.mean(dim=0)

    def _state_arrays(self) -> list[np.ndarray]:
        self._require_fitted()
        return [np.frombuffer(m.fingerprint().encode(), dtype=np.uint8) for m in self.members_]

    # ---- persistence ---------------------------------------------------------------
    def _save_state(self, path: Path) -> dict[str, Any] | None:
        self._require_fitted()
        for i, m in enumerate(self.members_):
            m.save(path / MEMBERS_DIR / str(i))
        return {"members": [f"{MEMBERS_DIR}/{i}" for i in range(len(self.members_))]}

    def _load_state(self, path: Path, state: dict[str, Any]) -> None:
        folders = state.get("members") or []
        expected = [f"{MEMBERS_DIR}/{i}" for i in range(self.size)]
        if folders != expected:
            raise ConfigError(f"{path / 'config.json'}: state.members must be {expected} "
                              f"(the ensemble's size is {self.size})")
        self.members_ = [load_detector(path / f) for f in folders]
        kinds = {m.name for m in self.members_}
        if kinds != {self.member}:
            raise ConfigError(f"{path}: members are {sorted(kinds)}, expected {self.member!r}")
