"""The PETGEN pickle importer never executes pickled code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from advseq.errors import DataError
from advseq.io import load_dataset
from advseq.io.petgen import safe_load_pickle


class _Evil:
    def __reduce__(self):  # noqa: D105 - the attack under test
        return (os.system, ("echo pwned > /dev/null",))


def _release(folder: Path, seqs: dict, contexts: dict, rel: dict, labels: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy.pkl").write_bytes(pickle.dumps(seqs))
    (folder / "toy_context.pkl").write_bytes(pickle.dumps(contexts))
    (folder / "toy_relevancy.pkl").write_bytes(pickle.dumps(rel))
    (folder / "toy_label.txt").write_text("".join(f"{x}\n" for x in labels))
    return folder


def test_code_in_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({("a", "b"): _Evil()}))
    with pytest.raises(DataError, match="refusing to load posix.system|refusing to load os.system"):
        safe_load_pickle(path)


def test_sets_and_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.pkl"
    path.write_bytes(pickle.dumps({("a",): {1, 2}}, protocol=4))
    with pytest.raises(DataError, match="only str/tuple/list/dict/int/float"):
        safe_load_pickle(path)


def test_toy_release(tmp_path: Path) -> None:
    s1, s2 = ("old post", "final post"), ("x", "y", "z")
    folder = _release(tmp_path / "rel", {s1: 1, s2: 0}, {s1: "ctx one", s2: "ctx two"},
                      {s1: [1], s2: [0, 1]}, [1, 0])
    ds = load_dataset(folder)
    assert ds.user_ids == ["toy-000001", "toy-000002"] and ds.labels == [1, 0]
    u = ds["toy-000002"]
    assert [p.relevancy for p in u.posts] == [0.0, 1.0, None]
    assert u.posts[-1].context == "ctx two" and u.posts[0].context is None
    assert load_dataset(folder / "toy.pkl").checksum() == ds.checksum()


def test_label_file_disagreement(tmp_path: Path) -> None:
    s1 = ("a", "b")
    folder = _release(tmp_path / "rel", {s1: 1}, {s1: "c"}, {s1: [0]}, [0])
    with pytest.raises(DataError, match=r"toy_label\.txt:1: field 'label'.*disagrees"):
        load_dataset(folder)


def test_relevancy_length_checked(tmp_path: Path) -> None:
    s1 = ("a", "b", "c")
    folder = _release(tmp_path / "rel", {s1: 1}, {s1: "c"}, {s1: [0]}, [1])
    with pytest.raises(DataError, match=r"toy_relevancy\.pkl: row 1: field 'relevancy'"):
        load_dataset(folder)
