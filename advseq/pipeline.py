"""Robustness runs: a whole matrix of datasets × detectors × attacks × threat modes from
one TOML config (``advseq run CONFIG.toml``), plus retraining loops.

Every unit of work (a trained detector, an attack run, a retraining loop) is
content-addressed — its folder name ends in a hash of its config, the data checksum
and the seed — so finished units are reused by later runs and a killed run picks up
where it stopped (an interrupted attack resumes from its records). Units are plain data
(:class:`~advseq.executors.units.UnitSpec`: settings, folders, the units they need), run
by an executor (:mod:`advseq.executors`: local, or Ray tasks). ``index.json`` lists
every unit with its status; ``advseq report`` reads it. The config is read and checked by
:mod:`advseq.run_config`; names are labels, whose folders are safe slugs
(:func:`~advseq.run_config.folder_name`: a plain name is its own folder).

Config (TOML)::

    [run]
    name = "wiki"                 # run folder: runs/<name> unless out = "..."
    seed = 0
    quality = true                # text-quality metrics for every attack
    max_users = 0                 # 0 = every test user
    ceiling = true                # per soft-token detector: the best evasion ANY one post reaches (advseq ceiling)
    ceiling_steps = 300
    # posts = [1, 2, 4, 8]        # K, the posts each attacker writes per user: one attack unit
    #                             # (and ceiling) per K; default 1
    # shards = 4                  # each attack unit in 4 tasks by user (docs/cluster.md)

    # [resources]                 # what each task asks a Ray cluster for (default 1 CPU)
    # num_cpus = 1
    # attack = { num_gpus = 1 }   # per unit kind: detector, ceiling, attack, retrain

    [[datasets]]
    name = "wiki"
    shared = "wiki"               # ../shared/data/wiki (or $ADVSEQ_DATA/wiki); or demo = true; or path = "..."

    [[detectors]]
    name = "hlstm"                # label; detector = "hlstm" when omitted
    params = {}

    [surrogate]                   # what the attacker trains for transfer attacks and loops
    detector = "cnn"

    [[attacks]]
    name = "hotflip"
    modes = ["white-box", "transfer"]
    params = {}
    # detectors = ["hlstm"]       # only against these (default: every detector)
    # posts = [1, 4]              # this attack's K values (default: the run's)
    # shards = 8                  # this attack's shards (default: the run's)

    [[retrain]]
    detector = "hlstm"            # a label from [[detectors]]
    attack = "petgen"
    rounds = 3
    # posts = 4                   # K, the posts the loop's attacker writes per user (default 1)
    # fine_tune_epochs = 4        # warm start: rounds continue the last detector (default: from scratch)
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advseq.errors import ConfigError
from advseq.executors.units import UnitSpec, remember_dataset
from advseq.manifest import build_manifest
from advseq.run_config import (  # noqa: F401  (load_config and the config tables are used from here)
    AttackCfg,
    DatasetCfg,
    DetectorCfg,
    RetrainCfg,
    RunConfig,
    folder_name,
    load_config,
)
from advseq.schema import Dataset
from advseq.storage import atomic_write_json
from advseq.threat import applicability, surrogate_seed

if TYPE_CHECKING:
    from advseq.attack import AttackSpec

INDEX_FILE = "index.json"


def unit_key(kind: str, config: dict[str, Any], checksum: str, seed: int) -> str:
    blob = json.dumps({"kind": kind, "config": config, "data": checksum, "seed": seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


#: a unit of the matrix: settings and paths only (see :mod:`advseq.executors.units`)
Unit = UnitSpec


def with_posts(spec: AttackSpec, K: int) -> AttackSpec:
    """``spec`` writing K posts per user (``spec`` itself for K = 1)."""
    return spec if spec.posts == K else replace(spec, posts=K)


def k_part(K: int) -> str:
    """What K adds to a unit's folder name: nothing for K = 1 (folders as before K)."""
    return "" if K == 1 else f"-k{K}"


def k_label(K: int) -> str:
    return "" if K == 1 else f", {K} posts"


def device_part(device: str) -> dict[str, str]:
    """What a device adds to a unit's key: nothing on the CPU (folders as before devices);
    a GPU's results are other floats, so its units have folders of their own."""
    return {} if device == "cpu" else {"device": device}


def posts_info(K: int) -> dict[str, int]:
    """What K adds to a unit's index entry: nothing for K = 1."""
    return {} if K == 1 else {"posts": K}


def ceiling_posts(cfg: RunConfig) -> list[int]:
    """The K values a run computes ceilings for: the run's and every attack's."""
    return sorted({*cfg.posts, *(k for a in cfg.attacks for k in cfg.attack_posts(a))})


def plan(cfg: RunConfig, data: dict[str, Dataset], *, repair: bool = False) -> list[UnitSpec]:
    """Every unit of the matrix, in dependency order (``repair``: see :func:`run_matrix`).
    Each unit carries its settings, its folder and the folders of the units it needs, so
    any process that sees the run folder can run it (:func:`~advseq.executors.units.execute_unit`)."""
    from advseq import registry
    from advseq.attack import AttackSpec, create_attack

    units: list[UnitSpec] = []
    out = cfg.out

    def rel(path: Path) -> str:
        return str(path.relative_to(out))

    spec = AttackSpec(goal=cfg.goal, placement=cfg.placement)
    for ds_cfg in cfg.datasets:
        ds = data[ds_cfg.name]
        checksum = ds.checksum()
        remember_dataset(ds_cfg.path, ds)
        dataset = {"name": ds_cfg.name, "path": str(ds_cfg.path), "checksum": checksum}

        def unit(kind: str, label: str, path: Path, args: dict[str, Any], deps: list[Path],
                 info: dict[str, Any], skip: str | None = None, shards: int = 1,
                 dataset: dict[str, str] = dataset, device: str = "cpu") -> UnitSpec:
            return UnitSpec(kind, label, str(out), rel(path), dataset, args, [rel(d) for d in deps],
                            info, skip, shards, cfg.request(kind, device), repair, device)

        model_dirs: dict[str, Path] = {}
        needs_surrogate = any("transfer" in a.modes for a in cfg.attacks)
        for det in [*cfg.detectors, *([cfg.surrogate] if needs_surrogate else [])]:
            seed = surrogate_seed(cfg.seed) if det is cfg.surrogate else cfg.seed
            conf = {"detector": det.detector, "params": det.params, "test_size": cfg.test_size,
                    "split_seed": cfg.split_seed, **device_part(cfg.device_of(det))}
            path = out / "models" / ds_cfg.folder / f"{det.folder}-{unit_key('detector', conf, checksum, seed)}"
            model_dirs[det.name] = path
            units.append(unit("detector", f"{ds_cfg.name}: train {det.name}", path,
                              {"detector": det.detector, "params": det.params, "seed": seed,
                               "test_size": cfg.test_size, "split_seed": cfg.split_seed}, [],
                              {"dataset": ds_cfg.name, "detector": det.name, "surrogate": det is cfg.surrogate},
                              device=cfg.device_of(det)))
        for det, K in product(cfg.detectors if cfg.ceiling else [], ceiling_posts(cfg)):
            if "gradient" not in registry.detectors.get(det.detector).capabilities:
                continue          # the relaxation needs soft tokens; nothing to report otherwise
            spec_k = with_posts(spec, K)
            conf = {"detector": det.name, "spec": spec_k.to_dict(), "max_users": cfg.max_users,
                    "steps": cfg.ceiling_steps, **device_part(cfg.device_of(det))}
            path = out / "ceiling" / ds_cfg.folder / \
                f"{det.folder}{k_part(K)}-{unit_key('ceiling', conf, checksum, cfg.seed)}"
            what = "one-post ceiling" if K == 1 else f"{K}-post ceiling"
            units.append(unit("ceiling", f"{ds_cfg.name}: {what} of {det.name}", path,
                              {"detector_dir": rel(model_dirs[det.name]), "spec": _spec_args(spec_k),
                               "steps": cfg.ceiling_steps, "max_users": cfg.max_users, "seed": cfg.seed},
                              [model_dirs[det.name]],
                              {"dataset": ds_cfg.name, "detector": det.name, **posts_info(K)},
                              device=cfg.device_of(det)))
        surrogate_caps = registry.detectors.get(cfg.surrogate.detector).capabilities
        for det in cfg.detectors:
            caps = registry.detectors.get(det.detector).capabilities
            for atk in cfg.attacks:
                if atk.detectors is not None and det.name not in atk.detectors:
                    continue
                needs = create_attack(atk.attack, seed=cfg.seed, **atk.params).requires
                for mode, K in product(atk.modes, cfg.attack_posts(atk)):
                    spec_k = with_posts(spec, K)
                    conf = {"attack": atk.attack, "params": atk.params, "mode": mode, "budget": atk.budget,
                            "spec": spec_k.to_dict(), "max_users": cfg.max_users, "quality": cfg.quality,
                            "detector": det.name, "surrogate": cfg.surrogate.detector if mode == "transfer" else None,
                            **device_part(cfg.device_of(atk))}
                    key = unit_key("attack", conf, checksum, cfg.seed)
                    path = out / "attacks" / ds_cfg.folder / det.folder / f"{atk.folder}-{mode}{k_part(K)}-{key}"
                    if mode == "transfer":
                        skip = applicability(needs, mode, surrogate_caps, attack=f"attack {atk.attack!r}",
                                             detector=repr(cfg.surrogate.detector))
                    else:
                        skip = applicability(needs, mode, caps, attack=atk.name, detector=det.name)
                    sur = model_dirs.get(cfg.surrogate.name) if mode == "transfer" else None
                    units.append(unit(
                        "attack", f"{ds_cfg.name}: {atk.name} ({mode}{k_label(K)}) vs {det.name}", path,
                        {"detector_dir": rel(model_dirs[det.name]), "attack": atk.attack, "mode": mode,
                         "spec": _spec_args(spec_k), "attack_params": atk.params, "budget": atk.budget,
                         "seed": cfg.seed, "max_users": cfg.max_users, "quality": cfg.quality,
                         "surrogate_dir": rel(sur) if sur else None},
                        [model_dirs[det.name], *([sur] if sur else [])],
                        {"dataset": ds_cfg.name, "detector": det.name, "attack": atk.name,
                         "mode": mode, **posts_info(K)}, skip, cfg.attack_shards(atk), device=cfg.device_of(atk)))
        for rt in cfg.retrain:
            det = next(d for d in cfg.detectors if d.name == rt.detector)
            spec_k = with_posts(spec, rt.posts)
            conf = {"detector": det.detector, "params": det.params, "attack": rt.attack,
                    "attack_params": rt.params, "rounds": rt.rounds, "mode": rt.mode,
                    "spec": spec_k.to_dict(), "max_users": cfg.max_users}
            if rt.mode == "transfer":   # only then does the loop train the run's surrogate
                conf["surrogate"] = {"detector": cfg.surrogate.detector, "params": cfg.surrogate.params}
            if rt.fine_tune_epochs is not None:
                conf["fine_tune_epochs"] = rt.fine_tune_epochs
            conf.update(device_part(cfg.device_of(rt)))
            key = unit_key("retrain", conf, checksum, cfg.seed)
            path = out / "retrain" / ds_cfg.folder / f"{det.folder}-{folder_name(rt.attack)}{k_part(rt.posts)}-{key}"
            units.append(unit(
                "retrain", f"{ds_cfg.name}: retrain {det.name} vs {rt.attack} "
                           f"({rt.rounds} rounds{k_label(rt.posts)})", path,
                {"detector": det.detector, "attack": rt.attack, "rounds": rt.rounds, "mode": rt.mode,
                 "seed": cfg.seed, "initial": rel(model_dirs[det.name]), "test_size": cfg.test_size,
                 "split_seed": cfg.split_seed, "detector_params": det.params, "attack_params": rt.params,
                 "spec": _spec_args(spec_k), "max_users": cfg.max_users,
                 "surrogate": cfg.surrogate.detector, "surrogate_params": cfg.surrogate.params,
                 "fine_tune_epochs": rt.fine_tune_epochs},
                [model_dirs[det.name]],
                {"dataset": ds_cfg.name, "detector": det.name, "attack": rt.attack,
                 "rounds": rt.rounds, "mode": rt.mode, **posts_info(rt.posts)}, device=cfg.device_of(rt)))
    return units


def _spec_args(spec: AttackSpec) -> dict[str, Any]:
    """An AttackSpec as the arguments that make it again (``AttackSpec(**d)``)."""
    from dataclasses import asdict

    return asdict(spec)


def run_matrix(cfg: RunConfig, *, progress: bool | None = None, console: Any = None,
               repair: bool = False, executor: str = "local", address: str | None = None,
               workers: int | None = None) -> dict[str, Any]:
    """Run (or finish) every unit of ``cfg``; returns the index (also ``out/index.json``).
    ``repair``: an attack unit whose results.jsonl has bad lines resumes without them
    (named in a warning) instead of refusing the run. ``executor``: ``local`` runs the
    units one after another in this process; ``ray`` runs them as Ray tasks, on the
    cluster at ``address`` or on a local Ray of ``workers`` CPUs
    (:mod:`advseq.executors.ray_exec`)."""
    from rich.console import Console

    from advseq.audit import describe
    from advseq.executors import get_executor
    from advseq.io import load_dataset

    execute = get_executor(executor, address=address, workers=workers)
    console = console or Console(stderr=True)
    out = cfg.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{out}: cannot create the run folder ({err.strerror or err})") from None
    t0 = time.perf_counter()
    data = {d.name: load_dataset(d.path, name=d.name) for d in cfg.datasets}
    infos = {}
    for d in cfg.datasets:
        ds = data[d.name]
        info_path = out / "datasets" / d.folder / "info.json"
        if not info_path.exists() or json.loads(info_path.read_text()).get("checksum") != ds.checksum():
            info = describe(ds, seed=cfg.seed)
            card = Path(ds.source or "").parent / "README.md" if ds.source else None
            info["card"] = card.read_text(encoding="utf-8") if card and card.is_file() else None
            atomic_write_json(info_path, info)
        infos[d.name] = str(info_path.relative_to(out))
    units = plan(cfg, data, repair=repair)
    index: dict[str, Any] = {"config": cfg.to_dict(), "datasets": infos, "units": []}
    atomic_write_json(out / "run.json", build_manifest(cfg.to_dict(), seed=cfg.seed,
                                                       data={n: d.checksum() for n, d in data.items()}))
    execute(units, out, index, progress=progress, name=cfg.name)
    index["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / INDEX_FILE, index)
    return index


def index_entry(unit: UnitSpec, out: Path) -> dict[str, Any]:
    """A unit's index.json entry before its status."""
    return {"kind": unit.kind, "label": unit.label, "path": str(unit.path.relative_to(out)), **unit.info}
