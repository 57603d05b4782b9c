"""The whole pipeline in one call, for use from Python (``advseq run`` does the same)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def robustness_run(config: str | Path | Mapping[str, Any], *, out: str | Path | None = None,
                   report: bool = True, progress: bool | None = None,
                   console: Any = None, seed: int | None = None,
                   repair: bool = False, executor: str = "local", address: str | None = None,
                   workers: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Run a matrix config — a TOML path or the same tables as a dict — into ``out``
    (finished units are reused, an interrupted run continues) and write its report.

    ``seed`` overrides the config's ``[run] seed``; ``repair`` lets attack units resume from
    results files with bad lines (dropped and named) instead of refusing; ``executor``,
    ``address``, ``workers``: who runs the units (:func:`advseq.pipeline.run_matrix`); ``device``
    (a checked name) replaces the config's device keys. Returns ``{"out": Path,
    "index": <index.json>, "report": ReportFiles | None}``.
    """
    from advseq.pipeline import load_config, run_matrix
    from advseq.report import build_report
    from advseq.run_config import check_seed

    if seed is not None:
        check_seed(seed)
    cfg = load_config(config, out=out)
    if seed is not None:
        cfg.seed = seed
    if device is not None:
        from advseq.executors.resources import override_device

        override_device(cfg, device)
    index = run_matrix(cfg, progress=progress, console=console, repair=repair, executor=executor,
                       address=address, workers=workers)
    files = build_report([cfg.out], cfg.out / "report") if report else None
    return {"out": cfg.out, "index": index, "report": files}
