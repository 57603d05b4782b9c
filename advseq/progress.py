"""Progress bars for long work (rich), silent when not attached to a terminal unless forced.

Descriptions and status texts often quote user names (a run, a unit label); they are
printed as text, never as rich markup, with unsafe characters shown escaped."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from advseq.errors import printable


def progress_enabled(flag: bool | None = None) -> bool:
    """``flag`` wins; else ``$ADVSEQ_PROGRESS`` (0/1); else on when stderr is a terminal."""
    if flag is not None:
        return flag
    env = os.environ.get("ADVSEQ_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return sys.stderr.isatty()


class _Bar:
    def __init__(self, progress: Progress | None, task: Any) -> None:
        self._p, self._t = progress, task

    def advance(self, n: float = 1) -> None:
        if self._p is not None:
            self._p.advance(self._t, n)

    def update(self, **fields: Any) -> None:
        """Set ``total``, ``completed``, ``description`` or ``status`` text."""
        if self._p is not None:
            self._p.update(self._t, **{k: printable(v) if isinstance(v, str) else v
                                       for k, v in fields.items()})


@contextmanager
def progress_bar(description: str, total: float | None, *, enabled: bool | None = None) -> Iterator[_Bar]:
    if not progress_enabled(enabled):
        yield _Bar(None, None)
        return
    columns = (TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
               TextColumn("{task.fields[status]}", markup=False))
    console = Console(stderr=True, markup=False, emoji=False, highlight=False)
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(printable(description), total=total, status="")
        yield _Bar(progress, task)
