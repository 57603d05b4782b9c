"""Field-level validation shared by every loader.

Policy (documented in README "Input validation"):

* **Refused** (one-line error ``FILE:LINE: field 'F': problem``, exit code 2): unreadable
  or undecodable files, malformed JSON, missing or wrongly-typed fields, labels other than
  0/1, duplicate user ids, users with no posts, empty or non-text posts, contradictory
  labels or positions across the rows of one user.
* **Skipped with a warning** only when the caller asks for ``lenient=True``
  (``--lenient`` on the CLI): the offending post or user is dropped, a warning naming the
  file and line is recorded, and the number of dropped items is reported.
* **Always accepted with a warning**: unknown extra fields (ignored) — nothing is lost
  silently. Blank lines in JSON Lines files are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from advseq.errors import DataError
from advseq.schema import Post, User

POST_FIELDS = ("text", "context", "timestamp", "relevancy")
USER_FIELDS = ("user_id", "label", "posts")


@dataclass
class Problems:
    """Collects or raises problems found while loading one file."""

    path: Path
    lenient: bool = False
    warnings: list[str] = field(default_factory=list)
    skipped_users: int = 0
    skipped_posts: int = 0
    _unknown: set[str] = field(default_factory=set)

    def error(self, problem: str, *, line: int | None = None, row: int | None = None,
              field: str | None = None) -> DataError:
        return DataError(self.path, problem, line=line, row=row, field=field)

    def skip_or_raise(self, err: DataError, what: str) -> None:
        """Raise ``err``, or in lenient mode record it and count a skipped ``what``."""
        if not self.lenient:
            raise err
        self.warnings.append(f"skipped {what}: {err}")
        if what == "user":
            self.skipped_users += 1
        else:
            self.skipped_posts += 1

    def unknown_fields(self, keys: set[str], where: str) -> None:
        new = keys - self._unknown
        if new:
            self._unknown |= new
            self.warnings.append(
                f"{self.path}: ignoring unknown field(s) {', '.join(sorted(new))} (first seen {where})"
            )


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def parse_label(value: Any, problems: Problems, *, field: str = "label", **loc: Any) -> int:
    if isinstance(value, str) and value.strip() in ("0", "1"):
        value = int(value.strip())
    if isinstance(value, bool) or value not in (0, 1) or not is_number(value):
        raise problems.error(f"must be 0 (benign) or 1 (malicious), got {value!r}", field=field, **loc)
    return int(value)


def parse_user_id(value: Any, problems: Problems, *, field: str = "user_id", **loc: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise problems.error(f"must be a string, got {type(value).__name__}", field=field, **loc)
    value = str(value).strip()
    if not value:
        raise problems.error("must not be empty", field=field, **loc)
    return value


def parse_timestamp(value: Any, problems: Problems, *, field: str, **loc: Any) -> float | None:
    """Seconds since the epoch from a number or an ISO-8601 string (naive = UTC)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if is_number(value):
        if not math.isfinite(value):
            raise problems.error(f"must be finite, got {value!r}", field=field, **loc)
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise problems.error(
                f"must be a number of seconds or an ISO-8601 date-time, got {value!r}",
                field=field, **loc) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    raise problems.error(f"must be a number or ISO-8601 string, got {type(value).__name__}",
                         field=field, **loc)


def parse_relevancy(value: Any, problems: Problems, *, field: str, **loc: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise problems.error(f"must be a number, got {value!r}", field=field, **loc) from None
    if not is_number(value) or not math.isfinite(value):
        raise problems.error(f"must be a finite number or null, got {value!r}", field=field, **loc)
    return float(value)


def parse_text(value: Any, problems: Problems, *, field: str, **loc: Any) -> str:
    if not isinstance(value, str):
        raise problems.error(f"must be a string, got {type(value).__name__}", field=field, **loc)
    if not value.strip():
        raise problems.error("empty post text", field=field, **loc)
    return value


def parse_context(value: Any, problems: Problems, *, field: str, **loc: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise problems.error(f"must be a string or null, got {type(value).__name__}",
                             field=field, **loc)
    return value


def parse_post(raw: Any, problems: Problems, *, prefix: str, **loc: Any) -> Post:
    """A post from a JSON object (``prefix`` names it in messages, e.g. ``posts[3]``)."""
    if isinstance(raw, str):
        # A bare string is accepted as a post with no context.
        return Post(parse_text(raw, problems, field=prefix, **loc))
    if not isinstance(raw, dict):
        raise problems.error(f"must be an object with a 'text' field, got {type(raw).__name__}",
                             field=prefix, **loc)
    if "text" not in raw:
        raise problems.error("missing", field=f"{prefix}.text", **loc)
    extra = set(raw) - set(POST_FIELDS)
    if extra:
        problems.unknown_fields({f"posts[].{k}" for k in extra}, _where(problems, loc))
    return Post(
        text=parse_text(raw["text"], problems, field=f"{prefix}.text", **loc),
        context=parse_context(raw.get("context"), problems, field=f"{prefix}.context", **loc),
        timestamp=parse_timestamp(raw.get("timestamp"), problems, field=f"{prefix}.timestamp", **loc),
        relevancy=parse_relevancy(raw.get("relevancy"), problems, field=f"{prefix}.relevancy", **loc),
    )


def parse_user(raw: Any, problems: Problems, **loc: Any) -> User | None:
    """A user from a JSON object; ``None`` if it was skipped (lenient mode only)."""
    try:
        if not isinstance(raw, dict):
            raise problems.error(f"each line must be a JSON object, got {type(raw).__name__}", **loc)
        for key in USER_FIELDS:
            if key not in raw:
                raise problems.error("missing", field=key, **loc)
        extra = set(raw) - set(USER_FIELDS)
        if extra:
            problems.unknown_fields(extra, _where(problems, loc))
        user_id = parse_user_id(raw["user_id"], problems, **loc)
        label = parse_label(raw["label"], problems, **loc)
        raw_posts = raw["posts"]
        if not isinstance(raw_posts, list):
            raise problems.error(f"must be a list of posts, got {type(raw_posts).__name__}",
                                 field="posts", **loc)
        if not raw_posts:
            raise problems.error(f"user {user_id!r} has no posts", field="posts", **loc)
    except DataError as err:
        problems.skip_or_raise(err, "user")
        return None
    posts = []
    for i, rp in enumerate(raw_posts):
        try:
            posts.append(parse_post(rp, problems, prefix=f"posts[{i}]", **loc))
        except DataError as err:
            problems.skip_or_raise(err, "post")
    if not posts:
        problems.skip_or_raise(
            problems.error(f"user {user_id!r} has no valid posts left", field="posts", **loc), "user")
        return None
    return User(user_id, label, tuple(posts))


def _where(problems: Problems, loc: dict[str, Any]) -> str:
    if "line" in loc:
        return f"line {loc['line']}"
    if "row" in loc:
        return f"row {loc['row']}"
    return str(problems.path)
