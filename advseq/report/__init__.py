"""Robustness reports from run folders: ``advseq report RUN_DIR... --out DIR``.

Everything in a report comes from the JSON results a run wrote — ``index.json``,
``run.json``, ``datasets/*/info.json``, model ``metrics.json``/``manifest.json``, attack
``summary.json``/``results.jsonl``/``manifest.json``, retraining ``rounds.json`` — plus
the dataset itself, read only to quote users' real posts next to the attacks' posts.
Nothing is typed by hand, and the run folders are never modified.

``build_report`` writes ``DIR/report.md`` (figures as ``DIR/figures/*.png``) and a
self-contained ``DIR/report.html``: inline CSS, figures as base64 PNG data URIs, no
script, nothing fetched. Figures use matplotlib's Agg canvas (no pyplot state).

The pieces: :mod:`~advseq.report.loading` reads the run folders into :class:`Results`;
the section modules (:mod:`~advseq.report.run_sections`,
:mod:`~advseq.report.attack_sections`, :mod:`~advseq.report.posts_sections` — only when
some unit wrote K > 1 posts per user —, :mod:`~advseq.report.retraining`) turn them into
the document model of :mod:`~advseq.report.blocks`, with plots from
:mod:`~advseq.report.figures`; :mod:`~advseq.report.render` writes Markdown and HTML.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from advseq.report.attack_sections import (
    attack_matrix_section,
    cost_section,
    examples_section,
    text_quality_section,
)
from advseq.report.blocks import SECTIONS, Figure, Section
from advseq.report.context import ReportContext
from advseq.report.figures import FigureFolder
from advseq.report.loading import Results, load_results
from advseq.report.posts_sections import POSTS_SECTION, has_posts, posts_section
from advseq.report.render import render_html, render_markdown
from advseq.report.retraining import retrain_verdict, retraining_section
from advseq.report.run_sections import (
    dataset_section,
    detectors_section,
    provenance_section,
    summary_section,
)
from advseq.storage import atomic_write_text

__all__ = ["FIGURES_DIR", "POSTS_SECTION", "REPORT_HTML", "REPORT_MD", "SECTIONS", "ReportFiles", "Results",
           "build_report", "load_results", "render_html", "render_markdown", "retrain_verdict"]

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"

#: the section builders, in the order of :data:`SECTIONS` (figures are numbered in this order)
_SECTION_BUILDERS = (summary_section, dataset_section, detectors_section, attack_matrix_section,
                     text_quality_section, examples_section, cost_section, retraining_section,
                     provenance_section)


@dataclass
class ReportFiles:
    markdown: Path
    html: Path
    figures: list[Path]
    seconds: float


def build_sections(res: Results, figures: FigureFolder, examples: int = 3) -> list[Section]:
    """Every section of the report, in order; figures are saved to ``figures`` on the way.
    The written-posts section follows the attack matrix when some unit has K > 1."""
    ctx = ReportContext(res, figures, examples)
    builders = list(_SECTION_BUILDERS)
    if has_posts(res):
        builders.insert(builders.index(attack_matrix_section) + 1, posts_section)
    return [build(ctx) for build in builders]


def build_report(run_dirs: Sequence[str | Path], out: str | Path, *, examples: int = 3,
                 title: str | None = None) -> ReportFiles:
    """Read the run folders and write ``out/report.md``, ``out/figures/*.png`` and the
    self-contained ``out/report.html``."""
    t0 = time.perf_counter()
    res = load_results(run_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / FIGURES_DIR
    for old in fig_dir.glob("[0-9][0-9]-*.png"):
        old.unlink()  # figures of an earlier report into the same folder
    sections = build_sections(res, FigureFolder(fig_dir), examples)
    title = title or "advseq robustness report: " + ", ".join(r.name for r in res.runs)
    generated = time.strftime("%Y-%m-%d %H:%M:%S %z")
    atomic_write_text(out / REPORT_MD, render_markdown(title, sections, generated, out))
    atomic_write_text(out / REPORT_HTML, render_html(title, sections, generated))
    figures = [b.path for s in sections for b in s.blocks if isinstance(b, Figure)]
    return ReportFiles(out / REPORT_MD, out / REPORT_HTML, figures, round(time.perf_counter() - t0, 2))
