"""Where a run's time goes: per-unit seconds of a finished run folder, and the first-time
setup behind the first quality report.

    python bench/bench_profile.py RUN               # breakdown of RUN/index.json
    python bench/bench_profile.py RUN --setup DATA  # plus the cold quality setup on DATA
    python bench/bench_profile.py RUN --md bench/results/profile-demo.md

The run index records each unit's wall seconds; an attack unit's summary splits them into
preparation (training a generator, a trigger search), the attack itself and the quality
report. ``--setup`` times, in a fresh ADVSEQ_HOME, each piece the first quality report of a
run builds before it can score anything (the judge's conversion and load, the reference
LM, the topic models) and the scoring of one set of real posts, so the part of the first
attack unit that is setup rather than attack is measured apart.
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


def _attack_parts(unit_dir: Path) -> dict[str, float | None]:
    """prepare / attack / quality seconds and posts/s of an attack unit's summary."""
    path = unit_dir / "summary.json"
    if not path.is_file():
        return {}
    s = json.loads(path.read_text())
    return {"prepare": s.get("prepare_seconds"), "attack": s.get("attack_seconds"),
            "quality": (s.get("quality") or {}).get("seconds"),
            "posts/s": s.get("posts_per_second")}


def unit_table(run: Path) -> tuple[list[str], float, float]:
    """(markdown lines, sum of unit seconds, the run's wall seconds)."""
    index = json.loads((run / "index.json").read_text())
    units = [u for u in index["units"] if u.get("seconds") is not None]
    total = sum(u["seconds"] for u in units)
    wall = index.get("seconds") or total
    lines = ["| unit | kind | seconds | share | prepare | attack | quality | posts/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for u in sorted(units, key=lambda u: -u["seconds"]):
        parts = _attack_parts(run / u["path"]) if u["kind"] == "attack" else {}

        def cell(key: str, parts: dict = parts) -> str:
            v = parts.get(key)
            return "" if v is None else f"{v:.1f}"
        lines.append(f"| {u['label']} | {u['kind']} | {u['seconds']:.1f} | {u['seconds'] / wall:.1%} | "
                     f"{cell('prepare')} | {cell('attack')} | {cell('quality')} | {cell('posts/s')} |")
    by_kind: dict[str, float] = {}
    for u in units:
        by_kind[u["kind"]] = by_kind.get(u["kind"], 0.0) + u["seconds"]
    lines += ["", "| kind | units | seconds | share |", "| --- | --- | --- | --- |"]
    for kind, sec in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        n = sum(u["kind"] == kind for u in units)
        lines.append(f"| {kind} | {n} | {sec:.1f} | {sec / wall:.1%} |")
    lines.append(f"| outside units (loading, dataset card) | | {wall - total:.1f} | {(wall - total) / wall:.1%} |")
    return lines, total, wall


def _timed(label: str, fn, rows: list[tuple[str, float, float]]):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    rows.append((label, time.perf_counter() - t, time.process_time() - c))
    print(f"  {label}: {rows[-1][1]:.1f} s", flush=True)
    return out


def quality_setup(data_path: Path, seed: int = 0) -> list[str]:
    """Markdown lines: each first-time piece of a quality report, timed in a fresh home."""
    home = tempfile.mkdtemp(prefix="advseq-profile-home-")
    os.environ["ADVSEQ_HOME"] = home
    from advseq.io import load_dataset
    from advseq.judge import PerplexityJudge
    from advseq.lm import reference_lm
    from advseq.quality.items import QualityItem
    from advseq.quality.summary import quality_metrics
    from advseq.quality.topics import topic_models

    rows: list[tuple[str, float, float]] = []
    data = _timed("load the dataset", lambda: load_dataset(data_path), rows)
    split = data.split(0.2, seed=seed)
    judge = _timed("judge: convert the GGUF and load SmolLM2", lambda: PerplexityJudge.shared().load(), rows)
    lm = _timed("reference LM: train on the training users", lambda: reference_lm(split.train, seed=seed, progress=False), rows)
    topics = _timed("topic models (LDA)", lambda: topic_models(data, seed=seed), rows)
    test = list(split.test)
    items = [QualityItem(u.posts[-1].text, u.posts[:-1], u.posts[-1].context, True) for u in test]
    refs = [u.posts[-1].text for u in test]
    corpus = [p.text for u in split.train for p in u.posts]
    _timed(f"judge perplexity of {len(items)} real posts (cold score cache)",
           lambda: judge.perplexity([it.post for it in items]), rows)
    _timed(f"reference-LM perplexity of {len(items)} real posts",
           lambda: lm.perplexity([it.post for it in items], [it.context for it in items]), rows)
    _timed("BLEU, self-BLEU, topics, style, copies of the same posts (judge, LM warm)",
           lambda: quality_metrics(items, refs, leave_out=list(range(len(items))), topics=topics,
                                   judge=None, ref_lm=None, corpus=corpus, seed=seed), rows)
    total = sum(r[1] for r in rows)
    lines = [f"Cold quality setup on `{data_path}` (fresh ADVSEQ_HOME, one process):", "",
             "| piece | wall s | CPU s | share |", "| --- | --- | --- | --- |"]
    lines += [f"| {label} | {w:.1f} | {c:.1f} | {w / total:.1%} |" for label, w, c in rows]
    lines.append(f"| total | {total:.1f} | {sum(r[2] for r in rows):.1f} | |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished run folder (holds index.json)")
    ap.add_argument("--setup", type=Path, metavar="DATA", help="also time the cold quality setup on DATA")
    ap.add_argument("--md", type=Path, help="write the breakdown to this markdown file")
    ap.add_argument("--title", default="Where the run's time goes")
    args = ap.parse_args()
    if not (args.run / "index.json").is_file():
        sys.exit(f"{args.run}: no index.json (not a finished run folder)")
    from advseq.manifest import cpu_model

    table, total, wall = unit_table(args.run)
    lines = [f"# {args.title}", "",
             f"`python bench/bench_profile.py {args.run}"
             + (f" --setup {args.setup}" if args.setup else "") + "`", "",
             f"- machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()})",
             f"- run wall time {wall:.1f} s ({wall / 60:.1f} min); units {total:.1f} s", "", *table]
    if args.setup:
        lines += ["", *quality_setup(args.setup)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        args.md.write_text(text)


if __name__ == "__main__":
    main()
