"""The attack evaluator: every attack scored the same way, on the same users.

``run_attack`` attacks every test user of a trained detector's recorded split (the
attacker writes for malicious users under ``evasion``, for everyone under ``flip``),
scores the attacked users on the deployed detector, and appends one record per user to
``results.jsonl`` batch by batch, so a killed run resumes where it stopped (``resume``)
with nothing lost or duplicated. ``summary.json`` holds the attack and detection
metrics and the text-quality metrics of the written posts next to those of the users'
real last posts (the yardstick).

Threat modes: ``white-box``, ``score``, ``label`` query the deployed detector through a
:class:`~advseq.threat.ThreatModel`; ``transfer`` gives the attack white-box access to a
surrogate (given, or trained here on the training split) and scores its posts once on
the deployed detector, which the attack never sees.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advseq import registry
from advseq.attack import AttackSpec, create_attack
from advseq.detector import Detector, load_detector
from advseq.device import on_device
from advseq.errors import CapabilityError, ConfigError
from advseq.manifest import build_manifest
from advseq.records import one_post_records, posts_records, summarize
from advseq.resume import (
    ResultsFile,
    check_meta,
    load_results,
    model_fingerprint,
    read_results,
    write_meta,
)
from advseq.schema import Dataset, DataSplit, User
from advseq.storage import atomic_write_json, atomic_write_text
from advseq.threat import SURROGATE_DETECTOR, ThreatModel, applicability, check_mode, surrogate_seed
from advseq.training import SPLIT_FILE, check_out_folder, data_record, recorded_split

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "manifest.json"


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a (possibly killed) run, one JSON object a line: a torn last line is
    dropped from the file, any other bad line raises a DataError naming it."""
    found = read_results(path)
    if found.bad:
        raise found.refuse()
    found.keep()
    return found.records


def _whole_batches(path: Path, records: list[dict[str, Any]], test: Sequence[User],
                   batches: list[list[int]]) -> list[dict[str, Any]]:
    """Drop the records of a batch that was only partly written when a run was killed
    (the batch is attacked again as a whole, so every user sees the same batch)."""
    done = {r["user_id"] for r in records}
    partial = {test[i].user_id for idx in batches if not all(test[i].user_id in done for i in idx)
               for i in idx}
    keep = [r for r in records if r["user_id"] not in partial]
    if len(keep) != len(records):
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))
    return keep


def _append(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        fh.flush()
        os.fsync(fh.fileno())


def prepare_surrogate(train: Dataset, *, surrogate: str | Path | None,
                      detector: str = SURROGATE_DETECTOR, params: dict[str, Any] | None = None,
                      seed: int, out: Path, progress: bool | None,
                      device: str | None = None) -> tuple[Detector, dict[str, Any]]:
    """The attacker's own detector: loaded from ``surrogate``, or a ``detector`` with
    ``params`` trained on ``train`` (the users the attacker may see) with a seed the
    deployed model did not use (:func:`~advseq.threat.surrogate_seed`); on ``device``."""
    if surrogate is not None:
        return load_detector(surrogate, device=device), {"path": str(surrogate)}
    path = out / "surrogate"
    if (path / "config.json").exists():
        return load_detector(path, device=device), {"trained": detector, "path": str(path)}
    from advseq.detector import create_detector

    det = create_detector(detector, seed=surrogate_seed(seed),
                          **on_device(_detector_class(None, detector), params, device))
    det.fit(train.users, progress=progress)
    det.save(path)
    return det, {"trained": detector, "seed": surrogate_seed(seed), "path": str(path)}


def run_attack(
    data: Dataset,
    detector_dir: str | Path,
    attack: str,
    *,
    out: str | Path,
    mode: str = "white-box",
    spec: AttackSpec | None = None,
    attack_params: dict[str, Any] | None = None,
    surrogate: str | Path | None = None,
    surrogate_detector: str = SURROGATE_DETECTOR,
    surrogate_params: dict[str, Any] | None = None,
    budget: int | None = None,
    seed: int = 0,
    resume: bool = False,
    repair: bool = False,
    batch_size: int = 16,
    max_users: int | None = None,
    quality: bool = True,
    progress: bool | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Attack the recorded test users of the detector in ``detector_dir``; returns the
    summary (also written to ``out/summary.json``).

    In ``transfer`` mode the attacker's surrogate is the model folder ``surrogate``, or a
    ``surrogate_detector`` with ``surrogate_params`` trained here on the training split.

    ``resume`` continues the run in ``out`` from its checked records (a bad line of
    ``results.jsonl`` refuses the run); ``repair`` (implies ``resume``) drops the bad
    lines instead, reports them and attacks their users again. ``device``: where the
    models and the attack's own ones run (:mod:`advseq.device`; default: the CPU)."""
    run = open_attack(data, detector_dir, attack, out=out, mode=mode, spec=spec,
                      attack_params=attack_params, surrogate=surrogate,
                      surrogate_detector=surrogate_detector, surrogate_params=surrogate_params,
                      budget=budget, seed=seed, resume=resume, repair=repair, batch_size=batch_size,
                      max_users=max_users, progress=progress, device=device)
    prepare_seconds = prepare_attack(run)
    clean = run.deployed.predict_proba(run.test)
    records = list(run.records)
    attack_batches(run, run.batches, out=run.out / RESULTS_FILE, records=records,
                   clean=[float(p) for p in clean], progress=progress)
    return finish_attack(run, records, quality=quality, prepare_seconds=prepare_seconds)


@dataclass
class AttackRun:
    """An attack run opened in its folder (settings checked, models loaded, the threat
    model set up, ``run.json`` and the results header written): what preparing, attacking
    any of its batches (in this process or another) and summarising need."""

    out: Path
    data: Dataset
    spec: AttackSpec
    deployed: Detector
    split: DataSplit
    test: list[User]
    atk: Any
    config: dict[str, Any]
    threat: ThreatModel
    surrogate_info: dict[str, Any] | None
    batches: list[list[int]]
    records: list[dict[str, Any]]   #: the checked records of results.jsonl, whole batches only
    seed: int


def open_attack(data: Dataset, detector_dir: str | Path, attack: str, *, out: str | Path,
                mode: str = "white-box", spec: AttackSpec | None = None,
                attack_params: dict[str, Any] | None = None, surrogate: str | Path | None = None,
                surrogate_detector: str = SURROGATE_DETECTOR,
                surrogate_params: dict[str, Any] | None = None, budget: int | None = None,
                seed: int = 0, resume: bool = False, repair: bool = False, batch_size: int = 16,
                max_users: int | None = None, progress: bool | None = None,
                device: str | None = None) -> AttackRun:
    """Check and open the attack run in ``out`` (arguments as :func:`run_attack`); a new
    run's ``run.json`` and results header are written, a resumed run's records checked."""
    out = check_out_folder(out)
    resume = resume or repair
    if max_users is not None and max_users < 0:
        raise ConfigError(f"max users must be >= 0 (0 means every test user), got {max_users}")
    spec = spec or AttackSpec()
    check_mode(mode)
    if surrogate is not None and mode != "transfer":
        raise ConfigError("--surrogate only applies to --mode transfer")
    deployed = load_detector(detector_dir, device=device)
    split = require_recorded_split(detector_dir, data, "attacks run on")
    test = subset_users(split.test.users, max_users, seed)
    atk = create_attack(attack, seed=seed, **on_device(registry.attacks.get(attack), attack_params, device))

    config = {"attack": attack, "attack_params": atk.get_params(), "mode": mode,
              "spec": spec.to_dict(), "budget": budget, "seed": seed, "batch_size": batch_size,
              "detector": str(Path(detector_dir)), "detector_name": deployed.name,
              "data_checksum": data.checksum(), "n_users": len(test),
              "surrogate": str(surrogate) if surrogate else (surrogate_detector if mode == "transfer" else None)}
    if surrogate_params and surrogate is None and mode == "transfer":
        config["surrogate_params"] = surrogate_params   # absent when empty: older runs resume
    if device not in (None, "cpu"):
        config["device"] = device                       # absent on the CPU: older runs resume
    run_file = out / RUN_FILE
    previous = _previous_config(run_file)
    if previous is not None:
        if not resume:
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose "
                              "another --out")
        if previous != config:
            changed = sorted(k for k in set(config) | set(previous) if previous.get(k) != config.get(k))
            raise ConfigError(f"cannot resume {out}: the run was started with different settings "
                              f"({', '.join(changed)})")
    elif (out / RESULTS_FILE).exists():
        raise ConfigError(f"{out / RESULTS_FILE}: records with no {RUN_FILE} saying how they were "
                          "made; choose another --out")

    # Refuse an attack the threat model cannot serve before any work is done.
    if mode == "transfer":
        sur_cls = _detector_class(surrogate, surrogate_detector)
        caps, name = sur_cls.capabilities, sur_cls.name
    else:
        caps, name = deployed.capabilities, deployed.name or type(deployed).__name__
    reason = applicability(atk.requires, mode, caps, attack=f"attack {attack!r}", detector=repr(name))
    if reason:
        raise CapabilityError(reason)
    # Every record read back must be one of these users, given once, scored by these models.
    test_labels = {u.user_id: u.label for u in test}
    found = load_results(out / RESULTS_FILE, test_labels, repair=repair) if previous is not None \
        else ResultsFile(out / RESULTS_FILE)
    models = {"detector": model_fingerprint(deployed, detector_dir)}
    check_meta(out, models, len(found.records))
    surrogate_info = None
    if mode != "transfer":
        threat = ThreatModel(deployed, mode, budget=budget)
    else:
        surrogate_det, surrogate_info = prepare_surrogate(
            split.train, surrogate=surrogate, detector=surrogate_detector, params=surrogate_params,
            seed=seed, out=out, progress=progress, device=device)
        models["surrogate"] = model_fingerprint(surrogate_det, surrogate_info["path"])
        check_meta(out, models, len(found.records))
        # The attacker owns the surrogate: every capability it offers, no budget.
        threat = ThreatModel(surrogate_det, surrogate_det.capabilities, surrogate=True)
    out.mkdir(parents=True, exist_ok=True)
    write_meta(out, models)                 # before run.json: a run's records always have one
    atomic_write_json(run_file, config)
    found.keep()
    if found.bad:
        log.warning(found.report())

    batches = [list(range(s, min(s + batch_size, len(test)))) for s in range(0, len(test), batch_size)]
    records = _whole_batches(out / RESULTS_FILE, found.records, test, batches)
    return AttackRun(out, data, spec, deployed, split, test, atk, config, threat, surrogate_info,
                     batches, records, seed)


def prepare_attack(run: AttackRun) -> float:
    """Let the attack learn what it needs from the training users; returns the seconds."""
    t_start = time.perf_counter()
    run.atk.workdir = run.out / "attack_state"
    run.atk.prepare(run.split.train, run.threat, run.spec)
    return time.perf_counter() - t_start


def attack_batches(run: AttackRun, batches: Sequence[list[int]], *, out: Path,
                   records: list[dict[str, Any]], clean: Sequence[float],
                   progress: bool | None) -> None:
    """Attack every batch of ``batches`` (indices into ``run.test``) none of whose users is
    in ``records``, appending each batch's records to ``out`` and to ``records``;
    ``clean`` holds the deployed detector's probability for every test user."""
    from advseq.progress import progress_bar

    spec, test, threshold = run.spec, run.test, 0.5
    done = {r["user_id"] for r in records}
    n_success = sum(r["success"] for r in records)
    todo = sum(len(idx) for idx in batches)
    with progress_bar(f"attack {run.config['attack']} ({run.config['mode']})", todo,
                      enabled=progress) as bar:
        bar.update(completed=sum(test[i].user_id in done for idx in batches for i in idx),
                   status=f"success {n_success}")
        for idx in batches:
            if all(test[i].user_id in done for i in idx):
                continue
            users = [test[i] for i in idx]
            targeted = [u for u in users if spec.targets(u)]
            tasks = [spec.task(u) for u in targeted]
            one_batch = posts_records if spec.posts > 1 else one_post_records
            batch_records = one_batch(run.atk, users, [clean[i] for i in idx], tasks, run.threat,
                                      run.deployed, spec, threshold)
            n_success += sum(r["success"] for r in batch_records)
            _append(out, batch_records)
            records.extend(batch_records)
            bar.advance(len(users))
            bar.update(status=f"success {n_success}")


def finish_attack(run: AttackRun, records: list[dict[str, Any]], *, quality: bool,
                  prepare_seconds: float) -> dict[str, Any]:
    """The summary of a run whose ``records`` cover every test user (written to
    ``summary.json``, with the manifest)."""
    out, spec, data, seed, config = run.out, run.spec, run.data, run.seed, run.config
    threshold = 0.5
    test_labels = {u.user_id: u.label for u in run.test}
    if len(records) != len(run.test) or {r["user_id"] for r in records} != test_labels.keys():
        raise RuntimeError(f"{out / RESULTS_FILE}: records do not match the run's test users")
    summary = summarize(records, spec=spec, config=config)
    if spec.posts > 1:
        from advseq.multipost import posts_summary

        summary.update(posts_summary(records, spec, threshold))
    summary["prepare_seconds"] = round(prepare_seconds, 3)
    if quality:
        from advseq.quality import quality_report

        summary["quality"] = quality_report(records, data, run.split, spec, seed=seed,
                                            fluency_models=getattr(run.atk, "fluency_models", ()))
        if spec.posts > 1:
            summary["quality_by_k"] = summary["quality"].pop("by_k")
        summary.update({k: v for k, v in summary["quality"]["attack"].items()})
    atomic_write_json(out / SUMMARY_FILE, summary)
    atomic_write_json(out / MANIFEST_FILE, build_manifest(
        config, seed=seed, data=data_record(data), surrogate=run.surrogate_info,
        threat=run.threat.describe(), attack_paper=run.atk.paper))
    return summary


def _previous_config(run_file: Path) -> dict[str, Any] | None:
    """The settings a run in this folder was started with, or None for a new run."""
    if not run_file.exists():
        return None
    try:
        previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        previous = None
    if not isinstance(previous, dict):
        raise ConfigError(f"{run_file}: not a run record written by advseq; choose another --out")
    return previous


def require_recorded_split(detector_dir: str | Path, data: Dataset, what: str) -> DataSplit:
    """The train/test split the detector in ``detector_dir`` recorded for ``data``, or a
    clear error when ``data`` is not the dataset it was trained on."""
    split = recorded_split(detector_dir, data)
    if split is None and not (Path(detector_dir) / SPLIT_FILE).exists():
        raise ConfigError(f"{detector_dir} records no train/test split ({SPLIT_FILE}); {what} "
                          "the test split `advseq train` records")
    if split is None:
        raise ConfigError(f"{data.source or data.name} is not the dataset the detector in "
                          f"{detector_dir} was trained on (checksums differ); {what} "
                          "that detector's recorded test split")
    return split


def subset_users(users: Sequence[User], max_users: int | None, seed: int) -> list[User]:
    """All users, or a seeded stratified sample of ``max_users`` of them (in split order):
    test splits list users in dataset order, often one class first."""
    if not max_users or max_users >= len(users):
        return list(users)
    import random

    rng = random.Random(f"subset|{seed}")
    by_label: dict[int, list[int]] = {}
    for i, u in enumerate(users):
        by_label.setdefault(u.label, []).append(i)
    share = max_users / len(users)
    keep: list[int] = []
    for idx in by_label.values():
        keep.extend(rng.sample(idx, max(1, round(len(idx) * share))))
    keep = sorted(keep)[:max_users]
    return [users[i] for i in keep]


def _detector_class(surrogate: str | Path | None, name: str) -> type[Detector]:
    from advseq import registry
    from advseq.detector import read_config

    if surrogate is not None:
        name = read_config(Path(surrogate))["detector"]
    return registry.detectors.get(name)
