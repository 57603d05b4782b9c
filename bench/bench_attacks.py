"""Attack benchmark: PETGEN against every baseline on a real dataset, white-box and
transfer, with PETGEN's ablations and its cost (pre-training, adversarial training,
generation). Writes bench/results/attacks-<dataset>.{json,md}.

    python bench/bench_attacks.py                         # wiki, hlstm deployed, cold caches
    python bench/bench_attacks.py --dataset pan19-bots-en --no-ablations

It runs one advseq run matrix (``runs/bench-attacks-<dataset>``, reused when re-run) with
a fresh ``$ADVSEQ_HOME`` unless ``--home`` is given, so the PETGEN timings include the
reference LM and MLE pre-training. Speed is measured here, never in a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]

BASELINES = ["copycat", "copycat-benign", "hotflip", "unitrigger", "lm-generic", "malcom", "petgen"]
ABLATIONS = {                      # white-box only; no-recency is malcom
    "petgen-no-gan": {"gan": False},
    "petgen-no-attack": {"attack": False},
    "petgen-no-relevancy": {"relevancy": False},
    "petgen-no-select": {"select": False},
    "petgen-no-refine": {"refine_flips": 0},
}
COLUMNS = ["evasion_rate", "attack_success_rate", "after_f1", "bleu_2", "perplexity_judge",
           "topic_sim_context", "style_similarity", "copy_exact", "copy_near", "posts_per_second",
           "prepare_seconds"]


def config(dataset: str, detector: str, ablations: bool, max_users: int | None) -> dict:
    attacks = [{"name": n, "modes": ["white-box", "transfer"]} for n in BASELINES]
    attacks.append({"name": "textbugger", "modes": ["score"], "budget": 200})
    if ablations:
        attacks += [{"name": n, "attack": "petgen", "modes": ["white-box"], "params": p}
                    for n, p in ABLATIONS.items()]
    return {"run": {"name": f"bench-attacks-{dataset}", "seed": 0, "quality": True,
                    "max_users": max_users or 0},
            "datasets": [{"name": dataset, "shared": dataset}],
            "detectors": [{"name": detector}],
            "surrogate": {"detector": "cnn"},
            "attacks": attacks}


def _rows_of(key: dict, run_params: dict[str, tuple[dict, str]], fingerprint: str) -> list[str]:
    """The attack rows whose parameters include ``key``'s and whose threat it was trained on."""
    return [name for name, (params, fp) in run_params.items() if fp == fingerprint
            and all(params.get(k) == v for k, v in key.items())]


def petgen_costs(home: Path, run: Path | None = None) -> list[dict]:
    """What each PETGEN generator in the cache cost to train (cold runs only), with the
    attack rows of ``run`` it was trained for."""
    run_params: dict[str, tuple[dict, str]] = {}
    for rj in sorted(run.glob("attacks/*/*/*/run.json")) if run else []:
        cfg, man = json.loads(rj.read_text()), rj.parent / "manifest.json"
        fp = (json.loads(man.read_text()).get("threat") or {}).get("fingerprint") if man.exists() else None
        if fp and not (cfg.get("attack_params") or {}).get("generator"):
            run_params[rj.parent.name.rsplit("-", 1)[0]] = (cfg["attack_params"], fp)
    rows = []
    for ref in sorted((home / "cache" / "reflm").glob("*/config.json")):
        info = json.loads(ref.read_text()).get("fit_info", {})
        rows.append({"stage": "reference LM (MLE on training posts)", "seconds": info.get("train_seconds"),
                     "detail": f"{info.get('epochs')} epochs, valid ppl {info.get('valid_ppl')}"})
    for mle in sorted((home / "cache" / "petgen-mle").glob("*/config.json")):
        info = json.loads(mle.read_text()).get("fit_info", {}).get("mle") or {}
        rows.append({"stage": "conditional generator MLE", "seconds": info.get("seconds"),
                     "detail": f"{info.get('examples')} examples, epoch losses {info.get('epoch_losses')}"})
    for gen in sorted((home / "cache" / "petgen").glob("*/config.json")):
        cfg = json.loads(gen.read_text())
        key = json.loads((gen.parent / "attack_key.json").read_text())
        p, info = cfg["params"], cfg.get("fit_info", {})
        adv = info.get("adversarial", {})
        mle_s = (info.get("mle") or {}).get("seconds") or 0
        terms = [t for t in ("gan", "attack", "recency", "relevancy", "select") if p.get(t)]
        used = _rows_of(key["params"], run_params, key["threat"])
        rows.append({"stage": "adversarial fine-tuning" + (f" ({', '.join(used)})" if used else ""),
                     "generator": gen.parent.name, "attacks": used,
                     "seconds": round(info.get("train_seconds", 0) - mle_s, 2) if info else None,
                     "detail": f"{adv.get('steps')} steps + {len(adv.get('selection', []))} selection rounds "
                               f"on {adv.get('users')} users; terms: {', '.join(terms)}; "
                               f"against {key['threat'][:12]}"})
    return rows


def generation_speed(dataset: str, home: Path, n_users: int = 64, k: int = 32) -> dict | None:
    """Posts per second of pure generation (sampling k candidates per user, no scoring)."""
    import torch

    from advseq.attack import AttackSpec
    from advseq.io import load_dataset
    from advseq.paths import shared_dataset
    from advseq.runtime import keep_freed_memory

    keep_freed_memory()           # as the command line does
    from attacks.petgen.model import PETGEN

    gens = sorted((home / "cache" / "petgen").glob("*/config.json"))
    if not gens:
        return None
    model = PETGEN.load(gens[0].parent)
    ds = load_dataset(shared_dataset(dataset))
    users = ds.split(0.2, seed=0).test.users[:n_users]
    tasks = [AttackSpec().task(u) for u in users]
    u = torch.rand(len(tasks) * k, model.lm_.max_post_tokens, generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64)
    model.sample(tasks[:4], u[:4 * k], k)                 # warm-up
    t0 = time.perf_counter()
    posts = model.sample(tasks, u, k)
    s = time.perf_counter() - t0
    return {"posts": sum(map(len, posts)), "seconds": round(s, 2),
            "posts_per_second": round(sum(map(len, posts)) / s, 1)}


def table(run: Path) -> list[dict]:
    index = json.loads((run / "index.json").read_text())
    rows = []
    for unit in index["units"]:
        if unit["kind"] != "attack":
            continue
        row = {"attack": Path(unit["path"]).name.rsplit("-", 1)[0], "status": unit["status"]}
        summary = run / unit["path"] / "summary.json"
        if summary.exists():
            s = json.loads(summary.read_text())
            row.update({k: s.get(k) for k in COLUMNS if k in s}, after_f1=s["after"]["f1"],
                       before_f1=s["before"]["f1"], n_eligible=s["n_eligible"],
                       real_bleu_2=(s.get("quality") or {}).get("real", {}).get("bleu_2"),
                       real_perplexity_judge=(s.get("quality") or {}).get("real", {}).get("perplexity_judge"),
                       real_copy_near=(s.get("quality") or {}).get("real", {}).get("copy_near"))
        rows.append(row)
    return rows


def fmt(x: object) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3f}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)


def render(dataset: str, detector: str, rows: list[dict], costs: list[dict], gen: dict | None,
           wall: float) -> str:
    from advseq.manifest import cpu_model

    real = next((r for r in rows if r.get("real_bleu_2") is not None), {})
    lines = [f"# Attack benchmark: {dataset}, `{detector}` deployed", "",
             f"Generated by `python bench/bench_attacks.py --dataset {dataset}` on {platform.machine()} "
             f"({os.cpu_count()} CPUs, {cpu_model()}); seed-0 80/20 split; goal evasion, placement append; "
             f"whole matrix {wall / 60:.1f} min with cold caches. Evasion rate = share of the "
             f"{rows[0].get('n_eligible') if rows else '?'} correctly detected malicious test users "
             "judged benign after the attack. Real last posts (the yardstick): BLEU-2 "
             f"{fmt(real.get('real_bleu_2'))}, judge perplexity {fmt(real.get('real_perplexity_judge'))}, "
             f"near-copy share {fmt(real.get('real_copy_near'))}.", "",
             "| attack (mode) | evasion | attack rate | F1 after | BLEU-2 | judge ppl | topic sim | "
             "style sim | exact copies | near copies | posts/s | train s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append("| " + " | ".join([r["attack"], *(fmt(r.get(k)) for k in (
            "evasion_rate", "attack_success_rate", "after_f1", "bleu_2", "perplexity_judge",
            "topic_sim_context", "style_similarity", "copy_exact", "copy_near", "posts_per_second",
            "prepare_seconds"))]) + " |")
    lines += ["", "## PETGEN cost (CPU)", "", "| stage | seconds | detail |", "| --- | --- | --- |"]
    lines += [f"| {c['stage']} | {fmt(c['seconds'])} | {c['detail']} |" for c in costs]
    if gen:
        lines += ["", f"Generation: {gen['posts']} posts in {gen['seconds']} s = "
                      f"**{gen['posts_per_second']} posts/s** (sampling only, 32 candidates per user)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="wiki")
    ap.add_argument("--detector", default="hlstm")
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--max-users", type=int, default=None, help="stratified sample of test users")
    ap.add_argument("--home", default=None, help="ADVSEQ_HOME to use (default: a fresh one: cold timings)")
    ap.add_argument("--run", default=None, help="run folder (default runs/bench-attacks-DATASET)")
    args = ap.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="advseq-bench-home-"))
    os.environ["ADVSEQ_HOME"] = str(home)
    from advseq.api import robustness_run
    from advseq.manifest import build_manifest, write_json
    from advseq.paths import shared_dataset

    if shared_dataset(args.dataset) is None:
        print(f"skip {args.dataset}: not found in $ADVSEQ_DATA or ../shared/data", file=sys.stderr)
        return 0
    run = Path(args.run or REPO / "runs" / f"bench-attacks-{args.dataset}")
    cfg = config(args.dataset, args.detector, not args.no_ablations, args.max_users)
    t0 = time.perf_counter()
    robustness_run(cfg, out=run, report=True, progress=True)
    wall = time.perf_counter() - t0
    rows = table(run)
    costs = petgen_costs(home, run)
    gen = generation_speed(args.dataset, home)
    out = RESULTS / f"attacks-{args.dataset}"
    write_json(out.with_suffix(".json"), build_manifest(cfg, seed=0, results=rows, petgen_costs=costs,
                                                        generation=gen, wall_seconds=round(wall, 1),
                                                        home=str(home)))
    out.with_suffix(".md").write_text(render(args.dataset, args.detector, rows, costs, gen, wall),
                                      encoding="utf-8")
    print(f"wrote {out.with_suffix('.md')}; report in {run / 'report'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
