"""Detector interface, persistence, soft-post gradients and the threat-model wrapper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from advseq.detector import CallableDetector, create_detector, load_detector
from advseq.errors import CapabilityError, ConfigError, QueryBudgetExceeded
from advseq.schema import Dataset, Post
from advseq.threat import ThreatModel

COMMON = {"max_posts": 6, "max_tokens": 12, "epochs": 3, "batch_size": 8, "min_freq": 1,
          "valid_size": 0.0}
SMALL = {
    "hlstm": {"emb_dim": 16, "post_hidden": 16, "seq_hidden": 8, **COMMON},
    "cnn": {"emb_dim": 16, "filters": 8, "seq_hidden": 8, **COMMON},
    "ties": {"emb_dim": 16, "hidden": 16, **COMMON},
    "transformer": {"d_model": 16, "heads": 2, **COMMON},
}
SOFT_DETECTORS = sorted(SMALL)


@pytest.fixture(params=SOFT_DETECTORS)
def trained(request: pytest.FixtureRequest, tiny: Dataset):
    return create_detector(request.param, seed=0, **SMALL[request.param]).fit(tiny.users, progress=False)


def test_fit_predict_shapes_and_params(trained, tiny: Dataset) -> None:
    p = trained.predict_proba(tiny.users)
    assert p.shape == (len(tiny),) and np.all((p >= 0) & (p <= 1))
    assert trained.predict(tiny.users).dtype == np.int64
    params = trained.get_params()
    assert params["max_posts"] == 6 and params["seed"] == 0 and params["max_tokens"] == 12
    assert trained.fit_info_["epochs"] == 3


@pytest.mark.parametrize("name", SOFT_DETECTORS)
def test_same_seed_same_model(tiny: Dataset, name: str) -> None:
    a = create_detector(name, seed=3, **SMALL[name]).fit(tiny.users, progress=False)
    b = create_detector(name, seed=3, **SMALL[name]).fit(tiny.users, progress=False)
    np.testing.assert_array_equal(a.predict_proba(tiny.users), b.predict_proba(tiny.users))


def test_save_load_identical(trained, tiny: Dataset, tmp_path: Path) -> None:
    trained.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"config.json", "model.safetensors", "vocab.json"}
    back = load_detector(tmp_path / "m")
    assert type(back) is type(trained) and back.get_params() == trained.get_params()
    np.testing.assert_array_equal(back.predict_proba(tiny.users), trained.predict_proba(tiny.users))


def test_load_rejects_non_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a saved detector"):
        load_detector(tmp_path)


def test_one_hot_soft_post_equals_real_post(trained, tiny: Dataset) -> None:
    """Scoring history + a one-hot soft post must equal scoring the real user."""
    users = tiny.users[:5]
    histories = [u.with_posts(u.posts[:-1]) for u in users]
    V, T = len(trained.vocab_), trained.max_tokens
    ids = [trained.vocab_.encode(u.posts[-1].text, max_len=T) for u in users]
    soft = torch.zeros(len(users), T, V)
    for b, seq in enumerate(ids):
        soft[b, torch.arange(len(seq)), torch.tensor(seq)] = 1.0
    lengths = torch.tensor([len(s) for s in ids])
    logits = trained.soft_post_logits(histories, soft, lengths)
    np.testing.assert_allclose(torch.sigmoid(logits).detach().numpy(), trained.predict_proba(users),
                               rtol=1e-4, atol=1e-5)


def test_white_box_gradient_nonzero(trained, tiny: Dataset) -> None:
    tm = ThreatModel(trained, "white-box")
    users = tiny.users[:4]
    soft = torch.softmax(torch.randn(4, trained.max_tokens, len(tm.vocab)), dim=-1)
    probs, grad = tm.gradient(users, soft, torch.full((4,), 7), target=0)
    assert probs.shape == (4,) and grad.shape == soft.shape
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    assert grad[:, 7:].abs().sum() == 0  # tokens past the post's length cannot matter
    assert tm.queries[users[0].user_id] == 1


def test_label_mode_refuses_gradient_and_counts(trained, tiny: Dataset) -> None:
    tm = ThreatModel(trained, "label", budget=3)
    with pytest.raises(CapabilityError, match="grants only label"):
        tm.require({"gradient"}, "hotflip")
    with pytest.raises(CapabilityError):
        tm.score(tiny.users[:1])
    with pytest.raises(CapabilityError):
        _ = tm.vocab
    u = tiny.users[0]
    for _ in range(3):
        assert tm.label([u]).shape == (1,)
    assert tm.queries[u.user_id] == 3 and tm.remaining(u.user_id) == 0
    with pytest.raises(QueryBudgetExceeded):
        tm.label([u])
    assert tm.queries[u.user_id] == 3  # a refused query is not charged


def test_mode_needs_detector_capability(tiny: Dataset) -> None:
    det = CallableDetector(lambda users: [0.5] * len(users))
    with pytest.raises(CapabilityError, match="only offers"):
        ThreatModel(det, "white-box")
    tm = ThreatModel(det, "score")
    assert tm.score(tiny.users[:2]).tolist() == [0.5, 0.5]


def test_reaches_follows_threshold_and_margin() -> None:
    tm = ThreatModel(CallableDetector(lambda users: [0.5] * len(users)), "score", threshold=0.7)
    assert tm.reaches(0.7, 1) and not tm.reaches(0.7, 0) and tm.reaches(0.69, 0)
    # past the threshold by the margin: 0.7 + 0.2 for a positive verdict, 0.7 - 0.2 negative
    assert not tm.reaches(0.85, 1, margin=0.2) and tm.reaches(0.9, 1, margin=0.2)
    assert not tm.reaches(0.55, 0, margin=0.2) and tm.reaches(0.49, 0, margin=0.2)


def test_callable_detector_checks_output(tiny: Dataset) -> None:
    det = CallableDetector(lambda users: [0.1])
    with pytest.raises(ConfigError, match="returned 1 scores for 3 users"):
        det.predict_proba(tiny.users[:3])


def test_append_keeps_last_posts(trained, tiny: Dataset) -> None:
    """Users longer than max_posts keep their most recent posts."""
    u = tiny.users[0]
    long = u.with_posts([Post(f"filler {i}") for i in range(20)] + list(u.posts))
    batch = trained.tensorize([long])
    assert batch.mask.all() and batch.ids.shape[1] == trained.max_posts
    last = trained.vocab_.encode(u.posts[-1].text, max_len=trained.max_tokens)
    assert batch.ids[0, -1, : len(last)].tolist() == last


def test_unknown_detector_and_bad_params() -> None:
    with pytest.raises(ConfigError, match="unknown detector"):
        create_detector("nope")
    with pytest.raises(ConfigError, match="wings: unknown setting"):
        create_detector("hlstm", wings=2)


@pytest.mark.parametrize(("name", "params"), [
    ("tfidf-lr", {"min_df": 1}),
    ("sentence-encoder", {"epochs": 2, "hidden": 16, "valid_size": 0.0, "max_posts": 6}),
])
def test_score_only_detectors(name: str, params: dict, tiny: Dataset, tmp_path: Path) -> None:
    det = create_detector(name, seed=0, **params).fit(tiny.users, progress=False)
    p = det.predict_proba(tiny.users)
    assert p.shape == (len(tiny),) and np.all((p > 0) & (p < 1))
    assert "gradient" not in det.capabilities
    with pytest.raises(CapabilityError):
        ThreatModel(det, "white-box")
    back = load_detector(det.save(tmp_path / name))
    np.testing.assert_allclose(back.predict_proba(tiny.users), p, rtol=1e-6)


def test_ensemble_averages_members_and_round_trips(tiny: Dataset, tmp_path: Path) -> None:
    ens = create_detector("ensemble", member="hlstm", size=2, member_params=SMALL["hlstm"], seed=5)
    assert "gradient" in type(ens).capabilities            # pre-flight checks read the class
    ens.fit(tiny.users, progress=False)
    assert [m.seed for m in ens.members_] == [5, 6]
    p_members = np.array([m.predict_proba(tiny.users) for m in ens.members_])
    member_logits = np.log(p_members / (1 - p_members))
    p = ens.predict_proba(tiny.users)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-member_logits.mean(0))), rtol=1e-9)
    assert not np.allclose(p_members[0], p_members[1])     # two seeds, two models
    # White-box: a one-hot soft post scores like the real post, averaged over the members.
    tm = ThreatModel(ens, "white-box")
    users = tiny.users[:4]
    histories = [u.with_posts(u.posts[:-1]) for u in users]
    ids = [tm.vocab.encode(u.posts[-1].text, max_len=ens.max_post_tokens) for u in users]
    T = max(map(len, ids))
    soft = torch.zeros(len(users), T, len(tm.vocab))
    for b, row in enumerate(ids):
        soft[b, torch.arange(len(row)), torch.tensor(row)] = 1.0
    lengths = torch.tensor([len(r) for r in ids])
    logits = tm.soft_logits(histories, soft, lengths)
    np.testing.assert_allclose(torch.sigmoid(logits).detach().numpy(), ens.predict_proba(users), atol=1e-5)
    back = load_detector(ens.save(tmp_path / "ens"))
    np.testing.assert_array_equal(back.predict_proba(tiny.users), p)
    assert back.fingerprint() == ens.fingerprint()
    # combine="max": the most suspicious member decides, for text and soft posts alike.
    back.combine = "max"
    p_max = back.predict_proba(tiny.users)
    np.testing.assert_allclose(p_max, 1 / (1 + np.exp(-member_logits.max(0))), rtol=1e-9)
    assert np.all(p_max >= p - 1e-12) and not np.allclose(p_max, p)
    logits = ThreatModel(back, "white-box").soft_logits(histories, soft, lengths)
    np.testing.assert_allclose(torch.sigmoid(logits).detach().numpy(), back.predict_proba(users), atol=1e-5)
    assert load_detector(back.save(tmp_path / "ens-max")).combine == "max"
    assert back.fingerprint() != ens.fingerprint()


def test_ensemble_without_one_vocabulary_offers_no_gradient(tiny: Dataset) -> None:
    ens = create_detector("ensemble", member="hlstm", size=2, member_params=SMALL["hlstm"])
    half = len(tiny.users) // 2
    ens.members_ = [create_detector("hlstm", seed=i, **SMALL["hlstm"]).fit(part, progress=False)
                    for i, part in enumerate([tiny.users[:half], tiny.users[half:]])]
    assert ens.capabilities == {"label", "score"}
    with pytest.raises(CapabilityError):
        ThreatModel(ens, "white-box")
    assert ThreatModel(ens, "score").score(tiny.users[:2]).shape == (2,)


@pytest.mark.parametrize("params, match", [
    ({"size": 0}, "size"), ({"member": "ensemble"}, "cannot be ensembles"),
    ({"member_params": {"seed": 1}}, "seed"), ({"member": "no-such"}, "no-such"),
    ({"combine": "median"}, "combine")])
def test_ensemble_bad_params(params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_detector("ensemble", **params)


@pytest.mark.parametrize("name", SOFT_DETECTORS)
def test_fine_tune_continues_from_the_fitted_weights(tiny: Dataset, name: str, tmp_path: Path) -> None:
    """fine_tune keeps the vocabulary and starts from the fitted weights (so one epoch of
    it differs from one epoch of a fresh fit), then freezes the detector again."""
    det = create_detector(name, seed=0, **SMALL[name]).fit(tiny.users, progress=False)
    det.save(tmp_path / "m")
    extra = [type(u)(f"{u.user_id}#x", u.label, (*u.posts, Post("a brand new word", None, 99.0, None)))
             for u in tiny.users]
    warm = load_detector(tmp_path / "m").fine_tune([*tiny.users, *extra], epochs=1, progress=False)
    assert warm.fit_info_["fine_tuned"] and warm.fit_info_["epochs"] == 1
    assert warm.vocab_.itos == det.vocab_.itos and "brand" not in warm.vocab_
    fresh = create_detector(name, seed=0, **{**SMALL[name], "epochs": 1}).fit([*tiny.users, *extra],
                                                                            progress=False)
    assert not np.allclose(warm.predict_proba(tiny.users), fresh.predict_proba(tiny.users))
    assert not np.array_equal(warm.predict_proba(tiny.users), det.predict_proba(tiny.users))
    assert not any(p.requires_grad for p in warm.module_.parameters())


def test_fine_tune_needs_the_capability(tiny: Dataset) -> None:
    det = create_detector("tfidf-lr", seed=0).fit(tiny.users)
    assert not type(det).can_fine_tune
    with pytest.raises(CapabilityError, match="cannot fine-tune"):
        det.fine_tune(tiny.users, epochs=1)
