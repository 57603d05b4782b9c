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
