"""Detector queries with and without the history cache (advseq.history_cache), side by
side in one process: the same white-box attack on the same users, the cache switched off
then on (alternating, ``--repeats`` times each), posts/s and queries/s of each and their
ratio. Writes bench/results/queries-<dataset>.md.

    python bench/bench_queries.py                     # wiki, the hlstm in --detector, HotFlip, K = 1
    python bench/bench_queries.py --detector /tmp/h --attack unitrigger --repeats 1

The detector folder is trained beforehand (``advseq train ../shared/data/wiki -d hlstm
--seed 0 -o /tmp/h``); its recorded split gives the test users. Users are attacked in
batches of ``--batch-size`` test users as ``advseq attack`` does (its malicious users
under the evasion goal), with one threat model per run, so the cache lives across the
batches of a run as it does in an attack run. The written posts and the deployed
detector's verdicts are compared between the two settings. Speed is measured here, never
in a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def run_once(det, attack: str, params: dict, split, spec, batch_size: int, on: bool, train) -> dict:
    from contextlib import nullcontext

    from advseq.attack import create_attack
    from advseq.threat import ThreatModel

    try:
        from advseq.history_cache import switched
    except ImportError:                                   # code from before the cache (--label)
        switched = None
    with switched(on) if switched else nullcontext():
        det.__dict__.pop("_history_cache", None)          # every run starts cold
        threat = ThreatModel(det, "white-box")
        atk = create_attack(attack, **params)
        atk.prepare(train, threat, spec)
        test = list(split.test)
        posts, seconds, cpu = {}, 0.0, 0.0
        for s in range(0, len(test), batch_size):
            tasks = [spec.task(u) for u in test[s:s + batch_size] if spec.targets(u)]
            if not tasks:
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            outs = atk.run(tasks, threat)
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
            posts.update({t.user_id: o.post for t, o in zip(tasks, outs, strict=True)})
        cache = det.__dict__.get("_history_cache")
        stats = {"encoded": cache.encoded, "reused": cache.reused} if on and cache else {}
    users = {u.user_id: u for u in test}
    attacked = [spec.task(users[uid]).with_post(p) for uid, p in posts.items()]
    after = det.predict_proba(attacked)              # the deployed verdict, outside any cache
    clean = dict(zip([u.user_id for u in test], det.predict_proba(test), strict=True))
    detected = [uid for uid in posts if clean[uid] >= 0.5]
    evaded = sum(1 for uid, p in zip(posts, after, strict=True) if uid in detected and p < 0.5)
    return {"cache": on, "posts": len(posts), "seconds": seconds, "cpu": cpu, "queries": threat.total_queries,
            "posts_per_s": len(posts) / seconds, "queries_per_s": threat.total_queries / seconds,
            "evasion": evaded / max(1, len(detected)), "written": posts,
            "after": dict(zip(posts, after.tolist(), strict=True)), **stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="wiki")
    ap.add_argument("--detector", default=None, help="trained detector folder (default: /work/bench-wiki/hlstm "
                    "if it exists, else /tmp/h)")
    ap.add_argument("--attack", default="hotflip")
    ap.add_argument("--params", default="{}", help="attack parameters as JSON")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--max-users", type=int, default=0, help="first N test users only (0: all)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from advseq.attack import AttackSpec
    from advseq.detector import load_detector
    from advseq.io import load_dataset
    from advseq.paths import shared_dataset
    from advseq.training import recorded_split

    if args.threads:
        torch.set_num_threads(args.threads)
    data_path = shared_dataset(args.dataset)
    if data_path is None:
        sys.exit(f"dataset {args.dataset!r} not found under ../shared/data or $ADVSEQ_DATA")
    det_dir = Path(args.detector or next((p for p in ("/work/bench-wiki/hlstm", "/tmp/h")
                                          if Path(p, "config.json").exists()), "/tmp/h"))
    data = load_dataset(data_path)
    det = load_detector(det_dir)
    split = recorded_split(det_dir, data)
    if split is None:
        sys.exit(f"{det_dir}: no recorded split for {data_path}")
    if args.max_users:
        split.test = split.test.subset(split.test.user_ids[: args.max_users])
    spec = AttackSpec()
    params = json.loads(args.params)
    runs = []
    for _ in range(args.repeats):
        for on in (False, True):
            r = run_once(det, args.attack, params, split, spec, args.batch_size, on, split.train)
            print(f"cache {'on ' if on else 'off'}: {r['posts']} posts in {r['seconds']:.1f} s, "
                  f"CPU {r['cpu']:.1f} s, {r['posts_per_s']:.2f} posts/s, {r['queries_per_s']:.0f} queries/s, "
                  f"evasion {r['evasion']:.3f}", flush=True)
            runs.append(r)
    off = [r for r in runs if not r["cache"]]
    on_ = [r for r in runs if r["cache"]]
    same_posts = sum(off[0]["written"][u] == on_[0]["written"][u] for u in off[0]["written"])
    max_dp = max(abs(off[0]["after"][u] - on_[0]["after"][u]) for u in off[0]["after"])
    best = {k: min(r["seconds"] for r in rs) for k, rs in (("off", off), ("on", on_))}
    best_cpu = {k: min(r["cpu"] for r in rs) for k, rs in (("off", off), ("on", on_))}
    out = Path(args.out or RESULTS / f"queries-{args.dataset}.md")
    lines = [
        f"# Detector queries with and without the history cache: {args.dataset}, `{det.name}`, "
        f"{args.attack} white-box, K = 1",
        "",
        f"Generated by `python bench/bench_queries.py {' '.join(sys.argv[1:])}` on {platform.machine()} "
        f"({os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; the machine was shared with "
        "other jobs, so read the ratio). One process, the same attack on the same "
        f"{len(off[0]['written'])} users (test users in batches of {args.batch_size}, the malicious ones "
        f"attacked), cache off then on, {args.repeats} times; attack time only (no preparation, no "
        "deployed scoring); CPU = the process's CPU seconds (all threads), which other jobs on the "
        "machine disturb far less than wall time. Detector folder: `" + str(det_dir) + "`.",
        "",
        "| cache | run | posts | seconds | CPU s | posts/s | queries | queries/s | evasion | posts encoded / reused |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(runs):
        enc = f"{r['encoded']} / {r['reused']}" if r.get("encoded") is not None else ""
        lines.append(f"| {'on' if r['cache'] else 'off'} | {i // 2 + 1} | {r['posts']} | {r['seconds']:.2f} | {r['cpu']:.2f} | "
                     f"{r['posts_per_s']:.2f} | {r['queries']} | {r['queries_per_s']:.0f} | {r['evasion']:.3f} | {enc} |")
    lines += [
        "",
        f"Speed-up (best run off / best run on): **{best['off'] / best['on']:.1f}x** "
        f"({best['off']:.2f} s -> {best['on']:.2f} s); in CPU seconds **{best_cpu['off'] / best_cpu['on']:.1f}x** "
        f"({best_cpu['off']:.2f} s -> {best_cpu['on']:.2f} s).",
        f"Same written post with the cache off and on: {same_posts} of {len(off[0]['written'])} users; "
        f"largest change of the deployed detector's probability after the attack: {max_dp:.2e}; "
        f"queries {off[0]['queries']} off, {on_[0]['queries']} on.",
        "",
    ]
    out.write_text("\n".join(lines))
    print(out.read_text())


if __name__ == "__main__":
    main()
