"""The demo-data simulator: determinism, invariants, and a signal that is learnable but
not trivial (no length shortcut)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.tree import DecisionTreeClassifier

from advseq.errors import ConfigError
from advseq.io import load_dataset
from advseq.io.jsonl import save_jsonl
from advseq.schema import BENIGN, MALICIOUS
from advseq.simulate import dataset_card, simulate

CV = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)


@pytest.fixture(scope="module")
def demo():
    return simulate(400, seed=0)


def test_same_seed_same_dataset() -> None:
    assert simulate(60, seed=3).checksum() == simulate(60, seed=3).checksum()


def test_different_seeds_differ() -> None:
    assert simulate(60, seed=3).checksum() != simulate(60, seed=4).checksum()


def test_jsonl_round_trip(tmp_path: Path) -> None:
    ds = simulate(30, seed=1)
    path = save_jsonl(ds, tmp_path / "users.jsonl")
    assert load_dataset(path).checksum() == ds.checksum()


def test_ids_and_balanced_labels(demo) -> None:
    ids = demo.user_ids
    assert len(set(ids)) == len(ids) == 400
    assert all(re.fullmatch(r"demo-\d{6}", i) for i in ids)
    assert ids[0] == "demo-000001"
    assert demo.name == "demo"
    counts = Counter(demo.labels)
    assert set(counts) == {BENIGN, MALICIOUS}
    assert abs(counts[BENIGN] - counts[MALICIOUS]) <= 1


@pytest.mark.parametrize("n_users", [4, 41])
def test_labels_balanced_within_one(n_users: int) -> None:
    counts = Counter(simulate(n_users, seed=2).labels)
    assert abs(counts[BENIGN] - counts[MALICIOUS]) <= 1


def test_malicious_share_is_honoured() -> None:
    assert simulate(100, seed=0, malicious_share=0.2).labels.count(MALICIOUS) == 20


def test_post_invariants(demo) -> None:
    for user in demo:
        assert 8 <= len(user.posts) <= 24
        times = [p.timestamp for p in user.posts]
        assert all(isinstance(t, float) for t in times)
        assert times == sorted(times)
        for post in user.posts:
            assert post.text.strip()
            assert isinstance(post.context, str) and post.context
        final = user.posts[-1]
        assert final.relevancy is None
        for post in user.posts[:-1]:
            assert post.relevancy == (1.0 if post.context == final.context else 0.0)


def test_relevancy_is_not_trivial(demo) -> None:
    flags = [p.relevancy for u in demo for p in u.posts[:-1]]
    assert 0.2 <= sum(flags) / len(flags) <= 0.5


def test_post_count_bounds_are_parameters() -> None:
    ds = simulate(20, seed=5, min_posts=2, max_posts=3)
    assert {len(u.posts) for u in ds} <= {2, 3}


def test_signal_is_learnable_but_not_trivial(demo) -> None:
    docs = [" ".join(u.texts) for u in demo]
    # min_df=2 and liblinear keep this fast; the accuracy is the same
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2),
                          LogisticRegression(solver="liblinear"))
    acc = cross_val_score(model, docs, demo.labels, cv=CV).mean()
    assert 0.70 <= acc <= 0.97, acc


@pytest.mark.parametrize("feature", ["number of posts", "mean post length"])
def test_no_length_shortcut(demo, feature: str) -> None:
    if feature == "number of posts":
        x = [[len(u.posts)] for u in demo]
    else:
        x = [[float(np.mean([len(p.text) for p in u.posts]))] for u in demo]
    acc = cross_val_score(DecisionTreeClassifier(max_depth=1), x, demo.labels, cv=CV).mean()
    assert acc <= 0.62, acc


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_users": 3}, "n_users"),
        ({"n_users": 2.5}, "n_users"),
        ({"seed": "1"}, "seed"),
        ({"malicious_share": 0.0}, "malicious_share"),
        ({"malicious_share": 1.0}, "malicious_share"),
        ({"malicious_share": -0.1}, "malicious_share"),
        ({"min_posts": 1}, "min_posts"),
        ({"min_posts": 10, "max_posts": 9}, "must not exceed"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        simulate(**kwargs)


def test_dataset_card() -> None:
    ds = simulate(40, seed=7)
    card = dataset_card(ds, seed=7, n_users=40)
    assert card.startswith("# ")
    assert "advseq data simulate --users 40 --seed 7 --out data/demo/users.jsonl" in card
    assert "MIT" in card and "synthetic" in card.lower()
    assert ds.checksum() in card
    assert f"| users | {ds.labels.count(BENIGN)} | {ds.labels.count(MALICIOUS)} |" in card
    assert "Warning" not in card


def test_dataset_card_flags_a_dataset_the_command_would_not_make() -> None:
    ds = simulate(40, seed=7)
    assert "Warning" in dataset_card(ds, seed=8, n_users=40)
