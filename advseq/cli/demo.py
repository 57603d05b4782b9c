"""``advseq demo``: the main job on the bundled demo data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advseq.cli._common import ProgressOpt, console, styled


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")] = Path("runs/demo"),
        seed: Annotated[int, typer.Option(help="Seed for the split, training and attacks.")] = 0,
        progress: Annotated[bool | None, ProgressOpt] = None,
    ) -> None:
        """The full robustness run on the bundled demo data: detectors, PETGEN and the baselines (white-box, transfer, black-box), a retraining loop, and the report.

        Runs configs/demo.toml into OUT (finished work is reused, so a killed demo
        continues when started again) and prints where the report is."""
        from advseq.cli.data import render_info
        from advseq.demo import run_demo

        summary = run_demo(out, seed=seed, progress=progress, console=console,
                           show_dataset=render_info)
        console.print()
        console.print(styled("done", "bold green"), f"in {summary['seconds']:.0f}s; results in {out}/")
        console.print("report:", styled(summary["report"], "bold"), f"(markdown: {summary['markdown']})")
