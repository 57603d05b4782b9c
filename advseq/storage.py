"""Where advseq's files are written and read back: one module for each way of doing it.

* **Atomic writes.** Every file or folder advseq writes for later reading goes through
  here: a temporary sibling is written completely, then renamed over the destination
  (``os.replace`` is atomic on one filesystem), so readers see the old version or the
  new one, never a torn one. Temporary files get the permissions a plain ``open`` would
  give (the process umask), not ``mkstemp``'s owner-only ones.
* **Text caches.** :class:`TextCache` keeps a value per distinct text in memory and in a
  SQLite table keyed by :func:`text_key` (the sentence embeddings and the judge's
  scores live in two of them under ``$ADVSEQ_HOME/cache``).
* **Model folders.** A saved model is a folder: weights as safetensors, an optional
  ``vocab.json``, and ``config.json`` carrying a format tag, written last, so a folder
  with a readable ``config.json`` is complete (:func:`save_model_folder`,
  :func:`read_model_config`, :func:`load_safetensors`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from advseq.errors import ConfigError

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"

V = TypeVar("V")


# ---- atomic writes ---------------------------------------------------------------------
def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_sibling(path: Path) -> tuple[int, str]:
    """An open temporary file next to ``path`` (fd, name), with ordinary permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())
    return fd, tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and a rename."""
    path = Path(path)
    fd, tmp = _temp_sibling(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON atomically (numpy values and paths allowed)."""
    return atomic_write_text(
        path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def atomic_write_with(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` to produce a file at a temporary sibling, then rename it to
    ``path`` (for writers that want a path, e.g. Parquet or safetensors)."""
    path = Path(path)
    fd, tmp = _temp_sibling(path)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def replace_dir(tmp: str | Path, dest: str | Path) -> Path:
    """Move the finished folder ``tmp`` to ``dest``, replacing any folder there."""
    tmp, dest = Path(tmp), Path(dest)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def scratch_dir_for(dest: str | Path) -> Path:
    """An empty temporary sibling of ``dest`` to build a folder in before
    :func:`replace_dir`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


# ---- text caches -----------------------------------------------------------------------
def text_key(text: str) -> bytes:
    """A text's cache key: the 16-byte BLAKE2b digest of its UTF-8 bytes."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class TextCache(Generic[V]):
    """A value per distinct text, computed once: kept in memory and, given ``path``, in
    the SQLite table ``table (k BLOB PRIMARY KEY, <columns>)`` keyed by :func:`text_key`,
    so later processes reuse it.

    ``columns`` are the table's value columns as SQL (``"v BLOB NOT NULL"``);
    ``encode`` turns a value into their row values, ``decode`` a row back into a value.
    Callers ask :meth:`missing` which texts still need computing, compute those (in
    chunks if they like), :meth:`store` the results and read values by key.
    """

    def __init__(self, path: Path | None, table: str, columns: Sequence[str], *,
                 encode: Callable[[V], tuple[Any, ...]],
                 decode: Callable[[tuple[Any, ...]], V]) -> None:
        self.path = path
        self._mem: dict[bytes, V] = {}
        self._encode, self._decode = encode, decode
        names = ", ".join(c.split()[0] for c in columns)
        self._select = f"SELECT k, {names} FROM {table} WHERE k IN "
        self._insert = f"INSERT OR REPLACE INTO {table} VALUES (?{', ?' * len(columns)})"
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=60)
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (k BLOB PRIMARY KEY, "
                             f"{', '.join(columns)})")
            self._db.commit()

    def _load(self, keys: Sequence[bytes]) -> None:
        assert self._db is not None
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i:i + 500])
                rows = self._db.execute(f"{self._select}({','.join('?' * len(chunk))})", chunk)
                self._mem.update({row[0]: self._decode(row[1:]) for row in rows})

    def missing(self, texts: Sequence[str]) -> tuple[list[bytes], dict[bytes, str]]:
        """The key of each text, and ``{key: text}`` for the distinct texts with no
        value yet, in first-seen order (values the database holds are loaded first)."""
        keys = [text_key(t) for t in texts]
        todo = [k for k in dict.fromkeys(keys) if k not in self._mem]
        if todo and self._db is not None:
            self._load(todo)
            todo = [k for k in todo if k not in self._mem]
        wanted = set(todo)
        first: dict[bytes, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if k in wanted:
                first.setdefault(k, t)
        return keys, {k: first[k] for k in todo}

    def store(self, items: Mapping[bytes, V]) -> None:
        """Keep ``items`` (key -> value) in memory and in the database."""
        self._mem.update(items)
        if self._db is not None:
            with self._lock:
                self._db.executemany(self._insert, [(k, *self._encode(v)) for k, v in items.items()])
                self._db.commit()

    def __getitem__(self, key: bytes) -> V:
        return self._mem[key]


# ---- model folders ---------------------------------------------------------------------
#: the largest JSON file of a model folder advseq reads (configs, vocabularies, n-grams)
MAX_JSON_BYTES = 256 << 20


def one_line(err: BaseException | str, limit: int = 300) -> str:
    """An error message on one line, cut to ``limit`` characters."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def require_file(file: Path) -> Path:
    """``file``, or a :class:`ConfigError` saying its folder is missing it (or that it is
    not a regular file)."""
    if not file.is_file():
        if file.exists():
            raise ConfigError(f"{file}: not a regular file")
        raise ConfigError(f"{file.parent} is missing {file.name}")
    return file


def read_json_file(file: Path, what: str) -> Any:
    """The JSON value in ``file`` (a part of a model folder, described by ``what``); a
    :class:`ConfigError` naming the file when it is missing, too large, not UTF-8, not
    JSON or nested too deep."""
    require_file(file)
    try:
        if file.stat().st_size > MAX_JSON_BYTES:
            raise ConfigError(f"{file}: {what} larger than {MAX_JSON_BYTES >> 20} MB")
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:   # ValueError: bad UTF-8 or JSON
        raise ConfigError(f"{file}: cannot read {what} ({one_line(err)})") from None


def read_vocabulary(file: Path):  # -> Vocabulary
    """The :class:`~advseq.text.Vocabulary` saved in ``file``; a :class:`ConfigError`
    naming the file when it is missing or not a vocabulary."""
    from advseq.text import Vocabulary

    data = read_json_file(file, "vocabulary")
    try:
        if not isinstance(data, dict) or not all(isinstance(t, str) for t in data.get("tokens") or [0]):
            raise ConfigError("not an advseq vocabulary (expected format 'advseq-vocab/1')")
        return Vocabulary.from_dict(data)
    except (ConfigError, TypeError, ValueError) as err:
        raise ConfigError(f"{file}: {one_line(err)}") from None


def save_safetensors(file: str | Path, weights: torch.nn.Module | Mapping[str, torch.Tensor]) -> Path:
    """Write ``weights`` to ``file`` as safetensors, atomically: a module through
    safetensors' ``save_model`` (tensors it ties together, such as an LM's input and
    output embedding, are stored once), a mapping of name -> tensor as it is."""
    import safetensors.torch as st

    if isinstance(weights, Mapping):
        return atomic_write_with(file, lambda tmp: st.save_file(dict(weights), str(tmp)))
    return atomic_write_with(file, lambda tmp: st.save_model(weights, str(tmp)))


def load_safetensors(module: torch.nn.Module, file: Path, *, what: str, device: str = "cpu") -> None:
    """Load the safetensors ``file`` into ``module`` (tied tensors restored); a
    :class:`ConfigError` when it is missing or does not fit ``what`` (the model's name)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    require_file(file)
    try:
        load_model(module, str(file), device=device)
    except SafetensorError as err:
        raise ConfigError(f"{file}: not a readable safetensors file ({one_line(err)})") from None
    except (RuntimeError, ValueError, OSError) as err:
        raise ConfigError(f"{file} does not fit {what}: {one_line(err)}") from None


def load_safetensors_arrays(file: Path, shapes: Mapping[str, Callable[[tuple[int, ...]], bool]]
                            ) -> dict[str, Any]:
    """The numpy arrays of the safetensors ``file``, each name of ``shapes`` present with a
    floating-point dtype and a shape its predicate accepts; else a :class:`ConfigError`."""
    import numpy as np
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    require_file(file)
    try:
        arrays = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise ConfigError(f"{file}: not a readable safetensors file ({one_line(err)})") from None
    for name, fits in shapes.items():
        arr = arrays.get(name)
        if arr is None or not np.issubdtype(arr.dtype, np.floating) or not fits(arr.shape):
            got = "missing" if arr is None else f"{arr.dtype} of shape {list(arr.shape)}"
            raise ConfigError(f"{file}: tensor {name!r} does not fit this model ({got})")
    return arrays


def write_model_config(path: str | Path, fmt: str, fields: Mapping[str, Any]) -> Path:
    """Write ``path/config.json`` as ``{"format": fmt, **fields}``, atomically."""
    return atomic_write_json(Path(path) / CONFIG_FILE, {"format": fmt, **fields})


def save_model_folder(path: str | Path, fmt: str, fields: Mapping[str, Any], *,
                      weights: torch.nn.Module | Mapping[str, torch.Tensor] | None = None,
                      weights_file: str = WEIGHTS_FILE, vocab: Any = None,
                      vocab_file: str = VOCAB_FILE) -> Path:
    """Save a model to folder ``path``: ``weights`` (see :func:`save_safetensors`), then
    ``vocab`` (anything with ``save(path)``), then ``config.json`` with the format tag
    ``fmt`` and ``fields`` — last, so a readable config means a complete folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if weights is not None:
        save_safetensors(path / weights_file, weights)
    if vocab is not None:
        atomic_write_with(path / vocab_file, vocab.save)
    write_model_config(path, fmt, fields)
    return path


def read_model_config(path: str | Path, fmt: str, what: str, *,
                      required: Sequence[str] = (),
                      types: Mapping[str, type | tuple[type, ...]] | None = None) -> dict[str, Any]:
    """``path/config.json`` of a model saved with format tag ``fmt``; a
    :class:`ConfigError` naming ``what`` (e.g. ``"detector"``) when the file is absent,
    unreadable, of another format, lacks a ``required`` key or holds a key of another
    JSON type than ``types`` gives (``dict`` for an object, ``str``, ...)."""
    path = Path(path)
    cfg = path / CONFIG_FILE
    if not cfg.exists():
        raise ConfigError(f"{path} is not a saved {what} (no {CONFIG_FILE})")
    config = read_json_file(cfg, f"the {what} config")
    if not isinstance(config, dict) or config.get("format") != fmt:
        raise ConfigError(f"{cfg}: not an advseq {what} config (format {fmt!r} expected)")
    missing = [k for k in required if k not in config]
    if missing:
        raise ConfigError(f"{cfg}: not a complete {what} config (no {', '.join(map(repr, missing))})")
    for key, kind in (types or {}).items():
        if key in config and not isinstance(config[key], kind):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            names = " or ".join(_JSON_TYPES.get(k, k.__name__) for k in kinds)
            raise ConfigError(f"{cfg}: {key!r} must be {names}, got {type(config[key]).__name__}")
    return config


_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "true or false"}


def construct(cls: Callable[..., V], params: Mapping[str, Any], path: str | Path) -> V:
    """``cls(**params)`` for a model loaded from folder ``path``; a :class:`ConfigError`
    when the saved parameters do not fit the class."""
    from advseq.config import ParamError, build, owner_name

    file = Path(path) / CONFIG_FILE
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise ConfigError(f"{file}: 'params' must be an object of settings")
    try:
        return build(cls, params, owner_name(cls) if isinstance(cls, type) else str(cls))
    except ParamError as err:
        raise ConfigError(f"{file}: params.{err.key}: {err.problem}") from None
    except ConfigError as err:
        raise ConfigError(f"{file}: {err}") from None
