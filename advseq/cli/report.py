"""``advseq report``: turn run folders into a Markdown and a self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advseq.cli._common import console


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        runs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR...", help="Run folder(s) written by a run config (each holds index.json); several are combined into one report.", show_default=False)],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.md, report.html and figures/.")],
        examples: Annotated[int, typer.Option(min=0, help="Malicious users to show with every attack's post.")] = 3,
        title: Annotated[str | None, typer.Option(help="Report title (default: names the runs).")] = None,
    ) -> None:
        """Write a robustness report from the JSON results of one or more runs.

        Writes OUT/report.md (figures in OUT/figures/) and a self-contained OUT/report.html:
        summary, dataset card and shortcut audit, detectors, attack matrix, text quality,
        example posts, cost, retraining curves and provenance. The run folders are only read."""
        from advseq.report import build_report

        files = build_report(runs, out, examples=examples, title=title)
        console.print(f"report: {files.markdown} and {files.html} ({len(files.figures)} figures) "
                      f"in {files.seconds:.1f}s", highlight=False)
