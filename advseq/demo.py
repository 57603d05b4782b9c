"""The demo pipeline behind ``advseq demo`` (and the README's main command).

Stages, each writing its results under the run folder:

1. ``data_info.json`` — dataset summary and shortcut audit of the bundled demo data;
2. ``detectors/<name>/`` — every demo detector trained on the seeded 80/20 split, with
   ``metrics.json``; ``detectors.json`` collects them next to the shortcut audit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from advseq.audit import describe
from advseq.io import load_dataset
from advseq.manifest import build_manifest, write_json
from advseq.paths import demo_data

#: detectors the demo trains, with settings sized for a 2-core CPU
DEMO_DETECTORS: dict[str, dict[str, Any]] = {
    "tfidf-lr": {},
    "hlstm": {"emb_dim": 128, "post_hidden": 128, "seq_hidden": 64, "epochs": 15},
}


def run_demo(out: str | Path, *, seed: int = 0, progress: bool | None = None,
             console: Console | None = None) -> dict[str, Any]:
    from advseq.cli.data import render_info
    from advseq.training import train_detector

    console = console or Console()
    out = Path(out)
    t0 = time.perf_counter()
    ds = load_dataset(demo_data())
    info = describe(ds, seed=seed)
    write_json(out / "data_info.json", info)
    render_info(info)

    results = {}
    for name, params in DEMO_DETECTORS.items():
        console.print(f"training [bold]{name}[/] ...")
        results[name] = train_detector(ds, name, out / "detectors" / name, seed=seed, params=params,
                                       progress=progress)
    table = Table(title="Detectors on the demo test split", title_justify="left")
    for col in ("detector", "F1", "ROC-AUC", "accuracy", "train s", "users/s"):
        table.add_column(col, justify="left" if col == "detector" else "right")
    for name, m in results.items():
        table.add_row(name, f"{m['f1']:.3f}", f"{m['roc_auc']:.3f}", f"{m['accuracy']:.3f}",
                      f"{m['train_seconds']:.1f}", f"{m['train_users_per_second']}")
    console.print(table)
    summary = {"seconds": round(time.perf_counter() - t0, 1), "detectors": results,
               "shortcut_audit": info["shortcut_audit"]}
    write_json(out / "detectors.json", summary)
    write_json(out / "manifest.json", build_manifest({"demo": DEMO_DETECTORS}, seed=seed,
                                                     data={"checksum": info["checksum"]}))
    return summary
