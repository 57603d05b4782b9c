"""The report's figures: matplotlib on the Agg canvas (no pyplot state), saved as numbered
PNGs. matplotlib is imported inside each function, so importing the report stays light."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advseq.report.blocks import Figure, ordered, slug
from advseq.threat import THREAT_MODES

#: how each threat mode is drawn (bar hatch, colour, scatter marker)
MODE_HATCH = {"white-box": "", "score": "//", "label": "..", "transfer": "xx"}
MODE_COLOR = {"white-box": "#c0392b", "score": "#d68910", "label": "#2471a3", "transfer": "#7d3c98"}
MODE_MARKER = {"white-box": "o", "score": "s", "label": "^", "transfer": "D"}
FIG_DPI = 144       #: PNG resolution; HTML shows figures at 96 px per inch (1.5x for sharp screens)


class FigureFolder:
    """Saves figures as PNGs under ``DIR/figures`` and numbers them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def save(self, fig: Any, name: str, alt: str, caption: str) -> Figure:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count += 1
        path = self.folder / f"{self.count:02d}-{slug(name)}.png"
        fig.savefig(path, dpi=FIG_DPI, facecolor="white", metadata={"Software": None})
        return Figure(path, alt, caption, self.count, round(fig.get_size_inches()[0] * 96))


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(w, h), layout="constrained")


def _rc() -> Any:
    import matplotlib

    return matplotlib.rc_context({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
                                  "axes.spines.right": False, "hatch.linewidth": 0.6,
                                  # names are labels: "$x$" in one is text, not TeX
                                  "text.parse_math": False})


def heatmap_figure(rows: list[str], cols: list[str],
                   cells: dict[tuple[str, str], tuple[float | None, float | None, str | None]]) -> Any:
    """Two stacked panels (evasion rate, attack success rate): rows detectors, columns
    attack/mode; a cell is (evasion, success, note) where note marks n/a or missing."""
    import matplotlib
    import numpy as np

    cmap = matplotlib.colormaps["Reds"].with_extremes(bad="#e5e7eb")
    w = max(5.5, 1.15 * len(cols) + 2.6)
    h = 2 * (0.55 * len(rows) + 1.3)
    with _rc():
        fig = _figure(w, h)
        axes = fig.subplots(2, 1)
        for k, (ax, title) in enumerate(zip(axes, ("Evasion rate", "Attack success rate"), strict=True)):
            grid = np.full((len(rows), len(cols)), np.nan)
            for (r, c), cell in cells.items():
                if cell[k] is not None:
                    grid[rows.index(r), cols.index(c)] = cell[k]
            im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
            for i, r in enumerate(rows):
                for j, c in enumerate(cols):
                    cell = cells.get((r, c))
                    v = grid[i, j]
                    if cell is None:
                        text, color = "not run", "#6b7280"
                    elif cell[2]:
                        text, color = cell[2], "#374151"
                    elif v != v:
                        text, color = "no eligible\nusers", "#374151"
                    else:
                        text, color = f"{v:.3f}", "white" if v > 0.6 else "#111827"
                    ax.text(j, i, text, ha="center", va="center", color=color, fontsize=8.5)
            ax.set_xticks(range(len(cols)), cols, rotation=20, ha="right")
            ax.set_yticks(range(len(rows)), rows)
            ax.set_title(title, loc="left")
            ax.tick_params(length=0)
            for s in ax.spines.values():
                s.set_visible(False)
            fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    return fig


def f1_bars_figure(detectors: list[str], attacks: list[str], modes: list[str],
                   values: dict[tuple[str, str, str], tuple[float | None, float | None]]) -> Any:
    """F1 before (grey) and after (mode colour, mode hatch) per attack, one panel per
    detector; ``values[(detector, attack, mode)] = (before, after)``."""
    from matplotlib.patches import Patch

    n = len(detectors)
    w = max(5.5, min(16.0, n * (1.0 + 0.9 * len(attacks) * max(1, len(modes)) * 0.45)))
    with _rc():
        fig = _figure(w, 3.4)
        axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
        slot = 0.8 / max(1, len(modes))
        for ax, det in zip(axes, detectors, strict=True):
            for i, atk in enumerate(attacks):
                for j, mode in enumerate(modes):
                    x = i - 0.4 + slot * (j + 0.5)
                    before, after = values.get((det, atk, mode), (None, None))
                    if before is None and after is None:
                        continue
                    bw = slot * 0.45
                    if before is not None:
                        ax.bar(x - bw / 2, before, bw, color="#d1d5db", edgecolor="#6b7280",
                               hatch=MODE_HATCH.get(mode, ""), linewidth=0.6)
                    if after is not None:
                        ax.bar(x + bw / 2, after, bw, color=MODE_COLOR.get(mode, "#555"),
                               edgecolor="#1f2937", hatch=MODE_HATCH.get(mode, ""), linewidth=0.6)
                        if after < 0.02:  # a zero-height bar is invisible: say so
                            ax.text(x + bw / 2, 0.01, f"{after:.2f}", ha="center", va="bottom",
                                    fontsize=7, rotation=90, color=MODE_COLOR.get(mode, "#555"))
            ax.set_xticks(range(len(attacks)), attacks)
            ax.set_xlim(-0.6, len(attacks) - 0.4)
            ax.set_ylim(0, 1.05)
            ax.set_title(det, loc="left")
            ax.grid(axis="y", color="#e5e7eb", linewidth=0.6)
            ax.set_axisbelow(True)
        axes[0].set_ylabel("F1 (malicious = positive)")
        handles = [Patch(facecolor="#d1d5db", edgecolor="#6b7280", label="before attack")]
        handles += [Patch(facecolor=MODE_COLOR.get(m, "#555"), edgecolor="#1f2937",
                          hatch=MODE_HATCH.get(m, ""), label=f"after: {m}") for m in modes]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(5, len(handles)), frameon=False)
    return fig


def quality_scatter_figure(points: list[dict[str, Any]], panels: list[tuple[str, str]],
                           yardsticks: dict[str, list[float]]) -> Any:
    """x = evasion rate, y = one quality metric per panel; a point per attack run
    (colour = attack, marker = mode); the real posts' yardstick as a dashed line."""
    import matplotlib

    attacks = list(dict.fromkeys(p["attack"] for p in points))
    colors = {a: matplotlib.colormaps["tab10"](i % 10) for i, a in enumerate(attacks)}
    with _rc():
        fig = _figure(5.0 * len(panels) + 0.5, 3.8)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (key, label) in zip(axes, panels, strict=True):
            pts = [p for p in points if p["quality"].get(key) is not None and p["evasion"] is not None]
            for p in pts:
                ax.scatter(p["evasion"], p["quality"][key], s=46, color=colors[p["attack"]],
                           marker=MODE_MARKER.get(p["mode"], "o"), edgecolor="#111827", linewidth=0.5,
                           zorder=3)
                ax.annotate(p["detector"], (p["evasion"], p["quality"][key]), textcoords="offset points",
                            xytext=(5, 4), fontsize=7, color="#374151")
            real = yardsticks.get(key) or []
            if real:
                mean = sum(real) / len(real)
                ax.axhline(mean, color="#111827", linestyle="--", linewidth=1)
                ax.annotate("real posts", (0.0, mean), xycoords=("axes fraction", "data"),
                            xytext=(3, 3), textcoords="offset points", fontsize=7.5)
            ys = [p["quality"][key] for p in pts] + real
            if key.startswith("perplexity") and ys and min(ys) > 0 and max(ys) / min(ys) > 20:
                ax.set_yscale("log")
            ax.set_xlim(-0.05, 1.05)
            ax.set_xlabel("evasion rate")
            ax.set_ylabel(label)
            ax.grid(color="#e5e7eb", linewidth=0.6)
            ax.set_axisbelow(True)
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], linestyle="", marker="o", color=colors[a], label=a) for a in attacks]
        modes = ordered((p["mode"] for p in points), THREAT_MODES)
        handles += [Line2D([], [], linestyle="", marker=MODE_MARKER.get(m, "o"), color="#9ca3af",
                           markeredgecolor="#111827", label=m) for m in modes]
        fig.legend(handles=handles, loc="outside right center", frameon=False)
    return fig


def retrain_figure(rounds: list[dict[str, Any]], title: str) -> Any:
    """Left: evasion and attack success rate per round; right: clean F1, ROC-AUC and F1
    under attack per round."""
    xs = [r["round"] for r in rounds]
    with _rc():
        fig = _figure(8.6, 3.2)
        a, b = fig.subplots(1, 2)
        for ax, series, ylabel in (
            (a, (("evasion_rate", "evasion rate", "#c0392b", "o"),
                 ("attack_success_rate", "attack success rate", "#d68910", "s")), "attack"),
            (b, (("f1", "clean F1", "#1f618d", "o"), ("roc_auc", "clean ROC-AUC", "#148f77", "^"),
                 ("f1_after_attack", "F1 under attack", "#7d3c98", "s")), "detector"),
        ):
            for key, label, color, marker in series:
                ys = [r.get(key) for r in rounds]
                if any(y is not None for y in ys):
                    ax.plot(xs, [float("nan") if y is None else y for y in ys], marker=marker,
                            color=color, label=label, linewidth=1.6)
            ax.set_xticks(xs)
            ax.set_xlabel("retraining round")
            ax.set_ylim(-0.03, 1.03)
            ax.set_ylabel(ylabel)
            ax.grid(color="#e5e7eb", linewidth=0.6)
            ax.legend(frameon=False, fontsize=8)
        fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    return fig
