"""Loading and saving datasets: JSON Lines, CSV/TSV/Parquet long form, PETGEN pickles."""

from __future__ import annotations

import logging
from pathlib import Path

from advseq.errors import DataError
from advseq.io.jsonl import load_jsonl, save_jsonl
from advseq.io.petgen import load_petgen
from advseq.io.tabular import load_table
from advseq.io.validate import Problems
from advseq.schema import Dataset
from advseq.storage import atomic_write_with

log = logging.getLogger("advseq.io")
MAX_LOGGED_WARNINGS = 10

FORMATS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet",
    ".pkl": "petgen", ".pickle": "petgen",
}

__all__ = ["FORMATS", "load_dataset", "save_dataset", "save_jsonl", "detect_format"]

WRITABLE = ("jsonl", "csv", "tsv", "parquet")


def save_dataset(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` in the format its extension names (.jsonl, .csv, .tsv, .parquet),
    atomically; PETGEN pickles are read-only."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt not in WRITABLE:
        raise DataError(path, f"cannot write {path.suffix or 'a file without extension'!r}; "
                              "use .jsonl, .csv, .tsv or .parquet")
    if fmt == "jsonl":
        return save_jsonl(dataset, path)
    from advseq.io.tabular import save_table

    return atomic_write_with(path, lambda tmp: save_table(dataset.users, tmp, fmt))


def detect_format(path: Path) -> tuple[Path, str]:
    """(file or folder to read, format name) for a path given by the user."""
    if not path.exists():
        raise DataError(path, "no such file or folder")
    if path.is_dir():
        if (path / "users.jsonl").is_file():
            return path / "users.jsonl", "jsonl"
        if list(path.glob("*_label.txt")):
            return path, "petgen"
        raise DataError(path, "folder holds neither users.jsonl nor a PETGEN release "
                              "(NAME.pkl + NAME_label.txt ...)")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(path, f"unknown format {path.suffix!r}; use one of "
                              f"{', '.join(sorted(FORMATS))} or a folder")
    return path, fmt


def _default_name(path: Path, fmt: str) -> str:
    if fmt == "petgen":
        from advseq.io.petgen import petgen_name

        return petgen_name(path)[1]
    if path.stem in ("users", "data", "dataset", "train", "test"):
        return path.parent.name or path.stem
    return path.stem


def load_dataset(path: str | Path, *, fmt: str | None = None, lenient: bool = False,
                 name: str | None = None) -> Dataset:
    """Load and validate a dataset.

    ``fmt`` overrides detection by extension (``jsonl``, ``csv``, ``tsv``, ``parquet``,
    ``petgen``). With ``lenient=True`` invalid posts/users are skipped with a warning
    (recorded in ``dataset.warnings``) instead of refused; see :mod:`advseq.io.validate`.
    Raises :class:`~advseq.errors.DataError` naming file, line/row and field.
    """
    path = Path(path)
    target, detected = detect_format(path)
    fmt = fmt or detected
    problems = Problems(target, lenient=lenient)
    if fmt == "jsonl":
        users = load_jsonl(target, problems)
    elif fmt in ("csv", "tsv", "parquet"):
        users = load_table(target, problems, fmt)
    elif fmt == "petgen":
        users = load_petgen(target, problems)
    else:
        raise DataError(path, f"unknown format {fmt!r}")
    if not users:
        raise DataError(target, "no users found")
    ds = Dataset(users, name=name or _default_name(target, fmt), source=str(target))
    ds.warnings = problems.warnings
    ds.skipped = {"users": problems.skipped_users, "posts": problems.skipped_posts}
    for w in problems.warnings[:MAX_LOGGED_WARNINGS]:
        log.warning(w)
    if len(problems.warnings) > MAX_LOGGED_WARNINGS:
        log.warning("... and %d more warnings (all are in dataset.warnings)",
                    len(problems.warnings) - MAX_LOGGED_WARNINGS)
    return ds
