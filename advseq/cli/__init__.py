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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # recent typer vendors click as typer._click; older typer raises click's own errors
    from typer._click.exceptions import ClickException, MissingParameter, NoSuchOption
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, MissingParameter, NoSuchOption

from advseq import __version__
from advseq.cli import attack as attack_cmds
from advseq.cli import ceiling as ceiling_cmds
from advseq.cli import data as data_cmds
from advseq.cli import demo as demo_cmds
from advseq.cli import detect as detect_cmds
from advseq.cli import misc as misc_cmds
from advseq.cli import report as report_cmds
from advseq.cli import run as run_cmds
from advseq.cli._common import err_console, print_error
from advseq.cli.plugins import add_plugin_commands
from advseq.errors import AdvseqError, printable


def _sentence(text: str) -> str:
    """A click message as the tail of a one-line error: one line, lower-case first word
    (unless it is an acronym), no final full stop."""
    text = " ".join(text.split()).rstrip(".")
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def usage_message(err: ClickException) -> str:
    """A click/typer command-line error as ``OPTION: problem``, naming the option or
    argument at fault (its first flag, or its metavar) and the value when click knows it."""
    param = getattr(err, "param", None)
    hint = getattr(err, "param_hint", None)
    if hint is None and param is not None:
        hint = param.opts[0] if param.param_type_name == "option" else (
            param.metavar or (param.name or "").upper())
    elif hint is not None and not isinstance(hint, str):
        hint = " / ".join(hint)
    if isinstance(err, MissingParameter):
        kind = err.param_type or (param.param_type_name if param is not None else "value")
        return f"{hint}: missing (a required {kind})"
    if isinstance(err, NoSuchOption):
        tail = f" (possible options: {', '.join(sorted(err.possibilities))})" if err.possibilities else ""
        return f"{err.option_name}: no such option{tail}"
    if hint is None:
        name = getattr(err, "option_name", None)      # BadOptionUsage: `--epochs` with no value
        if name:
            return f"{name}: {_sentence(err.message.removeprefix(f'Option {name!r} '))}"
        ctx = getattr(err, "ctx", None)                 # no such command, extra arguments
        where = f"{ctx.command_path}: " if ctx is not None else ""
        return where + _sentence(err.format_message())
    problem = _sentence(err.message.removeprefix("Value error, "))
    errors = getattr(err.__cause__, "errors", None)   # typer's pydantic coercion keeps the input
    details = errors() if callable(errors) else []
    value = details[0].get("input") if details else None
    if isinstance(value, str) and repr(value) not in problem:
        problem += f" (got {value[:60]!r}{'...' if len(value) > 60 else ''})"
    return f"{hint}: {problem}"


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """User-facing errors, click's usage errors and the system refusing a path included,
    as one line on stderr and the error's exit code (2 for bad input); help shown for no
    arguments passes through."""
    try:
        yield
    except AdvseqError as err:
        print_error(str(err))
        raise typer.Exit(err.exit_code) from None
    except ClickException as err:
        if type(err).__name__ == "NoArgsIsHelpError":   # the help is already printed
            raise
        print_error(usage_message(err))
        raise typer.Exit(err.exit_code) from None
    except OSError as err:
        if err.filename is None:     # no path named: a broken pipe or a bug, for typer / main()
            raise
        # the system refused a path the user gave (too long, a folder, no permission)
        print_error(f"{err.filename}: {err.strerror or err}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None


class _Group(TyperGroup):
    """The root group: every error from parsing or running a command is one line."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        with _one_line_errors():   # the root's own options: `advseq --bogus`
            return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context) -> Any:
        with _one_line_errors():   # every subcommand's arguments are parsed in here
            return super().invoke(ctx)


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
        return f"{record.levelname.lower()}: {printable(record.getMessage())}"


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
ceiling_cmds.register(app)
run_cmds.register(app)
report_cmds.register(app)
misc_cmds.register(app)
add_plugin_commands(app)


def main() -> None:
    """Console-script entry point."""
    from advseq.runtime import keep_freed_memory

    keep_freed_memory()
    try:
        app()
    except Exception as err:  # a bug, not bad input: one line unless debugging
        if os.environ.get("ADVSEQ_DEBUG"):
            raise
        print_error(f"{type(err).__name__}: {err} (set ADVSEQ_DEBUG=1 for the traceback and "
                    "please report it)", prefix="internal error")
        sys.exit(70)
