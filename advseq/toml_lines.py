"""Reading a TOML config file, and where its keys and tables sit: tomllib gives values,
not positions, so config errors find the line of ``key =`` within its table by reading
the text."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from advseq.errors import ConfigError
from advseq.storage import one_line

#: the largest run config read (a config is a few hundred bytes)
MAX_CONFIG_BYTES = 1 << 20

_BARE = r'(?:"(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_-]+)'
_DOTTED = rf"{_BARE}(?:\s*\.\s*{_BARE})*"
_ARRAY_HEADER = re.compile(rf"\[\[\s*({_DOTTED})\s*\]\]")
_TABLE_HEADER = re.compile(rf"\[\s*({_DOTTED})\s*\]")
_KEY_LINE = re.compile(rf"({_DOTTED})\s*=")
_PART = re.compile(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)')

Section = tuple[str, int | None, tuple[str, ...]]


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(next(g for g in m.groups() if g is not None) for m in _PART.finditer(dotted))


class TomlLines:
    """The line of each table header and key of a TOML text, found by reading the text
    (tomllib gives no positions): best effort, exact for ordinary files."""

    def __init__(self, text: str) -> None:
        self._lines: dict[Section, int] = {}
        self._first: dict[str, int] = {}          # table -> its first header or key
        arrays: dict[str, int] = {}
        section: tuple[str | None, int | None, tuple[str, ...]] = (None, None, ())
        open_quote: str | None = None
        for no, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if open_quote is not None:                       # inside a multi-line string
                if line.count(open_quote) % 2:
                    open_quote = None
                continue
            if (m := _ARRAY_HEADER.match(line)) is not None:
                top, *rest = _parts(m.group(1))
                if not rest:
                    arrays[top] = arrays.get(top, -1) + 1
                section = (top, arrays.get(top), tuple(rest))
                self._lines.setdefault(section, no)          # type: ignore[arg-type]
                self._first.setdefault(top, no)
            elif (m := _TABLE_HEADER.match(line)) is not None:
                top, *rest = _parts(m.group(1))
                section = (top, arrays.get(top), tuple(rest))
                self._lines.setdefault(section, no)          # type: ignore[arg-type]
                self._first.setdefault(top, no)
            elif (m := _KEY_LINE.match(line)) is not None:
                key = _parts(m.group(1))
                table, index, sub = section
                where = (key[0], None, key[1:]) if table is None else (table, index, sub + key)
                self._lines.setdefault(where, no)
                self._first.setdefault(where[0], no)
                for quote in ('"""', "'''"):
                    if raw.count(quote) % 2:
                        open_quote = quote

    def line(self, table: str, index: int | None = None, path: Sequence[str] = ()) -> int | None:
        """The line of ``path`` (a dotted key) in ``table`` (item ``index`` of an array of
        tables), else of the nearest enclosing key or header that is there."""
        path = tuple(path)
        while True:
            no = self._lines.get((table, index, path))
            if no is not None:
                return no
            if not path:
                return self._first.get(table) if index is None else None
            path = path[:-1]


def read_config_text(path: Path) -> str:
    """The text of the TOML file ``path``; a :class:`ConfigError` when it is missing, not
    a regular file, too large or not UTF-8 (with the line of the first bad byte)."""
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MB; not a run config")
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte {data[err.start]:#04x})") from None


def parse_toml(path: Path, text: str) -> dict[str, Any]:
    """``tomllib.loads(text)``, its errors located: ``FILE:LINE:COL: invalid TOML: ...``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        msg = str(err)
        at = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        if at:
            raise ConfigError(f"{path}:{at.group(1)}:{at.group(2)}: invalid TOML: "
                              f"{msg[:at.start()]}") from None
        raise ConfigError(f"{path}: invalid TOML: {one_line(msg)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deep") from None
    except ValueError as err:   # an integer too long to convert
        long = re.search(r"\d{4000,}", text)
        line = f":{text.count(chr(10), 0, long.start()) + 1}" if long else ""
        raise ConfigError(f"{path}{line}: invalid TOML: {one_line(err, 120)}") from None
