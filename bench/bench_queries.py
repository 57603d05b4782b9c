"""Detector queries of a white-box attack by two query paths, side by side in one process:
the same attack on the same users, alternating (``--repeats`` times each), posts/s,
queries/s and CPU seconds of each and their ratio. Writes bench/results/queries-<dataset>.md.

``--compare cache`` (the history cache, advseq.history_cache, off then on),
``--compare fast`` (the default: the cache on, the faster query paths of
``ADVSEQ_FAST_QUERIES`` off then on — kept sequence state, token-id gradients, posts of
one length encoded together, larger scoring chunks) or ``--compare gates`` (everything
on, the hlstm's gate-table post encoder off then on) or ``--compare give-up`` (PETGEN:
refinement searching every start to the end, ``refine_give_up=0``, then the default).

    python bench/bench_queries.py --detector /tmp/h                   # HotFlip, K = 1
    python bench/bench_queries.py --detector /tmp/h --attack petgen   # end to end: generation,
                                                                       # refinement, scoring
    python bench/bench_queries.py --detector /tmp/h --compare cache --attack unitrigger --repeats 1

The detector folder is trained beforehand (``advseq train ../shared/data/wiki -d hlstm
--seed 0 -o /tmp/h``); its recorded split gives the test users. Users are attacked in
batches of ``--batch-size`` test users as ``advseq attack`` does (its malicious users
under the evasion goal), with one threat model per run, so the cache lives across the
batches of a run as it does in an attack run. Preparation (PETGEN: its generator, trained
once and cached in ADVSEQ_HOME, and its naturalness judge) is outside the timed part; for
PETGEN the timed part is ``run``: sampling and scoring the candidates, refinement and the
natural choice, each also timed apart. The written posts and the deployed detector's
verdicts are compared between the two settings. Speed is measured here, never in a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


SETTINGS = {"cache": ({"cache": False, "fast": False}, {"cache": True, "fast": False}),
            "fast": ({"cache": True, "fast": False}, {"cache": True, "fast": True}),
            "gates": ({"cache": True, "fast": True, "gates": False}, {"cache": True, "fast": True}),
            "give-up": ({"cache": True, "fast": True, "params": {"refine_give_up": 0}}, {"cache": True, "fast": True})}


@contextmanager
def hlstm_gates(on: bool):
    """The hlstm's gate-table post encoder (``HierarchicalLSTM.encode_ids``) on, or off
    (``nn.LSTM`` over the embedded ids, posts grouped by length, as before it)."""
    from advseq.neural import SequenceModule
    from detectors.hlstm import HierarchicalLSTM

    saved = HierarchicalLSTM.encode_ids, HierarchicalLSTM.packs_ids
    if not on:
        HierarchicalLSTM.encode_ids, HierarchicalLSTM.packs_ids = SequenceModule.encode_ids, False
    try:
        yield
    finally:
        HierarchicalLSTM.encode_ids, HierarchicalLSTM.packs_ids = saved


def _timed(fn, acc: dict, key: str):
    def wrapped(*a, **k):
        c0 = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            acc[key] = acc.get(key, 0.0) + time.process_time() - c0
    return wrapped


def run_once(det, attack: str, params: dict, split, spec, batch_size: int, setting: dict, train) -> dict:
    from advseq import history_cache
    from advseq.attack import create_attack
    from advseq.threat import ThreatModel

    with history_cache.switched(setting["cache"], fast=setting["fast"]), hlstm_gates(setting.get("gates", True)):
        det.__dict__.pop("_history_cache", None)          # every run starts cold
        threat = ThreatModel(det, "white-box")
        atk = create_attack(attack, **{**params, **setting.get("params", {})})
        atk.prepare(train, threat, spec)
        parts: dict[str, float] = {}
        if hasattr(atk, "model_") and hasattr(atk, "_refine"):     # PETGEN: its stages apart
            atk._naturalness(threat)                       # the judge loads outside the timing
            atk.model_.write = _timed(atk.model_.write, parts, "sample + score")
            atk._refine = _timed(atk._refine, parts, "refine")
            atk._natural_misses = _timed(atk._natural_misses, parts, "natural misses")
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
        stats = {"encoded": cache.encoded, "reused": cache.reused} if setting["cache"] and cache else {}
    users = {u.user_id: u for u in test}
    attacked = [spec.task(users[uid]).with_post(p) for uid, p in posts.items()]
    after = det.predict_proba(attacked)              # the deployed verdict, outside any cache
    clean = dict(zip([u.user_id for u in test], det.predict_proba(test), strict=True))
    detected = [uid for uid in posts if clean[uid] >= 0.5]
    evaded = sum(1 for uid, p in zip(posts, after, strict=True) if uid in detected and p < 0.5)
    return {**{k: v for k, v in setting.items() if k != "params"}, "posts": len(posts), "seconds": seconds,
            "cpu": cpu, "queries": threat.total_queries,
            "posts_per_s": len(posts) / seconds, "queries_per_s": threat.total_queries / seconds,
            "evasion": evaded / max(1, len(detected)), "written": posts, "parts": parts,
            "after": dict(zip(posts, after.tolist(), strict=True)), **stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="wiki")
    ap.add_argument("--detector", default=None, help="trained detector folder (default: /work/bench-wiki/hlstm "
                    "if it exists, else /tmp/h)")
    ap.add_argument("--attack", default="hotflip")
    ap.add_argument("--compare", choices=sorted(SETTINGS), default="fast",
                    help="cache: the history cache off vs on; fast: the faster query paths off vs on; "
                         "gates: the hlstm gate-table post encoder off vs on; give-up: PETGEN's "
                         "refinement searching every start to the end (refine_give_up=0) vs its default")
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
    old_set, new_set = SETTINGS[args.compare]
    names = {"cache": ("cache off", "cache on"), "fast": ("before", "fast paths"),
             "gates": ("nn.LSTM", "gate table"), "give-up": ("every start to the end", "give up")}[args.compare]
    runs = []
    for _ in range(args.repeats):
        for name, setting in zip(names, (old_set, new_set), strict=True):
            r = run_once(det, args.attack, params, split, spec, args.batch_size, setting, split.train)
            r["name"] = name
            print(f"{name}: {r['posts']} posts in {r['seconds']:.1f} s, CPU {r['cpu']:.1f} s, "
                  f"{r['posts_per_s']:.2f} posts/s, {r['queries_per_s']:.0f} queries/s, "
                  f"evasion {r['evasion']:.3f} {r['parts']}", flush=True)
            runs.append(r)
    old = [r for r in runs if r["name"] == names[0]]
    new = [r for r in runs if r["name"] == names[1]]
    users = list(old[0]["written"])
    same_posts = sum(all(r["written"][u] == old[0]["written"][u] for r in runs) for u in users)
    max_dp = max(abs(r["after"][u] - old[0]["after"][u]) for r in runs for u in users)
    best = {k: min(r["seconds"] for r in rs) for k, rs in (("old", old), ("new", new))}
    best_cpu = {k: min(r["cpu"] for r in rs) for k, rs in (("old", old), ("new", new))}
    out = Path(args.out or RESULTS / f"queries-{args.dataset}.md")
    stages = sorted({k for r in runs for k in r["parts"]})
    lines = [
        f"# Detector queries, {names[0]} vs {names[1]}: {args.dataset}, `{det.name}`, {args.attack} white-box, K = 1",
        "",
        f"Generated by `python bench/bench_queries.py {' '.join(sys.argv[1:])}` on {platform.machine()} "
        f"({os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; the machine was shared with "
        "other jobs, so read the ratio). One process, the same attack on the same "
        f"{len(users)} users (test users in batches of {args.batch_size}, the malicious ones "
        f"attacked), {names[0]} then {names[1]}, {args.repeats} times; attack time only (no preparation, no "
        "deployed scoring); CPU = the process's CPU seconds (all threads), which other jobs on the "
        "machine disturb far less than wall time; CPU posts/s = posts / CPU s. Detector folder: `"
        + str(det_dir) + "`.",
        "",
        "| path | run | posts | seconds | CPU s | posts/s | CPU posts/s | queries | queries/s | evasion | "
        + "".join(f"{k} CPU s | " for k in stages) + "posts encoded / reused |",
        "| --- " * (11 + len(stages)) + "|",
    ]
    for i, r in enumerate(runs):
        enc = f"{r['encoded']} / {r['reused']}" if r.get("encoded") is not None else ""
        lines.append(f"| {r['name']} | {i // 2 + 1} | {r['posts']} | {r['seconds']:.2f} | {r['cpu']:.2f} | "
                     f"{r['posts_per_s']:.2f} | {r['posts'] / r['cpu']:.2f} | {r['queries']} | {r['queries_per_s']:.0f} | "
                     f"{r['evasion']:.3f} | " + "".join(f"{r['parts'].get(k, 0):.2f} | " for k in stages) + f"{enc} |")
    lines += [
        "",
        f"Speed-up (best run {names[0]} / best run {names[1]}): **{best['old'] / best['new']:.2f}x** "
        f"({best['old']:.2f} s -> {best['new']:.2f} s); in CPU seconds **{best_cpu['old'] / best_cpu['new']:.2f}x** "
        f"({best_cpu['old']:.2f} s -> {best_cpu['new']:.2f} s).",
        f"Same written post in every run: {same_posts} of {len(users)} users; largest change of the "
        f"deployed detector's probability after the attack: {max_dp:.2e}; queries "
        + ", ".join(f"{r['queries']}" for r in runs) + " (by run).",
        "",
    ]
    out.write_text("\n".join(lines))
    print(out.read_text())


if __name__ == "__main__":
    main()
