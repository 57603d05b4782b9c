"""The report's document model — headings, paragraphs, tables, figures, details — which
:mod:`advseq.report.render` writes as Markdown and as HTML, and the cell formatting the
sections use."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DASH = "–"

#: (html id, title) of the report's sections, in order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("dataset", "Dataset"),
    ("detectors", "Detectors"),
    ("attack-matrix", "Attack matrix"),
    ("text-quality", "Text quality"),
    ("examples", "Examples"),
    ("cost", "Cost"),
    ("retraining", "Retraining"),
    ("provenance", "Provenance"),
)


# --------------------------------------------------------------------------- formatting

def fmt(x: Any, nd: int = 3) -> str:
    """A number as the tables show it: fixed ``nd`` decimals, ints as they are, None as –."""
    if x is None:
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if x != x:  # NaN
            return DASH
        return f"{x:.{nd}f}"
    return str(x)


def signed(x: float | None, nd: int = 3) -> str:
    return DASH if x is None else f"{x:+.{nd}f}"


def format_params(p: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (p or {}).items())


def ordered(values: Iterable[str], preferred: Sequence[str]) -> list[str]:
    vals = list(dict.fromkeys(values))
    return sorted(vals, key=lambda v: (preferred.index(v) if v in preferred else len(preferred), vals.index(v)))


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


# --------------------------------------------------------------------------- document model

@dataclass
class Heading:
    level: int
    text: str
    id: str = ""


@dataclass
class Para:
    """A paragraph; ``**bold**`` and ```code``` are the only inline markup."""

    text: str
    note: bool = False


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    id: str = ""
    caption: str = ""
    footnotes: list[str] = field(default_factory=list)
    text_cols: tuple[int, ...] = ()        #: columns holding prose (wrapped, left-aligned)
    emphasis_rows: tuple[int, ...] = ()    #: e.g. the real-posts yardstick row


@dataclass
class Figure:
    path: Path
    alt: str
    caption: str
    number: int = 0
    width: int = 0      #: display width in CSS pixels (the PNG has 1.5x that, for sharp screens)


@dataclass
class Details:
    summary: str
    text: str


Block = Heading | Para | Table | Figure | Details


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
