"""The figures of the written-posts (K) section: robustness curves (evasion vs K, the
ceiling(K) beside them), posts-to-evade histograms and text quality per k. Same canvas
and style as :mod:`advseq.report.figures` (names are labels: no TeX)."""

from __future__ import annotations

import math
from typing import Any

from advseq.report.figures import MODE_COLOR, MODE_MARKER, _figure, _rc

#: how each threat mode's curve is drawn
MODE_LINE = {"white-box": "-", "score": "-.", "label": ":", "transfer": "--"}


def _colors(names: list[str]) -> dict[str, Any]:
    import matplotlib

    return {n: matplotlib.colormaps["tab10"](i % 10) for i, n in enumerate(names)}


def _k_axis(ax: Any, ks: list[int], log: bool = True) -> None:
    """The K axis: base-2 log once K reaches 4 (K = 1, 2, 4, 8 evenly spaced) unless
    ``log`` is false, ticks at ``ks``."""
    ks = sorted(set(ks)) or [1]
    if log and max(ks) >= 4:
        ax.set_xscale("log", base=2)
        ax.set_xlim(ks[0] / 1.25, ks[-1] * 1.25)
    else:
        ax.set_xlim(ks[0] - 0.3, ks[-1] + 0.3)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()


def robustness_curve_figure(series: list[dict[str, Any]], ceilings: list[tuple[int, float | None, float | None]],
                            ticks: list[int], title: str) -> Any:
    """Evasion rate against K for one detector: a line per attack (colour) and mode (line
    style), filled markers where a unit ran with that K; ``ceilings`` = (K, relaxed,
    witness-token rate) points drawn in black beside them."""
    from matplotlib.lines import Line2D

    attacks = list(dict.fromkeys(s["attack"] for s in series))
    colors = _colors(attacks)
    with _rc():
        fig = _figure(7.6, 3.8)
        ax = fig.subplots()
        for s in series:
            pts = s["points"]
            if not pts:
                continue
            color, line = colors[s["attack"]], MODE_LINE.get(s["mode"], "-")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=line, color=color, linewidth=1.6)
            ran = [p for p in pts if p[2]]
            ax.plot([p[0] for p in ran], [p[1] for p in ran], linestyle="", color=color,
                    marker=MODE_MARKER.get(s["mode"], "o"), markersize=6, markeredgecolor="#111827",
                    markeredgewidth=0.5)
        relaxed = [(k, r) for k, r, _ in ceilings if r is not None]
        token = [(k, t) for k, _, t in ceilings if t is not None]
        if relaxed:
            ax.plot(*zip(*relaxed, strict=True), color="#111827", linestyle="-", linewidth=1.0,
                    marker="*", markersize=10, zorder=4)
        if token:
            ax.plot(*zip(*token, strict=True), color="#6b7280", linestyle="", marker="x",
                    markersize=7, zorder=4)
        _k_axis(ax, ticks)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("K, posts written per user")
        ax.set_ylabel("evasion rate")
        ax.grid(color="#e5e7eb", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_title(title, loc="left")
        handles = [Line2D([], [], color=colors[a], linewidth=2, label=a) for a in attacks]
        modes = list(dict.fromkeys(s["mode"] for s in series))
        handles += [Line2D([], [], color="#6b7280", linestyle=MODE_LINE.get(m, "-"),
                           marker=MODE_MARKER.get(m, "o"), label=m) for m in modes]
        if relaxed:
            handles.append(Line2D([], [], color="#111827", marker="*", markersize=9, label="ceiling (relaxed)"))
        if token:
            handles.append(Line2D([], [], color="#6b7280", linestyle="", marker="x",
                                  label="ceiling (witness tokens)"))
        fig.legend(handles=handles, loc="outside right center", frameon=False, fontsize=8)
    return fig


def posts_hist_figure(panels: list[dict[str, Any]], title: str) -> Any:
    """Posts to evade, one panel per attack run: bars for k = 1..K (users who first
    reached the goal after k posts; mode colour) and a grey bar for none within K."""
    n = len(panels)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    with _rc():
        fig = _figure(max(4.0, 2.6 * cols + 0.4), 2.3 * rows + 0.5)
        axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
        for i, ax in enumerate(axes.flat):
            if i >= n:
                ax.set_visible(False)
                continue
            p = panels[i]
            K, hist = p["K"], p["hist"]
            counts = [int(hist.get(str(k), 0) or 0) for k in range(1, K + 1)]
            none = int(hist.get("none", 0) or 0)
            xs = list(range(1, K + 1))
            ax.bar(xs, counts, 0.8, color=MODE_COLOR.get(p["mode"], "#555"), edgecolor="#1f2937",
                   linewidth=0.5)
            ax.bar([K + 1.5], [none], 0.8, color="#d1d5db", edgecolor="#6b7280", linewidth=0.5)
            if K <= 16:
                for x, c in [*zip(xs, counts, strict=True), (K + 1.5, none)]:
                    ax.text(x, c, str(c), ha="center", va="bottom", fontsize=7)
            step = max(1, math.ceil(K / 8))
            ax.set_xticks([*xs[::step], K + 1.5], [*(str(x) for x in xs[::step]), "none"])
            ax.set_title(p["title"], loc="left", fontsize=8.5)
            ax.set_xlabel("posts to evade")
            ax.grid(axis="y", color="#e5e7eb", linewidth=0.6)
            ax.set_axisbelow(True)
        for ax in axes[:, 0]:
            ax.set_ylabel("eligible users")
        fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    return fig


def quality_by_k_figure(lines: list[dict[str, Any]], panels: list[tuple[str, str]],
                        yardsticks: dict[str, float], ticks: list[int]) -> Any:
    """Text quality of the k-th written posts against k: one panel per metric, a line per
    attack run (``values[metric][k - 1]``), the real posts' value dashed."""
    from matplotlib.lines import Line2D

    labels = list(dict.fromkeys(ln["label"] for ln in lines))
    colors = _colors(labels)
    with _rc():
        fig = _figure(4.6 * len(panels) + 1.8, 3.4)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (key, label) in zip(axes, panels, strict=True):
            ys_all = []
            for ln in lines:
                vals = ln["values"].get(key) or []
                pts = [(k, v) for k, v in enumerate(vals, 1) if v is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), color=colors[ln["label"]],
                            linestyle=MODE_LINE.get(ln["mode"], "-"), marker=MODE_MARKER.get(ln["mode"], "o"),
                            markersize=4, linewidth=1.4)
                    ys_all += [v for _, v in pts]
            real = yardsticks.get(key)
            if real is not None:
                ax.axhline(real, color="#111827", linestyle="--", linewidth=1)
                ax.annotate("real posts", (0.0, real), xycoords=("axes fraction", "data"), xytext=(3, 3),
                            textcoords="offset points", fontsize=7.5)
                ys_all.append(real)
            if key.startswith("perplexity") and ys_all and min(ys_all) > 0 and max(ys_all) / min(ys_all) > 20:
                ax.set_yscale("log")
            _k_axis(ax, ticks, log=False)
            ax.set_xlabel("k (the k-th written post)")
            ax.set_ylabel(label)
            ax.grid(color="#e5e7eb", linewidth=0.6)
            ax.set_axisbelow(True)
        handles = [Line2D([], [], color=colors[lab], linewidth=2, label=lab) for lab in labels]
        fig.legend(handles=handles, loc="outside right center", frameon=False, fontsize=8)
    return fig
