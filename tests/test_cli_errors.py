"""Bad input gives one line naming file, line/row and field; exit code 2; no traceback.

These run the real console script in a subprocess, exactly as a user would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GOOD = '{"user_id": "a", "label": 0, "posts": [{"text": "hi"}]}\n'
#: one small file per case: a test still running after this many seconds hangs
pytestmark = pytest.mark.timeout(180)

# (file name, content, text the one-line error must contain)
BATTERY = [
    ("malformed.jsonl", GOOD + '{"user_id": "b", "label": 1, "posts": [\n', ":2: malformed JSON"),
    ("not_object.jsonl", "[1, 2]\n", ":1: each line must be a JSON object"),
    ("missing_label.jsonl", GOOD + '{"user_id": "b", "posts": [{"text": "x"}]}\n',
     ":2: field 'label': missing"),
    ("missing_posts.jsonl", '{"user_id": "b", "label": 1}\n', ":1: field 'posts': missing"),
    ("label_2.jsonl", '{"user_id": "a", "label": 2, "posts": [{"text": "x"}]}\n',
     ":1: field 'label': must be 0 (benign) or 1 (malicious), got 2"),
    ("label_str.jsonl", '{"user_id": "a", "label": "spam", "posts": [{"text": "x"}]}\n',
     ":1: field 'label'"),
    ("label_bool.jsonl", '{"user_id": "a", "label": true, "posts": [{"text": "x"}]}\n',
     ":1: field 'label'"),
    ("id_type.jsonl", '{"user_id": [1], "label": 0, "posts": [{"text": "x"}]}\n',
     ":1: field 'user_id': must be a string"),
    ("dup.jsonl", GOOD + GOOD, ":2: field 'user_id': duplicate user id 'a' (first on line 1)"),
    ("no_posts.jsonl", '{"user_id": "a", "label": 0, "posts": []}\n', ":1: field 'posts': user 'a' has no posts"),
    ("posts_type.jsonl", '{"user_id": "a", "label": 0, "posts": "hello"}\n', ":1: field 'posts': must be a list"),
    ("empty_post.jsonl", '{"user_id": "a", "label": 0, "posts": [{"text": "ok"}, {"text": "   "}]}\n',
     ":1: field 'posts[1].text': empty post text"),
    ("nontext_post.jsonl", '{"user_id": "a", "label": 0, "posts": [{"text": 42}]}\n',
     ":1: field 'posts[0].text': must be a string, got int"),
    ("post_no_text.jsonl", '{"user_id": "a", "label": 0, "posts": [{"context": "c"}]}\n',
     ":1: field 'posts[0].text': missing"),
    ("bad_context.jsonl", '{"user_id": "a", "label": 0, "posts": [{"text": "t", "context": 3}]}\n',
     ":1: field 'posts[0].context'"),
    ("bad_relevancy.jsonl", '{"user_id": "a", "label": 0, "posts": [{"text": "t", "relevancy": "hi"}]}\n',
     ":1: field 'posts[0].relevancy'"),
    ("bad_ts.jsonl", '{"user_id": "a", "label": 0, "posts": [{"text": "t", "timestamp": "yesterday"}]}\n',
     ":1: field 'posts[0].timestamp'"),
    ("csv_missing_col.csv", "user_id,text,position\na,x,1\n", ":1: missing column(s) label"),
    ("csv_no_order.csv", "user_id,label,text\na,0,x\n", ":1: needs a 'position' or 'timestamp'"),
    ("csv_label.csv", "user_id,label,position,text\na,0,1,x\na,1,2,y\n",
     ":3: field 'label': user 'a' has label 0 on line 2 but 1 here"),
    ("csv_empty_text.csv", "user_id,label,position,text\na,0,1,x\nb,1,1,\n", ":3: field 'text': empty post text"),
    ("csv_position.csv", "user_id,label,position,text\na,0,one,x\n", ":2: field 'position': must be an integer"),
    ("csv_cells.csv", "user_id,label,position,text\na,0,1,x,extra\n", ":2: has 5 cells"),
    ("empty.jsonl", "", "no users found"),
    ("empty.csv", "", ":1: empty file"),
    ("bad.parquet", "this is not parquet", "cannot read Parquet file"),
    ("data.txt", "hello", "unknown format '.txt'"),
]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "advseq", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(("name", "content", "expected"), BATTERY, ids=[b[0] for b in BATTERY])
def test_malformed_file_one_line_error(tmp_path: Path, name: str, content: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    proc = run_cli("data", "info", str(path))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and expected in lines[0], lines[0]


def test_undecodable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bin.jsonl"
    path.write_bytes(GOOD.encode() + b'\xff\xfe{"user_id"\n')
    proc = run_cli("data", "validate", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{path}:2: not valid UTF-8" in proc.stderr


def test_missing_file() -> None:
    proc = run_cli("data", "info", "/nonexistent/users.jsonl")
    assert proc.returncode == 2 and "/nonexistent/users.jsonl: no such file" in proc.stderr


def test_unreadable_file(tmp_path: Path) -> None:
    # A folder where a file is expected cannot be read; permission bits do not stop root.
    path = tmp_path / "dir.jsonl"
    path.mkdir()
    proc = run_cli("data", "info", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(path) in proc.stderr
