"""The local executor: every unit in plan order, in this process (``advseq run``'s default)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from advseq.errors import CapabilityError
from advseq.executors import status_of
from advseq.executors.units import UnitSpec, execute_unit
from advseq.storage import atomic_write_json


def run_local(units: list[UnitSpec], out: Path, index: dict[str, Any], *,
              progress: bool | None, name: str) -> None:
    """Run each unit that is applicable and not done, one after another; ``index.json`` is
    rewritten after every unit, so a killed run leaves the units it finished listed."""
    from advseq.device import check_device
    from advseq.pipeline import INDEX_FILE, index_entry
    from advseq.progress import progress_bar

    for unit in units:      # a GPU this machine lacks is refused before any unit runs
        if status_of(unit) is None:
            check_device(unit.device, f"unit {unit.label!r}: device")
    with progress_bar(f"run {name}", len(units), enabled=progress) as bar:
        for unit in units:
            entry = index_entry(unit, out)
            known = status_of(unit)
            if known is not None:
                entry.update(known)
            else:
                bar.update(status=unit.label)
                t = time.perf_counter()
                try:
                    execute_unit(unit, out)
                    entry.update(status="done", seconds=round(time.perf_counter() - t, 1))
                except CapabilityError as err:
                    entry.update(status="not applicable", reason=str(err))
            index["units"].append(entry)
            atomic_write_json(out / INDEX_FILE, index)
            bar.advance()
