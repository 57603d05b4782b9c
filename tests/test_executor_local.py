"""The matrix as units of plain data, executors, and attack units sharded by user (local
executor; the Ray executor is in test_executor_ray.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from advseq.errors import ConfigError
from advseq.executors.units import UnitSpec, execute_unit
from advseq.pipeline import load_config, plan, run_matrix

SMALL = {"epochs": 1, "emb_dim": 16, "filters": 8, "seq_hidden": 8, "max_posts": 8, "max_tokens": 12}
TIMING = {"attack_seconds", "posts_per_second", "prepare_seconds"}


def matrix(**run: Any) -> dict[str, Any]:
    return {"run": {"name": "x", "quality": False, "max_users": 40, **run},
            "datasets": [{"name": "demo", "demo": True}],
            "detectors": [{"name": "cnn", "params": SMALL}, {"name": "tfidf-lr"}],
            "surrogate": {"detector": "cnn", "params": SMALL},
            "attacks": [{"name": "copycat", "modes": ["white-box", "transfer"]},
                        {"name": "unitrigger", "modes": ["white-box"], "params": {"iterations": 1},
                         "detectors": ["cnn"]}],
            "retrain": [{"detector": "tfidf-lr", "attack": "copycat", "rounds": 1}]}


def records(unit_dir: Path) -> list[dict[str, Any]]:
    """A unit's records without their timings, in file order."""
    lines = (unit_dir / "results.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def summary(unit_dir: Path) -> dict[str, Any]:
    return {k: v for k, v in json.loads((unit_dir / "summary.json").read_text()).items() if k not in TIMING}


def test_units_are_plain_data_with_dependencies(demo: Any, tmp_path: Path) -> None:
    cfg = load_config(matrix(shards=3), out=tmp_path / "run")
    units = plan(cfg, {"demo": demo})
    by_label = {u.label: u for u in units}
    ids = [u.uid for u in units]
    for u in units:                      # plain data: through JSON and back, unchanged
        assert UnitSpec.from_dict(json.loads(json.dumps(u.to_dict()))) == u
        assert all(ids.index(d) < ids.index(u.uid) for d in u.deps), u.label   # dependency order
    cnn, sur = by_label["demo: train cnn"].uid, by_label["demo: train surrogate"].uid
    assert by_label["demo: copycat (white-box) vs cnn"].deps == [cnn]
    assert by_label["demo: copycat (transfer) vs cnn"].deps == [cnn, sur]
    assert by_label["demo: retrain tfidf-lr vs copycat (1 rounds)"].deps == \
        [by_label["demo: train tfidf-lr"].uid]
    atk = by_label["demo: unitrigger (white-box) vs cnn"]
    assert atk.shards == 3 and atk.parts() == ["prepare", "shard:0", "shard:1", "shard:2", "merge"]
    assert by_label["demo: train cnn"].parts() == [None]
    # shards and resources change no folder: the unsharded plan has the same units
    plain = plan(load_config(matrix(), out=tmp_path / "run"), {"demo": demo})
    assert [u.uid for u in plain] == ids


def test_config_shards_and_resources(tmp_path: Path) -> None:
    raw = matrix(shards=2)
    raw["attacks"][1]["shards"] = 5
    raw["resources"] = {"num_cpus": 2, "attack": {"num_gpus": 0.5}}
    cfg = load_config(raw, out=tmp_path / "o")
    assert [cfg.attack_shards(a) for a in cfg.attacks] == [2, 5]
    assert cfg.request("attack") == {"num_cpus": 2.0, "num_gpus": 0.5}
    assert cfg.request("detector") == {"num_cpus": 2.0, "num_gpus": 0.0}
    record = load_config(matrix(), out=tmp_path / "o").to_dict()   # unused keys stay out
    assert "shards" not in record and "resources" not in record and all("shards" not in a for a in record["attacks"])
    for bad, where in [({"run": {"shards": 0}}, r"\[run\] shards"),
                       ({"resources": {"attack": {"num_cpu": 1}}}, r"\[resources\] attack\.num_cpu: unknown key"),
                       ({"resources": {"num_gpus": -1}}, r"\[resources\] num_gpus"),
                       ({"resources": {"gpu": 1}}, r"\[resources\] gpu: unknown key")]:
        raw = matrix()
        for table, value in bad.items():
            raw[table] = {**raw.get(table, {}), **value}
        with pytest.raises(ConfigError, match=where):
            load_config(raw, out=tmp_path / "o")


def test_executor_options_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import advseq.executors.ray_exec as ray_exec
    from advseq.executors import get_executor

    with pytest.raises(ConfigError, match="--executor: 'dask' is not one of local, ray"):
        get_executor("dask")
    with pytest.raises(ConfigError, match="apply only to --executor ray"):
        get_executor("local", workers=2)
    monkeypatch.setattr(ray_exec, "ray", None)
    with pytest.raises(ConfigError, match=r"needs Ray, which is not installed: pip install 'advseq\[ray\]'"):
        get_executor("ray", workers=2)


def test_without_ray_the_cli_says_so_in_one_line(tmp_path: Path) -> None:
    """`advseq run --executor ray` where Ray cannot be imported: one line, exit 2; and
    neither `import advseq` nor `advseq --help` nor a local run's modules import Ray."""
    cfg = tmp_path / "run.toml"
    cfg.write_text('[[datasets]]\nname = "demo"\ndemo = true\n[[detectors]]\nname = "tfidf-lr"\n')
    code = ("import sys\nsys.modules['ray'] = None\nfrom advseq.cli import main\n"
            f"sys.argv = ['advseq', 'run', {str(cfg)!r}, '--out', {str(tmp_path / 'o')!r}, "
            "'--executor', 'ray']\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("pip install 'advseq[ray]'")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    code = ("import sys, advseq, advseq.cli, advseq.pipeline, advseq.executors.local\n"
            "from typer.testing import CliRunner\n"
            "assert CliRunner().invoke(advseq.cli.app, ['run', '--help']).exit_code == 0\n"
            "assert 'ray' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_sharded_attacks_equal_unsharded_and_resume(tmp_path: Path) -> None:
    """Sharded attack units (local executor) give the unsharded records in the unsharded
    order and the same summary; a shard stopped midway resumes without redoing its
    finished batches; the prepared trigger is searched once."""
    plain = tmp_path / "plain"
    raw = matrix()
    raw["detectors"] = raw["detectors"][:1]
    raw.pop("retrain")
    run_matrix(load_config(raw, out=plain), progress=False)
    sharded = tmp_path / "sharded"
    shutil.copytree(plain, sharded, ignore=shutil.ignore_patterns("attacks"))
    cfg = load_config({**raw, "run": {**raw["run"], "shards": 2}}, out=sharded)
    from advseq.io import load_dataset
    from advseq.paths import demo_data

    units = [u for u in plan(cfg, {"demo": load_dataset(demo_data(), name="demo")}) if u.kind == "attack"]
    trig = next(u for u in units if u.info["attack"] == "unitrigger")
    execute_unit(trig, sharded, "prepare")
    execute_unit(trig, sharded, "shard:0")
    shard0 = trig.path / "shards" / "shard-0-of-2.jsonl"
    lines = shard0.read_text().splitlines(keepends=True)
    assert len(lines) == 24                                   # batches 0 and 2 (16 + 8 users)
    shard0.write_text("".join(lines[:16]) + lines[16][:20])   # killed in its second batch
    state = trig.path / "shards" / "state" / "unitrigger.json"
    searched = state.stat().st_mtime_ns
    index = run_matrix(cfg, progress=False)
    assert {u["status"] for u in index["units"] if u["kind"] == "attack"} == {"done"}
    assert shard0.read_text().splitlines(keepends=True)[:16] == lines[:16]   # first batch kept
    assert state.stat().st_mtime_ns == searched               # the trigger was not searched again
    for u in units:
        twin = plain / u.rel
        assert records(u.path) == records(twin), u.label
        assert summary(u.path) == summary(twin), u.label
