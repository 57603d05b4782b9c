"""K written posts per user (issue 19): the spec and tasks of later slots, distinct posts."""

from __future__ import annotations

import pytest

from advseq.attack import AttackSpec, AttackTask, create_attack
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
