"""Plugin registry: entry points and run-time registration."""

from __future__ import annotations

import pytest

from advseq import registry
from advseq.errors import ConfigError
from advseq.registry import Registry


def test_register_get_and_describe() -> None:
    reg: Registry = Registry("widget", "advseq.test-widgets")

    @reg.register("w")
    class Widget:
        """A widget.

        More text."""

    assert reg.get("w") is Widget and "w" in reg and reg.names() == ["w"]
    assert reg.describe("w") == "A widget."


def test_string_targets_load_lazily() -> None:
    reg: Registry = Registry("widget", "advseq.test-widgets")
    reg.register("od", "collections:OrderedDict")
    from collections import OrderedDict

    assert reg.get("od") is OrderedDict


def test_unknown_and_broken() -> None:
    reg: Registry = Registry("widget", "advseq.test-widgets")
    reg.register("broken", "no_such_module_xyz:Thing")
    with pytest.raises(ConfigError, match="unknown widget 'nope'; available: broken"):
        reg.get("nope")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        reg.get("broken")


def test_global_registries_read_entry_points() -> None:
    assert registry.detectors.group == "advseq.detectors"
    assert registry.attacks.group == "advseq.attacks"
    assert isinstance(registry.detectors.names(), list)
