"""Where the keys and tables of a TOML text sit: tomllib gives values, not positions, so
config errors find the line of ``key =`` within its table by reading the text."""

from __future__ import annotations

import re
from collections.abc import Sequence

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
