"""Reading run folders into :class:`Results`: every unit's JSON results, labelled for display.

Labels that repeat across runs (a dataset with different data, a detector trained in
several runs) are qualified with the run name; a unit whose results file is missing is
marked ``missing`` rather than dropped, so a partial run still reports.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advseq.errors import ConfigError
from advseq.threat import SURROGATE_DETECTOR

log = logging.getLogger(__name__)


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
    posts: int = 1                  #: K, the posts the attack wrote per user

    @property
    def ok(self) -> bool:
        return self.summary is not None

    @property
    def label(self) -> str:
        """The attack as tables name it: with its K when it wrote more than one post."""
        return self.attack if self.posts == 1 else f"{self.attack} (K={self.posts})"

    @property
    def column(self) -> str:
        return f"{self.attack}/{self.mode}" + ("" if self.posts == 1 else f" (K={self.posts})")

    @property
    def evasion_by_k(self) -> list[float | None]:
        """The evasion rate after k = 1..K posts (a one-post summary: its evasion rate)."""
        s = self.summary or {}
        by_k = s.get("evasion_by_k")
        return list(by_k) if isinstance(by_k, list) and by_k else [s.get("evasion_rate")]

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
    posts: int = 1                              #: K, the posts the loop's attacker wrote


@dataclass
class CeilingResult:
    run: str
    dataset: str
    detector: str
    status: str
    data: dict[str, Any] | None     #: ceiling.json (advseq.ceiling.append_ceiling)
    posts: int = 1                  #: K, the relaxed posts


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
    """Records of a results file, every line read (a torn last line is skipped; the file is
    left as it is). Lines that are no record are named in a warning, never dropped
    silently."""
    from advseq.resume import read_results

    try:
        res = read_results(path)
    except (OSError, ConfigError):
        return []
    if res.bad:
        shown = ", ".join(str(b.line) for b in res.bad[:10])
        log.warning("%s: %d line(s) are no record and are left out of the report (line %s; "
                    "first: %s)", path, len(res.bad), shown, res.bad[0].problem)
    return res.records


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
        types["surrogate"] = (run.config.get("surrogate") or {}).get("detector", SURROGATE_DETECTOR)
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
                res.posts = _posts(u, res.summary)
                attacks.append(res)
            elif kind == "ceiling":
                data = _read_json(path / "ceiling.json")
                ceilings.append(CeilingResult(run.name, dataset, det, status if data else _missing(status), data,
                                              _posts(u, data)))
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
                    u.get("seconds"), _posts(u, summaries.get(0))))
    return Results(runs, datasets, models, attacks, retrains, ceilings)


def _posts(entry: dict[str, Any], result: dict[str, Any] | None) -> int:
    """A unit's K: its index entry's ``posts``, else its result's, else 1."""
    for source in (entry, result or {}):
        k = source.get("posts") if isinstance(source, dict) else None
        if isinstance(k, int) and not isinstance(k, bool) and k >= 1:
            return k
    return 1


def _missing(status: str) -> str:
    return "missing" if status in ("done", "reused") else status
