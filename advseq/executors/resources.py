"""What a unit runs on: its device and the resources its tasks ask a cluster for.

A run config sets ``device`` run-wide (``[run] device``) and per table (``[[detectors]]``,
``[surrogate]``, ``[[attacks]]``, ``[[retrain]]``: ``device = "cuda"``); a table's own
``device`` (or a ``device`` in its ``params``) wins over the run's. ``advseq run --device``
replaces them all. A ceiling runs where its detector does.

``[resources]`` gives ``num_cpus``/``num_gpus`` run-wide and per unit kind. A unit on a
GPU (``cuda``, ``cuda:N``) asks for ``num_gpus`` as ``[resources]`` says, 1 where it says
nothing (0 is refused: Ray would hide every GPU from the task); a CPU unit asks for none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from advseq.config import Device, Float, Rule, Table
from advseq.device import DEFAULT_DEVICE, check_device, is_gpu
from advseq.errors import ConfigError

DEFAULT_REQUEST = {"num_cpus": 1.0, "num_gpus": 0.0}   #: a task's request when none is given
RESOURCE_KINDS = ("detector", "ceiling", "attack", "retrain")   #: [resources] tables per unit kind
REQUEST_KEYS: dict[str, Rule] = {"num_cpus": Float(0, 4096), "num_gpus": Float(0, 64)}
RESOURCE_KEYS: dict[str, Rule] = {**REQUEST_KEYS, **{k: Table() for k in RESOURCE_KINDS}}
#: a ``device`` key of a run config: the name only (a Ray head may have no GPU its workers have)
DEVICE_KEY = Device(available=False, auto=True)


def config_device(value: str | None) -> str | None:
    """A ``device`` key's value as the units get it (``auto`` decided on this machine)."""
    return None if value is None else check_device(value, "device", available=value == "auto")


def table_device(table: Any, run_device: str) -> str:
    """The device of a config table's units: its ``device``, its ``params``' ``device``,
    else the run's."""
    params = getattr(table, "params", None) or {}
    return getattr(table, "device", None) or params.get("device") or run_device


def unit_request(resources: Mapping[str, Any], kind: str, device: str | None = None) -> dict[str, float]:
    """A ``kind`` unit's task request: its kind's table, the run-wide values, 1 CPU; on
    ``device`` (None: as configured) ``num_gpus`` as the module doc says."""
    top = {k: float(v) for k, v in resources.items() if k in REQUEST_KEYS}
    own = {k: float(v) for k, v in resources.get(kind, {}).items()}
    request = {**DEFAULT_REQUEST, **top, **own}
    if device is None:
        return request
    if not is_gpu(device):
        return {**request, "num_gpus": 0.0}
    if "num_gpus" not in top and "num_gpus" not in own:
        return {**request, "num_gpus": 1.0}
    if request["num_gpus"] <= 0:
        where = f"{kind}.num_gpus" if "num_gpus" in own else "num_gpus"
        raise ConfigError(f"[resources] {where}: 0, but {kind} units run on {device!r}; give "
                          "them a GPU share (> 0) or run them on cpu")
    return request


def override_device(cfg: Any, device: str) -> None:
    """``advseq run --device``: every unit of the run config ``cfg`` on ``device``, whatever
    its ``device`` keys (and ``params``' ``device``) say."""
    cfg.device = device
    for t in [*cfg.detectors, cfg.surrogate, *cfg.attacks, *cfg.retrain]:
        t.device = None
        t.params = {k: v for k, v in t.params.items() if k != "device"}


def check_resources(reader: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """``[resources]``: ``num_cpus``/``num_gpus`` for every task and per unit kind."""
    res = reader.table(raw, "resources")
    for kind, key, value in [(k, n, v) for k in RESOURCE_KINDS for n, v in res.get(k, {}).items()]:
        rule = REQUEST_KEYS.get(key)
        bad = f"unknown key (known: {', '.join(REQUEST_KEYS)})" if rule is None else rule.problem(value)
        if bad:
            reader.fail("resources", None, f"{kind}.{key}", bad)
    return {k: dict(v) if isinstance(v, dict) else v for k, v in res.items()}


def check_table_device(reader: Any, table: str, index: int | None, raw: Mapping[str, Any]) -> str | None:
    """A table's ``device`` (``auto`` decided here), refused when its ``params`` name
    another device."""
    device = raw.get("device")
    if device is None:
        return None
    device = config_device(device)
    given = (raw.get("params") or {}).get("device")
    if given is not None and given != device:
        reader.fail(table, index, "device", f"{device!r}, but params.device is {given!r}; give one")
    return device


__all__ = ["DEFAULT_DEVICE", "DEFAULT_REQUEST", "DEVICE_KEY", "REQUEST_KEYS", "RESOURCE_KEYS",
           "RESOURCE_KINDS", "check_resources", "check_table_device", "config_device",
           "override_device", "table_device", "unit_request"]
