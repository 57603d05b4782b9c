"""Robustness reports from run folders: ``advseq report RUN_DIR... --out DIR``.

Everything in a report comes from the JSON results a run wrote — ``index.json``,
``run.json``, ``datasets/*/info.json``, model ``metrics.json``/``manifest.json``, attack
``summary.json``/``results.jsonl``/``manifest.json``, retraining ``rounds.json`` — plus
the dataset itself, read only to quote users' real posts next to the attacks' posts.
Nothing is typed by hand, and the run folders are never modified.

``build_report`` writes ``DIR/report.md`` (figures as ``DIR/figures/*.png``) and a
self-contained ``DIR/report.html``: inline CSS, figures as base64 PNG data URIs, no
script, nothing fetched. Figures use matplotlib's Agg canvas (no pyplot state).
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advseq.errors import ConfigError

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"

#: (html id, title) of the report's sections, in order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("dataset", "Dataset"),
    ("detectors", "Detectors"),
    ("attack-matrix", "Attack matrix"),
    ("text-quality", "Text quality"),
    ("examples", "Examples"),
    ("cost", "Cost"),
    ("retraining", "Retraining"),
    ("provenance", "Provenance"),
)

MODE_ORDER = ("white-box", "score", "label", "transfer")
MODE_HATCH = {"white-box": "", "score": "//", "label": "..", "transfer": "xx"}
MODE_COLOR = {"white-box": "#c0392b", "score": "#d68910", "label": "#2471a3", "transfer": "#7d3c98"}
DASH = "–"
FIG_DPI = 144       #: PNG resolution; HTML shows figures at 96 px per inch (1.5x for sharp screens)


# --------------------------------------------------------------------------- results

@dataclass
class RunInfo:
    """One run folder: its index, its run manifest and its display name."""

    root: Path
    name: str
    index: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.index.get("config") or self.manifest.get("config") or {}


@dataclass
class DatasetResult:
    name: str                       #: display name (unique across the loaded runs)
    info: dict[str, Any]
    path: str | None                #: the data file the run read
    runs: list[str] = field(default_factory=list)


@dataclass
class ModelResult:
    run: str
    dataset: str
    label: str                      #: display label (unique within the dataset)
    detector: str                   #: registered detector type
    surrogate: bool
    status: str
    path: Path
    metrics: dict[str, Any] | None
    manifest: dict[str, Any] | None
    seconds: float | None


@dataclass
class AttackResult:
    run: str
    dataset: str
    detector: str                   #: display label of the attacked detector
    attack: str
    mode: str
    status: str                     #: done / reused / not applicable / missing
    path: Path
    reason: str | None = None
    summary: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.summary is not None

    @property
    def column(self) -> str:
        return f"{self.attack}/{self.mode}"

    @property
    def quality(self) -> dict[str, Any] | None:
        q = (self.summary or {}).get("quality")
        return q if isinstance(q, dict) and q.get("attack") else None


@dataclass
class RetrainResult:
    run: str
    dataset: str
    detector: str
    attack: str
    mode: str
    planned_rounds: int | None
    status: str
    path: Path
    data: dict[str, Any] | None                 #: rounds.json
    round_metrics: dict[int, dict[str, Any]]    #: round -> that round's detector metrics.json
    round_summaries: dict[int, dict[str, Any]]  #: round -> that round's attack summary.json
    manifest: dict[str, Any] | None
    seconds: float | None


@dataclass
class CeilingResult:
    run: str
    dataset: str
    detector: str
    status: str
    data: dict[str, Any] | None     #: ceiling.json (advseq.ceiling.append_ceiling)


@dataclass
class Results:
    """Everything the report shows, gathered from one or more run folders."""

    runs: list[RunInfo]
    datasets: dict[str, DatasetResult]
    models: list[ModelResult]
    attacks: list[AttackResult]
    retrains: list[RetrainResult]
    ceilings: list[CeilingResult] = field(default_factory=list)

    @property
    def multi(self) -> bool:
        return len(self.runs) > 1


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a results file; stops at a torn last line (the file is left as it is)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def _unique(names: Sequence[str], alts: Sequence[str]) -> list[str]:
    """``names``, with ``name (alt)`` where a name repeats, and ``#k`` if that repeats too."""
    counts = Counter(names)
    out = [f"{n} ({a})" if counts[n] > 1 else n for n, a in zip(names, alts, strict=True)]
    seen: Counter[str] = Counter()
    final = []
    for n in out:
        seen[n] += 1
        final.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    return final


def load_results(run_dirs: Sequence[str | Path]) -> Results:
    """Read every run folder (written by :func:`advseq.pipeline.run_matrix`); labels that
    repeat across runs are qualified with the run name."""
    if not run_dirs:
        raise ConfigError("give at least one run folder")
    raw_runs = []
    for d in run_dirs:
        root = Path(d)
        if not root.is_dir():
            raise ConfigError(f"{root}: no such run folder")
        index = _read_json(root / "index.json")
        if not isinstance(index, dict) or not isinstance(index.get("units"), list):
            raise ConfigError(f"{root}: not a run folder (no readable index.json); pass a folder "
                              "written by `advseq run CONFIG.toml`")
        manifest = _read_json(root / "run.json") or {}
        name = str((index.get("config") or {}).get("name") or root.name)
        raw_runs.append((root, name, index, manifest))
    names = _unique([r[1] for r in raw_runs], [r[0].name for r in raw_runs])
    runs = [RunInfo(r[0], n, r[2], r[3]) for r, n in zip(raw_runs, names, strict=True)]

    # Datasets: one entry per (name, checksum); a name with different data gets the run name.
    ds_raw: list[tuple[RunInfo, str, dict[str, Any], str | None]] = []
    for run in runs:
        paths = {d.get("name"): d.get("path") for d in run.config.get("datasets", [])}
        for dname, rel in (run.index.get("datasets") or {}).items():
            info = _read_json(run.root / rel) or {"name": dname}
            ds_raw.append((run, dname, info, paths.get(dname) or info.get("source")))
    checksums: dict[str, set[Any]] = defaultdict(set)
    for _, dname, info, _ in ds_raw:
        checksums[dname].add(info.get("checksum"))
    ds_label: dict[tuple[str, str], str] = {}
    datasets: dict[str, DatasetResult] = {}
    for run, dname, info, path in ds_raw:
        label = dname if len(checksums[dname]) == 1 else f"{dname} ({run.name})"
        ds_label[(run.name, dname)] = label
        entry = datasets.setdefault(label, DatasetResult(label, info, path))
        entry.runs.append(run.name)

    def dlabel(run: RunInfo, dname: str) -> str:
        return ds_label.get((run.name, dname), dname)

    # Detector labels repeat across runs: qualify them with the run name.
    det_runs: dict[tuple[str, str], set[str]] = defaultdict(set)
    for run in runs:
        for u in run.index["units"]:
            if u.get("kind") == "detector":
                det_runs[(dlabel(run, u.get("dataset", "")), u.get("detector", ""))].add(run.name)

    def detlabel(run: RunInfo, dataset: str, det: str) -> str:
        return f"{det} ({run.name})" if len(det_runs.get((dataset, det), ())) > 1 else det

    models, attacks, retrains, ceilings = [], [], [], []
    for run in runs:
        types = {d.get("name"): d.get("detector") for d in run.config.get("detectors", [])}
        types["surrogate"] = (run.config.get("surrogate") or {}).get("detector", "cnn")
        for u in run.index["units"]:
            kind, status = u.get("kind"), str(u.get("status", "unknown"))
            path = run.root / str(u.get("path", ""))
            dataset = dlabel(run, str(u.get("dataset", "")))
            det = detlabel(run, dataset, str(u.get("detector", "")))
            if kind == "detector":
                metrics = _read_json(path / "metrics.json")
                models.append(ModelResult(
                    run.name, dataset, det, str(types.get(u.get("detector"), u.get("detector"))),
                    bool(u.get("surrogate")), status if metrics else _missing(status), path, metrics,
                    _read_json(path / "manifest.json"), u.get("seconds")))
            elif kind == "attack":
                res = AttackResult(run.name, dataset, det, str(u.get("attack")), str(u.get("mode")),
                                   status, path, u.get("reason"), seconds=u.get("seconds"))
                if status != "not applicable":
                    res.summary = _read_json(path / "summary.json")
                    if res.summary is None:
                        res.status = _missing(status)
                        res.reason = "summary.json not found (unfinished or interrupted run)"
                    else:
                        res.records = _read_jsonl(path / "results.jsonl")
                        res.manifest = _read_json(path / "manifest.json")
                attacks.append(res)
            elif kind == "ceiling":
                data = _read_json(path / "ceiling.json")
                ceilings.append(CeilingResult(run.name, dataset, det, status if data else _missing(status), data))
            elif kind == "retrain":
                data = _read_json(path / "rounds.json")
                metrics_by_round, summaries = {}, {}
                for r in (data or {}).get("rounds", []):
                    rnd = int(r.get("round", 0))
                    m = _read_json(path / f"round_{rnd}" / "detector" / "metrics.json")
                    s = _read_json(path / f"round_{rnd}" / "attack" / "summary.json")
                    if m:
                        metrics_by_round[rnd] = m
                    if s:
                        summaries[rnd] = s
                retrains.append(RetrainResult(
                    run.name, dataset, det, str(u.get("attack")), str(u.get("mode", "white-box")),
                    u.get("rounds"), status if data else _missing(status), path, data,
                    metrics_by_round, summaries, _read_json(path / "manifest.json"),
                    u.get("seconds")))
    return Results(runs, datasets, models, attacks, retrains, ceilings)


def _missing(status: str) -> str:
    return "missing" if status in ("done", "reused") else status


# --------------------------------------------------------------------------- formatting

def fmt(x: Any, nd: int = 3) -> str:
    """A number as the tables show it: fixed ``nd`` decimals, ints as they are, None as –."""
    if x is None:
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if x != x:  # NaN
            return DASH
        return f"{x:.{nd}f}"
    return str(x)


def signed(x: float | None, nd: int = 3) -> str:
    return DASH if x is None else f"{x:+.{nd}f}"


def _params(p: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (p or {}).items())


def _order(values: Iterable[str], preferred: Sequence[str]) -> list[str]:
    vals = list(dict.fromkeys(values))
    return sorted(vals, key=lambda v: (preferred.index(v) if v in preferred else len(preferred), vals.index(v)))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


# --------------------------------------------------------------------------- document model

@dataclass
class Heading:
    level: int
    text: str
    id: str = ""


@dataclass
class Para:
    """A paragraph; ``**bold**`` and ```code``` are the only inline markup."""

    text: str
    note: bool = False


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    id: str = ""
    caption: str = ""
    footnotes: list[str] = field(default_factory=list)
    text_cols: tuple[int, ...] = ()        #: columns holding prose (wrapped, left-aligned)
    emphasis_rows: tuple[int, ...] = ()    #: e.g. the real-posts yardstick row


@dataclass
class Figure:
    path: Path
    alt: str
    caption: str
    number: int = 0
    width: int = 0      #: display width in CSS pixels (the PNG has 1.5x that, for sharp screens)


@dataclass
class Details:
    summary: str
    text: str


Block = Heading | Para | Table | Figure | Details


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


# --------------------------------------------------------------------------- figures

class _Figures:
    """Saves figures as PNGs under ``DIR/figures`` and numbers them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def save(self, fig: Any, name: str, alt: str, caption: str) -> Figure:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count += 1
        path = self.folder / f"{self.count:02d}-{_slug(name)}.png"
        fig.savefig(path, dpi=FIG_DPI, facecolor="white", metadata={"Software": None})
        return Figure(path, alt, caption, self.count, round(fig.get_size_inches()[0] * 96))


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(w, h), layout="constrained")


def _rc() -> Any:
    import matplotlib

    return matplotlib.rc_context({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
                                  "axes.spines.right": False, "hatch.linewidth": 0.6})


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
    markers = {"white-box": "o", "score": "s", "label": "^", "transfer": "D"}
    with _rc():
        fig = _figure(5.0 * len(panels) + 0.5, 3.8)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (key, label) in zip(axes, panels, strict=True):
            pts = [p for p in points if p["quality"].get(key) is not None and p["evasion"] is not None]
            for p in pts:
                ax.scatter(p["evasion"], p["quality"][key], s=46, color=colors[p["attack"]],
                           marker=markers.get(p["mode"], "o"), edgecolor="#111827", linewidth=0.5,
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
        modes = _order((p["mode"] for p in points), MODE_ORDER)
        handles += [Line2D([], [], linestyle="", marker=markers.get(m, "o"), color="#9ca3af",
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


# --------------------------------------------------------------------------- sections

class _Builder:
    """Builds the report's sections from :class:`Results`."""

    def __init__(self, res: Results, figures: _Figures, n_examples: int) -> None:
        self.res = res
        self.figs = figures
        self.n_examples = n_examples
        self.dataset_names = list(res.datasets)

    # helpers ---------------------------------------------------------------
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

    # 1 ---------------------------------------------------------------------
    def summary(self) -> Section:
        sec = Section(*SECTIONS[0])
        for run in self.res.runs:
            sec.blocks += self._what_was_run(run)
        rows = []
        ceilings = {(c.dataset, c.detector): c.data for c in self.res.ceilings if c.data}
        for ds in self.dataset_names:
            for m in self.models(ds):
                runs = [a for a in self.attacks(ds) if a.detector == m.label and a.ok]
                rated = [a for a in runs if a.summary.get("evasion_rate") is not None]
                f1 = (m.metrics or {}).get("f1")
                ceil = fmt((ceilings.get((ds, m.label)) or {}).get("relaxed_rate"))
                if not rated:
                    rows.append([ds, m.label, fmt(f1), "no attack with eligible users" if runs else "no attack ran",
                                 DASH, DASH, DASH, ceil])
                    continue
                top = max(a.summary["evasion_rate"] for a in rated)
                best = [a for a in rated if a.summary["evasion_rate"] == top]
                worst = min(best, key=lambda a: (a.summary["after"]["f1"], a.column))
                name = (", ".join(f"{a.attack} ({a.mode})" for a in best) if top > 0
                        else f"none evaded ({len(rated)} attack runs)")
                rows.append([ds, m.label, fmt(f1), name, fmt(top),
                             f"{worst.summary['n_eligible']}", fmt(worst.summary["after"]["f1"]), ceil])
        sec.blocks.append(Heading(3, "Headline"))
        if rows:
            sec.blocks.append(Table(
                ["dataset", "detector", "clean F1", "most damaging attack (mode)", "evasion rate",
                 "eligible users", "F1 under that attack", "one-post ceiling"], rows, id="tbl-headline",
                caption="Per detector: its clean F1 on the test split and the attack run with the "
                        "highest evasion rate (ties listed; F1 under attack from the worst of them). "
                        "One-post ceiling: the evasion rate a relaxed post (any mixture of the "
                        "detector's words at each position, which contains every text) reaches by "
                        "gradient descent — about the most any attack that writes one post can do "
                        "(`advseq ceiling`; – where not computed or the detector reads no soft tokens).",
                text_cols=(3,)))
            top_rows = [r for r in rows if r[4] != DASH and float(r[4]) > 0]
            if top_rows:
                r = max(top_rows, key=lambda r: float(r[4]))
                sec.blocks.append(Para(f"Most damaging overall: **{r[3]}** against **{r[1]}** on "
                                       f"{r[0]}: evasion rate {r[4]} of {r[5]} detected malicious "
                                       f"users; F1 {r[2]} → {r[6]}."))
        else:
            sec.blocks.append(Para("No detector was trained."))
        return sec

    def _what_was_run(self, run: RunInfo) -> list[Block]:
        cfg = run.config
        units = run.index.get("units", [])
        status = Counter(u.get("status") for u in units)
        dets = [f"{d.get('name')} ({d.get('detector')}{': ' + _params(d.get('params')) if d.get('params') else ''})"
                for d in cfg.get("detectors", [])]
        sur = cfg.get("surrogate") or {}
        atks = [f"{a.get('name')} [{', '.join(a.get('modes', []))}]"
                + (f" ({_params(a.get('params'))})" if a.get("params") else "")
                + (f", budget {a['budget']}" if a.get("budget") else "")
                for a in cfg.get("attacks", [])]
        rts = [f"{r.get('detector')} vs {r.get('attack')} ({r.get('mode', 'white-box')}, {r.get('rounds')} rounds)"
               for r in cfg.get("retrain", [])]
        infos = {d.name: d for d in self.res.datasets.values() if run.name in d.runs}
        ds = [f"{n} ({fmt(d.info.get('users'))} users, `{d.path}`)" for n, d in infos.items()]
        created = [m.get("created") for m in self._unit_manifests(run) if m.get("created")]
        when = run.manifest.get("created", DASH)
        if created:
            when += f"; unit results written {min(created)} – {max(created)}"
        seed = cfg.get("seed", 0)
        rows = [
            ["run", f"{run.name} (`{run.root}`)"],
            ["started", when],
            ["config", f"`{cfg.get('source') or DASH}`"],
            ["datasets", "; ".join(ds) or DASH],
            ["detectors", "; ".join(dets) or DASH],
            ["surrogate (transfer)", f"{sur.get('detector', 'cnn')}" + (f": {_params(sur.get('params'))}" if sur.get("params") else "")],
            ["attacks [modes]", "; ".join(atks) or "none"],
            ["retraining", "; ".join(rts) or "not run"],
            ["seeds", f"seed {seed} (attacks, detectors; surrogate {seed + 1000}), split seed "
                      f"{cfg.get('split_seed', 0)}, test size {cfg.get('test_size', 0.2)}"],
            ["attacked users", f"{cfg.get('max_users') or 'every'} test users per unit; goal "
                               f"{cfg.get('goal', 'evasion')}, placement {cfg.get('placement', 'append')}"],
            ["text quality", "computed" if cfg.get("quality") else "not computed"],
            ["units", f"{len(units)} ({', '.join(f'{v} {k}' for k, v in sorted(status.items()))})"
                      + (f" in {fmt(run.index.get('seconds'), 1)} s" if run.index.get("seconds") else "")],
        ]
        return [Heading(3, f"What was run: {run.name}"),
                Table(["", ""], rows, id=f"tbl-run-{_slug(run.name)}", text_cols=(1,))]

    def _unit_manifests(self, run: RunInfo) -> list[dict[str, Any]]:
        out = [m.manifest for m in self.res.models if m.run == run.name and m.manifest]
        out += [a.manifest for a in self.res.attacks if a.run == run.name and a.manifest]
        out += [r.manifest for r in self.res.retrains if r.run == run.name and r.manifest]
        return out

    # 2 ---------------------------------------------------------------------
    def dataset(self) -> Section:
        sec = Section(*SECTIONS[1])
        for name, d in self.res.datasets.items():
            info = d.info
            sec.blocks.append(Heading(3, f"{name}"))
            lab = info.get("labels") or {}
            bc = info.get("by_class") or {}
            ctx = info.get("contexts") or {}
            dup = info.get("duplicates") or {}
            sec.blocks.append(Para(
                f"`{d.path or info.get('source')}` — {fmt(info.get('users'))} users "
                f"({fmt(lab.get('malicious'))} malicious, {fmt(lab.get('benign'))} benign), "
                f"{fmt(info.get('posts'))} posts, {fmt((info.get('vocabulary') or {}).get('distinct_tokens'))} "
                f"distinct tokens; {fmt(ctx.get('distinct'))} distinct contexts "
                f"({fmt(ctx.get('in_both_classes'))} in both classes); "
                f"{fmt(dup.get('posts_in_both_classes'))} identical posts in both classes. "
                f"Checksum `{str(info.get('checksum', DASH))[:16]}`."))
            rows = []
            for cls in ("malicious", "benign"):
                c = bc.get(cls) or {}
                ppu, tpp = c.get("posts_per_user") or {}, c.get("tokens_per_post") or {}
                rows.append([cls, fmt(c.get("users")), fmt(ppu.get("min"), 0), fmt(ppu.get("median"), 1),
                             fmt(ppu.get("mean"), 2), fmt(ppu.get("max"), 0), fmt(tpp.get("median"), 1),
                             fmt(tpp.get("mean"), 2), fmt(c.get("relevancy_share_1"))])
            sec.blocks.append(Table(
                ["class", "users", "posts/user min", "median", "mean", "max", "tokens/post median",
                 "mean", "relevancy = 1 share"], rows, id=f"tbl-stats-{_slug(name)}",
                caption="Users, posts per user and tokens per post by class."))
            audit = info.get("shortcut_audit")
            if audit:
                best = self.best_shortcut(name)
                sec.blocks.append(Table(
                    ["shortcut", "what it reads", "folds", "accuracy", "± std", "F1"],
                    [[r.get("shortcut", ""), r.get("description", ""), fmt(r.get("folds")),
                      fmt(r.get("accuracy")), fmt(r.get("accuracy_std")), fmt(r.get("f1"))] for r in audit],
                    id=f"tbl-audit-{_slug(name)}", text_cols=(1,),
                    caption="Shortcut audit: cross-validated detectors that read no text. A detector "
                            "should beat the best of them "
                            f"({best.get('shortcut')}: accuracy {fmt(best.get('accuracy'))})." if best else ""))
            else:
                sec.blocks.append(Para("Shortcut audit: not run.", note=True))
            card = info.get("card")
            if card:
                sec.blocks.append(Details(f"Dataset card ({len(card.splitlines())} lines)", card))
            else:
                sec.blocks.append(Para("Dataset card: none (no README.md beside the data file).", note=True))
        if not self.res.datasets:
            sec.blocks.append(Para("No dataset information in these runs."))
        return sec

    # 3 ---------------------------------------------------------------------
    def detectors(self) -> Section:
        sec = Section(*SECTIONS[2])
        for ds in self.dataset_names:
            sec.blocks += self.sub(ds)
            best = self.best_shortcut(ds)
            best_acc = best.get("accuracy") if best else None
            rows, notes = [], []
            for m in self.models(ds, surrogate=None):
                mt = m.metrics or {}
                label = f"{m.label} (attacker's surrogate)" if m.surrogate else m.label
                acc = mt.get("accuracy")
                row = [label, m.detector, fmt(mt.get("precision")), fmt(mt.get("recall")), fmt(mt.get("f1")),
                       fmt(acc), fmt(mt.get("roc_auc")), fmt(mt.get("pr_auc")), fmt(mt.get("n_test")),
                       fmt(mt.get("train_seconds"), 2), fmt(mt.get("train_users_per_second"), 1),
                       signed(acc - best_acc if acc is not None and best_acc is not None else None)]
                rows.append(row)
                conf = mt.get("confusion")
                if _one_class(conf):
                    notes.append(f"{label} predicts one class for every test user.")
                if m.status == "missing":
                    notes.append(f"{label}: metrics.json not found (unfinished run).")
            if not rows:
                sec.blocks.append(Para("No detector was trained."))
                continue
            sec.blocks.append(Table(
                ["detector", "type", "precision", "recall", "F1", "accuracy", "ROC-AUC", "PR-AUC",
                 "test users", "train s", "users/s", "acc − best shortcut"], rows,
                id=f"tbl-detectors-{_slug(ds)}",
                caption="Clean scores on the recorded test split (malicious = positive); users/s = "
                        "training users × epochs per second. Last column: accuracy minus the best "
                        "shortcut-audit accuracy"
                        + (f" ({best.get('shortcut')}, {fmt(best_acc)}; cross-validated on all users, "
                           "so a rough yardstick)." if best else " (no audit).")))
            for n in notes:
                sec.blocks.append(Para(n, note=True))
        return sec

    # 4 ---------------------------------------------------------------------
    def attack_matrix(self) -> Section:
        sec = Section(*SECTIONS[3])
        if not self.res.attacks:
            sec.blocks.append(Para("No attack was run."))
            return sec
        for ds in self.dataset_names:
            atks = self.attacks(ds)
            if not atks:
                continue
            sec.blocks += self.sub(ds)
            reasons: list[str] = []

            def mark(reason: str | None, reasons: list[str] = reasons) -> str:
                reason = reason or "no reason recorded"
                if reason not in reasons:
                    reasons.append(reason)
                return f"[{reasons.index(reason) + 1}]"

            rows = []
            cells: dict[tuple[str, str], tuple[float | None, float | None, str | None]] = {}
            multi = self.run_col()
            for a in atks:
                base = ([a.run] if multi else []) + [a.detector, a.attack, a.mode]
                if not a.ok:
                    m = mark(a.reason)
                    label = "n/a" if a.status == "not applicable" else a.status
                    rows.append(base + [f"{label} {m}"] + [DASH] * 8)
                    cells[(a.detector, a.column)] = (None, None, f"{label} {m}")
                    continue
                s = a.summary
                b, af = s["before"]["f1"], s["after"]["f1"]
                rows.append(base + [a.status, fmt(s["n_users"]), fmt(s["n_eligible"]), fmt(s["evasion_rate"]),
                                    fmt(s["attack_success_rate"]), fmt(s.get("goal_success_rate")),
                                    fmt(b), fmt(af), signed(af - b)])
                cells[(a.detector, a.column)] = (s["evasion_rate"], s["attack_success_rate"], None)
            for c in self.res.ceilings:
                if c.dataset != ds:
                    continue
                base = ([c.run] if multi else []) + [c.detector, "one-post ceiling"]
                if not c.data:
                    rows.append(base + ["relaxed", f"{c.status} {mark('ceiling.json not found')}"] + [DASH] * 8)
                    continue
                d = c.data
                rows.append(base + ["relaxed", c.status, fmt(d["n_users"]), fmt(d["n_eligible"]),
                                    fmt(d["relaxed_rate"])] + [DASH] * 5)
                rows.append(base + ["witness tokens", c.status, fmt(d["n_users"]), fmt(d["n_eligible"]),
                                    fmt(d["token_rate"])] + [DASH] * 5)
            header = (["run"] if multi else []) + ["detector", "attack", "mode", "status", "users",
                                                   "eligible", "evasion rate", "attack success rate",
                                                   "goal success rate", "F1 before", "F1 after", "ΔF1"]
            foot = [f"[{i + 1}] {r}" for i, r in enumerate(reasons)]
            sec.blocks.append(Table(
                header, rows, id=f"tbl-matrix-{_slug(ds)}", footnotes=foot,
                caption="Evasion rate = share of the detected malicious users (eligible) judged benign "
                        "after the attack; attack success rate = share of all scored users whose "
                        "correct verdict flipped; F1 on the attacked users before → after. "
                        "One-post ceiling rows (when the run computed them): the evasion rate of a "
                        "relaxed post optimised by gradient descent over the detector's vocabulary "
                        "(relaxed) and of its arg-max words re-scored as text (witness tokens)."))
            det_rows = _order((a.detector for a in atks), [m.label for m in self.models(ds)])
            cols = _order((a.column for a in atks), [f"{x}/{m}" for x in dict.fromkeys(a.attack for a in atks)
                                                     for m in MODE_ORDER])
            fig = heatmap_figure(det_rows, cols, cells)
            sec.blocks.append(self.figs.save(
                fig, f"heatmap-{ds}",
                alt=f"Heatmap of evasion rate and attack success rate on {ds}: rows "
                    f"{', '.join(det_rows)}; columns {', '.join(cols)}.",
                caption=f"Evasion and attack success rate per detector × attack/mode on {ds}; grey "
                        "cells are units that did not run (footnotes above give the reason)."))
            attacks = list(dict.fromkeys(a.attack for a in atks))
            modes = _order((a.mode for a in atks if a.ok), MODE_ORDER)
            values = {(a.detector, a.attack, a.mode): (a.summary["before"]["f1"], a.summary["after"]["f1"])
                      for a in atks if a.ok}
            if values:
                fig = f1_bars_figure(det_rows, attacks, modes, values)
                sec.blocks.append(self.figs.save(
                    fig, f"f1-{ds}",
                    alt=f"Bar chart of F1 before and after each attack on {ds}, one panel per detector "
                        f"({', '.join(det_rows)}), bars per attack and mode.",
                    caption=f"F1 on the attacked users before (grey) and after (coloured by mode, "
                            f"hatched by mode) each attack on {ds}; a missing bar is a unit that did "
                            "not run."))
            sec.blocks += self._quality_scatter(ds, atks)
        return sec

    def _quality_scatter(self, ds: str, atks: list[AttackResult]) -> list[Block]:
        with_q = [a for a in atks if a.quality]
        if not with_q:
            return [Para("Quality-vs-efficacy plot: not drawn (text-quality metrics not computed).", note=True)]
        points = [{"attack": a.attack, "mode": a.mode, "detector": a.detector,
                   "evasion": a.summary.get("evasion_rate"), "quality": a.quality["attack"]} for a in with_q]
        panels = [("bleu_2", "BLEU-2 (higher = closer to real posts)")]
        for key in ("perplexity_judge", "perplexity_ref"):
            if any(p["quality"].get(key) is not None for p in points):
                panels.append((key, f"{key.replace('_', ' ')} (lower = more fluent)"))
                break
        yard: dict[str, list[float]] = defaultdict(list)
        seen = set()
        for a in with_q:
            real = a.quality.get("real") or {}
            key = json.dumps(real, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            for k, _ in panels:
                if real.get(k) is not None:
                    yard[k].append(real[k])
        fig = quality_scatter_figure(points, panels, yard)
        n_yard = len(seen)
        return [self.figs.save(
            fig, f"quality-{ds}",
            alt=f"Scatter of text quality against evasion rate for {len(points)} attack runs on {ds}: "
                + " and ".join(lab for _, lab in panels) + ".",
            caption=f"Quality vs efficacy on {ds}: one point per attack run (label = detector). Dashed "
                    "line: the same users' real last posts"
                    + (f" (mean of {n_yard} yardsticks from different user sets)" if n_yard > 1 else "")
                    + ".")]

    # 5 ---------------------------------------------------------------------
    def text_quality(self) -> Section:
        sec = Section(*SECTIONS[4])
        with_q = [a for a in self.res.attacks if a.quality]
        if not with_q:
            sec.blocks.append(Para("Not run: no attack run in these folders computed text-quality "
                                   "metrics (run with `quality = true`)."))
            return sec
        sec.blocks.append(Para(
            "BLEU-n: n-gram overlap with the real last posts (higher = more realistic); "
            "bleu_history: with the user's own earlier posts; self-BLEU: between an attack's posts "
            "(lower = more diverse); perplexity (judge = an LM advseq did not train; ref = advseq's "
            "reference LM): lower = more fluent; topic_sim / style_similarity: closeness to the "
            "target context, the user's recent or same-context posts, and the user's style "
            "(higher = closer); copy_exact / copy_near: shares of copied posts; repetitive: share "
            "of posts in which one word is more than half of the words (degenerate text a judge "
            "LM finds likely). The italic row under each group is the same users' real last posts.",
            note=True))
        for ds in self.dataset_names:
            atks = [a for a in with_q if a.dataset == ds]
            if not atks:
                continue
            sec.blocks += self.sub(ds)
            from advseq.quality import METRICS  # display order; unknown keys follow

            keys = [k for k in METRICS if any(k in a.quality["attack"] for a in atks)]
            keys += sorted({k for a in atks for k in a.quality["attack"]} - set(keys))
            multi = self.run_col()
            groups: dict[str, list[AttackResult]] = {}
            for a in atks:
                groups.setdefault(json.dumps(a.quality.get("real") or {}, sort_keys=True), []).append(a)
            rows, emph = [], []
            for members in groups.values():
                for a in members:
                    q = a.quality["attack"]
                    rows.append(([a.run] if multi else []) + [a.detector, a.attack, a.mode, fmt(a.quality.get("n_posts"))]
                                + [fmt(q.get(k), _nd(k)) for k in keys])
                real = members[0].quality.get("real") or {}
                emph.append(len(rows))
                rows.append(([""] if multi else []) + ["real posts (yardstick)", "", "", fmt(members[0].quality.get("n_posts"))]
                            + [fmt(real.get(k), _nd(k)) for k in keys])
            sec.blocks.append(Table(
                (["run"] if multi else []) + ["detector", "attack", "mode", "posts"] + keys, rows,
                id=f"tbl-quality-{_slug(ds)}", emphasis_rows=tuple(emph),
                caption="Text quality of each attack run's posts (posts = users the attack wrote "
                        "for); yardstick rows: the same users' real last posts."))
            notes = []
            for a in atks:
                judge = a.quality.get("judge")
                extra = "; ".join(a.quality.get("notes") or [])
                notes.append(f"{a.detector} · {a.attack} ({a.mode}): judge {judge or 'none'}, topic "
                             f"corpus {a.quality.get('topic_corpus', DASH)}, "
                             f"{fmt(a.quality.get('seconds'), 1)} s. {extra}")
            sec.blocks.append(Details("Quality notes per run", "\n".join(notes)))
        missing = [a for a in self.res.attacks if a.ok and not a.quality]
        if missing:
            sec.blocks.append(Para(f"Not computed for {len(missing)} other attack run(s).", note=True))
        return sec

    # 6 ---------------------------------------------------------------------
    def examples(self) -> Section:
        sec = Section(*SECTIONS[5])
        done = [a for a in self.res.attacks if a.ok and a.records]
        if not done:
            sec.blocks.append(Para("No attack records to show."))
            return sec
        for ds in self.dataset_names:
            atks = [a for a in done if a.dataset == ds]
            if not atks:
                continue
            sec.blocks += self.sub(ds)
            counts: Counter[str] = Counter()
            for a in atks:
                counts.update(r["user_id"] for r in a.records if r.get("targeted") and r.get("label") == 1)
            chosen = sorted(counts, key=lambda u: (-counts[u], u))[: self.n_examples]
            users, note = self._load_users(ds, chosen)
            placement = next((a.summary.get("placement") for a in atks), "append")
            sec.blocks.append(Para(
                f"The {len(chosen)} malicious test users targeted by the most attack runs (ties broken "
                f"by user id). Real posts come from the dataset; the attack's post is "
                + ("appended after them." if placement == "append" else "written in place of the last one.")
                + (f" {note}" if note else ""), note=True))
            for uid in chosen:
                sec.blocks.append(Heading(4, f"User {uid} — malicious, targeted by {counts[uid]} of "
                                             f"{len(atks)} attack runs"))
                user = users.get(uid)
                if user is not None:
                    posts = user.posts[-3:]
                    start = len(user.posts) - len(posts)
                    sec.blocks.append(Table(
                        ["post", "context", "text"],
                        [[f"{start + i + 1} of {len(user.posts)}", p.context or DASH, p.text]
                         for i, p in enumerate(posts)],
                        id=f"tbl-real-{_slug(uid)}", text_cols=(1, 2),
                        caption="Last real posts, oldest first."))
                rows, ctx = [], None
                for a in atks:
                    rec = next((r for r in a.records if r["user_id"] == uid), None)
                    if rec is None or not rec.get("targeted"):
                        continue
                    ctx = ctx or rec.get("context")
                    rows.append([a.detector, a.attack, a.mode, rec.get("post") or DASH,
                                 f"{fmt(rec.get('clean_prob'))} → {fmt(rec.get('attacked_prob'))}",
                                 _outcome(rec)])
                sec.blocks.append(Table(
                    ["detector", "attack", "mode", "written post", "P(malicious) before → after", "outcome"],
                    rows, id=f"tbl-written-{_slug(uid)}", text_cols=(3,),
                    caption="What each attack wrote" + (f" (target context: {ctx})" if ctx else "")
                            + "; the deployed detector's score before → after."))
        return sec

    def _load_users(self, ds: str, ids: list[str]) -> tuple[dict[str, Any], str]:
        d = self.res.datasets.get(ds)
        if d is None or not d.path:
            return {}, "Real posts omitted: the run does not record the data file."
        path = Path(d.path)
        if not path.exists():
            return {}, f"Real posts omitted: {path} not found."
        from advseq.errors import AdvseqError
        from advseq.io import load_dataset

        try:
            data = load_dataset(path, name=ds)
        except AdvseqError as err:
            return {}, f"Real posts omitted: {err}"
        if d.info.get("checksum") and data.checksum() != d.info["checksum"]:
            return {}, f"Real posts omitted: {path} changed since the run (checksum differs)."
        wanted = set(ids)
        return {u.user_id: u for u in data if u.user_id in wanted}, ""

    # 7 ---------------------------------------------------------------------
    def cost(self) -> Section:
        sec = Section(*SECTIONS[6])
        done = [a for a in self.res.attacks if a.ok]
        if not done:
            sec.blocks.append(Para("No attack was run."))
            return sec
        multi = self.run_col()
        has_q = any(a.quality for a in done)
        for ds in self.dataset_names:
            atks = [a for a in done if a.dataset == ds]
            if not atks:
                continue
            sec.blocks += self.sub(ds)
            rows = []
            for a in atks:
                s = a.summary
                rows.append(([a.run] if multi else []) + [
                    a.detector, a.attack, a.mode, fmt(s.get("n_targeted")), fmt(_float(s.get("queries_mean")), 1),
                    fmt(_float(s.get("queries_median")), 1), fmt(s.get("budget")), fmt(s.get("budget_exhausted")),
                    fmt(s.get("failed")), fmt(s.get("attack_seconds"), 2), fmt(s.get("posts_per_second"), 2),
                    fmt(s.get("prepare_seconds"), 2)]
                    + ([fmt((a.quality or {}).get("seconds"), 1)] if has_q else [])
                    + [fmt(a.seconds, 1) if a.status == "done" else f"{a.status}"])
            header = (["run"] if multi else []) + [
                "detector", "attack", "mode", "targeted", "queries mean", "queries median", "budget",
                "budget exhausted", "failed", "attack s", "posts/s", "prepare s"] + (
                ["quality s"] if has_q else []) + ["unit wall s"]
            if all(a.summary.get("budget") is None for a in atks):
                j = header.index("budget")
                header.pop(j)
                for r in rows:
                    r.pop(j)
            sec.blocks.append(Table(
                header, rows, id=f"tbl-cost-{_slug(ds)}",
                caption="Queries per targeted user and time: attack s = time writing posts; prepare "
                        "s = training the attack (e.g. a generator); unit wall s = the whole unit "
                        "incl. scoring (\"reused\": finished by an earlier run)"
                        + ("; no query budget was set." if "budget" not in header else ".")))
            exhausted = sum(a.summary.get("budget_exhausted", 0) for a in atks)
            failed = sum(a.summary.get("failed", 0) for a in atks)
            sec.blocks.append(Para(f"Budget exhausted for {exhausted} user(s), attack failed for "
                                   f"{failed} user(s) across {len(atks)} attack runs.", note=True))
            if any(a.mode == "transfer" for a in atks):
                sec.blocks.append(Para("Transfer mode: queries are to the attacker's own surrogate; the "
                                       "deployed detector scores each attacked user once.", note=True))
        return sec

    # 8 ---------------------------------------------------------------------
    def retraining(self) -> Section:
        sec = Section(*SECTIONS[7])
        if not self.res.retrains:
            sec.blocks.append(Para("Not run: no retraining loop in these runs."))
            return sec
        for rt in self.res.retrains:
            title = f"{rt.detector} vs {rt.attack} ({rt.mode}) on {rt.dataset}" + (
                f" — run {rt.run}" if self.res.multi else "")
            sec.blocks.append(Heading(3, title))
            rounds = (rt.data or {}).get("rounds") or []
            if not rounds:
                sec.blocks.append(Para(f"No rounds recorded ({rt.status})."))
                continue
            rows = []
            for r in rounds:
                m = rt.round_metrics.get(r["round"], {})
                s = rt.round_summaries.get(r["round"], {})
                rows.append([fmt(r["round"]), fmt(r.get("n_train")), fmt(r.get("f1")), fmt(r.get("roc_auc")),
                             fmt(r.get("accuracy")), fmt(_flagged_share(m.get("confusion"))),
                             fmt(s.get("n_eligible")), fmt(r.get("evasion_rate")),
                             fmt(r.get("attack_success_rate")), fmt(r.get("f1_after_attack"))])
            sec.blocks.append(Table(
                ["round", "training users", "clean F1", "ROC-AUC", "accuracy", "flagged share",
                 "eligible", "evasion rate", "attack success rate", "F1 under attack"], rows,
                id=f"tbl-retrain-{_slug(rt.path.name)}",
                caption="Per round: the detector's clean scores on the test split, the share of test "
                        "users it flags as malicious, and the (re-trained, adaptive) attack's damage."))
            sec.blocks.append(Para("**Verdict:** " + retrain_verdict(rt, rounds)))
            fig = retrain_figure(rounds, title)
            sec.blocks.append(self.figs.save(
                fig, f"retrain-{rt.dataset}-{rt.detector}-{rt.attack}",
                alt=f"Line charts over {len(rounds)} retraining rounds of {rt.detector} against "
                    f"{rt.attack}: evasion and attack success rate (left); clean F1, ROC-AUC and "
                    "F1 under attack (right).",
                caption=f"Robustness curve: {title}."))
        return sec

    # 9 ---------------------------------------------------------------------
    def provenance(self) -> Section:
        sec = Section(*SECTIONS[8])
        runs = self.res.runs
        pkgs: list[str] = []
        for run in runs:
            for k in (run.manifest.get("versions") or {}):
                if k not in pkgs:
                    pkgs.append(k)
        rows = []
        for label, get in (
            ("folder", lambda r: f"`{r.root}`"),
            ("config source", lambda r: f"`{r.config.get('source') or DASH}`"),
            ("started", lambda r: r.manifest.get("created", DASH)),
            ("command", lambda r: " ".join(r.manifest.get("command") or []) or DASH),
            ("git commit", lambda r: (r.manifest.get("git") or {}).get("commit") or DASH),
            ("uncommitted changes", lambda r: fmt((r.manifest.get("git") or {}).get("dirty"))),
            ("seed", lambda r: fmt(r.manifest.get("seed", r.config.get("seed")))),
            ("platform", lambda r: _platform(r.manifest.get("platform"))),
        ):
            rows.append([label] + [get(r) for r in runs])
        for p in pkgs:
            rows.append([p] + [str((r.manifest.get("versions") or {}).get(p) or "not installed") for r in runs])
        for run in runs:
            for name, checksum in (run.manifest.get("data") or {}).items():
                rows.append([f"data checksum: {name}"] + [f"`{str(checksum)[:16]}`" if r is run else "" for r in runs])
        sec.blocks.append(Table(["", *[r.name for r in runs]], rows, id="tbl-provenance",
                                caption="From each run's run.json.", text_cols=tuple(range(1, len(runs) + 1))))
        for run in runs:
            dirty = (run.manifest.get("git") or {}).get("dirty")
            if dirty:
                sec.blocks.append(Para(f"{run.name}: the working tree had uncommitted changes, so the "
                                       "commit alone does not reproduce these results.", note=True))
            mans = self._unit_manifests(run)
            commits = {((m.get("git") or {}).get("commit"), (m.get("git") or {}).get("dirty")) for m in mans}
            versions = {json.dumps(m.get("versions"), sort_keys=True) for m in mans}
            if len(commits) > 1 or len(versions) > 1:
                sec.blocks.append(Para(f"{run.name}: its units were produced by {len(commits)} git states "
                                       f"and {len(versions)} package sets (reused units from earlier runs).",
                                       note=True))
        rows = []
        for run in runs:
            for m in [x for x in self.res.models if x.run == run.name]:
                rows.append(self._unit_row(run, f"{m.dataset}: train {m.label}", m.status, m.manifest, m.path))
            for a in [x for x in self.res.attacks if x.run == run.name]:
                rows.append(self._unit_row(run, f"{a.dataset}: {a.attack} ({a.mode}) vs {a.detector}",
                                           a.status, a.manifest, a.path))
            for rt in [x for x in self.res.retrains if x.run == run.name]:
                rows.append(self._unit_row(run, f"{rt.dataset}: retrain {rt.detector} vs {rt.attack}",
                                           rt.status, rt.manifest, rt.path))
        multi = self.res.multi
        sec.blocks.append(Table(
            (["run"] if multi else []) + ["unit", "status", "created", "seed", "commit", "dirty", "folder"],
            [r if multi else r[1:] for r in rows], id="tbl-units", text_cols=(1,) if not multi else (2,),
            caption="Every unit of the run matrix with its manifest.json provenance."))
        for run in runs:
            sec.blocks.append(Details(f"Run config: {run.name}", json.dumps(run.config, indent=2, ensure_ascii=False)))
        return sec

    def _unit_row(self, run: RunInfo, label: str, status: str, man: dict[str, Any] | None,
                  path: Path) -> list[str]:
        man = man or {}
        git = man.get("git") or {}
        with contextlib.suppress(ValueError):
            path = path.relative_to(run.root)
        return [run.name, label, status, man.get("created", DASH), fmt(man.get("seed")),
                (git.get("commit") or DASH)[:10], fmt(git.get("dirty")), f"`{path}`" if path else DASH]

    def build(self) -> list[Section]:
        return [self.summary(), self.dataset(), self.detectors(), self.attack_matrix(),
                self.text_quality(), self.examples(), self.cost(), self.retraining(), self.provenance()]


def _platform(p: dict[str, Any] | None) -> str:
    if not p:
        return DASH
    # the CPU kind matters: float results repeat bit for bit only on the same kind
    kind = ", ".join(str(p[k]) for k in ("cpu", "torch_cpu_capability") if p.get(k))
    return f"{p.get('system', '?')} {p.get('machine', '?')}, {p.get('cpus', '?')} CPUs" + (f" ({kind})" if kind else "")


def _float(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _nd(metric: str) -> int:
    return 2 if metric.startswith("perplexity") else 3


def _one_class(conf: Any) -> bool:
    try:
        (tn, fp), (fn, tp) = conf
    except (TypeError, ValueError):
        return False
    return (fp + tp == 0) or (tn + fn == 0)


def _flagged_share(conf: Any) -> float | None:
    try:
        (tn, fp), (fn, tp) = conf
    except (TypeError, ValueError):
        return None
    n = tn + fp + fn + tp
    return round((fp + tp) / n, 6) if n else None


def _outcome(rec: dict[str, Any]) -> str:
    if rec.get("success"):
        return "evaded"
    if rec.get("eligible"):
        return "still flagged"
    if rec.get("clean_pred") == 0:
        return "missed before the attack"
    return "not eligible"


def retrain_verdict(rt: RetrainResult, rounds: list[dict[str, Any]]) -> str:
    """One honest sentence from the numbers: evasion and clean-F1 change from round 0 to
    the last round, flagging a detector that only got safer by flagging everyone."""
    first, last = rounds[0], rounds[-1]
    n = last["round"]
    planned = rt.planned_rounds
    if len(rounds) == 1:
        return "only round 0 ran, so there is nothing to compare."
    incomplete = (f" (incomplete: {n} of {planned} rounds)" if planned and n < planned
                  and "f1_change" not in (rt.data or {}) else "")
    e0, e1 = first.get("evasion_rate"), last.get("evasion_rate")
    f0, f1 = first.get("f1"), last.get("f1")
    if e0 is None or e1 is None:
        ev = "evasion rate undefined in some round (no detected malicious users)"
        rel = None
    elif e0 == 0:
        ev = f"evasion rate {fmt(e0)} → {fmt(e1)}"
        rel = None
    else:
        rel = (e1 - e0) / e0
        ev = f"evasion rate {fmt(e0)} → {fmt(e1)} ({rel * 100:+.0f}% relative)"
    df1 = f1 - f0 if f0 is not None and f1 is not None else (rt.data or {}).get("f1_change")
    fpart = f"clean F1 {fmt(f0)} → {fmt(f1)} ({signed(df1)})"
    head = f"after {n} round(s){incomplete}, {ev}; {fpart}"
    share = _flagged_share(rt.round_metrics.get(n, {}).get("confusion"))
    if share in (0.0, 1.0):
        who = "malicious" if share == 1.0 else "benign"
        return (f"{head}. But the round-{n} detector labels every test user {who} "
                f"(accuracy {fmt(last.get('accuracy'))}), so the change in evasion is a collapsed "
                "detector, not robustness.")
    if rel is None:
        return head + "."
    if rel <= -0.1:
        cost = ("at no clean-F1 cost" if df1 is not None and df1 >= -0.01
                else f"at a cost of {fmt(-df1)} clean F1" if df1 is not None else "")
        verdict = f"retraining made this attack less effective {cost}".rstrip()
    elif rel >= 0.1:
        verdict = "the attack became more effective, retraining did not help"
    else:
        verdict = "retraining did not change the attack's effect materially"
    n_elig = rt.round_summaries.get(n, {}).get("n_eligible")
    caveat = f" (last round: {n_elig} eligible users)" if n_elig is not None and n_elig < 30 else ""
    return f"{head}: {verdict}{caveat}."


# --------------------------------------------------------------------------- rendering

def _md_cell(text: str) -> str:
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _md_anchor(text: str) -> str:
    return re.sub(r"[^\w\- ]", "", text.lower()).strip().replace(" ", "-")


def render_markdown(title: str, sections: list[Section], generated: str, out_dir: Path) -> str:
    """The report as GitHub-flavoured Markdown (figures linked from ``figures/``)."""
    lines = [f"# {title}", "", f"*Generated {generated} by `advseq report` from the run folders' JSON "
                              "results.*", ""]
    for i, s in enumerate(sections, 1):
        lines.append(f"{i}. [{s.title}](#{_md_anchor(f'{i}. {s.title}')})")
    lines.append("")
    for i, s in enumerate(sections, 1):
        lines += [f"## {i}. {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Heading):
                lines += [f"{'#' * b.level} {b.text}", ""]
            elif isinstance(b, Para):
                lines += [f"*{b.text}*" if b.note and "*" not in b.text else b.text, ""]
            elif isinstance(b, Table):
                if b.caption:
                    lines += [f"**Table.** {b.caption}", ""]
                header = [h or " " for h in b.header]
                lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
                aligns = _aligns(b)
                lines.append("| " + " | ".join("---:" if a == "r" else "---" for a in aligns) + " |")
                for k, row in enumerate(b.rows):
                    cells = [_md_cell(c) for c in row]
                    if k in b.emphasis_rows:
                        cells = [f"*{c}*" if c.strip() else c for c in cells]
                    lines.append("| " + " | ".join(cells) + " |")
                lines.append("")
                if b.footnotes:
                    lines += [f"<sub>{_md_cell(f)}</sub><br>" for f in b.footnotes] + [""]
            elif isinstance(b, Figure):
                rel = b.path.relative_to(out_dir).as_posix()
                lines += [f"![{_md_cell(b.alt)}]({rel})", "", f"*Figure {b.number}: {b.caption}*", ""]
            elif isinstance(b, Details):
                longest = max((len(m) for m in re.findall(r"`+", b.text)), default=0)
                fence = "`" * max(3, longest + 1)
                lines += ["<details>", f"<summary>{html.escape(b.summary)}</summary>", "",
                          f"{fence}text", b.text.rstrip("\n"), fence, "", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


_NUMERIC = re.compile(r"^[+\-−]?\d[\d,]*(\.\d+)?( → [+\-]?\d[\d.]*)?$|^–$")


def _aligns(t: Table) -> list[str]:
    out = []
    for j in range(len(t.header)):
        col = [r[j] for r in t.rows if j < len(r) and str(r[j]).strip()]
        numeric = bool(col) and j not in t.text_cols and all(_NUMERIC.match(str(c)) for c in col)
        out.append("r" if numeric else "l")
    return out


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


CSS = """
:root { --fg:#1f2937; --muted:#6b7280; --line:#e5e7eb; --head:#f3f4f6; --accent:#9f1239; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       color: var(--fg); background: #fff; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.7rem; margin: 0 0 4px; }
h2 { font-size: 1.35rem; margin: 40px 0 12px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.1rem; margin: 24px 0 8px; }
h4 { font-size: 1rem; margin: 18px 0 6px; }
p.meta, p.note, .foot { color: var(--muted); font-size: .88rem; }
p.meta { margin-top: 0; }
nav.toc { background: var(--head); border-radius: 6px; padding: 8px 14px; margin: 16px 0; }
nav.toc ol { margin: 0; padding-left: 20px; columns: 3; }
nav.toc a { color: var(--accent); text-decoration: none; }
.tw { overflow-x: auto; margin: 8px 0 4px; }
table { border-collapse: collapse; font-size: .86rem; min-width: 40%; }
p.cap { color: var(--muted); font-size: .85rem; margin: 14px 0 2px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; vertical-align: top; white-space: nowrap; }
th { background: var(--head); text-align: left; font-weight: 600; white-space: nowrap; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.txt { min-width: 16em; max-width: 46em; overflow-wrap: anywhere; white-space: normal; }
td.hit { color: var(--accent); font-weight: 600; }
tr:nth-child(even) td { background: #fafafa; }
tr.em td { font-style: italic; background: #fff7ed; }
td.na { color: var(--muted); }
ol.foot { margin: 2px 0 12px; padding-left: 18px; list-style: none; }
figure { margin: 16px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .85rem; margin-top: 4px; }
details { margin: 8px 0; }
summary { cursor: pointer; color: var(--accent); }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f9fafb; border: 1px solid var(--line);
      padding: 10px 12px; font-size: .82rem; max-height: 36em; overflow-y: auto; }
code { font-size: .86em; background: #f3f4f6; padding: 0 3px; border-radius: 3px; overflow-wrap: anywhere; }
"""


def render_html(title: str, sections: list[Section], generated: str) -> str:
    """The report as one self-contained HTML page (inline CSS, figures as data URIs)."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>", "<main>",
           f"<h1>{e(title)}</h1>",
           f'<p class="meta">Generated {e(generated)} by <code>advseq report</code> from the run '
           "folders' JSON results.</p>", '<nav class="toc" aria-label="Sections"><ol>']
    out += [f'<li><a href="#{s.id}">{e(s.title)}</a></li>' for s in sections]
    out.append("</ol></nav>")
    for i, s in enumerate(sections, 1):
        out.append(f'<section id="{s.id}">')
        out.append(f"<h2>{i}. {e(s.title)}</h2>")
        for b in s.blocks:
            if isinstance(b, Heading):
                out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
            elif isinstance(b, Para):
                cls = ' class="note"' if b.note else ""
                out.append(f"<p{cls}>{_inline(b.text)}</p>")
            elif isinstance(b, Table):
                out.append(_html_table(b))
            elif isinstance(b, Figure):
                data = base64.b64encode(b.path.read_bytes()).decode("ascii")
                width = f' width="{b.width}"' if b.width else ""
                out.append(f'<figure id="fig-{b.number}"><img src="data:image/png;base64,{data}"{width} '
                           f'alt="{e(b.alt)}"><figcaption>Figure {b.number}: {e(b.caption)}'
                           "</figcaption></figure>")
            elif isinstance(b, Details):
                out.append(f"<details><summary>{e(b.summary)}</summary><pre>{e(b.text)}</pre></details>")
        out.append("</section>")
    out += ["</main>", "</body>", "</html>"]
    return "\n".join(out) + "\n"


_RCLS = ' class="r"'
_EMCLS = ' class="em"'


def _html_table(t: Table) -> str:
    e = html.escape
    aligns = _aligns(t)
    idattr = f' id="{e(t.id)}"' if t.id else ""
    parts = [f'<p class="cap">{_inline(t.caption)}</p>' if t.caption else "",
             f'<div class="tw"><table{idattr}>']
    if any(h for h in t.header):
        parts.append("<thead><tr>" + "".join(
            f'<th{_RCLS if a == "r" else ""} scope="col">{e(h)}</th>'
            for h, a in zip(t.header, aligns, strict=True)) + "</tr></thead>")
    parts.append("<tbody>")
    for k, row in enumerate(t.rows):
        cells = []
        for j, c in enumerate(row):
            cls = []
            if j < len(aligns) and aligns[j] == "r":
                cls.append("r")
            if j in t.text_cols:
                cls.append("txt")
            if str(c).startswith(("n/a", "missing")):
                cls.append("na")
            if c == "evaded":
                cls.append("hit")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            tag = "th" if j == 0 and not t.header[0] else "td"
            cells.append(f"<{tag}{attr}>{_inline(str(c)) if '`' in str(c) else e(str(c))}</{tag}>")
        parts.append(f"<tr{_EMCLS if k in t.emphasis_rows else ''}>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table></div>")
    if t.footnotes:
        parts.append('<ol class="foot">' + "".join(f"<li>{e(f)}</li>" for f in t.footnotes) + "</ol>")
    return "".join(parts)


# --------------------------------------------------------------------------- entry point

@dataclass
class ReportFiles:
    markdown: Path
    html: Path
    figures: list[Path]
    seconds: float


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
    figs = _Figures(fig_dir)
    sections = _Builder(res, figs, examples).build()
    title = title or "advseq robustness report: " + ", ".join(r.name for r in res.runs)
    generated = time.strftime("%Y-%m-%d %H:%M:%S %z")
    _write(out / REPORT_MD, render_markdown(title, sections, generated, out))
    _write(out / REPORT_HTML, render_html(title, sections, generated))
    figures = [b.path for s in sections for b in s.blocks if isinstance(b, Figure)]
    return ReportFiles(out / REPORT_MD, out / REPORT_HTML, figures, round(time.perf_counter() - t0, 2))
