"""Loaders: formats, ordering, round trips, and the split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advseq.errors import ConfigError, DataError
from advseq.io import load_dataset, save_dataset, save_jsonl
from advseq.schema import Dataset, DataSplit


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_round_trip(tiny: Dataset, tmp_path: Path) -> None:
    path = save_jsonl(tiny, tmp_path / "users.jsonl")
    back = load_dataset(path)
    assert back.checksum() == tiny.checksum()
    assert back.name == tmp_path.name  # users.jsonl takes its folder's name
    assert [u.posts for u in back] == [u.posts for u in tiny]


def test_jsonl_accepts_iso_timestamps_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", json.dumps({
        "user_id": 7, "label": 1,
        "posts": [{"text": "a", "timestamp": "2020-01-01T00:00:00Z"}, "bare string post"]})
        + "\n\n")
    ds = load_dataset(path)
    user = ds["7"]
    assert user.posts[0].timestamp == 1577836800.0
    assert user.posts[1].text == "bare string post"


def test_unknown_fields_warn_not_lost(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl",
                 '{"user_id": "a", "label": 0, "extra": 1, "posts": [{"text": "x", "mood": 2}]}\n')
    ds = load_dataset(path)
    assert len(ds) == 1
    assert any("extra" in w for w in ds.warnings) and any("mood" in w for w in ds.warnings)


def test_csv_long_form_orders_by_position(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv",
                 "user_id,label,position,text,context,relevancy\n"
                 "u1,1,2,second,item a,\n"
                 'u1,1,1,"first, with comma",,1\n'
                 "u2,0,1,only post,item b,0.5\n")
    ds = load_dataset(path)
    assert ds["u1"].texts == ["first, with comma", "second"]
    assert ds["u1"].posts[0].relevancy == 1.0 and ds["u1"].posts[1].context == "item a"
    assert ds["u2"].posts[0].relevancy == 0.5
    assert ds.labels == [1, 0]


def test_tsv_and_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv",
                 "user_id\tlabel\ttimestamp\ttext\n"
                 "u\t0\t2021-05-01T10:00:00\tlater\n"
                 "u\t0\t2021-05-01T09:00:00\tearlier\n")
    assert load_dataset(path)["u"].texts == ["earlier", "later"]


def test_parquet_long_form(tmp_path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame({"user_id": ["a", "a", "b"], "label": [1, 1, 0], "position": [2, 1, 1],
                       "text": ["y", "x", "z"], "context": [None, "c", None]})
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    ds = load_dataset(path)
    assert ds["a"].texts == ["x", "y"] and ds["a"].posts[0].context == "c"


def test_parquet_error_names_row(tmp_path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame({"user_id": ["a", "b"], "label": [0, 3], "position": [1, 1],
                       "text": ["x", "y"]})
    df.to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d\.parquet: row 2: field 'label'"):
        load_dataset(tmp_path / "d.parquet")


def test_duplicate_position_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "user_id,label,position,text\nu,0,1,a\nu,0,1,b\n")
    with pytest.raises(DataError, match=r"d\.csv:3: field 'position'.*two posts"):
        load_dataset(path)


def test_lenient_skips_and_counts(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl",
                 '{"user_id": "a", "label": 0, "posts": [{"text": "ok"}, {"text": ""}]}\n'
                 '{"user_id": "b", "label": 5, "posts": [{"text": "x"}]}\n'
                 "not json\n"
                 '{"user_id": "c", "label": 1, "posts": [{"text": " "}]}\n')
    ds = load_dataset(path, lenient=True)
    assert ds.user_ids == ["a"]
    assert ds.skipped == {"users": 3, "posts": 2}
    assert len(ds.warnings) == 5
    assert all(str(path) in w for w in ds.warnings)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_save_dataset_round_trips_every_writable_format(demo: Dataset, tmp_path: Path, suffix: str) -> None:
    sub = Dataset(demo.users[:40], name="demo")
    back = load_dataset(save_dataset(sub, tmp_path / f"users{suffix}"))
    assert back.checksum() == sub.checksum() and back.users == sub.users


def test_save_dataset_refuses_unwritable_formats(tiny: Dataset, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot write '\.pkl'"):
        save_dataset(tiny, tmp_path / "x.pkl")
    assert not list(tmp_path.iterdir())


def test_jsonl_read_as_csv_names_the_problem_briefly(tiny: Dataset, tmp_path: Path) -> None:
    wrong = tmp_path / "users.csv"
    wrong.write_text("\n".join(tiny.to_jsonl()) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing column") as err:
        load_dataset(wrong)
    assert "users.csv:1:" in str(err.value) and len(str(err.value)) < 800


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown format"):
        load_dataset(write(tmp_path / "d.txt", "x"))


def test_split_is_stratified_seeded_and_recorded(tiny: Dataset) -> None:
    a, b = tiny.split(0.2, seed=0), tiny.split(0.2, seed=0)
    assert a.test.user_ids == b.test.user_ids
    assert tiny.split(0.2, seed=1).test.user_ids != a.test.user_ids
    assert len(a.test) == 4 and sorted(a.test.labels) == [0, 0, 1, 1]
    assert set(a.train.user_ids).isdisjoint(a.test.user_ids)
    again = DataSplit.from_dict(tiny, json.loads(json.dumps(a.to_dict())))
    assert again.test.user_ids == a.test.user_ids


def test_split_refuses_single_class(tiny: Dataset) -> None:
    only = tiny.filter([u.label == 1 for u in tiny])
    with pytest.raises(ConfigError, match="at least 2 users of each class"):
        only.split()


def test_dataset_rejects_duplicate_ids(tiny: Dataset) -> None:
    with pytest.raises(ConfigError, match="duplicate user id"):
        Dataset([tiny.users[0], tiny.users[0]])


@pytest.mark.realdata
@pytest.mark.slow
def test_real_wiki_loads(wiki_path: Path) -> None:
    ds = load_dataset(wiki_path)
    assert len(ds) == 794 and ds.n_posts == 11547
    assert ds.labels.count(1) == 397
    assert ds.users[0].posts[-1].context is not None


@pytest.mark.realdata
@pytest.mark.slow
def test_petgen_pickle_matches_jsonl(wiki_path: Path, tmp_path: Path) -> None:
    from_pickle = load_dataset(wiki_path.parent / "original")
    from_jsonl = load_dataset(wiki_path)
    assert from_pickle.checksum() == from_jsonl.checksum()
    assert from_pickle.user_ids == from_jsonl.user_ids
    out = save_jsonl(from_pickle, tmp_path / "users.jsonl")
    assert out.read_bytes() == wiki_path.read_bytes()


def test_checksum_is_kept_and_follows_replaced_users(tiny: Dataset) -> None:
    """The memoized checksum is the content's: a replaced, appended or removed user gives
    the checksum a freshly built dataset of the same users has."""
    from advseq.schema import Post, User

    ds = Dataset(list(tiny.users), name="copy")
    first = ds.checksum()
    assert ds.checksum() == first == tiny.checksum()
    u = ds.users[0]
    ds.users[0] = User(u.user_id, 1 - u.label, u.posts)
    assert ds.checksum() != first
    assert ds.checksum() == Dataset(list(ds.users)).checksum()
    ds.users[0] = u
    assert ds.checksum() == first
    ds.users.append(User("extra", 0, (Post("one more post"),)))
    assert ds.checksum() == Dataset(list(ds.users)).checksum() != first
    ds.users.pop()
    assert ds.checksum() == first
