"""The sections about the attacks: attack matrix, text quality, examples and cost."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from advseq.report.blocks import (
    DASH,
    SECTIONS,
    Block,
    Details,
    Heading,
    Para,
    Section,
    Table,
    fmt,
    ordered,
    signed,
    slug,
)
from advseq.report.context import ReportContext
from advseq.report.figures import f1_bars_figure, heatmap_figure, quality_scatter_figure
from advseq.report.loading import AttackResult
from advseq.threat import THREAT_MODES


def attack_matrix_section(ctx: ReportContext) -> Section:
    sec = Section(*SECTIONS[3])
    if not ctx.res.attacks:
        sec.blocks.append(Para("No attack was run."))
        return sec
    for ds in ctx.dataset_names:
        atks = ctx.attacks(ds)
        if not atks:
            continue
        sec.blocks += ctx.sub(ds)
        reasons: list[str] = []

        def mark(reason: str | None, reasons: list[str] = reasons) -> str:
            reason = reason or "no reason recorded"
            if reason not in reasons:
                reasons.append(reason)
            return f"[{reasons.index(reason) + 1}]"

        rows = []
        cells: dict[tuple[str, str], tuple[float | None, float | None, str | None]] = {}
        multi = ctx.run_col()
        for a in atks:
            base = ([a.run] if multi else []) + [a.detector, a.label, a.mode]
            if not a.ok:
                m = mark(a.reason)
                label = "n/a" if a.status == "not applicable" else a.status
                rows.append(base + [f"{label} {m}"] + [DASH] * 8)
                cells[(a.detector, a.column)] = (None, None, f"{label} {m}")
                continue
            s = a.summary
            b, af = s["before"]["f1"], s["after"]["f1"]
            rows.append(base + [a.status, fmt(s["n_users"]), fmt(s["n_eligible"]), fmt(s["evasion_rate"]),
                                fmt(s["attack_success_rate"]), fmt(s.get("goal_success_rate")),
                                fmt(b), fmt(af), signed(af - b)])
            cells[(a.detector, a.column)] = (s["evasion_rate"], s["attack_success_rate"], None)
        for c in ctx.res.ceilings:
            if c.dataset != ds:
                continue
            base = ([c.run] if multi else []) + [c.detector, ceiling_name(c.posts)]
            if not c.data:
                rows.append(base + ["relaxed", f"{c.status} {mark('ceiling.json not found')}"] + [DASH] * 8)
                continue
            d = c.data
            rows.append(base + ["relaxed", c.status, fmt(d["n_users"]), fmt(d["n_eligible"]),
                                fmt(d["relaxed_rate"])] + [DASH] * 5)
            rows.append(base + ["witness tokens", c.status, fmt(d["n_users"]), fmt(d["n_eligible"]),
                                fmt(d["token_rate"])] + [DASH] * 5)
        header = (["run"] if multi else []) + ["detector", "attack", "mode", "status", "users",
                                               "eligible", "evasion rate", "attack success rate",
                                               "goal success rate", "F1 before", "F1 after", "ΔF1"]
        foot = [f"[{i + 1}] {r}" for i, r in enumerate(reasons)]
        sec.blocks.append(Table(
            header, rows, id=f"tbl-matrix-{slug(ds)}", footnotes=foot,
            caption="Evasion rate = share of the detected malicious users (eligible) judged benign "
                    "after the attack; attack success rate = share of all scored users whose "
                    "correct verdict flipped; F1 on the attacked users before → after. "
                    "One-post ceiling rows (when the run computed them): the evasion rate of a "
                    "relaxed post optimised by gradient descent over the detector's vocabulary "
                    "(relaxed) and of its arg-max words re-scored as text (witness tokens)."))
        det_rows = ordered((a.detector for a in atks), [m.label for m in ctx.models(ds)])
        names = list(dict.fromkeys(a.attack for a in atks))
        cols = list(dict.fromkeys(a.column for a in sorted(atks, key=lambda a: (
            names.index(a.attack), _mode_rank(a.mode), a.posts))))
        fig = heatmap_figure(det_rows, cols, cells)
        sec.blocks.append(ctx.figs.save(
            fig, f"heatmap-{ds}",
            alt=f"Heatmap of evasion rate and attack success rate on {ds}: rows "
                f"{', '.join(det_rows)}; columns {', '.join(cols)}.",
            caption=f"Evasion and attack success rate per detector × attack/mode on {ds}; grey "
                    "cells are units that did not run (footnotes above give the reason)."))
        attacks = list(dict.fromkeys(a.label for a in atks))
        modes = ordered((a.mode for a in atks if a.ok), THREAT_MODES)
        values = {(a.detector, a.label, a.mode): (a.summary["before"]["f1"], a.summary["after"]["f1"])
                  for a in atks if a.ok}
        if values:
            fig = f1_bars_figure(det_rows, attacks, modes, values)
            sec.blocks.append(ctx.figs.save(
                fig, f"f1-{ds}",
                alt=f"Bar chart of F1 before and after each attack on {ds}, one panel per detector "
                    f"({', '.join(det_rows)}), bars per attack and mode.",
                caption=f"F1 on the attacked users before (grey) and after (coloured by mode, "
                        f"hatched by mode) each attack on {ds}; a missing bar is a unit that did "
                        "not run."))
        sec.blocks += _quality_scatter(ctx, ds, atks)
    return sec


def _quality_scatter(ctx: ReportContext, ds: str, atks: list[AttackResult]) -> list[Block]:
    with_q = [a for a in atks if a.quality]
    if not with_q:
        return [Para("Quality-vs-efficacy plot: not drawn (text-quality metrics not computed).", note=True)]
    points = [{"attack": a.label, "mode": a.mode, "detector": a.detector,
               "evasion": a.summary.get("evasion_rate"), "quality": a.quality["attack"]} for a in with_q]
    panels = [("bleu_2", "BLEU-2 (higher = closer to real posts)")]
    for key in ("perplexity_judge", "perplexity_ref"):
        if any(p["quality"].get(key) is not None for p in points):
            panels.append((key, f"{key.replace('_', ' ')} (lower = more fluent)"))
            break
    yard: dict[str, list[float]] = defaultdict(list)
    seen = set()
    for a in with_q:
        real = a.quality.get("real") or {}
        key = json.dumps(real, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        for k, _ in panels:
            if real.get(k) is not None:
                yard[k].append(real[k])
    fig = quality_scatter_figure(points, panels, yard)
    n_yard = len(seen)
    return [ctx.figs.save(
        fig, f"quality-{ds}",
        alt=f"Scatter of text quality against evasion rate for {len(points)} attack runs on {ds}: "
            + " and ".join(lab for _, lab in panels) + ".",
        caption=f"Quality vs efficacy on {ds}: one point per attack run (label = detector). Dashed "
                "line: the same users' real last posts"
                + (f" (mean of {n_yard} yardsticks from different user sets)" if n_yard > 1 else "")
                + ".")]


def text_quality_section(ctx: ReportContext) -> Section:
    sec = Section(*SECTIONS[4])
    with_q = [a for a in ctx.res.attacks if a.quality]
    if not with_q:
        sec.blocks.append(Para("Not run: no attack run in these folders computed text-quality "
                               "metrics (run with `quality = true`)."))
        return sec
    sec.blocks.append(Para(
        "BLEU-n: n-gram overlap with the real last posts (higher = more realistic); "
        "bleu_history: with the user's own earlier posts; self-BLEU: between an attack's posts "
        "(lower = more diverse); perplexity (judge = an LM advseq did not train; ref = advseq's "
        "reference LM): lower = more fluent; topic_sim / style_similarity: closeness to the "
        "target context, the user's recent or same-context posts, and the user's style "
        "(higher = closer); copy_exact / copy_near: shares of copied posts; repetitive: share "
        "of posts in which one word is more than half of the words (degenerate text a judge "
        "LM finds likely). The italic row under each group is the same users' real last posts.",
        note=True))
    for ds in ctx.dataset_names:
        atks = [a for a in with_q if a.dataset == ds]
        if not atks:
            continue
        sec.blocks += ctx.sub(ds)
        from advseq.quality import METRICS  # display order; unknown keys follow

        keys = [k for k in METRICS if any(k in a.quality["attack"] for a in atks)]
        keys += sorted({k for a in atks for k in a.quality["attack"]} - set(keys))
        multi = ctx.run_col()
        groups: dict[str, list[AttackResult]] = {}
        for a in atks:
            groups.setdefault(json.dumps(a.quality.get("real") or {}, sort_keys=True), []).append(a)
        rows, emph = [], []
        for members in groups.values():
            for a in members:
                q, dep = a.quality["attack"], a.quality.get("not_independent") or {}
                rows.append(([a.run] if multi else []) + [a.detector, a.label, a.mode, fmt(a.quality.get("n_posts"))]
                            + [fmt(q.get(k), _nd(k)) + (" †" if k in dep and q.get(k) is not None else "")
                               for k in keys])
            real = members[0].quality.get("real") or {}
            emph.append(len(rows))
            rows.append(([""] if multi else []) + ["real posts (yardstick)", "", "", fmt(members[0].quality.get("n_posts"))]
                        + [fmt(real.get(k), _nd(k)) for k in keys])
        sec.blocks.append(Table(
            (["run"] if multi else []) + ["detector", "attack", "mode", "posts"] + keys, rows,
            id=f"tbl-quality-{slug(ds)}", emphasis_rows=tuple(emph),
            caption="Text quality of each attack run's posts (posts = users the attack wrote "
                    "for); yardstick rows: the same users' real last posts."
                    + (" †: no independent opinion, the attack writes or chooses its posts with "
                       "that perplexity's model; read the other perplexity for its fluency."
                       if any(a.quality.get("not_independent") for a in atks) else "")))
        notes = []
        for a in atks:
            judge = a.quality.get("judge")
            extra = "; ".join(a.quality.get("notes") or [])
            notes.append(f"{a.detector} · {a.label} ({a.mode}): judge {judge or 'none'}, topic "
                         f"corpus {a.quality.get('topic_corpus', DASH)}, "
                         f"{fmt(a.quality.get('seconds'), 1)} s. {extra}")
        sec.blocks.append(Details("Quality notes per run", "\n".join(notes)))
    missing = [a for a in ctx.res.attacks if a.ok and not a.quality]
    if missing:
        sec.blocks.append(Para(f"Not computed for {len(missing)} other attack run(s).", note=True))
    return sec


def examples_section(ctx: ReportContext) -> Section:
    sec = Section(*SECTIONS[5])
    done = [a for a in ctx.res.attacks if a.ok and a.records]
    if not done:
        sec.blocks.append(Para("No attack records to show."))
        return sec
    for ds in ctx.dataset_names:
        atks = [a for a in done if a.dataset == ds]
        if not atks:
            continue
        sec.blocks += ctx.sub(ds)
        counts: Counter[str] = Counter()
        for a in atks:
            counts.update(r["user_id"] for r in a.records if r.get("targeted") and r.get("label") == 1)
        chosen = sorted(counts, key=lambda u: (-counts[u], u))[: ctx.n_examples]
        users, note = _load_users(ctx, ds, chosen)
        placement = next((a.summary.get("placement") for a in atks), "append")
        sec.blocks.append(Para(
            f"The {len(chosen)} malicious test users targeted by the most attack runs (ties broken "
            f"by user id). Real posts come from the dataset; the attack's post is "
            + ("appended after them." if placement == "append" else "written in place of the last one.")
            + (f" {note}" if note else ""), note=True))
        for uid in chosen:
            sec.blocks.append(Heading(4, f"User {uid} — malicious, targeted by {counts[uid]} of "
                                         f"{len(atks)} attack runs"))
            user = users.get(uid)
            if user is not None:
                posts = user.posts[-3:]
                start = len(user.posts) - len(posts)
                sec.blocks.append(Table(
                    ["post", "context", "text"],
                    [[f"{start + i + 1} of {len(user.posts)}", p.context or DASH, p.text]
                     for i, p in enumerate(posts)],
                    id=f"tbl-real-{slug(uid)}", text_cols=(1, 2),
                    caption="Last real posts, oldest first."))
            rows, target = [], None
            for a in atks:
                rec = next((r for r in a.records if r["user_id"] == uid), None)
                if rec is None or not rec.get("targeted"):
                    continue
                target = target or rec.get("context")
                rows.append([a.detector, a.label, a.mode, *_written(rec), _outcome(rec)])
            sec.blocks.append(Table(
                ["detector", "attack", "mode", "written post", "P(malicious) before → after", "outcome"],
                rows, id=f"tbl-written-{slug(uid)}", text_cols=(3,),
                caption="What each attack wrote" + (f" (target context: {target})" if target else "")
                        + "; the deployed detector's score before → after."))
    return sec


def _load_users(ctx: ReportContext, ds: str, ids: list[str]) -> tuple[dict[str, Any], str]:
    d = ctx.res.datasets.get(ds)
    if d is None or not d.path:
        return {}, "Real posts omitted: the run does not record the data file."
    path = Path(d.path)
    if not path.exists():
        return {}, f"Real posts omitted: {path} not found."
    from advseq.errors import AdvseqError
    from advseq.io import load_dataset

    try:
        data = load_dataset(path, name=ds)
    except AdvseqError as err:
        return {}, f"Real posts omitted: {err}"
    if d.info.get("checksum") and data.checksum() != d.info["checksum"]:
        return {}, f"Real posts omitted: {path} changed since the run (checksum differs)."
    wanted = set(ids)
    return {u.user_id: u for u in data if u.user_id in wanted}, ""


def cost_section(ctx: ReportContext) -> Section:
    sec = Section(*SECTIONS[6])
    done = [a for a in ctx.res.attacks if a.ok]
    if not done:
        sec.blocks.append(Para("No attack was run."))
        return sec
    multi = ctx.run_col()
    has_q = any(a.quality for a in done)
    for ds in ctx.dataset_names:
        atks = [a for a in done if a.dataset == ds]
        if not atks:
            continue
        sec.blocks += ctx.sub(ds)
        rows = []
        for a in atks:
            s = a.summary
            rows.append(([a.run] if multi else []) + [
                a.detector, a.label, a.mode, fmt(s.get("n_targeted")), fmt(_float(s.get("queries_mean")), 1),
                fmt(_float(s.get("queries_median")), 1), fmt(s.get("budget")), fmt(s.get("budget_exhausted")),
                fmt(s.get("failed")), fmt(s.get("attack_seconds"), 2), fmt(s.get("posts_per_second"), 2),
                fmt(s.get("prepare_seconds"), 2)]
                + ([fmt((a.quality or {}).get("seconds"), 1)] if has_q else [])
                + [fmt(a.seconds, 1) if a.status == "done" else f"{a.status}"])
        header = (["run"] if multi else []) + [
            "detector", "attack", "mode", "targeted", "queries mean", "queries median", "budget",
            "budget exhausted", "failed", "attack s", "posts/s", "prepare s"] + (
            ["quality s"] if has_q else []) + ["unit wall s"]
        if all(a.summary.get("budget") is None for a in atks):
            j = header.index("budget")
            header.pop(j)
            for r in rows:
                r.pop(j)
        sec.blocks.append(Table(
            header, rows, id=f"tbl-cost-{slug(ds)}",
            caption="Queries per targeted user and time: attack s = time writing posts; prepare "
                    "s = training the attack (e.g. a generator); unit wall s = the whole unit "
                    "incl. scoring (\"reused\": finished by an earlier run)"
                    + ("; no query budget was set." if "budget" not in header else ".")))
        exhausted = sum(a.summary.get("budget_exhausted", 0) for a in atks)
        failed = sum(a.summary.get("failed", 0) for a in atks)
        sec.blocks.append(Para(f"Budget exhausted for {exhausted} user(s), attack failed for "
                               f"{failed} user(s) across {len(atks)} attack runs.", note=True))
        if any(a.mode == "transfer" for a in atks):
            sec.blocks.append(Para("Transfer mode: queries are to the attacker's own surrogate; the "
                                   "deployed detector scores each attacked user once.", note=True))
    return sec


def ceiling_name(posts: int) -> str:
    """How the tables name a ceiling of K relaxed posts."""
    return "one-post ceiling" if posts == 1 else f"{posts}-post ceiling"


def _mode_rank(mode: str) -> int:
    return THREAT_MODES.index(mode) if mode in THREAT_MODES else len(THREAT_MODES)


def _written(rec: dict[str, Any]) -> list[str]:
    """The written-post and score cells of one record: with K posts, each post numbered
    and the score after each."""
    before = fmt(rec.get("clean_prob"))
    posts, probs = rec.get("posts"), rec.get("probs")
    if isinstance(posts, list) and len(posts) > 1 and isinstance(probs, list):
        text = " ".join(f"({k}) {p}" for k, p in enumerate(posts, 1))
        return [text, " → ".join([before, *(fmt(p) for p in probs)])]
    return [rec.get("post") or DASH, f"{before} → {fmt(rec.get('attacked_prob'))}"]


def _float(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _nd(metric: str) -> int:
    return 2 if metric.startswith("perplexity") else 3


def _outcome(rec: dict[str, Any]) -> str:
    if rec.get("success"):
        return "evaded"
    if rec.get("eligible"):
        return "still flagged"
    if rec.get("clean_pred") == 0:
        return "missed before the attack"
    return "not eligible"
