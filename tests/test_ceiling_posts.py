"""K written posts in the white-box relaxation: soft_post_logits over [B, K, T, V] and the
K-post ceiling (advseq ceiling --posts K)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from advseq.attack import AttackSpec
from advseq.detector import create_detector
from advseq.errors import ConfigError
from advseq.quality.copies import is_near_copy
from advseq.schema import Dataset, Post, User

COMMON = {"max_posts": 6, "max_tokens": 12, "epochs": 2, "batch_size": 8, "min_freq": 1,
          "valid_size": 0.0}
SMALL = {
    "hlstm": {"emb_dim": 16, "post_hidden": 16, "seq_hidden": 8, **COMMON},
    "cnn": {"emb_dim": 16, "filters": 8, "seq_hidden": 8, **COMMON},
    "ties": {"emb_dim": 16, "hidden": 16, **COMMON},
    "transformer": {"d_model": 16, "heads": 2, **COMMON},
}


def irregular(users: list[User], seed: int = 0) -> list[User]:
    """The users with irregular gaps (the median of log gaps is not the log of the median
    gap), some longer than max_posts, one with an untimed last post."""
    rng = random.Random(seed)
    out = []
    for i, u in enumerate(users):
        posts = [Post(f"filler {j} hello there", None, None, None) for j in range(i % 3 * 3)]
        posts += list(u.posts)
        t, timed = 1000.0, []
        for j, p in enumerate(posts):
            t += rng.choice([0.0, 30.0, 600.0, 7200.0, 90000.0])
            untimed = i == 3 and j == len(posts) - 1
            timed.append(Post(p.text, p.context, None if untimed else t, None))
        out.append(u.with_posts(timed))
    return out


def appended(user: User, texts: list[str]) -> User:
    """``user`` with ``texts`` written one after another as real posts (each at the
    attack's timestamp and context for the next post)."""
    spec = AttackSpec()
    for text in texts:
        user = spec.task(user).with_post(text)
    return user


def one_hot(vocab, texts: list[list[str]], T: int) -> tuple[torch.Tensor, torch.Tensor]:
    B, K = len(texts), len(texts[0])
    x = torch.zeros(B, K, T, len(vocab))
    lengths = torch.zeros(B, K, dtype=torch.long)
    for b, row in enumerate(texts):
        for k, text in enumerate(row):
            ids = vocab.encode(text, max_len=T) or [vocab.unk_id]
            x[b, k, torch.arange(len(ids)), torch.tensor(ids)] = 1.0
            lengths[b, k] = len(ids)
    return x, lengths


@pytest.fixture(scope="module")
def soft_detectors():
    from tests.conftest import make_user

    users = []
    for i in range(20):
        word = "buy now cheap deal" if i % 2 else "thanks for the edit"
        texts = [f"post {j} about item {i % 3} {word if j % 2 else 'hello there'}" for j in range(3 + i % 4)]
        users.append(make_user(f"u{i:02d}", i % 2, texts, context=f"item {i % 3} page"))
    tiny = Dataset(users, name="tiny")
    dets = {name: create_detector(name, seed=0, **params).fit(tiny.users, progress=False)
            for name, params in SMALL.items()}
    dets["ensemble"] = create_detector("ensemble", member="ties", size=2, member_params=SMALL["ties"],
                                       seed=1).fit(tiny.users, progress=False)
    return tiny, dets


@pytest.mark.parametrize("name", [*sorted(SMALL), "ensemble"])
@pytest.mark.parametrize("K", [1, 3, 7])
def test_one_hot_soft_posts_equal_real_posts(soft_detectors, name: str, K: int) -> None:
    """K one-hot soft posts score exactly like the same K texts appended as real posts:
    the oldest history posts drop out of the max_posts window as they would, and the new
    slots carry the time gaps the written posts get (K = 7 > max_posts = 6: the first
    written post itself drops)."""
    tiny, dets = soft_detectors
    det = dets[name]
    histories = irregular(tiny.users[:8])
    pool = [p.text for u in tiny.users for p in u.posts]
    rng = random.Random(K)
    texts = [[rng.choice(pool) for _ in range(K)] for _ in histories]
    T = det.max_post_tokens
    x, lengths = one_hot(det.vocab_, texts, T)
    hard = det.predict_proba([appended(h, row) for h, row in zip(histories, texts, strict=True)])
    soft = torch.sigmoid(det.soft_post_logits(histories, x, lengths)).detach().numpy()
    np.testing.assert_allclose(soft, hard, rtol=1e-4, atol=1e-5)
    if K == 1:   # [B, T, V] with lengths [B] is the same as K = 1
        flat = det.soft_post_logits(histories, x[:, 0], lengths[:, 0])
        torch.testing.assert_close(flat, det.soft_post_logits(histories, x, lengths), rtol=0, atol=0)


def test_soft_posts_gradient_reaches_every_read_slot(soft_detectors) -> None:
    tiny, dets = soft_detectors
    det = dets["hlstm"]
    histories = tiny.users[:3]
    x = torch.softmax(torch.randn(3, 8, 5, len(det.vocab_)), -1).requires_grad_(True)
    det.soft_post_logits(histories, x, torch.full((3, 8), 5)).sum().backward()
    per_slot = x.grad.abs().sum(dim=(0, 2, 3))
    assert (per_slot[2:] > 0).all()        # the last max_posts = 6 slots are read
    assert (per_slot[:2] == 0).all()       # the first two fall out of the window


def test_soft_post_shapes_checked(soft_detectors) -> None:
    tiny, dets = soft_detectors
    det = dets["cnn"]
    V = len(det.vocab_)
    with pytest.raises(ConfigError, match=r"lengths \[B, K\]"):
        det.soft_post_logits(tiny.users[:2], torch.zeros(2, 3, 4, V), torch.ones(2, dtype=torch.long))
    with pytest.raises(ConfigError, match="soft_post must be"):
        det.soft_post_logits(tiny.users[:2], torch.zeros(2, 4, V + 1), torch.ones(2, dtype=torch.long))
    with pytest.raises(ConfigError, match="soft_post must be"):
        det.soft_post_logits(tiny.users[:2], torch.zeros(2, V), torch.ones(2, dtype=torch.long))


# ---- the K-post ceiling -------------------------------------------------------------------

OLD_KEYS = ["detector", "fingerprint", "spec", "length", "steps", "lr", "restarts", "seed", "n_users",
            "n_eligible", "relaxed_rate", "token_rate", "seconds", "users"]


@pytest.fixture(scope="module")
def ceilings(demo, cnn_dir):
    """The ceiling of one and of two written posts on the session cnn, same users and seed."""
    from advseq.ceiling import append_ceiling
    from advseq.detector import load_detector
    from advseq.training import recorded_split

    det = load_detector(cnn_dir)
    test = recorded_split(cnn_dir, demo).test.users[:50]
    kw = {"length": 6, "steps": 20, "lr": 0.5, "progress": False}
    return det, test, {K: append_ceiling(det, test, posts=K, **kw) for K in (1, 2)}, kw


def test_two_posts_reach_at_least_one_post_ceiling(ceilings) -> None:
    _, _, res, _ = ceilings
    one, two = res[1], res[2]
    assert [u["user_id"] for u in one["users"]] == [u["user_id"] for u in two["users"]]
    assert two["relaxed_rate"] >= one["relaxed_rate"]
    # evasion: a lower best logit is better; a second post never leaves a user worse off
    # (up to the optimiser's noise), and helps on average
    gain = [a["relaxed_logit"] - b["relaxed_logit"] for a, b in zip(one["users"], two["users"], strict=True)]
    assert min(gain) > -0.05 and sum(gain) / len(gain) > 0.02


def test_k_post_ceiling_records_k_witness_posts(ceilings) -> None:
    det, test, res, _ = ceilings
    two = res[2]
    assert two["posts"] == 2 and list(two) == [*OLD_KEYS[:3], "posts", *OLD_KEYS[3:]]
    assert all(set(u) == {"user_id", "relaxed", "relaxed_logit", "token", "token_posts", "token_distinct"}
               for u in two["users"])
    assert all(len(u["token_posts"]) == 2 and all(u["token_posts"]) for u in two["users"])
    assert all(u["token_distinct"] == (not is_near_copy(u["token_posts"][1], u["token_posts"][:1]))
               for u in two["users"])
    assert two["relaxed_rate"] == round(sum(u["relaxed"] for u in two["users"]) / two["n_eligible"], 6)
    assert two["token_rate"] == round(sum(u["token"] for u in two["users"]) / two["n_eligible"], 6)
    # the two witness posts, written in a row as real posts, give the recorded verdicts
    by_id = {u.user_id: u for u in test}
    after = det.predict_proba([appended(by_id[u["user_id"]], u["token_posts"]) for u in two["users"]])
    assert [bool(p < 0.5) and u["token_distinct"] for p, u in zip(after, two["users"], strict=True)] == \
        [u["token"] for u in two["users"]]


def test_repeated_witness_posts_are_no_token_success(ceilings, monkeypatch) -> None:
    """K posts that copy one another are no K-post attack: witnesses judged near copies
    never count as a token success (the relaxation itself is unchanged)."""
    import advseq.ceiling as ceiling

    det, test, res, kw = ceilings
    assert res[2]["token_rate"] > 0
    monkeypatch.setattr(ceiling, "is_near_copy", lambda text, others: True)
    copies = ceiling.append_ceiling(det, test, posts=2, **kw)
    assert copies["token_rate"] == 0 and copies["relaxed_rate"] == res[2]["relaxed_rate"]
    assert not any(u["token"] or u["token_distinct"] for u in copies["users"])


def test_k_post_ceiling_does_not_depend_on_the_batch(ceilings, monkeypatch) -> None:
    """The batch shrinks to keep B x K x T x V under the memory cap; a user's random start
    is its own, so the result is the same with any batch."""
    import advseq.ceiling as ceiling

    det, test, res, kw = ceilings
    per_user = 6 * 4 * 2 * kw["length"] * len(det.vocab_)
    monkeypatch.setattr(ceiling, "MEMORY_BYTES", 7 * per_user)      # batches of 7 users
    small = ceiling.append_ceiling(det, test, posts=2, **kw)
    assert small["relaxed_rate"] == res[2]["relaxed_rate"] and small["token_rate"] == res[2]["token_rate"]
    for a, b in zip(small["users"], res[2]["users"], strict=True):
        assert a["token_posts"] == b["token_posts"] and abs(a["relaxed_logit"] - b["relaxed_logit"]) < 1e-3


def test_one_post_ceiling_keeps_its_shape(ceilings) -> None:
    """K = 1 (the default) writes exactly the keys it always wrote: no posts, token_post."""
    from advseq.ceiling import append_ceiling

    det, test, res, kw = ceilings
    one = res[1]
    assert list(one) == OLD_KEYS
    assert all(set(u) == {"user_id", "relaxed", "relaxed_logit", "token", "token_post"} for u in one["users"])
    default = append_ceiling(det, test, **kw)
    assert default["users"] == one["users"] and default["relaxed_rate"] == one["relaxed_rate"]


def test_posts_checked(ceilings) -> None:
    from advseq.ceiling import append_ceiling

    det, test, _, _ = ceilings
    for bad in (0, 65, -1):
        with pytest.raises(ConfigError, match=r"posts \(K\) must be an integer from 1 to 64"):
            append_ceiling(det, test[:2], posts=bad, steps=1, progress=False)


def test_ceiling_cli_posts(demo, cnn_dir, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from advseq.cli import app
    from advseq.paths import demo_data

    runner = CliRunner()
    for bad in ("0", "65"):
        r = runner.invoke(app, ["ceiling", str(demo_data()), "-d", str(cnn_dir), "--posts", bad,
                                "--out", str(tmp_path / bad), "--no-progress"])
        assert r.exit_code == 2, r.output
        assert r.output.strip().count("\n") == 0 and "posts (K) must be an integer from 1 to 64" in r.output
        assert not (tmp_path / bad).exists()
    out = tmp_path / "k3"
    r = runner.invoke(app, ["ceiling", str(demo_data()), "-d", str(cnn_dir), "--posts", "3", "--steps", "5",
                            "--length", "4", "--max-users", "30", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "3 written posts of 4 tokens" in r.output
    saved = json.loads((out / "ceiling.json").read_text())
    assert saved["posts"] == 3 and all(len(u["token_posts"]) == 3 for u in saved["users"])
    assert json.loads((out / "manifest.json").read_text())["config"]["posts"] == 3
