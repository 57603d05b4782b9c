"""Where torch work runs: the one place a device name is checked and resolved.

A device is ``cpu`` (the default everywhere), ``cuda`` (the first GPU torch sees),
``cuda:N``, ``mps``, or ``auto`` (``cuda`` when torch sees a GPU, else ``cpu``, decided
on the machine that reads it). Every ``--device`` option, every ``device`` key of a run
config and every ``device`` setting of a detector or attack is checked here
(:class:`advseq.config.Device` asks :func:`device_problem`), so a bad name or a GPU this
machine lacks is one line naming the option, never a torch traceback.

Two checks: the name alone (``available=False``: a run config read on a Ray head that
has no GPU, for units its GPU workers run), and the name against what torch offers here
(the default: wherever work is about to start).

:func:`on_device` puts a device into a detector's or an attack's settings (the classes
that take a ``device``; an ensemble hands it to its members); classes without one run on
the CPU. ``cpu`` is every class's default, so a CPU device changes no setting and no
record. torch is imported only when a GPU name must be checked against the machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from advseq.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEFAULT_DEVICE = "cpu"
KINDS = ("cpu", "cuda", "mps")
#: what ``--device`` options say they take
DEVICE_HELP = ("Where torch work runs: cpu (default), cuda, cuda:N, mps, or auto "
               "(cuda when torch sees a GPU).")


def _show(value: Any) -> str:
    from advseq.config import show

    return show(value)


def device_problem(value: Any, *, available: bool = True, auto: bool = True) -> str | None:
    """Why ``value`` is no device name (``available``: or one torch does not offer on this
    machine; ``auto``: whether ``auto`` is accepted), or None. A detector's or attack's
    own ``device`` setting takes no ``auto``: it is resolved before it gets there."""
    if not isinstance(value, str):
        return f"must be a device name such as 'cpu' or 'cuda', got {_show(value)}"
    if value == "auto" and auto:
        return None
    kind, sep, index = value.partition(":")
    if kind not in KINDS or (sep and (kind != "cuda" or not index.isdigit())) or len(value) > 12:
        return f"unknown device {_show(value)}; use cpu, cuda, cuda:N, mps{' or auto' if auto else ''}"
    if not available or kind == "cpu":
        return None
    import torch

    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return (f"{value!r} requested but torch sees no GPU; install a CUDA build of "
                    "torch (see README) or use cpu")
        if sep and int(index) >= count:
            return f"{value!r}: torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}"
    if kind == "mps" and not torch.backends.mps.is_available():
        return "'mps' requested but torch offers no MPS backend here; use cpu"
    return None


def check_device(value: Any, option: str = "--device", *, available: bool = True) -> str:
    """``value`` as a checked device name (``auto`` resolved on this machine); a
    :class:`ConfigError` ``OPTION: problem`` otherwise."""
    bad = device_problem(value, available=available)
    if bad:
        raise ConfigError(f"{option}: {bad}")
    if value == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else DEFAULT_DEVICE
    return str(value)


def resolve_device(value: Any, option: str = "--device") -> torch.device:
    """The ``torch.device`` for ``value``, checked against this machine."""
    import torch

    return torch.device(check_device(value, option))


def is_gpu(device: str | None) -> bool:
    """Whether work on ``device`` needs a GPU of the machine (a cluster's ``num_gpus``)."""
    return bool(device) and str(device).partition(":")[0] == "cuda"


def takes_device(cls: type) -> bool:
    """Whether the detector or attack class has a ``device`` setting of its own."""
    from advseq.config import param_names, rules_of

    return "device" in param_names(cls) or "device" in rules_of(cls)   # PETGEN: **settings


def on_device(cls: type, params: Mapping[str, Any] | None, device: str | None, *,
              option: str = "--device", what: str = "-p device") -> dict[str, Any]:
    """``params`` for ``cls`` to run on ``device`` (a checked name, or None: as given).

    A class with a ``device`` setting gets it (a different one already in ``params``,
    ``what``, is refused); a class with a ``params_on_device`` hook (an ensemble) places
    itself; any other class runs on the CPU and its settings are left as they are. A
    ``cpu`` device changes nothing (it is every class's default)."""
    out = dict(params or {})
    if device is None:
        return out
    hook = getattr(cls, "params_on_device", None)
    if hook is not None:
        return hook(out, device)
    if not takes_device(cls):
        return out
    given = out.get("device")
    if given is not None:
        if device_problem(given, available=False, auto=False) is None and given != device:
            raise ConfigError(f"{option} {device} and {what}={given} disagree; give one of them")
        return out
    if device != DEFAULT_DEVICE:
        out["device"] = device
    return out
