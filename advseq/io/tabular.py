"""Long-form tables (CSV, TSV, Parquet): one row per post.

Columns: ``user_id``, ``label``, ``text``, and ``position`` and/or ``timestamp`` to order
each user's posts (oldest first); optional ``context`` and ``relevancy``. Every row of a
user must carry the same label.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advseq.errors import DataError
from advseq.io.validate import (
    NOT_FINITE,
    Problems,
    field_name,
    open_data,
    parse_context,
    parse_label,
    parse_relevancy,
    parse_text,
    parse_timestamp,
    parse_user_id,
    show,
)
from advseq.schema import Post, User

REQUIRED = ("user_id", "label", "text")
KNOWN = ("user_id", "label", "text", "context", "position", "timestamp", "relevancy")
#: longest CSV field read (characters): an unclosed quote swallowing a big file stops here
MAX_FIELD_CHARS = 16 * 2**20
#: a Parquet file may take this many times its size in memory (or PARQUET_MIN_BUDGET
#: bytes): tables of posts compress a few times, a "compression bomb" thousands of times
PARQUET_EXPANSION = 100
PARQUET_MIN_BUDGET = 256 * 2**20
#: positions beyond this cannot all be told apart as floats, so they are refused
MAX_POSITION = 2**53


@dataclass
class _Pending:
    label: int
    first_loc: dict[str, int]
    posts: list[tuple[float, float, Post, dict[str, int]]] = field(default_factory=list)


def _check_columns(columns: list[str], problems: Problems, **loc: Any) -> None:
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        shown = ", ".join(field_name(c) for c in columns[:12])
        more = f" and {len(columns) - 12} more" if len(columns) > 12 else ""
        raise problems.error(f"missing column(s) {', '.join(missing)}; found {shown}{more} "
                             "(is this a long-form table with a header row?)", **loc)
    if "position" not in columns and "timestamp" not in columns:
        raise problems.error("needs a 'position' or 'timestamp' column to order each user's posts",
                             **loc)
    seen: set[str] = set()
    twice = next((c for c in columns if c in seen or seen.add(c)), None)
    if twice is not None:
        raise problems.error(f"column {show(twice)} appears twice", **loc)
    extra = [c for c in columns if c not in KNOWN]
    if extra:
        problems.unknown_fields(set(extra), "header")


def _csv_rows(path: Path, problems: Problems, delimiter: str) -> Iterator[tuple[dict[str, int], dict[str, Any]]]:
    csv.field_size_limit(MAX_FIELD_CHARS)
    with open_data(path, "r", encoding="utf-8-sig", newline="") as fh:
        # strict: a quote that is never closed is an error, not a field running to the end
        reader = csv.reader(fh, delimiter=delimiter, strict=True)
        start = 1  # line on which the record being read begins
        try:
            header = next(reader, None)
            if header is None:
                raise problems.error("empty file (no header row)", line=1)
            header = [h.strip() for h in header]
            _check_columns(header, problems, line=1)
            start = reader.line_num + 1
            for cells in reader:
                loc = {"line": start}
                start = reader.line_num + 1
                if not cells or all(not c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    problems.skip_or_raise(problems.error(
                        f"has {len(cells)} cells, the header has {len(header)}", **loc), "post")
                    continue
                yield loc, {k: (v if v != "" else None) for k, v in zip(header, cells, strict=True)}
        except UnicodeDecodeError as err:
            raise DataError(path, f"not valid UTF-8 ({err.reason}) after line {reader.line_num}") from None
        except csv.Error as err:
            raise _csv_error(path, str(err), start, reader.line_num, delimiter) from None


def _csv_error(path: Path, message: str, start: int, line: int, delimiter: str) -> DataError:
    if "unexpected end of data" in message:
        opened = _unclosed_quote_line(path, start, delimiter)
        return DataError(path, "a quote opens here and is never closed (every later row would "
                               "become part of one field)", line=opened)
    if "field larger than field limit" in message:
        return DataError(path, f"a field longer than {MAX_FIELD_CHARS:,} characters (a quote "
                               "that is never closed?)", line=start)
    if "expected after" in message:
        return DataError(path, "a quoted field continues after its closing quote (write a quote "
                               'inside a quoted field as "")', line=line)
    return DataError(path, f"malformed CSV ({message})", line=line)


def _unclosed_quote_line(path: Path, start: int, delimiter: str) -> int:
    """The line of the quote left open in the CSV record beginning on line ``start``."""
    at_field_start, in_quotes, quote_seen, opened = True, False, False, start
    with open_data(path, "r", encoding="utf-8-sig", newline="") as fh:
        for lineno, text in enumerate(fh, start=1):
            if lineno < start:
                continue
            for ch in text:
                if in_quotes:
                    if quote_seen:  # "" is a literal quote; anything else ends the field
                        quote_seen, in_quotes = False, ch == '"'
                        if not in_quotes:
                            at_field_start = ch in (delimiter, "\r", "\n")
                    elif ch == '"':
                        quote_seen = True
                elif at_field_start and ch == '"':
                    in_quotes, opened = True, lineno
                else:
                    at_field_start = ch in (delimiter, "\r", "\n")
    return opened


def _parquet_rows(path: Path, problems: Problems) -> Iterator[tuple[dict[str, int], dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open_data(path) as fh:
        try:
            schema = pq.ParquetFile(fh).schema_arrow
            _check_columns(schema.names, problems)
            known = [c for c in schema.names if c in KNOWN]  # the others are ignored anyway
            nested = next((c for c in known if pa.types.is_nested(schema.field(c).type)), None)
            if nested is not None:
                raise problems.error(f"column {show(nested)} holds {schema.field(nested).type} "
                                     "values; expected strings or numbers")
            # strings stay dictionary-encoded until their decoded size is known to be sane
            texts = [c for c in known if pa.types.is_string(schema.field(c).type)
                     or pa.types.is_binary(schema.field(c).type)]
            fh.seek(0)
            parquet = pq.ParquetFile(fh, read_dictionary=texts)
            budget = max(PARQUET_MIN_BUDGET, PARQUET_EXPANSION * os.fstat(fh.fileno()).st_size)
            if parquet.metadata.num_rows * 8 * max(len(known), 1) > budget:
                raise _too_big(path, budget)
            table = parquet.read(columns=known)
        except DataError:
            raise
        except Exception as err:  # pyarrow raises several unrelated types for bad files
            reason = " ".join(str(err).split())[:200]
            raise DataError(path, f"cannot read Parquet file ({reason})") from None
    if _decoded_bytes(table) > budget:
        raise _too_big(path, budget)
    try:
        data = {c: table.column(c).to_pylist() for c in known}
    except (ValueError, OverflowError) as err:  # e.g. a timestamp past the year 9999
        raise DataError(path, f"cannot read the column values ({' '.join(str(err).split())[:200]})"
                        ) from None
    for i in range(table.num_rows):
        yield {"row": i + 1}, {c: data[c][i] for c in known}


def _decoded_bytes(table: Any) -> int:
    """Bytes the table's columns take once dictionary-encoded strings are expanded."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    for column in table.columns:
        for chunk in column.chunks:
            if pa.types.is_dictionary(chunk.type):
                lengths = pc.binary_length(chunk.dictionary).take(chunk.indices)
                total += (pc.sum(lengths).as_py() or 0) + 8 * len(chunk)
            else:
                total += chunk.nbytes
    return total


def _too_big(path: Path, budget: int) -> DataError:
    return DataError(path, f"Parquet data expands to more than {budget:,} bytes in memory "
                           f"({PARQUET_EXPANSION} times the file; a compression bomb?)")


def load_table(path: Path, problems: Problems, kind: str) -> list[User]:
    if kind == "parquet":
        rows = _parquet_rows(path, problems)
    else:
        rows = _csv_rows(path, problems, "\t" if kind == "tsv" else ",")
    pending: dict[str, _Pending] = {}
    bad_users: set[str] = set()
    for loc, row in rows:
        try:
            uid = parse_user_id(_required(row, "user_id", problems, loc), problems, **loc)
        except DataError as err:
            problems.skip_or_raise(err, "post")
            continue
        if uid in bad_users:
            continue
        try:
            label = parse_label(_required(row, "label", problems, loc), problems, **loc)
            entry = pending.get(uid)
            if entry is not None and entry.label != label:
                raise problems.error(
                    f"user {show(uid)} has label {entry.label} on {_fmt(entry.first_loc)} "
                    f"but {label} here", field="label", **loc)
        except DataError as err:
            problems.skip_or_raise(err, "user")
            bad_users.add(uid)
            pending.pop(uid, None)
            continue
        try:
            text = parse_text(row.get("text") or "", problems, field="text", **loc)
            ts = parse_timestamp(row.get("timestamp"), problems, field="timestamp", **loc)
            pos_raw = row.get("position")
            position = _parse_position(pos_raw, problems, **loc)
            if position is None and ts is None:
                raise problems.error("needs a position or a timestamp", field="position", **loc)
            post = Post(
                text=text,
                context=parse_context(row.get("context"), problems, field="context", **loc),
                timestamp=ts,
                relevancy=parse_relevancy(row.get("relevancy"), problems, field="relevancy", **loc),
            )
        except DataError as err:
            problems.skip_or_raise(err, "post")
            continue
        if entry is None:
            entry = pending[uid] = _Pending(label, loc)
        key = position if position is not None else ts
        entry.posts.append((key, ts if ts is not None else 0.0, post, loc))

    users = []
    for uid, entry in pending.items():
        entry.posts.sort(key=lambda t: (t[0], t[1]))
        dup = next((b for a, b in zip(entry.posts, entry.posts[1:], strict=False) if a[0] == b[0]), None)
        if dup is not None:
            problems.skip_or_raise(problems.error(
                f"user {show(uid)} has two posts at position/timestamp {dup[0]:g}",
                field="position", **dup[3]), "user")
            continue
        users.append(User(uid, entry.label, tuple(p[2] for p in entry.posts)))
    return users


def _parse_position(value: Any, problems: Problems, **loc: Any) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        raise problems.error(f"must be an integer, got {show(value)}", field="position",
                             **loc) from None
    if not f.is_integer():
        raise problems.error(f"must be an integer, got {show(value)}", field="position", **loc)
    if abs(f) > MAX_POSITION:
        raise problems.error(f"must be between -2**53 and 2**53, got {show(value)}",
                             field="position", **loc)
    return f


def _required(row: dict[str, Any], key: str, problems: Problems, loc: dict[str, int]) -> Any:
    if row.get(key) is None:
        raise problems.error("missing", field=key, **loc)
    return row[key]


def _fmt(loc: dict[str, int]) -> str:
    return f"line {loc['line']}" if "line" in loc else f"row {loc['row']}"


def save_table(users: Iterator[User] | list[User], path: Path, kind: str) -> None:
    """Write users as a long-form table (one row per post, ``position`` from 0), the
    format :func:`load_table` reads; ``kind`` is ``csv``, ``tsv`` or ``parquet``."""
    rows = [{"user_id": u.user_id, "label": u.label, "position": i, "text": p.text,
             "context": p.context, "timestamp": p.timestamp, "relevancy": p.relevancy}
            for u in users for i, p in enumerate(u.posts)]
    bad = next((r for r in rows for k in ("timestamp", "relevancy")
                if r[k] is not None and not math.isfinite(r[k])), None)
    if bad is not None:
        raise DataError(path, f"user {show(bad['user_id'])}: {NOT_FINITE}")
    columns = ["user_id", "label", "position", "text", "context", "timestamp", "relevancy"]
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([
            ("user_id", pa.string()), ("label", pa.int64()), ("position", pa.int64()), ("text", pa.string()),
            ("context", pa.string()), ("timestamp", pa.float64()), ("relevancy", pa.float64())])), path)
        return
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, columns, delimiter="\t" if kind == "tsv" else ",")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else repr(v) if isinstance(v, float) else v)
                             for k, v in row.items()})
