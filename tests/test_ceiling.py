"""The one-post attack ceiling (advseq.ceiling) on the bundled demo data."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from advseq.attack import AttackSpec
from advseq.ceiling import append_ceiling
from advseq.cli import app
from advseq.detector import load_detector
from advseq.errors import CapabilityError
from advseq.evaluation import run_attack
from advseq.training import recorded_split, train_detector


def test_ceiling_eligibility_witnesses_and_determinism(demo, cnn_dir, tmp_path) -> None:
    det = load_detector(cnn_dir)
    test = recorded_split(cnn_dir, demo).test.users
    res = append_ceiling(det, test, length=8, steps=60, progress=False)
    # Same eligible users as the evaluator's.
    s = run_attack(demo, cnn_dir, "copycat", out=tmp_path / "r", quality=False, progress=False)
    assert res["n_eligible"] == s["n_eligible"] > 0
    rows = {r["user_id"]: r for r in res["users"]}
    assert len(rows) == res["n_eligible"]
    assert res["relaxed_rate"] == round(sum(r["relaxed"] for r in rows.values()) / len(rows), 6) > 0
    assert res["token_rate"] == round(sum(r["token"] for r in rows.values()) / len(rows), 6)
    # A relaxed success means the relaxed post put the logit below the cut (evasion).
    assert all((r["relaxed_logit"] < 0) == r["relaxed"] for r in rows.values())
    # Witness posts are real text: re-scoring them reproduces the recorded verdicts.
    spec = AttackSpec()
    by_id = {u.user_id: u for u in test}
    attacked = [spec.task(by_id[uid]).with_post(r["token_post"]) for uid, r in rows.items()]
    after = det.predict_proba(attacked)
    assert [bool(p < 0.5) for p in after] == [r["token"] for r in rows.values()]
    assert all(r["token_post"] for r in rows.values())
    # Same seed, same numbers.
    again = append_ceiling(det, test, length=8, steps=60, progress=False)
    assert again["users"] == res["users"]


def test_ceiling_grows_with_search_effort(demo, cnn_dir) -> None:
    det = load_detector(cnn_dir)
    test = recorded_split(cnn_dir, demo).test.users
    weak = append_ceiling(det, test, length=8, steps=1, lr=1e-4, progress=False)
    strong = append_ceiling(det, test, length=8, steps=80, progress=False)
    assert strong["relaxed_rate"] > weak["relaxed_rate"]


def test_ceiling_needs_soft_tokens(demo, tmp_path) -> None:
    train_detector(demo, "tfidf-lr", tmp_path / "t", seed=0, progress=False)
    with pytest.raises(CapabilityError, match="soft tokens"):
        append_ceiling(load_detector(tmp_path / "t"), demo.users[:10], progress=False)


def test_ceiling_cli(demo, cnn_dir, tmp_path) -> None:
    from advseq.paths import demo_data

    out = tmp_path / "ceiling"
    r = CliRunner().invoke(app, ["ceiling", str(demo_data()), "-d", str(cnn_dir), "--steps", "20",
                                 "--length", "6", "--max-users", "40", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "relaxed ceiling" in r.output
    saved = json.loads((out / "ceiling.json").read_text())
    assert saved["length"] == 6 and saved["n_users"] == 40
    assert json.loads((out / "manifest.json").read_text())["seed"] == 0
