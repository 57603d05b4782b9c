"""Train, save and evaluate a detector the same way from the CLI and from Python.

A trained-model folder holds the detector (``config.json``, weights, ``vocab.json``),
``metrics.json`` (test-split scores and speed), ``split.json`` (the exact train/test user
ids, so attacks later use the same test users) and ``manifest.json`` (config, seed,
data checksum, versions, git hash).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from advseq.detector import Detector, create_detector, load_detector, read_config
from advseq.errors import ConfigError
from advseq.manifest import build_manifest, write_json
from advseq.metrics import classification_metrics
from advseq.schema import Dataset, DataSplit
from advseq.storage import replace_dir, scratch_dir_for

#: oneDNN (torch's CPU convolutions) caches up to 1024 compiled primitives by default, one
#: per input shape, each holding megabytes; training batches have ever new shapes (posts
#: per batch, tokens per post), so one epoch over 100k users grew the cache by gigabytes
#: (bench/results/scale.md). A small cache keeps the shapes that repeat and changes no
#: number. Read once, at the first convolution of the process; a value set by the user wins.
ONEDNN_CACHE_CAPACITY = "32"
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)

METRICS_FILE = "metrics.json"
SPLIT_FILE = "split.json"
MANIFEST_FILE = "manifest.json"


def data_record(ds: Dataset) -> dict[str, Any]:
    return {"name": ds.name, "source": ds.source, "checksum": ds.checksum(), "users": len(ds),
            "posts": ds.n_posts}


def train_detector(data: Dataset, detector: str, out: str | Path, *, seed: int = 0,
                   params: dict[str, Any] | None = None, test_size: float = 0.2,
                   split_seed: int = 0, progress: bool | None = None,
                   overwrite: bool | None = None) -> dict[str, Any]:
    """Split ``data`` (stratified, ``split_seed``), train ``detector`` on the training users
    with ``seed``, score every test user, and write the model folder ``out``.
    Returns the metrics dict (also in ``out/metrics.json``).

    ``overwrite`` says what happens to an ``out`` that already holds files: ``None``
    writes into it as it is (how a run matrix finishes a killed unit), ``False`` refuses,
    ``True`` builds the model in a scratch sibling and then replaces ``out`` whole, so no
    file of the old model survives (and the old model stays if training fails)."""
    target = check_out_folder(out)
    if overwrite is None or not target.is_dir() or not any(target.iterdir()):
        return _train_into(data, detector, target, seed=seed, params=params, test_size=test_size,
                           split_seed=split_seed, progress=progress)
    if not overwrite:
        raise ConfigError(f"{target} already exists; pass --overwrite to replace it whole or "
                          "choose another --out")
    shown, target = target, target.resolve()
    if not _is_model_folder(target):
        raise ConfigError(f"{shown} is not a model folder (no advseq detector config.json); "
                          "not replacing it: choose another --out")
    if Path.cwd().resolve().is_relative_to(target):
        raise ConfigError(f"{shown} holds the current folder; not replacing it: choose "
                          "another --out")
    scratch = scratch_dir_for(target)
    try:
        metrics = _train_into(data, detector, scratch, seed=seed, params=params,
                              test_size=test_size, split_seed=split_seed, progress=progress)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    replace_dir(scratch, target)
    return metrics


def check_out_folder(out: str | Path) -> Path:
    """``out`` as a Path, or a :class:`ConfigError` when no folder can be written there
    (a file is in the way, or the nearest existing folder is not writable)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose another --out")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{out}: {existing} is not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK) or (existing == out and not os.access(out, os.R_OK)):
        raise ConfigError(f"{out}: {existing} is not writable; choose another --out")
    return out


def _is_model_folder(path: Path) -> bool:
    """Whether ``path`` holds a saved detector (or the checkpoint of a killed training)."""
    for folder in (path, path / "checkpoint"):
        try:
            read_config(folder)
            return True
        except ConfigError:
            pass
    return False


def _train_into(data: Dataset, detector: str, out: Path, *, seed: int,
                params: dict[str, Any] | None, test_size: float, split_seed: int,
                progress: bool | None) -> dict[str, Any]:
    out = Path(out)
    params = dict(params or {})
    split = data.split(test_size=test_size, seed=split_seed)
    det = create_detector(detector, seed=seed, **params)
    ckpt = out / "checkpoint"
    t0 = time.perf_counter()
    det.fit(split.train.users, checkpoint_dir=ckpt, progress=progress)
    wall = time.perf_counter() - t0
    det.save(out)
    shutil.rmtree(ckpt, ignore_errors=True)  # the saved model is the best-epoch checkpoint
    metrics = test_metrics(det, split.test)
    info = getattr(det, "fit_info_", {})
    n_train = len(split.train)
    epochs = info.get("epochs", 1)
    seconds = info.get("train_seconds", round(wall, 3))
    metrics.update(
        n_test=len(split.test),
        train_seconds=seconds,
        train_users_per_second=info.get("train_users_per_second")
        or (round(n_train * epochs / seconds, 2) if seconds else None),
        epochs=epochs,
    )
    write_json(out / METRICS_FILE, metrics)
    write_json(out / SPLIT_FILE, split.to_dict())
    write_json(out / MANIFEST_FILE, build_manifest(
        {"detector": detector, "params": det.get_params(), "test_size": test_size,
         "split_seed": split_seed},
        seed=seed, data=data_record(data),
        split={"seed": split_seed, "test_size": test_size, "n_train": n_train,
               "n_test": len(split.test), "file": SPLIT_FILE},
        fit_info=info))
    return metrics


def test_metrics(det: Detector, test: Dataset) -> dict[str, Any]:
    prob = det.predict_proba(test.users)
    return classification_metrics(test.labels, prob)


def recorded_split(model_dir: str | Path, data: Dataset) -> DataSplit | None:
    """The split a model was trained with, if ``data`` is the dataset it was trained on;
    None for another dataset or a folder that records no split. A damaged record is a
    :class:`ConfigError` reading ``FILE: field: problem``: scoring the training users as
    if they were held out would overstate the detector."""
    model_dir = Path(model_dir)
    manifest_file, split_file = model_dir / MANIFEST_FILE, model_dir / SPLIT_FILE
    if not manifest_file.exists() and not split_file.exists():
        return None
    manifest = _read_json(manifest_file)
    checksum = (manifest.get("data") if isinstance(manifest, dict) else None) or {}
    checksum = checksum.get("checksum") if isinstance(checksum, dict) else None
    if not isinstance(checksum, str):
        raise ConfigError(f"{manifest_file}: data.checksum: missing (not a manifest written by "
                          "advseq train)")
    if checksum != data.checksum():
        return None
    record = _read_json(split_file)
    problem = _split_problem(record, data)
    if problem is not None:
        raise ConfigError(f"{split_file}: {problem}")
    return DataSplit.from_dict(data, record)


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise ConfigError(f"{path}: missing")
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        reason = err.msg if isinstance(err, json.JSONDecodeError) else type(err).__name__
        raise ConfigError(f"{path}: not valid JSON ({reason})") from None


def _split_problem(record: Any, data: Dataset) -> str | None:
    """What is wrong with a split record for ``data`` (as ``field: problem``), or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    ids: dict[str, list[str]] = {}
    for key in ("train_ids", "test_ids"):
        value = record.get(key)
        if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
            return f"{key}: {'missing' if value is None else 'must be a list of user ids (strings)'}"
        if not value:
            return f"{key}: empty"
        if len(set(value)) != len(value):
            seen: set[str] = set()
            twice = next(i for i in value if i in seen or seen.add(i))
            return f"{key}: user {_show(twice)} is listed twice"
        absent = [i for i in value if i not in data]
        if absent:
            return (f"{key}: names {len(absent)} user(s) absent from this dataset (first: "
                    f"{_show(absent[0])})")
        ids[key] = value
    both = set(ids["train_ids"]) & set(ids["test_ids"])
    if both:
        first = next(i for i in ids["test_ids"] if i in both)
        return f"test_ids: {_ids(len(both))} also in train_ids (first: {_show(first)})"
    seed, size = record.get("seed"), record.get("test_size")
    if not isinstance(seed, int) or isinstance(seed, bool):
        return "seed: must be a whole number"
    if not isinstance(size, (int, float)) or isinstance(size, bool) or not 0 < size < 1:
        return "test_size: must be a number between 0 and 1"
    return None


def _ids(n: int) -> str:
    return "1 id is" if n == 1 else f"{n} ids are"


def _show(user_id: str) -> str:
    return repr(user_id if len(user_id) <= 40 else user_id[:37] + "...")


def evaluate_saved(model_dir: str | Path, data: Dataset, *, all_users: bool = False) -> dict[str, Any]:
    """Score a saved detector: on its recorded test split when ``data`` is its training
    dataset, else (or with ``all_users``) on every user of ``data``."""
    det = load_detector(model_dir)
    split = None if all_users else recorded_split(model_dir, data)
    users = split.test if split is not None else data
    if len(users) == 0:
        raise ConfigError("no users to evaluate")
    t0 = time.perf_counter()
    metrics = test_metrics(det, users)
    seconds = time.perf_counter() - t0
    metrics.update(
        evaluated_on="recorded test split" if split is not None else "all users",
        n_test=len(users), detector=det.name, data=data_record(data),
        predict_seconds=round(seconds, 3),
        predict_users_per_second=round(len(users) / seconds, 1) if seconds else None,
    )
    return metrics
