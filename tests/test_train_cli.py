"""`advseq train` / `advseq evaluate` end to end on the bundled demo data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advseq.cli import app
from advseq.detector import load_detector
from advseq.io import load_dataset
from advseq.paths import demo_data
from advseq.training import METRICS_FILE, recorded_split

runner = CliRunner()
FAST = ["-p", "emb_dim=32", "-p", "filters=16", "-p", "seq_hidden=16", "-p", "max_posts=12",
        "-p", "max_tokens=20"]
TIMING_KEYS = {"train_seconds", "train_users_per_second"}


def train(out: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["train", str(demo_data()), "--detector", "cnn", "--out", str(out),
                                 "--seed", "0", "--epochs", "3", "--no-progress", *FAST, *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / METRICS_FILE).read_text())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cnn")
    train(out)
    return out


def test_train_writes_everything(model_dir: Path) -> None:
    names = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "metrics.json", "split.json",
            "manifest.json"} <= names
    assert "checkpoint" not in names
    m = json.loads((model_dir / METRICS_FILE).read_text())
    for key in ("precision", "recall", "f1", "accuracy", "roc_auc", "pr_auc", "confusion", "n_test",
                "train_seconds", "train_users_per_second", "epochs"):
        assert key in m
    assert m["n_test"] == 100  # all 20% of 500 users scored, no batch dropping
    assert sum(map(sum, m["confusion"])) == 100
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["config"]["detector"] == "cnn"
    assert manifest["data"]["checksum"] == load_dataset(demo_data()).checksum()
    assert manifest["versions"]["torch"] and "commit" in manifest["git"]
    # float results repeat bit for bit only on the same kind of CPU: the manifest says which
    assert manifest["platform"]["torch_cpu_capability"] and "cpu" in manifest["platform"]


def test_train_twice_same_metrics(model_dir: Path, tmp_path: Path) -> None:
    again = train(tmp_path / "again")
    first = json.loads((model_dir / METRICS_FILE).read_text())
    assert {k: v for k, v in again.items() if k not in TIMING_KEYS} == \
        {k: v for k, v in first.items() if k not in TIMING_KEYS}


def test_fresh_process_gives_identical_probabilities(model_dir: Path) -> None:
    ds = load_dataset(demo_data())
    split = recorded_split(model_dir, ds)
    assert split is not None and len(split.test) == 100
    here = load_detector(model_dir).predict_proba(split.test.users).tolist()
    code = (
        "import json, sys\n"
        "from advseq.detector import load_detector\n"
        "from advseq.io import load_dataset\n"
        "from advseq.paths import demo_data\n"
        "from advseq.training import recorded_split\n"
        f"d = {str(model_dir)!r}\n"
        "split = recorded_split(d, load_dataset(demo_data()))\n"
        "print(json.dumps(load_detector(d).predict_proba(split.test.users).tolist()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == here


def test_evaluate_recorded_split_and_held_out(model_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(model_dir), str(demo_data()), "--json"])
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    trained = json.loads((model_dir / METRICS_FILE).read_text())
    assert m["evaluated_on"] == "recorded test split" and m["f1"] == trained["f1"]
    # A different dataset (another simulated platform) is scored on all its users.
    other = tmp_path / "other.jsonl"
    assert runner.invoke(app, ["data", "simulate", "--users", "60", "--seed", "7", "--out",
                               str(other), "--no-card"]).exit_code == 0
    result = runner.invoke(app, ["evaluate", str(model_dir), str(other), "--json"])
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["evaluated_on"] == "all users" and m["n_test"] == 60


def test_bad_param_is_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(demo_data()), "-d", "cnn", "-o", str(tmp_path),
                                 "-p", "wings=3"])
    assert result.exit_code == 2
    assert "cnn: wings: unknown setting" in result.output


def test_unknown_detector(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(demo_data()), "-d", "nope", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "unknown detector 'nope'" in result.output
