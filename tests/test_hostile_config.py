"""Hostile run configs, hyper-parameters, model folders and names: every bad value is
refused with exit 2 and one line naming the file, the line and the key (or the option),
before anything is trained; no traceback, no internal error, nothing written outside the
run's ``out`` folder. Names are labels: whatever a config calls a dataset, detector,
attack or run, its folders stay inside ``out``.

The cases drive the real CLI app (``advseq.cli.app``) in-process, so that a hundred of them
take seconds; a few run the console script in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advseq.cli import app
from advseq.paths import REPO_DIR
from advseq.run_config import folder_name, load_config

runner = CliRunner()


def tiny_users() -> str:
    """20 users, 10 per class, a learnable word signal (like conftest's ``tiny``)."""
    lines = []
    for i in range(20):
        label = i % 2
        word = "buy now cheap deal" if label else "thanks for the edit"
        posts = [{"text": f"post {j} about item {i % 3} {word if j % 2 else 'hello there'}",
                  "context": f"item {i % 3} page", "timestamp": float(j)} for j in range(3 + i % 4)]
        lines.append(json.dumps({"user_id": f"u{i:02d}", "label": label, "posts": posts}))
    return "\n".join(lines) + "\n"


def tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def invoke(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch):  # -> click Result
    monkeypatch.chdir(cwd)
    return runner.invoke(app, args, catch_exceptions=True)


def assert_refused(result, needles: list[str]) -> str:
    """Exit 2, one line on stderr holding every needle, no traceback or internal error."""
    crash = result.exception if not isinstance(result.exception, SystemExit) else None
    assert crash is None, f"crashed: {crash!r}"
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "Traceback" not in result.stderr + result.stdout and "internal error" not in line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def assert_nothing_outside(tmp_path: Path, before: set[Path], out: Path) -> None:
    new = {p for p in tree(tmp_path) - before if out not in (p, *p.parents)}
    assert not new, sorted(map(str, new))


# ---- run configs -------------------------------------------------------------------------
BASE = """\
[run]
name = "hostile"
quality = false

[[datasets]]
name = "tiny"
path = "tiny.jsonl"

[[detectors]]
name = "tfidf-lr"
params = { min_df = 1 }

[[attacks]]
name = "copycat"
modes = ["score"]
"""
RUN_LINE = 4           # a line added to [run] lands here
DETECTOR = '[[detectors]]\nname = "tfidf-lr"\nparams = { min_df = 1 }\n'
ATTACK = '[[attacks]]\nname = "copycat"\nmodes = ["score"]\n'


def in_run(line: str) -> str:
    return BASE.replace('quality = false\n', f'quality = false\n{line}\n')


def swap(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new)


def add(text: str) -> str:
    return BASE + "\n" + text


@dataclass
class ConfigCase:
    id: str
    text: str | bytes
    needles: list[str]
    files: dict[str, str] = field(default_factory=dict)   # extra files beside the config


def run_case(case_id: str, line: str, needle: str) -> ConfigCase:
    return ConfigCase(case_id, in_run(line), [f"run.toml:{RUN_LINE}:", needle])


def detector_case(case_id: str, params: str, needle: str, kind: str = "cnn") -> ConfigCase:
    text = swap(DETECTOR, f'[[detectors]]\nname = "d"\ndetector = "{kind}"\nparams = {params}\n')
    return ConfigCase(case_id, text, ["run.toml:12:", needle])


def attack_case(case_id: str, body: str, needle: str, line: int = 14) -> ConfigCase:
    return ConfigCase(case_id, swap(ATTACK, f"[[attacks]]\n{body}\n"), [f"run.toml:{line}:", needle])


RETRAIN = '[[retrain]]\ndetector = "tfidf-lr"\nattack = "copycat"\nmode = "score"\n'


def retrain_case(case_id: str, old: str, new: str, needle: str) -> ConfigCase:
    return ConfigCase(case_id, add(RETRAIN.replace(old, new)), ["run.toml:", needle])


SLUG_TWIN = folder_name("a/b")
CONFIG_CASES = [
    # [run]: wrong types and values
    run_case("seed_str", 'seed = "abc"', "seed: must be an integer"),
    run_case("seed_negative", "seed = -1", "seed: must be an integer in [0,"),
    run_case("seed_float", "seed = 1.5", "seed: must be an integer"),
    run_case("seed_bool", "seed = true", "seed: must be an integer"),
    run_case("seed_int64", "seed = 9223372036854775807", "seed: must be an integer in [0,"),
    run_case("test_size_big", "test_size = 1.5", "test_size: must be a finite number in (0, 1)"),
    run_case("test_size_zero", "test_size = 0", "test_size:"),
    run_case("test_size_nan", "test_size = nan", "test_size: must be a finite number"),
    run_case("split_seed_str", 'split_seed = "x"', "split_seed: must be an integer"),
    ConfigCase("quality_str", swap("quality = false", 'quality = "yes"'),
               ["run.toml:3:", "quality: must be true or false"]),
    run_case("max_users_negative", "max_users = -3", "max_users: must be an integer in [0,"),
    run_case("ceiling_str", 'ceiling = "on"', "ceiling: must be true or false"),
    run_case("ceiling_steps_zero", "ceiling_steps = 0", "ceiling_steps: must be an integer in [1,"),
    run_case("goal_unknown", 'goal = "chaos"', "goal: must be one of 'evasion', 'flip'"),
    run_case("placement_int", "placement = 3", "placement: must be one of"),
    run_case("run_unknown_key", "sede = 1", "sede: unknown key"),
    run_case("out_empty", 'out = ""', "out: must be a non-empty string"),
    run_case("out_nul", 'out = "a\\u0000b"', "out: contains a NUL character"),
    ConfigCase("out_is_a_file", in_run('out = "afile"'), [f"run.toml:{RUN_LINE}:", "out:", "is a file"],
               {"afile": "not a folder"}),
    ConfigCase("out_under_a_file", in_run('out = "afile/run"'), [f"run.toml:{RUN_LINE}:", "lies under"],
               {"afile": "not a folder"}),
    ConfigCase("name_int", swap('name = "hostile"', "name = 5"), ["run.toml:2:", "name: must be a string"]),
    # top level: unknown tables, tables of the wrong kind
    ConfigCase("unknown_table", add("[runn]\nx = 1\n"), ["run.toml:17:", "runn: unknown table"]),
    ConfigCase("root_key", "seed = 1\n" + BASE, ["run.toml:1:", "seed: unknown table or key"]),
    ConfigCase("run_as_array", swap("[run]\n", "[[run]]\n"), ["run.toml:1:", "must be a"]),
    ConfigCase("datasets_as_table", swap("[[datasets]]\n", "[datasets]\n"),
               ["run.toml:5:", "must be", "(an array of tables)"]),
    ConfigCase("datasets_as_string", swap('[[datasets]]\nname = "tiny"\npath = "tiny.jsonl"\n', "")
               .replace("[run]\n", 'datasets = "tiny.jsonl"\n[run]\n'), ["run.toml:1:", "datasets]]: must be [[datasets]] tables"]),
    # [[datasets]]
    ConfigCase("dataset_unknown_key", swap('path = "tiny.jsonl"\n', 'path = "tiny.jsonl"\nnmae = "x"\n'),
               ["run.toml:8:", "#1 nmae: unknown key"]),
    ConfigCase("dataset_no_name", swap('name = "tiny"\n', ""), ["run.toml:5:", "#1: missing key 'name'"]),
    ConfigCase("dataset_name_int", swap('name = "tiny"\n', "name = 3\n"), ["run.toml:6:", "name: must be a string"]),
    ConfigCase("dataset_two_sources", swap('path = "tiny.jsonl"\n', 'path = "tiny.jsonl"\ndemo = true\n'),
               ["run.toml:8:", "give exactly one of"]),
    ConfigCase("dataset_no_source", swap('path = "tiny.jsonl"\n', ""), ["run.toml:5:", "give exactly one of"]),
    ConfigCase("dataset_shared_traversal", swap('path = "tiny.jsonl"', 'shared = "../../etc"'),
               ["run.toml:7:", "shared: '../../etc' is not a dataset folder name"]),
    ConfigCase("dataset_path_nul", swap('path = "tiny.jsonl"', 'path = "tiny\\u0000.jsonl"'),
               ["run.toml:7:", "path: contains a NUL character"]),
    ConfigCase("dataset_path_int", swap('path = "tiny.jsonl"', "path = 7"), ["run.toml:7:", "path: must be"]),
    ConfigCase("dataset_twice", add('[[datasets]]\nname = "tiny"\npath = "tiny.jsonl"\n'),
               ["run.toml:18:", "#2 name: 'tiny' is also the name of", "#1 (", "run.toml:6)"]),
    ConfigCase("no_datasets", swap('[[datasets]]\nname = "tiny"\npath = "tiny.jsonl"\n', ""),
               ["run.toml: needs at least one", "datasets"]),
    ConfigCase("datasets_empty_list", swap('[[datasets]]\nname = "tiny"\npath = "tiny.jsonl"\n', "")
               .replace("[run]\n", "datasets = []\n[run]\n"), ["needs at least one", "datasets"]),
    ConfigCase("dataset_missing_file", swap('path = "tiny.jsonl"', 'path = "nope.jsonl"'),
               ["nope.jsonl", "no such file"]),
    # [[detectors]]
    ConfigCase("detector_params_int", swap("params = { min_df = 1 }", "params = 5"),
               ["run.toml:11:", "params: must be a table"]),
    ConfigCase("detector_unknown", swap('name = "tfidf-lr"\n', 'name = "tfidf-lr"\ndetector = "nope"\n'),
               ["run.toml:11:", "unknown detector 'nope'"]),
    ConfigCase("detector_unknown_key", swap("params = { min_df = 1 }", "paramz = {}"),
               ["run.toml:11:", "paramz: unknown key"]),
    ConfigCase("detector_no_name", swap('[[detectors]]\nname = "tfidf-lr"\n', "[[detectors]]\n"),
               ["run.toml:9:", "missing key 'name'"]),
    ConfigCase("detector_label_surrogate", swap('name = "tfidf-lr"\n', 'name = "surrogate"\ndetector = "tfidf-lr"\n'),
               ["run.toml:10:", "'surrogate' names the"]),
    ConfigCase("detector_twice", BASE.replace(ATTACK, DETECTOR + "\n" + ATTACK),
               ["run.toml:14:", "#2 name: 'tfidf-lr' is also the name of"]),
    ConfigCase("detector_folder_twin", BASE.replace(DETECTOR, DETECTOR.replace('"tfidf-lr"\n', '"a/b"\ndetector = "tfidf-lr"\n')
                                                    + DETECTOR.replace('"tfidf-lr"\n', f'"{SLUG_TWIN}"\ndetector = "tfidf-lr"\n')),
               ["#2 name: its folder name", "rename one"]),
    ConfigCase("no_detectors", swap(DETECTOR, ""), ["needs at least one", "detectors"]),
    detector_case("emb_dim_negative", "{ emb_dim = -5 }", "params.emb_dim: must be an integer in [1,"),
    detector_case("dropout_two", "{ dropout = 2 }", "params.dropout: must be a finite number in [0, 1)"),
    detector_case("epochs_zero", "{ epochs = 0 }", "params.epochs: must be an integer in [1,"),
    detector_case("epochs_str", '{ epochs = "abc" }', "params.epochs: must be an integer"),
    detector_case("lr_nan", "{ lr = nan }", "params.lr: must be a finite number > 0"),
    detector_case("lr_inf", "{ lr = inf }", "params.lr: must be a finite number > 0"),
    detector_case("device_tpu", '{ device = "tpu:9" }', "params.device: unknown device 'tpu:9'"),
    detector_case("widths_zero", "{ widths = [2, 0] }", "params.widths: item 1:"),
    detector_case("wings", "{ wings = 2 }", "params.wings: unknown setting"),
    detector_case("params_seed", "{ seed = 3 }", "params.seed: set"),
    detector_case("heads_do_not_divide", "{ d_model = 10, heads = 3 }", "params.heads: must divide d_model",
                  kind="transformer"),
    detector_case("tfidf_C_negative", "{ C = -1 }", "params.C: must be a finite number > 0", kind="tfidf-lr"),
    detector_case("tfidf_ngrams_crossed", "{ ngram_min = 5, ngram_max = 2 }", "params.ngram_max:", kind="tfidf-lr"),
    detector_case("ensemble_member_params", "{ member = \"cnn\", member_params = { emb_dim = 0 } }",
                  "params.member_params.emb_dim:", kind="ensemble"),
    # [surrogate]
    ConfigCase("surrogate_unknown_key", add('[surrogate]\nname = "x"\n'), ["run.toml:18:", "name: unknown key"]),
    ConfigCase("surrogate_bad_params", add('[surrogate]\ndetector = "cnn"\nparams = { emb_dim = 0 }\n'),
               ["run.toml:19:", "params.emb_dim:"]),
    ConfigCase("surrogate_unknown_detector", add('[surrogate]\ndetector = "nope"\n'),
               ["run.toml:18:", "unknown detector 'nope'"]),
    # [[attacks]]
    attack_case("modes_string", 'name = "copycat"\nmodes = "white-box"', "modes: must be a list", line=15),
    attack_case("modes_empty", 'name = "copycat"\nmodes = []', "modes: must be a list of 1", line=15),
    attack_case("modes_twice", 'name = "copycat"\nmodes = ["score", "score"]', "mode 'score' is listed twice", line=15),
    attack_case("mode_unknown", 'name = "copycat"\nmodes = ["psychic"]', "modes: item 0: must be one of", line=15),
    attack_case("attack_unknown", 'name = "nope"', "unknown attack 'nope'"),
    attack_case("attack_no_name", 'modes = ["score"]', "missing key 'name'", line=13),
    attack_case("budget_zero", 'name = "copycat"\nbudget = 0', "budget: must be an integer in [1,", line=15),
    attack_case("budget_str", 'name = "copycat"\nbudget = "lots"', "budget: must be an integer", line=15),
    attack_case("detectors_unknown", 'name = "copycat"\ndetectors = ["nope"]', "['nope'] are not among", line=15),
    attack_case("detectors_empty", 'name = "copycat"\ndetectors = []', "detectors: must be a list of 1", line=15),
    attack_case("attack_params_int", 'name = "copycat"\nparams = 5', "params: must be a table", line=15),
    attack_case("beam_width_negative", 'name = "hotflip"\nparams = { beam_width = -3 }',
                "params.beam_width: must be an integer in [1,", line=15),
    attack_case("choice_unknown", 'name = "copycat"\nparams = { choice = "psychic" }', "params.choice:", line=15),
    attack_case("temperature_zero", 'name = "lm-generic"\nparams = { temperature = 0 }', "params.temperature:", line=15),
    attack_case("petgen_weight_negative", 'name = "petgen"\nparams = { w_recency = -1 }', "params.w_recency:", line=15),
    attack_case("attack_params_seed", 'name = "copycat"\nparams = { seed = 1 }', "params.seed: set", line=15),
    ConfigCase("attack_twice", add(ATTACK), ["run.toml:18:", "#2 name: 'copycat' is also the name of"]),
    # [[retrain]]
    retrain_case("rounds_str", 'mode = "score"\n', 'mode = "score"\nrounds = "three"\n', "rounds: must be an integer"),
    retrain_case("rounds_zero", 'mode = "score"\n', 'mode = "score"\nrounds = 0\n', "rounds: must be an integer in [1,"),
    retrain_case("retrain_detector_unknown", 'detector = "tfidf-lr"', 'detector = "nope"',
                 "detector: 'nope' is not one of the"),
    retrain_case("retrain_attack_unknown", 'attack = "copycat"', 'attack = "nope"', "unknown attack 'nope'"),
    retrain_case("retrain_mode_unknown", 'mode = "score"', 'mode = "psychic"', "mode: must be one of"),
    retrain_case("retrain_unknown_key", 'mode = "score"\n', 'mode = "score"\nround = 2\n', "round: unknown key"),
    retrain_case("retrain_params_bad", 'mode = "score"\n', 'mode = "score"\nparams = { choice = 3 }\n', "params.choice:"),
    # the file itself
    ConfigCase("not_utf8", BASE.encode().replace(b'"hostile"', b'"host\xffile"'), ["run.toml:2: not valid UTF-8"]),
    ConfigCase("invalid_toml", "[run\nname = 1\n", ["run.toml:1:5: invalid TOML"]),
    ConfigCase("key_twice", in_run("seed = 1\nseed = 2"), ["run.toml:5:", "invalid TOML"]),
    ConfigCase("int_5000_digits", in_run("seed = " + "1" * 5000), [f"run.toml:{RUN_LINE}: invalid TOML"]),
    ConfigCase("nested_too_deep", in_run("x = " + "[" * 5000 + "]" * 5000), ["run.toml: invalid TOML", "too deep"]),
]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c.id for c in CONFIG_CASES])
def test_bad_run_config(case: ConfigCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tiny.jsonl").write_text(tiny_users(), encoding="utf-8")
    for name, text in case.files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    cfg = tmp_path / "run.toml"
    if isinstance(case.text, bytes):
        cfg.write_bytes(case.text)
    else:
        cfg.write_text(case.text, encoding="utf-8")
    before, out = tree(tmp_path), tmp_path / "out"
    # cases that set ``[run] out`` name their own folder; the others get --out
    own_out = isinstance(case.text, str) and "\nout = " in case.text
    args = ["run", "run.toml", "--no-report", "--no-progress"] + ([] if own_out else ["--out", "out"])
    result = invoke(args, tmp_path, monkeypatch)
    line = assert_refused(result, case.needles)
    assert "run.toml" in line or "nope.jsonl" in line
    assert not any(p.is_file() for p in tree(out) if out.exists()), "refused after writing results"
    assert_nothing_outside(tmp_path, before, out)


@pytest.mark.parametrize(("setup", "needle"), [
    (lambda d: (d / "out").write_text("a file"), "--out: "),
    (lambda d: (d / "f").write_text("a file"), "lies under"),
], ids=["out_is_a_file", "out_under_a_file"])
def test_run_out_option_not_a_folder(setup: Callable[[Path], object], needle: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tiny.jsonl").write_text(tiny_users(), encoding="utf-8")
    (tmp_path / "run.toml").write_text(BASE, encoding="utf-8")
    setup(tmp_path)
    out = "out" if (tmp_path / "out").exists() else "f/out"
    before = tree(tmp_path)
    assert_refused(invoke(["run", "run.toml", "--out", out, "--no-report"], tmp_path, monkeypatch),
                   [needle, "not a folder"])
    assert tree(tmp_path) == before


@pytest.mark.parametrize("args", [["missing.toml"], ["adir"]], ids=["missing", "a_folder"])
def test_config_that_is_not_a_file(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "adir").mkdir()
    assert_refused(invoke(["run", *args, "--out", "out"], tmp_path, monkeypatch), [args[0]])
    assert not (tmp_path / "out").exists()


# ---- hyper-parameters on the command line ----------------------------------------------------
TRAIN_CASES = [
    ("emb_dim_negative", "cnn", ["-p", "emb_dim=-5"], "emb_dim: must be an integer in [1,"),
    ("dropout_two", "cnn", ["-p", "dropout=2"], "dropout: must be a finite number in [0, 1)"),
    ("epochs_option_zero", "hlstm", ["--epochs", "0"], "epochs: must be an integer in [1,"),
    ("epochs_str", "cnn", ["-p", "epochs=abc"], "epochs: must be an integer"),
    ("lr_nan_text", "cnn", ["-p", "lr=nan"], "lr: must be a finite number > 0"),
    ("lr_nan_json", "cnn", ["-p", "lr=NaN"], "lr: must be a finite number > 0"),
    ("lr_infinity", "ties", ["-p", "lr=Infinity"], "lr: must be a finite number > 0"),
    ("device_tpu", "cnn", ["--device", "tpu:9"], "device: unknown device 'tpu:9'"),
    ("device_cuda_99", "cnn", ["--device", "cuda:99"], "device: 'cuda:99'"),
    ("device_param_list", "hlstm", ["-p", "device=[1]"], "device: must be a device name"),
    ("emb_dim_huge", "cnn", ["-p", "emb_dim=99999999999"], "emb_dim: must be an integer in [1,"),
    ("emb_dim_4000_digits", "cnn", ["-p", "emb_dim=" + "9" * 4000], "an integer of 4000 digits"),
    ("emb_dim_float", "cnn", ["-p", "emb_dim=1e9"], "emb_dim: must be an integer"),
    ("widths_zero", "cnn", ["-p", "widths=[0]"], "widths: item 0:"),
    ("widths_str", "cnn", ["-p", "widths=wide"], "widths: must be a list"),
    ("unknown_setting", "cnn", ["-p", "wings=2"], "wings: unknown setting"),
    ("seed_negative", "cnn", ["--seed", "-1"], "seed: must be an integer in [0,"),
    ("max_posts_one", "transformer", ["-p", "max_posts=1"], "max_posts: must be an integer in [2,"),
    ("batch_size_zero", "cnn", ["-p", "batch_size=0"], "batch_size:"),
    ("valid_size_one", "cnn", ["-p", "valid_size=1"], "valid_size: must be a finite number in [0, 1)"),
    ("monitor_unknown", "cnn", ["-p", "monitor=f1"], "monitor: must be one of 'auc', 'loss'"),
    ("class_weight_unknown", "hlstm", ["-p", "class_weight=heavy"], "class_weight: must be one of"),
    ("lowercase_int", "cnn", ["-p", "lowercase=1"], "lowercase: must be true or false"),
    ("word_dropout_one", "hlstm", ["-p", "word_dropout=1"], "word_dropout:"),
    ("max_vocab_tiny", "cnn", ["-p", "max_vocab=3"], "max_vocab:"),
    ("heads_do_not_divide", "transformer", ["-p", "heads=3"], "heads: must divide d_model (128), got 3"),
    ("embed_max_tokens_big", "sentence-encoder", ["-p", "embed_max_tokens=4096"], "embed_max_tokens:"),
    ("tfidf_C_zero", "tfidf-lr", ["-p", "C=0"], "C: must be a finite number > 0"),
    ("tfidf_min_df_zero", "tfidf-lr", ["-p", "min_df=0"], "min_df: must be a count >= 1 or a share"),
    ("tfidf_analyzer", "tfidf-lr", ["-p", "analyzer=bytes"], "analyzer: must be one of"),
    ("tfidf_ngrams_crossed", "tfidf-lr", ["-p", "ngram_min=5", "-p", "ngram_max=2"], "ngram_max: must be >="),
    ("ensemble_size_zero", "ensemble", ["-p", "size=0"], "size: must be an integer in [1,"),
    ("ensemble_member_params", "ensemble", ["-p", 'member_params={"emb_dim": -1}'], "member_params.emb_dim:"),
    ("ensemble_member_params_list", "ensemble", ["-p", "member_params=[1]"], "member_params: must be a table"),
    ("ensemble_of_ensembles", "ensemble", ["-p", "member=ensemble"], "member: an ensemble's members"),
    ("param_without_value", "cnn", ["-p", "=5"], "expects key=value"),
]


@pytest.mark.parametrize(("detector", "extra", "needle"), [c[1:] for c in TRAIN_CASES],
                         ids=[c[0] for c in TRAIN_CASES])
def test_bad_hyper_parameter(detector: str, extra: list[str], needle: str, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tiny.jsonl").write_text(tiny_users(), encoding="utf-8")
    before, out = tree(tmp_path), tmp_path / "model"
    result = invoke(["train", "tiny.jsonl", "-d", detector, "-o", "model", *extra], tmp_path, monkeypatch)
    assert_refused(result, [needle])
    assert not (out / "config.json").exists()
    assert_nothing_outside(tmp_path, before, out)


@pytest.mark.parametrize(("extra", "needle"), [
    (["-p", "emb_dim=" + "1" * 5000], "-p emb_dim: an integer too long"),
    (["-p", "emb_dim=" + "[" * 100_000], "-p emb_dim: value nested too deep"),
], ids=["int_5000_digits", "nested_100k"])
def test_unreadable_param_value(extra: list[str], needle: str) -> None:
    """The -p parser itself refuses what JSON cannot read back (every command's -p goes
    through advseq.cli._common.parse_params)."""
    from advseq.cli._common import parse_params
    from advseq.errors import ConfigError

    with pytest.raises(ConfigError, match="^" + needle.replace("[", r"\[")):
        parse_params(extra[1:])
    with pytest.raises(ConfigError, match="given twice"):
        parse_params(["a=1", "a=2"])


ATTACK_CASES = [
    ("hotflip_beam_width", ["-a", "hotflip", "-p", "beam_width=-3"], "hotflip: beam_width: must be an integer in [1,"),
    ("hotflip_max_flips_str", ["-a", "hotflip", "-p", "max_flips=many"], "max_flips: must be an integer"),
    ("hotflip_seed", ["-a", "hotflip", "--seed", "-1"], "seed: must be an integer in [0,"),
    ("copycat_choice", ["-a", "copycat", "-p", "choice=psychic"], "copycat: choice: must be one of"),
    ("copycat_candidates", ["-a", "copycat", "-p", "max_candidates=0"], "max_candidates:"),
    ("unitrigger_tokens", ["-a", "unitrigger", "-p", "trigger_tokens=0"], "trigger_tokens:"),
    ("unitrigger_init", ["-a", "unitrigger", "-p", "init=[1]"], "init: must be a non-empty string"),
    ("lm_generic_temperature", ["-a", "lm-generic", "-p", "temperature=0"], "temperature: must be a finite number in (0,"),
    ("lm_generic_top_p", ["-a", "lm-generic", "-p", "top_p=1.5"], "top_p:"),
    ("lm_generic_lm", ["-a", "lm-generic", "-p", "lm=5"], "lm: must be a table"),
    ("petgen_weight", ["-a", "petgen", "-p", "w_recency=-1"], "petgen: w_recency: must be a finite number >= 0"),
    ("petgen_device", ["-a", "petgen", "-p", "device=tpu:9"], "petgen: device: unknown device"),
    ("petgen_choose", ["-a", "petgen", "-p", "choose=deepest"], "choose: must be one of"),
    ("petgen_margin", ["-a", "petgen", "-p", "select_margin=0.7"], "select_margin:"),
    ("petgen_unknown", ["-a", "petgen", "-p", "w_recncy=1"], "unknown parameter 'w_recncy'"),
    ("malcom_candidates", ["-a", "malcom", "-p", "candidates=0"], "malcom: candidates:"),
    ("textbugger_similarity", ["-a", "textbugger", "--mode", "score", "-p", "similarity=2"], "similarity:"),
    ("textattack_recipe", ["-a", "textattack", "--mode", "score", "-p", "recipe=[1]"], "recipe: must be a"),
]


@pytest.mark.parametrize(("extra", "needle"), [c[1:] for c in ATTACK_CASES], ids=[c[0] for c in ATTACK_CASES])
def test_bad_attack_setting(extra: list[str], needle: str, models: dict[str, Path], tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tiny.jsonl").write_text(tiny_users(), encoding="utf-8")
    before = tree(tmp_path)
    result = invoke(["attack", "tiny.jsonl", "-d", str(models["cnn"]), "-o", "out", *extra], tmp_path,
                    monkeypatch)
    assert_refused(result, [needle])
    assert tree(tmp_path) == before


@pytest.mark.parametrize(("extra", "needle"), [
    (["-a", "copycat", "--detector-param", "emb_dim=-5"], "emb_dim: must be an integer in [1,"),
    (["-a", "hotflip", "-p", "beam_width=-3"], "beam_width: must be an integer in [1,"),
    (["-a", "copycat", "--rounds", "0"], "rounds must be >= 1"),
    (["-a", "nope"], "unknown attack 'nope'"),
], ids=["detector_param", "attack_param", "rounds_zero", "unknown_attack"])
def test_bad_retrain_setting(extra: list[str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tiny.jsonl").write_text(tiny_users(), encoding="utf-8")
    before = tree(tmp_path)
    result = invoke(["retrain", "tiny.jsonl", "-d", "cnn", "-o", "out", *extra], tmp_path, monkeypatch)
    assert_refused(result, [needle])
    assert tree(tmp_path) == before          # refused before retrain.json is written


@pytest.mark.parametrize(("extra", "needle"), [
    (["--seed", "-1", "--out", "out"], "--seed: must be an integer in [0,"),
    (["--out", "afile"], "--out: "),
], ids=["seed_negative", "out_is_a_file"])
def test_bad_demo_option(extra: list[str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "afile").write_text("not a folder")
    before = tree(tmp_path)
    assert_refused(invoke(["demo", "--no-progress", *extra], tmp_path, monkeypatch), [needle])
    assert tree(tmp_path) == before


# ---- model folders -------------------------------------------------------------------------
SMALL_CNN = {"emb_dim": 8, "filters": 4, "seq_hidden": 4, "epochs": 1, "max_posts": 6,
             "max_tokens": 12, "min_freq": 1, "valid_size": 0.0}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small trained folder per kind: tfidf-lr, cnn and an ensemble of two tfidf-lr."""
    from advseq.io import load_dataset
    from advseq.training import train_detector

    root = tmp_path_factory.mktemp("models")
    (root / "tiny.jsonl").write_text(tiny_users(), encoding="utf-8")
    ds = load_dataset(root / "tiny.jsonl")
    made = {"tfidf": ("tfidf-lr", {"min_df": 1}), "cnn": ("cnn", SMALL_CNN),
            "ensemble": ("ensemble", {"member": "tfidf-lr", "size": 2, "member_params": {"min_df": 1}})}
    for key, (name, params) in made.items():
        train_detector(ds, name, root / key, seed=0, params=params, progress=False)
    return {key: root / key for key in made}


def edit_json(file: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(model: Path) -> None:
        data = json.loads((model / file).read_text())
        change(data)
        (model / file).write_text(json.dumps(data))
    return apply


def write(file: str, content: str | bytes) -> Callable[[Path], None]:
    def apply(model: Path) -> None:
        target = model / file
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return apply


def truncate(file: str) -> Callable[[Path], None]:
    def apply(model: Path) -> None:
        data = (model / file).read_bytes()
        (model / file).write_bytes(data[: len(data) // 2])
    return apply


def remove(file: str) -> Callable[[Path], None]:
    return lambda model: (model / file).unlink()


def as_folder(file: str) -> Callable[[Path], None]:
    def apply(model: Path) -> None:
        (model / file).unlink()
        (model / file).mkdir()
    return apply


def foreign_weights(model: Path) -> None:
    """A well-formed safetensors file whose tensors have the wrong length."""
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"idf": np.ones(3), "coef": np.ones(3), "intercept": np.ones(1)}, str(model / "model.safetensors"))


def set_param(key: str, value: object) -> Callable[[Path], None]:
    return edit_json("config.json", lambda c: c["params"].__setitem__(key, value))


def set_field(key: str, value: object) -> Callable[[Path], None]:
    return edit_json("config.json", lambda c: c.__setitem__(key, value))


VOCAB = "vocab.json"
MODEL_CASES = [
    ("config_list", "tfidf", write("config.json", "[]"), "config.json: not an advseq detector config"),
    ("config_other_format", "tfidf", set_field("format", "advseq-lm/1"), "config.json: not an advseq detector"),
    ("config_not_json", "tfidf", write("config.json", "{"), "config.json: cannot read"),
    ("config_empty", "tfidf", write("config.json", ""), "config.json: cannot read"),
    ("config_not_utf8", "tfidf", write("config.json", b'{"format": "\xff"}'), "config.json: cannot read"),
    ("config_deep", "tfidf", write("config.json", "[" * 100_000), "config.json: cannot read"),
    ("config_big_int", "tfidf", write("config.json", '{"format": ' + "1" * 5000 + "}"), "config.json: cannot read"),
    ("config_missing", "tfidf", remove("config.json"), "is not a saved detector (no config.json)"),
    ("config_a_folder", "tfidf", as_folder("config.json"), "config.json: not a regular file"),
    ("params_list", "tfidf", set_field("params", []), "config.json: 'params' must be an object"),
    ("params_missing", "tfidf", edit_json("config.json", lambda c: c.pop("params")), "no 'params'"),
    ("params_bad_value", "tfidf", set_param("C", -1), "config.json: params.C: must be a finite number > 0"),
    ("params_unknown", "tfidf", set_param("wings", 1), "config.json: params.wings: unknown setting"),
    ("detector_int", "tfidf", set_field("detector", 5), "config.json: 'detector' must be a string"),
    ("detector_unknown", "tfidf", set_field("detector", "nope"), "config.json: unknown detector 'nope'"),
    ("fit_info_list", "tfidf", set_field("fit_info", []), "config.json: 'fit_info' must be an object"),
    ("state_str", "tfidf", set_field("state", "x"), "config.json: 'state' must be an object"),
    ("weights_empty", "tfidf", write("model.safetensors", b""), "model.safetensors: not a readable safetensors"),
    ("weights_truncated", "tfidf", truncate("model.safetensors"), "model.safetensors: not a readable safetensors"),
    ("weights_missing", "tfidf", remove("model.safetensors"), "is missing model.safetensors"),
    ("weights_foreign", "tfidf", foreign_weights, "model.safetensors: tensor 'idf' does not fit"),
    ("ngrams_missing", "tfidf", remove("ngrams.json"), "is missing ngrams.json"),
    ("ngrams_object", "tfidf", write("ngrams.json", "{}"), "ngrams.json: must be a list of distinct"),
    ("ngrams_twice", "tfidf", write("ngrams.json", '["ab", "ab"]'), "ngrams.json: must be a list of distinct"),
    ("vocab_missing", "cnn", remove(VOCAB), "is missing vocab.json"),
    ("vocab_list", "cnn", write(VOCAB, "[]"), "vocab.json: not an advseq vocabulary"),
    ("vocab_not_json", "cnn", write(VOCAB, "{"), "vocab.json: cannot read vocabulary"),
    ("vocab_number_tokens", "cnn", write(VOCAB, '{"format": "advseq-vocab/1", "tokens": [1, 2]}'), "vocab.json:"),
    ("vocab_no_specials", "cnn", write(VOCAB, '{"format": "advseq-vocab/1", "tokens": ["a", "b"]}'),
     "vocab.json: a vocabulary must start with the special tokens"),
    ("vocab_bad_tokenizer", "cnn", edit_json(VOCAB, lambda v: v.__setitem__("tokenizer", {"wings": 1})),
     "vocab.json:"),
    ("cnn_weights_truncated", "cnn", truncate("model.safetensors"), "model.safetensors: not a readable"),
    ("cnn_weights_do_not_fit", "cnn", set_param("emb_dim", 16), "model.safetensors does not fit TextCNNDetector"),
    ("cnn_device_tpu", "cnn", set_param("device", "tpu:9"), "config.json: params.device: unknown device"),
    ("cnn_dropout_two", "cnn", set_param("dropout", 2), "config.json: params.dropout:"),
    ("ensemble_members_outside", "ensemble",
     edit_json("config.json", lambda c: c["state"].__setitem__("members", ["../../x", "members/1"])),
     "config.json: state.members must be"),
    ("ensemble_member_broken", "ensemble", write("members/0/config.json", "[]"),
     "members/0/config.json: not an advseq detector config"),
]


@pytest.mark.parametrize(("kind", "corrupt", "needle"), [c[1:] for c in MODEL_CASES],
                         ids=[c[0] for c in MODEL_CASES])
def test_bad_model_folder(kind: str, corrupt: Callable[[Path], None], needle: str, models: dict[str, Path],
                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(models[kind], tmp_path / "model")
    corrupt(tmp_path / "model")
    (tmp_path / "tiny.jsonl").write_text(tiny_users(), encoding="utf-8")
    before = tree(tmp_path)
    line = assert_refused(invoke(["evaluate", "model", "tiny.jsonl"], tmp_path, monkeypatch), [needle])
    assert "model" in line
    assert tree(tmp_path) == before


def test_model_path_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tiny.jsonl").write_text(tiny_users(), encoding="utf-8")
    (tmp_path / "model").write_text("not a folder")
    assert_refused(invoke(["evaluate", "model", "tiny.jsonl"], tmp_path, monkeypatch),
                   ["model is not a saved detector"])


def test_tfidf_fingerprint_of_a_fresh_model_is_its_saved_copys(tmp_path: Path) -> None:
    """scikit-learn's vocabulary holds numpy ints: the fingerprint must not crash on a
    freshly fitted model, and equals that of the model loaded back."""
    import numpy as np

    from advseq.detector import create_detector, load_detector
    from advseq.io import load_dataset

    (tmp_path / "tiny.jsonl").write_text(tiny_users(), encoding="utf-8")
    users = load_dataset(tmp_path / "tiny.jsonl").users
    det = create_detector("tfidf-lr", min_df=1).fit(users)
    back = load_detector(det.save(tmp_path / "m"))
    assert det.fingerprint() == back.fingerprint()
    np.testing.assert_array_equal(det.predict_proba(users), back.predict_proba(users))
    assert isinstance(json.loads((tmp_path / "m" / "ngrams.json").read_text()), list)


# ---- names are labels ------------------------------------------------------------------------
HOSTILE_NAMES = ["/tmp/advseq-hostile-abs", "../../escape", "a/b", "", ".", "..", "nul\u0000byte",
                 "x" * 300, "sp ace\ttab", "-rf", "CON", "dé/jà", "[/]", "a[b]c"]


@pytest.mark.parametrize("name", [*HOSTILE_NAMES, "[bold]x[/bold]"],
                         ids=lambda n: repr(n)[:20])
def test_folder_name_is_one_safe_component(name: str) -> None:
    folder = folder_name(name)
    assert folder and "/" not in folder and "\0" not in folder and not folder.startswith((".", "-"))
    assert folder not in (".", "..") and len(folder) <= 64 and folder.isascii()
    assert folder_name(name) == folder                       # stable
    if folder != name:
        assert folder[-9] == "-" and len(set(map(folder_name, [name, name + "1", name + "2"]))) == 3


@pytest.mark.parametrize("name", ["demo", "hlstm", "tfidf-lr", "sentence-encoder", "wiki", "pan19",
                                  "pan19-bots-en", "petgen", "copycat-best", "deepwordbug", "wiki-blackbox",
                                  "lm-generic", "copycat-benign-best", "surrogate", "a_b.c"])
def test_plain_names_are_their_own_folder(name: str) -> None:
    assert folder_name(name) == name


def test_shipped_demo_config_folders_are_its_names() -> None:
    cfg = load_config(REPO_DIR / "configs" / "demo.toml")
    assert cfg.out == REPO_DIR / "runs" / "demo"
    for item in [*cfg.datasets, *cfg.detectors, *cfg.attacks]:
        assert item.folder == item.name


def test_hostile_run_name_stays_under_runs() -> None:
    cfg = load_config({"run": {"name": "../../../etc"}, "datasets": [{"name": "d", "demo": True}],
                       "detectors": [{"name": "tfidf-lr"}]})
    assert cfg.out.parent == REPO_DIR / "runs" and cfg.name == "../../../etc"


def run_config_with_names(names: list[str]) -> str:
    detectors = "".join(f'[[detectors]]\nname = {json.dumps(n)}\ndetector = "tfidf-lr"\n'
                        f"params = {{ min_df = 1, C = {i + 1}.0 }}\n\n" for i, n in enumerate(names))
    return ('[run]\nname = "../../run-escape"\nquality = false\n\n'
            '[[datasets]]\nname = "../../data-escape"\npath = "tiny.jsonl"\n\n' + detectors
            + '[[attacks]]\nname = "../../attack-escape"\nattack = "copycat"\nmodes = ["score"]\n')


def assert_names_kept(out: Path, names: list[str]) -> None:
    index = json.loads((out / "index.json").read_text())
    assert {u["detector"] for u in index["units"]} == set(names)
    assert set(index["datasets"]) == {"../../data-escape"}
    assert {u["attack"] for u in index["units"] if u["kind"] == "attack"} == {"../../attack-escape"}
    assert index["config"]["name"] == "../../run-escape"
    assert {u["status"] for u in index["units"]} == {"done"}
    for u in index["units"]:
        unit = (out / u["path"]).resolve()
        assert out.resolve() in unit.parents and unit.is_dir()
    run = json.loads((out / "run.json").read_text())
    assert [d["name"] for d in run["config"]["detectors"]] == names


@pytest.mark.parametrize("script", [False, True], ids=["app", "console_script"])
def test_hostile_names_stay_inside_out(script: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dataset, detector, attack and run names that are paths (absolute, ``..``, empty,
    NUL, 300 characters, markup brackets) write nowhere but ``out``; the names stay in
    index.json and run.json."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "tiny.jsonl").write_text(tiny_users(), encoding="utf-8")
    (work / "run.toml").write_text(run_config_with_names(HOSTILE_NAMES), encoding="utf-8")
    neighbours = set(tmp_path.parent.iterdir())
    before = tree(tmp_path)
    args = ["run", "run.toml", "--out", "out", "--no-report", "--no-progress"]
    if script:
        proc = subprocess.run([sys.executable, "-m", "advseq", *args], cwd=work, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    else:
        result = invoke(args, work, monkeypatch)
        assert result.exit_code == 0, (result.stderr, result.exception)
    out = work / "out"
    assert_names_kept(out, HOSTILE_NAMES)
    assert_nothing_outside(tmp_path, before, out)
    assert set(tmp_path.parent.iterdir()) == neighbours
    assert not Path("/tmp/advseq-hostile-abs").exists()
    folders = {p.name for p in (out / "models").iterdir()}
    assert folders == {folder_name("../../data-escape")}


def test_names_with_markup_brackets_stay_inside_out(tmp_path: Path) -> None:
    """Brackets (rich markup) in names: the run itself, without the CLI's printing."""
    from advseq.pipeline import run_matrix

    names = ["[/]", "[bold]x[/bold]", "a[b]c"]
    (tmp_path / "tiny.jsonl").write_text(tiny_users(), encoding="utf-8")
    (tmp_path / "run.toml").write_text(run_config_with_names(names), encoding="utf-8")
    before = tree(tmp_path)
    run_matrix(load_config(tmp_path / "run.toml", out=tmp_path / "out"), progress=False)
    assert_names_kept(tmp_path / "out", names)
    assert_nothing_outside(tmp_path, before, tmp_path / "out")


# ---- the console script, as a user runs it -------------------------------------------------
SCRIPT_CASES = [
    ("config_seed", "run", in_run('seed = "abc"'), [f"run.toml:{RUN_LINE}:", "seed: must be an integer"]),
    ("config_params_int", "run", swap("params = { min_df = 1 }", "params = 5"),
     ["run.toml:11:", "params: must be a table"]),
    ("config_not_utf8", "run", b"[run]\nname = '\xff'\n", ["run.toml:2: not valid UTF-8"]),
    ("train_emb_dim", "train", "-p emb_dim=-5", ["emb_dim: must be an integer in [1,"]),
    ("train_device", "train", "--device tpu:9", ["device: unknown device 'tpu:9'"]),
]


@pytest.mark.parametrize(("command", "payload", "needles"), [c[1:] for c in SCRIPT_CASES],
                         ids=[c[0] for c in SCRIPT_CASES])
def test_console_script_refuses_in_one_line(command: str, payload: str | bytes, needles: list[str],
                                            tmp_path: Path) -> None:
    (tmp_path / "tiny.jsonl").write_text(tiny_users(), encoding="utf-8")
    if command == "run":
        cfg = tmp_path / "run.toml"
        cfg.write_bytes(payload if isinstance(payload, bytes) else payload.encode())
        args = ["run", "run.toml", "--out", "out", "--no-report"]
    else:
        args = ["train", "tiny.jsonl", "-d", "cnn", "-o", "out", *str(payload).split()]
    before = tree(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "advseq", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    assert tree(tmp_path) == before
