"""PETGEN: the conditional generator, its training terms, the attack plugins and the CLI,
against the shared small cnn (conftest ``cnn_dir``)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from advseq.attack import AttackSpec, create_attack
from advseq.cli import app
from advseq.detector import load_detector
from advseq.errors import CapabilityError, ConfigError
from advseq.evaluation import RESULTS_FILE, SUMMARY_FILE, read_records, run_attack
from advseq.paths import demo_data
from advseq.runtime import advseq_home
from advseq.schema import Dataset, Post, User
from advseq.threat import ThreatModel
from advseq.training import recorded_split
from attacks.petgen.generator import mean_embedding, task_example
from attacks.petgen.model import PETGEN
from tests.conftest import evasion_rate, same_bits_every_call

runner = CliRunner()
TINY_LM = {"n_layer": 1, "n_embd": 32, "n_head": 2, "epochs": 1, "max_post_tokens": 16,
           "max_context_tokens": 12}
SMALL = {"lm": TINY_LM, "mle_epochs": 1, "adv_steps": 4, "rounds": 1, "select_k": 4,
         "select_epochs": 1, "candidates": 4, "batch_size": 16, "max_posts": 8}


@pytest.fixture(scope="module")
def split(demo: Dataset, cnn_dir: Path):
    return recorded_split(cnn_dir, demo)


@pytest.fixture(scope="module")
def trained(split, cnn_dir: Path) -> PETGEN:
    threat = ThreatModel(load_detector(cnn_dir), "white-box")
    return PETGEN(**SMALL).fit(Dataset(split.train.users[:120]), threat, progress=False)


def test_fit_records_every_term(trained: PETGEN) -> None:
    info = trained.fit_info_
    assert info["mle"]["epoch_losses"] and np.isfinite(info["mle"]["epoch_losses"]).all()
    last = info["adversarial"]["history"][-1]
    for term in ("gan", "attack", "recency", "relevancy"):
        assert any(term in k for k in last), (term, last)
    assert info["adversarial"]["selection"], "best-of-k selection round missing"


def test_conditioning_and_determinism(trained: PETGEN, split) -> None:
    spec = AttackSpec()
    tasks = [spec.task(u) for u in split.test.users[:12]]
    u = torch.rand(len(tasks) * 3, trained.lm_.max_post_tokens, generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64)
    a = trained.sample(tasks, u, 3)
    b = trained.sample(tasks, u, 3)
    assert a == b                                   # same uniforms, same posts
    assert all(len(p) == 3 and all(isinstance(x, str) for x in p) for p in a)
    # The same noise for every user: different users (histories, contexts) still get
    # different posts, because the generator is conditioned on them.
    same = torch.rand(1, trained.lm_.max_post_tokens, generator=torch.Generator().manual_seed(2),
                      dtype=torch.float64).repeat(len(tasks), 1)
    posts = [p[0] for p in trained.sample(tasks, same, 1)]
    assert len(set(posts)) > len(tasks) // 2


def test_save_load_roundtrip(trained: PETGEN, split, tmp_path: Path) -> None:
    trained.save(tmp_path / "g")
    assert (tmp_path / "g" / "config.json").exists()
    assert not list((tmp_path / "g").rglob("*.pkl")) and not list((tmp_path / "g").rglob("*.bin"))
    back = PETGEN.load(tmp_path / "g")
    tasks = [AttackSpec().task(u) for u in split.test.users[:5]]
    u = torch.rand(5 * 2, trained.lm_.max_post_tokens, generator=torch.Generator().manual_seed(1),
                   dtype=torch.float64)
    assert back.sample(tasks, u, 2) == trained.sample(tasks, u, 2)


def test_same_seed_same_generator(split, cnn_dir: Path) -> None:
    threat = ThreatModel(load_detector(cnn_dir), "white-box")
    train = Dataset(split.train.users[:60])
    params = {**SMALL, "adv_steps": 2, "select": False}
    # Pre-train once (cached), so both runs start from the same cached MLE generator.
    PETGEN(**{**params, "adv_steps": 0}).fit(train, threat, progress=False)
    # Several threads: training must not depend on the order threads add floats in (Adam
    # turns last-bit differences in near-zero gradients into weight differences of the
    # order of the learning rate; seen in CI before mean_embedding used F.embedding).
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        a = PETGEN(**params).fit(train, threat, progress=False)
        b = PETGEN(**params).fit(train, threat, progress=False)
    finally:
        torch.set_num_threads(threads)
    for (name, x), (_, y) in zip(a.generator_.state_dict().items(), b.generator_.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_mean_embedding_gradient_is_thread_order_free() -> None:
    """Cold caches must train the same generator: the gradient of the history-post
    encoding is the same bits on every call (``weight[ids]``'s backward accumulated in
    thread order and differed run to run), and — advseq's own op, no BLAS — for any
    thread count."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(3000, 32, generator=gen, requires_grad=True)
    ids = torch.randint(0, 300, (32, 20, 24), generator=gen)
    lengths = torch.randint(0, 25, (32, 20), generator=gen)
    upstream = torch.randn(32, 20, 32, generator=gen)

    def grad() -> torch.Tensor:
        weight.grad = None
        (mean_embedding(ids, lengths, weight) * upstream).sum().backward()
        return weight.grad.clone()

    assert same_bits_every_call(grad, across_threads=True)


def test_attack_term_needs_gradient(split, cnn_dir: Path) -> None:
    score_only = ThreatModel(load_detector(cnn_dir), "score")
    train = Dataset(split.train.users[:40])
    with pytest.raises(CapabilityError):
        PETGEN(**SMALL).fit(train, score_only, progress=False)
    # Without the attack term, the generator trains on the score alone (selection).
    PETGEN(**{**SMALL, "attack": False}).fit(train, score_only, progress=False)


def test_relevancy_flags_need_a_context() -> None:
    spec = AttackSpec()
    tweets = User("t", 1, tuple(Post(f"tweet {i}") for i in range(4)))       # no contexts at all
    assert task_example(spec.task(tweets)).relevancy == [0.0] * 4
    pages = User("w", 1, (Post("a", "p1"), Post("b", "p2"), Post("c", "p1")))
    assert task_example(spec.task(pages)).relevancy == [1.0, 0.0, 1.0]   # same page as the target


def test_malcom_is_petgen_without_recency() -> None:
    assert create_attack("malcom").settings.recency is False
    assert create_attack("petgen").settings.recency is True
    assert create_attack("malcom", recency=True).settings.recency is True


def test_every_petgen_setting_is_an_attack_parameter() -> None:
    from attacks.petgen.settings import DEFAULTS

    default = create_attack("petgen")
    assert default.settings.get_params() == DEFAULTS          # PETGEN's own defaults
    # The cache key of the default settings is the one generators were cached under
    # before every setting became a parameter (a changed key retrains them).
    assert default._cache_params() == {
        "candidates": 32, "temperature": 0.8, "top_p": 0.9, "max_repeats": 4, "adv_steps": 60,
        "mle_epochs": 3, "gan": True, "attack": True, "recency": True, "relevancy": True,
        "select": True, "rounds": 3, "select_temperature": None, "select_margin": None,
        "w_attack": 1.0, "w_gan": 0.5, "w_mle": 0.3, "lm": None, "seed": 0, "device": "cpu"}
    attack = create_attack("petgen", w_recency=0.5, select_k=5, seed=3, refine_flips=0)
    assert (attack.settings.w_recency, attack.settings.select_k, attack.settings.seed) == (0.5, 5, 3)
    assert attack._cache_params()["w_recency"] == 0.5        # a trained setting names its generator
    assert "w_relevancy" not in attack._cache_params()
    assert create_attack("petgen", **attack.get_params()).get_params() == attack.get_params()
    with pytest.raises(ConfigError, match="'w_recncy'"):
        create_attack("petgen", w_recncy=0.5)
    with pytest.raises(ConfigError, match="select_margin"):
        create_attack("petgen", select_margin=0.7)


def test_attack_cli_setting_reaches_the_model(cnn_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``advseq attack ... -a petgen -p w_recency=0.5`` trains with w_recency 0.5."""
    from attacks.petgen import trainer

    class Trained(Exception):
        pass

    seen: dict = {}

    def fit(model: PETGEN, *args, **kwargs) -> PETGEN:
        seen.update(model.get_params())
        raise Trained

    monkeypatch.setattr(trainer, "fit", fit)
    res = runner.invoke(app, ["attack", str(demo_data()), "-d", str(cnn_dir), "-a", "petgen",
                              "-o", str(tmp_path / "a"), "--max-users", "4", "--no-quality",
                              "--no-progress", "-p", "w_recency=0.5", "-p", "select_k=5"])
    assert isinstance(res.exception, Trained), res.output
    assert (seen["w_recency"], seen["select_k"], seen["w_relevancy"]) == (0.5, 5, 0.2)


def test_no_repeat_ngram_option() -> None:
    from attacks.petgen.attack import _repeats_ngram

    assert _repeats_ngram([5, 6, 7, 5, 6, 7], 3) and not _repeats_ngram([5, 6, 7, 5, 6, 8], 3)
    assert _repeats_ngram([5, 6, 5, 6], 2) and not _repeats_ngram([5, 6], 3)
    with pytest.raises(ConfigError, match="no_repeat_ngram"):
        PETGEN(no_repeat_ngram=1)
    # Off by default, and then not part of the generator cache key (old caches stay valid).
    assert "no_repeat_ngram" not in create_attack("petgen")._cache_params()
    assert create_attack("petgen", no_repeat_ngram=3)._cache_params()["no_repeat_ngram"] == 3


def test_context_boost_writes_on_the_target_context(trained: PETGEN, split) -> None:
    from advseq.text import SPECIALS
    from attacks.petgen.model import COMMON_WORDS

    spec = AttackSpec()
    tasks = [spec.task(u) for u in split.test.users if spec.targets(u)][:12]
    vocab = trained.lm_.vocab_
    topic = [{vocab.itos[i] for i in vocab.encode(t.context or "") if i >= len(SPECIALS) + COMMON_WORDS}
             for t in tasks]
    assert all(topic)
    k, T = 6, trained.lm_.max_post_tokens
    uniforms = torch.rand(len(tasks) * k, T, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def on_topic(boost: float) -> float:
        trained.context_boost = boost
        try:
            posts = trained.sample(tasks, uniforms, k)
        finally:
            trained.context_boost = 0.0
        hits = [w in words_of for ps, words_of in zip(posts, topic, strict=True)
                for p in ps for w in vocab.tokenizer.tokenize(p)]
        return sum(hits) / max(1, len(hits))

    plain, mild, strong = on_topic(0.0), on_topic(2.0), on_topic(6.0)
    assert plain < mild < strong and strong > 0.3, (plain, mild, strong)
    with pytest.raises(ConfigError, match="context_boost"):
        PETGEN(context_boost=-1.0)
    # Off by default, and then not part of the generator cache key.
    assert "context_boost" not in create_attack("petgen")._cache_params()
    assert create_attack("petgen", context_boost=2.0)._cache_params()["context_boost"] == 2.0


def test_naturalness_context_rank(trained: PETGEN, split) -> None:
    from advseq.lm import reference_lm
    from attacks.petgen.naturalness import Naturalness, _ranks

    lm = reference_lm(Dataset(split.train.users[:120]), seed=0, progress=False, **TINY_LM)
    plain, ctx = Naturalness(lm), Naturalness(lm, context=True)
    spec = AttackSpec()
    tasks = [spec.task(u) for u in split.test.users if spec.targets(u)][:6]
    tasks.append(dataclasses.replace(tasks[0], context=None))   # no context: no third rank
    options = [[p.text for p in t.user.posts[-4:]] for t in tasks]
    for t, opts, a, b in zip(tasks, options, plain.scores(tasks, options), ctx.scores(tasks, options),
                             strict=True):
        if not t.context:
            assert np.array_equal(a, b)
            continue
        emb = ctx._embed(opts)
        near = (emb * ctx._embed([t.context])).sum(-1).numpy()
        assert np.array_equal(b - a, _ranks(near))


@pytest.mark.parametrize("mode", ["white-box", "transfer"])
def test_petgen_through_the_evaluator(demo: Dataset, cnn_dir: Path, tmp_path: Path, mode: str) -> None:
    params = SMALL                                        # every PETGEN setting is an attack parameter
    surrogate = None
    if mode == "transfer":
        surrogate = cnn_dir                               # a given surrogate (same model here)
    s = run_attack(demo, cnn_dir, "petgen", out=tmp_path / mode, mode=mode, attack_params=params,
                   surrogate=surrogate, max_users=24, quality=False, progress=False)
    recs = read_records(tmp_path / mode / RESULTS_FILE)
    assert len(recs) == s["n_users"] == 24
    targeted = [r for r in recs if r.get("targeted")]
    assert targeted and all(r["post"].strip() for r in targeted)
    summary = json.loads((tmp_path / mode / SUMMARY_FILE).read_text())
    assert summary["evasion_rate"] == evasion_rate(recs)
    # Refinement only ever changes posts of users the chosen post had not flipped.
    assert all(r.get("info", {}).get("refine_flips", 0) <= 10 for r in recs)
    # The manifest names the threat the generator was trained against (its cache key).
    fp = json.loads((tmp_path / mode / "manifest.json").read_text())["threat"]["fingerprint"]
    keys = [json.loads(k.read_text()) for k in advseq_home().glob("cache/petgen/*/attack_key.json")]
    assert fp in {k["threat"] for k in keys}


def _attack_on(trained: PETGEN, split, **params):
    """A petgen attack using the trained generator (what prepare() sets up)."""
    attack = create_attack("petgen", **params)
    attack.model_, attack._ranker, attack._train = trained, None, Dataset(split.train.users[:120])
    return attack


def test_refining_more_starts_never_ends_further_from_the_goal(trained: PETGEN, split, cnn_dir: Path) -> None:
    spec = AttackSpec()
    tasks = [spec.task(u) for u in split.test.users if spec.targets(u)][:16]
    gaps, queries = {}, {}
    for starts in (1, 4):
        attack = _attack_on(trained, split, candidates=4, refine_flips=2, refine_starts=starts, choose="goal")
        threat = ThreatModel(load_detector(cnn_dir), "white-box")
        outs = attack.run(tasks, threat)
        queries[starts] = sum(threat.queries.values())
        p = threat.score([t.with_post(o.post) for t, o in zip(tasks, outs, strict=True)])
        gaps[starts] = np.abs(p - np.array([t.target for t in tasks]))
    assert (gaps[1] >= 0.5).any()            # some users left to refine, else nothing is tested
    assert queries[4] > queries[1]           # their runners-up were refined too
    # The first start is the single-start run's post: the best of several is never worse.
    assert (gaps[4] <= gaps[1] + 1e-5).all(), (gaps[1], gaps[4])


def test_natural_choice_keeps_every_success(trained: PETGEN, split, cnn_dir: Path) -> None:
    spec = AttackSpec()
    tasks = [spec.task(u) for u in split.test.users if spec.targets(u)][:16]
    runs = {}
    for choose, surrogate in (("goal", False), ("natural", False), ("auto", True)):
        attack = _attack_on(trained, split, candidates=8, refine_flips=2, refine_starts=2, choose=choose)
        threat = ThreatModel(load_detector(cnn_dir), "white-box", surrogate=surrogate)
        outs = attack.run(tasks, threat)
        posts = [o.post for o in outs]
        evaded = threat.score([t.with_post(p) for t, p in zip(tasks, posts, strict=True)]) < 0.5
        runs[choose] = (posts, evaded, outs)
    goal, natural = runs["goal"], runs["natural"]
    # Several candidates reached the goal for some user, else there was nothing to choose.
    assert any(o.info.get("reaching", 0) > 1 for o in natural[2])
    assert (natural[1] == goal[1]).all()                   # the same users evade
    assert natural[0] != goal[0]
    # Users no post makes evade get a more natural candidate, not the closest one.
    missed = [o for o, e in zip(natural[2], natural[1], strict=True) if not e]
    assert missed and any(o.info.get("natural_miss") for o in missed)
    assert not any(o.info.get("natural_miss") for o, e in zip(natural[2], natural[1], strict=True) if e)
    # On the attacker's surrogate (transfer), "auto" keeps the post closest to the goal.
    assert runs["auto"][0] == goal[0]


def test_surrogate_margin_chooses_naturally_past_it(trained: PETGEN, split, cnn_dir: Path) -> None:
    """On a surrogate, ``surrogate_margin=m`` keeps the most natural post among those past
    the surrogate's threshold by ``m``: every user the closest post takes that far past it
    still gets a post that far past it, and some get another post than the closest."""
    spec = AttackSpec()
    tasks = [spec.task(u) for u in split.test.users if spec.targets(u)][:16]
    runs = {}
    for margin in (None, 0.01):
        attack = _attack_on(trained, split, candidates=8, refine_flips=2, refine_starts=2, surrogate_margin=margin)
        threat = ThreatModel(load_detector(cnn_dir), "white-box", surrogate=True)
        outs = attack.run(tasks, threat)
        p = threat.score([t.with_post(o.post) for t, o in zip(tasks, outs, strict=True)])
        runs[margin] = ([threat.reaches(q, t.target, 0.01) for q, t in zip(p, tasks, strict=True)],
                        [o.post for o in outs])
    deep = runs[None][0]
    assert any(deep)                                       # else nothing is tested
    assert all(m for m, d in zip(runs[0.01][0], deep, strict=True) if d)
    assert runs[0.01][1] != runs[None][1]


def test_before_the_last_of_k_posts_a_miss_keeps_the_closest_post(trained: PETGEN, split, cnn_dir: Path) -> None:
    """With more posts to come, a user the post does not make evade gets the candidate
    closest to the goal (the next post starts from its verdict), not the most natural one
    that the last (or only) post gets."""
    runs = {}
    for k, within in ((1, 0.0), (2, 0.0), (2, 0.05)):
        spec = AttackSpec(posts=k)
        tasks = [spec.task(u) for u in split.test.users if spec.targets(u)][:16]
        attack = _attack_on(trained, split, candidates=8, refine_flips=2, refine_starts=2, choose="natural",
                            miss_within=within)
        threat = ThreatModel(load_detector(cnn_dir), "white-box")
        outs = attack.run(tasks, threat)
        p = threat.score([t.with_post(o.post) for t, o in zip(tasks, outs, strict=True)])
        runs[k, within] = (np.abs(p - np.array([t.target for t in tasks])), outs)
    missed = runs[1, 0.0][0] >= 0.5
    assert any(o.info.get("natural_miss") for o in runs[1, 0.0][1])    # else nothing is tested
    assert not any(o.info.get("natural_miss") for o in runs[2, 0.0][1])
    closest, gap1 = runs[2, 0.0][0][missed], runs[1, 0.0][0][missed]
    assert (closest <= gap1 + 1e-5).all()
    assert (closest < gap1 - 1e-5).any()
    # miss_within: the most natural of the candidates that close to the closest one
    near, outs = runs[2, 0.05]
    assert (near[missed] <= closest + 0.05 + 1e-5).all()
    assert any(o.info.get("natural_miss") for o in outs)


def test_training_selection_margin(trained: PETGEN, split, cnn_dir: Path) -> None:
    """Training's selection rounds offer the natural choice only candidates past the goal:
    on the deployed detector any that reach it, on a surrogate only those past it by
    ``select_margin`` (default 0.25), which transfer better."""
    import copy

    from attacks.petgen.trainer import _AdversarialState

    class Recorder:                                    # stands in for Naturalness
        def best(self, tasks, options):
            self.offered += [(t, o) for t, opts in zip(tasks, options, strict=True) for o in opts]
            return [0] * len(options)

    spec = AttackSpec()
    tasks = [spec.task(u) for u in split.train.users[:60] if spec.targets(u)]

    def offered_gaps(surrogate: bool, margin: float | None, threshold: float = 0.5) -> np.ndarray:
        model = copy.deepcopy(trained)          # a selection round fine-tunes the model
        model.select_k, model.select_margin = 16, margin
        threat = ThreatModel(load_detector(cnn_dir), "white-box", surrogate=surrogate, threshold=threshold)
        recorder = Recorder()
        recorder.offered = []
        _AdversarialState(model, threat, tasks, spec, recorder).select_round(0)   # type: ignore[arg-type]
        p = threat.score([t.with_post(o) for t, o in recorder.offered])
        return np.abs(p - np.array([t.target for t, _ in recorder.offered]))

    deployed = offered_gaps(False, None)
    assert len(deployed) and (deployed < 0.5).all()
    # The same candidates every time (same seed): a margin that leaves out the half of
    # them closest to the threshold.
    margin = 0.5 - float(np.median(deployed))
    kept = offered_gaps(True, margin)
    assert len(kept) and (kept < 0.5 - margin).all() and len(kept) < len(deployed)
    assert (offered_gaps(True, None) < 0.25).all()     # the default margin on a surrogate
    # The goal is the threat's verdict: a detector that flags only from 0.6 up is evaded
    # by more of the same candidates (all targets here are 0: evasion).
    loose = offered_gaps(False, None, threshold=0.6)
    assert (loose < 0.6).all() and len(loose) > len(deployed)
    from advseq.errors import ConfigError

    for bad in ({"select_margin": 0.5}, {"select_margin": -0.1}, {"select_temperature": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            PETGEN(**bad)


def test_naturalness_prefers_the_users_own_kind_of_post(trained: PETGEN, split) -> None:
    from advseq.errors import ConfigError
    from advseq.lm import reference_lm
    from attacks.petgen.naturalness import Naturalness

    natural = Naturalness(reference_lm(Dataset(split.train.users[:120]), seed=0, progress=False, **TINY_LM))
    spec = AttackSpec()
    tasks = [spec.task(u) for u in split.test.users if spec.targets(u)][:8]
    rare = natural.lm.vocab_.itos[-12:]                    # the LM's rarest words, jumbled
    options = [[" ".join(rare), t.history.posts[-1].text] for t in tasks]
    assert natural.best(tasks, options) == [1] * len(tasks)
    assert natural.best(tasks, [[o[1]] for o in options]) == [0] * len(tasks)
    with pytest.raises(ConfigError, match="choose"):
        create_attack("petgen", choose="deepest")


def test_petgen_train_cli(demo: Dataset, cnn_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen"
    args = ["petgen", "train", str(demo_data()), "-d", str(cnn_dir), "-o", str(out), "--no-progress",
            "-p", "gan=false", "--no-select", "-p", "adv_steps=2", "-p", "mle_epochs=1", "-p", "candidates=2",
            "-p", "max_posts=8", "-p", "batch_size=16", "-p", f"lm={json.dumps({**TINY_LM, 'max_vocab': 3000})}"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    params = manifest["config"]["params"]
    # -p gan=false holds (no flag overrides it), --no-select turns selection off
    assert params["gan"] is False and params["select"] is False
    assert params["recency"] is True
    loaded = PETGEN.load(out)
    assert loaded.gan is False
    # The saved generator is used by the attack plugin.
    s = run_attack(demo, cnn_dir, "petgen", out=tmp_path / "atk", attack_params={"generator": str(out)},
                   max_users=8, quality=False, progress=False)
    assert s["n_users"] == 8


def test_unknown_mode_is_a_clean_error(demo: Dataset, cnn_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["petgen", "train", str(demo_data()), "-d", str(cnn_dir), "-o",
                              str(tmp_path / "g"), "--mode", "grey-box"])
    assert res.exit_code == 2, res.output
    assert "white-box or transfer" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(("param", "message"), [("w_recncy=1", "'w_recncy'"), ("seed=3", "--seed")])
def test_petgen_train_cli_refuses_bad_settings(tmp_path: Path, param: str, message: str) -> None:
    res = runner.invoke(app, ["petgen", "train", str(demo_data()), "-d", str(tmp_path), "-o",
                              str(tmp_path / "g"), "-p", param])
    assert res.exit_code == 2 and message in res.output, res.output
    assert "Traceback" not in res.output


def test_a_broken_cli_plugin_costs_one_warning(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import EntryPoint

    import typer

    from advseq.cli import plugins

    eps = [EntryPoint("broken", "no_such_module.cli:app", plugins.GROUP),
           EntryPoint("petgen", "attacks.petgen.cli:app", plugins.GROUP)]
    monkeypatch.setattr(plugins, "entry_points", lambda group: [e for e in eps if e.group == group])
    host = typer.Typer()
    plugins.add_plugin_commands(host)
    assert [g.name for g in host.registered_groups] == ["petgen"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'broken'" in err and "no_such_module" in err, err


def test_cli_plugins_load_without_torch() -> None:
    code = ("import sys; from advseq.cli import app; "
            "assert any(g.name == 'petgen' for g in app.registered_groups), 'petgen train missing'; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
