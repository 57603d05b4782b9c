"""The history cache (advseq.history_cache): queries on a history and new posts give the
logits, gradients and scores of encoding the whole window again, for every soft-token
detector, one or K posts, append and replace-last, windows that shift; it never serves
stale vectors (a changed history, changed weights) and stays bounded."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from advseq import history_cache
from advseq.attack import AttackSpec, create_attack
from advseq.detector import CallableDetector, create_detector
from advseq.history_cache import HistoryCache
from advseq.neural import tensorize
from advseq.schema import Dataset, Post, User
from advseq.threat import ThreatModel
from advseq.token_search import (
    encode_post,
    exact_scores,
    goal_gap,
    hotflip_search,
    id_matrix,
    one_hot,
    out_of_reach,
)

COMMON = {"max_posts": 5, "max_tokens": 8, "epochs": 1, "batch_size": 8, "min_freq": 1, "valid_size": 0.0}
SMALL = {
    "hlstm": {"emb_dim": 12, "post_hidden": 10, "seq_hidden": 6, **COMMON},
    "cnn": {"emb_dim": 12, "filters": 6, "widths": [2, 3], "seq_hidden": 6, **COMMON},
    "ties": {"emb_dim": 12, "hidden": 10, **COMMON},
    "transformer": {"d_model": 12, "heads": 2, **COMMON},
}
KINDS = [*SMALL, "ensemble"]
WORDS = ["buy", "now", "cheap", "deal", "thanks", "for", "the", "edit", "hello", "there", "item", "page",
         "revert", "vandal", "source"]


def random_user(rng: random.Random, uid: str, n_posts: int) -> User:
    t = rng.uniform(0, 1e6)
    posts = []
    for _ in range(n_posts):
        t += rng.choice([30.0, 600.0, 86_400.0 * rng.random()])
        text = " ".join(rng.choice([*WORDS, "zzunseen"]) for _ in range(rng.randint(1, 11)))
        posts.append(Post(text, "page", None if rng.random() < 0.1 else t, None))
    return User(uid, rng.randint(0, 1), tuple(posts))


@pytest.fixture(scope="module")
def detectors() -> dict:
    rng = random.Random(0)
    train = Dataset([random_user(rng, f"t{i}", rng.randint(2, 7)) for i in range(24)], name="train")
    train.users[0] = User("t0", 0, train.users[0].posts)
    train.users[1] = User("t1", 1, train.users[1].posts)
    dets = {name: create_detector(name, seed=0, **p).fit(train.users, progress=False) for name, p in SMALL.items()}
    dets["ensemble"] = create_detector("ensemble", member="cnn", size=2, member_params=SMALL["cnn"]).fit(
        train.users, progress=False)
    return dets


@pytest.fixture(scope="module")
def histories() -> list[User]:
    """30 histories from 0 to 12 posts: shorter than, as long as and longer than the window."""
    rng = random.Random(1)
    return [random_user(rng, f"h{i}", i % 13) for i in range(30)]


def soft_posts(B: int, K: int, T: int, V: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.softmax(3 * torch.randn(B, K, T, V, generator=g), -1)
    return x, torch.randint(1, T + 1, (B, K), generator=g)


def uncached(fn, *args):
    with history_cache.switched(False):
        return fn(*args)


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("K", [1, 2, 7])          # 7 > max_posts: the window shifts past the history
def test_soft_logits_and_gradients_match_the_uncached_path(detectors, histories, name: str, K: int) -> None:
    det = detectors[name]
    V, T = len(det.vocab_), 6
    x, lengths = soft_posts(len(histories), K, T, V, seed=K)
    for _ in range(2):                        # the second call is served from the cache
        xs = [x.clone().requires_grad_(True), x.clone().requires_grad_(True)]
        new = det.soft_post_logits(histories, xs[0], lengths)
        old = uncached(det.soft_post_logits, histories, xs[1], lengths)
        torch.testing.assert_close(new, old, rtol=0, atol=1e-5)
        (g_new,) = torch.autograd.grad(new.sum(), xs[0])
        (g_old,) = torch.autograd.grad(old.sum(), xs[1])
        torch.testing.assert_close(g_new, g_old, rtol=1e-4, atol=1e-6)
    if K == 1:                                      # [B, T, V] is K = 1
        torch.testing.assert_close(det.soft_post_logits(histories, x[:, 0], lengths[:, 0]),
                                   uncached(det.soft_post_logits, histories, x, lengths), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", KINDS)
def test_repeated_histories_in_one_batch(detectors, histories, name: str) -> None:
    """Beams and candidates repeat a history many times in one query, in any order."""
    det = detectors[name]
    rows = [histories[i] for i in [3, 3, 7, 0, 3, 12, 7, 25, 25, 3]]
    x, lengths = soft_posts(len(rows), 2, 5, len(det.vocab_), seed=5)
    torch.testing.assert_close(det.soft_post_logits(rows, x, lengths),
                               uncached(det.soft_post_logits, rows, x, lengths), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", KINDS)
def test_token_path_and_score_queries_match(detectors, histories, name: str) -> None:
    """Token ids score like their one-hot soft posts; score queries on whole users (a
    history plus a real post) like predict_proba."""
    det = detectors[name]
    rng = random.Random(2)
    posts = [encode_post(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9))), det.vocab_, 8).ids
             for _ in histories]
    ids, lengths = id_matrix(posts, 8)
    x, _ = one_hot(posts, len(det.vocab_), 8)
    hard = det.token_post_logits(histories, ids, lengths)
    torch.testing.assert_close(hard, uncached(det.soft_post_logits, histories, x, lengths), rtol=0, atol=1e-5)
    slots = ids.view(len(histories) // 3, 3, 8), lengths.view(-1, 3)     # K = 3 posts per row
    xs = x.view(len(histories) // 3, 3, 8, -1)
    torch.testing.assert_close(det.token_post_logits(histories[::3], *slots),
                               uncached(det.soft_post_logits, histories[::3], xs, slots[1]), rtol=0, atol=1e-5)
    users = [h.with_posts((*h.posts, Post(f"{rng.choice(WORDS)} {rng.choice(WORDS)}", None, None, None)))
             for h in histories]
    for _ in range(2):
        np.testing.assert_allclose(det.query_proba(users), det.predict_proba(users), rtol=0, atol=1e-6)
    assert det.query_proba([]).shape == (0,)


@pytest.mark.parametrize("name", ["ties", "transformer"])   # the two that read time gaps
@pytest.mark.parametrize("placement", ["append", "replace-last"])
def test_cached_window_is_the_tensorized_window(detectors, histories, name: str, placement: str) -> None:
    """The batch a cached query classifies is exactly tensorize(history, reserve=K)'s,
    under both placements (replace-last passes the history without its last post)."""
    det = detectors[name]
    spec = AttackSpec(placement=placement)
    tasks = [spec.task(u) for u in histories if len(u.posts) >= 2]
    hist = [t.history for t in tasks]
    if placement == "replace-last":
        assert all(len(h.posts) == len(t.user.posts) - 1 for h, t in zip(hist, tasks, strict=True))
    cache = det._query_cache()
    for K in (1, 3, 5, 6):
        vecs, batch = cache.windows(hist, K)
        ref = tensorize(hist, det._encode, det.max_posts, reserve=K)
        for field in ("ids", "lengths", "mask", "dt", "labels"):
            assert torch.equal(getattr(batch, field), getattr(ref, field)), field
        R = min(K, det.max_posts)
        assert vecs.shape[:2] == (len(hist), det.max_posts - R)
        if det.max_posts > R:
            with torch.no_grad():
                full = det.module_.post_vectors(ref)[:, : det.max_posts - R]
            torch.testing.assert_close(vecs, full, rtol=0, atol=1e-6)
        x, lengths = soft_posts(len(hist), K, 4, len(det.vocab_), seed=K)
        torch.testing.assert_close(det.soft_post_logits(hist, x, lengths),
                                   uncached(det.soft_post_logits, hist, x, lengths), rtol=0, atol=1e-5)


def test_a_changed_history_or_changed_weights_are_never_served_stale(detectors, histories) -> None:
    det = create_detector("cnn", seed=3, **SMALL["cnn"]).fit(histories[1:20], progress=False)
    V = len(det.vocab_)
    x, lengths = soft_posts(6, 1, 5, V, seed=9)
    rows = [User(h.user_id, h.label, h.posts) for h in histories[4:10]]
    det.soft_post_logits(rows, x, lengths)
    # the same object with other posts (frozen, but not beyond reach): the fingerprint sees it
    object.__setattr__(rows[0], "posts", (*rows[0].posts[:-1], Post("revert vandal revert", None, 5.0, None)))
    object.__setattr__(rows[1], "posts", rows[1].posts[:-1])
    torch.testing.assert_close(det.soft_post_logits(rows, x, lengths),
                               uncached(det.soft_post_logits, rows, x, lengths), rtol=0, atol=1e-5)
    with torch.no_grad():                            # weights changed in place
        det.module_.embedding.weight.mul_(1.5)
    torch.testing.assert_close(det.soft_post_logits(rows, x, lengths),
                               uncached(det.soft_post_logits, rows, x, lengths), rtol=0, atol=1e-5)
    cache = det._query_cache()
    det.module_.requires_grad_(True)                 # weights that learn: no cache serves
    assert det._query_cache() is None
    det.module_.requires_grad_(False)
    assert det._query_cache() is cache


def test_bounded(detectors, histories) -> None:
    det = detectors["hlstm"]
    cache = HistoryCache(det.module_, det._encode, det.max_posts, histories=4, texts=10)
    for h in histories:
        cache.windows([h], 1)
        assert len(cache._histories) <= 4 and len(cache._texts) <= 10
    vecs, _ = cache.windows(histories, 2)        # a batch larger than the bounds still works
    with torch.no_grad():
        ref = det.module_.post_vectors(tensorize(histories, det._encode, det.max_posts, reserve=2))
    torch.testing.assert_close(vecs, ref[:, :-2], rtol=0, atol=1e-6)


def test_threat_token_queries_count_and_fall_back_to_one_hot(detectors, histories) -> None:
    det = detectors["cnn"]
    posts = [[5, 6, 7], [8], [9, 10]]
    wrapped = CallableDetector(det.predict_proba, soft_post_logits=det.soft_post_logits, vocab=det.vocab_,
                               max_post_tokens=8)
    hist = histories[5:8]
    for d in (det, wrapped):                     # the token path; the one-hot fallback
        threat = ThreatModel(d, "white-box")
        p = exact_scores(threat, hist, posts)
        x, lengths = one_hot(posts, len(det.vocab_), 3)
        ref = torch.sigmoid(uncached(det.soft_post_logits, hist, x, lengths)).numpy()
        np.testing.assert_allclose(p, ref, rtol=0, atol=1e-6)
        assert dict(threat.queries) == {h.user_id: 1 for h in hist}


@pytest.mark.parametrize("name", ["hlstm", "ensemble"])
def test_hotflip_writes_the_same_posts(detectors, histories, name: str) -> None:
    det = detectors[name]
    spec = AttackSpec()
    tasks = [spec.task(User(h.user_id, 1, h.posts)) for h in histories if len(h.posts) >= 3][:8]
    runs = []
    for on in (True, False):
        with history_cache.switched(on):
            threat = ThreatModel(det, "white-box")
            outs = create_attack("hotflip", max_flips=3).run(tasks, threat)
            runs.append(([o.post for o in outs], [o.info["surrogate_prob"] for o in outs], dict(threat.queries)))
    (posts, probs, queries), (posts0, probs0, queries0) = runs
    assert posts == posts0 and queries == queries0
    np.testing.assert_allclose(probs, probs0, rtol=0, atol=2e-6)


def test_hotflip_allowed_tokens_are_respected(detectors, histories) -> None:
    det = detectors["cnn"]
    tasks = [AttackSpec().task(User(h.user_id, 1, h.posts)) for h in histories[3:9]]
    posts = [encode_post(t.history.posts[-1].text, det.vocab_, 8) for t in tasks]
    V = len(det.vocab_)
    allowed = []
    for n, p in enumerate(posts):
        mask = torch.zeros(len(p.ids), V, dtype=torch.bool)
        mask[:, 5 + n % 3] = True                  # one word allowed per post
        allowed.append(mask)
    out = hotflip_search(tasks, posts, ThreatModel(det, "white-box"), max_flips=4, allowed=allowed)
    for n, (p, o) in enumerate(zip(posts, out, strict=True)):
        flipped = encode_post(o.post, det.vocab_, 8).ids
        changed = [b for a, b in zip(p.ids, flipped, strict=True) if a != b]
        assert set(changed) <= {5 + n % 3}


def test_out_of_reach_bounds_the_flips_left_by_the_recent_gains() -> None:
    assert goal_gap(0.5, 0) == pytest.approx(0.0, abs=1e-6)
    assert goal_gap(0.73, 0) == pytest.approx(np.log(0.73 / 0.27)) == pytest.approx(goal_gap(0.27, 1))
    assert goal_gap(0.4, 0) < 0 < goal_gap(0.4, 1)
    # gap 1.0 left after gains of 0.3 and 0.1: 2 flips at 2 x 0.3 reach it, 1 flip does not
    assert not out_of_reach([1.4, 1.1, 1.0], 2, 2.0)
    assert out_of_reach([1.4, 1.1, 1.0], 1, 2.0)
    assert out_of_reach([1.5, 1.2, 1.1, 1.0], 3, 2.0)    # the last two gains are 0.1 each
    assert not out_of_reach([1.0], 9, 1.0)                # no flip yet: no gain measured
    assert not out_of_reach([1.0, 0.2, -0.1], 0, 1.0)     # at the goal
    assert out_of_reach([1.0, 1.0, 1.0], 9, 100.0)       # no gain: no slack helps


def test_hotflip_search_gives_up_on_users_out_of_reach(detectors, histories) -> None:
    det = detectors["hlstm"]
    tasks = [AttackSpec().task(User(h.user_id, 1, h.posts)) for h in histories if len(h.posts) >= 2][:10]
    posts = [encode_post(t.history.posts[-1].text, det.vocab_, 8) for t in tasks]

    def search(give_up):
        threat = ThreatModel(det, "white-box")
        out = hotflip_search(tasks, posts, threat, beam_width=2, max_flips=6, give_up=give_up)
        return [(o.post, o.info["flips"]) for o in out], threat.total_queries

    full, q_full = search(None)
    assert search(1e9) == (full, q_full)                 # a slack no search falls short of
    quick, q_quick = search(1e-9)                         # every search short of the goal stops
    assert q_quick < q_full
    assert all(f <= 1 for _, f in quick)


# ---- the faster query paths (ADVSEQ_FAST_QUERIES): kept sequence state, token gradients --

def full_forward_probs(det, histories, ids, lengths) -> torch.Tensor:
    """P(malicious) of the posts of ``ids`` appended as real posts, by the whole forward
    pass (no cache, no kept state)."""
    with history_cache.switched(False, fast=False):
        return torch.sigmoid(det.token_post_logits(histories, ids, lengths))


@pytest.mark.parametrize("K", [1, 2, 7])
def test_hlstm_runs_only_the_new_slots_and_matches_the_full_forward(detectors, histories, K: int,
                                                                    monkeypatch) -> None:
    det = detectors["hlstm"]
    assert det.module_.keeps_state
    rng = random.Random(K)
    rows = [encode_post(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9))), det.vocab_, 8).ids
            for _ in range(len(histories) * K)]
    ids, lengths = id_matrix(rows, 8)
    ids, lengths = ids.view(len(histories), K, 8), lengths.view(len(histories), K)
    calls = []
    full = type(det.module_).classify
    monkeypatch.setattr(type(det.module_), "classify", lambda self, *a: calls.append(1) or full(self, *a))
    ref = full_forward_probs(det, histories, ids, lengths)
    assert calls                                     # the full forward classifies the window
    calls.clear()
    for _ in range(2):                               # building the state, then reusing it
        with history_cache.switched(True, fast=True):
            fast = torch.sigmoid(det.token_post_logits(histories, ids, lengths))
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-6)
    R = min(K, det.max_posts)
    assert bool(calls) == (det.max_posts == R)       # a window of new posts only has no prefix
    _, _, state = det._query_cache().windows(histories, K, states=True)
    assert (state is None) == (det.max_posts == R)


@pytest.mark.parametrize("name", ["cnn", "ties", "transformer", "ensemble"])
def test_other_detectors_classify_the_whole_window(detectors, histories, name: str) -> None:
    """No kept state where the classifier reads every slot (attention, time gaps, GRU
    without the hook): the generic fallback, with the same probabilities."""
    det = detectors[name]
    members = det.members_ if name == "ensemble" else [det]
    for m in members:
        assert not m.module_.keeps_state
        assert m._query_cache().windows(histories, 1, states=True)[2] is None
    rng = random.Random(3)
    rows = [encode_post(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9))), det.vocab_, 8).ids
            for _ in histories]
    ids, lengths = id_matrix(rows, 8)
    with history_cache.switched(True, fast=True):
        fast = torch.sigmoid(det.token_post_logits(histories, ids, lengths))
    torch.testing.assert_close(fast, full_forward_probs(det, histories, ids, lengths), rtol=0, atol=1e-6)


def test_posts_of_one_length_encoded_together_give_the_same_vectors(detectors) -> None:
    g = torch.Generator().manual_seed(0)
    for name in ("hlstm", "cnn"):
        module = detectors[name].module_
        lengths = torch.randint(1, 9, (40,), generator=g)
        ids = torch.randint(5, len(detectors[name].vocab_), (40, 8), generator=g)
        with torch.no_grad():
            emb = module.embed_ids(ids)
            assert torch.equal(history_cache.encode_by_length(module, lengths, emb=emb), module.encode_posts(emb, lengths))
    assert detectors["hlstm"].module_.length_sliced and not detectors["cnn"].module_.length_sliced


def test_hlstm_gate_table_encodes_ids_as_the_lstm_does(detectors) -> None:
    """The hlstm's gate-table encoder (posts of many lengths in one call) gives nn.LSTM's
    vectors, serves only outside autograd, and is rebuilt once the weights change."""
    import copy

    g = torch.Generator().manual_seed(1)
    module = copy.deepcopy(detectors["hlstm"].module_).eval()
    lengths = torch.randint(1, 9, (50,), generator=g)
    lengths[3] = 8
    ids = torch.randint(1, len(detectors["hlstm"].vocab_), (50, 8), generator=g)

    def lstm_vectors() -> torch.Tensor:
        return module.encode_posts(module.embed_ids(ids), lengths)

    with torch.no_grad(), history_cache.switched(True, fast=True):
        torch.testing.assert_close(module.encode_ids(ids, lengths), lstm_vectors(), rtol=0, atol=1e-6)
        torch.testing.assert_close(history_cache.encode_by_length(module, lengths, ids=ids), lstm_vectors(),
                                   rtol=0, atol=1e-6)
        assert "_gates" in module.__dict__
        module.post_lstm.weight_hh_l0.mul_(0.5)            # weights changed in place: a new table
        module.embedding.weight[ids[0, 0]] += 1.0
        torch.testing.assert_close(module.encode_ids(ids, lengths), lstm_vectors(), rtol=0, atol=1e-6)
    with torch.enable_grad():                              # in autograd: the plain LSTM
        assert torch.equal(module.encode_ids(ids, lengths), lstm_vectors())


@pytest.mark.parametrize("name", [*SMALL, "ensemble", "callable"])
def test_token_gradient_is_the_one_hot_gradient(detectors, histories, name: str) -> None:
    """ThreatModel.token_gradient gives gradient()'s numbers at the one-hot posts: through
    the detector's token path, or (no token path: the ensemble, a wrapped detector) the
    one-hot matrix."""
    det = detectors["cnn" if name == "callable" else name]
    if name == "callable":
        det = CallableDetector(det.predict_proba, soft_post_logits=det.soft_post_logits, vocab=det.vocab_,
                               max_post_tokens=8)
    assert hasattr(det, "token_post_gradient") == (name in SMALL)
    rng = random.Random(4)
    rows = [[rng.randint(5, len(det.vocab_) - 1) for _ in range(rng.randint(1, 8))] for _ in range(len(histories) * 2)]
    for K in (1, 2):
        part = rows[: len(histories) * K]
        ids, lengths = id_matrix(part, 8)
        x, _ = one_hot(part, len(det.vocab_), 8)
        if K == 2:
            ids, lengths, x = ids.view(-1, 2, 8), lengths.view(-1, 2), x.view(len(histories), 2, 8, -1)
        targets = [h.label for h in histories]
        threat = ThreatModel(det, "white-box")
        p_tok, g_tok = threat.token_gradient(histories, ids, lengths, targets)
        p_ref, g_ref = threat.gradient(histories, x, lengths, targets)
        np.testing.assert_allclose(p_tok, p_ref, rtol=0, atol=1e-7)
        torch.testing.assert_close(g_tok, g_ref, rtol=0, atol=1e-7)
        assert dict(threat.queries) == {h.user_id: 2 for h in histories}


@pytest.mark.parametrize("name", ["hlstm", "cnn", "ensemble"])
def test_hotflip_with_allowed_tokens_writes_the_same_posts_on_the_fast_paths(detectors, histories,
                                                                            name: str) -> None:
    """Refinement's search (allowed tokens per position, as PETGEN's): the gradient taken at
    the allowed and current tokens only gives the posts of the full gradient."""
    det = detectors[name]
    tasks = [AttackSpec().task(User(h.user_id, 1, h.posts)) for h in histories if len(h.posts) >= 2][:10]
    posts = [encode_post(t.history.posts[-1].text, det.vocab_, 8) for t in tasks]
    g = torch.Generator().manual_seed(1)
    allowed = [torch.rand(len(p.ids), len(det.vocab_), generator=g) < 0.4 for p in posts]
    runs = []
    for fast in (False, True):
        with history_cache.switched(True, fast=fast):
            threat = ThreatModel(det, "white-box")
            outs = hotflip_search(tasks, posts, threat, max_flips=4, allowed=allowed)
            runs.append(([o.post for o in outs], [o.info["surrogate_prob"] for o in outs], dict(threat.queries)))
    assert runs[0][0] == runs[1][0] and runs[0][2] == runs[1][2]
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=0, atol=1e-6)
