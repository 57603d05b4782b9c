"""`advseq data info` and the shortcut audit, on the bundled demo data and real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advseq.audit import describe, shortcut_audit
from advseq.cli import app
from advseq.io import load_dataset
from advseq.paths import demo_data
from advseq.schema import Dataset

runner = CliRunner()


def test_describe_tiny(tiny: Dataset) -> None:
    s = describe(tiny, audit=False)
    assert s["users"] == 20 and s["labels"] == {"benign": 10, "malicious": 10}
    assert s["by_class"]["benign"]["posts_per_user"]["min"] >= 3
    assert s["contexts"]["distinct"] == 3 and s["contexts"]["users_with_context"] == 20
    assert s["posts_with_timestamp"] == tiny.n_posts


def test_audit_finds_a_planted_length_leak() -> None:
    from tests.conftest import make_user

    users = [make_user(f"u{i}", i % 2, ["x"] * (3 if i % 2 else 9)) for i in range(40)]
    rows = {r["shortcut"]: r for r in shortcut_audit(Dataset(users))}
    assert rows["n_posts"]["accuracy"] == 1.0
    assert rows["mean_post_chars"]["accuracy"] <= 0.6
    assert rows["majority"]["accuracy"] == 0.5


def test_data_info_json_on_demo() -> None:
    result = runner.invoke(app, ["data", "info", str(demo_data()), "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["users"] == 500 and s["labels"] == {"benign": 250, "malicious": 250}
    names = {r["shortcut"] for r in s["shortcut_audit"]}
    assert {"n_posts", "mean_post_chars", "share_rt", "share_quick_gaps"} <= names
    assert s["vocabulary"]["distinct_tokens"] > 1000


def test_data_info_table_on_demo() -> None:
    result = runner.invoke(app, ["data", "info", str(demo_data())])
    assert result.exit_code == 0, result.output
    assert "Shortcut audit" in result.output and "malicious" in result.output


def test_demo_data_matches_its_card() -> None:
    """The committed demo file is exactly what the simulator produces (the card's command)."""
    from advseq.simulate import simulate

    ds = load_dataset(demo_data())
    assert ds.checksum() == simulate(500, 0).checksum()
    card = (demo_data().parent / "README.md").read_text()
    assert ds.checksum() in card


def test_convert_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "copy.jsonl"
    result = runner.invoke(app, ["data", "convert", str(demo_data()), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == demo_data().read_bytes()


def test_list_and_doctor() -> None:
    result = runner.invoke(app, ["list", "detectors"])
    assert result.exit_code == 0 and "hlstm" in result.output and "tfidf-lr" in result.output
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0 and "MiniLM" in result.output


@pytest.mark.realdata
@pytest.mark.slow
def test_wiki_info_matches_readme(wiki_path: Path) -> None:
    result = runner.invoke(app, ["data", "info", str(wiki_path), "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["users"] == 794 and s["labels"] == {"benign": 397, "malicious": 397}
    assert s["posts"] == 11547 and s["duplicates"]["posts_in_both_classes"] == 8
    rows = {r["shortcut"]: r for r in s["shortcut_audit"]}
    assert 0.64 <= rows["n_posts"]["accuracy"] <= 0.70  # README: 66.8%
    assert "share_quick_gaps" not in rows  # no timestamps in wiki


@pytest.mark.realdata
@pytest.mark.slow
def test_pan19_info_shortcut(pan19_path: Path) -> None:
    s = describe(load_dataset(pan19_path))
    assert s["users"] == 2600 and s["labels"] == {"benign": 1300, "malicious": 1300}
    rows = {r["shortcut"]: r for r in s["shortcut_audit"]}
    assert 0.89 <= rows["share_rt"]["accuracy"] <= 0.94  # README: 91.5%
