"""Attack framework, baselines and the evaluator, on the bundled demo data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from advseq.attack import AttackSpec, create_attack
from advseq.cli import app
from advseq.errors import CapabilityError, ConfigError
from advseq.evaluation import RESULTS_FILE, SUMMARY_FILE, read_records, run_attack
from advseq.paths import demo_data
from advseq.schema import Post, User
from advseq.training import train_detector
from tests.conftest import SMALL_CNN, evasion_rate

runner = CliRunner()


def attack(demo, cnn_dir, name, out, **kw):
    kw.setdefault("quality", False)
    return run_attack(demo, cnn_dir, name, out=out, progress=False, **kw)


def test_spec_tasks() -> None:
    u = User("u", 1, (Post("a", None, 10.0), Post("b", None, 70.0), Post("c", "ctx", 100.0)))
    append = AttackSpec().task(u)
    assert [p.text for p in append.history.posts] == ["a", "b", "c"]
    assert append.context == "ctx" and append.target == 0 and append.timestamp == 145.0
    replace = AttackSpec(placement="replace-last", goal="flip").task(u)
    assert [p.text for p in replace.history.posts] == ["a", "b"] and replace.timestamp == 100.0
    assert [p.text for p in replace.with_post("new").posts] == ["a", "b", "new"]
    assert AttackSpec(context="given").task(u).context == "given"
    with pytest.raises(ConfigError):
        AttackSpec(goal="destroy")


def test_per_user_rng_is_batch_independent(demo) -> None:
    atk = create_attack("copycat", seed=3)
    spec = AttackSpec()
    tasks = [spec.task(u) for u in demo.users[:10] if u.label == 1]
    from advseq.detector import CallableDetector
    from advseq.threat import ThreatModel

    tm = ThreatModel(CallableDetector(lambda us: [0.5] * len(us)), "label")
    together = [o.post for o in atk.run(tasks, tm)]
    alone = [atk.run([t], tm)[0].post for t in tasks]
    assert together == alone


def test_records_and_summary(demo, cnn_dir, tmp_path) -> None:
    s = attack(demo, cnn_dir, "copycat", tmp_path / "r")
    records = read_records(tmp_path / "r" / RESULTS_FILE)
    assert len(records) == s["n_users"] == 100 and len({r["user_id"] for r in records}) == 100
    assert s["n_targeted"] == sum(r["label"] for r in records) == 50
    assert all(r["post"] for r in records if r["targeted"])
    for key in ("attack_success_rate", "n_eligible", "before", "after", "queries_mean",
                "queries_median", "posts_per_second"):
        assert key in s
    assert s["evasion_rate"] == evasion_rate(records)
    assert json.loads((tmp_path / "r" / SUMMARY_FILE).read_text())["n_users"] == 100
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["config"]["attack"] == "copycat" and manifest["git"]["commit"]


def test_gradient_attack_refused_in_label_mode(demo, cnn_dir, tmp_path) -> None:
    with pytest.raises(CapabilityError, match="needs gradient"):
        attack(demo, cnn_dir, "hotflip", tmp_path / "r", mode="label")
    assert not (tmp_path / "r").exists()  # refused before it started
    result = runner.invoke(app, ["attack", str(demo_data()), "-d", str(cnn_dir), "-a", "unitrigger",
                                 "--mode", "score", "-o", str(tmp_path / "c")])
    assert result.exit_code == 2 and "needs gradient" in result.output


def test_label_budget_never_exceeded(demo, cnn_dir, tmp_path) -> None:
    s = attack(demo, cnn_dir, "copycat", tmp_path / "r", mode="label", budget=3,
               attack_params={"choice": "best"})
    records = read_records(tmp_path / "r" / RESULTS_FILE)
    assert max(r["queries"] for r in records) <= 3
    assert s["budget_exhausted"] > 0  # users with more than 3 earlier posts ran out


def test_hotflip_beats_copycat_white_box(demo, cnn_dir, tmp_path) -> None:
    copy = attack(demo, cnn_dir, "copycat", tmp_path / "c")
    flip = attack(demo, cnn_dir, "hotflip", tmp_path / "h")
    assert flip["evasion_rate"] > copy["evasion_rate"] + 0.1
    assert flip["after"]["recall"] < copy["after"]["recall"]


def test_unitrigger_transfer_with_given_surrogate(demo, cnn_dir, tmp_path) -> None:
    sur = tmp_path / "sur"            # the attacker's own cnn: another seed, fewer epochs
    train_detector(demo, "cnn", sur, seed=5, params={**SMALL_CNN, "epochs": 2}, progress=False)
    s = attack(demo, cnn_dir, "unitrigger", tmp_path / "u", mode="transfer", surrogate=sur,
               attack_params={"iterations": 2, "candidates": 3, "batch_users": 8})
    records = read_records(tmp_path / "u" / RESULTS_FILE)
    triggers = {r["info"]["trigger"] for r in records if r["targeted"]}
    assert len(triggers) == 1 and s["mode"] == "transfer"
    assert all(r["post"].endswith(next(iter(triggers))) for r in records if r["targeted"])


def test_transfer_from_an_ensemble_surrogate(demo, cnn_dir, tmp_path) -> None:
    """An ensemble trained with `advseq train -d ensemble` is a surrogate like any other:
    the attack runs white-box on all its members, the deployed cnn scores the posts."""
    sur = tmp_path / "ens"
    members = {**SMALL_CNN, "epochs": 2}
    train_detector(demo, "ensemble", sur, seed=5, params={"member": "cnn", "size": 2,
                                                          "member_params": members}, progress=False)
    assert sorted(p.name for p in (sur / "members").iterdir()) == ["0", "1"]
    s = attack(demo, cnn_dir, "hotflip", tmp_path / "h", mode="transfer", surrogate=sur, max_users=30)
    records = [r for r in read_records(tmp_path / "h" / RESULTS_FILE) if r["targeted"]]
    assert s["mode"] == "transfer" and records
    # the recorded surrogate scores are the ensemble's, not the deployed detector's
    assert any(abs(r["info"]["surrogate_prob"] - r["attacked_prob"]) > 1e-3 for r in records)


def test_resume_refuses_changed_settings(demo, cnn_dir, tmp_path) -> None:
    attack(demo, cnn_dir, "copycat", tmp_path / "r", max_users=20)
    with pytest.raises(ConfigError, match="already holds a run"):
        attack(demo, cnn_dir, "copycat", tmp_path / "r", max_users=20)
    with pytest.raises(ConfigError, match="different settings"):
        attack(demo, cnn_dir, "copycat", tmp_path / "r", max_users=20, seed=1, resume=True)


def test_torn_last_line_is_dropped(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"user_id": "a"}\n{"user_id": "b"}\n{"user_i')
    assert [r["user_id"] for r in read_records(path)] == ["a", "b"]
    assert path.read_text() == '{"user_id": "a"}\n{"user_id": "b"}\n'


@pytest.mark.slow                 # three whole attack runs in subprocesses
@pytest.mark.timeout(900)         # above the subprocess limits below, which bound every wait
def test_sigkill_then_resume_matches_uninterrupted(demo, cnn_dir, tmp_path) -> None:
    """A run killed with SIGKILL mid-way and resumed gives the summary of a run that was
    never interrupted, with one record per user."""
    args = [sys.executable, "-m", "advseq", "attack", str(demo_data()), "-d", str(cnn_dir),
            "-a", "hotflip", "--no-quality", "--no-progress", "-p", "max_flips=3"]
    full = tmp_path / "full"
    assert subprocess.run([*args, "-o", str(full)], capture_output=True, timeout=240).returncode == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*args, "-o", str(killed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    results = killed / RESULTS_FILE
    deadline = time.time() + 300
    while time.time() < deadline and (not results.exists() or results.read_text().count("\n") < 40):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(read_records(results))
    assert 0 < n_before < 100
    again = subprocess.run([*args, "-o", str(killed), "--resume"], capture_output=True, text=True,
                           timeout=240)
    assert again.returncode == 0, again.stderr
    records = read_records(results)
    assert len(records) == 100 and len({r["user_id"] for r in records}) == 100
    a = json.loads((full / SUMMARY_FILE).read_text())
    b = json.loads((killed / SUMMARY_FILE).read_text())
    drop = {"attack_seconds", "posts_per_second", "prepare_seconds"}
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
