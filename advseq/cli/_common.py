"""Shared CLI helpers: consoles, JSON output, ``-p key=value`` settings, common options."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.segment import Segment
from rich.text import Span, Text

from advseq.config import show
from advseq.errors import ConfigError, printable


class PlainConsole(Console):
    """A rich console that prints every string as the text it is: no markup (``[/]`` in a
    path is two brackets and a slash), no emoji codes, no highlighting, and unsafe
    characters such as ESC shown escaped (:func:`advseq.errors.printable`). This holds
    for table cells, headers and titles too; style with :func:`styled`, never markup."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text, keep_layout=True), **kwargs)

    def render(self, renderable: Any, options: Any = None) -> Iterable[Segment]:
        # every renderable's words reach the terminal as Text passing through here
        return super().render(_safe_text(renderable) if isinstance(renderable, Text)
                              else renderable, options)


def _safe_text(text: Text) -> Text:
    """``text`` with its unsafe characters escaped and its styles kept (escaped before
    layout, so wrapping and table widths see the escapes)."""
    plain = text.plain
    if printable(plain, keep_layout=True) == plain:
        return text
    cuts = [j for i, c in enumerate(plain) if printable(c, keep_layout=True) != c
            for j in (i, i + 1)]
    safe = text.blank_copy()
    for piece in text.divide(cuts):
        escaped = printable(piece.plain, keep_layout=True)
        if escaped != piece.plain:
            piece = Text(escaped, style=piece.style,
                         spans=[Span(0, len(escaped), span.style) for span in piece.spans])
        safe.append_text(piece)
    return safe


console = PlainConsole()
err_console = PlainConsole(stderr=True)


def styled(text: str, style: str) -> Text:
    """``text`` in a rich style (``"bold red"``), printed as given."""
    return Text(printable(text, keep_layout=True), style=style)


def print_error(message: str, *, prefix: str = "error", style: str = "bold red") -> None:
    """``PREFIX: MESSAGE`` on stderr as exactly one line, however long the message and
    whatever user text it quotes (newlines and escapes in it are shown escaped)."""
    err_console.print(styled(f"{prefix}:", style), printable(message), soft_wrap=True)


def print_json(obj: Any) -> None:
    """Machine-readable output: JSON on stdout and nothing else there."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:      # a lone surrogate in user text: ASCII JSON escapes it
        text = json.dumps(obj, indent=2)
    typer.echo(text)


def parse_params(items: list[str] | None, option: str = "-p") -> dict[str, Any]:
    """``key=value`` pairs (``-p``); values are read as JSON when they parse (numbers,
    true, null, lists, objects), else kept as strings. A malformed pair, a key given twice,
    an integer too long to read or JSON nested too deep is refused naming the key; the
    values' types and ranges are checked by the detector or attack that takes them."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{option}: expects key=value, got {show(item)}")
        if key in out:
            raise ConfigError(f"{option} {key}: given twice")
        try:
            out[key] = json.loads(raw)
        except RecursionError:
            raise ConfigError(f"{option} {key}: value nested too deep") from None
        except json.JSONDecodeError:
            out[key] = raw
        except ValueError:     # an integer of more digits than Python reads
            raise ConfigError(f"{option} {key}: an integer too long to read (more than "
                              f"{sys.get_int_max_str_digits()} digits)") from None
    return out


def load(path: Path, *, lenient: bool = False, fmt: str | None = None):  # -> Dataset
    from advseq.io import load_dataset

    return load_dataset(path, lenient=lenient, fmt=fmt)  # warnings go to the log (stderr)


DataArg = typer.Argument(
    help="Dataset: a .jsonl/.csv/.tsv/.parquet file, a PETGEN release folder or .pkl, "
         "or a folder holding users.jsonl.",
    show_default=False,
)
LenientOpt = typer.Option("--lenient", help="Skip invalid posts/users with a warning instead of "
                                            "refusing the file.")
FormatOpt = typer.Option("--format", help="Override format detection: jsonl, csv, tsv, parquet, petgen.")
ProgressOpt = typer.Option("--progress/--no-progress",
                           help="Show progress bars (default: when on a terminal).")
DeployedOpt = typer.Option("--detector", "-d",
                           help="Model folder of the deployed detector (from `advseq train`).")
DeviceOpt = typer.Option("--device", help="Where torch work runs: cpu (default), cuda, cuda:N, mps, "
                                          "or auto (cuda when torch sees a GPU).", show_default=False)


def checked_device(device: str | None, option: str = "--device") -> str | None:
    """A ``--device`` value checked against this machine (``auto`` resolved); None as None."""
    from advseq.device import check_device

    return None if device is None else check_device(device, option)
