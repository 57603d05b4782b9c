"""The Ray executor: a local Ray gives the local executor's results; a failing unit is
retried once and listed as failed while the rest finishes; on a two-node cluster a driver
killed during a sharded attack is started again and redoes no finished shard."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'advseq[ray]')")

from advseq.pipeline import load_config, run_matrix  # noqa: E402
from tests.test_executor_local import SMALL, records, summary  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def matrix(**run: Any) -> dict[str, Any]:
    return {"run": {"name": "r", "quality": False, "max_users": 40, **run},
            "datasets": [{"name": "demo", "demo": True}],
            "detectors": [{"name": "cnn", "params": SMALL}, {"name": "tfidf-lr"}],
            "attacks": [{"name": "copycat", "modes": ["white-box"]},
                        {"name": "hotflip", "modes": ["white-box"], "params": {"max_flips": 2, "beam_width": 2}}]}


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The local reference run with one torch thread, as a Ray task with one CPU has: float
    sums in another order differ in the last digits."""
    import torch

    was = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(was)


def units_without_timing(index: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in u.items() if k != "seconds"} for u in index["units"]]


def metrics(path: Path) -> dict[str, Any]:
    m = json.loads((path / "metrics.json").read_text())
    return {k: v for k, v in m.items() if "seconds" not in k and "per_second" not in k}


def test_local_ray_gives_the_local_results(tmp_path: Path, one_thread: None) -> None:
    local = run_matrix(load_config(matrix(), out=tmp_path / "local"), progress=False)
    remote = run_matrix(load_config(matrix(shards=2), out=tmp_path / "ray"), progress=False,
                        executor="ray", workers=2)
    assert not ray.is_initialized()                       # the local Ray it started is gone
    assert units_without_timing(remote) == units_without_timing(local)
    assert {u["status"] for u in local["units"]} == {"done", "not applicable"}
    for u in local["units"]:
        a, b = tmp_path / "local" / u["path"], tmp_path / "ray" / u["path"]
        if u["status"] != "done":
            continue
        if u["kind"] == "detector":
            assert metrics(a) == metrics(b), u["label"]
        else:
            assert records(a) == records(b), u["label"]          # every post, every probability
            assert summary(a) == summary(b), u["label"]
            assert (b / "shards" / "shard-1-of-2.jsonl").is_file()


def test_failed_unit_is_retried_once_and_listed(tmp_path: Path, one_thread: None) -> None:
    raw = matrix()
    raw["detectors"] = [{"name": "tfidf-lr"}, {"name": "tf2", "detector": "tfidf-lr", "params": {"C": 2.0}}]
    raw["attacks"] = [{"name": "copycat", "modes": ["label"]}]
    cfg = load_config(raw, out=tmp_path / "run")
    first = run_matrix(cfg, progress=False)
    broken = next(u for u in first["units"] if u["label"] == "demo: train tfidf-lr")
    for f in (tmp_path / "run" / broken["path"]).iterdir():
        if f.name not in ("metrics.json", "split.json", "manifest.json", "config.json"):
            f.write_bytes(b"not a model")                     # the trained model is damaged
    for p in (tmp_path / "run" / "attacks").rglob("summary.json"):
        p.unlink()                                            # both attacks must run again
    index = run_matrix(cfg, progress=False, executor="ray", workers=2)
    status = {u["label"]: u for u in index["units"]}
    bad = status["demo: copycat (label) vs tfidf-lr"]
    assert bad["status"] == "failed" and bad["attempts"] == 2, bad
    assert "Error" in bad["error"] and "\n" not in bad["error"]
    assert status["demo: copycat (label) vs tf2"]["status"] == "done"
    saved = json.loads((tmp_path / "run" / "index.json").read_text())
    assert [u["status"] for u in saved["units"]] == [u["status"] for u in index["units"]]
    from typer.testing import CliRunner

    from advseq.cli import app

    res = CliRunner().invoke(app, ["run", str(_toml(tmp_path, raw)), "--out", str(tmp_path / "run"),
                                   "--executor", "ray", "--workers", "1", "--no-report", "--no-progress"])
    assert res.exit_code == 1, res.output                      # failed units: exit code 1


def _toml(tmp_path: Path, raw: dict[str, Any]) -> Path:
    """``raw`` (one level of tables, as these tests build them) as a TOML file."""
    def val(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)
    lines = []
    for table, body in raw.items():
        for item in body if isinstance(body, list) else [body]:
            lines.append(f"[[{table}]]" if isinstance(body, list) else f"[{table}]")
            lines += [f"{k} = {val(v)}" for k, v in item.items()]
    path = tmp_path / "run.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


DRIVER = """
import sys
from advseq.api import robustness_run
robustness_run(sys.argv[1], out=sys.argv[2], report=False, progress=False, executor="ray",
               address=sys.argv[3])
"""


def test_two_node_cluster_driver_killed_and_restarted(tmp_path: Path, one_thread: None) -> None:
    from ray.cluster_utils import Cluster

    raw = {"run": {"name": "kill", "quality": False, "max_users": 64},
           "datasets": [{"name": "demo", "demo": True}],
           "detectors": [{"name": "cnn", "params": SMALL}],
           "attacks": [{"name": "hotflip", "modes": ["white-box"], "shards": 4,
                        "params": {"max_flips": 6, "beam_width": 4}}]}
    config = _toml(tmp_path, raw)
    out = tmp_path / "run"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        cluster.wait_for_nodes()
        env = {**os.environ, "RAY_ADDRESS": cluster.address}
        cmd = [sys.executable, "-c", DRIVER, str(config), str(out), cluster.address]
        driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  start_new_session=True)
        finished: dict[Path, tuple[bytes, int]] = {}
        deadline = time.monotonic() + 300
        while not finished and time.monotonic() < deadline and driver.poll() is None:
            for f in out.glob("attacks/*/*/*/shards/shard-*-of-4.jsonl"):
                if f.read_bytes().count(b"\n") == 16:         # its one batch is written
                    finished[f] = (f.read_bytes(), f.stat().st_mtime_ns)
            time.sleep(0.05)
        assert finished, "no shard finished in time"
        os.killpg(driver.pid, signal.SIGKILL)                 # the driver dies midway
        driver.wait()
        unit = next(iter(finished)).parent.parent
        assert not (unit / "summary.json").exists(), "the unit finished before the driver was killed"
        time.sleep(1)
        finished = {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in finished}  # as the kill left them
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
        assert again.returncode == 0, again.stderr[-3000:]
    finally:
        cluster.shutdown()
    for f, (content, mtime) in finished.items():              # no finished shard was redone
        assert f.read_bytes() == content and f.stat().st_mtime_ns == mtime, f.name
    index = json.loads((out / "index.json").read_text())
    assert [u["status"] for u in index["units"]] == ["reused", "done"]
    # every user once, in the unsharded order, with the unsharded records and summary
    reference = tmp_path / "reference"
    shutil.copytree(out, reference, ignore=shutil.ignore_patterns("attacks"))
    run_matrix(load_config(config, out=reference), progress=False)
    rel = unit.relative_to(out)
    assert records(unit) == records(reference / rel)
    assert len({r["user_id"] for r in records(unit)}) == len(records(unit)) == 64
    assert summary(unit) == summary(reference / rel)
