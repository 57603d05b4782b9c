"""Exceptions a user can act on.

Every error advseq raises on bad input is an :class:`AdvseqError`; the CLI prints its
message on one line and exits non-zero, never with a traceback. Messages quote user text
(paths, ids, labels) as given; :func:`printable` is what makes it safe to print.
"""

from __future__ import annotations

import re
from pathlib import Path

# Characters that move the cursor, recolour or clear the terminal (C0/C1 controls, ESC),
# break or reorder a line (line/paragraph separators, bidirectional marks and overrides)
# or cannot be encoded (lone surrogates).
_BEYOND_C0 = r"\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(rf"[\x00-\x1f{_BEYOND_C0}]")
_UNSAFE_BUT_LAYOUT = re.compile(rf"[\x00-\x08\x0b-\x1f{_BEYOND_C0}]")    # keeps \t and \n


def printable(text: str, *, keep_layout: bool = False) -> str:
    """``text`` with every unsafe character shown as its Python escape (``\\n``,
    ``\\x1b``, ``\\u202e``), so user text printed to a terminal stays on its line and
    cannot emit escape sequences. ``keep_layout`` keeps newlines and tabs (multi-line
    output such as tables)."""
    pattern = _UNSAFE_BUT_LAYOUT if keep_layout else _UNSAFE
    return pattern.sub(lambda m: repr(m.group())[1:-1], text)


class AdvseqError(Exception):
    """Base class: an error whose message is meant for the user, not a developer."""

    exit_code = 2


class DataError(AdvseqError):
    """Invalid input data, located as precisely as the format allows.

    The message reads ``FILE:LINE: field 'FIELD': PROBLEM`` (``row`` instead of ``line``
    for tabular files), so editors and terminals can jump to the spot.
    """

    def __init__(
        self,
        path: str | Path | None,
        problem: str,
        *,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        self.line = line
        self.row = row
        self.field = field
        super().__init__(self.format())

    def format(self) -> str:
        where = self.path or "<data>"
        if self.line is not None:
            where += f":{self.line}"
        elif self.row is not None:
            where += f": row {self.row}"
        if self.field is not None:
            return f"{where}: field '{self.field}': {self.problem}"
        return f"{where}: {self.problem}"


class ConfigError(AdvseqError):
    """A bad option, config value or combination of options."""


class ResourceMissing(AdvseqError):
    """An optional offline resource (model weights, WordNet, ...) is not installed."""


class CapabilityError(AdvseqError):
    """An attack asked for a capability (label/score/gradient) the threat model withholds."""


class QueryBudgetExceeded(AdvseqError):
    """A black-box attack used up its query budget for a user."""

    def __init__(self, user_id: str, budget: int) -> None:
        self.user_id = user_id
        self.budget = budget
        super().__init__(f"query budget of {budget} exhausted for user {user_id!r}")
