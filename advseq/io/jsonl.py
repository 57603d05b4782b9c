"""JSON Lines: one user per line, ``{"user_id", "label", "posts": [{"text", "context",
"timestamp"?, "relevancy"}]}`` — the shape of ../shared/data and of advseq's own output."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from advseq.errors import DataError
from advseq.io.validate import NOT_FINITE, Problems, field_name, open_data, parse_user, show
from advseq.schema import Dataset, User

#: longest line read (bytes, newline included): a bigger one is refused, not held in memory
MAX_LINE_BYTES = 16 * 2**20


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) pairs; undecodable bytes are reported with their line."""
    with open_data(path) as fh:
        lineno = 0
        while raw := fh.readline(MAX_LINE_BYTES + 1):
            lineno += 1
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(path, f"line longer than {MAX_LINE_BYTES:,} bytes", line=lineno)
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(path, f"not valid UTF-8 ({err.reason} at byte {err.start})",
                                line=lineno) from None


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; a key given twice is refused (JSON would keep the last
    silently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def parse_json_line(line: str, problems: Problems, lineno: int) -> Any:
    """One line's JSON value; every way it can fail becomes a located DataError."""
    try:
        return _DECODER.decode(line)
    except json.JSONDecodeError as err:
        problem = f"malformed JSON ({err.msg} at column {err.colno})"
    except _DuplicateKey as err:
        raise problems.error("appears twice in one JSON object", line=lineno,
                             field=field_name(err.key)) from None
    except RecursionError:
        problem = "malformed JSON (arrays or objects nested too deeply)"
    except ValueError as err:  # an integer longer than Python converts from text
        problem = f"malformed JSON ({str(err)[:100]})"
        if "integer string conversion" in str(err):
            digits = sys.get_int_max_str_digits()
            problem = f"malformed JSON (a number has more than {digits} digits)"
    raise problems.error(problem, line=lineno)


def load_jsonl(path: Path, problems: Problems) -> list[User]:
    users: list[User] = []
    seen: dict[str, int] = {}
    for lineno, line in read_lines(path):
        if lineno == 1 and line.startswith("\ufeff"):
            line = line[1:]
        if not line.strip():
            continue
        try:
            raw = parse_json_line(line, problems, lineno)
        except DataError as err:
            problems.skip_or_raise(err, "user")
            continue
        user = parse_user(raw, problems, line=lineno)
        if user is None:
            continue
        if user.user_id in seen:
            problems.skip_or_raise(
                problems.error(f"duplicate user id {show(user.user_id)} (first on line "
                               f"{seen[user.user_id]})", line=lineno, field="user_id"), "user")
            continue
        seen[user.user_id] = lineno
        users.append(user)
    return users


def save_jsonl(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` as JSON Lines atomically (a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            try:
                for line in dataset.to_jsonl():
                    fh.write(line + "\n")
            except UnicodeEncodeError:
                raise DataError(path, "cannot write text holding a lone surrogate") from None
            except ValueError:  # json.dumps(allow_nan=False)
                raise DataError(path, NOT_FINITE) from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
