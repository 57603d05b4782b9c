"""The sections about what was run: summary, dataset, detectors and provenance."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
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
    format_params,
    signed,
    slug,
)
from advseq.report.context import ReportContext
from advseq.report.loading import RunInfo
from advseq.threat import SURROGATE_DETECTOR, surrogate_seed


def summary_section(ctx: ReportContext) -> Section:
    sec = Section(*SECTIONS[0])
    for run in ctx.res.runs:
        sec.blocks += _what_was_run(ctx, run)
    rows = []
    ceilings = {(c.dataset, c.detector): c.data for c in ctx.res.ceilings if c.data and c.posts == 1}
    for ds in ctx.dataset_names:
        for m in ctx.models(ds):
            runs = [a for a in ctx.attacks(ds) if a.detector == m.label and a.ok]
            rated = [a for a in runs if a.summary.get("evasion_rate") is not None]
            f1 = (m.metrics or {}).get("f1")
            ceil = fmt((ceilings.get((ds, m.label)) or {}).get("relaxed_rate"))
            if not rated:
                rows.append([ds, m.label, fmt(f1), "no attack with eligible users" if runs else "no attack ran",
                             DASH, DASH, DASH, ceil])
                continue
            top = max(a.summary["evasion_rate"] for a in rated)
            best = [a for a in rated if a.summary["evasion_rate"] == top]
            worst = min(best, key=lambda a: (a.summary["after"]["f1"], a.column))
            name = (", ".join(f"{a.label} ({a.mode})" for a in best) if top > 0
                    else f"none evaded ({len(rated)} attack runs)")
            rows.append([ds, m.label, fmt(f1), name, fmt(top),
                         f"{worst.summary['n_eligible']}", fmt(worst.summary["after"]["f1"]), ceil])
    sec.blocks.append(Heading(3, "Headline"))
    if rows:
        sec.blocks.append(Table(
            ["dataset", "detector", "clean F1", "most damaging attack (mode)", "evasion rate",
             "eligible users", "F1 under that attack", "one-post ceiling"], rows, id="tbl-headline",
            caption="Per detector: its clean F1 on the test split and the attack run with the "
                    "highest evasion rate (ties listed; F1 under attack from the worst of them). "
                    "One-post ceiling: the evasion rate a relaxed post (any mixture of the "
                    "detector's words at each position, which contains every text) reaches by "
                    "gradient descent — about the most any attack that writes one post can do "
                    "(`advseq ceiling`; – where not computed or the detector reads no soft tokens).",
            text_cols=(3,)))
        top_rows = [r for r in rows if r[4] != DASH and float(r[4]) > 0]
        if top_rows:
            r = max(top_rows, key=lambda r: float(r[4]))
            sec.blocks.append(Para(f"Most damaging overall: **{r[3]}** against **{r[1]}** on "
                                   f"{r[0]}: evasion rate {r[4]} of {r[5]} detected malicious "
                                   f"users; F1 {r[2]} → {r[6]}."))
    else:
        sec.blocks.append(Para("No detector was trained."))
    return sec


def _what_was_run(ctx: ReportContext, run: RunInfo) -> list[Block]:
    cfg = run.config
    units = run.index.get("units", [])
    status = Counter(u.get("status") for u in units)
    dets = [f"{d.get('name')} ({d.get('detector')}{': ' + format_params(d.get('params')) if d.get('params') else ''})"
            for d in cfg.get("detectors", [])]
    sur = cfg.get("surrogate") or {}
    atks = [f"{a.get('name')} [{', '.join(a.get('modes', []))}]"
            + (f" ({format_params(a.get('params'))})" if a.get("params") else "")
            + (f", budget {a['budget']}" if a.get("budget") else "")
            + (f", K = {_ks(a['posts'])}" if a.get("posts") else "")
            for a in cfg.get("attacks", [])]
    rts = [f"{r.get('detector')} vs {r.get('attack')} ({r.get('mode', 'white-box')}, {r.get('rounds')} rounds"
           + (f", K = {r['posts']}" if r.get("posts") else "") + ")"
           for r in cfg.get("retrain", [])]
    infos = {d.name: d for d in ctx.res.datasets.values() if run.name in d.runs}
    ds = [f"{n} ({fmt(d.info.get('users'))} users, `{d.path}`)" for n, d in infos.items()]
    created = [m.get("created") for m in _unit_manifests(ctx, run) if m.get("created")]
    when = run.manifest.get("created", DASH)
    if created:
        when += f"; unit results written {min(created)} – {max(created)}"
    seed = cfg.get("seed", 0)
    rows = [
        ["run", f"{run.name} (`{run.root}`)"],
        ["started", when],
        ["config", f"`{cfg.get('source') or DASH}`"],
        ["datasets", "; ".join(ds) or DASH],
        ["detectors", "; ".join(dets) or DASH],
        ["surrogate (transfer)", f"{sur.get('detector', SURROGATE_DETECTOR)}" + (f": {format_params(sur.get('params'))}" if sur.get("params") else "")],
        ["attacks [modes]", "; ".join(atks) or "none"],
        ["retraining", "; ".join(rts) or "not run"],
        ["seeds", f"seed {seed} (attacks, detectors; surrogate {surrogate_seed(seed)}), split seed "
                  f"{cfg.get('split_seed', 0)}, test size {cfg.get('test_size', 0.2)}"],
        ["attacked users", f"{cfg.get('max_users') or 'every'} test users per unit; goal "
                           f"{cfg.get('goal', 'evasion')}, placement {cfg.get('placement', 'append')}"
                           + (f"; K = {_ks(cfg['posts'])} written posts per user" if cfg.get("posts") else "")],
        ["text quality", "computed" if cfg.get("quality") else "not computed"],
        ["units", f"{len(units)} ({', '.join(f'{v} {k}' for k, v in sorted(status.items()))})"
                  + (f" in {fmt(run.index.get('seconds'), 1)} s" if run.index.get("seconds") else "")],
    ]
    return [Heading(3, f"What was run: {run.name}"),
            Table(["", ""], rows, id=f"tbl-run-{slug(run.name)}", text_cols=(1,))]


def _ks(posts: Any) -> str:
    return ", ".join(map(str, posts)) if isinstance(posts, list) else str(posts)


def _unit_manifests(ctx: ReportContext, run: RunInfo) -> list[dict[str, Any]]:
    out = [m.manifest for m in ctx.res.models if m.run == run.name and m.manifest]
    out += [a.manifest for a in ctx.res.attacks if a.run == run.name and a.manifest]
    out += [r.manifest for r in ctx.res.retrains if r.run == run.name and r.manifest]
    return out


def dataset_section(ctx: ReportContext) -> Section:
    sec = Section(*SECTIONS[1])
    for name, d in ctx.res.datasets.items():
        info = d.info
        sec.blocks.append(Heading(3, f"{name}"))
        lab = info.get("labels") or {}
        bc = info.get("by_class") or {}
        contexts = info.get("contexts") or {}
        dup = info.get("duplicates") or {}
        sec.blocks.append(Para(
            f"`{d.path or info.get('source')}` — {fmt(info.get('users'))} users "
            f"({fmt(lab.get('malicious'))} malicious, {fmt(lab.get('benign'))} benign), "
            f"{fmt(info.get('posts'))} posts, {fmt((info.get('vocabulary') or {}).get('distinct_tokens'))} "
            f"distinct tokens; {fmt(contexts.get('distinct'))} distinct contexts "
            f"({fmt(contexts.get('in_both_classes'))} in both classes); "
            f"{fmt(dup.get('posts_in_both_classes'))} identical posts in both classes. "
            f"Checksum `{str(info.get('checksum', DASH))[:16]}`."))
        rows = []
        for cls in ("malicious", "benign"):
            c = bc.get(cls) or {}
            ppu, tpp = c.get("posts_per_user") or {}, c.get("tokens_per_post") or {}
            rows.append([cls, fmt(c.get("users")), fmt(ppu.get("min"), 0), fmt(ppu.get("median"), 1),
                         fmt(ppu.get("mean"), 2), fmt(ppu.get("max"), 0), fmt(tpp.get("median"), 1),
                         fmt(tpp.get("mean"), 2), fmt(c.get("relevancy_share_1"))])
        sec.blocks.append(Table(
            ["class", "users", "posts/user min", "median", "mean", "max", "tokens/post median",
             "mean", "relevancy = 1 share"], rows, id=f"tbl-stats-{slug(name)}",
            caption="Users, posts per user and tokens per post by class."))
        audit = info.get("shortcut_audit")
        if audit:
            best = ctx.best_shortcut(name)
            sec.blocks.append(Table(
                ["shortcut", "what it reads", "folds", "accuracy", "± std", "F1"],
                [[r.get("shortcut", ""), r.get("description", ""), fmt(r.get("folds")),
                  fmt(r.get("accuracy")), fmt(r.get("accuracy_std")), fmt(r.get("f1"))] for r in audit],
                id=f"tbl-audit-{slug(name)}", text_cols=(1,),
                caption="Shortcut audit: cross-validated detectors that read no text. A detector "
                        "should beat the best of them "
                        f"({best.get('shortcut')}: accuracy {fmt(best.get('accuracy'))})." if best else ""))
        else:
            sec.blocks.append(Para("Shortcut audit: not run.", note=True))
        card = info.get("card")
        if card:
            sec.blocks.append(Details(f"Dataset card ({len(card.splitlines())} lines)", card))
        else:
            sec.blocks.append(Para("Dataset card: none (no README.md beside the data file).", note=True))
    if not ctx.res.datasets:
        sec.blocks.append(Para("No dataset information in these runs."))
    return sec


def detectors_section(ctx: ReportContext) -> Section:
    sec = Section(*SECTIONS[2])
    for ds in ctx.dataset_names:
        sec.blocks += ctx.sub(ds)
        best = ctx.best_shortcut(ds)
        best_acc = best.get("accuracy") if best else None
        rows, notes = [], []
        for m in ctx.models(ds, surrogate=None):
            mt = m.metrics or {}
            label = f"{m.label} (attacker's surrogate)" if m.surrogate else m.label
            acc = mt.get("accuracy")
            row = [label, m.detector, fmt(mt.get("precision")), fmt(mt.get("recall")), fmt(mt.get("f1")),
                   fmt(acc), fmt(mt.get("roc_auc")), fmt(mt.get("pr_auc")), fmt(mt.get("n_test")),
                   fmt(mt.get("train_seconds"), 2), fmt(mt.get("train_users_per_second"), 1),
                   signed(acc - best_acc if acc is not None and best_acc is not None else None)]
            rows.append(row)
            conf = mt.get("confusion")
            if _one_class(conf):
                notes.append(f"{label} predicts one class for every test user.")
            if m.status == "missing":
                notes.append(f"{label}: metrics.json not found (unfinished run).")
        if not rows:
            sec.blocks.append(Para("No detector was trained."))
            continue
        sec.blocks.append(Table(
            ["detector", "type", "precision", "recall", "F1", "accuracy", "ROC-AUC", "PR-AUC",
             "test users", "train s", "users/s", "acc − best shortcut"], rows,
            id=f"tbl-detectors-{slug(ds)}",
            caption="Clean scores on the recorded test split (malicious = positive); users/s = "
                    "training users × epochs per second. Last column: accuracy minus the best "
                    "shortcut-audit accuracy"
                    + (f" ({best.get('shortcut')}, {fmt(best_acc)}; cross-validated on all users, "
                       "so a rough yardstick)." if best else " (no audit).")))
        for n in notes:
            sec.blocks.append(Para(n, note=True))
    return sec


def provenance_section(ctx: ReportContext) -> Section:
    sec = Section(*SECTIONS[8])
    runs = ctx.res.runs
    pkgs: list[str] = []
    for run in runs:
        for k in (run.manifest.get("versions") or {}):
            if k not in pkgs:
                pkgs.append(k)
    rows = []
    for label, get in (
        ("folder", lambda r: f"`{r.root}`"),
        ("config source", lambda r: f"`{r.config.get('source') or DASH}`"),
        ("started", lambda r: r.manifest.get("created", DASH)),
        ("command", lambda r: " ".join(r.manifest.get("command") or []) or DASH),
        ("git commit", lambda r: (r.manifest.get("git") or {}).get("commit") or DASH),
        ("uncommitted changes", lambda r: fmt((r.manifest.get("git") or {}).get("dirty"))),
        ("seed", lambda r: fmt(r.manifest.get("seed", r.config.get("seed")))),
        ("platform", lambda r: _platform(r.manifest.get("platform"))),
    ):
        rows.append([label] + [get(r) for r in runs])
    for p in pkgs:
        rows.append([p] + [str((r.manifest.get("versions") or {}).get(p) or "not installed") for r in runs])
    for run in runs:
        for name, checksum in (run.manifest.get("data") or {}).items():
            rows.append([f"data checksum: {name}"] + [f"`{str(checksum)[:16]}`" if r is run else "" for r in runs])
    sec.blocks.append(Table(["", *[r.name for r in runs]], rows, id="tbl-provenance",
                            caption="From each run's run.json.", text_cols=tuple(range(1, len(runs) + 1))))
    for run in runs:
        dirty = (run.manifest.get("git") or {}).get("dirty")
        if dirty:
            sec.blocks.append(Para(f"{run.name}: the working tree had uncommitted changes, so the "
                                   "commit alone does not reproduce these results.", note=True))
        mans = _unit_manifests(ctx, run)
        commits = {((m.get("git") or {}).get("commit"), (m.get("git") or {}).get("dirty")) for m in mans}
        versions = {json.dumps(m.get("versions"), sort_keys=True) for m in mans}
        if len(commits) > 1 or len(versions) > 1:
            sec.blocks.append(Para(f"{run.name}: its units were produced by {len(commits)} git states "
                                   f"and {len(versions)} package sets (reused units from earlier runs).",
                                   note=True))
    rows = []
    for run in runs:
        for m in [x for x in ctx.res.models if x.run == run.name]:
            rows.append(_unit_row(run, f"{m.dataset}: train {m.label}", m.status, m.manifest, m.path))
        for a in [x for x in ctx.res.attacks if x.run == run.name]:
            rows.append(_unit_row(run, f"{a.dataset}: {a.label} ({a.mode}) vs {a.detector}",
                                       a.status, a.manifest, a.path))
        for rt in [x for x in ctx.res.retrains if x.run == run.name]:
            rows.append(_unit_row(run, f"{rt.dataset}: retrain {rt.detector} vs {rt.attack}",
                                       rt.status, rt.manifest, rt.path))
    multi = ctx.res.multi
    sec.blocks.append(Table(
        (["run"] if multi else []) + ["unit", "status", "created", "seed", "commit", "dirty", "folder"],
        [r if multi else r[1:] for r in rows], id="tbl-units", text_cols=(1,) if not multi else (2,),
        caption="Every unit of the run matrix with its manifest.json provenance."))
    for run in runs:
        sec.blocks.append(Details(f"Run config: {run.name}", json.dumps(run.config, indent=2, ensure_ascii=False)))
    return sec


def _unit_row(run: RunInfo, label: str, status: str, man: dict[str, Any] | None,
              path: Path) -> list[str]:
    man = man or {}
    git = man.get("git") or {}
    with contextlib.suppress(ValueError):
        path = path.relative_to(run.root)
    return [run.name, label, status, man.get("created", DASH), fmt(man.get("seed")),
            (git.get("commit") or DASH)[:10], fmt(git.get("dirty")), f"`{path}`" if path else DASH]


def _platform(p: dict[str, Any] | None) -> str:
    if not p:
        return DASH
    # the CPU kind matters: float results repeat bit for bit only on the same kind
    kind = ", ".join(str(p[k]) for k in ("cpu", "torch_cpu_capability") if p.get(k))
    return f"{p.get('system', '?')} {p.get('machine', '?')}, {p.get('cpus', '?')} CPUs" + (f" ({kind})" if kind else "")


def _one_class(conf: Any) -> bool:
    try:
        (tn, fp), (fn, tp) = conf
    except (TypeError, ValueError):
        return False
    return (fp + tp == 0) or (tn + fn == 0)
