"""K written posts on a real dataset: evasion after each k for every attack, white-box and
transfer, next to the K-post ceiling. Writes bench/results/multipost-<dataset>.{json,md}.

    python bench/bench_multipost.py                          # wiki, hlstm, K = 4, every attack
    python bench/bench_multipost.py --dataset pan19-bots-en --detector cnn
    python bench/bench_multipost.py --attacks hotflip petgen --modes white-box --posts 4 8
    python bench/bench_multipost.py --ceiling 1 2 4          # add the K-post ceilings
    python bench/bench_multipost.py --cost hotflip petgen    # and their K = 1 runs (cost ratio)
    ADVSEQ_DATA=data python bench/bench_multipost.py --dataset demo   # the bundled demo data

Each row is one `advseq attack --posts K` run folder under --work (reused when it holds a
summary, resumed when it was killed); a K run gives evasion after every k <= K. For a
sequential attack its first k values are the k run's (post k is written the same way
whatever K is); UniTrigger searches its K slot triggers together, and HotFlip's joint
search edits earlier posts with later ones in view, so theirs may differ. The deployed detector
and the transfer surrogate (the same detector type, trained with seed 1000) are trained
once into --work. TextBugger has no gradient: it runs once, in score mode (200 queries).
Speed is measured here, never in a test. The generated tables replace the top of the .md;
whatever follows a line ``<!-- notes -->`` in it (findings written by hand) is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from bench_attacks import fmt  # bench/ is on sys.path when run as a script

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
ATTACKS = ["copycat", "hotflip", "unitrigger", "textbugger", "lm-generic", "malcom", "petgen"]
#: attacks with no gradient: they run once, in score mode with this query budget, whatever --modes says
SCORE_ONLY = {"textbugger": 200}
QUALITY = ["bleu_2", "perplexity_judge", "perplexity_ref", "topic_sim_context", "copy_exact"]
NOTES = "<!-- notes -->"


def _data(name: str) -> Path:
    root = Path(os.environ.get("ADVSEQ_DATA", REPO.parent / "shared" / "data"))
    path = root / name
    if not path.exists():
        sys.exit(f"{path} not found: set ADVSEQ_DATA to the folder holding {name}")
    return path


def _advseq(*args: str, log: Path) -> None:
    cmd = [sys.executable, "-m", "advseq", *args, "--no-progress"]
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc:
        sys.exit(f"{' '.join(cmd)} failed ({rc}); see {log}")


def _trained(data: Path, detector: str, folder: Path, seed: int) -> Path:
    if not (folder / "config.json").exists():
        _advseq("train", str(data), "-d", detector, "--seed", str(seed), "-o", str(folder),
                log=folder.with_suffix(".log"))
    return folder


def run_rows(args: argparse.Namespace, work: Path) -> list[dict]:
    data = _data(args.dataset)
    deployed = _trained(data, args.detector, work / args.detector, 0)
    surrogate = _trained(data, args.detector, work / "surrogate", 1000) if "transfer" in args.modes else None
    rows = []
    for atk in args.attacks:
        modes = ["score"] if atk in SCORE_ONLY else args.modes
        for mode in modes:
            for K in sorted({*args.posts, *([1] if atk in args.cost else [])}):
                out = work / f"{atk}-{mode}-k{K}"
                if not (out / "summary.json").exists():
                    extra = ["--surrogate", str(surrogate)] if mode == "transfer" else []
                    if atk in SCORE_ONLY:
                        extra += ["--budget", str(SCORE_ONLY[atk])]
                    _advseq("attack", str(data), "-d", str(deployed), "-a", atk, "--mode", mode,
                            "--posts", str(K), "-o", str(out), "--resume",
                            *(["--max-users", str(args.max_users)] if args.max_users else []),
                            *(["--no-quality"] if args.no_quality else []), *extra,
                            log=out.with_suffix(".log"))
                rows.append(row(out))
    return rows


def row(out: Path) -> dict:
    s = json.loads((out / "summary.json").read_text())
    by_k = s.get("evasion_by_k") or [s["evasion_rate"]]
    q = s.get("quality", {}).get("attack", {}) if isinstance(s.get("quality"), dict) else {}
    return {"attack": s["attack"], "mode": s["mode"], "posts": s.get("posts", 1), "evasion_by_k": by_k,
            "posts_to_evade_median": s.get("posts_to_evade_median"),
            "not_in_K": (s.get("posts_to_evade_hist") or {}).get("none"),
            "queries_mean": s.get("queries_mean"), "distinct_violations": s.get("distinct_violations"),
            "copy_near": q.get("copy_near"),
            "attack_seconds": s.get("attack_seconds"), "prepare_seconds": s.get("prepare_seconds"),
            **{k: q.get(k) for k in QUALITY}, "n_eligible": s["n_eligible"]}


def ceilings(args: argparse.Namespace, work: Path) -> list[dict]:
    data, out = _data(args.dataset), []
    for k in args.ceiling:
        folder = work / f"ceiling-k{k}"
        if not (folder / "ceiling.json").exists():
            _advseq("ceiling", str(data), "-d", str(work / args.detector), "--posts", str(k),
                    "-o", str(folder), log=folder.with_suffix(".log"))
        c = json.loads((folder / "ceiling.json").read_text())
        out.append({"posts": k, "relaxed_rate": c["relaxed_rate"], "token_rate": c["token_rate"],
                    "seconds": c["seconds"]})
    return out


def render(args: argparse.Namespace, rows: list[dict], ceil: list[dict]) -> str:
    K = max([r["posts"] for r in rows] + [1])
    ks = list(range(1, K + 1))
    lines = [f"# K written posts: {args.dataset}, `{args.detector}` deployed", "",
             f"Generated by `python bench/bench_multipost.py {' '.join(sys.argv[1:])}` on "
             f"{platform.machine()} ({os.cpu_count()} CPUs); seed-0 split; goal evasion, placement "
             "append; sequential strategy (each post written with the earlier ones in the history). "
             "Evasion after k = share of the correctly detected malicious test users judged benign "
             "after the attacker's first k posts.", ""]
    if ceil:
        lines += ["| K | relaxed ceiling | token ceiling | seconds |", "| --- | --- | --- | --- |"]
        lines += [f"| {c['posts']} | {fmt(c['relaxed_rate'])} | {fmt(c['token_rate'])} | "
                  f"{fmt(c['seconds'])} |" for c in ceil]
        lines.append("")
    head = ["attack", "mode", "K", *[f"k={k}" for k in ks], "median posts", "not in K", "queries",
            *QUALITY, "near copies", "not distinct", "attack s", "× K=1 time"]
    one_post = {(r["attack"], r["mode"]): r["attack_seconds"] for r in rows if r["posts"] == 1}
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        by_k = [r["evasion_by_k"][k - 1] if k <= len(r["evasion_by_k"]) else None for k in ks]
        base = one_post.get((r["attack"], r["mode"])) if r["posts"] > 1 else None
        ratio = r["attack_seconds"] / base if base and r["attack_seconds"] is not None else None
        cells = [r["attack"], r["mode"], r["posts"], *by_k, r["posts_to_evade_median"], r["not_in_K"],
                 r["queries_mean"], *[r[q] for q in QUALITY], r["copy_near"], r["distinct_violations"],
                 r["attack_seconds"], ratio]
        lines.append("| " + " | ".join(fmt(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="wiki")
    ap.add_argument("--detector", default="hlstm")
    ap.add_argument("--attacks", nargs="+", default=ATTACKS)
    ap.add_argument("--modes", nargs="+", default=["white-box", "transfer"])
    ap.add_argument("--posts", type=int, nargs="+", default=[4], help="K values (each a row per attack and mode)")
    ap.add_argument("--ceiling", type=int, nargs="*", default=[], help="K values of the ceiling")
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--max-users", type=int, default=None, help="attack only the first N test users")
    ap.add_argument("--cost", nargs="*", default=[], metavar="ATTACK",
                    help="also run these attacks at K = 1: the table gives K's attack time as a multiple of it")
    ap.add_argument("--work", default=None, help="folder of the runs (default runs/bench-multipost-DATASET)")
    args = ap.parse_args()
    work = Path(args.work or REPO / "runs" / f"bench-multipost-{args.dataset}")
    work.mkdir(parents=True, exist_ok=True)
    rows = run_rows(args, work)
    ceil = ceilings(args, work)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"multipost-{args.dataset}"
    stem.with_suffix(".json").write_text(json.dumps({"rows": rows, "ceilings": ceil}, indent=1) + "\n")
    md = stem.with_suffix(".md")
    _, marker, notes = (md.read_text() if md.exists() else "").partition(NOTES)
    md.write_text(render(args, rows, ceil) + (f"\n{marker}{notes}" if marker else ""))
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
