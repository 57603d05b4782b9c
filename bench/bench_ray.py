"""Local executor vs Ray: wall time of whole matrices, and Ray's overhead per unit.

For each config: ``advseq run CONFIG`` with the local executor, then with ``--executor ray
--workers N`` (a local Ray), each into its own fresh run folder with its own empty
``$ADVSEQ_HOME`` (so both start cold), in one invocation; prints both wall times, their
ratio and whether every summary value agrees (timings left out; a Ray task uses one
torch thread per CPU it asks for, the local run torch's default, so probabilities can
differ in the last digits). Then Ray's scheduling overhead: ``ray.init`` and the latency
of a unit's empty task (a chain of dependent tasks, as a matrix's units are, and a burst
of independent ones), submitted with the executor's options. Writes
``bench/results/ray-<names>.md``.

    python bench/bench_ray.py                                   # configs/demo.toml, 2 workers
    python bench/bench_ray.py --config configs/demo.toml --config configs/wiki.toml
    python bench/bench_ray.py --max-users 40 --no-matrix        # small, or only the overhead
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TIMING = ("seconds", "_per_second", "created")


def _numbers(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a summary, timing keys left out."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if not any(t in k for t in TIMING):
                out.update(_numbers(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_numbers(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): obj}


def _summaries(run: Path) -> dict[str, dict[str, Any]]:
    return {str(p.parent.relative_to(run)): _numbers(json.loads(p.read_text()))
            for p in sorted(run.glob("attacks/**/summary.json"))}


def _config(config: Path, max_users: int | None, tmp: Path) -> Path:
    """``config``, or a copy with ``[run] max_users`` set (relative paths kept working)."""
    if not max_users:
        return config.resolve()
    text = config.read_text()
    raw = tomllib.loads(text)
    if "max_users" in raw.get("run", {}):
        raise SystemExit(f"{config}: sets max_users itself; run without --max-users")
    text = text.replace("[run]", f"[run]\nmax_users = {max_users}", 1)
    copy = config.resolve().parent / f".bench-ray-{os.getpid()}-{config.name}"
    copy.write_text(text)
    return copy


def run_matrix(config: Path, executor: list[str], tmp: Path, tag: str) -> tuple[float, Path, int]:
    out, home = tmp / f"{tag}-run", tmp / f"{tag}-home"
    env = {**os.environ, "ADVSEQ_HOME": str(home)}
    cmd = [sys.executable, "-m", "advseq", "run", str(config), "--out", str(out), "--no-report",
           "--no-progress", *executor]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    index = json.loads((out / "index.json").read_text())
    return seconds, out, len(index["units"])


def overhead(workers: int, n: int) -> dict[str, float]:
    """Ray's cost per unit: init, a chain of ``n`` dependent empty tasks, a burst of ``n``."""
    import ray

    from advseq.executors.ray_exec import MAX_RETRIES

    t = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, logging_level="warning", log_to_driver=False)
    init = time.perf_counter() - t

    def empty(*_deps: Any) -> dict[str, float]:
        return {"start": time.time()}

    task = ray.remote(empty).options(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=True)
    ray.get([task.remote() for _ in range(workers)])           # workers started
    t = time.perf_counter()
    ref = task.remote()
    for _ in range(n - 1):
        ref = task.remote(ref)
    ray.get(ref)
    chain = (time.perf_counter() - t) / n
    t = time.perf_counter()
    ray.get([task.remote() for _ in range(n)])
    burst = (time.perf_counter() - t) / n
    ray.shutdown()
    return {"init_s": init, "chained_task_ms": chain * 1000, "burst_task_ms": burst * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", type=Path, help="Run config (repeatable; default configs/demo.toml).")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-users", type=int, default=None, help="Attack only this many test users (smaller runs).")
    ap.add_argument("--tasks", type=int, default=200, help="Empty tasks for the overhead figures.")
    ap.add_argument("--no-matrix", action="store_true", help="Only the overhead figures.")
    args = ap.parse_args()
    configs = args.config or [ROOT / "configs" / "demo.toml"]
    lines = [f"# Local executor vs Ray ({args.workers} workers)", "",
             f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
             f"{time.strftime('%Y-%m-%d')}" + (f", max_users = {args.max_users}" if args.max_users else ""), ""]
    per_unit: dict[str, float] = {}
    if not args.no_matrix:
        lines += ["| config | units | local s | ray s | ray / local | summaries |", "|---|---|---|---|---|---|"]
        for config in configs:
            with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp_name:
                tmp = Path(tmp_name)
                cfg = _config(config, args.max_users, tmp)
                try:
                    local_s, local_run, units = run_matrix(cfg, [], tmp, "local")
                    ray_s, ray_run, _ = run_matrix(cfg, ["--executor", "ray", "--workers", str(args.workers)],
                                                   tmp, "ray")
                finally:
                    if cfg != config.resolve():
                        cfg.unlink()
                a, b = _summaries(local_run), _summaries(ray_run)
                differ = sum(a[u].get(k) != v for u in a for k, v in b.get(u, {}).items())
                same = "identical" if a == b else f"{differ} values differ" if a.keys() == b.keys() else "units differ"
                per_unit[config.stem] = units
                lines.append(f"| {config.stem} | {units} | {local_s:.1f} | {ray_s:.1f} | {ray_s / local_s:.2f} | {same} |")
                print(lines[-1], flush=True)
        lines.append("")
    o = overhead(args.workers, args.tasks)
    lines += ["| Ray overhead | value |", "|---|---|",
              f"| ray.init (local, {args.workers} CPUs) | {o['init_s']:.2f} s |",
              f"| one unit's task, chained after its dependency | {o['chained_task_ms']:.2f} ms |",
              f"| one task of an independent burst | {o['burst_task_ms']:.2f} ms |"]
    for name, units in per_unit.items():
        lines.append(f"| {name}: init + {units} chained units | "
                     f"{o['init_s'] + units * o['chained_task_ms'] / 1000:.2f} s |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    names = "overhead" if args.no_matrix else "-".join(c.stem for c in configs)
    (RESULTS / f"ray-{names}.md").write_text(text)


if __name__ == "__main__":
    main()
