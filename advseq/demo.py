"""The main job behind ``advseq demo`` (the README's first command).

On the bundled demo data it runs ``configs/demo.toml``: trains the detectors, runs PETGEN
and the baselines white-box and transfer (plus a black-box score attack), runs a
retraining loop, and writes the report. Everything lands in the run folder; a killed
demo continues where it stopped when started again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from advseq.errors import ResourceMissing
from advseq.paths import REPO_DIR

DEMO_CONFIG = REPO_DIR / "configs" / "demo.toml"


def run_demo(out: str | Path, *, seed: int = 0, progress: bool | None = None,
             console: Console | None = None,
             show_dataset: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the demo into ``out``; ``show_dataset`` (the CLI's renderer) is given the demo
    data's summary and shortcut audit before the run starts."""
    from advseq.api import robustness_run
    from advseq.audit import describe
    from advseq.io import load_dataset
    from advseq.paths import demo_data
    from advseq.run_config import check_out_folder, check_seed

    console = console or Console()
    if not DEMO_CONFIG.is_file():
        raise ResourceMissing(f"{DEMO_CONFIG} not found: run advseq demo from a source checkout")
    check_seed(seed)
    check_out_folder(Path(out), "--out")
    t0 = time.perf_counter()
    if show_dataset is not None:
        show_dataset(describe(load_dataset(demo_data()), seed=seed))
    res = robustness_run(DEMO_CONFIG, out=out, seed=seed, progress=progress, console=console)
    report = res["report"]
    return {"seconds": round(time.perf_counter() - t0, 1), "index": res["index"], "report": str(report.html),
            "markdown": str(report.markdown)}
