"""The ``advseq`` command line.

One module per command group, joined here with ``add_typer``; command groups of plugins
come from the ``advseq.cli`` entry-point group (:mod:`advseq.cli.plugins`). Heavy
libraries (torch, transformers, textattack) are imported inside commands only, so
``advseq --help`` is fast and loads no model.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from advseq import __version__
from advseq.cli import attack as attack_cmds
from advseq.cli import data as data_cmds
from advseq.cli import demo as demo_cmds
from advseq.cli import detect as detect_cmds
from advseq.cli import misc as misc_cmds
from advseq.cli import report as report_cmds
from advseq.cli import run as run_cmds
from advseq.cli._common import err_console
from advseq.cli.plugins import add_plugin_commands
from advseq.errors import AdvseqError


class _Group(TyperGroup):
    """Turns user-facing errors into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AdvseqError as err:
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Group,
    name="advseq",
    help=(
        "How robust is your malicious-user detector? advseq trains sequence detectors, "
        "attacks them with PETGEN-style personalised post generation and baseline attacks, "
        "and reports the damage.\n\n"
        "Start with [bold]advseq data info DATA[/] to see what a dataset leaks, then "
        "[bold]advseq list detectors[/]."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _LevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"advseq {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """advseq: adversarial robustness testbed for user-sequence classifiers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelFormatter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler],
                        force=True)


app.add_typer(data_cmds.app, name="data", help="Inspect, validate, convert and simulate datasets.")
demo_cmds.register(app)
detect_cmds.register(app)
attack_cmds.register(app)
run_cmds.register(app)
report_cmds.register(app)
misc_cmds.register(app)
add_plugin_commands(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except Exception as err:  # a bug, not bad input: one line unless debugging
        if os.environ.get("ADVSEQ_DEBUG"):
            raise
        err_console.print(f"[bold red]internal error:[/] {type(err).__name__}: {err} "
                          "(set ADVSEQ_DEBUG=1 for the traceback and please report it)",
                          highlight=False, soft_wrap=True)
        sys.exit(70)
