"""Hostile data files given to ``advseq data validate/info/convert``.

Every case is generated at test time into ``tmp_path`` (small files). A refused case must
exit 2 with exactly one line on stderr that names the culprit file (and line, row and
field where the format has them), never a traceback or an "internal error", and
``convert`` must write nothing. An accepted case must load, and ``convert`` must write
only OUT and round-trip. Cases that used to hang (FIFOs, /dev/zero) run the console
script in a subprocess with a timeout. PETGEN pickle cases are in test_petgen_pickle.py,
which uses the checks defined here.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advseq.cli import app
from advseq.errors import DataError
from advseq.io import load_dataset, save_dataset
from advseq.schema import Dataset, Post, User

runner = CliRunner()
#: seconds a subprocess CLI call may take (interpreter start included)
SUBPROCESS_LIMIT = 60
#: every case is tiny data: a test still running after this many seconds hangs
pytestmark = pytest.mark.timeout(180)

Content = bytes | str | Callable[[], bytes]


@dataclass(frozen=True)
class Case:
    """Files to write, the CLI argument, and where the error must point (None: accepted)."""

    id: str
    files: dict[str, Content]
    where: str | None  # text right after the culprit's path in the error line
    arg: str = ""  # default: the first file
    culprit: str = ""  # file the error names; default: ``arg``
    users: int | None = None  # accepted cases: how many users load

    def write(self, root: Path) -> Path:
        for name, content in self.files.items():
            data = content() if callable(content) else content
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return root / (self.arg or next(iter(self.files)))

    def culprit_path(self, root: Path) -> Path:
        return root / (self.culprit or self.arg or next(iter(self.files)))


def user(uid: str = "a", label: object = 0, *posts: object, **extra: object) -> str:
    return json.dumps({"user_id": uid, "label": label, "posts": list(posts or ["hi"]), **extra})


GOOD = user("a", 0, {"text": "hello"}) + "\n"
GOOD_B = user("b", 1, {"text": "buy now"}) + "\n"
HEADER = "user_id,label,position,text\n"


def jsonl(case_id: str, text: str, where: str | None, **kw: object) -> Case:
    return Case(case_id, {f"{case_id}.jsonl": text}, where, **kw)


def table(case_id: str, text: str, where: str | None, ext: str = "csv", **kw: object) -> Case:
    return Case(case_id, {f"{case_id}.{ext}": text}, where, **kw)


def raw(label: str = "0", post: str = '"hi"', uid: str = '"a"') -> str:
    """One JSON line assembled from raw JSON text, for values json.dumps cannot write."""
    return '{"user_id": ' + uid + ', "label": ' + label + ', "posts": [' + post + "]}\n"


def post_field(name: str, raw_value: str, where: str | None, *, key: str = "timestamp") -> Case:
    """A user whose one post carries ``key`` set to ``raw_value`` (raw JSON text)."""
    return jsonl(name, raw(post='{"text": "hi", "' + key + '": ' + raw_value + "}"), where)


DEEP = 10_000
TS = ":1: field 'posts[0].timestamp'"
BIG = "1" * 5000  # past Python's 4300-digit int-from-text limit
LARGE = "9" * 4000  # under it, yet far too big for a float

JSONL_CASES = [
    jsonl("deep_array", '{"user_id": "a", "label": 0, "posts": [{"text": "hi", "context": '
          + "[" * DEEP + "]" * DEEP + "}]}\n", ":1: malformed JSON (arrays or objects nested too"),
    jsonl("deep_object", '{"user_id": "a", "label": 0, "posts": ["hi"], "x": ' + '{"a": ' * DEEP
          + "1" + "}" * DEEP + "}\n", ":1: malformed JSON (arrays or objects nested too deeply)"),
    jsonl("bigint_label", GOOD + raw(BIG, uid='"b"'),
          ":2: malformed JSON (a number has more than 4300 digits)"),
    post_field("bigint_timestamp", BIG, ":1: malformed JSON (a number has more than 4300 digits)"),
    post_field("large_int_timestamp", LARGE, ":1: field 'posts[0].timestamp': must be seconds "
               "since the epoch within the years 1-9999, got <a "),
    post_field("large_int_relevancy", LARGE, ":1: field 'posts[0].relevancy': must be a finite",
               key="relevancy"),
    jsonl("large_int_label", raw(LARGE),
          ":1: field 'label': must be 0 (benign) or 1 (malicious), got <a 13288-bit integer>"),
    jsonl("surrogate_text", '{"user_id": "a", "label": 0, "posts": [{"text": "hi \\ud800"}]}\n',
          ":1: field 'posts[0].text': holds a lone surrogate U+D800 at character 3"),
    jsonl("surrogate_low_first", '{"user_id": "a", "label": 0, "posts": ["\\udc00\\ud800"]}\n',
          ":1: field 'posts[0]': holds a lone surrogate U+DC00 at character 0"),
    jsonl("surrogate_context", '{"user_id": "a", "label": 0, "posts": [{"text": "t", '
          '"context": "\\udfff"}]}\n', ":1: field 'posts[0].context': holds a lone surrogate"),
    jsonl("surrogate_user_id", '{"user_id": "\\ud83d", "label": 0, "posts": ["t"]}\n',
          ":1: field 'user_id': holds a lone surrogate U+D83D"),
    post_field("timestamp_nan_text", '"NaN"', f"{TS}: must be finite, got 'NaN'"),
    post_field("timestamp_inf_text", '"-Infinity"', f"{TS}: must be finite, got '-Infinity'"),
    post_field("timestamp_nan_bare", "NaN", f"{TS}: must be finite, got nan"),
    post_field("timestamp_inf_bare", "Infinity", ":1: field 'posts[0].timestamp': must be finite"),
    post_field("timestamp_1e300", "1e300", ":1: field 'posts[0].timestamp': must be seconds since "
               "the epoch within the years 1-9999, got 1e+300"),
    post_field("timestamp_bool", "true", ":1: field 'posts[0].timestamp': must be a number or "
               "ISO-8601 string, got bool"),
    post_field("timestamp_5000_digit_text", f'"{BIG}"', f"{TS}: must be seconds since the epoch "
               "within the years 1-9999, got '1111"),
    post_field("relevancy_5000_digit_text", f'"{BIG}"', ":1: field 'posts[0].relevancy': must be "
               "a finite number or null, got '1111", key="relevancy"),
    jsonl("only_bom", "\ufeff\n", ": no users found"),
    Case("json_array_file", {"users.json": "[" + GOOD.strip() + "]\n"},
         ":1: each line must be a JSON object, got list"),
    jsonl("post_null", raw(post="null"), ":1: field 'posts[0]': must be an object with a 'text' "
          "field, got NoneType"),
    post_field("relevancy_nan", "NaN", ":1: field 'posts[0].relevancy': must be a finite number",
               key="relevancy"),
    jsonl("label_1_5", user("a", 1.5) + "\n", ":1: field 'label': must be 0 (benign) or 1 "
          "(malicious), got 1.5"),
    jsonl("label_text_1_0", user("a", "1.0") + "\n", ":1: field 'label': must be 0 (benign) or 1 "
          "(malicious), got '1.0'"),
    jsonl("label_null", user("a", None) + "\n", ":1: field 'label': must be 0 (benign) or 1"),
    jsonl("label_nan", raw("NaN"),
          ":1: field 'label': must be 0 (benign) or 1 (malicious), got nan"),
    jsonl("user_id_empty", user("") + "\n", ":1: field 'user_id': must not be empty"),
    jsonl("user_id_blank", user(" \t ") + "\n", ":1: field 'user_id': must not be empty"),
    jsonl("user_id_null", '{"user_id": null, "label": 0, "posts": ["x"]}\n',
          ":1: field 'user_id': must be a string, got NoneType"),
    jsonl("duplicate_key_label", GOOD + raw('0, "label": 1', uid='"b"'),
          ":2: field 'label': appears twice in one JSON object"),
    jsonl("duplicate_key_text", raw(post='{"text": "x", "text": "y"}'),
          ":1: field 'text': appears twice in one JSON object"),
    jsonl("text_only_nul", GOOD + user("b", 1, {"text": "\u0000"}) + "\n",
          ":2: field 'posts[0].text': empty post text"),
    jsonl("text_only_controls", user("a", 0, {"text": "\u001b\u0007 \u007f"}) + "\n",
          ":1: field 'posts[0].text': empty post text"),
    jsonl("raw_nul_byte", '{"user_id": "a", "label": 0, "posts": ["x\x00y"]}\n',
          ":1: malformed JSON (Invalid control character at"),
    jsonl("bom_on_line_2", GOOD + "\ufeff" + GOOD_B, ":2: malformed JSON"),
    jsonl("truncated_last_line", GOOD + GOOD_B[:25], ":2: malformed JSON"),
    jsonl("posts_object", '{"user_id": "a", "label": 0, "posts": {}}\n',
          ":1: field 'posts': must be a list of posts, got dict"),
    Case("not_utf8", {"not_utf8.jsonl": GOOD.encode() + b'{"user_id": "\xff"}\n'},
         ":2: not valid UTF-8 (invalid start byte at byte 13)"),
]

CSV_CASES = [
    table("csv_unclosed_quote", HEADER + 'a,0,1,"oops\nb,1,1,x\nc,0,1,y\n',
          ":2: a quote opens here and is never closed"),
    table("csv_unclosed_quote_after_multiline", HEADER + 'a,0,1,"two\nlines"\nb,1,1,x\n'
          'c,0,1,"oops\nd,1,1,y\n', ":5: a quote opens here and is never closed"),
    table("csv_unclosed_quote_escaped", HEADER + 'a,0,1,"say ""hi""\nb,1,1,x\n',
          ":2: a quote opens here and is never closed"),
    table("tsv_unclosed_quote", "user_id\tlabel\tposition\ttext\na\t0\t1\tok\nb\t1\t1\t\"oops\n",
          ":3: a quote opens here and is never closed", ext="tsv"),
    table("csv_text_after_quote", HEADER + 'a,0,1,"x"y\n',
          ":2: a quoted field continues after its closing quote"),
    table("csv_timestamp_nan", "user_id,label,timestamp,text\na,0,NaN,x\n",
          ":2: field 'timestamp': must be finite, got 'NaN'"),
    table("csv_timestamp_inf", "user_id,label,timestamp,text\na,0,1,x\na,0,inf,y\n",
          ":3: field 'timestamp': must be finite, got 'inf'"),
    table("csv_position_1e400", HEADER + "a,0,1e400,x\n", ":2: field 'position': must be an "
          "integer, got '1e400'"),
    table("csv_position_2_60", HEADER + f"a,0,{2**60},x\na,0,{2**60 + 1},y\n",
          ":2: field 'position': must be between -2**53 and 2**53"),
    table("csv_position_5000_digits", HEADER + f"a,0,{BIG},x\n",
          ":2: field 'position': must be an integer, got '1111"),
    table("csv_position_fraction", HEADER + "a,0,1.5,x\n",
          ":2: field 'position': must be an integer, got '1.5'"),
    table("csv_label_1_0", HEADER + "a,1.0,1,x\n", ":2: field 'label': must be 0 (benign) or 1"),
    table("csv_label_true", HEADER + "a,true,1,x\n", ":2: field 'label': must be 0 (benign) or 1"),
    table("csv_user_id_empty", HEADER + "a,0,1,x\n,1,1,y\n", ":3: field 'user_id': missing"),
    table("csv_duplicate_column", "user_id,label,position,text,label\na,0,1,x,1\n",
          ":1: column 'label' appears twice"),
    table("csv_text_only_nul", HEADER + "a,0,1,\x00\n", ":2: field 'text': empty post text"),
    table("csv_newline_in_column_name", 'user_id,"la\nbel",position,text\na,0,1,x\n',
          ":1: missing column(s) label; found user_id, 'la\\nbel', position, text"),
]


def _parquet(columns: dict[str, list], types: dict[str, Callable] | None = None,
             names: list[str] | None = None) -> Callable[[], bytes]:
    """A Parquet file's bytes, built when the test runs; ``types`` maps a column to a
    function of the pyarrow module giving its type."""
    def build() -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays = [pa.array(v, type=(types or {}).get(k, lambda _: None)(pa))
                  for k, v in columns.items()]
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_arrays(arrays, names=names or list(columns)), sink)
        return sink.getvalue()
    return build


def _timestamps(seconds: list[int]) -> Callable[[], bytes]:
    return _parquet({"user_id": ["a", "a"], "label": [1.0, 1.0], "text": ["x", "y"],
                     "timestamp": seconds}, types={"timestamp": lambda pa: pa.timestamp("s")})


def _truncated_parquet() -> bytes:
    whole = _parquet({"user_id": ["a"], "label": [0], "position": [0], "text": ["x"]})()
    return whole[: len(whole) // 2]


POSTS = {"user_id": ["a", "b"], "label": [0, 1], "position": [0, 0], "text": ["x", "y"]}

PARQUET_CASES = [
    Case("parquet_truncated", {"t.parquet": _truncated_parquet}, ": cannot read Parquet file ("),
    Case("parquet_text_int", {"t.parquet": _parquet({**POSTS, "text": [1, 2]})},
         ": row 1: field 'text': must be a string, got int"),
    Case("parquet_user_id_float", {"t.parquet": _parquet({**POSTS, "user_id": [1.5, 2.5]})},
         ": row 1: field 'user_id': must be a string, got float"),
    Case("parquet_label_text", {"t.parquet": _parquet({**POSTS, "label": ["spam", "1"]})},
         ": row 1: field 'label': must be 0 (benign) or 1 (malicious), got 'spam'"),
    Case("parquet_position_bool", {"t.parquet": _parquet({**POSTS, "position": [True, False]})},
         ": row 1: field 'position': must be an integer, got True"),
    Case("parquet_timestamp_nan", {"t.parquet": _parquet(
        {"user_id": ["a"], "label": [0], "text": ["x"], "timestamp": [math.nan]})},
         ": row 1: field 'timestamp': must be finite, got nan"),
    Case("parquet_text_list", {"t.parquet": _parquet({**POSTS, "text": [["x"], ["y"]]})},
         ": column 'text' holds list<"),
    Case("parquet_label_struct", {"t.parquet": _parquet({**POSTS, "label": [{"a": 0}, {"a": 1}]})},
         ": column 'label' holds struct<a: int64> values; expected strings or numbers"),
    Case("parquet_duplicate_column", {"t.parquet": _parquet(
        {**POSTS, "text2": ["z", "w"]}, names=["user_id", "label", "position", "text", "text"])},
         ": column 'text' appears twice"),
    Case("parquet_no_rows", {"t.parquet": _parquet(
        {k: [] for k in POSTS}, types=dict.fromkeys(POSTS, lambda pa: pa.string()))},
         ": no users found"),
    Case("parquet_timestamp_year_30000", {"t.parquet": _timestamps([0, 900_000_000_000])},
         ": cannot read the column values ("),
]


REFUSED = JSONL_CASES + CSV_CASES + PARQUET_CASES

ACCEPTED = [
    jsonl("bom_first_line", "\ufeff" + GOOD + GOOD_B, None, users=2),
    jsonl("crlf_lines", (GOOD + GOOD_B).replace("\n", "\r\n"), None, users=2),
    jsonl("nul_inside_text", user("a", 0, {"text": "hi\u0000there"}) + "\n", None, users=1),
    jsonl("surrogate_pair_emoji", '{"user_id": "a", "label": 0, "posts": ["\\ud83d\\ude00 ok"]}\n',
          None, users=1),
    jsonl("label_number_1_0_and_text_1", user("a", 1.0) + "\n" + user("b", "1") + "\n", None,
          users=2),
    jsonl("user_id_integer", user(12345) + "\n", None, users=1),  # type: ignore[arg-type]
    jsonl("long_line_1mb", user("a", 0, {"text": "word " * 200_000}) + "\n", None, users=1),
    jsonl("unknown_field_nested_50", user("a", 0, x=json.loads("[" * 50 + "]" * 50)) + "\n", None,
          users=1),
    jsonl("iso_timestamps", user("a", 0, {"text": "x", "timestamp": "2020-01-01T00:00:00Z"},
                                 {"text": "y", "timestamp": "9999-12-31T23:59:59"}) + "\n", None,
          users=1),
    table("csv_bom_crlf", ("\ufeff" + HEADER + "a,0,1,x\nb,1,1,y\n").replace("\n", "\r\n"), None,
          users=2),
    table("csv_negative_positions", HEADER + "a,0,-5,first\na,0,-1,second\n", None, users=1),
    table("csv_multiline_quoted_text", HEADER + 'a,0,1,"line one\nline ""two"""\n', None, users=1),
    table("csv_nul_inside_text", HEADER + "a,0,1,x\x00y\n", None, users=1),
    Case("parquet_timestamp_type_and_float_label", {"t.parquet": _timestamps([0, 60])}, None,
         users=1),
]


def invoke(*args: str) -> tuple[int, str, str]:
    """The CLI in-process: (exit code, stdout, stderr); an escaped exception fails here."""
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}")
    return result.exit_code, result.stdout, result.stderr


def run_cli(*args: str) -> tuple[int, str, str]:
    """The console script in a subprocess, killed after SUBPROCESS_LIMIT seconds."""
    try:
        proc = subprocess.run([sys.executable, "-m", "advseq", *args], capture_output=True,
                              text=True, timeout=SUBPROCESS_LIMIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung: advseq {' '.join(args)} ran past {SUBPROCESS_LIMIT}s")
    return proc.returncode, proc.stdout, proc.stderr


def assert_refused(outcome: tuple[int, str, str], culprit: Path | str, where: str) -> None:
    code, out, err = outcome
    assert "Traceback" not in out + err and "internal error" not in err, err
    assert code == 2, (code, out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert f"{culprit}{where}" in lines[0], lines[0]
    assert len(lines[0]) < 400, lines[0]


def files_under(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def check_refused(case: Case, tmp_path: Path) -> None:
    """``data validate``, ``info`` and ``convert`` all refuse ``case``; convert writes nothing."""
    assert case.where is not None
    arg = case.write(tmp_path)
    before = files_under(tmp_path)
    out = tmp_path / "out" / "converted.jsonl"
    for command in (["validate"], ["info"], ["convert", "-o", str(out)]):
        assert_refused(invoke("data", *command, str(arg)),
                       case.culprit_path(tmp_path), case.where)
    assert files_under(tmp_path) == before  # convert wrote nothing, not even a temp file


def check_refused_without_hanging(case: Case, tmp_path: Path) -> None:
    """``data validate`` in a subprocess, for cases that used to hang."""
    assert case.where is not None
    arg = case.write(tmp_path)
    assert_refused(run_cli("data", "validate", str(arg)), case.culprit_path(tmp_path), case.where)


def check_non_regular(target: Path, make: Callable[[Path], object], what: str,
                      arg: Path | None = None) -> None:
    """``target`` replaced by ``make`` (a FIFO, a link to /dev/zero, a folder) is refused
    in a subprocess, without waiting on it."""
    target.unlink(missing_ok=True)
    make(target)
    assert_refused(run_cli("data", "validate", str(arg or target)), target,
                   f": is {what}, not a regular file")


def check_accepted(case: Case, tmp_path: Path) -> None:
    """Loads, converts to JSON Lines, CSV and Parquet (writing only OUT) with the same
    content, and ``data info`` counts the users."""
    arg = case.write(tmp_path)
    code, out, err = invoke("data", "validate", str(arg))
    assert code == 0 and out.startswith(f"ok: {case.users} users"), (code, out, err)
    assert "Traceback" not in err
    before = files_under(tmp_path)
    for suffix in (".jsonl", ".csv", ".parquet"):
        converted = tmp_path / f"converted{suffix}"
        code, out, err = invoke("data", "convert", str(arg), "-o", str(converted))
        assert code == 0, (code, out, err)
        assert files_under(tmp_path) == before | {converted}  # OUT only, no stray temp file
        before.add(converted)
        assert load_dataset(converted).checksum() == load_dataset(arg).checksum()
    text = (tmp_path / "converted.jsonl").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    code, out, err = invoke("data", "info", str(arg), "--json")
    assert code == 0 and json.loads(out)["users"] == case.users, (code, err)


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_refused_by_validate_info_and_convert(case: Case, tmp_path: Path) -> None:
    check_refused(case, tmp_path)


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.id for c in ACCEPTED])
def test_accepted_and_round_trips(case: Case, tmp_path: Path) -> None:
    check_accepted(case, tmp_path)


REPEATED = {"user_id": ["a"] * 20_000, "label": [0] * 20_000, "position": [0] * 20_000,
            "text": ["spam " * 200] * 20_000}  # 20 MB of text in a 5 KB file
LIMITS = [  # (module, limit, lowered to, file, content, where)
    ("jsonl", "MAX_LINE_BYTES", 1000, "long.jsonl",
     GOOD + user("b", 1, {"text": "x" * 2000}) + "\n", ":2: line longer than 1,000 bytes"),
    ("tabular", "MAX_FIELD_CHARS", 1000, "long.csv",
     HEADER + 'a,0,1,x\nb,1,1,"' + "y" * 2000 + '"\n', ":3: a field longer than 1,000 characters"),
    ("tabular", "PARQUET_MIN_BUDGET", 2**20, "text.parquet", _parquet(REPEATED),
     ": Parquet data expands to more than 1,048,576 bytes in memory (100 times the file"),
    ("tabular", "PARQUET_MIN_BUDGET", 2**20, "rows.parquet",
     _parquet({k: v[:1] * 200_000 for k, v in POSTS.items()}), ": Parquet data expands to more"),
]


@pytest.mark.parametrize(("module", "limit", "value", "name", "content", "where"), LIMITS,
                         ids=[f"{lim[1]}-{lim[3]}" for lim in LIMITS])
def test_size_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, limit: str,
                     value: int, name: str, content: Content, where: str) -> None:
    """Each size limit, lowered so that a small file crosses it (a compression bomb, for
    Parquet): refused with its place named."""
    monkeypatch.setattr(importlib.import_module(f"advseq.io.{module}"), limit, value)
    path = Case(name, {name: content}, where).write(tmp_path)
    assert_refused(invoke("data", "validate", str(path)), path, where)


NON_REGULAR = [  # (path made non-regular, what it becomes, how the error names it)
    ("pipe.jsonl", "fifo", "a named pipe (FIFO)"),
    ("zero.jsonl", "zero", "a character device"),
    ("zero.parquet", "zero", "a character device"),
]


MAKE = {"fifo": os.mkfifo if hasattr(os, "mkfifo") else None,
        "zero": (lambda p: p.symlink_to("/dev/zero")) if Path("/dev/zero").exists() else None,
        "folder": Path.mkdir}


@pytest.mark.parametrize(("name", "kind", "what"), NON_REGULAR,
                         ids=[f"{n}-{k}" for n, k, _ in NON_REGULAR])
def test_non_regular_file_is_refused_without_waiting(tmp_path: Path, name: str, kind: str,
                                                     what: str) -> None:
    make = MAKE[kind]
    if make is None:
        pytest.skip(f"no {kind} on this platform")
    check_non_regular(tmp_path / name, make, what)


@pytest.mark.parametrize(("out_name", "where"), [
    ("folder.jsonl", ": exists and is not a regular file"),
    ("d.jsonl/users.csv", ": cannot write ("),  # below a file
])
@pytest.mark.parametrize("command", ["convert", "simulate"])
def test_unwritable_out_is_refused(tmp_path: Path, out_name: str, where: str, command: str) -> None:
    src = tmp_path / "d.jsonl"
    src.write_text(GOOD + GOOD_B)
    (tmp_path / "folder.jsonl").mkdir()
    before = files_under(tmp_path)
    out = tmp_path / out_name
    args = [str(src)] if command == "convert" else ["-n", "20"]
    assert_refused(invoke("data", command, *args, "-o", str(out)), out, where)
    assert files_under(tmp_path) == before


def test_markup_in_paths_is_printed_as_text(tmp_path: Path) -> None:
    """A folder "x[" holding "]y.jsonl" makes a path with "[/]" in it, which rich would
    read as a closing tag."""
    src = tmp_path / "x[" / "]y.jsonl"
    src.parent.mkdir()
    src.write_text(GOOD + GOOD_B)
    code, out, err = invoke("data", "info", str(src), "--no-audit")
    assert code == 0 and f"]y  ({src})" in out, (code, out, err)
    out_path = tmp_path / "x[" / "]converted.csv"
    code, out, err = invoke("data", "convert", str(src), "-o", str(out_path))
    assert code == 0 and str(out_path) in out.replace("\n", ""), (code, out, err)


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
@pytest.mark.parametrize("command", ["info", "simulate"])
def test_seed_out_of_range(tmp_path: Path, seed: str, command: str) -> None:
    src = tmp_path / "d.jsonl"
    src.write_text(GOOD + GOOD_B)
    args = [str(src)] if command == "info" else ["-o", str(tmp_path / "sim" / "users.jsonl")]
    assert_refused(invoke("data", command, *args, "--seed", seed), "--seed",
                   f": must be between 0 and 4294967295, got {seed}")
    assert not (tmp_path / "sim").exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".parquet"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_numbers_are_never_written(tmp_path: Path, suffix: str, bad: float) -> None:
    """A dataset built in code with NaN/infinity: saving refuses instead of writing a value
    the loader would refuse (a bare NaN in JSON, 'nan' in a table)."""
    ds = Dataset([User("a", 0, (Post("x", None, bad, None),)),
                  User("b", 1, (Post("y", None, None, bad),))])
    out = tmp_path / f"users{suffix}"
    with pytest.raises(DataError, match="NaN|infinit"):
        save_dataset(ds, out)
    assert list(tmp_path.iterdir()) == []
