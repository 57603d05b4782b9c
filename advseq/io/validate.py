"""Field-level validation shared by every loader.

Policy (documented in docs/extending.md, "Validation rules"):

* **Refused** (one-line error ``FILE:LINE: field 'F': problem``, exit code 2): unreadable
  or undecodable files, anything but a regular file (a FIFO, a device, a folder where a
  file is expected), malformed JSON, missing or wrongly-typed fields, labels other than
  0/1, duplicate user ids, users with no posts, empty or non-text posts, text holding a
  lone surrogate (not encodable as UTF-8), timestamps that are not finite or fall outside
  the years 1-9999, contradictory labels or positions across the rows of one user.
* **Skipped with a warning** only when the caller asks for ``lenient=True``
  (``--lenient`` on the CLI): the offending post or user is dropped, a warning naming the
  file and line is recorded, and the number of dropped items is reported.
* **Always accepted with a warning**: unknown extra fields (ignored) — nothing is lost
  silently. Blank lines in JSON Lines files are ignored.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from advseq.errors import DataError
from advseq.schema import Post, User

POST_FIELDS = ("text", "context", "timestamp", "relevancy")
USER_FIELDS = ("user_id", "label", "posts")

#: seconds since the epoch of 0001-01-01 and 9999-12-31T23:59:59 UTC: the instants an
#: ISO-8601 date-time can name, so numbers and strings accept the same range
TIMESTAMP_RANGE = (datetime(1, 1, 1, tzinfo=UTC).timestamp(),
                   datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
#: why a dataset holding NaN or infinity is not written (the loaders would refuse it)
NOT_FINITE = "a timestamp or relevancy is NaN or infinite, which advseq cannot read back"
_SURROGATE = re.compile("[\ud800-\udfff]")
#: a character that is neither whitespace nor a control character (NUL, ESC, ...)
_VISIBLE = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]")
_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def open_data(path: Path, mode: str = "rb", **kwargs: Any) -> IO[Any]:
    """Open a data file for reading; anything but a regular file is refused.

    A FIFO would block until a writer appears and a device such as /dev/zero never ends,
    so the file is opened without blocking and checked with ``fstat`` before any read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise DataError(path, f"cannot read file ({err.strerror or err})") from None
    try:
        mode_bits = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode_bits):
            kind = next((name for test, name in _FILE_KINDS if test(mode_bits)), "not a file")
            raise DataError(path, f"is {kind}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


class _ShortRepr(reprlib.Repr):
    """``repr`` cut to a few items and characters; huge integers are described, not
    printed (their decimal form can exceed Python's int-to-str limit)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 2
        self.maxtuple = self.maxlist = self.maxdict = self.maxset = self.maxfrozenset = 4
        self.maxstring = self.maxother = self.maxlong = 60

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 192:
            return f"<a {x.bit_length()}-bit integer>"
        return super().repr_int(x, level)


_short_repr = _ShortRepr()


def show(value: Any) -> str:
    """A value as quoted in an error message: its ``repr``, bounded in length and work
    (shared or self-containing lists do not blow it up), never spanning lines."""
    text = _short_repr.repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


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
                f"{self.path}: ignoring unknown field(s) {', '.join(map(field_name, sorted(new)))} "
                f"(first seen {where})"
            )


def field_name(name: str) -> str:
    """A field name as printed: itself, or its short ``repr`` if it is long or holds
    characters a terminal would act on (newlines, escapes)."""
    return name if name.isprintable() and len(name) <= 40 else show(name)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_finite_number(x: Any) -> bool:
    """A number (not a bool) that is neither NaN, infinite nor too big for a float."""
    return is_number(x) and math.isfinite(_as_float(x))


def parse_label(value: Any, problems: Problems, *, field: str = "label", **loc: Any) -> int:
    if isinstance(value, str) and value.strip() in ("0", "1"):
        value = int(value.strip())
    if isinstance(value, bool) or value not in (0, 1) or not is_number(value):
        raise problems.error(f"must be 0 (benign) or 1 (malicious), got {show(value)}", field=field,
                             **loc)
    return int(value)


def parse_user_id(value: Any, problems: Problems, *, field: str = "user_id", **loc: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise problems.error(f"must be a string, got {type(value).__name__}", field=field, **loc)
    value = str(value).strip()
    if not value:
        raise problems.error("must not be empty", field=field, **loc)
    _check_unicode(value, problems, field=field, **loc)
    return value


def _check_unicode(value: str, problems: Problems, *, field: str, **loc: Any) -> None:
    """Refuse a lone surrogate (JSON's ``"\\ud800"``): it is not text and cannot be written
    back as UTF-8."""
    bad = None if value.isascii() else _SURROGATE.search(value)
    if bad:
        raise problems.error(f"holds a lone surrogate U+{ord(bad.group()):04X} at character "
                             f"{bad.start()}, which is not valid Unicode text", field=field, **loc)


def _as_float(value: int | float) -> float:
    """``float(value)``; infinity for an integer too large for a float."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def parse_timestamp(value: Any, problems: Problems, *, field: str, **loc: Any) -> float | None:
    """Seconds since the epoch from a number, an ISO-8601 string (naive = UTC) or a
    ``datetime`` (Parquet timestamp columns)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        seconds = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    elif is_number(value):
        seconds = _as_float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            seconds = _iso_seconds(value, problems, field=field, **loc)
    else:
        raise problems.error(f"must be a number or ISO-8601 string, got {type(value).__name__}",
                             field=field, **loc)
    if not math.isfinite(seconds) and _names_non_finite(value):
        raise problems.error(f"must be finite, got {show(value)}", field=field, **loc)
    if not TIMESTAMP_RANGE[0] <= seconds <= TIMESTAMP_RANGE[1]:
        raise problems.error(f"must be seconds since the epoch within the years 1-9999, got "
                             f"{show(value)}", field=field, **loc)
    return seconds


def _names_non_finite(value: Any) -> bool:
    """Whether ``value`` is NaN or infinity itself, not a number too big for a float."""
    if isinstance(value, str):
        return any(word in value.lower() for word in ("nan", "inf"))
    return isinstance(value, float)


def _iso_seconds(value: str, problems: Problems, *, field: str, **loc: Any) -> float:
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise problems.error(
            f"must be a number of seconds or an ISO-8601 date-time, got {show(value)}",
            field=field, **loc) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_relevancy(value: Any, problems: Problems, *, field: str, **loc: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise problems.error(f"must be a number, got {show(value)}", field=field,
                                 **loc) from None
    if not is_finite_number(number):
        raise problems.error(f"must be a finite number or null, got {show(value)}", field=field,
                             **loc)
    return float(number)


def parse_text(value: Any, problems: Problems, *, field: str, **loc: Any) -> str:
    if not isinstance(value, str):
        raise problems.error(f"must be a string, got {type(value).__name__}", field=field, **loc)
    first = value[:1]  # usually visible, which settles it without a scan
    if not (first and first.isprintable() and not first.isspace()) and not _VISIBLE.search(value):
        raise problems.error("empty post text", field=field, **loc)
    _check_unicode(value, problems, field=field, **loc)
    return value


def parse_context(value: Any, problems: Problems, *, field: str, **loc: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise problems.error(f"must be a string or null, got {type(value).__name__}",
                             field=field, **loc)
    _check_unicode(value, problems, field=field, **loc)
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


_POST_KEYS = frozenset(POST_FIELDS)


def _visible_start(text: str) -> bool:
    first = text[:1]
    return bool(first) and first.isprintable() and not first.isspace()


def _finite(value: Any) -> float | None:
    """``float(value)`` for a finite float or int (not a bool), else None."""
    kind = type(value)
    if kind is not float and kind is not int:
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def fast_post(raw: Any) -> Post | None:
    """The :class:`Post` of a JSON object that plainly passes every check of
    :func:`parse_post` (known fields only; text starting with a visible character;
    numeric timestamp and relevancy; no lone surrogate), with the same values; None when
    any field needs :func:`parse_post`'s full checks (which then accept it or say why
    not). Builds no field name or set per post: most posts of a large file take this path."""
    if type(raw) is not dict or not raw.keys() <= _POST_KEYS:
        return None
    text = raw.get("text")
    if type(text) is not str or not _visible_start(text) or \
            (not text.isascii() and _SURROGATE.search(text)):
        return None
    context = raw.get("context")
    if context is not None and (type(context) is not str or
                                (not context.isascii() and _SURROGATE.search(context))):
        return None
    timestamp = raw.get("timestamp")
    if timestamp is not None:
        timestamp = _finite(timestamp)
        if timestamp is None or not TIMESTAMP_RANGE[0] <= timestamp <= TIMESTAMP_RANGE[1]:
            return None
    relevancy = raw.get("relevancy")
    if relevancy is not None:
        relevancy = _finite(relevancy)
        if relevancy is None:
            return None
    return Post(text, context, timestamp, relevancy)


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
            raise problems.error(f"user {show(user_id)} has no posts", field="posts", **loc)
    except DataError as err:
        problems.skip_or_raise(err, "user")
        return None
    posts = []
    for i, rp in enumerate(raw_posts):
        post = fast_post(rp)
        if post is not None:
            posts.append(post)
            continue
        try:
            posts.append(parse_post(rp, problems, prefix=f"posts[{i}]", **loc))
        except DataError as err:
            problems.skip_or_raise(err, "post")
    if not posts:
        problems.skip_or_raise(
            problems.error(f"user {show(user_id)} has no valid posts left", field="posts", **loc),
            "user")
        return None
    return User(user_id, label, tuple(posts))


def _where(problems: Problems, loc: dict[str, Any]) -> str:
    if "line" in loc:
        return f"line {loc['line']}"
    if "row" in loc:
        return f"row {loc['row']}"
    return str(problems.path)
