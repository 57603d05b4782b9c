"""Detection metrics (malicious = positive class) on every scored user — no batch dropping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

METRIC_KEYS = ("precision", "recall", "f1", "accuracy", "roc_auc", "pr_auc", "confusion", "n")


def classification_metrics(y_true: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray,
                           threshold: float = 0.5) -> dict[str, Any]:
    """precision, recall, F1, accuracy at ``threshold``; ROC-AUC and PR-AUC (average
    precision) from the scores; confusion ``[[tn, fp], [fn, tp]]``; ``n`` users scored.
    AUCs are ``None`` when only one class is present."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(prob, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and scores {p.shape} differ in shape")
    pred = (p >= threshold).astype(np.int64)
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    both = len(np.unique(y)) == 2
    return {
        "precision": round(precision, 6),
        "recall": round(recall, 6),
        "f1": round(f1, 6),
        "accuracy": round((tp + tn) / len(y), 6) if len(y) else 0.0,
        "roc_auc": round(float(roc_auc_score(y, p)), 6) if both else None,
        "pr_auc": round(float(average_precision_score(y, p)), 6) if both else None,
        "confusion": [[tn, fp], [fn, tp]],
        "n": int(len(y)),
    }
