"""Train, save and evaluate a detector the same way from the CLI and from Python.

A trained-model folder holds the detector (``config.json``, weights, ``vocab.json``),
``metrics.json`` (test-split scores and speed), ``split.json`` (the exact train/test user
ids, so attacks later use the same test users) and ``manifest.json`` (config, seed,
data checksum, versions, git hash).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from advseq.detector import Detector, create_detector, load_detector
from advseq.errors import ConfigError
from advseq.manifest import build_manifest, write_json
from advseq.metrics import classification_metrics
from advseq.schema import Dataset, DataSplit

METRICS_FILE = "metrics.json"
SPLIT_FILE = "split.json"
MANIFEST_FILE = "manifest.json"


def data_record(ds: Dataset) -> dict[str, Any]:
    return {"name": ds.name, "source": ds.source, "checksum": ds.checksum(), "users": len(ds),
            "posts": ds.n_posts}


def train_detector(data: Dataset, detector: str, out: str | Path, *, seed: int = 0,
                   params: dict[str, Any] | None = None, test_size: float = 0.2,
                   split_seed: int = 0, progress: bool | None = None) -> dict[str, Any]:
    """Split ``data`` (stratified, ``split_seed``), train ``detector`` on the training users
    with ``seed``, score every test user, and write the model folder ``out``.
    Returns the metrics dict (also in ``out/metrics.json``)."""
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
    """The split a model was trained with, if ``data`` is the dataset it was trained on."""
    model_dir = Path(model_dir)
    try:
        manifest = json.loads((model_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        record = json.loads((model_dir / SPLIT_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if (manifest.get("data") or {}).get("checksum") != data.checksum():
        return None
    return DataSplit.from_dict(data, record)


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
