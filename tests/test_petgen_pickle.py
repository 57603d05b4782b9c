"""The PETGEN pickle importer never executes pickled code, and does bounded work on
hostile plain data (self-containing lists, "billion laughs", deep nesting), both through
the API and through ``advseq data validate/info/convert``."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import pytest

from advseq.errors import DataError
from advseq.io import load_dataset
from advseq.io.petgen import safe_load_pickle
from tests.test_hostile_data import (
    MAKE,
    Case,
    Content,
    check_accepted,
    check_non_regular,
    check_refused,
    check_refused_without_hanging,
)

#: every case is small: a test still running after this many seconds hangs
pytestmark = pytest.mark.timeout(180)


class Evil:
    def __reduce__(self):  # noqa: D105 - the attack under test
        return (os.system, ("echo pwned > /dev/null",))


# Hostile plain data (also used by tests/test_hostile_data.py through the CLI).

def self_containing_list() -> list:
    loop: list = []
    loop.append(loop)
    return loop


def self_containing_dict(key: tuple[str, ...]) -> dict:
    d: dict = {}
    d[key] = d
    return d


def list_laughs(levels: int = 60) -> list:
    """"Billion laughs": each level is four references to the one list below it."""
    x: list = ["lol"]
    for _ in range(levels):
        x = [x, x, x, x]
    return x


def tuple_laughs_key(levels: int = 60) -> bytes:
    """{t: 1} where t's two halves are one tuple, 60 times over. Written opcode by opcode:
    building the dict in Python would hash t, which walks 2**60 items."""
    ops = [pickle.PROTO, b"\x02", pickle.EMPTY_DICT, pickle.BINUNICODE, struct.pack("<I", 1), b"a",
           pickle.BINPUT, b"\x00", pickle.POP]
    for i in range(levels):
        ops += [pickle.BINGET, bytes([i]), pickle.BINGET, bytes([i]), pickle.TUPLE2,
                pickle.BINPUT, bytes([i + 1]), pickle.POP]
    ops += [pickle.BINGET, bytes([levels]), pickle.BININT1, b"\x01", pickle.SETITEM, pickle.STOP]
    return b"".join(ops)


def deep_tuple_key(depth: int = 100_000) -> bytes:
    """{((("a",),),...): 1}, ``depth`` tuples deep (hashing it would recurse that deep)."""
    return b"".join([pickle.PROTO, b"\x02", pickle.EMPTY_DICT, pickle.BINUNICODE,
                     struct.pack("<I", 1), b"a", pickle.TUPLE1 * depth, pickle.BININT1, b"\x01",
                     pickle.SETITEM, pickle.STOP])


def deep_list_value(key: tuple[str, ...], depth: int = 5000) -> bytes:
    """{key: [[[...]]]}, ``depth`` lists deep, built without recursion."""
    key_ops = pickle.dumps(key, protocol=2)[2:-1]  # the tuple's opcodes without PROTO and STOP
    return b"".join([pickle.PROTO, b"\x02", pickle.EMPTY_DICT, key_ops, pickle.EMPTY_LIST * depth,
                     pickle.APPEND * (depth - 1), pickle.SETITEM, pickle.STOP])


def _release(folder: Path, seqs: dict, contexts: dict, rel: dict, labels: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy.pkl").write_bytes(pickle.dumps(seqs))
    (folder / "toy_context.pkl").write_bytes(pickle.dumps(contexts))
    (folder / "toy_relevancy.pkl").write_bytes(pickle.dumps(rel))
    (folder / "toy_label.txt").write_text("".join(f"{x}\n" for x in labels))
    return folder


def test_code_in_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({("a", "b"): Evil()}))
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


PLAIN = {("a", "b"): [0, 1.5, None, True], ("c",): {"k": ("v", -(2**70), 3.25)}, (): "x" * 300}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_loads_as_pickle_loads_it(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(PLAIN, protocol=protocol))
    assert safe_load_pickle(path) == pickle.loads(path.read_bytes()) == PLAIN


def test_shared_lists_count_once_per_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import advseq.io.petgen as petgen

    shared = [1, 2, 3]  # expands to 4 nodes, used twice: 1 + 2 * (1 + 4) = 11 with the keys
    path = tmp_path / "shared.pkl"
    path.write_bytes(pickle.dumps({"a": shared, "b": shared}))
    monkeypatch.setattr(petgen, "MAX_PICKLE_NODES", 11)
    loaded = safe_load_pickle(path)
    assert loaded == {"a": [1, 2, 3], "b": [1, 2, 3]} and loaded["a"] is loaded["b"]
    monkeypatch.setattr(petgen, "MAX_PICKLE_NODES", 10)
    with pytest.raises(DataError, match=r"shared\.pkl: row 2: pickle expands to more than 10 "):
        safe_load_pickle(path)


def test_depth_limit_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import advseq.io.petgen as petgen

    monkeypatch.setattr(petgen, "MAX_PICKLE_DEPTH", 5)
    path = tmp_path / "deep.pkl"
    path.write_bytes(pickle.dumps([[[["leaf"]]]]))  # 4 lists and a str: 5 levels
    assert safe_load_pickle(path) == [[[["leaf"]]]]
    path.write_bytes(pickle.dumps([[[[["leaf"]]]]]))
    with pytest.raises(DataError, match="nests containers more than 5 deep"):
        safe_load_pickle(path)
    path.write_bytes(pickle.dumps(((((("leaf",),),),),)))
    with pytest.raises(DataError, match="tuples nested more than 5 deep"):
        safe_load_pickle(path)


def test_cycles_are_refused(tmp_path: Path) -> None:
    loop: list = [1]
    loop.append([loop])
    path = tmp_path / "loop.pkl"
    path.write_bytes(pickle.dumps({("a", "b"): loop}))
    with pytest.raises(DataError, match=r"loop\.pkl: row 1: pickle holds a list that contains it"):
        safe_load_pickle(path)
    path.write_bytes(pickle.dumps(self_containing_dict(("a", "b"))))
    with pytest.raises(DataError, match="row 1: pickle holds a dict that contains itself"):
        safe_load_pickle(path)



def test_release_with_nan_or_huge_flags_is_refused(tmp_path: Path) -> None:
    s1 = ("a", "b")
    for flag in (float("nan"), 10**400, "1"):
        folder = _release(tmp_path / f"rel{flag!s:.5}", {s1: 1}, {s1: "c"}, {s1: [flag]}, [1])
        with pytest.raises(DataError, match=r"toy_relevancy\.pkl: row 1: field 'relevancy': flags "
                                            "must be finite numbers"):
            load_dataset(folder)


# --- the CLI on hostile releases: NAME.pkl, NAME_context.pkl, NAME_relevancy.pkl, NAME_label.txt

KEY = ("old post", "final post")


def release(case_id: str, where: str | None, culprit: str = "", *, labels: object = None,
            contexts: object = None, relevancy: object = None, raw: dict[str, bytes] | None = None,
            label_txt: str = "1\n", users: int | None = None) -> Case:
    """A one-user release in folder ``case_id``; each part can be replaced."""
    parts = {
        ".pkl": pickle.dumps({KEY: 1} if labels is None else labels),
        "_context.pkl": pickle.dumps({KEY: "ctx"} if contexts is None else contexts),
        "_relevancy.pkl": pickle.dumps({KEY: [1]} if relevancy is None else relevancy),
    }
    parts.update(raw or {})
    files: dict[str, Content] = {f"{case_id}/toy{k}": v for k, v in parts.items()}
    files[f"{case_id}/toy_label.txt"] = label_txt
    return Case(case_id, files, where, arg=case_id, culprit=f"{case_id}/toy{culprit}", users=users)


# the cases that used to hang run in a subprocess with a timeout
HANG_CASES = [
    release("pickle_self_list", ": row 1: pickle holds a list that contains itself",
            "_relevancy.pkl",
            relevancy={KEY: self_containing_list()}),
    release("pickle_list_laughs", ": row 1: pickle expands to more than 20,000,000 items",
            "_relevancy.pkl", relevancy={KEY: list_laughs()}),
    release("pickle_tuple_laughs_key", ": pickle holds tuples that expand to more than 20,000,000",
            ".pkl", raw={".pkl": tuple_laughs_key()}),
    release("pickle_deep_tuple_key", ": pickle holds tuples nested more than 100 deep", ".pkl",
            raw={".pkl": deep_tuple_key()}),
    release("pickle_self_dict", ": row 1: pickle holds a dict that contains itself", "_context.pkl",
            contexts=self_containing_dict(KEY)),
]

PICKLE_CASES = [
    release("pickle_deep_list", ": row 1: pickle nests containers more than 100 deep",
            "_relevancy.pkl", raw={"_relevancy.pkl": deep_list_value(KEY)}),
    release("pickle_truncated", ": not a plain-data pickle (it ends too early)", "_context.pkl",
            raw={"_context.pkl": pickle.dumps({KEY: "ctx"})[:-6]}),
    release("pickle_set", ": not a plain-data pickle (pickle holds a set; only str/tuple/list/dict/"
            "int/float are allowed)", "_relevancy.pkl", relevancy={KEY: {1}}),
    release("pickle_code", ": not a plain-data pickle (refusing to load ", ".pkl",
            labels={KEY: Evil()}),
    release("pickle_bytes", ": row 1: pickle holds a bytes; only str/tuple/list/dict/int/float",
            "_context.pkl", contexts={KEY: b"ctx"}),
    release("pickle_huge_int_label", ": row 1: field 'label': must be 0 (benign) or 1 (malicious), "
            "got <a 16610-bit integer>", ".pkl", labels={KEY: 10**5000}),
    release("pickle_key_not_tuple", ": row 1: key must be a non-empty tuple of post texts", ".pkl",
            labels={"old post": 1}, contexts={"old post": "c"}, relevancy={"old post": []}),
    release("pickle_surrogate_text", ": row 1: field 'posts[0]': holds a lone surrogate U+D800",
            ".pkl", labels={("a\ud800", "b"): 1}, contexts={("a\ud800", "b"): "c"},
            relevancy={("a\ud800", "b"): [1]}),
    release("pickle_flags_laughs_short", ": row 1: field 'relevancy': needs 1 flags (one per "
            "non-final post), got [[[...], [...], [...], [...]], [[...], ", "_relevancy.pkl",
            relevancy={KEY: list_laughs(10)}),
]


@pytest.mark.parametrize("case", PICKLE_CASES, ids=[c.id for c in PICKLE_CASES])
def test_hostile_release_refused(case: Case, tmp_path: Path) -> None:
    check_refused(case, tmp_path)


@pytest.mark.parametrize("case", HANG_CASES, ids=[c.id for c in HANG_CASES])
def test_hostile_release_refused_without_hanging(case: Case, tmp_path: Path) -> None:
    check_refused_without_hanging(case, tmp_path)


def test_release_sharing_one_flag_list_is_accepted(tmp_path: Path) -> None:
    flags = [1]  # pickled once, referred to by both users
    check_accepted(release("shared_flags", None, users=2, labels={KEY: 1, ("x", "y"): 0},
                           contexts={KEY: "c", ("x", "y"): "d"},
                           relevancy={KEY: flags, ("x", "y"): flags}, label_txt="1\n0\n"),
                   tmp_path)


@pytest.mark.parametrize(("name", "kind", "what"), [
    ("toy_context.pkl", "fifo", "a named pipe (FIFO)"),
    ("toy.pkl", "zero", "a character device"),
    ("toy_label.txt", "zero", "a character device"),
    ("toy_relevancy.pkl", "folder", "a folder"),
])
def test_non_regular_part_of_release_is_refused(tmp_path: Path, name: str, kind: str,
                                                what: str) -> None:
    if MAKE[kind] is None:
        pytest.skip(f"no {kind} on this platform")
    folder = release("rel", None).write(tmp_path)
    check_non_regular(folder / name, MAKE[kind], what, arg=folder)
