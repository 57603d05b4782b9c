"""Offline run-time set-up: built lazily, never at import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from advseq import runtime


def test_nltk_data_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVSEQ_HOME", str(tmp_path))
    monkeypatch.setattr(runtime, "_done", set())
    root = runtime.nltk_data()
    assert root == tmp_path / "nltk_data"
    stop = (root / "corpora" / "stopwords" / "english").read_text().split()
    assert "the" in stop and len(stop) > 300
    assert (root / "tokenizers" / "punkt_tab" / "english" / "abbrev_types.txt").exists()
    assert os.environ["NLTK_DATA"].split(os.pathsep)[0] == str(root)
    from nltk import word_tokenize
    from nltk.corpus import stopwords

    assert "the" in stopwords.words("english")
    assert word_tokenize("Hi there. Dr. Who came.") == ["Hi", "there", ".", "Dr.", "Who", "came", "."]


def test_wordnet_when_debian_packages_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if runtime._wordnet_source() is None:
        pytest.skip("WordNet not installed (apt-get install wordnet-base wordnet-sense-index)")
    monkeypatch.setenv("ADVSEQ_HOME", str(tmp_path))
    monkeypatch.setattr(runtime, "_done", set())
    assert runtime.wordnet_available()
    lex = (tmp_path / "nltk_data" / "corpora" / "wordnet" / "lexnames").read_text().splitlines()
    assert len(lex) == 45 and lex[3] == "03\tnoun.Tops\t1"


def test_wordnet_missing_says_how_to_add(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVSEQ_HOME", str(tmp_path))
    monkeypatch.setattr(runtime, "_done", set())
    monkeypatch.setattr(runtime, "_wordnet_source", lambda: None)
    from advseq.errors import ResourceMissing

    with pytest.raises(ResourceMissing, match="apt-get install wordnet-base"):
        runtime.require_wordnet()


def test_textattack_marker_and_offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVSEQ_HOME", str(tmp_path))
    monkeypatch.delenv("TA_CACHE_DIR", raising=False)
    for var in runtime.HF_OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(runtime, "_done", set())
    runtime.prepare_textattack()
    assert (tmp_path / "textattack" / "post_install_check_3").exists()
    assert all(os.environ[v] == "1" for v in runtime.HF_OFFLINE_VARS)


def test_packaged_models_found() -> None:
    assert (runtime.minilm_dir() / "config.json").exists()
    index, emb = runtime.glove_files()
    assert index.suffix == ".parquet" and emb.suffix == ".npy"


def test_import_and_help_load_nothing_heavy() -> None:
    """`import advseq` and `advseq --help` import no torch/transformers/textattack/sklearn
    and set up nothing."""
    code = (
        "import sys, os\n"
        "import advseq, advseq.cli\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(advseq.cli.app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(advseq.cli.app, ['data', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'transformers', 'textattack', 'sklearn', 'nltk',\n"
        "         'sentence_transformers', 'pandas') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert 'NLTK_DATA' not in os.environ and 'HF_HUB_OFFLINE' not in os.environ\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NLTK_DATA", "HF_HUB_OFFLINE")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_text_cache_keeps_its_table_and_serves_a_second_process(tmp_path: Path) -> None:
    """The SQLite text caches keep the schema and key bytes older caches were written with,
    and a new cache object (a later process) reads what an earlier one stored."""
    import hashlib
    import sqlite3

    import numpy as np

    from advseq.storage import TextCache, text_key

    def emb() -> TextCache:
        return TextCache(tmp_path / "e.sqlite", "emb", ["v BLOB NOT NULL"],
                         encode=lambda v: (v.astype(np.float32).tobytes(),),
                         decode=lambda row: np.frombuffer(row[0], dtype=np.float32))

    first = emb()
    keys, todo = first.missing(["b", "a", "b"])
    assert list(todo.values()) == ["b", "a"] and keys[0] == keys[2]
    first.store({k: np.full(3, i, dtype=np.float32) for i, k in enumerate(todo)})
    assert text_key("a") == hashlib.blake2b(b"a", digest_size=16).digest()
    second = emb()
    keys, todo = second.missing(["a", "c"])
    assert list(todo.values()) == ["c"] and second[keys[0]].tolist() == [1.0, 1.0, 1.0]
    sql = sqlite3.connect(tmp_path / "e.sqlite").execute("SELECT sql FROM sqlite_master").fetchone()[0]
    assert sql == "CREATE TABLE emb (k BLOB PRIMARY KEY, v BLOB NOT NULL)"
    memory = TextCache(None, "nll", ["s REAL", "n INTEGER"], encode=lambda v: v, decode=tuple)
    memory.store({text_key("x"): (1.5, 3)})
    assert memory.missing(["x", "y"])[1] == {text_key("y"): "y"}


def test_atomic_writes_leave_whole_files_with_ordinary_permissions(tmp_path: Path) -> None:
    from advseq.storage import atomic_write_json, atomic_write_with

    umask = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "sub" / "a.json", {"x": Path("p")})
        assert path.read_text() == '{\n  "x": "p"\n}\n'
        assert path.stat().st_mode & 0o777 == 0o644

        def killed_halfway(tmp: Path) -> None:
            tmp.write_text("half")
            raise RuntimeError("killed")

        with pytest.raises(RuntimeError):
            atomic_write_with(path, killed_halfway)
        assert path.read_text() == '{\n  "x": "p"\n}\n'          # the old version survives
        assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]   # no temp left
    finally:
        os.umask(umask)


class _FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


def test_keep_freed_memory_sets_both_thresholds_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes

    libc = _FakeLibc()
    monkeypatch.setattr(ctypes, "CDLL", lambda _name: libc)
    monkeypatch.setattr(runtime, "_done", set())
    monkeypatch.delenv("ADVSEQ_KEEP_FREED", raising=False)
    assert runtime.keep_freed_memory()
    assert libc.calls == [(-3, runtime.MMAP_THRESHOLD), (-1, runtime.TRIM_THRESHOLD)]
    assert runtime.TRIM_THRESHOLD >= runtime.MMAP_THRESHOLD > 32 << 20   # above glibc's own ceiling
    assert not runtime.keep_freed_memory() and len(libc.calls) == 2


def test_keep_freed_memory_can_be_switched_off_and_needs_mallopt(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes

    libc = _FakeLibc()
    monkeypatch.setattr(ctypes, "CDLL", lambda _name: libc)
    monkeypatch.setattr(runtime, "_done", set())
    monkeypatch.setenv("ADVSEQ_KEEP_FREED", "0")
    assert not runtime.keep_freed_memory() and libc.calls == []
    monkeypatch.delenv("ADVSEQ_KEEP_FREED")
    monkeypatch.setattr(ctypes, "CDLL", lambda _name: object())      # a C library without mallopt
    assert not runtime.keep_freed_memory()


def test_console_script_keeps_freed_memory() -> None:
    """The entry point applies it before any command (and ``--help`` still loads nothing heavy)."""
    code = ("import advseq.runtime as r, advseq.cli as c, sys; sys.argv = ['advseq', '--version']\n"
            "try:\n    c.main()\nexcept SystemExit:\n    pass\n"
            "print('keep-freed' in r._done)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "ADVSEQ_KEEP_FREED": "1"})
    assert out.stdout.strip().splitlines()[-1] == "True"
