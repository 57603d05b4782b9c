"""Hostile text on the command line: whatever a user puts in a path, a user id, a label, a
config name or an option value is printed as the text it is, on one line.

Rich markup (``[/]`` crashed the CLI, ``[link=...]`` reached the terminal), emoji codes,
newlines, carriage returns, ANSI escapes and bidirectional overrides all come out
literally or escaped (``\\n``, ``\\x1b``); every bad argument of every command is one
``error: OPTION: problem`` line and exit 2, refused before any data is read or model
trained. The CLI runs in-process (typer's CliRunner, as in tests/test_train_cli.py), and
through the console-script entry point for the internal-error line.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from advseq.cli import app

runner = CliRunner()

# (id, text); how each must be displayed is worked out by `shown` below.
HOSTILE = [
    ("close-tag", "[/]"),
    ("bold", "[bold]x[/bold]"),
    ("link", "[link=http://x]y[/link]"),
    ("emoji-code", ":smile:"),
    ("newline", "a\nb"),
    ("carriage-return", "a\rb"),
    ("ansi", "\x1b[31mred"),
    ("bidi", "\u202eevil"),
    ("non-ascii", "é中🙂"),
    ("long", "L" * 3000),
]
IDS = [h[0] for h in HOSTILE]
TEXTS = [h[1] for h in HOSTILE]

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\x1b": "\\x1b", "\u202e": "\\u202e"}


def shown(text: str) -> str:
    """How the CLI must display ``text``: markup, emoji codes and non-ASCII as they are,
    control characters as their Python escapes."""
    return "".join(_ESCAPES.get(c, c) for c in text)


def assert_raw_free(output: str) -> None:
    """Nothing that a terminal would interpret reached the output."""
    assert "\x1b" not in output and "\r" not in output and "\u202e" not in output, repr(output)
    assert "😄" not in output, "an emoji code was rendered"


def assert_one_line_error(result, *culprits: str, code: int = 2) -> str:
    """Exit ``code``, exactly one line on stderr starting ``error:``, nothing on stdout,
    no traceback, every culprit shown literally; returns the line."""
    out = result.stdout + result.stderr
    assert result.exit_code == code, (result.exit_code, out, result.exception)
    assert "Traceback" not in out and "internal error" not in out, out
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()   # splits on \r, \x1c, \u2028 ... as well as \n
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for culprit in culprits:
        assert culprit in lines[0], (culprit, lines[0])
    assert_raw_free(out)
    return lines[0]


def write_jsonl(path: Path, users: list[dict]) -> Path:
    path.write_text("".join(json.dumps(u, ensure_ascii=False) + "\n" for u in users),
                    encoding="utf-8")
    return path


GOOD_USERS = [{"user_id": f"u{i}", "label": i % 2, "posts": [{"text": "hello there"},
                                                              {"text": "more words"}]}
              for i in range(10)]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "good.jsonl", GOOD_USERS)


# --------------------------------------------------------------------------- user text in errors

@pytest.mark.parametrize("text", TEXTS, ids=IDS)
def test_hostile_path_named_literally(tmp_path: Path, text: str) -> None:
    """A missing data file whose name holds the text: `advseq data validate 'nope[/].jsonl'`
    crashed with a traceback; a name too long for the system is refused the same way."""
    path = tmp_path / f"nope{text}.jsonl"
    result = runner.invoke(app, ["data", "validate", str(path)])
    assert_one_line_error(result, shown(str(path)))


@pytest.mark.parametrize("text", TEXTS, ids=IDS)
def test_hostile_user_id_in_data(tmp_path: Path, text: str) -> None:
    user = {"user_id": text, "label": 0, "posts": [{"text": "x"}]}
    path = write_jsonl(tmp_path / "dup.jsonl", [user, user])
    result = runner.invoke(app, ["data", "validate", str(path)])
    assert_one_line_error(result, f"{path}:2", "duplicate user id", shown(text)[:20])


@pytest.mark.parametrize("text", TEXTS, ids=IDS)
def test_hostile_label_in_data(tmp_path: Path, text: str) -> None:
    path = write_jsonl(tmp_path / "label.jsonl", [{"user_id": "a", "label": text,
                                                   "posts": [{"text": "x"}]}])
    result = runner.invoke(app, ["data", "validate", str(path)])
    assert_one_line_error(result, f"{path}:1", "'label'", shown(text)[:20])


@pytest.mark.parametrize("text", TEXTS, ids=IDS)
def test_hostile_detector_name_option(good: Path, tmp_path: Path, text: str) -> None:
    result = runner.invoke(app, ["train", str(good), "-d", text, "-o", str(tmp_path / "m")])
    assert_one_line_error(result, "unknown detector", shown(text)[:20])
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("text", TEXTS, ids=IDS)
def test_hostile_config_name(good: Path, tmp_path: Path, text: str) -> None:
    """A run config naming an unknown detector: refused at loading, before any work."""
    config = tmp_path / "run.toml"
    config.write_text(
        f'[run]\nname = "r"\n\n[[datasets]]\nname = "d"\npath = {json.dumps(str(good))}\n\n'
        f"[[detectors]]\nname = {json.dumps(text, ensure_ascii=False)}\n", encoding="utf-8")
    result = runner.invoke(app, ["run", str(config), "-o", str(tmp_path / "out")])
    assert_one_line_error(result, "unknown detector", shown(text)[:20])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["1[/]", "[bold]2[/bold]", "3\n4", "\x1b[31m5"],
                         ids=["close-tag", "bold", "newline", "ansi"])
def test_hostile_option_value(good: Path, tmp_path: Path, text: str) -> None:
    result = runner.invoke(app, ["train", str(good), "-d", "cnn", "-o", str(tmp_path / "m"),
                                 "--seed", text])
    assert_one_line_error(result, "--seed", shown(text))


def test_hostile_unknown_option_name() -> None:
    result = runner.invoke(app, ["data", "validate", "x.jsonl", "--[/]\x1b[2J"])
    assert_one_line_error(result, "--[/]\\x1b[2J", "no such option")


# --------------------------------------------------------------------------- user text in output

@pytest.mark.parametrize("text", ["[bold]x[/bold]", "[link=http://x]y[/link]", "\x1b[31mred",
                                  ":smile:"], ids=["bold", "link", "ansi", "emoji-code"])
def test_hostile_dataset_name_printed_as_text(tmp_path: Path, text: str) -> None:
    """`data info` prints the dataset's name (its file name) and path: as text."""
    path = write_jsonl(tmp_path / f"{text.replace('/', '_')}.jsonl", GOOD_USERS)
    result = runner.invoke(app, ["data", "info", str(path), "--no-audit"])
    assert result.exit_code == 0, result.output
    unwrapped = result.stdout.replace("\n", "")     # rich folds lines at the terminal width
    assert shown(path.stem) in unwrapped and shown(str(path)) in unwrapped, result.stdout
    assert_raw_free(result.stdout + result.stderr)


def test_hostile_output_path_printed_as_text(tmp_path: Path) -> None:
    out = tmp_path / "[bold]sim[/bold]\x1b[31m.jsonl"
    result = runner.invoke(app, ["data", "simulate", "-n", "20", "--no-card", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and shown(str(out)) in result.stdout.replace("\n", ""), result.stdout
    assert_raw_free(result.stdout + result.stderr)


def test_warning_lines_escape_user_text(tmp_path: Path) -> None:
    """--lenient warnings quote the file name: still one line each, control characters
    escaped."""
    bad = {"user_id": "b", "label": 5, "posts": [{"text": "x"}]}
    path = write_jsonl(tmp_path / "a\nb[bold]\x1b[31m.jsonl", [*GOOD_USERS, bad])
    result = runner.invoke(app, ["data", "validate", "--lenient", str(path)])
    assert result.exit_code == 0, result.output
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: "), result.stderr
    assert shown(f"{path}:11") in warnings[0], warnings[0]
    assert_raw_free(result.stderr)


def test_plugin_load_warning_is_one_literal_line(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from advseq.cli import plugins

    broken = EntryPoint(name="bad[/]\nplugin", value="no_such_module_x:app", group=plugins.GROUP)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [broken])
    plugins.add_plugin_commands(typer.Typer())
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: CLI plugin 'bad[/]\\nplugin'"), lines


def test_progress_bar_prints_names_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    """Progress descriptions quote run names and unit labels."""
    from advseq.progress import progress_bar

    with progress_bar("run [/][bold]x", 2, enabled=True) as bar:
        bar.update(status="unit [link=http://x]y[/link]\x1b[2J")
        bar.advance()
    err = capsys.readouterr().err
    assert "run [/][bold]x" in err and "[link=http://x]y[/link]\\x1b[2J" in err, err
    assert "\x1b[2J" not in err


# --------------------------------------------------------------------------- bad arguments

# paths never read: every one is refused while parsing the arguments
D, M, OUT, C = "data.jsonl", "model", "out", "run.toml"
BAD_ARGS = [
    ("train-seed", ["train", D, "-d", "cnn", "-o", OUT, "--seed", "abc"], ["--seed", "'abc'"]),
    ("train-missing-detector", ["train", D, "-o", OUT], ["--detector", "missing"]),
    ("train-unknown-option", ["train", D, "-d", "cnn", "-o", OUT, "--bogus"], ["--bogus"]),
    ("train-no-value", ["train", D, "-d", "cnn", "-o", OUT, "--epochs"], ["--epochs"]),
    ("train-test-size", ["train", D, "-d", "cnn", "-o", OUT, "--test-size", "half"],
     ["--test-size", "'half'"]),
    ("evaluate-missing-data", ["evaluate", M], ["DATA", "missing"]),
    ("evaluate-unknown-option", ["evaluate", M, D, "--bogus"], ["--bogus"]),
    ("attack-mode", ["attack", D, "-d", M, "-a", "copycat", "-o", OUT, "--mode", "nope"],
     ["--mode", "'nope'"]),
    ("attack-budget", ["attack", D, "-d", M, "-a", "copycat", "-o", OUT, "--budget", "x"],
     ["--budget", "'x'"]),
    ("attack-missing-attack", ["attack", D, "-d", M, "-o", OUT], ["--attack", "missing"]),
    ("attack-goal", ["attack", D, "-d", M, "-a", "copycat", "-o", OUT, "--goal", "win"],
     ["--goal", "'win'"]),
    ("ceiling-steps", ["ceiling", D, "-d", M, "--steps", "1.5"], ["--steps", "'1.5'"]),
    ("ceiling-placement", ["ceiling", D, "-d", M, "--placement", "middle"],
     ["--placement", "'middle'"]),
    ("run-missing-config", ["run"], ["CONFIG", "missing"]),
    ("run-unknown-option", ["run", C, "--bogus"], ["--bogus"]),
    ("retrain-rounds", ["retrain", D, "-d", "cnn", "-a", "copycat", "-o", OUT, "--rounds", "three"],
     ["--rounds", "'three'"]),
    ("retrain-mode", ["retrain", D, "-d", "cnn", "-a", "copycat", "-o", OUT, "--mode", "nope"],
     ["--mode", "'nope'"]),
    ("retrain-missing-out", ["retrain", D, "-d", "cnn", "-a", "copycat"], ["--out", "missing"]),
    ("report-missing-out", ["report", "runs/x"], ["--out", "missing"]),
    ("report-examples", ["report", "runs/x", "-o", OUT, "--examples", "-1"], ["--examples"]),
    ("validate-missing-path", ["data", "validate"], ["PATH", "missing"]),
    ("validate-no-format", ["data", "validate", D, "--format"], ["--format"]),
    ("info-seed", ["data", "info", D, "--seed", "x"], ["--seed", "'x'"]),
    ("info-unknown-option", ["data", "info", D, "--bogus"], ["--bogus"]),
    ("convert-missing-out", ["data", "convert", D], ["--out", "missing"]),
    ("simulate-users", ["data", "simulate", "-o", OUT, "--users", "many"], ["--users", "'many'"]),
    ("simulate-share", ["data", "simulate", "-o", OUT, "--malicious-share", "z"],
     ["--malicious-share", "'z'"]),
    ("petgen-seed", ["petgen", "train", D, "-d", M, "-o", OUT, "--seed", "q"], ["--seed", "'q'"]),
    ("petgen-missing-out", ["petgen", "train", D, "-d", M], ["--out", "missing"]),
    ("petgen-goal", ["petgen", "train", D, "-d", M, "-o", OUT, "--goal", "nope"], ["--goal"]),
    ("list-kind", ["list", "nope"], ["KIND", "'nope'"]),
    ("root-unknown-option", ["--bogus"], ["--bogus", "no such option"]),
    ("root-unknown-command", ["nosuch"], ["no such command", "'nosuch'"]),
    ("data-unknown-command", ["data", "nosuch"], ["advseq data", "'nosuch'"]),
    ("extra-argument", ["data", "validate", D, "extra"], ["unexpected extra argument", "extra"]),
]


@pytest.mark.parametrize(("args", "culprits"), [b[1:] for b in BAD_ARGS],
                         ids=[b[0] for b in BAD_ARGS])
def test_bad_argument_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  args: list[str], culprits: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert_one_line_error(result, *culprits)
    assert list(tmp_path.iterdir()) == [], "a refused command wrote something"


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["data", "validate", "-h"],
                                  ["petgen", "train", "--help"]],
                         ids=["root", "train", "data-validate", "petgen-train"])
def test_help_still_shows(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "Usage" in result.stdout and result.stderr == "", result.output


@pytest.mark.parametrize("args", [[], ["data"], ["petgen"]], ids=["root", "data", "petgen"])
def test_no_arguments_shows_help(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert "Usage" in result.stdout and "Commands" in result.stdout, result.output
    assert "error:" not in result.output


# --------------------------------------------------------------------------- internal errors

def test_internal_error_is_one_literal_line(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A bug (not bad input) is exit 70 and one line, its message never read as markup."""
    from advseq import cli
    from advseq.cli import data as data_cmds

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom [/] [bold]x[/bold]\nsecond line \x1b[31m")

    monkeypatch.setattr(data_cmds, "load", broken)
    monkeypatch.setattr(sys, "argv", ["advseq", "data", "validate", "x.jsonl"])
    monkeypatch.delenv("ADVSEQ_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 70
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("internal error: RuntimeError: boom [/] [bold]x[/bold]\\nsecond "
                               "line \\x1b[31m"), lines[0]
    assert "ADVSEQ_DEBUG" in lines[0] and "Traceback" not in captured.err
    assert_raw_free(captured.out + captured.err)
