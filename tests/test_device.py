"""Devices: the one resolver (advseq.device), --device on every command that runs torch
work, device keys of run configs and the GPU requests of their units, detectors placed
where they are asked to run. GPU-only checks skip on a machine without CUDA."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from advseq.config import ParamError
from advseq.detector import create_detector, load_detector
from advseq.device import check_device, device_problem, on_device, resolve_device
from advseq.errors import ConfigError
from advseq.evaluation import run_attack
from advseq.executors.resources import override_device
from advseq.executors.units import UnitSpec
from advseq.pipeline import load_config, plan

HAS_CUDA = torch.cuda.is_available()
no_cuda = pytest.mark.skipif(HAS_CUDA, reason="checks the refusal on a machine without CUDA")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
SMALL = {"epochs": 1, "emb_dim": 16, "filters": 8, "seq_hidden": 8, "max_posts": 8, "max_tokens": 12}
TIMING = {"attack_seconds", "posts_per_second", "prepare_seconds"}


# ---- the resolver ------------------------------------------------------------------------
def test_resolver_names_the_option() -> None:
    assert check_device("cpu") == "cpu" and resolve_device("cpu") == torch.device("cpu")
    assert check_device("auto") == ("cuda" if HAS_CUDA else "cpu")
    for bad in ("tpu", "gpu", "cuda:x", "cpu:0", "CUDA", "", "cuda:" + "9" * 20):
        with pytest.raises(ConfigError, match=r"^--device: unknown device"):
            check_device(bad)
    with pytest.raises(ConfigError, match=r"^\[run\] device: must be a device name"):
        check_device(3, "[run] device")
    assert device_problem("cuda:7", available=False) is None       # a name only: no GPU asked
    assert device_problem("auto", auto=False).startswith("unknown device")
    with pytest.raises(ParamError, match="device: unknown device 'auto'"):
        create_detector("hlstm", device="auto")                     # a setting takes no auto


@no_cuda
def test_cuda_without_cuda_is_one_clear_error() -> None:
    for name in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(ConfigError, match=rf"^--device: '{name}' requested but torch sees no GPU; "
                                              r"install a CUDA build of torch \(see README\) or use cpu$"):
            resolve_device(name)
    with pytest.raises(ParamError, match="device: 'cuda' requested but torch sees no GPU"):
        create_detector("cnn", device="cuda")


def test_on_device_puts_the_device_where_a_class_takes_one() -> None:
    from advseq import registry

    hlstm, tfidf = registry.detectors.get("hlstm"), registry.detectors.get("tfidf-lr")
    assert on_device(hlstm, {"epochs": 2}, "cuda") == {"epochs": 2, "device": "cuda"}
    assert on_device(hlstm, {"epochs": 2}, "cpu") == {"epochs": 2}      # the default: no record changes
    assert on_device(hlstm, {"epochs": 2}, None) == {"epochs": 2}
    assert on_device(tfidf, {}, "cuda") == {}                           # a CPU model keeps its settings
    assert on_device(registry.detectors.get("ensemble"), {"member": "cnn"}, "cuda:1") == \
        {"member": "cnn", "member_params": {"device": "cuda:1"}}
    assert on_device(registry.attacks.get("petgen"), {}, "cuda") == {"device": "cuda"}
    assert on_device(registry.attacks.get("hotflip"), {"max_flips": 3}, "cuda") == {"max_flips": 3}
    assert on_device(registry.attacks.get("lm-generic"), {}, "cuda") == {"lm": {"device": "cuda"}}
    assert on_device(registry.attacks.get("lm-generic"), {}, "cpu") == {}
    with pytest.raises(ConfigError, match=r"--device cpu and -p device=cuda disagree"):
        on_device(registry.attacks.get("petgen"), {"device": "cuda"}, "cpu")


def test_petgen_trains_its_reference_lm_on_its_device() -> None:
    from attacks.petgen.settings import PETGENSettings

    settings = PETGENSettings(lm={"n_layer": 1})
    assert settings.lm_params() == {"n_layer": 1}           # the CPU: the LM it always had
    settings.device = "cuda"          # (set directly: constructing it on cuda needs a GPU)
    assert settings.lm_params() == {"n_layer": 1, "device": "cuda"}
    settings.lm = {"device": "cpu"}
    assert settings.lm_params() == {"device": "cpu"}         # the LM's own device wins


# ---- the command line --------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "advseq", *args], capture_output=True, text=True,
                          timeout=180)


def one_line_error(proc: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@no_cuda
@pytest.mark.parametrize("command", ["train", "attack", "ceiling", "retrain", "run", "petgen"])
def test_every_command_refuses_cuda_without_cuda(command: str, cnn_dir: Path, tmp_path: Path) -> None:
    from advseq.paths import demo_data

    data, out = str(demo_data()), str(tmp_path / "out")
    config = tmp_path / "run.toml"
    config.write_text('[[datasets]]\nname = "demo"\ndemo = true\n[[detectors]]\nname = "cnn"\n')
    args = {"train": ["train", data, "-d", "cnn", "-o", out],
            "attack": ["attack", data, "-d", str(cnn_dir), "-a", "hotflip", "-o", out],
            "ceiling": ["ceiling", data, "-d", str(cnn_dir), "-o", out],
            "retrain": ["retrain", data, "-d", "cnn", "-a", "copycat", "-o", out],
            "run": ["run", str(config), "-o", out],
            "petgen": ["petgen", "train", data, "-d", str(cnn_dir), "-o", out]}[command]
    one_line_error(run_cli(*args, "--device", "cuda"), "error: --device: 'cuda' requested but torch sees no GPU")
    one_line_error(run_cli(*args, "--device", "tpu"), "--device: unknown device 'tpu'")
    assert not Path(out).exists()       # refused before anything is written


def test_device_help_is_shown() -> None:
    for command in (["attack"], ["run"], ["petgen", "train"]):
        proc = run_cli(*command, "--help")
        assert proc.returncode == 0 and "--device" in proc.stdout and "cuda" in proc.stdout, command


@no_cuda
def test_config_device_cuda_is_refused_before_a_local_run_starts(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('[run]\ndevice = "cuda"\n[[datasets]]\nname = "demo"\ndemo = true\n'
                      '[[detectors]]\nname = "tfidf-lr"\n')
    line = one_line_error(run_cli("run", str(config), "-o", str(tmp_path / "o"), "--no-report"),
                          "unit 'demo: train tfidf-lr': device: 'cuda' requested but torch sees no GPU")
    assert "Traceback" not in line
    assert not list((tmp_path / "o").glob("models/*/*"))            # no unit ran


def attack_files(out: Path) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    records = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
               for line in (out / "results.jsonl").read_text().splitlines()]
    summary = {k: v for k, v in json.loads((out / "summary.json").read_text()).items() if k not in TIMING}
    return records, summary, json.loads((out / "run.json").read_text())


def test_device_cpu_gives_what_no_device_gives(demo: Any, cnn_dir: Path, tmp_path: Path) -> None:
    """White-box HotFlip (the detector's gradients on the device) and transfer (a surrogate
    trained on the device): --device cpu changes no record, no summary value, no run.json."""
    for mode, extra in (("white-box", {}), ("transfer", {"surrogate_detector": "cnn",
                                                          "surrogate_params": SMALL})):
        runs = []
        for name, device in (("plain", None), ("cpu", "cpu")):
            out = tmp_path / f"{mode}-{name}"
            run_attack(demo, cnn_dir, "hotflip", out=out, mode=mode, attack_params={"max_flips": 3},
                       max_users=24, quality=False, progress=False, device=device, **extra)
            runs.append(attack_files(out))
        assert runs[0] == runs[1], mode
        assert runs[0][0] and "device" not in runs[0][2]


# ---- run configs and units ---------------------------------------------------------------
def matrix(**run: Any) -> dict[str, Any]:
    return {"run": {"name": "x", "quality": False, "max_users": 10, "ceiling": True, **run},
            "datasets": [{"name": "demo", "demo": True}],
            "detectors": [{"name": "cnn", "params": SMALL}, {"name": "tfidf-lr"}],
            "surrogate": {"detector": "cnn", "params": SMALL},
            "attacks": [{"name": "hotflip", "modes": ["white-box", "transfer"]}],
            "retrain": [{"detector": "cnn", "attack": "copycat", "rounds": 1}]}


def by_label(units: list[UnitSpec]) -> dict[str, UnitSpec]:
    return {u.label: u for u in units}


def test_cuda_units_ask_for_a_gpu(demo: Any, tmp_path: Path) -> None:
    cpu = plan(load_config(matrix(), out=tmp_path / "r"), {"demo": demo})
    assert plan(load_config(matrix(device="cpu"), out=tmp_path / "r"), {"demo": demo}) == cpu
    assert all(u.device == "cpu" and u.request["num_gpus"] == 0.0 for u in cpu)
    cfg = load_config(matrix(device="cuda"), out=tmp_path / "r")      # a name only: no GPU needed here
    gpu = plan(cfg, {"demo": demo})
    assert [u.label for u in gpu] == [u.label for u in cpu]
    for u in gpu:
        assert u.device == "cuda" and u.request == {"num_cpus": 1.0, "num_gpus": 1.0}, u.label
        assert UnitSpec.from_dict(json.loads(json.dumps(u.to_dict()))) == u      # plain data
    # a GPU's results are other floats: its units have folders of their own
    assert not {u.uid for u in gpu} & {u.uid for u in cpu}
    assert cfg.to_dict()["device"] == "cuda" and "device" not in load_config(matrix(), out=tmp_path / "r").to_dict()
    # [resources] sizes the GPU share; 0 for a GPU unit is refused; CPU units ask for none
    raw = matrix(device="cuda")
    raw["resources"] = {"num_gpus": 0.25, "attack": {"num_gpus": 0.5}}
    units = by_label(plan(load_config(raw, out=tmp_path / "r"), {"demo": demo}))
    assert units["demo: hotflip (white-box) vs cnn"].request["num_gpus"] == 0.5
    assert units["demo: train cnn"].request["num_gpus"] == 0.25
    raw["resources"] = {"attack": {"num_gpus": 0}}
    with pytest.raises(ConfigError, match=r"\[resources\] attack\.num_gpus: 0, but attack units run on 'cuda'"):
        plan(load_config(raw, out=tmp_path / "r"), {"demo": demo})
    raw = matrix()
    raw["resources"] = {"num_gpus": 1}
    assert all(u.request["num_gpus"] == 0.0 for u in plan(load_config(raw, out=tmp_path / "r"), {"demo": demo}))


def test_ray_tasks_of_a_gpu_unit_ask_for_the_gpu(demo: Any, tmp_path: Path) -> None:
    ray_exec = pytest.importorskip("advseq.executors.ray_exec")
    raw = matrix(shards=2)
    raw["attacks"][0]["device"] = "cuda"
    units = by_label(plan(load_config(raw, out=tmp_path / "r"), {"demo": demo}))
    sharded = units["demo: hotflip (white-box) vs cnn"]
    for part in sharded.parts():            # prepare, every shard, merge
        assert ray_exec._options(sharded, part)["num_gpus"] == 1.0, part
    assert ray_exec._options(units["demo: train cnn"], None)["num_gpus"] == 0.0


def test_table_devices_and_the_override(demo: Any, tmp_path: Path) -> None:
    raw = matrix()
    raw["detectors"][0]["device"] = "cuda:1"
    raw["attacks"][0]["device"] = "cuda"
    units = by_label(plan(load_config(raw, out=tmp_path / "r"), {"demo": demo}))
    assert units["demo: train cnn"].device == "cuda:1"
    assert units["demo: one-post ceiling of cnn"].device == "cuda:1"     # where its detector runs
    assert units["demo: train tfidf-lr"].device == "cpu"
    assert units["demo: train surrogate"].device == "cpu"
    assert units["demo: hotflip (transfer) vs cnn"].device == "cuda"
    assert units["demo: retrain cnn vs copycat (1 rounds)"].request["num_gpus"] == 0.0
    raw["detectors"][0]["params"] = {**SMALL, "device": "cpu"}
    with pytest.raises(ConfigError, match=r"\[\[detectors\]\] #1 device: 'cuda:1', but params.device is 'cpu'"):
        load_config(raw, out=tmp_path / "r")
    raw["detectors"][0]["device"] = "tpu"
    with pytest.raises(ConfigError, match=r"\[\[detectors\]\] #1 device: unknown device 'tpu'"):
        load_config(raw, out=tmp_path / "r")
    raw = matrix()
    raw["detectors"][0]["device"] = "cuda"
    cfg = load_config(raw, out=tmp_path / "r")
    override_device(cfg, "cpu")                                         # advseq run --device cpu
    assert plan(cfg, {"demo": demo}) == plan(load_config(matrix(), out=tmp_path / "r"), {"demo": demo})


# ---- detectors where they are asked to run -----------------------------------------------
def test_a_loaded_detector_runs_where_it_is_put(cnn_dir: Path, demo: Any, tmp_path: Path) -> None:
    det = load_detector(cnn_dir, device="cpu")
    assert det.device == "cpu" and {p.device for p in det.module_.parameters()} == {torch.device("cpu")}
    fingerprint = det.fingerprint()
    det.to_device("meta")            # a device with no data: every parameter must have moved
    assert det.device == "meta" and {p.device.type for p in det.module_.parameters()} == {"meta"}
    # a model trained on a GPU loads on the CPU (the device is where it ran, not what it is)
    copy = tmp_path / "cuda-trained"
    shutil.copytree(cnn_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["params"]["device"] = "cuda"
    (copy / "config.json").write_text(json.dumps(config))
    again = load_detector(copy)
    assert again.device == "cpu" and again.fingerprint() == fingerprint
    users = list(demo.users[:8])
    assert (again.predict_proba(users) == load_detector(cnn_dir).predict_proba(users)).all()


@needs_cuda
def test_on_a_gpu_the_detector_and_attack_run_there(cnn_dir: Path, demo: Any, tmp_path: Path) -> None:
    det = load_detector(cnn_dir, device="cuda")
    assert {p.device.type for p in det.module_.parameters()} == {"cuda"}
    users = list(demo.users[:16])
    gpu, cpu = det.predict_proba(users), load_detector(cnn_dir).predict_proba(users)
    assert abs(gpu - cpu).max() < 1e-4
    s = run_attack(demo, cnn_dir, "hotflip", out=tmp_path / "g", attack_params={"max_flips": 3},
                   max_users=24, quality=False, progress=False, device="cuda")
    c = run_attack(demo, cnn_dir, "hotflip", out=tmp_path / "c", attack_params={"max_flips": 3},
                   max_users=24, quality=False, progress=False)
    assert abs(s["evasion_rate"] - c["evasion_rate"]) * s["n_eligible"] <= 1 + 1e-9
    assert json.loads((tmp_path / "g" / "run.json").read_text())["device"] == "cuda"
