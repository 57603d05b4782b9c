"""The PETGEN authors' pickle release (github.com/claws-lab/petgen, dataset/testdata/).

Layout for a dataset called NAME (e.g. ``wiki``), all dicts keyed by the same tuple of
post texts, in the same order:

* ``NAME.pkl``            tuple of posts -> label (int)
* ``NAME_context.pkl``    tuple of posts -> context string of the final post
* ``NAME_relevancy.pkl``  tuple of posts -> list of 0/1 flags, one per non-final post
* ``NAME_label.txt``      one label per line, same order (cross-checked)

Users become ``NAME-000001`` ... by position, exactly as in ../shared/data/wiki/users.jsonl.
Pickles can run code when loaded, so they are read with :class:`RestrictedUnpickler`,
which admits only str/tuple/list/dict/int/float (and None/bool, which need no lookup).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from advseq.errors import DataError
from advseq.io.jsonl import read_lines
from advseq.io.validate import Problems, parse_label, parse_text
from advseq.schema import Post, User

_ALLOWED = (str, tuple, list, dict, int, float, bool, type(None))


class RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global lookup: no class, function or reducer can be reached."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain data is allowed)")


def safe_load_pickle(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot read file ({err.strerror or err})") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, MemoryError) as err:
        raise DataError(path, f"not a plain-data pickle ({err})") from None
    _check_types(obj, path)
    return obj


def _check_types(obj: Any, path: Path) -> None:
    stack = [obj]
    while stack:
        x = stack.pop()
        if not isinstance(x, _ALLOWED):
            raise DataError(path, f"pickle holds a {type(x).__name__}; only str/tuple/list/dict/"
                                  "int/float are allowed")
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)


def petgen_name(path: Path) -> tuple[Path, str]:
    """(folder, NAME) for a folder holding ``NAME_label.txt`` or a path to ``NAME.pkl``."""
    if path.is_dir():
        labels = sorted(path.glob("*_label.txt"))
        if len(labels) != 1:
            raise DataError(path, "expected exactly one NAME_label.txt in a PETGEN release folder, "
                                  f"found {len(labels)}")
        return path, labels[0].name[: -len("_label.txt")]
    return path.parent, path.stem


def load_petgen(path: Path, problems: Problems) -> list[User]:
    folder, name = petgen_name(path)
    files = {k: folder / f"{name}{k}" for k in (".pkl", "_context.pkl", "_relevancy.pkl", "_label.txt")}
    for f in files.values():
        if not f.exists():
            raise DataError(f, "missing file of the PETGEN release")
    labels = safe_load_pickle(files[".pkl"])
    contexts = safe_load_pickle(files["_context.pkl"])
    relevancy = safe_load_pickle(files["_relevancy.pkl"])
    for f, d in ((files[".pkl"], labels), (files["_context.pkl"], contexts),
                 (files["_relevancy.pkl"], relevancy)):
        if not isinstance(d, dict):
            raise DataError(f, f"expected a dict of post tuples, got {type(d).__name__}")
    keys = list(labels)
    for f, d in ((files["_context.pkl"], contexts), (files["_relevancy.pkl"], relevancy)):
        if list(d) != keys:
            raise DataError(f, f"keys differ from {files['.pkl'].name} (the three dicts must share "
                               "the same post tuples in the same order)")
    label_lines = [ln.strip() for _, ln in read_lines(files["_label.txt"]) if ln.strip()]
    if len(label_lines) != len(keys):
        raise DataError(files["_label.txt"], f"has {len(label_lines)} labels for {len(keys)} users")

    label_file = Problems(files["_label.txt"])
    users: list[User] = []
    for i, seq in enumerate(keys, start=1):
        loc = {"row": i}
        try:
            if not isinstance(seq, tuple) or not seq:
                raise problems.error("key must be a non-empty tuple of post texts", **loc)
            label = parse_label(labels[seq], problems, **loc)
            file_label = parse_label(label_lines[i - 1], label_file, line=i)
            if file_label != label:
                raise DataError(files["_label.txt"], f"label {file_label} disagrees with "
                                f"{files['.pkl'].name} ({label})", line=i, field="label")
            flags = relevancy[seq]
            if not isinstance(flags, list) or len(flags) != len(seq) - 1:
                raise DataError(files["_relevancy.pkl"], f"needs {len(seq) - 1} flags (one per "
                                f"non-final post), got {flags!r:.60}", row=i, field="relevancy")
            context = contexts[seq]
            if not isinstance(context, str):
                raise DataError(files["_context.pkl"], f"must be a string, got "
                                f"{type(context).__name__}", row=i, field="context")
            texts = [parse_text(t, problems, field=f"posts[{j}]", **loc) for j, t in enumerate(seq)]
            if any(isinstance(f, bool) or not isinstance(f, (int, float)) for f in flags):
                raise DataError(files["_relevancy.pkl"], "flags must be numbers", row=i,
                                field="relevancy")
        except DataError as err:
            problems.skip_or_raise(err, "user")
            continue
        posts = [Post(t, None, None, float(f)) for t, f in zip(texts[:-1], flags, strict=True)]
        posts.append(Post(texts[-1], context, None, None))
        users.append(User(f"{name}-{i:06d}", label, tuple(posts)))
    return users

