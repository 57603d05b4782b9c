"""K written posts per user: the generic sequential strategy and the per-user facts of
a K-post attack.

**The sequential strategy** (:func:`write_sequential`, the default
:meth:`advseq.attack.Attack.write_posts`) gives any one-post attack K posts: it writes
post 1 for every task with :meth:`~advseq.attack.Attack.run`, then for each user not yet
at the goal writes post 2 with post 1 in the history, and so on up to K. Between posts
the attacker checks where a user stands with one query on its own threat model (a score
if granted, else a label), so the query budget covers every post and every check; a user
who cannot afford the check (and the post after it) stops with status
``budget_exhausted``. On a surrogate (transfer mode) the attacker writes all K posts: the
surrogate's verdict is no evidence of the deployed detector's, and the attacker learns
nothing more by stopping (:func:`short_of_goal`, the rule every K-post strategy uses).
Each slot is one ``run`` call over every user still writing, so tensor attacks stay
batched.

The K posts of one user must be distinct texts: a post that is a near copy
(:func:`advseq.candidates.is_near_copy`) of one already written for the user is written
again with other random draws (the task's ``attempt``) up to :data:`RETRIES` times;
after that the user's sequence ends without it.

**Facts of written posts** (:func:`written_states`, :func:`posts_fields`,
:func:`posts_summary`): the user as the deployed detector sees it after each post, the
record fields and the summary keys a K-post run adds (the design contract of issue 19
in ``docs/threat-models.md``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from advseq.attack import AttackOutput, AttackSpec, AttackTask
from advseq.quality.copies import is_near_copy
from advseq.schema import User

if TYPE_CHECKING:
    from advseq.attack import Attack
    from advseq.detector import Detector
    from advseq.threat import ThreatModel

#: how many times a post that is a near copy of the user's earlier written posts is
#: written again (with other random draws) before the user's sequence ends
RETRIES = 2


def write_sequential(attack: Attack, tasks: Sequence[AttackTask], threat: ThreatModel,
                     spec: AttackSpec) -> list[list[AttackOutput]]:
    """Up to ``spec.posts`` posts per task, one slot at a time (see the module doc); the
    first slot is exactly the one-post attack's ``run``."""
    written: list[list[AttackOutput]] = [[] for _ in tasks]
    current = list(tasks)
    active = list(range(len(tasks)))
    # an attack that declares needs queries to write a post; one that needs nothing does not
    write_cost = 1 if attack.requires else 0
    for slot in range(spec.posts):
        if slot:
            active = still_writing(active, current, written, threat, write_cost)
        if not active:
            break
        kept = _write_slot(attack, active, current, threat, write_cost)
        nxt = []
        for i in active:
            out = kept.get(i)
            if out is None:              # still a near copy after the retries: stop here
                written[i][-1].info.setdefault("stopped", "near_copy")
                continue
            written[i].append(out)
            current[i] = spec.next_task(current[i], out.post)
            if out.status != "budget_exhausted":
                nxt.append(i)
        active = nxt
    return written


def _write_slot(attack: Attack, active: list[int], current: list[AttackTask], threat: ThreatModel,
                write_cost: int) -> dict[int, AttackOutput]:
    """One post for each active task, retrying near copies of its written posts."""
    kept: dict[int, AttackOutput] = {}
    pending = active
    for attempt in range(RETRIES + 1):
        run_tasks = [replace(current[i], attempt=attempt) if attempt else current[i] for i in pending]
        outputs = attack.run(run_tasks, threat)
        if len(outputs) != len(run_tasks):
            raise RuntimeError(f"attack {attack.name!r} returned {len(outputs)} posts for "
                               f"{len(run_tasks)} users")
        retry = []
        for i, out in zip(pending, outputs, strict=True):
            if current[i].written and is_near_copy(out.post, current[i].written):
                if out.status != "budget_exhausted" and threat.affordable(
                        [current[i].history], max(1, write_cost))[0]:
                    retry.append(i)
            else:
                kept[i] = out
        pending = retry
        if not pending:
            break
    return kept


def short_of_goal(threat: ThreatModel, prob: float, target: int) -> bool:
    """Whether a user whose own check reads ``prob`` writes its next post: while short of
    the goal, and always on a surrogate (see the module doc)."""
    return threat.surrogate or not threat.reaches(prob, target)


def still_writing(active: list[int], current: list[AttackTask], written: list[list[AttackOutput]],
                  threat: ThreatModel, write_cost: int = 0) -> list[int]:
    """The users that go on writing: one query each on the attacker's threat model says
    whether the goal is reached (none on a surrogate, where everyone goes on); a user who
    cannot afford it and the next post stops (its last post's status becomes
    ``budget_exhausted``)."""
    users = [current[i].history for i in active]
    can = threat.affordable(users, (0 if threat.surrogate else 1) + write_cost)
    for i, ok in zip(active, can, strict=True):
        if not ok:
            last = written[i][-1]
            written[i][-1] = AttackOutput(last.post, "budget_exhausted", last.info)
    asking = [i for i, ok in zip(active, can, strict=True) if ok]
    if not asking or threat.surrogate:
        return asking
    users = [current[i].history for i in asking]
    if threat.has("score"):
        probs = threat.score(users)
        goes_on = [short_of_goal(threat, float(p), current[i].target) for i, p in zip(asking, probs, strict=True)]
    else:
        labels = threat.label(users)
        goes_on = [int(lab) != current[i].target for i, lab in zip(asking, labels, strict=True)]
    return [i for i, more in zip(asking, goes_on, strict=True) if more]


# ---- facts of written posts --------------------------------------------------------------

def slot_tasks(spec: AttackSpec, task: AttackTask, posts: Sequence[str]) -> list[AttackTask]:
    """The task of each slot when ``posts`` were written in order from ``task``."""
    chain = [task]
    for text in posts[:-1]:
        chain.append(spec.next_task(chain[-1], text))
    return chain


def written_states(spec: AttackSpec, task: AttackTask, posts: Sequence[str]) -> list[User]:
    """The user as the detector sees it after each of ``posts`` (``[k]``: after k + 1)."""
    return [t.with_post(text) for t, text in zip(slot_tasks(spec, task, posts), posts, strict=True)]


def check_written(name: str, tasks: Sequence[AttackTask], written: Sequence[Sequence[AttackOutput]],
                  k_max: int) -> None:
    """An attack's ``write_posts`` answer must hold 1..K posts for each task."""
    if len(written) != len(tasks):
        raise RuntimeError(f"attack {name!r} wrote for {len(written)} users, asked for {len(tasks)}")
    for outs in written:
        if not 1 <= len(outs) <= k_max:
            raise RuntimeError(f"attack {name!r} wrote {len(outs)} posts for a user (1 to {k_max} allowed)")


def merged_output(outputs: Sequence[AttackOutput]) -> AttackOutput:
    """One output standing for a user's written posts: the last post; status
    ``budget_exhausted`` if any post met the budget, else the last post's; the posts'
    infos as a list (when any has one)."""
    status = "budget_exhausted" if any(o.status == "budget_exhausted" for o in outputs) \
        else outputs[-1].status
    infos = [o.info for o in outputs]
    return AttackOutput(outputs[-1].post, status, {"posts": infos} if any(infos) else {})


def score_states(detector: Detector, users: Sequence[User], states: dict[str, list[User]]) -> \
        tuple[np.ndarray, dict[str, list[float]]]:
    """Deployed P(malicious): ``first[j]`` of ``users[j]`` after its first written post
    (itself if none was written: the one-post evaluator's exact call), and every user's
    probability after each written post. Two ``predict_proba`` calls in all."""
    first = detector.predict_proba([states[u.user_id][0] if u.user_id in states else u for u in users])
    rest = [(uid, s) for uid, seq in states.items() for s in seq[1:]]
    later = detector.predict_proba([s for _, s in rest]) if rest else np.zeros(0)
    probs: dict[str, list[float]] = {}
    for u, p in zip(users, first, strict=True):
        if u.user_id in states:
            probs[u.user_id] = [float(p)]
    for (uid, _), p in zip(rest, later, strict=True):
        probs[uid].append(float(p))
    return first, probs


def reaches_goal(prob: float, label: int, goal: str, threshold: float) -> bool:
    """Whether a probability gives the goal's verdict: benign under ``evasion``, the
    other verdict than the true label under ``flip`` (the evaluator's rule)."""
    pred = int(prob >= threshold)
    return pred == 0 if goal == "evasion" else pred != label


def posts_fields(rec: dict[str, Any], posts: Sequence[str], probs: Sequence[float], goal: str,
                 threshold: float) -> dict[str, Any]:
    """What a K-post record adds: the written posts, P(malicious) after each, and
    ``posts_to_evade`` (the smallest 1-based k reaching the goal, for an eligible user)."""
    to_evade = None
    if rec["eligible"]:
        to_evade = next((k + 1 for k, p in enumerate(probs)
                         if reaches_goal(p, rec["label"], goal, threshold)), None)
    return {"posts": list(posts), "probs": [round(p, 6) for p in probs], "posts_to_evade": to_evade}


def _state_at(rec: dict[str, Any], k: int) -> float:
    """P(malicious) after k posts (a user that stopped earlier keeps its last state)."""
    probs = rec.get("probs") or [rec["attacked_prob"]]
    return probs[min(k, len(probs)) - 1]


def distinct_violations(records: Sequence[dict[str, Any]]) -> int:
    """Written posts that are near copies of an earlier one of the same user's posts."""
    n = 0
    for rec in records:
        posts = rec.get("posts") or []
        n += sum(is_near_copy(p, posts[:j]) for j, p in enumerate(posts) if j)
    return n


def posts_summary(records: Sequence[dict[str, Any]], spec: AttackSpec, threshold: float = 0.5) -> dict[str, Any]:
    """The summary keys of a K-post run: evasion and goal success after each k,
    posts-to-evade median and histogram (eligible users), and distinct violations."""
    k_max = spec.posts
    detected = [r for r in records if r["label"] == 1 and r["clean_pred"] == 1]
    eligible = [r for r in records if r["eligible"]]
    evasion, goal = [], []
    for k in range(1, k_max + 1):
        evasion.append(round(sum(_state_at(r, k) < threshold for r in detected) / len(detected), 6)
                       if detected else None)
        goal.append(round(sum(reaches_goal(_state_at(r, k), r["label"], spec.goal, threshold)
                              for r in eligible) / max(1, len(eligible)), 6))
    steps = [r["posts_to_evade"] for r in eligible if r.get("posts_to_evade") is not None]
    hist = {str(k): steps.count(k) for k in range(1, k_max + 1)}
    hist["none"] = len(eligible) - len(steps)
    return {"posts": k_max, "evasion_by_k": evasion, "goal_success_by_k": goal,
            "posts_to_evade_median": float(statistics.median(steps)) if steps else None,
            "posts_to_evade_hist": hist, "distinct_violations": distinct_violations(records)}
