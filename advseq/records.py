"""One user's record of an attack run and the summary of a run's records.

A record says what the attack wrote for the user (``post``; K posts: ``posts`` with
P(malicious) after each), the deployed detector's verdict before and after, whether the
goal was reached, queries and time. :func:`posted` is the rule for what a user posts of an
attack's outputs; :func:`summarize` turns records into the attack and detection metrics.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from advseq.attack import AttackOutput, AttackSpec
from advseq.detector import Detector
from advseq.errors import ConfigError
from advseq.metrics import classification_metrics
from advseq.schema import User
from advseq.threat import ThreatModel


def posted(outputs: Sequence[AttackOutput]) -> list[str]:
    """What the user posts of an attack's outputs (in order): every post up to the first
    ``failed`` one. ``failed`` means the attack had nothing sensible to write, and its
    fallback text (a truncated copy of the context, say) is not the attack's writing:
    crediting its verdict to the attack would overstate it, and an attacker with nothing
    to write posts nothing. So the user is scored without it, the record keeps it as
    ``info.fallback_post`` and ``post`` None, and the quality report leaves it out: the
    rule for one post and K posts alike."""
    out = []
    for o in outputs:
        if o.status == "failed":
            break
        out.append(o.post)
    return out


def user_record(user: User, clean_prob: float, attacked_prob: float, spec: AttackSpec, threshold: float,
                written: tuple[Any, Any] | None, queries: int, seconds: float) -> dict[str, Any]:
    clean_pred = int(clean_prob >= threshold)
    attacked_pred = int(attacked_prob >= threshold)
    if spec.goal == "evasion":
        eligible = user.label == 1 and clean_pred == 1
        success = eligible and attacked_pred == 0
    else:
        eligible = clean_pred == user.label
        success = eligible and attacked_pred != user.label
    rec: dict[str, Any] = {
        "user_id": user.user_id, "label": user.label, "targeted": written is not None,
        "clean_prob": round(clean_prob, 6), "attacked_prob": round(attacked_prob, 6),
        "clean_pred": clean_pred, "attacked_pred": attacked_pred,
        "eligible": bool(eligible), "success": bool(success),
        "flipped": clean_pred == user.label and attacked_pred != clean_pred,
        "queries": int(queries), "seconds": round(seconds, 4) if written else 0.0,
        "status": "not_targeted", "post": None, "context": None,
    }
    if written is not None:
        task, output = written
        post = output.post if posted([output]) else None
        rec.update(status=output.status, post=post, context=task.context)
        info = output.info if post is not None else {**output.info, "fallback_post": output.post}
        if info:
            rec["info"] = info
    return rec


def one_post_records(atk: Any, users: Sequence[User], clean: Sequence[float], tasks: Sequence[Any],
                     threat: ThreatModel, deployed: Detector, spec: AttackSpec,
                     threshold: float) -> list[dict[str, Any]]:
    """The records of one batch of a one-post attack: its post for every task, scored
    once on the deployed detector."""
    t0 = time.perf_counter()
    outputs = atk.run(tasks, threat) if tasks else []
    seconds = time.perf_counter() - t0
    if len(outputs) != len(tasks):
        raise RuntimeError(f"attack {atk.name!r} returned {len(outputs)} posts for {len(tasks)} users")
    written = {t.user_id: (t, o) for t, o in zip(tasks, outputs, strict=True)}
    attacked_users = [written[u.user_id][0].with_post(written[u.user_id][1].post)
                      if u.user_id in written and posted([written[u.user_id][1]]) else u for u in users]
    after = deployed.predict_proba(attacked_users)
    return [user_record(u, p_clean, float(p_after), spec, threshold, written.get(u.user_id),
                    threat.queries[u.user_id], seconds / max(1, len(tasks)))
            for u, p_clean, p_after in zip(users, clean, after, strict=True)]


def posts_records(atk: Any, users: Sequence[User], clean: Sequence[float], tasks: Sequence[Any],
                  threat: ThreatModel, deployed: Detector, spec: AttackSpec,
                  threshold: float) -> list[dict[str, Any]]:
    """The records of one batch of a K-post attack (:mod:`advseq.multipost`): the
    attack's posts for every task, the deployed detector's verdict after each post (all
    users and posts in two calls), and the state after the last post."""
    from advseq.multipost import (
        check_written,
        merged_output,
        posts_fields,
        score_states,
        written_states,
    )

    t0 = time.perf_counter()
    written = atk.write_posts(tasks, threat, spec) if tasks else []
    seconds = time.perf_counter() - t0
    check_written(atk.name, tasks, written, spec.posts)
    posts = {t.user_id: posted(outs) for t, outs in zip(tasks, written, strict=True)}
    states = {t.user_id: written_states(spec, t, posts[t.user_id]) for t in tasks if posts[t.user_id]}
    first, probs = score_states(deployed, users, states)
    merged = {}
    for t, outs in zip(tasks, written, strict=True):
        n = len(posts[t.user_id])           # a failed post ends the user's sequence (posted())
        out = merged_output(outs[:n] or outs[:1])
        if 0 < n < len(outs):
            out.info["ended"] = f"post {n + 1} failed: {outs[n].info.get('reason', 'nothing to write')}"
        merged[t.user_id] = (t, out)
    batch = []
    for u, p_clean, p_first in zip(users, clean, first, strict=True):
        seq = probs.get(u.user_id, [float(p_first)])
        rec = user_record(u, p_clean, seq[-1], spec, threshold, merged.get(u.user_id),
                      threat.queries[u.user_id], seconds / max(1, len(tasks)))
        rec.update(posts_fields(rec, posts.get(u.user_id, []), seq if u.user_id in posts else [],
                                spec.goal, threshold))
        batch.append(rec)
    return batch


def summarize(records: Sequence[dict[str, Any]], *, spec: AttackSpec, config: dict[str, Any]) -> dict[str, Any]:
    """Attack and detection metrics from the per-user records."""
    if not records:
        raise ConfigError("no users were scored")
    labels = np.array([r["label"] for r in records])
    clean = np.array([r["clean_prob"] for r in records])
    after = np.array([r["attacked_prob"] for r in records])
    targeted = [r for r in records if r["targeted"]]
    detected = [r for r in records if r["label"] == 1 and r["clean_pred"] == 1]
    queries = [r["queries"] for r in targeted]
    seconds = sum(r["seconds"] for r in targeted)
    status = Counter(r["status"] for r in targeted)
    return {
        "attack": config["attack"], "mode": config["mode"], "goal": spec.goal,
        "placement": spec.placement, "detector": config["detector_name"],
        "n_users": len(records), "n_targeted": len(targeted),
        "n_eligible": sum(r["eligible"] for r in records),
        "attack_success_rate": round(sum(r["flipped"] for r in records) / len(records), 6),
        "evasion_rate": round(sum(r["attacked_pred"] == 0 for r in detected) / len(detected), 6)
        if detected else None,
        "goal_success_rate": round(sum(r["success"] for r in records) / max(1, sum(r["eligible"] for r in records)), 6),
        "before": classification_metrics(labels, clean),
        "after": classification_metrics(labels, after),
        "queries_mean": round(statistics.mean(queries), 3) if queries else 0.0,
        "queries_median": float(statistics.median(queries)) if queries else 0.0,
        "budget": config["budget"],
        "budget_exhausted": status.get("budget_exhausted", 0),
        "failed": status.get("failed", 0),
        "attack_seconds": round(seconds, 3),
        "posts_per_second": round(len(targeted) / seconds, 3) if seconds else None,
    }
