"""JSON Lines: one user per line, ``{"user_id", "label", "posts": [{"text", "context",
"timestamp"?, "relevancy"}]}`` — the shape of ../shared/data and of advseq's own output."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from advseq.errors import DataError
from advseq.io.validate import Problems, parse_user
from advseq.schema import Dataset, User


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) pairs; undecodable bytes are reported with their line."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as err:
        raise DataError(path, f"cannot read file ({err.strerror or err})") from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(path, f"not valid UTF-8 ({err.reason} at byte {err.start})",
                                line=lineno) from None


def load_jsonl(path: Path, problems: Problems) -> list[User]:
    users: list[User] = []
    seen: dict[str, int] = {}
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        if lineno == 1 and line.startswith("\ufeff"):
            line = line[1:]
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as err:
            problems.skip_or_raise(
                problems.error(f"malformed JSON ({err.msg} at column {err.colno})", line=lineno),
                "user")
            continue
        user = parse_user(raw, problems, line=lineno)
        if user is None:
            continue
        if user.user_id in seen:
            problems.skip_or_raise(
                problems.error(f"duplicate user id {user.user_id!r} (first on line "
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
            for line in dataset.to_jsonl():
                fh.write(line + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
