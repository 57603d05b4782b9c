"""Units of a run matrix as plain data: what to compute, where, and after which units.

A :class:`UnitSpec` carries only settings and paths (no loaded data, no closures), so
:func:`execute_unit` can run it in any process that sees the run folder: this one (the
local executor) or a worker on another machine (the Ray executor). Folders are relative
to the run folder; a unit's ``deps`` are the folders of the units it needs (an attack its
detector and, in transfer mode, the surrogate; a ceiling its detector; a retraining loop
its round-0 detector). The folder of a unit ends in its key, a hash of its config, the
data checksum and the seed (:func:`advseq.pipeline.unit_key`), so a unit id names the
unit's work.

An attack unit with ``shards`` > 1 runs in parts (:mod:`advseq.executors.shards`):
``prepare``, ``shard:I`` for each shard, then ``merge``; :func:`execute_unit` without a
part runs them one after another.

A unit's ``device`` is where its torch work runs; it is checked against the machine that
runs the unit (a Ray head need not have the GPUs of its workers).
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advseq.errors import ConfigError

if TYPE_CHECKING:
    from advseq.schema import Dataset

KINDS = ("detector", "ceiling", "attack", "retrain")
#: datasets loaded in this process: (path, checksum) -> Dataset (a worker loads each once)
_DATASETS: dict[tuple[str, str], Dataset] = {}
_lock = threading.Lock()


@dataclass
class UnitSpec:
    """One unit of the matrix (see the module doc)."""

    kind: str                    #: "detector" | "ceiling" | "attack" | "retrain"
    label: str
    out: str                     #: the run folder it was planned for
    rel: str                     #: its folder, relative to the run folder (its id)
    dataset: dict[str, str]      #: {"name", "path", "checksum"}
    args: dict[str, Any]         #: its function's arguments (folders relative to the run folder)
    deps: list[str] = field(default_factory=list)    #: the ids of the units it needs
    info: dict[str, Any] = field(default_factory=dict)
    skip_reason: str | None = None
    shards: int = 1              #: tasks an attack unit is split into, by user
    #: what one of its tasks asks a cluster for (``num_cpus``, ``num_gpus``)
    request: dict[str, float] = field(default_factory=lambda: {"num_cpus": 1.0, "num_gpus": 0.0})
    repair: bool = False         #: attack units: resume past bad lines of results.jsonl
    #: where its torch work runs (:mod:`advseq.device`; a GPU one asks for ``num_gpus``)
    device: str = "cpu"

    @property
    def uid(self) -> str:
        return self.rel

    @property
    def path(self) -> Path:
        return Path(self.out) / self.rel

    def parts(self) -> list[str | None]:
        """The tasks of this unit, in the order one process runs them."""
        if self.kind == "attack" and self.shards > 1:
            return ["prepare", *(f"shard:{i}" for i in range(self.shards)), "merge"]
        return [None]

    def done(self, run_folder: str | Path | None = None) -> bool:
        """Whether the unit's result is in its folder (it is then reused, not run)."""
        path = Path(run_folder or self.out) / self.rel
        if self.kind == "detector":
            from advseq.training import METRICS_FILE
            return (path / METRICS_FILE).exists()
        if self.kind == "ceiling":
            from advseq.ceiling import CEILING_FILE
            return (path / CEILING_FILE).exists()
        if self.kind == "attack":
            from advseq.evaluation import SUMMARY_FILE
            return (path / SUMMARY_FILE).exists()
        from advseq.retrain import ROUNDS_FILE
        return (path / ROUNDS_FILE).exists() and "f1_change" in json.loads((path / ROUNDS_FILE).read_text())

    def run(self) -> Any:
        """Run the whole unit in this process, in the run folder it was planned for."""
        return execute_unit(self, self.out)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnitSpec:
        return cls(**d)


def remember_dataset(path: str | Path, ds: Dataset) -> None:
    """Let units of ``path`` use ``ds`` (already loaded) in this process."""
    with _lock:
        _DATASETS[(str(path), ds.checksum())] = ds


def unit_dataset(unit: UnitSpec) -> Dataset:
    """The unit's dataset: loaded once per process, and refused when it is not the data the
    unit was planned for (another file at that path on this machine, or changed since)."""
    from advseq.io import load_dataset

    d = unit.dataset
    key = (d["path"], d["checksum"])
    with _lock:
        ds = _DATASETS.get(key)
    if ds is None:
        ds = load_dataset(d["path"], name=d["name"])
        if ds.checksum() != d["checksum"]:
            raise ConfigError(f"{d['path']}: not the data this run was planned with (checksum "
                              f"{ds.checksum()[:12]}, planned {d['checksum'][:12]}); every "
                              "machine must see the same dataset file")
        remember_dataset(d["path"], ds)
    return ds


def execute_unit(unit: UnitSpec, run_folder: str | Path, part: str | None = None) -> Any:
    """Run ``unit`` (or one ``part`` of a sharded attack unit) into ``run_folder``; returns
    what its function returns. Every input comes from the spec and the run folder."""
    from advseq.attack import AttackSpec
    from advseq.device import check_device

    check_device(unit.device, f"unit {unit.label!r}: device")   # on the machine that runs it
    run_folder = Path(run_folder)
    path = run_folder / unit.rel
    ds = unit_dataset(unit)
    a = unit.args
    if unit.kind == "detector":
        from advseq import registry
        from advseq.device import on_device
        from advseq.training import train_detector

        params = on_device(registry.detectors.get(a["detector"]), a["params"], unit.device,
                           option="device", what="params.device")
        return train_detector(ds, a["detector"], path, seed=a["seed"], params=params,
                              test_size=a["test_size"], split_seed=a["split_seed"], progress=False)
    if unit.kind == "ceiling":
        from advseq.ceiling import run_ceiling

        return run_ceiling(ds, run_folder / a["detector_dir"], path, spec=AttackSpec(**a["spec"]),
                           steps=a["steps"], max_users=a["max_users"], seed=a["seed"], device=unit.device)
    if unit.kind == "attack":
        if unit.shards > 1:
            from advseq.executors.shards import run_sharded

            return run_sharded(unit, ds, run_folder, part)
        from advseq.evaluation import run_attack

        return run_attack(ds, run_folder / a["detector_dir"], a["attack"], **attack_kwargs(unit, run_folder))
    if unit.kind == "retrain":
        from advseq.retrain import retrain_loop

        return retrain_loop(ds, a["detector"], a["attack"], path, rounds=a["rounds"], mode=a["mode"],
                            seed=a["seed"], initial=run_folder / a["initial"], test_size=a["test_size"],
                            split_seed=a["split_seed"], detector_params=a["detector_params"],
                            attack_params=a["attack_params"], spec=AttackSpec(**a["spec"]),
                            max_users=a["max_users"], surrogate=a["surrogate"],
                            surrogate_params=a["surrogate_params"], repair=unit.repair, progress=False,
                            fine_tune_epochs=a.get("fine_tune_epochs"),
                            device=unit.device)
    raise ConfigError(f"unit {unit.label!r}: unknown kind {unit.kind!r} (one of {', '.join(KINDS)})")


def attack_kwargs(unit: UnitSpec, run_folder: Path) -> dict[str, Any]:
    """:func:`~advseq.evaluation.run_attack`'s keyword arguments for an attack unit."""
    from advseq.attack import AttackSpec

    a = unit.args
    return {"out": run_folder / unit.rel, "mode": a["mode"], "spec": AttackSpec(**a["spec"]),
            "attack_params": a["attack_params"], "budget": a["budget"], "seed": a["seed"],
            "resume": True, "repair": unit.repair, "max_users": a["max_users"],
            "quality": a["quality"],
            "surrogate": run_folder / a["surrogate_dir"] if a["surrogate_dir"] else None,
            "progress": False, "device": unit.device}
