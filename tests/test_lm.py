"""PostLM: the small conditional GPT-2 over posts (training, sampling, scoring, caching)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from advseq.errors import ConfigError
from advseq.lm import PostLM, post_pairs, reference_lm
from advseq.runtime import advseq_home
from advseq.schema import Dataset, Post, User
from advseq.text import SPECIALS, Tokenizer, Vocabulary
from tests.conftest import same_bits_every_call

SMALL = dict(n_layer=1, n_embd=32, n_head=2, max_context_tokens=8, max_post_tokens=12,
             epochs=6, batch_size=16, lr=1e-2, patience=6, seed=0)
SUBJECTS = ["the cat", "my dog", "the bird", "a fox", "the horse", "our cow"]
VERBS = ["eats", "likes", "chases", "finds", "sees"]
OBJECTS = ["fresh fish", "green grass", "red apples", "small mice", "warm bread"]


def corpus(n: int = 240, seed: int = 0) -> list[tuple[str | None, str]]:
    """Simple sentences whose object depends on the context: a learnable signal."""
    rng = random.Random(seed)
    pairs: list[tuple[str | None, str]] = []
    for i in range(n):
        k = i % len(OBJECTS)
        ctx = None if i % 7 == 0 else f"page about {OBJECTS[k]}"
        pairs.append((ctx, f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {OBJECTS[k]} ."))
    return pairs


@pytest.fixture(scope="module")
def lm() -> PostLM:
    return PostLM(**SMALL).fit(corpus(), progress=False)


def test_fit_reduces_loss_and_records_info(lm: PostLM) -> None:
    info = lm.fit_info_
    hist = info["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert min(h["valid_loss"] for h in hist) < hist[0]["valid_loss"]
    assert 1 <= info["best_epoch"] <= info["epochs"] == len(hist)
    assert info["train_seconds"] > 0 and info["n_valid"] == 24
    # the HF model and the vocabulary are exposed for reuse
    assert lm.model_.config.vocab_size == len(lm.vocab_) and "fish" in lm.vocab_


def test_same_seed_same_weights() -> None:
    a = PostLM(**{**SMALL, "epochs": 2}).fit(corpus(60), progress=False)
    b = PostLM(**{**SMALL, "epochs": 2}).fit(corpus(60), progress=False)
    for (name, x), (_, y) in zip(a.model_.state_dict().items(), b.model_.state_dict().items(),
                                 strict=True):
        assert torch.equal(x, y), name


def test_sample_deterministic_nonempty_and_bounded(lm: PostLM) -> None:
    contexts = ["page about fresh fish", None, "page about warm bread", "unseen words here"] * 5
    a = lm.sample(contexts, seed=1)
    assert a == lm.sample(contexts, seed=1)
    assert a != lm.sample(contexts, seed=2)
    assert len(a) == len(contexts) and all(p.strip() for p in a)
    tok = Tokenizer()
    for max_tokens in (1, 3):
        for p in lm.sample(contexts, seed=3, max_tokens=max_tokens, temperature=2.0, top_p=1.0):
            assert p.strip() and len(tok.tokenize(p)) <= max_tokens
    assert all(len(tok.tokenize(p)) <= SMALL["max_post_tokens"] for p in a)
    # a row's post depends on its own seed and index only, not on the other rows (here
    # the first rows' left padding differs with the longest context of the call)
    assert lm.sample(contexts[:3], seed=1) == a[:3]
    long = "page about fresh fish and green grass and red apples and warm bread"
    assert lm.sample([None, "page about fresh fish"], seed=4) == \
        lm.sample([None, "page about fresh fish", long], seed=4)[:2]


def test_max_repeats_bars_tokens_already_written(lm: PostLM) -> None:
    ids, mask = lm.prefix(["page about fresh fish", None] * 16)
    uniforms = torch.rand(32, SMALL["max_post_tokens"], generator=torch.Generator().manual_seed(0),
                          dtype=torch.float64)
    # High temperature and a flat nucleus: unconstrained samples repeat tokens.
    free = lm.generate_ids(lm.embed(ids), mask, uniforms, temperature=3.0, top_p=1.0)
    capped = lm.generate_ids(lm.embed(ids), mask, uniforms, temperature=3.0, top_p=1.0, max_repeats=1)

    def most_repeated(row: list[int]) -> int:
        words = [i for i in row if i >= len(SPECIALS)]          # post tokens only
        return max((words.count(i) for i in words), default=0)

    assert max(most_repeated(r) for r in free.tolist()) > 1
    assert max(most_repeated(r) for r in capped.tolist()) == 1


def _repeated_ngrams(row: list[int], n: int) -> int:
    words = [i for i in row if i >= len(SPECIALS)]                # post tokens only
    grams = [tuple(words[j:j + n]) for j in range(len(words) - n + 1)]
    return len(grams) - len(set(grams))


def test_no_repeat_ngram_bars_phrases_already_written(lm: PostLM) -> None:
    n = 2
    ids, mask = lm.prefix(["page about fresh fish", None] * 16)
    uniforms = torch.rand(32, SMALL["max_post_tokens"], generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64)
    free = lm.generate_ids(lm.embed(ids), mask, uniforms, temperature=3.0, top_p=1.0)
    blocked = lm.generate_ids(lm.embed(ids), mask, uniforms, temperature=3.0, top_p=1.0, no_repeat_ngram=n)
    assert sum(_repeated_ngrams(r, n) for r in free.tolist()) > 0
    assert all(_repeated_ngrams(r, n) == 0 for r in blocked.tolist())


def test_bias_steers_sampling_row_by_row(lm: PostLM) -> None:
    ids, mask = lm.prefix(["page about fresh fish", None] * 8)
    uniforms = torch.rand(16, SMALL["max_post_tokens"], generator=torch.Generator().manual_seed(2),
                          dtype=torch.float64)
    word = lm.vocab_.stoi["bread"]
    bias = torch.zeros(16, len(lm.vocab_))
    bias[::2, word] = 50.0                                  # even rows only
    free = lm.generate_ids(lm.embed(ids), mask, uniforms)
    steered = lm.generate_ids(lm.embed(ids), mask, uniforms, bias=bias)
    assert all(r[0] == word for r in steered[::2].tolist())
    assert torch.equal(steered[1::2], free[1::2])           # unbiased rows: the same draws
    assert sum(r[0] == word for r in free[::2].tolist()) < 8
    # one bias row per 2 consecutive samples (samples of one prefix), not materialised
    pairs = lm.generate_ids(lm.embed(ids), mask, uniforms, bias=bias[::2])
    assert all(r[0] == word for r in pairs.tolist())
    with pytest.raises(ValueError, match="rows"):
        lm.generate_ids(lm.embed(ids), mask, uniforms, bias=bias[:3])


def test_sampled_softmax_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large vocabularies train on a sampled softmax (frequent head + reweighted tail
    sample); force it on the tiny vocabulary and check it still learns."""
    import advseq.lm.training

    monkeypatch.setattr(advseq.lm.training, "SAMPLED_HEAD", 8)
    monkeypatch.setattr(advseq.lm.training, "SAMPLED_TAIL", 4)
    sampled = PostLM(**SMALL).fit(corpus(), progress=False)
    hist = sampled.fit_info_["history"]
    assert hist[-1]["valid_loss"] < hist[0]["valid_loss"] - 0.5
    posts = [p for _, p in corpus(40, seed=3)]
    assert sampled.perplexity(posts) < 2 * len(sampled.vocab_) ** 0.5


def test_context_conditioning_learned(lm: PostLM) -> None:
    posts = lm.sample(["page about red apples"] * 30, seed=0, top_p=0.5)
    assert sum("red apples" in p for p in posts) > 15


def test_save_load_roundtrip(lm: PostLM, tmp_path: Path) -> None:
    lm.save(tmp_path / "lm")
    assert {p.name for p in (tmp_path / "lm").iterdir()} == {"config.json", "model.safetensors",
                                                             "vocab.json"}
    back = PostLM.load(tmp_path / "lm")
    posts = [p for _, p in corpus(20, seed=5)]
    contexts = [c for c, _ in corpus(20, seed=5)]
    nll, n = lm.token_nll(posts, contexts)
    nll2, n2 = back.token_nll(posts, contexts)
    np.testing.assert_array_equal(nll, nll2)
    np.testing.assert_array_equal(n, n2)
    assert back.get_params() == lm.get_params()
    assert back.sample(["page about green grass"] * 4, seed=9) == \
        lm.sample(["page about green grass"] * 4, seed=9)


def test_token_nll_and_perplexity(lm: PostLM) -> None:
    posts = [p for _, p in corpus(40, seed=3)]
    nll, n = lm.token_nll(posts)
    # 4 words + "." + <eos>
    assert n.tolist() == [len(Tokenizer().tokenize(p)) + 1 for p in posts]
    assert (nll > 0).all()
    rng = random.Random(0)
    shuffled = []
    for p in posts:
        words = p.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    assert lm.perplexity(posts) < lm.perplexity(shuffled)
    assert lm.perplexity(posts) == pytest.approx(float(np.exp(nll.sum() / n.sum())))
    # the right context makes its post more likely
    good, _ = lm.token_nll(["the cat eats fresh fish ."], ["page about fresh fish"])
    bad, _ = lm.token_nll(["the cat eats fresh fish ."], ["page about warm bread"])
    assert good[0] < bad[0]


def test_errors(lm: PostLM) -> None:
    with pytest.raises(ConfigError):
        PostLM(n_embd=30, n_head=4)
    with pytest.raises(ConfigError):
        PostLM().sample(["x"])
    with pytest.raises(ConfigError):
        lm.sample(["x"], temperature=0)
    with pytest.raises(ConfigError):
        lm.token_nll(["a", "b"], ["only one"])
    with pytest.raises(ConfigError):
        PostLM.load(Path("/nonexistent/lm"))


def _dataset() -> Dataset:
    users = []
    pairs = corpus(120, seed=1)
    for u in range(12):
        posts = tuple(Post(text, ctx, float(j), None)
                      for j, (ctx, text) in enumerate(pairs[u * 10:(u + 1) * 10]))
        users.append(User(f"u{u}", u % 2, posts))
    return Dataset(users, name="lm-cache")


def test_post_pairs() -> None:
    ds = _dataset()
    pairs = post_pairs(ds)
    assert len(pairs) == ds.n_posts and pairs[0] == (ds.users[0].posts[0].context,
                                                      ds.users[0].posts[0].text)


def test_reference_lm_caches() -> None:
    ds = _dataset()
    params = {k: v for k, v in SMALL.items() if k != "seed"} | {"epochs": 2}
    first = reference_lm(ds, progress=False, **params)
    cache = advseq_home() / "cache" / "reflm"
    entries = [p for p in cache.iterdir() if p.name.startswith(ds.checksum()[:16])]
    assert len(entries) == 1 and entries[0].name.startswith(f"{ds.checksum()[:16]}-0-")
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp folders left
    second = reference_lm(ds, progress=False, **params)
    assert second is not first and second.fit_info_ == first.fit_info_
    for (name, x), (_, y) in zip(first.model_.state_dict().items(),
                                 second.model_.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    # other hyper-parameters or another seed: another entry
    reference_lm(ds, seed=1, progress=False, **params)
    assert len([p for p in cache.iterdir() if p.name.startswith(ds.checksum()[:16])]) == 2


def test_reference_lm_samples_large_datasets() -> None:
    ds = _dataset()
    params = {k: v for k, v in SMALL.items() if k != "seed"} | {"epochs": 1}
    cap = ds.n_posts // 2
    lm = reference_lm(ds, progress=False, max_posts=cap, **params)
    assert lm.fit_info_["n_train"] + lm.fit_info_["n_valid"] == cap
    full = reference_lm(ds, progress=False, max_posts=ds.n_posts, **params)
    assert full.fit_info_["n_train"] + full.fit_info_["n_valid"] == ds.n_posts


def test_sampled_softmax_gradient_is_thread_order_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two cold caches must train the same reference LM: the sampled softmax's gradient
    is the same bits on every call (``W[y]``'s backward added the rows of repeated targets
    in thread order, and wiki's reference LM differed between fresh ADVSEQ_HOMEs)."""
    import advseq.lm.training
    from advseq.lm.model import pad_right
    from advseq.lm.training import sampled_nll

    monkeypatch.setattr(advseq.lm.training, "SAMPLED_HEAD", 8)
    lm = PostLM(**{**SMALL, "epochs": 1, "n_embd": 128}).fit(corpus(60), progress=False)
    seqs, starts = lm._sequences(corpus(4000, seed=1))   # ~24k targets of ~30 ids
    ids, target = pad_right(seqs, starts)
    negatives = torch.arange(8, 20)
    W = lm.model_.lm_head.weight

    def grad() -> torch.Tensor:
        lm.model_.zero_grad(set_to_none=True)
        sampled_nll(lm, ids, target, negatives, head_size=8).sum().backward()
        return W.grad.clone()

    assert same_bits_every_call(grad)


def test_finished_rows_leave_the_batch_and_the_rest_write_as_alone(lm: PostLM, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.cache_utils import DynamicCache

    contexts = ["page about fresh fish", None, "page about warm bread", "unseen words here"] * 6
    ids, mask = lm.prefix(contexts)
    uniforms = torch.rand(len(contexts), SMALL["max_post_tokens"], generator=torch.Generator().manual_seed(5),
                          dtype=torch.float64)
    bias = torch.zeros(len(contexts) // 2, len(lm.vocab_))
    bias[::3, lm.vocab_.stoi["bread"]] = 2.0
    kw = {"temperature": 1.5, "top_p": 0.95, "max_repeats": 2, "no_repeat_ngram": 2}
    drops = []
    select = DynamicCache.batch_select_indices
    monkeypatch.setattr(DynamicCache, "batch_select_indices", lambda self, i: drops.append(len(i)) or select(self, i))
    batch = lm.generate_ids(lm.embed(ids), mask, uniforms, bias=bias, **kw)
    assert drops                                        # rows that wrote <eos> early left
    monkeypatch.setattr(DynamicCache, "batch_select_indices", select)
    ends = (batch == Vocabulary.eos_id).int().argmax(1)
    assert len(set(ends.tolist())) > 2                  # posts of several lengths
    for r in range(len(contexts)):
        i, m = lm.prefix([contexts[r]])
        alone = lm.generate_ids(lm.embed(i), m, uniforms[r:r + 1], bias=bias[r // 2: r // 2 + 1], **kw)
        assert torch.equal(alone[0], batch[r]), r


def test_sdpa_mask_gives_the_forward_of_transformers_own_mask(lm: PostLM) -> None:
    from advseq.lm.masks import sdpa_mask

    g = torch.Generator().manual_seed(6)
    ids = torch.randint(len(SPECIALS), len(lm.vocab_), (6, 9), generator=g)
    mask = torch.ones(6, 9, dtype=torch.long)
    mask[0, :3] = 0                        # left padding
    mask[1, 6:] = 0                        # right padding
    mask[2, 2:4] = 0                       # a gap (a prefix then a target)
    mask[3, :8] = 0                        # one real token
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    model = lm.model_.eval()
    with torch.no_grad():
        ref = model.transformer(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
        ours = model.transformer(input_ids=ids, attention_mask=sdpa_mask(mask, 9), position_ids=pos).last_hidden_state
        real = mask.bool()
        assert torch.equal(ours[real], ref[real])
        # one decoding step over a cache (which a step extends in place: one cache each)
        steps = []
        for step_mask in (mask, sdpa_mask(mask, 1)):
            past = model.transformer(input_ids=ids[:, :8], attention_mask=mask[:, :8], position_ids=pos[:, :8],
                                     use_cache=True).past_key_values
            steps.append(model.transformer(input_ids=ids[:, 8:], attention_mask=step_mask, position_ids=pos[:, 8:],
                                           past_key_values=past).last_hidden_state[:, 0])
        last = real[:, 8]
        assert torch.equal(steps[1][last], steps[0][last])
    assert sdpa_mask(torch.ones(2, 4), 4) is None         # nothing padded: transformers' own path
    m = sdpa_mask(mask, 9)
    assert m.shape == (6, 1, 9, 9) and not m[0, 0, 5, 6] and m[0, 0, 5, 4] and not m[0, 0, 5, 1]
