"""Cold twice: does the whole demo give the same numbers on two fresh machines?

Runs `advseq demo` twice, each into its own run folder with its own empty
ADVSEQ_HOME (so every detector, reference LM, PETGEN pre-training, judge and
embedding cache is rebuilt from nothing), then compares the two runs: every
number in every attack summary, detector metrics, ceiling and retraining record
(timings left out), and every post every attack wrote. Writes
bench/results/repro-demo.md and exits 1 if anything differs.

    python bench/bench_repro.py                 # two cold demos (~25 min on 2 cores)
    python bench/bench_repro.py --compare A B   # compare two finished run folders
    python bench/bench_repro.py --lm ../shared/data/wiki   # the reference LM of a real
        # dataset (its sampled softmax, which the demo's small vocabulary never uses),
        # trained twice on fresh homes: are the weights the same bits?
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
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# Keys whose values are wall-clock facts or paths, not results (besides every key ending
# in one of TIMING_SUFFIXES).
SKIP = {"seconds", "created", "command", "out", "path", "git", "host", "python", "elapsed"}
TIMING_SUFFIXES = ("_seconds", "_per_second", "_s")
NUMBERED = ("summary.json", "metrics.json", "ceiling.json", "retrain.json", "rounds.json")


def _leaves(obj, prefix: str = ""):
    """(path, value) for every number/string/bool leaf, timing and path keys left out."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in SKIP or k.endswith(TIMING_SUFFIXES):
                continue
            yield from _leaves(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def _posts(path: Path) -> dict[str, str | None]:
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out[rec["user_id"]] = rec.get("post")
    return out


def compare(a: Path, b: Path) -> tuple[int, int, list[str]]:
    """(files compared, values compared, differences) between two run folders."""
    diffs: list[str] = []
    files = values = 0
    for fa in sorted(p for p in a.rglob("*") if p.is_file()):
        rel = fa.relative_to(a)
        fb = b / rel
        if fa.name in NUMBERED or fa.name == "results.jsonl":
            if not fb.exists():
                diffs.append(f"{rel}: missing in {b}")
                continue
            files += 1
        if fa.name in NUMBERED:
            la = dict(_leaves(json.loads(fa.read_text())))
            lb = dict(_leaves(json.loads(fb.read_text())))
            for key in sorted(set(la) | set(lb)):
                values += 1
                if la.get(key) != lb.get(key):
                    diffs.append(f"{rel}: {key}: {la.get(key)!r} != {lb.get(key)!r}")
        elif fa.name == "results.jsonl":
            pa, pb = _posts(fa), _posts(fb)
            values += len(pa)
            changed = [u for u in sorted(set(pa) | set(pb)) if pa.get(u) != pb.get(u)]
            if changed:
                diffs.append(f"{rel}: {len(changed)} of {len(pa)} posts differ (first: {changed[0]})")
    return files, values, diffs


def run_demo(out: Path, home: Path) -> float:
    t0 = time.perf_counter()
    env = {**os.environ, "ADVSEQ_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "advseq", "demo", "--out", str(out), "--no-progress"],
                   env=env, check=True)
    return time.perf_counter() - t0


_LM_HASH = """
import hashlib, sys
from advseq.io import load_dataset
from advseq.lm import reference_lm
lm = reference_lm(load_dataset(sys.argv[1]).split(0.2, seed=0).train, progress=False)
h = hashlib.sha256()
for _, t in sorted(lm.model_.state_dict().items()):
    h.update(t.detach().cpu().numpy().tobytes())
print(h.hexdigest())
"""


def lm_twice(data: Path) -> list[str]:
    """Weights hash of the reference LM of ``data``'s seed-0 training split, trained in
    two fresh ADVSEQ_HOMEs."""
    out = []
    for _ in range(2):
        with tempfile.TemporaryDirectory(prefix="advseq-repro-lm-") as home:
            env = {**os.environ, "ADVSEQ_HOME": home}
            res = subprocess.run([sys.executable, "-c", _LM_HASH, str(data)], env=env, check=True,
                                 capture_output=True, text=True)
            out.append(res.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"),
                    help="compare two finished run folders instead of running the demo twice")
    ap.add_argument("--keep", action="store_true", help="keep the two run folders and homes")
    ap.add_argument("--md", type=Path, metavar="FILE",
                    help="with --compare: also write the comparison to FILE")
    ap.add_argument("--title", default="Cold twice: the demo on two fresh ADVSEQ_HOMEs",
                    help="the markdown heading")
    ap.add_argument("--lm", type=Path, metavar="DATA",
                    help="train DATA's reference LM twice on fresh homes and compare the weights")
    args = ap.parse_args()
    if args.lm:
        t0 = time.perf_counter()
        hashes = lm_twice(args.lm)
        same = hashes[0] == hashes[1]
        print(f"reference LM of {args.lm}: {hashes[0][:16]} / {hashes[1][:16]} -> "
              f"{'identical' if same else 'DIFFERENT'} ({(time.perf_counter() - t0) / 60:.1f} min)")
        sys.exit(0 if same else 1)
    timings: list[float] = []
    if args.compare:
        a, b = args.compare
    else:
        root = Path(tempfile.mkdtemp(prefix="advseq-repro-"))
        a, b = root / "run-a", root / "run-b"
        for run, home in ((a, root / "home-a"), (b, root / "home-b")):
            print(f"cold demo -> {run} (ADVSEQ_HOME={home})", flush=True)
            timings.append(run_demo(run, home))
    from advseq.manifest import cpu_model

    files, values, diffs = compare(a, b)
    what = (f"`python bench/bench_repro.py --compare {a} {b}` compares two finished run folders"
            if args.compare else "`python bench/bench_repro.py` runs `advseq demo` twice, each with "
            "an empty cache folder, and compares") + " every number (timings left out) and every written post."
    lines = [f"# {args.title}", "", what, "",
             f"- machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}), "
             f"Python {platform.python_version()}",
             f"- compared: {files} result files, {values} values and posts",
             *(f"- run {i + 1}: {t / 60:.1f} min" for i, t in enumerate(timings)),
             f"- differences: **{len(diffs)}**", ""]
    lines += [f"    {d}" for d in diffs[:50]]
    if len(diffs) > 50:
        lines.append(f"    ... and {len(diffs) - 50} more")
    text = "\n".join(lines).rstrip() + "\n"
    print(text)
    if args.compare and args.md:
        args.md.write_text(text)
    if not args.compare:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "repro-demo.md").write_text(text)
        if not args.keep:
            import shutil

            shutil.rmtree(a.parent, ignore_errors=True)
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
