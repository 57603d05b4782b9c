"""K written posts per user (issue 19): the spec and tasks of later slots, distinct posts."""

from __future__ import annotations

import statistics

import pytest

from advseq.attack import Attack, AttackOutput, AttackSpec, AttackTask, create_attack
from advseq.candidates import copycat_posts, is_near_copy, own_posts
from advseq.errors import ConfigError
from advseq.schema import Post, User


def _user(times: list[float]) -> User:
    return User("u1", 1, tuple(Post(f"post number {i} text", f"c{i}", t, None)
                               for i, t in enumerate(times)))


@pytest.mark.parametrize("bad", [0, 65, -1, 2.0, True, "2"])
def test_posts_is_validated(bad) -> None:
    with pytest.raises(ConfigError, match="posts"):
        AttackSpec(posts=bad)


def test_to_dict_omits_one_post() -> None:
    assert "posts" not in AttackSpec().to_dict()
    assert AttackSpec().to_dict() == {"goal": "evasion", "placement": "append", "context": None,
                                      "max_tokens": 30}
    assert AttackSpec(posts=4).to_dict()["posts"] == 4


def test_next_task_append_spaces_posts_by_the_median_gap() -> None:
    spec = AttackSpec(posts=3)
    user = _user([0.0, 10.0, 30.0, 40.0])     # gaps 10, 20, 10: median 10
    t0 = spec.task(user)
    assert (t0.slot, t0.posts, t0.written, t0.timestamp) == (0, 3, (), 50.0)
    t1 = spec.next_task(t0, "first written")
    assert (t1.slot, t1.written, t1.timestamp, t1.context) == (1, ("first written",), 60.0, "c3")
    assert [p.text for p in t1.history.posts][-1] == "first written"
    assert t1.history.posts[-1].timestamp == 50.0
    t2 = spec.next_task(t1, "second written")
    assert (t2.slot, t2.written, t2.timestamp) == (2, ("first written", "second written"), 70.0)
    assert len(t2.history.posts) == 6 and t2.user is user


def test_next_task_replace_last() -> None:
    spec = AttackSpec(posts=2, placement="replace-last")
    user = _user([0.0, 10.0, 30.0, 40.0])
    t0 = spec.task(user)
    assert t0.timestamp == 40.0 and len(t0.history.posts) == 3
    t1 = spec.next_task(t0, "replacement")
    assert t1.timestamp == 50.0 and [p.text for p in t1.history.posts][-1] == "replacement"
    assert len(t1.history.posts) == 4


def test_next_task_without_timestamps() -> None:
    user = User("u", 1, tuple(Post(f"p {i}", None, None, None) for i in range(3)))
    spec = AttackSpec(posts=2)
    assert spec.next_task(spec.task(user), "x").timestamp is None


def test_rng_unchanged_at_slot_zero() -> None:
    atk = create_attack("copycat", seed=3)
    user = _user([0.0, 1.0, 2.0])
    t0 = AttackSpec(posts=4).task(user)
    old = AttackTask(user=t0.user, history=t0.history, context=t0.context, target=t0.target,
                     timestamp=t0.timestamp, max_tokens=t0.max_tokens)
    assert atk.rng(t0, "s").random() == atk.rng(old, "s").random()
    t1 = AttackSpec(posts=4).next_task(t0, "x")
    assert atk.rng(t1, "s").random() != atk.rng(t0, "s").random()
    from dataclasses import replace

    assert atk.rng(replace(t1, attempt=1), "s").random() != atk.rng(t1, "s").random()


def test_is_near_copy() -> None:
    assert is_near_copy("Hello World", ["hello world"])
    assert is_near_copy("a b c d e f g h i", ["a b c d e f g h i j"])        # Jaccard 0.9
    assert not is_near_copy("a b c d", ["a b x y"])
    assert not is_near_copy("anything", [])
    assert is_near_copy("", [""])


def test_copycat_skips_written_posts(demo) -> None:
    atk = create_attack("copycat", seed=0)
    spec = AttackSpec(posts=3)
    for user in [u for u in demo.users if u.label == 1][:10]:
        task = spec.task(user)
        written: list[str] = []
        distinct = len({p for p in own_posts(task)})
        for _ in range(min(3, distinct)):
            post = copycat_posts([task], atk.rng)[0]
            if written:
                assert not is_near_copy(post, written) or all(
                    is_near_copy(c, written) for c in own_posts(task))
            written.append(post)
            task = spec.next_task(task, post)


# ---- the evaluator with K posts ---------------------------------------------------------

TIMING = {"seconds", "attack_seconds", "posts_per_second", "prepare_seconds"}


def _attack(demo, cnn_dir, name, out, **kw):
    from advseq.evaluation import run_attack

    kw.setdefault("quality", False)
    kw.setdefault("max_users", 24)
    return run_attack(demo, cnn_dir, name, out=out, progress=False, **kw)


def _records(out):
    from advseq.evaluation import RESULTS_FILE, read_records

    return read_records(out / RESULTS_FILE)


def _untimed(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in TIMING}


def _distinct(posts: list[str]) -> bool:
    return not any(is_near_copy(p, posts[:j]) for j, p in enumerate(posts) if j)


def test_one_post_run_is_the_run_without_posts(demo, cnn_dir, tmp_path) -> None:
    a = _attack(demo, cnn_dir, "copycat", tmp_path / "a")
    b = _attack(demo, cnn_dir, "copycat", tmp_path / "b", spec=AttackSpec(posts=1))
    assert _untimed(a) == _untimed(b)
    assert not {"posts", "evasion_by_k", "posts_to_evade_hist", "quality_by_k"} & set(a)
    ra, rb = _records(tmp_path / "a"), _records(tmp_path / "b")
    assert [_untimed(r) for r in ra] == [_untimed(r) for r in rb]
    assert not any({"posts", "probs", "posts_to_evade"} & set(r) for r in rb)
    assert (tmp_path / "a" / "run.json").read_bytes() == (tmp_path / "b" / "run.json").read_bytes()


def _check_records(records: list[dict], k_max: int, goal: str = "evasion") -> None:
    from advseq.multipost import reaches_goal

    for r in records:
        assert len(r["posts"]) == len(r["probs"])
        if not r["targeted"]:
            assert r["posts"] == [] and r["posts_to_evade"] is None
            continue
        assert 1 <= len(r["posts"]) <= k_max and r["post"] == r["posts"][-1]
        assert r["attacked_prob"] == r["probs"][-1]
        assert _distinct(r["posts"]), r["posts"]
        hits = [k + 1 for k, p in enumerate(r["probs"]) if reaches_goal(p, r["label"], goal, 0.5)]
        assert r["posts_to_evade"] == (hits[0] if hits and r["eligible"] else None)


def test_k_posts_copycat_white_box(demo, cnn_dir, tmp_path) -> None:
    one = _attack(demo, cnn_dir, "copycat", tmp_path / "k1")
    s = _attack(demo, cnn_dir, "copycat", tmp_path / "k3", spec=AttackSpec(posts=3))
    records, base = _records(tmp_path / "k3"), {r["user_id"]: r for r in _records(tmp_path / "k1")}
    _check_records(records, 3)
    # slot 0 is the one-post attack, scored the same way
    assert s["evasion_by_k"][0] == one["evasion_rate"]
    for r in records:
        if r["targeted"]:
            assert r["posts"][0] == base[r["user_id"]]["post"]
            assert r["probs"][0] == base[r["user_id"]]["attacked_prob"]
    # white-box: the attacker's check is the deployed verdict, so evaded users stop there
    assert s["evasion_by_k"] == sorted(s["evasion_by_k"]) and s["evasion_by_k"][-1] == s["evasion_rate"]
    assert s["goal_success_by_k"][-1] == s["goal_success_rate"]
    for r in records:
        if r["targeted"] and len(r["posts"]) < 3 and "stopped" not in str(r.get("info")):
            assert r["attacked_pred"] == 0 or r["status"] == "budget_exhausted"
    assert any(len(r["posts"]) > 1 for r in records)
    hist = s["posts_to_evade_hist"]
    assert list(hist) == ["1", "2", "3", "none"] and sum(hist.values()) == s["n_eligible"]
    assert s["posts"] == 3 and s["distinct_violations"] == 0
    steps = [r["posts_to_evade"] for r in records if r["posts_to_evade"]]
    assert steps and s["posts_to_evade_median"] == statistics.median(steps)
    import json

    assert json.loads((tmp_path / "k3" / "run.json").read_text())["spec"]["posts"] == 3


def test_k_posts_hotflip_distinct(demo, cnn_dir, tmp_path) -> None:
    s = _attack(demo, cnn_dir, "hotflip", tmp_path / "hf", spec=AttackSpec(posts=3),
                attack_params={"max_flips": 2}, max_users=16)
    _check_records(_records(tmp_path / "hf"), 3)
    assert s["distinct_violations"] == 0 and len(s["evasion_by_k"]) == 3


def test_k_posts_flip_goal_replace_last(demo, cnn_dir, tmp_path) -> None:
    s = _attack(demo, cnn_dir, "copycat", tmp_path / "fl", max_users=12,
                spec=AttackSpec(posts=2, goal="flip", placement="replace-last"))
    records = _records(tmp_path / "fl")
    _check_records(records, 2, goal="flip")
    assert all(r["targeted"] for r in records) and len(s["goal_success_by_k"]) == 2


def test_budget_covers_every_post(demo, cnn_dir, tmp_path) -> None:
    # 3 candidates a post, 1 check between posts: post 1 (3), check (4), post 2 (7); the
    # next check and post would need 4 more than the budget of 8 leaves
    s = _attack(demo, cnn_dir, "copycat", tmp_path / "b", mode="score", budget=8,
                attack_params={"choice": "best", "max_candidates": 3}, spec=AttackSpec(posts=4))
    records = [r for r in _records(tmp_path / "b") if r["targeted"]]
    _check_records(records, 4)
    assert max(r["queries"] for r in records) <= 8
    stopped = [r for r in records if r["posts_to_evade"] is None and r["eligible"]]
    assert stopped and all(len(r["posts"]) == 2 and r["queries"] == 7
                           and r["status"] == "budget_exhausted" for r in stopped)
    assert s["budget_exhausted"] >= len(stopped)


def test_resume_after_a_torn_partial_batch(demo, cnn_dir, tmp_path) -> None:
    import shutil

    kw = {"spec": AttackSpec(posts=2), "batch_size": 4, "max_users": 16}
    full = _attack(demo, cnn_dir, "copycat", tmp_path / "full", **kw)
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    results = tmp_path / "cut" / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:6]) + lines[6][:25])        # batch 2 half written, torn
    again = _attack(demo, cnn_dir, "copycat", tmp_path / "cut", resume=True, **kw)
    a, b = _records(tmp_path / "full"), _records(tmp_path / "cut")
    assert len(b) == 16 and len({r["user_id"] for r in b}) == 16
    assert sorted(map(str, map(_untimed, a))) == sorted(map(str, map(_untimed, b)))
    assert _untimed(full) == _untimed(again)
    with pytest.raises(ConfigError, match="different settings"):
        _attack(demo, cnn_dir, "copycat", tmp_path / "cut", resume=True,
                **{**kw, "spec": AttackSpec(posts=3)})


# ---- the sequential strategy on a stub detector -------------------------------------------

class _Fixed:
    """An attack that always writes the same post (a near copy from slot 1 on)."""

    name = "fixed"
    requires = frozenset()

    def __init__(self) -> None:
        self.calls: list[int] = []

    def run(self, tasks, threat):
        from advseq.attack import AttackOutput

        self.calls.append(len(tasks))
        return [AttackOutput(f"same post {t.slot if t.user_id == 'v' else ''}") for t in tasks]


def test_near_copies_are_retried_then_the_sequence_ends() -> None:
    from advseq.detector import CallableDetector
    from advseq.multipost import RETRIES, write_sequential
    from advseq.threat import ThreatModel

    users = [_user([0.0, 1.0]), User("v", 1, (Post("x y", "c", 0.0, None),))]
    tm = ThreatModel(CallableDetector(lambda us: [0.9] * len(us)), "label")
    atk = _Fixed()
    spec = AttackSpec(posts=3)
    out = write_sequential(atk, [spec.task(u) for u in users], tm, spec)
    assert [len(o) for o in out] == [1, 3]                         # u1 repeats itself, v does not
    assert out[0][0].info["stopped"] == "near_copy"
    assert atk.calls == [2, 2, *[1] * RETRIES, 1]                  # each slot batched, retries alone
    assert tm.queries["u1"] == 1 and tm.queries["v"] == 2          # one check between posts


def test_on_a_surrogate_every_post_is_written() -> None:
    """The deployed detector's own check stops a user at the goal; a surrogate's verdict
    does not (transfer: it is no evidence of the deployed one's), and costs no query."""
    from advseq.detector import CallableDetector
    from advseq.multipost import write_sequential
    from advseq.threat import ThreatModel

    class _Distinct(_Fixed):
        def run(self, tasks, threat):
            self.calls.append(len(tasks))
            return [AttackOutput(f"post {'abcdefgh'[t.slot]} {t.slot} words") for t in tasks]

    spec = AttackSpec(posts=3)
    benign = CallableDetector(lambda us: [0.1] * len(us))
    for surrogate, posts, checks in ((False, 1, 1), (True, 3, 0)):
        tm = ThreatModel(benign, "score", surrogate=surrogate)
        out = write_sequential(_Distinct(), [spec.task(_user([0.0, 1.0]))], tm, spec)
        assert len(out[0]) == posts and tm.queries["u1"] == checks


# ---- quality of K posts ---------------------------------------------------------------------

def test_quality_of_k_posts_covers_every_post() -> None:
    from advseq.quality import quality_report
    from tests.test_quality import FakeJudge, FakeLM, topic_dataset

    data = topic_dataset()
    split = data.split(0.5, seed=0)
    spec = AttackSpec(goal="flip", posts=3)
    records = []
    for i, u in enumerate(split.test):
        posts = [f"new post {i} number {k} on things" for k in range(1 + i % 3)]
        records.append({"user_id": u.user_id, "label": u.label, "targeted": True, "post": posts[-1],
                        "posts": posts, "context": spec.task(u).context})
    lm = FakeLM()
    rep = quality_report(records, data, split, spec, ref_lm=lm, judge=FakeJudge(), topic_counts=(2,))
    n = sum(len(r["posts"]) for r in records)
    assert rep["n_posts"] == n and len(rep["by_k"]) == 3
    assert [b["n_posts"] for b in rep["by_k"]] == [sum(len(r["posts"]) > k for r in records)
                                                  for k in range(3)]
    assert rep["attack"]["perplexity_judge"] == 7.0 + n
    one = quality_report([{**r, "posts": None} for r in records], data, split, AttackSpec(goal="flip"),
                         ref_lm=FakeLM(), judge=FakeJudge(), topic_counts=(2,))
    assert "by_k" not in one and one["n_posts"] == len(records)


def test_cached_reference_lm_scores_each_post_once() -> None:
    import numpy as np

    from advseq.quality.summary import _CachedPerplexity

    seen: list[str] = []

    class LM:
        def token_nll(self, posts, contexts):
            seen.extend(posts)
            return np.array([float(len(p)) for p in posts]), np.array([2] * len(posts))

    lm = _CachedPerplexity(LM())
    a = lm.perplexity(["ab", "abcd"], [None, "c"])
    assert lm.perplexity(["abcd", "ab"], ["c", None]) == a
    assert seen == ["ab", "abcd"]


def test_cli_posts(demo, cnn_dir, tmp_path) -> None:
    from typer.testing import CliRunner

    from advseq.cli import app
    from advseq.paths import demo_data

    args = ["attack", str(demo_data()), "-d", str(cnn_dir), "-a", "copycat", "--max-users", "12",
            "--no-quality", "--no-progress"]
    res = CliRunner().invoke(app, [*args, "--posts", "2", "-o", str(tmp_path / "k2")])
    assert res.exit_code == 0, res.output
    assert "evasion after 2 posts" in res.output and "median posts" in res.output
    bad = CliRunner().invoke(app, [*args, "--posts", "0", "-o", str(tmp_path / "k0")])
    assert bad.exit_code == 2 and "posts (K) must be an integer from 1 to 64" in bad.output
    one = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "k1")])
    assert one.exit_code == 0 and "evasion after" not in one.output


class _FailsAfter(Attack):
    """Writes ``ok_posts`` posts per user, then fails with a fallback post."""

    name = "fails-after-test"
    requires = frozenset()

    def __init__(self, ok_posts: int = 0, seed: int = 0) -> None:
        self.ok_posts = ok_posts
        self.seed = seed
        self._calls: dict[str, int] = {}

    def run(self, tasks, threat):  # type: ignore[no-untyped-def]
        out = []
        for t in tasks:
            n = self._calls.get(t.user_id, 0)
            self._calls[t.user_id] = n + 1
            if n < self.ok_posts:
                out.append(AttackOutput(f"my own words number {n} for {t.user_id}"))
            else:
                out.append(AttackOutput(t.user.posts[0].text, "failed", {"reason": "no usable candidate"}))
        return out


def test_a_failed_output_posts_nothing(demo, cnn_dir, tmp_path) -> None:
    """A failed output's fallback is kept in the record but not posted: the user is scored
    as before the attack, the quality report leaves it out, and a resumed run reads it."""
    from advseq import registry

    registry.attacks.register("fails-after-test", _FailsAfter)
    s = _attack(demo, cnn_dir, "fails-after-test", tmp_path / "one", mode="score")
    recs = [r for r in _records(tmp_path / "one") if r["targeted"]]
    assert recs and s["failed"] == len(recs)
    for r in recs:
        assert r["post"] is None and r["status"] == "failed"
        assert r["attacked_prob"] == r["clean_prob"] and not r["success"]
        assert r["info"]["fallback_post"] == demo[r["user_id"]].posts[0].text
    assert s["evasion_rate"] == 0.0
    again = _attack(demo, cnn_dir, "fails-after-test", tmp_path / "one", mode="score", resume=True)
    assert _untimed(again) == _untimed(s)
    # K posts: the first failed post ends the user's sequence
    spec = AttackSpec(posts=3)
    _attack(demo, cnn_dir, "fails-after-test", tmp_path / "k", mode="score", spec=spec,
            attack_params={"ok_posts": 1})
    records = _records(tmp_path / "k")
    recs = [r for r in records if r["targeted"]]
    for r in recs:
        assert len(r["posts"]) == len(r["probs"]) == 1 and r["status"] == "ok"
        assert r["post"] == r["posts"][0] and r["info"]["ended"].startswith("post 2 failed")
    # The quality report (the evaluator's, without its language models) reads one post each.
    from advseq.evaluation import require_recorded_split
    from advseq.quality import quality_report

    class _NoLM:
        def perplexity(self, posts, contexts):
            return float("nan")

    split = require_recorded_split(cnn_dir, demo, "attacks run on")
    report = quality_report(records, demo, split, spec, ref_lm=_NoLM(), judge=False)
    assert report["n_posts"] == len(recs)
