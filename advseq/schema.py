"""The data model: a :class:`Post`, a :class:`User` (an ordered post sequence with a
label) and a :class:`Dataset` of users with PETGEN's seeded stratified split."""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from advseq.errors import ConfigError

BENIGN = 0
MALICIOUS = 1


def has_context(context: str | None) -> bool:
    """Whether a post names a target context (not None, empty or blank)."""
    return bool(context and context.strip())


@dataclass(frozen=True, slots=True)
class Post:
    """One post.

    ``context`` is the item/page the post was written about (``None`` when unknown);
    ``timestamp`` is seconds since the Unix epoch; ``relevancy`` says how related the
    post is to the context of the user's final post (PETGEN's 0/1 flag).
    """

    text: str
    context: str | None = None
    timestamp: float | None = None
    relevancy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "context": self.context}
        if self.timestamp is not None:
            out["timestamp"] = self.timestamp
        out["relevancy"] = self.relevancy
        return out


@dataclass(frozen=True, slots=True)
class User:
    """A user: id, label (1 = malicious, 0 = benign) and posts, oldest first."""

    user_id: str
    label: int
    posts: tuple[Post, ...]

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.posts]

    @property
    def last_post(self) -> Post:
        return self.posts[-1]

    @property
    def target_context(self) -> str | None:
        """The context of the final post: where PETGEN's attacker writes next."""
        return self.posts[-1].context

    def with_posts(self, posts: Sequence[Post]) -> User:
        return User(self.user_id, self.label, tuple(posts))

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "label": self.label,
            "posts": [p.to_dict() for p in self.posts],
        }


@dataclass
class Dataset:
    """An ordered collection of users with unique ids."""

    users: list[User]
    name: str = "dataset"
    source: str | None = None
    #: problems tolerated while loading (lenient mode, unknown fields), for the user to see
    warnings: list[str] = field(default_factory=list, repr=False)
    #: counts of users/posts dropped while loading (lenient mode only)
    skipped: dict[str, int] = field(default_factory=dict, repr=False)
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    #: (the users it was computed over, the checksum); users are immutable, so the same
    #: user objects in the same order have the same checksum
    _checksum: tuple[tuple[User, ...], str] | None = field(default=None, init=False, repr=False,
                                                            compare=False)

    def __post_init__(self) -> None:
        self._index = {}
        for i, u in enumerate(self.users):
            if u.user_id in self._index:
                raise ConfigError(f"duplicate user id {u.user_id!r} in dataset {self.name!r}")
            self._index[u.user_id] = i

    def __len__(self) -> int:
        return len(self.users)

    def __iter__(self) -> Iterator[User]:
        return iter(self.users)

    def __getitem__(self, user_id: str) -> User:
        try:
            return self.users[self._index[user_id]]
        except KeyError:
            raise KeyError(f"no user {user_id!r} in dataset {self.name!r}") from None

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._index

    @property
    def user_ids(self) -> list[str]:
        return [u.user_id for u in self.users]

    @property
    def labels(self) -> list[int]:
        return [u.label for u in self.users]

    @property
    def n_posts(self) -> int:
        return sum(len(u.posts) for u in self.users)

    def subset(self, user_ids: Iterable[str], name: str | None = None) -> Dataset:
        """The users with these ids, in the given order."""
        return Dataset([self[i] for i in user_ids], name=name or self.name, source=self.source)

    def filter(self, keep: Iterable[bool], name: str | None = None) -> Dataset:
        users = [u for u, k in zip(self.users, keep, strict=True) if k]
        return Dataset(users, name=name or self.name, source=self.source)

    def split(self, test_size: float = 0.2, seed: int = 0) -> DataSplit:
        """Seeded stratified split (PETGEN protocol: 80/20, seed 0, in dataset order)."""
        from sklearn.model_selection import train_test_split

        if not 0.0 < test_size < 1.0:
            raise ConfigError(f"test_size must be in (0, 1), got {test_size}")
        counts = {lab: self.labels.count(lab) for lab in set(self.labels)}
        if len(counts) < 2 or min(counts.values()) < 2:
            raise ConfigError(
                f"dataset {self.name!r} needs at least 2 users of each class for a stratified "
                f"split; it has {counts}"
            )
        idx = list(range(len(self.users)))
        train_idx, test_idx = train_test_split(
            idx, test_size=test_size, random_state=seed, stratify=self.labels
        )
        train = Dataset([self.users[i] for i in sorted(train_idx)], f"{self.name}/train", self.source)
        test = Dataset([self.users[i] for i in sorted(test_idx)], f"{self.name}/test", self.source)
        return DataSplit(train=train, test=test, seed=seed, test_size=test_size)

    def checksum(self) -> str:
        """sha256 of the canonical content (ids, labels, posts): identical for the same
        users whatever file format they were loaded from. Computed once and kept while
        ``users`` holds the same (immutable) user objects: pipelines ask for it several
        times per unit, and on a large platform each pass costs seconds."""
        if self._checksum is not None:
            seen, digest = self._checksum
            if len(seen) == len(self.users) and all(map(operator.is_, seen, self.users)):
                return digest
        h = hashlib.sha256()
        for u in self.users:
            h.update(json.dumps(u.to_dict(), sort_keys=True, ensure_ascii=False).encode())
            h.update(b"\n")
        digest = h.hexdigest()
        self._checksum = (tuple(self.users), digest)
        return digest

    def to_jsonl(self) -> Iterator[str]:
        """One JSON line per user; NaN or infinity raise ValueError rather than being
        written as a bare ``NaN``, which is not JSON."""
        for u in self.users:
            yield json.dumps(u.to_dict(), ensure_ascii=False, allow_nan=False)


@dataclass
class DataSplit:
    """A train/test partition of one dataset, recorded so attacks reuse the same users."""

    train: Dataset
    test: Dataset
    seed: int
    test_size: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "test_size": self.test_size,
            "train_ids": self.train.user_ids,
            "test_ids": self.test.user_ids,
        }

    @classmethod
    def from_dict(cls, data: Dataset, record: dict[str, Any]) -> DataSplit:
        """Rebuild a recorded split on ``data``; every recorded id must be present."""
        missing = [i for i in record["train_ids"] + record["test_ids"] if i not in data]
        if missing:
            raise ConfigError(
                f"the recorded split names {len(missing)} users absent from {data.name!r} "
                f"(first: {missing[0]!r}); is this the dataset the model was trained on?"
            )
        return cls(
            train=data.subset(record["train_ids"], f"{data.name}/train"),
            test=data.subset(record["test_ids"], f"{data.name}/test"),
            seed=int(record["seed"]),
            test_size=float(record["test_size"]),
        )
