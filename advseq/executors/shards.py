"""Attack units split by user (``shards = N``): one preparation, N shards, one merge.

* ``prepare`` opens the run (``run.json``, the results header, the surrogate trained once
  in transfer mode), lets the attack learn what it needs once (its saved state, e.g. a
  UniTrigger trigger, goes to ``shards/state``; PETGEN's generator and lm-generic's model
  are cached under ``$ADVSEQ_HOME``) and scores every test user once on the deployed
  detector; ``shards/prepared.json``, written last, says it is done.
* ``shard:I`` attacks batches I, I + N, I + 2N, ... of the unsharded run (the same
  batches of 16 users, so every user sees the batch it would see unsharded) into
  ``shards/shard-I-of-N.jsonl``, resumable exactly as ``results.jsonl`` is (checked
  records, whole batches; a lock keeps two tasks of one shard from writing at once).
* ``merge`` puts every record into ``results.jsonl`` in the unsharded run's user order and
  writes the summary with :func:`~advseq.evaluation.finish_attack`, the same code as an
  unsharded run, so the summary equals the unsharded one value for value (timings aside).

Records already in ``results.jsonl`` (an unsharded run that was stopped, a merge that was
stopped) count as done for every shard. The shard files stay, as the shards wrote them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advseq.storage import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from advseq.evaluation import AttackRun
    from advseq.executors.units import UnitSpec
    from advseq.schema import Dataset

SHARDS_DIR = "shards"
PREPARED_FILE = "prepared.json"
STATE_DIR = "state"
PREPARED_FORMAT = "advseq-shards-prepared/1"


def shard_file(out: Path, i: int, n: int) -> Path:
    return out / SHARDS_DIR / f"shard-{i}-of-{n}.jsonl"


def shard_batches(batches: list[list[int]], i: int, n: int) -> list[list[int]]:
    """Shard ``i`` of ``n``: every n-th batch from batch ``i`` (strided, so the users the
    attacker writes for spread over the shards however the test split is ordered)."""
    return batches[i::n]


def run_sharded(unit: UnitSpec, ds: Dataset, run_folder: Path, part: str | None) -> Any:
    """Run one part of a sharded attack unit (``prepare``, ``shard:I``, ``merge``), or
    all of them in order; returns the last part's result (the summary after a merge)."""
    result = None
    for p in unit.parts() if part is None else [part]:
        run = _open(unit, ds, run_folder)
        if p == "prepare":
            result = prepare_shards(run)
        elif p == "merge":
            result = merge_shards(run, unit.shards, quality=unit.args["quality"])
        else:
            result = attack_shard(run, int(str(p).removeprefix("shard:")), unit.shards,
                                  repair=unit.repair)
    return result


def _open(unit: UnitSpec, ds: Dataset, run_folder: Path) -> AttackRun:
    from advseq.evaluation import open_attack
    from advseq.executors.units import attack_kwargs

    kw = attack_kwargs(unit, run_folder)
    del kw["quality"]
    return open_attack(ds, run_folder / unit.args["detector_dir"], unit.args["attack"], **kw)


def read_prepared(run: AttackRun) -> dict[str, Any] | None:
    """What the unit's preparation recorded, or None when it has not finished (or was made
    for other settings, which ``run.json`` already refuses)."""
    path = run.out / SHARDS_DIR / PREPARED_FILE
    try:
        prepared = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(prepared, dict) and prepared.get("format") == PREPARED_FORMAT \
        and prepared.get("config") == run.config and len(prepared.get("clean", ())) == len(run.test)
    return prepared if ok else None


def prepare_shards(run: AttackRun) -> dict[str, Any]:
    """The preparation every shard of the unit reuses (done once; again only when its
    record is missing)."""
    from advseq.evaluation import prepare_attack

    prepared = read_prepared(run)
    if prepared is not None:
        return prepared
    seconds = prepare_attack(run)
    state = bool(run.atk.save_prepared(run.out / SHARDS_DIR / STATE_DIR))
    clean = run.deployed.predict_proba(run.test)
    prepared = {"format": PREPARED_FORMAT, "config": run.config, "prepare_seconds": seconds,
                "state": state, "clean": [float(p) for p in clean]}
    atomic_write_json(run.out / SHARDS_DIR / PREPARED_FILE, prepared)
    return prepared


def _restore(run: AttackRun, prepared: dict[str, Any]) -> None:
    """The prepared attack in this process: its saved state, else ``prepare`` again
    (attacks that save none only load cached models or build cheap indexes there)."""
    from advseq.evaluation import prepare_attack

    run.atk.workdir = run.out / "attack_state"
    if not (prepared["state"] and run.atk.load_prepared(run.out / SHARDS_DIR / STATE_DIR)):
        prepare_attack(run)


def attack_shard(run: AttackRun, i: int, n: int, *, repair: bool = False) -> dict[str, int]:
    """Attack shard ``i`` of ``n`` into its own file; returns how many of its users were
    attacked now and how many were done before."""
    from advseq.evaluation import _whole_batches, attack_batches
    from advseq.resume import load_results

    if not 0 <= i < n:
        raise ValueError(f"shard {i} of {n} does not exist")
    prepared = read_prepared(run)
    if prepared is None:
        raise RuntimeError(f"{run.out}: shard {i} of {n} started before the unit was prepared")
    mine = shard_batches(run.batches, i, n)
    users = {run.test[j].user_id: run.test[j].label for idx in mine for j in idx}
    path = shard_file(run.out, i, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        found = load_results(path, users, repair=repair)
        found.keep()
        own = _whole_batches(path, found.records, run.test, mine)
        records = [r for r in run.records if r["user_id"] in users] + own
        before = len(records)
        if before < len(users):
            _restore(run, prepared)
            attack_batches(run, mine, out=path, records=records, clean=prepared["clean"],
                           progress=False)
    return {"shard": i, "attacked": len(records) - before, "done_before": before}


def merge_shards(run: AttackRun, n: int, *, quality: bool) -> dict[str, Any]:
    """Every shard's records in the unsharded order into ``results.jsonl``, then the
    summary; refused while a shard is unfinished."""
    from advseq.evaluation import RESULTS_FILE, finish_attack
    from advseq.resume import read_results

    prepared = read_prepared(run)
    if prepared is None:
        raise RuntimeError(f"{run.out}: merged before the unit was prepared")
    lines: dict[str, bytes] = {r["user_id"]: _line(r) for r in run.records}
    records: dict[str, dict[str, Any]] = {r["user_id"]: r for r in run.records}
    for i in range(n):
        mine = shard_batches(run.batches, i, n)
        users = {run.test[j].user_id: run.test[j].label for idx in mine for j in idx}
        found = read_results(shard_file(run.out, i, n), users)
        if found.bad:
            raise found.refuse()
        for rec, raw in zip(found.records, found.raw, strict=True):
            records.setdefault(rec["user_id"], rec)
            lines.setdefault(rec["user_id"], raw)
    missing = [u.user_id for u in run.test if u.user_id not in records]
    if missing:
        raise RuntimeError(f"{run.out}: {len(missing)} of {len(run.test)} users have no record "
                           f"yet (first {missing[0]!r}); run every shard before the merge")
    order = [u.user_id for u in run.test]
    atomic_write_bytes(run.out / RESULTS_FILE, b"".join(lines[uid] for uid in order))
    return finish_attack(run, [records[uid] for uid in order], quality=quality,
                         prepare_seconds=prepared["prepare_seconds"])


def _line(rec: dict[str, Any]) -> bytes:
    """A record as :mod:`advseq.evaluation` appends it."""
    return (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``'s lock file (released when the process dies, so
    a task restarted after a killed driver waits for a still-running old one)."""
    try:
        import fcntl
    except ImportError:          # no POSIX locks: one task per shard is the executor's job
        yield
        return
    fd = os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
