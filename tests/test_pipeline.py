"""Run configs, the content-addressed matrix (reuse and resume) and the retraining loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advseq import registry
from advseq.attack import Attack, AttackOutput
from advseq.errors import ConfigError
from advseq.io import load_dataset
from advseq.paths import REPO_DIR, demo_data
from advseq.pipeline import INDEX_FILE, load_config, plan, run_matrix
from advseq.retrain import retrain_loop

TINY = "{ epochs = 3, emb_dim = 32, filters = 16, seq_hidden = 16, max_posts = 12, max_tokens = 24 }"
CONFIG = f"""
[run]
name = "tiny"
quality = false
max_users = 24

[[datasets]]
name = "demo"
demo = true

[[detectors]]
name = "cnn"
params = {TINY}

[[detectors]]
name = "tfidf-lr"

[surrogate]
detector = "cnn"
params = {TINY}

[[attacks]]
name = "copycat"
modes = ["white-box", "label", "transfer"]

[[attacks]]
name = "hotflip"
modes = ["white-box", "score", "transfer"]
params = {{ max_flips = 2 }}
"""


def write_config(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_shipped_configs_parse() -> None:
    for name in ("demo", "wiki", "pan19"):
        path = REPO_DIR / "configs" / f"{name}.toml"
        try:
            cfg = load_config(path, out="/tmp/unused")
        except ConfigError as err:
            if "shared" in str(err):
                pytest.skip(f"{name}: {err}")
            raise
        assert cfg.datasets and cfg.detectors and cfg.attacks


def test_bad_configs_name_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"run\.toml:1:5: invalid TOML"):
        load_config(write_config(tmp_path, "[run\nname="))
    with pytest.raises(ConfigError, match=r"run\.toml:1: \[\[datasets\]\] #1: missing key 'name'"):
        load_config(write_config(tmp_path, "[[datasets]]\ndemo = true\n"))
    with pytest.raises(ConfigError, match=r"run\.toml:24: \[\[attacks\]\] #1 modes: item 1: must be one of"):
        load_config(write_config(tmp_path, CONFIG.replace('"label"', '"psychic"')))
    with pytest.raises(ConfigError, match=r"run\.toml:16: \[\[detectors\]\] #2 name: unknown detector 'nope'"):
        load_config(write_config(tmp_path, CONFIG.replace('name = "tfidf-lr"', 'name = "nope"')))


@pytest.mark.slow
def test_matrix_runs_reuses_and_marks_inapplicable(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path), out=tmp_path / "run")
    index = run_matrix(cfg, progress=False)
    status = {u["label"]: u["status"] for u in index["units"]}
    assert status["demo: train cnn"] == "done"
    assert status["demo: hotflip (white-box) vs tfidf-lr"] == "not applicable"
    assert status["demo: hotflip (score) vs cnn"] == "not applicable"
    assert status["demo: copycat (label) vs tfidf-lr"] == "done"
    assert status["demo: hotflip (transfer) vs tfidf-lr"] == "done"
    saved = json.loads((tmp_path / "run" / INDEX_FILE).read_text())
    assert len(saved["units"]) == len(index["units"])
    again = run_matrix(cfg, progress=False)
    assert {u["status"] for u in again["units"]} <= {"reused", "not applicable"}


@pytest.mark.slow
def test_matrix_resumes_an_interrupted_attack(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path), out=tmp_path / "run")
    run_matrix(cfg, progress=False)
    unit = next(p for p in (tmp_path / "run" / "attacks").rglob("hotflip-white-box-*"))
    summary = json.loads((unit / "summary.json").read_text())
    results = (unit / "results.jsonl").read_text().splitlines(keepends=True)
    (unit / "summary.json").unlink()
    (unit / "results.jsonl").write_text("".join(results[:5]))   # as if killed after 5 users
    index = run_matrix(cfg, progress=False)
    entry = next(u for u in index["units"] if u["path"] == str(unit.relative_to(tmp_path / "run")))
    assert entry["status"] == "done"
    assert len((unit / "results.jsonl").read_text().splitlines()) == len(results)
    again = json.loads((unit / "summary.json").read_text())
    drop = {"attack_seconds", "posts_per_second", "prepare_seconds"}
    assert {k: v for k, v in again.items() if k not in drop} == {k: v for k, v in summary.items() if k not in drop}


@pytest.mark.slow
def test_retrain_loop(tmp_path: Path) -> None:
    ds = load_dataset(demo_data())
    res = retrain_loop(ds, "cnn", "hotflip", tmp_path / "rt", rounds=1, seed=0,
                       detector_params={"epochs": 3, "emb_dim": 32, "filters": 16, "seq_hidden": 16,
                                        "max_posts": 12, "max_tokens": 24},
                       attack_params={"max_flips": 2}, max_users=24, progress=False)
    rounds = res["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[1]["n_train"] > rounds[0]["n_train"]   # augmented with the attacks' posts
    added = (tmp_path / "rt" / "round_0" / "augmented.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in added]
    assert rows and all("#adv0" in r["user_id"] for r in rows)
    assert {r["label"] for r in rows} == {0, 1}  # benign users join too (balance)
    assert "f1_change" in res and (tmp_path / "rt" / "rounds.json").exists()


class Signature(Attack):
    """Writes a post that names its user and target: cheap, and needs no capability."""

    name = "signature-test"
    requires = frozenset()

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def run(self, tasks, threat):  # type: ignore[no-untyped-def]
        return [AttackOutput(f"attacker wrote for {t.user_id} aiming at {t.target}") for t in tasks]


def test_retrain_gives_benign_users_the_attackers_post_too(tmp_path: Path) -> None:
    """Benign training users join with a post the same attacker writes (aimed at benign),
    so "the last post reads like the attacker's" cannot become a malicious shortcut."""
    registry.attacks.register("signature-test", Signature)
    ds = load_dataset(demo_data())
    retrain_loop(ds, "tfidf-lr", "signature-test", tmp_path / "rt", rounds=1, seed=0, max_users=24, mode="score",
                 progress=False)
    rows = [json.loads(x) for x in (tmp_path / "rt" / "round_0" / "augmented.jsonl").read_text().splitlines()]
    by_label = {0: [r for r in rows if r["label"] == 0], 1: [r for r in rows if r["label"] == 1]}
    assert by_label[0] and by_label[1]
    for r in rows:
        uid = r["user_id"].split("#")[0]
        assert r["posts"][-1]["text"] == f"attacker wrote for {uid} aiming at 0"


def test_transfer_retrain_attacks_the_runs_surrogate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transfer-mode [[retrain]] gets the run's [surrogate] (detector and params) and its
    folder hash names it; a white-box loop's folder does not depend on the surrogate."""
    import advseq.retrain

    registry.attacks.register("signature-test", Signature)
    ds = load_dataset(demo_data())
    small = {"epochs": 1, "emb_dim": 16, "filters": 8, "seq_hidden": 8, "max_posts": 8, "max_tokens": 12}

    def matrix(epochs: int) -> dict:
        return {"run": {"name": "s"}, "datasets": [{"name": "demo", "demo": True}],
                "detectors": [{"name": "tfidf-lr"}],
                "surrogate": {"detector": "cnn", "params": {**small, "epochs": epochs}},
                "retrain": [{"detector": "tfidf-lr", "attack": "signature-test", "mode": m, "rounds": 1}
                            for m in ("transfer", "white-box")]}

    calls: list[dict] = []
    monkeypatch.setattr(advseq.retrain, "retrain_loop", lambda *a, **kw: calls.append(kw) or {})
    units = {e: [u for u in plan(load_config(matrix(e), out=tmp_path / "run"), {"demo": ds})
                 if u.kind == "retrain"] for e in (1, 2)}
    units[1][0].run()
    assert (calls[0]["mode"], calls[0]["surrogate"], calls[0]["surrogate_params"]) == ("transfer", "cnn", small)
    assert units[1][0].path != units[2][0].path      # transfer: the surrogate is in the hash
    assert units[1][1].path == units[2][1].path      # white-box: it is not
    monkeypatch.undo()

    res = retrain_loop(ds, "tfidf-lr", "signature-test", tmp_path / "rt", rounds=1, seed=0, max_users=24,
                       mode="transfer", surrogate="cnn", surrogate_params=small, progress=False)
    assert res["config"]["surrogate"] == {"detector": "cnn", "params": small}
    for r in (0, 1):
        saved = json.loads((tmp_path / "rt" / f"round_{r}" / "attack" / "surrogate" / "config.json").read_text())
        assert saved["detector"] == "cnn" and saved["params"]["filters"] == 8
        assert saved["params"]["seed"] == 1000               # surrogate_seed(0)


def test_retrain_warm_start_fine_tunes_the_round_before(tmp_path: Path) -> None:
    """fine_tune_epochs: round 1's detector continues round 0's (same vocabulary, marked
    fine-tuned, at most N epochs) on the augmented users; the setting is recorded."""
    ds = load_dataset(demo_data())
    params = {"epochs": 2, "emb_dim": 16, "filters": 8, "seq_hidden": 8, "max_posts": 8, "max_tokens": 16}
    res = retrain_loop(ds, "cnn", "copycat", tmp_path / "rt", rounds=1, seed=0, detector_params=params, max_users=16,
                       mode="score", fine_tune_epochs=1, progress=False)
    assert res["config"]["fine_tune_epochs"] == 1
    r0, r1 = (json.loads((tmp_path / "rt" / f"round_{r}" / "detector" / "config.json").read_text())
              for r in (0, 1))
    assert r1["fit_info"]["fine_tuned"] and r1["fit_info"]["epochs"] == 1
    assert "fine_tuned" not in r0["fit_info"]
    vocab = [(tmp_path / "rt" / f"round_{r}" / "detector" / "vocab.json").read_text() for r in (0, 1)]
    assert vocab[0] == vocab[1]
    assert res["rounds"][1]["n_train"] > res["rounds"][0]["n_train"]


def test_retrain_warm_start_refused_where_the_detector_cannot(tmp_path: Path) -> None:
    from advseq.errors import CapabilityError

    ds = load_dataset(demo_data())
    with pytest.raises(CapabilityError, match="cannot fine-tune"):
        retrain_loop(ds, "tfidf-lr", "copycat", tmp_path / "rt", rounds=1, mode="score",
                     fine_tune_epochs=2, progress=False)
    assert not (tmp_path / "rt").exists()
    cfg = CONFIG + '\n[[retrain]]\ndetector = "tfidf-lr"\nattack = "copycat"\nmode = "score"\nfine_tune_epochs = 2\n'
    with pytest.raises(ConfigError, match=r"\[\[retrain\]\] #1 fine_tune_epochs: detector 'tfidf-lr' cannot fine-tune"):
        load_config(write_config(tmp_path, cfg))


def test_validation_carve_keeps_copies_with_their_originals() -> None:
    """A held-out share drawn among the originals (the same one as without copies), each
    copy on its original's side."""
    from advseq.schema import User
    from advseq.torch_fit import carve_validation

    users = list(load_dataset(demo_data()).users)
    plain = carve_validation(users, 0.2, 3)
    copies = [User(f"{u.user_id}#adv0", u.label, u.posts) for u in users[::2]]
    train, valid = carve_validation(users + copies, 0.2, 3, {c.user_id: c.user_id.split("#")[0] for c in copies})
    originals = {u.user_id for u in users}
    assert [u.user_id for u in train if u.user_id in originals] == [u.user_id for u in plain[0]]
    assert [u.user_id for u in valid if u.user_id in originals] == [u.user_id for u in plain[1]]
    held = {u.user_id for u in plain[1]}
    assert len(train) + len(valid) == len(users) + len(copies)
    assert any(u.user_id.endswith("#adv0") for u in valid)         # else nothing is tested
    assert all(u.user_id.split("#")[0] in held for u in valid)
    assert not any(u.user_id.split("#")[0] in held for u in train)


def test_retrain_early_stops_on_users_it_does_not_train_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Round 1's detector holds out its validation share with every attacked copy on its
    original's side: no held-out user is a copy of a user it trains on."""
    import advseq.torch_fit

    registry.attacks.register("signature-test", Signature)
    seen: list[tuple[list[str], list[str]]] = []
    real = advseq.torch_fit.train_loop

    def spy(det, train, valid, **kw):  # type: ignore[no-untyped-def]
        seen.append(([u.user_id for u in train], [u.user_id for u in valid or []]))
        return real(det, train, valid, **kw)

    monkeypatch.setattr(advseq.torch_fit, "train_loop", spy)
    params = {"epochs": 1, "emb_dim": 16, "filters": 8, "seq_hidden": 8, "max_posts": 8, "max_tokens": 12}
    retrain_loop(load_dataset(demo_data()), "cnn", "signature-test", tmp_path / "rt", rounds=1, seed=0,
                 detector_params=params, max_users=16, progress=False)
    assert len(seen) == 2
    train, valid = seen[1]
    assert any("#adv0" in v for v in valid) and any("#adv0" in t for t in train)
    trained = {t.split("#")[0] for t in train}
    assert not any(v.split("#")[0] in trained for v in valid)
