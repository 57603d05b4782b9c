"""Shared CLI helpers: consoles, JSON output, warnings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def print_json(obj: Any) -> None:
    """Machine-readable output: JSON on stdout and nothing else there."""
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False))


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
