"""What every section builder reads: the loaded results, the figure folder and a few
lookups over them."""

from __future__ import annotations

from typing import Any

from advseq.report.blocks import Block, Heading
from advseq.report.figures import FigureFolder
from advseq.report.loading import AttackResult, ModelResult, Results


class ReportContext:
    """The results a report is built from, and where its figures go."""

    def __init__(self, res: Results, figures: FigureFolder, n_examples: int) -> None:
        self.res = res
        self.figs = figures
        self.n_examples = n_examples
        self.dataset_names = list(res.datasets)

    def models(self, dataset: str, surrogate: bool | None = False) -> list[ModelResult]:
        return [m for m in self.res.models if m.dataset == dataset
                and (surrogate is None or m.surrogate == surrogate)]

    def attacks(self, dataset: str) -> list[AttackResult]:
        return [a for a in self.res.attacks if a.dataset == dataset]

    def run_col(self) -> bool:
        return self.res.multi

    def best_shortcut(self, dataset: str) -> dict[str, Any] | None:
        rows = (self.res.datasets[dataset].info or {}).get("shortcut_audit") or []
        return max(rows, key=lambda r: (r.get("accuracy", 0), r.get("shortcut") != "majority"), default=None)

    def sub(self, dataset: str) -> list[Block]:
        return [Heading(3, f"Dataset {dataset}")] if len(self.dataset_names) > 1 else []
