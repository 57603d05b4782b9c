"""Commands from plugins, and what a plugin's commands may use of the CLI.

A package adds a command group through the ``advseq.cli`` entry-point group; each entry
point names a ``typer.Typer``, added as ``advseq NAME``::

    [project.entry-points."advseq.cli"]
    mytool = "my_pkg.cli:app"          # -> advseq mytool ...

The plugin's module is imported whenever the CLI starts, so it should import nothing
heavy at module level (no torch: import it inside the commands). A plugin that fails to
load costs one warning line, never the CLI. Its commands may use the options and helpers
re-exported here, so that they read like the core's commands; ``console`` prints strings
as text, never as rich markup (style with ``styled``), and ``print_error`` gives the one
``error: ...`` line.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from advseq.cli._common import (
    DataArg,
    DeviceOpt,
    LenientOpt,
    ProgressOpt,
    checked_device,
    console,
    load,
    parse_params,
    print_error,
    styled,
)
from advseq.cli.attack import Goal, GoalOpt, Placement, PlacementOpt

GROUP = "advseq.cli"

__all__ = ["GROUP", "DataArg", "DeviceOpt", "Goal", "GoalOpt", "LenientOpt", "Placement",
           "PlacementOpt", "ProgressOpt", "add_plugin_commands", "checked_device", "console", "load",
           "parse_params", "print_error", "styled"]


def add_plugin_commands(app: typer.Typer) -> None:
    """Add the command group of every entry point in :data:`GROUP` to ``app``."""
    taken = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for ep in entry_points(group=GROUP):
        try:
            if ep.name in taken:
                raise ValueError(f"advseq already has a command {ep.name!r}")
            commands = ep.load()
            if not isinstance(commands, typer.Typer):
                raise TypeError(f"{ep.value} is a {type(commands).__name__}, not a typer.Typer")
        except Exception as err:  # a broken plugin must not take the CLI down with it
            print_error(f"CLI plugin {ep.name!r} ({ep.value}) not loaded: "
                        f"{type(err).__name__}: {err}", prefix="warning", style="yellow")
            continue
        app.add_typer(commands, name=ep.name)
        taken.add(ep.name)
