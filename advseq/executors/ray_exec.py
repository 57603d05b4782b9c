"""The Ray executor: every unit of a run matrix as a Ray task (``advseq run --executor ray``).

Ray core tasks, nothing else: each unit (each part of a sharded attack unit, see
:mod:`advseq.executors.shards`) is one task that asks for the unit kind's ``num_cpus`` and
``num_gpus`` (``[resources]`` in the config) and gets the tasks it depends on as
arguments (object references), so Ray starts it once they have finished. A task carries
only the unit's settings and the run folder, writes its results there (a folder every
node must see at the same path) and returns a few numbers. Torch in a task uses as many
threads as the task has CPUs.

A task that raises is retried once by Ray (``max_retries=1``, also when its worker or node
dies); a unit whose task fails again is listed as ``failed`` with its error in
``index.json``, the units that need it as ``failed`` naming it, and every other unit goes
on. A driver that is killed and started again reuses every finished unit (its result file
is there) and every finished shard (its records are).

Without ``--address`` a local Ray is started with ``--workers`` CPUs; with it
(``auto`` or ``HOST:PORT``) the driver joins that cluster. ``$ADVSEQ_HOME`` (caches:
PETGEN generators, reference LMs) is passed to every task as the driver has it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advseq.errors import CapabilityError, ConfigError
from advseq.executors import status_of
from advseq.executors.units import UnitSpec, execute_unit
from advseq.runtime import keep_freed_memory
from advseq.storage import atomic_write_json, one_line

try:
    import ray
except ImportError:      # advseq[ray] not installed: ray_executor says so in one line
    ray = None

#: what a retried task gets: one more try after an exception or a lost worker
MAX_RETRIES = 1
TASK_LOG_DIR = "ray"


def run_task(unit: dict[str, Any], run_folder: str, part: str | None, *_deps: Any) -> dict[str, Any]:
    """One unit, or one part of a sharded one, in a Ray worker (``_deps``: the results of
    the tasks it needs, passed so that Ray waits for them)."""
    spec = UnitSpec.from_dict(unit)
    import torch

    keep_freed_memory()

    torch.set_num_threads(cpus_of(spec.request))
    start = time.time()
    attempt = {"part": part, "node": socket.gethostname(), "pid": os.getpid(), "start": round(start, 3)}
    log = task_log(Path(run_folder), spec)
    try:
        execute_unit(spec, run_folder, part)
        result: dict[str, Any] = {"status": "done"}
    except CapabilityError as err:          # not a failure: the threat model cannot serve it
        result = {"status": "not applicable", "reason": str(err)}
    except BaseException as err:
        _log(log, {**attempt, "error": one_line(f"{type(err).__name__}: {err}")})
        raise
    _log(log, {**attempt, "seconds": round(time.time() - start, 3), "status": result["status"]})
    return {**result, "start": start, "end": time.time(), "node": attempt["node"]}


def task_log(run_folder: Path, unit: UnitSpec) -> Path:
    """Where the tasks of ``unit`` log their attempts (one JSON line each: part, node,
    pid, start, seconds or error), under ``RUN/ray/``."""
    return run_folder / TASK_LOG_DIR / (unit.rel.replace("/", "__") + ".jsonl")


def _log(path: Path, line: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def attempts(run_folder: Path, unit: UnitSpec) -> list[dict[str, Any]]:
    """Every attempt logged for ``unit``'s tasks (oldest first)."""
    path = task_log(run_folder, unit)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def ray_executor(*, address: str | None, workers: int | None) -> Callable[..., None]:
    """The executor for ``--executor ray``; a one-line error when Ray is missing."""
    if ray is None:
        raise ConfigError("--executor ray needs Ray, which is not installed: "
                          "pip install 'advseq[ray]'")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    if address is not None and workers is not None:
        raise ConfigError("--workers applies to the local Ray only; a cluster at --address has "
                          "the workers its nodes were started with")

    def execute(units: list[UnitSpec], out: Path, index: dict[str, Any], *,
                progress: bool | None, name: str) -> None:
        started = _connect(address, workers)
        try:
            _run(units, out, index, progress=progress, name=name)
        finally:
            if started:
                ray.shutdown()
    return execute


def _connect(address: str | None, workers: int | None) -> bool:
    """Join the cluster at ``address`` or start a local Ray; True when this call started it."""
    from advseq.runtime import advseq_home

    if ray.is_initialized():
        return False
    env = {"ADVSEQ_HOME": str(advseq_home().resolve())}
    runtime_env = {"env_vars": env}
    try:
        if address is not None:
            ray.init(address=address, runtime_env=runtime_env, logging_level="warning",
                     log_to_driver=False)
        else:
            ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                     runtime_env=runtime_env, logging_level="warning", log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ConfigError(f"--address: cannot start or join {where} ({one_line(err)})") from None
    return True


def _check_requests(units: list[UnitSpec]) -> None:
    """Refuse a request no node of the cluster can serve (Ray would wait for ever)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for u in units:
        need = {"CPU": u.request.get("num_cpus", 1.0), "GPU": u.request.get("num_gpus", 0.0)}
        if not any(all(n.get(k, 0.0) >= v for k, v in need.items() if v) for n in nodes):
            biggest = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
            raise ConfigError(f"[resources]: unit {u.label!r} asks for {u.request}, more than any "
                              f"node of the cluster has (at most {biggest:g} CPUs, "
                              f"{max((n.get('GPU', 0.0) for n in nodes), default=0.0):g} GPUs)")


def _options(unit: UnitSpec, part: str | None) -> dict[str, Any]:
    return {"num_cpus": unit.request.get("num_cpus", 1.0), "num_gpus": unit.request.get("num_gpus", 0.0),
            "max_retries": MAX_RETRIES, "retry_exceptions": True,
            "name": f"{unit.label}{f' [{part}]' if part else ''}"[:200]}


def _run(units: list[UnitSpec], out: Path, index: dict[str, Any], *, progress: bool | None,
         name: str) -> None:
    from advseq.pipeline import INDEX_FILE, index_entry
    from advseq.progress import progress_bar

    task = ray.remote(run_task)
    entries: dict[str, dict[str, Any]] = {}
    finals: dict[str, Any] = {}          # unit id -> the ref of its last task
    parts: dict[str, list[Any]] = {}     # unit id -> the refs of all its tasks
    todo = []
    for unit in units:
        entries[unit.uid] = index_entry(unit, out)
        known = status_of(unit)
        if known is not None:
            entries[unit.uid].update(known)
        else:
            todo.append(unit)
    _check_requests(todo)
    folder, by_id = str(out), {u.uid: u for u in units}
    for unit in todo:
        spec = unit.to_dict()
        deps = [finals[d] for d in unit.deps if d in finals]
        if unit.kind == "attack" and unit.shards > 1:
            prep = task.options(**_options(unit, "prepare")).remote(spec, folder, "prepare", *deps)
            shards = [task.options(**_options(unit, p)).remote(spec, folder, p, prep)
                      for p in unit.parts()[1:-1]]
            merge = task.options(**_options(unit, "merge")).remote(spec, folder, "merge", *shards)
            parts[unit.uid] = [prep, *shards, merge]
        else:
            parts[unit.uid] = [task.options(**_options(unit, None)).remote(spec, folder, None, *deps)]
        finals[unit.uid] = parts[unit.uid][-1]
    uid_of = {ref: uid for uid, ref in finals.items()}
    pending = list(finals.values())

    def write() -> None:
        index["units"] = [entries[u.uid] for u in units if "status" in entries[u.uid]]
        atomic_write_json(out / INDEX_FILE, index)

    with progress_bar(f"run {name} (ray)", len(units), enabled=progress) as bar:
        bar.advance(len(units) - len(todo))
        write()
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            uid = uid_of[ready[0]]
            entries[uid].update(_outcome(by_id[uid], parts[uid], finals, by_id))
            write()
            bar.advance()
            bar.update(status=by_id[uid].label)
    write()


def _outcome(unit: UnitSpec, refs: list[Any], finals: dict[str, Any],
             by_id: dict[str, UnitSpec]) -> dict[str, Any]:
    """The index fields of a finished unit: done (with its wall seconds), not applicable,
    or failed (with its error, or the unit it needed that failed)."""
    try:
        results = ray.get(refs)
    except Exception as err:       # noqa: BLE001  (any task error is recorded, not raised)
        for dep in unit.deps:
            if dep in finals and _failed(finals[dep]):
                return {"status": "failed", "error": f"needs {by_id[dep].label!r}, which failed"}
        cause = getattr(err, "cause", None) or err
        tries = sum("error" in a for a in attempts(Path(unit.out), unit))
        return {"status": "failed", "error": one_line(f"{type(cause).__name__}: {cause}"),
                **({"attempts": tries} if tries else {})}
    last = results[-1]
    if last["status"] == "not applicable":
        return {"status": "not applicable", "reason": last["reason"]}
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {"status": "done", "seconds": round(seconds, 1)}


def _failed(ref: Any) -> bool:
    try:
        ray.get(ref, timeout=0)
    except Exception:  # noqa: BLE001
        return True
    return False


def cpus_of(request: dict[str, float]) -> int:
    """The torch threads of a task with ``request``."""
    return max(1, math.floor(request.get("num_cpus", 1.0)))
