"""The loader's fast path for plain posts (advseq.io.validate.fast_post): it takes a post
only when the full checks (parse_post) would take it, with the same values, and leaves
every other post to them, so errors still name file, line and field."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from advseq.errors import DataError
from advseq.io import load_dataset
from advseq.io.validate import Problems, fast_post, parse_post

PLAIN = [
    {"text": "a plain post", "context": "item 1", "timestamp": 1577836800.0, "relevancy": 1.0},
    {"text": "no context", "context": None, "relevancy": None},
    {"text": "int fields", "timestamp": 1577836800, "relevancy": 0},
    {"text": "ünïcode téxt ✓", "context": "ça"},
    {"text": "x"},
]
# each needs the full checks: refused there, or accepted with a conversion or a warning
OTHER = [
    "a bare string post",
    {"text": " leading space"},
    {"text": "\u200bzero-width start"},
    {"text": "   "},
    {"text": ""},
    {"text": "lone \ud800 surrogate"},
    {"text": "ok", "context": "bad \udfff"},
    {"text": 5},
    {"context": "no text"},
    {"text": "ok", "extra": 1},
    {"text": "ok", "context": 3},
    {"text": "ok", "timestamp": "2020-01-01T00:00:00Z"},
    {"text": "ok", "timestamp": "1577836800"},
    {"text": "ok", "timestamp": True},
    {"text": "ok", "timestamp": math.nan},
    {"text": "ok", "timestamp": math.inf},
    {"text": "ok", "timestamp": 10**400},
    {"text": "ok", "timestamp": -1e300},
    {"text": "ok", "timestamp": ""},
    {"text": "ok", "relevancy": "0.5"},
    {"text": "ok", "relevancy": math.nan},
    {"text": "ok", "relevancy": False},
    {"text": "ok", "relevancy": 10**400},
    ["text", "in a list"],
]


def full(raw: object) -> object:
    try:
        return parse_post(raw, Problems(Path("f.jsonl")), prefix="posts[0]", line=1)
    except DataError as err:
        return err


@pytest.mark.parametrize("raw", PLAIN, ids=range(len(PLAIN)))
def test_plain_posts_take_the_fast_path_with_the_same_values(raw: dict) -> None:
    post = fast_post(raw)
    assert post is not None
    expected = full(raw)
    assert post == expected
    assert [type(getattr(post, f)) for f in ("timestamp", "relevancy")] == \
        [type(getattr(expected, f)) for f in ("timestamp", "relevancy")]


@pytest.mark.parametrize("raw", OTHER, ids=range(len(OTHER)))
def test_other_posts_are_left_to_the_full_checks(raw: object) -> None:
    assert fast_post(raw) is None


def test_a_bad_post_among_plain_ones_is_named_by_line_and_field(tmp_path: Path) -> None:
    good = {"user_id": "u", "label": 0, "posts": PLAIN}
    bad = {"user_id": "v", "label": 1,
           "posts": [*PLAIN, {"text": "ok", "timestamp": math.inf}]}
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(u) for u in (good, good | {"user_id": "w"}, bad)) + "\n",
                    encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_dataset(path)
    msg = str(err.value)
    assert f"{path}:3:" in msg and f"posts[{len(PLAIN)}].timestamp" in msg
    lenient = load_dataset(path, lenient=True)
    assert lenient.skipped == {"users": 0, "posts": 1}
    assert lenient["v"].posts == lenient["u"].posts
