"""The written-posts (K) section: how evasion grows with the number of posts an attacker
writes per user, beside the K-post ceiling, how many posts evaders needed, and whether
the text gets worse with k.

It appears only when some attack or ceiling unit has K > 1 (a run config's ``posts``),
so one-post reports are unchanged. Everything comes from the units' summaries
(``evasion_by_k``, ``posts_to_evade_hist`` / ``_median``, ``quality_by_k``; a one-post
summary reads as ``evasion_by_k = [evasion_rate]``) and ``ceiling.json``.

The robustness curve of an attack and mode joins its units of different K: at a k that
some unit ran with, that unit's evasion rate after all its posts; at a k in between, the
evasion after k posts within the next larger unit.
"""

from __future__ import annotations

from typing import Any

from advseq.report.attack_sections import ceiling_name
from advseq.report.blocks import DASH, Block, Heading, Para, Section, Table, fmt, ordered, slug
from advseq.report.context import ReportContext
from advseq.report.loading import AttackResult, CeilingResult, Results
from advseq.report.posts_figures import (
    posts_hist_figure,
    quality_by_k_figure,
    robustness_curve_figure,
)
from advseq.threat import THREAT_MODES

#: (html id, title) of the section; not in :data:`~advseq.report.blocks.SECTIONS`, as
#: one-post reports do not have it
POSTS_SECTION = ("posts", "Written posts (K)")
#: the quality metrics shown per k (those a summary has), in this order
QUALITY_KEYS = ("bleu_2", "bleu_history_2", "self_bleu_2", "perplexity_judge", "perplexity_ref",
                "topic_sim_context", "style_similarity", "copy_exact", "copy_near", "repetitive")


def has_posts(res: Results) -> bool:
    """Whether the report needs the section: some attack or ceiling unit with K > 1."""
    return any(a.posts > 1 for a in res.attacks) or any(c.posts > 1 for c in res.ceilings)


# --------------------------------------------------------------------------- the numbers

def curve_series(atks: list[AttackResult]) -> list[dict[str, Any]]:
    """One series per (attack, mode) of finished units: ``points`` = (k, evasion, ran)
    for k = 1..the largest K, ``ran`` where a unit ran with K = k (see the module doc)."""
    groups: dict[tuple[str, str], dict[int, AttackResult]] = {}
    for a in sorted((a for a in atks if a.ok), key=lambda a: a.posts):
        groups.setdefault((a.attack, a.mode), {}).setdefault(a.posts, a)
    out = []
    for (attack, mode), by_k in groups.items():
        points = []
        for k in range(1, max(by_k) + 1):
            if k in by_k:
                v, ran = by_k[k].summary.get("evasion_rate"), True
            else:
                ev = by_k[min(K for K in by_k if k < K)].evasion_by_k
                v, ran = (ev[k - 1] if k <= len(ev) else None), False
            if isinstance(v, int | float):
                points.append((k, float(v), ran))
        out.append({"attack": attack, "mode": mode, "points": points, "units": by_k})
    return out


def ceiling_points(ceilings: list[CeilingResult]) -> list[tuple[int, float | None, float | None]]:
    """(K, relaxed rate, witness-token rate) of each finished ceiling, by K."""
    by_k: dict[int, CeilingResult] = {}
    for c in ceilings:
        if c.data:
            by_k.setdefault(c.posts, c)
    return [(k, by_k[k].data.get("relaxed_rate"), by_k[k].data.get("token_rate")) for k in sorted(by_k)]


def posts_hist(a: AttackResult) -> dict[str, int]:
    """The eligible users by the posts they needed (``"none"``: not within K); a one-post
    summary: its goal successes at k = 1."""
    s = a.summary or {}
    hist = s.get("posts_to_evade_hist")
    if isinstance(hist, dict):
        return {str(k): int(v or 0) for k, v in hist.items()}
    n = int(s.get("n_eligible") or 0)
    reached = round((s.get("goal_success_rate") or 0) * n)
    return {"1": reached, "none": n - reached}


def posts_median(a: AttackResult) -> float | None:
    s = a.summary or {}
    if "posts_to_evade_median" in s:
        return s["posts_to_evade_median"]
    return 1.0 if posts_hist(a).get("1") else None


def _largest(atks: list[AttackResult]) -> dict[tuple[str, str, str], AttackResult]:
    """The finished unit of largest K per (detector, attack, mode)."""
    out: dict[tuple[str, str, str], AttackResult] = {}
    for a in atks:
        key = (a.detector, a.attack, a.mode)
        if a.ok and (key not in out or a.posts > out[key].posts):
            out[key] = a
    return out


def _k_ticks(k_max: int) -> list[int]:
    """k axis ticks: the powers of two up to ``k_max``, and ``k_max``."""
    return sorted({*(2 ** i for i in range(7) if 2 ** i <= k_max), k_max})


def _column(attack: str, mode: str) -> str:
    return f"{attack}/{mode}"


# --------------------------------------------------------------------------- the section

def posts_section(ctx: ReportContext) -> Section:
    sec = Section(*POSTS_SECTION)
    sec.blocks.append(Para(
        "An attacker who writes K posts per user appends them one after the other (each a "
        "median gap of the user's posts later) and stops once its own check says the goal is "
        "reached (in transfer it writes all K, since the surrogate's verdict is not the deployed "
        "detector's); the query budget covers all K. Evasion after k posts: share of the detected "
        "malicious users judged benign after the attacker's first k posts (a user who stopped "
        "earlier keeps its verdict). Posts to evade: the smallest k at which the deployed "
        "detector gave the goal's verdict. K-post ceiling: the evasion rate K relaxed posts "
        "optimised jointly reach (`advseq ceiling --posts K`).", note=True))
    for ds in ctx.dataset_names:
        atks = [a for a in ctx.attacks(ds) if a.ok]
        ceils = [c for c in ctx.res.ceilings if c.dataset == ds]
        if not atks and not ceils:
            continue
        sec.blocks += ctx.sub(ds)
        level = 4 if len(ctx.dataset_names) > 1 else 3
        dets = ordered([*(a.detector for a in atks), *(c.detector for c in ceils)],
                       [m.label for m in ctx.models(ds)])
        ticks = sorted({a.posts for a in atks} | {c.posts for c in ceils})
        for det in dets:
            sec.blocks += _detector_blocks(ctx, ds, det, [a for a in atks if a.detector == det],
                                           [c for c in ceils if c.detector == det], ticks, level)
        sec.blocks += _curve_table(ctx, ds, dets, atks, ceils, ticks)
        sec.blocks += _median_table(ctx, ds, dets, atks)
        sec.blocks += _quality_blocks(ctx, ds, atks)
    return sec


def _detector_blocks(ctx: ReportContext, ds: str, det: str, atks: list[AttackResult],
                     ceils: list[CeilingResult], ticks: list[int], level: int) -> list[Block]:
    blocks: list[Block] = [Heading(level, f"Detector {det}")]
    series = curve_series(atks)
    cpts = ceiling_points(ceils)
    if not any(s["points"] for s in series) and not cpts:
        return [*blocks, Para("No evasion rate to draw (no finished attack with eligible users).", note=True)]
    k_max = max(ticks)
    at_max = [(s, s["points"][-1][1]) for s in series if s["points"] and s["points"][-1][0] == k_max]
    parts = []
    if at_max:
        best = max(v for _, v in at_max)
        names = ", ".join(f"{s['attack']} ({s['mode']})" for s, v in at_max if v == best)
        parts.append(f"At K = {k_max}: most damaging **{names}**, evasion rate {fmt(best)}")
    ceil_max = next((r for k, r, _ in cpts if k == k_max), None)
    if ceil_max is not None:
        parts.append(f"{ceiling_name(k_max)} {fmt(ceil_max)}")
    if parts:
        blocks.append(Para("; ".join(parts) + "."))
    fig = robustness_curve_figure(series, cpts, ticks, f"{det} on {ds}")
    blocks.append(ctx.figs.save(
        fig, f"posts-curve-{ds}-{det}",
        alt=f"Line chart of evasion rate against K, the posts written per user, for {det} on {ds}: "
            f"{len(series)} attack/mode line(s)" + (f" and the ceiling at K = {', '.join(str(k) for k, _, _ in cpts)}"
                                                    if cpts else "") + ".",
        caption=f"Robustness curve of {det} on {ds}: evasion rate against K (colour = attack, line "
                "style = mode). Filled markers: a unit run with that K (its evasion after all K "
                "posts); between them the line follows the evasion after k posts within the next "
                "larger unit. Black stars: the K-post ceiling (relaxed), crosses: its witness words "
                "re-scored as text."))
    panels = []
    for s in series:
        a = s["units"][max(s["units"])]
        if a.posts > 1:
            panels.append({"title": f"{a.attack} ({a.mode}), K = {a.posts}", "K": a.posts,
                           "mode": a.mode, "hist": posts_hist(a)})
    if panels:
        fig = posts_hist_figure(panels, f"Posts to evade: {det} on {ds}")
        blocks.append(ctx.figs.save(
            fig, f"posts-hist-{ds}-{det}",
            alt=f"Bar charts of the posts each eligible user needed to evade {det} on {ds}, one "
                f"panel per attack run ({', '.join(p['title'] for p in panels)}).",
            caption=f"Posts to evade {det} on {ds}: eligible users by the number of written posts "
                    "after which the deployed detector first gave the goal's verdict (grey: not "
                    "within K); the largest K each attack and mode ran with."))
    return blocks


def _curve_table(ctx: ReportContext, ds: str, dets: list[str], atks: list[AttackResult],
                 ceils: list[CeilingResult], ticks: list[int]) -> list[Block]:
    rows = []
    for det in dets:
        for s in curve_series([a for a in atks if a.detector == det]):
            got = {k: (v, ran) for k, v, ran in s["points"]}
            rows.append([det, s["attack"], s["mode"]]
                        + [fmt(got[k][0]) + ("" if got[k][1] else "*") if k in got else DASH for k in ticks])
        cpts = {k: (r, t) for k, r, t in ceiling_points([c for c in ceils if c.detector == det])}
        if cpts:
            rows.append([det, "K-post ceiling", "relaxed"] + [fmt(cpts[k][0]) if k in cpts else DASH for k in ticks])
            rows.append([det, "K-post ceiling", "witness tokens"]
                        + [fmt(cpts[k][1]) if k in cpts else DASH for k in ticks])
    if not rows:
        return []
    return [Table(["detector", "attack", "mode"] + [f"K = {k}" for k in ticks], rows,
                  id=f"tbl-posts-curve-{slug(ds)}",
                  caption=f"Evasion rate against K on {ds} (the robustness curves' numbers). A "
                          "value with * is the evasion after k posts within a unit run with a "
                          "larger K (no unit ran with that K).")]


def _median_table(ctx: ReportContext, ds: str, dets: list[str], atks: list[AttackResult]) -> list[Block]:
    largest = _largest(atks)
    names = list(dict.fromkeys(a.attack for a in atks))
    cols = list(dict.fromkeys(_column(a.attack, a.mode) for a in sorted(
        largest.values(), key=lambda a: (names.index(a.attack), THREAT_MODES.index(a.mode)
                                         if a.mode in THREAT_MODES else len(THREAT_MODES)))))
    if not cols:
        return []
    rows, dist = [], []
    for det in dets:
        cells = []
        for col in cols:
            a = next((u for (d, _, _), u in largest.items() if d == det and _column(u.attack, u.mode) == col), None)
            if a is None:
                cells.append(DASH)
                continue
            hist = posts_hist(a)
            eligible = sum(hist.values())
            reached = eligible - hist.get("none", 0)
            med = posts_median(a)
            cells.append(f"{fmt(med, 1) if med is not None else 'none'} ({reached} of {eligible} within {a.posts})")
            dist.append([det, a.attack, a.mode, fmt(a.posts), fmt(eligible), fmt(reached),
                         ", ".join(f"{k}: {v}" for k, v in hist.items())])
        rows.append([det, *cells])
    return [
        Table(["detector", *cols], rows, id=f"tbl-posts-median-{slug(ds)}",
              caption=f"Median posts to evade on {ds}: per detector × attack/mode (the largest K "
                      "it ran with), the median number of written posts after which an evading "
                      "user first evaded, over those who did (how many of the eligible users, "
                      "within K posts); none: no user evaded within K."),
        Table(["detector", "attack", "mode", "K", "eligible", "evaded", "users by posts to evade"], dist,
              id=f"tbl-posts-hist-{slug(ds)}", text_cols=(6,),
              caption="The posts-to-evade histograms' counts (none: not within K)."),
    ]


def _quality_blocks(ctx: ReportContext, ds: str, atks: list[AttackResult]) -> list[Block]:
    units = [a for a in _largest(atks).values()
             if a.posts > 1 and isinstance((a.summary or {}).get("quality_by_k"), list)]
    if not units:
        return [Para(f"Text quality per k on {ds}: not computed (no K-post attack with "
                     "quality metrics).", note=True)] if any(a.posts > 1 for a in atks) else []
    keys = [k for k in QUALITY_KEYS if any(k in (b or {}) for a in units for b in a.summary["quality_by_k"])]
    rows, emph = [], []
    for a in units:
        for k, block in enumerate(a.summary["quality_by_k"], 1):
            block = block or {}
            rows.append([a.detector, a.attack, a.mode, fmt(k), fmt(block.get("n_posts"))]
                        + [fmt(block.get(key), 2 if key.startswith("perplexity") else 3) for key in keys])
        real = (a.quality or {}).get("real") or {}
        if real:
            emph.append(len(rows))
            rows.append([a.detector, "real posts (yardstick)", "", "", DASH]
                        + [fmt(real.get(key), 2 if key.startswith("perplexity") else 3) for key in keys])
    blocks: list[Block] = [Table(
        ["detector", "attack", "mode", "k", "posts"] + keys, rows, id=f"tbl-posts-quality-{slug(ds)}",
        emphasis_rows=tuple(emph),
        caption=f"Text quality of the k-th written posts on {ds} (each judged with the history it "
                "was written after, the attacker's earlier posts included), for the largest K each "
                "attack ran with; italic rows: the same users' real last posts.")]
    panels = [(k, lab) for k, lab in (("bleu_2", "BLEU-2 (higher = closer to real posts)"),
                                      ("perplexity_judge", "perplexity judge (lower = more fluent)"),
                                      ("perplexity_ref", "perplexity ref (lower = more fluent)")) if k in keys]
    if panels and panels[-1][0] == "perplexity_ref" and len(panels) == 3:
        panels.pop()                       # one perplexity panel: the judge's
    if panels:
        lines = [{"label": f"{a.detector} · {a.attack} ({a.mode})", "mode": a.mode,
                  "values": {key: [(b or {}).get(key) for b in a.summary["quality_by_k"]] for key, _ in panels}}
                 for a in units]
        real = (units[0].quality or {}).get("real") or {}
        fig = quality_by_k_figure(lines, panels, {k: real.get(k) for k, _ in panels if real.get(k) is not None},
                                  _k_ticks(max(len(a.summary["quality_by_k"]) for a in units)))
        blocks.append(ctx.figs.save(
            fig, f"posts-quality-{ds}",
            alt=f"Line charts of {' and '.join(lab for _, lab in panels)} against k, the k-th written "
                f"post, for {len(units)} K-post attack run(s) on {ds}.",
            caption=f"Does the text get worse as K grows? Quality of the k-th written posts on {ds}; "
                    "dashed: the real last posts."))
    return blocks
