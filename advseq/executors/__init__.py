"""Executors: who runs the units of a run matrix.

``local`` (the default) runs them one after another in this process; ``ray`` runs each
as a Ray task, on a cluster or on a local Ray (:mod:`advseq.executors.ray_exec`; Ray is
imported only there, and only when asked for). Both write the same run folder: every
unit's result goes to its own folder, and ``index.json`` lists every unit with its
status.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from advseq.errors import ConfigError

EXECUTORS = ("local", "ray")


def get_executor(name: str, *, address: str | None = None,
                 workers: int | None = None) -> Callable[..., None]:
    """The function that runs a planned matrix: ``execute(units, out, index, progress=,
    name=)`` fills ``index["units"]`` and keeps ``out/index.json`` up to date."""
    if name == "local":
        if address is not None or workers is not None:
            raise ConfigError("--address and --workers apply only to --executor ray")
        from advseq.executors.local import run_local

        return run_local
    if name == "ray":
        from advseq.executors.ray_exec import ray_executor

        return ray_executor(address=address, workers=workers)
    raise ConfigError(f"--executor: {name!r} is not one of {', '.join(EXECUTORS)}")


def status_of(unit: Any) -> dict[str, Any] | None:
    """The status of a unit that needs no running (not applicable, or already done)."""
    if unit.skip_reason:
        return {"status": "not applicable", "reason": unit.skip_reason}
    if unit.done():
        return {"status": "reused"}
    return None
