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
Plain data can still be hostile: a list that contains itself, or sub-lists shared so
often that the expanded structure is astronomically large ("billion laughs"). Loading and
checking therefore do bounded work: tuples are measured as they are built (a dict key is
hashed at once, and hashing walks the whole tuple), and the loaded object is walked once
per distinct container with size, depth and cycle limits.
"""

from __future__ import annotations

import io
import os
import pickle
from itertools import chain
from pathlib import Path
from typing import Any

from advseq.errors import DataError
from advseq.io.jsonl import read_lines
from advseq.io.validate import (
    Problems,
    is_finite_number,
    open_data,
    parse_context,
    parse_label,
    parse_text,
    show,
)
from advseq.schema import Post, User

_ALLOWED = (str, tuple, list, dict, int, float, bool, type(None))
_CONTAINERS = (tuple, list, dict)
_TYPES_MESSAGE = "only str/tuple/list/dict/int/float are allowed"
#: largest pickle file read (the wiki release's biggest is about 1.4 MB)
MAX_PICKLE_BYTES = 2**30
#: most nodes the loaded structure may expand to, counting a shared part once per use
MAX_PICKLE_NODES = 20_000_000
#: deepest nesting of containers (a PETGEN dict is 3 deep: dict, tuple, str)
MAX_PICKLE_DEPTH = 100


def _refused_opcode(kind: str) -> Any:
    def refuse(self: RestrictedUnpickler) -> None:
        raise pickle.UnpicklingError(f"pickle holds a {kind}; {_TYPES_MESSAGE}")
    return refuse


def _measured(load_op: Any) -> Any:
    def run(self: RestrictedUnpickler) -> None:
        load_op(self)
        self._measure_tuple(self.stack[-1])
    return run


class RestrictedUnpickler(pickle._Unpickler):  # the Python implementation, to hook opcodes
    """Refuses every global lookup (no class, function or reducer can be reached), sets
    and frozensets, and tuples nested deeper than :data:`MAX_PICKLE_DEPTH` or, all
    together, expanding to more than :data:`MAX_PICKLE_NODES` nodes."""

    dispatch = dict(pickle._Unpickler.dispatch)
    for _op in (pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3, pickle.EMPTY_TUPLE):
        dispatch[_op[0]] = _measured(dispatch[_op[0]])
    for _op in (pickle.EMPTY_SET, pickle.FROZENSET, pickle.ADDITEMS):
        dispatch[_op[0]] = _refused_opcode("set")
    del _op

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self._tuples: dict[int, tuple[int, int]] = {}  # id -> (expanded size, depth)
        self._alive: list[tuple[Any, ...]] = []  # keeps measured tuples' ids unique
        self._tuple_nodes = 0

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain data is allowed)")

    def _measure_tuple(self, t: tuple[Any, ...]) -> None:
        size, depth = 1, 1
        for item in t:
            s, d = self._tuples.get(id(item), (1, 1)) if isinstance(item, tuple) else (1, 1)
            size, depth = size + s, max(depth, d + 1)
        self._tuple_nodes += size
        if depth > MAX_PICKLE_DEPTH:
            raise _TooBig(f"tuples nested more than {MAX_PICKLE_DEPTH} deep")
        if self._tuple_nodes > MAX_PICKLE_NODES:
            raise _TooBig(f"tuples that expand to more than {MAX_PICKLE_NODES:,} items (shared "
                          "sub-tuples count once per use)")
        self._tuples[id(t)] = (size, depth)
        self._alive.append(t)


class _TooBig(Exception):
    """A pickle whose structure exceeds a limit; the message says which."""


def safe_load_pickle(path: Path) -> Any:
    with open_data(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_PICKLE_BYTES:
            raise DataError(path, f"pickle of {size:,} bytes is larger than the "
                                  f"{MAX_PICKLE_BYTES:,} read")
        try:
            data = fh.read()
        except OSError as err:
            raise DataError(path, f"cannot read file ({err.strerror or err})") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(data)).load()
    except _TooBig as err:
        raise DataError(path, f"pickle holds {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, MemoryError, OverflowError, RecursionError) as err:
        reason = str(err)[:200] or ("it ends too early" if isinstance(err, EOFError)
                                    else type(err).__name__)
        raise DataError(path, f"not a plain-data pickle ({reason})") from None
    except Exception as err:  # e.g. struct.error on a truncated opcode argument
        raise DataError(path, f"not a plain-data pickle ({type(err).__name__}: "
                              f"{str(err)[:200]})") from None
    _check_structure(obj, path)
    return obj


def _check_structure(obj: Any, path: Path) -> None:
    """Allowed types only, no container inside itself, and bounded depth and expanded size.
    Problems inside the N-th entry of a top-level dict are reported as row N."""
    walk = _Walk(path, obj)
    size, depth = 1, 1
    if isinstance(obj, dict):
        items = ((i // 2 + 1, x) for i, x in enumerate(chain.from_iterable(obj.items())))
    else:
        items = ((None, x) for x in (obj if isinstance(obj, (list, tuple)) else ()))
        walk.check_type(obj, None)
    for row, item in items:
        s, d = walk.measure(item, row)
        size, depth = size + s, max(depth, d + 1)
        walk.check_limits(size, depth, row)


class _Walk:
    """Measures containers: each distinct one is walked once (a visited map by ``id``); a
    shared one adds its recorded size and depth each time it is met again."""

    def __init__(self, path: Path, root: Any) -> None:
        self.path = path
        self.done: dict[int, tuple[int, int]] = {}  # id -> (expanded size, depth)
        self.on_path: set[int] = {id(root)}  # containers being walked: meeting one is a cycle

    def check_type(self, x: Any, row: int | None) -> None:
        if not isinstance(x, _ALLOWED):
            raise DataError(self.path, f"pickle holds a {type(x).__name__}; {_TYPES_MESSAGE}",
                            row=row)

    def check_limits(self, size: int, depth: int, row: int | None) -> None:
        if depth > MAX_PICKLE_DEPTH:
            raise DataError(self.path, f"pickle nests containers more than {MAX_PICKLE_DEPTH} "
                                       "deep", row=row)
        if size > MAX_PICKLE_NODES:
            raise DataError(self.path, f"pickle expands to more than {MAX_PICKLE_NODES:,} items "
                                       "(shared sub-lists count once per use)", row=row)

    def measure(self, x: Any, row: int | None) -> tuple[int, int]:
        """(expanded size, depth) of ``x``, walked without recursion."""
        self.check_type(x, row)
        if not isinstance(x, _CONTAINERS):
            return 1, 1
        if id(x) in self.done:
            return self.done[id(x)]
        if id(x) in self.on_path:
            raise DataError(self.path, f"pickle holds a {type(x).__name__} that contains itself",
                            row=row)
        self.on_path.add(id(x))
        stack = [(x, _children(x), [1, 1])]  # container, its unread children, [size, depth]
        while stack:
            node, children, acc = stack[-1]
            for child in children:
                self.check_type(child, row)
                if not isinstance(child, _CONTAINERS):
                    acc[0], acc[1] = acc[0] + 1, max(acc[1], 2)
                elif id(child) in self.done:
                    size, depth = self.done[id(child)]
                    acc[0], acc[1] = acc[0] + size, max(acc[1], depth + 1)
                    self.check_limits(*acc, row)
                elif id(child) in self.on_path:
                    raise DataError(self.path, f"pickle holds a {type(child).__name__} that "
                                               "contains itself", row=row)
                else:
                    self.check_limits(0, len(stack) + 1, row)
                    self.on_path.add(id(child))
                    stack.append((child, _children(child), [1, 1]))
                    break
            else:
                stack.pop()
                self.on_path.discard(id(node))
                self.done[id(node)] = (acc[0], acc[1])
                self.check_limits(*acc, row)
                if stack:
                    parent = stack[-1][2]
                    parent[0], parent[1] = parent[0] + acc[0], max(parent[1], acc[1] + 1)
        return self.done[id(x)]


def _children(x: Any) -> Any:
    return chain.from_iterable(x.items()) if isinstance(x, dict) else iter(x)


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
    main = Problems(files[".pkl"])  # names the pickle in errors; `problems` decides skip/raise
    context_file = Problems(files["_context.pkl"])
    users: list[User] = []
    for i, seq in enumerate(keys, start=1):
        loc = {"row": i}
        try:
            if not isinstance(seq, tuple) or not seq:
                raise main.error("key must be a non-empty tuple of post texts", **loc)
            label = parse_label(labels[seq], main, **loc)
            file_label = parse_label(label_lines[i - 1], label_file, line=i)
            if file_label != label:
                raise DataError(files["_label.txt"], f"label {file_label} disagrees with "
                                f"{files['.pkl'].name} ({label})", line=i, field="label")
            flags = relevancy[seq]
            if not isinstance(flags, list) or len(flags) != len(seq) - 1:
                raise DataError(files["_relevancy.pkl"], f"needs {len(seq) - 1} flags (one per "
                                f"non-final post), got {show(flags)}", row=i, field="relevancy")
            context = contexts[seq]
            if not isinstance(context, str):
                raise DataError(files["_context.pkl"], f"must be a string, got "
                                f"{type(context).__name__}", row=i, field="context")
            parse_context(context, context_file, field="context", **loc)
            texts = [parse_text(t, main, field=f"posts[{j}]", **loc) for j, t in enumerate(seq)]
            if not all(is_finite_number(f) for f in flags):
                raise DataError(files["_relevancy.pkl"], "flags must be finite numbers", row=i,
                                field="relevancy")
        except DataError as err:
            problems.skip_or_raise(err, "user")
            continue
        posts = [Post(t, None, None, float(f)) for t, f in zip(texts[:-1], flags, strict=True)]
        posts.append(Post(texts[-1], context, None, None))
        users.append(User(f"{name}-{i:06d}", label, tuple(posts)))
    return users

