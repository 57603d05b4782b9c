"""How advseq's costs grow with the number of users: simulated platforms of 1k, 10k and
100k users (``advseq data simulate``), each stage a CLI command in its own process, its
wall time and peak memory (the process's maximum resident set, from ``wait4``), and the
fitted growth exponent of time against users per stage. Writes bench/results/scale.md
and scale.json.

    python bench/bench_scale.py                                   # 1k, 10k, 100k, every stage
    python bench/bench_scale.py --sizes 1000,10000 --stages load,info,train-cnn
    python bench/bench_scale.py --sizes 100000 --merge            # add rows to the last results

Stages (every one loads the dataset from its JSON Lines file, as the CLI does):
``load`` (``data validate``: parse + validate), ``info`` (``data info --json``, shortcut
audit included), ``train-tfidf-lr`` (one fit), ``train-cnn`` and ``train-hlstm`` (``train
--epochs 1``: split, vocabulary, one epoch, validation, test scores, saving), and
``attack-hotflip`` / ``attack-petgen`` (``attack --max-users N --no-quality`` against the
one-epoch cnn, white-box, K = 1, evasion goal: the malicious ones are attacked). The
attacks take the same number of test users at every platform size (``--attack-users``,
1000; all of them where the test split is smaller), so their growth is that of what
does not depend on the users attacked: loading the platform, the data checksum, and for
PETGEN the generator's training on the whole training split (its MLE pre-training and
selection read every training user). PETGEN runs with the demo config's settings
(``adv_steps=20 rounds=1 candidates=16``).

The exponent is the least-squares slope of log(seconds) on log(users) over the sizes
measured, of wall time and of CPU time (user + system: steadier on a shared machine);
the "local" exponent is the slope between the two largest sizes, where fixed start-up
costs (imports, model loading) weigh least. ``--threads 1`` pins torch/BLAS to one
thread per stage, which keeps a loaded machine's cores from being oversubscribed and
CPU time comparable across stages. A stage that runs past
``--stage-timeout`` is stopped and reported as such, with no time. Caches live in
``WORK/home`` (ADVSEQ_HOME), emptied at the start of a run unless ``--keep-cache``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
STAGES = ("load", "info", "train-tfidf-lr", "train-cnn", "train-hlstm", "attack-hotflip",
          "attack-petgen")
PETGEN_PARAMS = ("adv_steps=20", "rounds=1", "candidates=16")   # configs/demo.toml
EXPONENT_TARGET = 1.1
MEMORY_TARGET_GB = 8.0
MEMORY_STAGES = ("load", "train-cnn")                           # within 8 GB at 100k users


def stage_command(stage: str, data: Path, work: Path, seed: int, attack_users: int) -> list[str]:
    cli = [sys.executable, "-m", "advseq"]
    if stage == "load":
        return [*cli, "data", "validate", str(data)]
    if stage == "info":
        return [*cli, "data", "info", str(data), "--json", "--seed", str(seed)]
    if stage.startswith("train-"):
        det = stage.removeprefix("train-")
        epochs = [] if det == "tfidf-lr" else ["--epochs", "1"]
        return [*cli, "train", str(data), "-d", det, "-o", str(work / "models" / det),
                "--seed", str(seed), *epochs, "--overwrite", "--no-progress"]
    attack = stage.removeprefix("attack-")
    params = [a for p in PETGEN_PARAMS for a in ("-p", p)] if attack == "petgen" else []
    return [*cli, "attack", str(data), "-d", str(work / "models" / "cnn"), "-a", attack,
            "-o", str(work / "attacks" / attack), "--max-users", str(attack_users),
            "--seed", str(seed), "--no-quality", "--no-progress", *params]


def run_measured(cmd: list[str], env: dict[str, str], log: Path,
                 timeout: float | None) -> dict:
    """Run ``cmd`` in its own process group; wall seconds, peak RSS (MB, the process and
    the children it waited for) and exit status."""
    with open(log, "w", encoding="utf-8") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                cwd=REPO, start_new_session=True)
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, stop) if timeout else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:                  # interrupted: the stage goes with the bench
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        wall = time.perf_counter() - t0
        if timer:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "rc": proc.returncode, "timed_out": timed_out.is_set()}


def simulate(n: int, seed: int, work: Path, env: dict[str, str]) -> tuple[Path, dict | None]:
    """The platform of ``n`` users and its simulation's measurement (made once per seed
    and size, then reused with the measurement recorded beside it)."""
    folder = work / f"users-{n}-seed{seed}"
    data, record = folder / "users.jsonl", folder / "simulate.json"
    if data.is_file() and record.is_file():
        return data, json.loads(record.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "advseq", "data", "simulate", "-n", str(n), "--seed", str(seed),
           "-o", str(data), "--no-card"]
    m = run_measured(cmd, env, folder / "simulate.log", None)
    if m["rc"] != 0:
        sys.exit(f"simulating {n} users failed; see {folder / 'simulate.log'}")
    m["file_mb"] = round(data.stat().st_size / 2**20, 1)
    m["load_start"] = round(os.getloadavg()[0], 2)
    record.write_text(json.dumps(m) + "\n")
    return data, m


def fit_exponent(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(seconds) on log(users)."""
    pts = [(math.log(n), math.log(s)) for n, s in points if s and s > 0]
    if len(pts) < 2 or len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return round(sum((x - mx) * (y - my) for x, y in pts) / sxx, 3)


def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines()
                   if x.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem = 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": cores, "memory_gb": round(mem / 2**20, 1),
            "python": sys.version.split()[0]}


def analyse(rows: list[dict]) -> dict:
    """Per stage: the exponents and whether each target is met."""
    out = {}
    for stage in STAGES:
        done = sorted((r for r in rows if r["stage"] == stage and r["rc"] == 0
                       and not r["timed_out"]), key=lambda r: r["users"])
        if not done:
            continue
        ok = [(r["users"], r["seconds"]) for r in done]
        cpu = [(r["users"], r["cpu_seconds"]) for r in done]
        exp = fit_exponent(ok)
        entry = {"sizes": [n for n, _ in ok], "exponent": exp,
                 "local_exponent": fit_exponent(ok[-2:]), "cpu_exponent": fit_exponent(cpu),
                 "cpu_local_exponent": fit_exponent(cpu[-2:]),
                 "exponent_ok": None if exp is None else exp <= EXPONENT_TARGET}
        entry["cpu_exponent_ok"] = None if entry["cpu_exponent"] is None else \
            entry["cpu_exponent"] <= EXPONENT_TARGET
        largest = max(r["users"] for r in rows)
        slope = entry["local_exponent"]
        if ok[-1][0] < largest and slope is not None:
            # not measured at the largest size: the local slope carried on, labelled as such
            n, t = ok[-1]
            entry["extrapolated"] = {"users": largest, "from_users": n, "exponent": slope,
                                     "seconds": round(t * (largest / n) ** slope)}
        if stage in MEMORY_STAGES:
            big = [r for r in rows if r["stage"] == stage and r["users"] >= 100_000 and r["rc"] == 0]
            if big:
                peak = max(r["peak_rss_mb"] for r in big) / 1024
                entry["memory_100k_gb"] = round(peak, 2)
                entry["memory_ok"] = peak <= MEMORY_TARGET_GB
        out[stage] = entry
    return out


def write_report(res: dict, path: Path) -> None:
    path.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    m, lines = res["machine"], []
    lines += ["# Scaling: cost against the number of users", "",
              "Made by `bench/bench_scale.py` (its docstring says what each stage runs).", "",
              "Commands:", ""]
    lines += [f"    {c}" for c in res["commands"]]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; Python "
              f"{m['python']}; OMP/MKL threads per stage: {m['threads']}; shared with other jobs, so each row gives the 1-minute load "
              "average at its start.", ""]
    for run in res["runs"]:
        lines.append(f"- run {run['started']}: load average {run['load_start']} at start, "
                     f"{run['load_end']} at end")
    if res.get("simulate"):
        lines += ["", "| users | simulate s | peak MB | file MB |", "|---:|---:|---:|---:|"]
        for n, s in sorted(res["simulate"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {int(n):,} | {s['seconds']} | {s['peak_rss_mb']} | {s['file_mb']} |")
    lines += ["", "| stage | users | wall s | CPU s | peak RSS MB | load avg | status |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for r in sorted(res["rows"], key=lambda r: (STAGES.index(r["stage"]), r["users"])):
        status = ("timed out" if r["timed_out"] else "ok" if r["rc"] == 0 else f"exit {r['rc']}")
        note = f" ({r['note']})" if r.get("note") else ""
        secs = "-" if r["timed_out"] else r["seconds"]
        lines.append(f"| {r['stage']} | {r['users']:,} | {secs} | {r['cpu_seconds']} | "
                     f"{r['peak_rss_mb']} | {r['load_start']} | {status}{note} |")
    lines += ["", f"Targets: exponent <= {EXPONENT_TARGET} for every stage; at 100k users "
              f"`load` and `train-cnn` within {MEMORY_TARGET_GB:g} GB.", "",
              "| stage | sizes | exponent (wall) | local (wall) | exponent (CPU) | local (CPU) "
              "| exponent target | memory at 100k |",
              "|---|---|---:|---:|---:|---:|---|---|"]
    for stage, a in res["analysis"].items():
        sizes = ", ".join(f"{n:,}" for n in a["sizes"])
        target = "-" if a["exponent_ok"] is None else \
            " / ".join(f"{what} {'met' if a[key] else 'NOT met'}"
                       for what, key in (("wall", "exponent_ok"), ("CPU", "cpu_exponent_ok")))
        mem = "-"
        if "memory_100k_gb" in a:
            mem = f"{a['memory_100k_gb']} GB ({'met' if a['memory_ok'] else 'NOT met'})"
        lines.append(f"| {stage} | {sizes} | {a['exponent']} | {a['local_exponent']} | "
                     f"{a['cpu_exponent']} | {a['cpu_local_exponent']} | {target} | {mem} |")
    extra = [(st, a["extrapolated"]) for st, a in res["analysis"].items() if "extrapolated" in a]
    if extra:
        lines += ["", "Extrapolated, not measured (the local wall exponent carried on from the "
                  "largest size measured):", ""]
        lines += [f"- {st}: about {e['seconds']:,} s at {e['users']:,} users (from "
                  f"{e['from_users']:,} users, exponent {e['exponent']})" for st, e in extra]
    if res.get("notes"):
        lines += ["", *res["notes"]]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="comma-separated user counts")
    ap.add_argument("--stages", default=",".join(STAGES),
                    help=f"comma-separated, of {', '.join(STAGES)} (simulate alone: only make the data)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/advseq-scale"), help="data, models, caches")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attack-users", type=int, default=1000)
    ap.add_argument("--stage-timeout", type=float, default=None, help="seconds; stop a stage past it")
    ap.add_argument("--out", type=Path, default=RESULTS / "scale", help="results stem (.md, .json)")
    ap.add_argument("--merge", action="store_true", help="add to (replace rows of) the results in --out")
    ap.add_argument("--keep-cache", action="store_true", help="keep WORK/home (warm caches)")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP/MKL threads of every stage (default: unset, torch's own choice)")
    ap.add_argument("--render-only", action="store_true",
                    help="only write --out's .md again from its .json (e.g. after adding notes)")
    args = ap.parse_args(argv)
    if args.render_only:
        res = json.loads(args.out.with_suffix(".json").read_text())
        res["analysis"] = analyse(res["rows"])
        write_report(res, args.out)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench_scale: terminated"))
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    stages = [s.strip() for s in args.stages.split(",") if s.strip() not in ("", "simulate")]
    bad = [s for s in stages if s not in STAGES]
    if bad or not sizes or min(sizes) < 4:
        sys.exit(f"--stages: unknown {bad}" if bad else "--sizes: give user counts >= 4")
    work = args.work.resolve()
    home = work / "home"
    if not args.keep_cache:
        shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ADVSEQ_HOME": str(home), "PYTHONPATH": str(REPO),
           "PYTHONHASHSEED": "0"}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    previous = json.loads(args.out.with_suffix(".json").read_text()) \
        if args.merge and args.out.with_suffix(".json").is_file() else None
    res = previous or {"rows": [], "runs": [], "commands": [], "simulate": {}}
    res["machine"] = {**machine(), "threads": args.threads or "default"}
    res["commands"].append(" ".join(shlex.quote(a) for a in
                                    ["python", "bench/bench_scale.py", *(argv or sys.argv[1:])]))
    run = {"started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
           "load_start": round(os.getloadavg()[0], 2)}
    res["runs"].append(run)
    for n in sizes:
        data, sim = simulate(n, args.seed, work, env)
        if sim:
            res["simulate"][str(n)] = sim
        size_work = data.parent
        for stage in stages:
            if stage.startswith("attack-"):
                shutil.rmtree(size_work / "attacks" / stage.removeprefix("attack-"), ignore_errors=True)
            if stage.startswith("attack-") and not (size_work / "models" / "cnn" / "split.json").is_file():
                print(f"{n} users, {stage}: needs train-cnn first; skipped", flush=True)
                continue
            cmd = stage_command(stage, data, size_work, args.seed, args.attack_users)
            load = round(os.getloadavg()[0], 2)
            m = run_measured(cmd, env, size_work / f"{stage}.log", args.stage_timeout)
            row = {"stage": stage, "users": n, "load_start": load, **m,
                   "command": " ".join(shlex.quote(a) for a in ["advseq", *cmd[3:]])}
            if stage.startswith("attack-"):
                row["note"] = f"{min(args.attack_users, _n_test(size_work))} users attacked"
            res["rows"] = [r for r in res["rows"] if (r["stage"], r["users"]) != (stage, n)] + [row]
            print(f"{n:>7} users  {stage:<15} {m['seconds']:>9.1f} s  {m['peak_rss_mb']:>8.0f} MB"
                  f"  rc={m['rc']}{' TIMEOUT' if m['timed_out'] else ''}", flush=True)
            run["load_end"] = round(os.getloadavg()[0], 2)
            res["analysis"] = analyse(res["rows"])
            write_report(res, args.out)
    run["load_end"] = round(os.getloadavg()[0], 2)
    res["analysis"] = analyse(res["rows"])
    write_report(res, args.out)
    print(f"wrote {args.out.with_suffix('.md')}")


def _n_test(size_work: Path) -> int:
    try:
        return len(json.loads((size_work / "models" / "cnn" / "split.json").read_text())["test_ids"])
    except (OSError, ValueError, KeyError):
        return 0


if __name__ == "__main__":
    main()
