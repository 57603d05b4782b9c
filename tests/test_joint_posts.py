"""Joint K-post attacks (issue 19): HotFlip's joint search over K slots, UniTrigger's
per-slot triggers, PETGEN's conditioning on the posts it wrote; K = 1 unchanged."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from advseq.attack import AttackSpec, create_attack
from advseq.candidates import is_near_copy
from advseq.detector import load_detector
from advseq.evaluation import RESULTS_FILE, read_records, run_attack
from advseq.multipost import written_states
from advseq.schema import Dataset
from advseq.threat import ThreatModel
from advseq.training import recorded_split
from attacks.petgen.generator import task_example

#: sha256 (16 hex) of [[user_id, post], ...] of a 12-user white-box run on the session cnn,
#: written by the one-post code before K posts existed: K = 1 must not change one post.
#: (A change of the detector's training or of the demo data changes them too: then
#: regenerate them from the code before the change, never from the code under test.)
ONE_POST_DIGESTS = {"hotflip": ("d38871eed4455508", {}),
                    "unitrigger": ("9e26c79372baf6c4", {"iterations": 1, "batch_users": 8})}
#: PETGEN with test_petgen's small settings (slow: it trains a generator)
PETGEN_SMALL = {"lm": {"n_layer": 1, "n_embd": 32, "n_head": 2, "epochs": 1, "max_post_tokens": 16,
                       "max_context_tokens": 12},
                "mle_epochs": 1, "adv_steps": 4, "rounds": 1, "select_k": 4, "select_epochs": 1,
                "candidates": 4, "batch_size": 16, "max_posts": 8}
#: PETGEN trains a generator, whose floats differ between CPU kinds (advseq promises the
#: same numbers on one kind of machine): the digests the one-post code (c4ea15d) gives on
#: each CPU kind seen, each regenerated from that code on that machine
PETGEN_DIGESTS = frozenset({"63b65cad5e34685f",     # the machine the test was written on
                            "54aff72344f04057",     # "Intel(R) Xeon(R) Processor", 2 cores
                            "80ddd4bce9930e17"})    # "AMD EPYC", 2 cores (468c0bb and HEAD alike)


def _digest(recs: list[dict]) -> str:
    return hashlib.sha256(json.dumps([[r["user_id"], r.get("post")] for r in recs]).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", [*sorted(ONE_POST_DIGESTS),
                                  pytest.param("petgen", marks=pytest.mark.slow)])
def test_one_post_runs_unchanged(name: str, demo: Dataset, cnn_dir: Path, tmp_path: Path) -> None:
    digest, params = ONE_POST_DIGESTS.get(name, (PETGEN_DIGESTS, PETGEN_SMALL))
    run_attack(demo, cnn_dir, name, out=tmp_path, attack_params=params, max_users=12, quality=False,
               progress=False)
    recs = read_records(tmp_path / RESULTS_FILE)
    assert _digest(recs) in (digest if isinstance(digest, frozenset) else {digest})
    assert not any("posts" in r or "probs" in r for r in recs)


@pytest.fixture(scope="module")
def split(demo: Dataset, cnn_dir: Path):
    return recorded_split(cnn_dir, demo)


def _tasks(split, spec: AttackSpec, n: int = 4) -> list:
    users = [u for u in split.test if u.label == 1][:n]
    return [spec.task(u) for u in users]


def _distinct(posts: list[str]) -> bool:
    return not any(is_near_copy(p, posts[:j]) for j, p in enumerate(posts) if j)


def test_joint_hotflip_writes_distinct_posts_deterministically(split, cnn_dir: Path) -> None:
    spec = AttackSpec(posts=3)
    tasks = _tasks(split, spec)
    det = load_detector(cnn_dir)
    runs = []
    for _ in range(2):
        threat = ThreatModel(det, "white-box")
        atk = create_attack("hotflip", max_flips=1)       # one flip per slot: the search needs more slots
        runs.append((atk.write_posts(tasks, threat, spec), dict(threat.queries)))
    (written, queries), (again, queries2) = runs
    assert [[o.post for o in w] for w in written] == [[o.post for o in w] for w in again]
    assert queries == queries2
    assert any(len(w) == 3 for w in written) and all(1 <= len(w) <= 3 for w in written)
    one = create_attack("hotflip", max_flips=1).run(tasks, ThreatModel(det, "white-box"))
    for task, outs, first in zip(tasks, written, one, strict=True):
        posts = [o.post for o in outs]
        assert _distinct(posts)
        # the attacker's estimate is the detector's verdict on the posts as text
        after = det.predict_proba([written_states(spec, task, posts)[-1]])[0]
        assert outs[-1].info["surrogate_prob"] == pytest.approx(after, abs=1e-5)
        if len(outs) == 1:                     # at the goal after one post: the one-post attack's
            assert posts == [first.post]


def test_joint_hotflip_keeps_the_budget(split, cnn_dir: Path) -> None:
    spec = AttackSpec(posts=4)
    tasks = _tasks(split, spec)
    threat = ThreatModel(load_detector(cnn_dir), "white-box", budget=40)
    written = create_attack("hotflip", max_flips=2).write_posts(tasks, threat, spec)
    assert all(threat.queries[t.user_id] <= 40 for t in tasks)
    assert any(w[-1].status == "budget_exhausted" for w in written)
    assert all(o.status == "ok" for w in written for o in w[:-1])


def test_joint_unitrigger_learns_a_trigger_per_slot(split, cnn_dir: Path) -> None:
    spec = AttackSpec(posts=2)
    threat = ThreatModel(load_detector(cnn_dir), "white-box")
    atk = create_attack("unitrigger", iterations=1, batch_users=8)
    atk.prepare(Dataset(split.train.users[:60]), threat, spec)
    assert len(atk.slot_triggers_) == 2
    tasks = _tasks(split, spec)
    written = atk.write_posts(tasks, threat, spec)
    for outs in written:
        posts = [o.post for o in outs]
        assert 1 <= len(posts) <= 2 and _distinct(posts)
        assert all(p.endswith(trig) for p, trig in zip(posts, atk.slot_triggers_, strict=False))
    one = create_attack("unitrigger", iterations=1, batch_users=8)
    one.prepare(Dataset(split.train.users[:60]), threat, AttackSpec())
    assert not hasattr(one, "slot_triggers_")
    with pytest.raises(Exception, match="prepare"):
        one.write_posts(tasks, threat, spec)


def test_petgen_conditions_on_the_written_posts(split, cnn_dir: Path) -> None:
    spec = AttackSpec(posts=3)
    user = next(u for u in split.test if u.label == 1 and u.posts[-1].context)
    t0 = spec.task(user)
    t1 = spec.next_task(t0, "a post the attacker wrote")
    e0, e1 = task_example(t0), task_example(t1)
    assert [p.text for p in e1.history] == [*(p.text for p in e0.history), "a post the attacker wrote"]
    # the user's real last post stays on the target context; the written one is on it too
    assert e1.relevancy[: len(e0.relevancy)] == e0.relevancy and e1.relevancy[-1] == 1.0
    atk = create_attack("petgen")
    assert (atk.np_rng(t0, "sample").random(4) != atk.np_rng(t1, "sample").random(4)).all()
    assert (atk.np_rng(t1, "sample").random(4) != atk.np_rng(replace(t1, attempt=1), "sample").random(4)).all()
    # one trained generator serves every K
    threat = ThreatModel(load_detector(cnn_dir), "white-box")
    train = Dataset(split.train.users[:20])
    assert atk.generator_key(train, spec, threat) == atk.generator_key(train, AttackSpec(), threat)
    assert atk.generator_key(train, AttackSpec(), threat)["spec"] == AttackSpec().to_dict()


@pytest.mark.slow
def test_joint_hotflip_evades_at_least_as_often_as_sequential(split, cnn_dir: Path) -> None:
    from advseq.multipost import write_sequential

    spec = AttackSpec(posts=2)
    det = load_detector(cnn_dir)
    users = [u for u in split.test if u.label == 1]
    detected = [u for u, p in zip(users, det.predict_proba(users), strict=True) if p >= 0.5][:12]
    tasks = [spec.task(u) for u in detected]
    evaded = {}
    for name, write in (("joint", None), ("sequential", write_sequential)):
        atk, threat = create_attack("hotflip", max_flips=2), ThreatModel(det, "white-box")
        written = atk.write_posts(tasks, threat, spec) if write is None else write(atk, tasks, threat, spec)
        final = [written_states(spec, t, [o.post for o in w])[-1] for t, w in zip(tasks, written, strict=True)]
        evaded[name] = int((det.predict_proba(final) < 0.5).sum())
    assert evaded["joint"] >= evaded["sequential"], evaded
