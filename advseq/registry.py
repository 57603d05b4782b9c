"""Plugin registries for detectors and attacks.

First-party plugins (the top-level ``detectors`` and ``attacks`` packages) and
third-party packages register the same way, through entry points::

    [project.entry-points."advseq.detectors"]
    my-detector = "my_pkg.detector:MyDetector"

Entry points are read lazily: listing names imports nothing, and a plugin module is
imported only when its name is asked for. ``register`` adds plugins at run time (tests,
notebooks) without packaging.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from advseq.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> plugin class, fed by an entry-point group and by :meth:`register`."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._targets: dict[str, str | T] = {}
        self._scanned = False

    def _scan(self) -> None:
        if self._scanned:
            return
        for ep in entry_points(group=self.group):
            self._targets.setdefault(ep.name, ep.value)
        self._scanned = True

    def register(self, name: str, target: str | T | None = None) -> Any:
        """Register ``target`` (a class or a ``"module:attr"`` string) under ``name``;
        without ``target`` it returns a class decorator."""
        if target is None:
            def deco(cls: T) -> T:
                self._targets[name] = cls
                return cls
            return deco
        self._targets[name] = target
        return target

    def names(self) -> list[str]:
        self._scan()
        return sorted(self._targets)

    def __contains__(self, name: object) -> bool:
        self._scan()
        return name in self._targets

    def get(self, name: str) -> T:
        self._scan()
        if name not in self._targets:
            known = ", ".join(self.names()) or "none installed"
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {known}")
        target = self._targets[name]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            try:
                obj = import_module(module)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as err:
                raise ConfigError(f"{self.kind} {name!r} is registered as {target!r} but cannot "
                                  f"be loaded: {err}") from err
            self._targets[name] = target = obj  # type: ignore[assignment]
        return target  # type: ignore[return-value]

    def describe(self, name: str) -> str:
        """First line of the plugin's docstring."""
        doc = getattr(self.get(name), "__doc__", None) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


detectors: Registry[Callable[..., Any]] = Registry("detector", "advseq.detectors")
attacks: Registry[Callable[..., Any]] = Registry("attack", "advseq.attacks")
