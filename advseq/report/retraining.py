"""The retraining section: per-round scores, a robustness curve and a one-sentence verdict."""

from __future__ import annotations

from typing import Any

from advseq.report.blocks import SECTIONS, Heading, Para, Section, Table, fmt, signed, slug
from advseq.report.context import ReportContext
from advseq.report.figures import retrain_figure
from advseq.report.loading import RetrainResult


def retraining_section(ctx: ReportContext) -> Section:
    sec = Section(*SECTIONS[7])
    if not ctx.res.retrains:
        sec.blocks.append(Para("Not run: no retraining loop in these runs."))
        return sec
    for rt in ctx.res.retrains:
        k_part = "" if rt.posts == 1 else f", K = {rt.posts} posts"
        title = f"{rt.detector} vs {rt.attack} ({rt.mode}{k_part}) on {rt.dataset}" + (
            f" — run {rt.run}" if ctx.res.multi else "")
        sec.blocks.append(Heading(3, title))
        rounds = (rt.data or {}).get("rounds") or []
        if not rounds:
            sec.blocks.append(Para(f"No rounds recorded ({rt.status})."))
            continue
        by_k = any(r.get("evasion_by_k") for r in rounds)
        rows = []
        for r in rounds:
            m = rt.round_metrics.get(r["round"], {})
            s = rt.round_summaries.get(r["round"], {})
            rows.append([fmt(r["round"]), fmt(r.get("n_train")), fmt(r.get("f1")), fmt(r.get("roc_auc")),
                         fmt(r.get("accuracy")), fmt(_flagged_share(m.get("confusion"))),
                         fmt(s.get("n_eligible")), fmt(r.get("evasion_rate")),
                         fmt(r.get("attack_success_rate")), fmt(r.get("f1_after_attack"))]
                        + ([evasion_by_k_cell(r), fmt(r.get("posts_to_evade_median"), 1)] if by_k else []))
        sec.blocks.append(Table(
            ["round", "training users", "clean F1", "ROC-AUC", "accuracy", "flagged share",
             "eligible", "evasion rate", "attack success rate", "F1 under attack"]
            + (["evasion after k = 1, 2, …", "median posts to evade"] if by_k else []), rows,
            id=f"tbl-retrain-{slug(rt.path.name)}",
            caption="Per round: the detector's clean scores on the test split, the share of test "
                    "users it flags as malicious, and the (re-trained, adaptive) attack's damage."
                    + (" With K written posts: the evasion rate after each k posts, and the median "
                       "k at which an evading user evaded." if by_k else "")))
        sec.blocks.append(Para("**Verdict:** " + retrain_verdict(rt, rounds)))
        fig = retrain_figure(rounds, title)
        sec.blocks.append(ctx.figs.save(
            fig, f"retrain-{rt.dataset}-{rt.detector}-{rt.attack}",
            alt=f"Line charts over {len(rounds)} retraining rounds of {rt.detector} against "
                f"{rt.attack}: evasion and attack success rate (left); clean F1, ROC-AUC and "
                "F1 under attack (right).",
            caption=f"Robustness curve: {title}."))
    return sec


def evasion_by_k_cell(row: dict[str, Any]) -> str:
    """A round's evasion after each k posts, as one cell: ``0.200 / 0.350 / 0.410``."""
    return " / ".join(fmt(v) for v in row.get("evasion_by_k") or [row.get("evasion_rate")])


def _flagged_share(conf: Any) -> float | None:
    try:
        (tn, fp), (fn, tp) = conf
    except (TypeError, ValueError):
        return None
    n = tn + fp + fn + tp
    return round((fp + tp) / n, 6) if n else None


def retrain_verdict(rt: RetrainResult, rounds: list[dict[str, Any]]) -> str:
    """One honest sentence from the numbers: evasion and clean-F1 change from round 0 to
    the last round, flagging a detector that only got safer by flagging everyone."""
    first, last = rounds[0], rounds[-1]
    n = last["round"]
    planned = rt.planned_rounds
    if len(rounds) == 1:
        return "only round 0 ran, so there is nothing to compare."
    incomplete = (f" (incomplete: {n} of {planned} rounds)" if planned and n < planned
                  and "f1_change" not in (rt.data or {}) else "")
    e0, e1 = first.get("evasion_rate"), last.get("evasion_rate")
    f0, f1 = first.get("f1"), last.get("f1")
    if e0 is None or e1 is None:
        ev = "evasion rate undefined in some round (no detected malicious users)"
        rel = None
    elif e0 == 0:
        ev = f"evasion rate {fmt(e0)} → {fmt(e1)}"
        rel = None
    else:
        rel = (e1 - e0) / e0
        ev = f"evasion rate {fmt(e0)} → {fmt(e1)} ({rel * 100:+.0f}% relative)"
    df1 = f1 - f0 if f0 is not None and f1 is not None else (rt.data or {}).get("f1_change")
    fpart = f"clean F1 {fmt(f0)} → {fmt(f1)} ({signed(df1)})"
    head = f"after {n} round(s){incomplete}, {ev}; {fpart}"
    share = _flagged_share(rt.round_metrics.get(n, {}).get("confusion"))
    if share in (0.0, 1.0):
        who = "malicious" if share == 1.0 else "benign"
        return (f"{head}. But the round-{n} detector labels every test user {who} "
                f"(accuracy {fmt(last.get('accuracy'))}), so the change in evasion is a collapsed "
                "detector, not robustness.")
    if rel is None:
        return head + "."
    if rel <= -0.1:
        cost = ("at no clean-F1 cost" if df1 is not None and df1 >= -0.01
                else f"at a cost of {fmt(-df1)} clean F1" if df1 is not None else "")
        verdict = f"retraining made this attack less effective {cost}".rstrip()
    elif rel >= 0.1:
        verdict = "the attack became more effective, retraining did not help"
    else:
        verdict = "retraining did not change the attack's effect materially"
    n_elig = rt.round_summaries.get(n, {}).get("n_eligible")
    caveat = f" (last round: {n_elig} eligible users)" if n_elig is not None and n_elig < 30 else ""
    return f"{head}: {verdict}{caveat}."
