"""Settings that enter through the attack registry, the post LM and the CLI's ``-p``: each
bad value is one ConfigError (exit 2 at the CLI) naming the key, checked before any work.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advseq.attack import create_attack
from advseq.cli import app
from advseq.errors import ConfigError, DataError
from advseq.lm import PostLM

runner = CliRunner()


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"n_embd": -5}, "n_embd"), ({"n_layer": 0}, "n_layer"), ({"lr": float("nan")}, "lr"),
    ({"lr": 0}, "lr"), ({"epochs": "abc"}, "epochs"), ({"valid_size": 1.0}, "valid_size"),
    ({"device": "tpu:9"}, "device"), ({"max_context_tokens": -1}, "max_context_tokens"),
    ({"n_embd": 30, "n_head": 4}, "divisible"),
])
def test_post_lm_settings_are_checked(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        PostLM(**kwargs)


@pytest.mark.parametrize(("name", "params", "needle"), [
    ("hotflip", {"nonsense": 3}, "nonsense"),
    ("hotflip", {"beam_width": -3}, "beam_width"),
    ("copycat", {"choice": 5}, "choice"),
    ("petgen", {"w_recncy": 0.5}, "w_recncy"),
    ("petgen", {"lm": {"n_embd": -1}}, "n_embd"),
    ("lm-generic", {"lm": {"epochs": 0}}, "epochs"),
])
def test_attack_settings_are_named(name: str, params: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        attack = create_attack(name, **params)
        # settings of the attack's own LM are checked when the LM is built
        PostLM(**attack.get_params()["lm"])


def test_a_known_attack_setting_is_kept() -> None:
    assert create_attack("petgen", w_recency=0.5).get_params()["w_recency"] == 0.5


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_huge_integer_param_is_refused_by_train(tmp_path: Path, demo) -> None:
    line = one_error_line(runner.invoke(app, ["train", demo.source, "-d", "cnn", "-o",
                                              str(tmp_path / "m"), "-p", "epochs=" + "9" * 5000]))
    assert "-p epochs" in line and "too long" in line
    assert not (tmp_path / "m").exists()


def test_petgen_train_names_a_missing_detector_folder(tmp_path: Path, demo) -> None:
    missing = tmp_path / "no-such-model"
    line = one_error_line(runner.invoke(app, ["petgen", "train", demo.source, "-d", str(missing),
                                              "-o", str(tmp_path / "gen")]))
    assert str(missing) in line and "not a saved detector" in line


def test_run_has_a_repair_option() -> None:
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0 and "--repair" in result.stdout


def test_damaged_augmented_copies_are_one_data_error(tmp_path: Path) -> None:
    from advseq.retrain import _read_augmented

    good = {"user_id": "u1", "label": 1, "posts": [{"text": "hello", "context": None,
                                                     "timestamp": 0.0, "relevancy": None}]}
    path = tmp_path / "augmented.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        _read_augmented(path)
    assert f"{path}:2:" in str(err.value)
    path.write_text(json.dumps(good) + "\n", encoding="utf-8")
    assert [u.user_id for u in _read_augmented(path)] == ["u1"]
