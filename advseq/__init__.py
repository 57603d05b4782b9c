"""advseq: adversarial robustness testbed for deep user-sequence classifiers.

Importing advseq is cheap: no torch, no models, no network. The data model, loaders
and pipeline entry points are re-exported lazily::

    from advseq import load_dataset, robustness_run
    ds = load_dataset("data/demo/users.jsonl")
    split = ds.split(test_size=0.2, seed=0)
    robustness_run("configs/demo.toml", out="runs/demo")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Post": "advseq.schema",
    "User": "advseq.schema",
    "Dataset": "advseq.schema",
    "DataSplit": "advseq.schema",
    "load_dataset": "advseq.io",
    "save_jsonl": "advseq.io",
    "Tokenizer": "advseq.text",
    "Vocabulary": "advseq.text",
    "robustness_run": "advseq.api",
    "load_config": "advseq.pipeline",
    "train_detector": "advseq.training",
    "run_attack": "advseq.evaluation",
    "retrain_loop": "advseq.retrain",
    "build_report": "advseq.report",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'advseq' has no attribute {name!r}")
