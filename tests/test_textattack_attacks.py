"""TextAttack-based attacks (``textbugger``, the ``textattack`` recipe adapter) on the
bundled demo data, against the shared small cnn (conftest ``cnn_dir``) in the score threat
model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from advseq.attack import AttackSpec, create_attack
from advseq.errors import CapabilityError, ConfigError, ResourceMissing
from advseq.evaluation import RESULTS_FILE, read_records, run_attack
from advseq.threat import ThreatModel
from attacks.copycat import CopycatAttack

N_USERS = 24


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread for this module: on 2 shared cores, torch's two OpenMP threads
    run MiniLM up to ~10x slower whenever another job holds a core (measured)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def attack(demo, cnn_dir, name, out, **kw) -> tuple[dict, list[dict]]:
    kw.setdefault("quality", False)
    kw.setdefault("max_users", N_USERS)
    summary = run_attack(demo, cnn_dir, name, out=out, mode="score", progress=False, **kw)
    return summary, read_records(Path(out) / RESULTS_FILE)


def start_posts(demo, records: list[dict], seed: int = 0) -> dict[str, str]:
    """The copycat post each targeted user's attack starts from."""
    by_id = {u.user_id: u for u in demo.users}
    tasks = [AttackSpec().task(by_id[r["user_id"]]) for r in records if r["targeted"]]
    outs = CopycatAttack(seed=seed).run(tasks, None)  # type: ignore[arg-type]  # random: no queries
    return {t.user_id: o.post for t, o in zip(tasks, outs, strict=True)}


@pytest.fixture(scope="module")
def textbugger_run(demo, cnn_dir, tmp_path_factory: pytest.TempPathFactory):
    return attack(demo, cnn_dir, "textbugger", tmp_path_factory.mktemp("tb") / "r")


def test_importing_the_plugins_does_not_import_textattack() -> None:
    code = ("import sys, attacks.textattack.textbugger, attacks.textattack.recipe; "
            "from advseq import registry; registry.attacks.describe('textbugger'); "
            "assert 'textattack' not in sys.modules, 'textattack imported'; "
            "assert 'sentence_transformers' not in sys.modules, 'sentence_transformers imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_textbugger_writes_a_post_for_every_targeted_user(textbugger_run) -> None:
    summary, records = textbugger_run
    targeted = [r for r in records if r["targeted"]]
    assert len(records) == N_USERS and targeted and summary["n_targeted"] == len(targeted)
    assert all(isinstance(r["post"], str) and r["post"].strip() for r in targeted)
    assert {r["status"] for r in targeted} <= {"ok", "budget_exhausted", "failed"}
    assert summary["budget_exhausted"] == 0  # no budget set


def test_textbugger_perturbs_within_the_similarity_floor(demo, textbugger_run) -> None:
    from advseq.embeddings import SentenceEmbedder

    _, records = textbugger_run
    starts = start_posts(demo, records)
    changed = [(starts[r["user_id"]], r["post"]) for r in records
               if r["targeted"] and r["post"] != starts[r["user_id"]]]
    assert changed, "textbugger left every copycat post unchanged"
    emb = SentenceEmbedder(max_seq_length=128, cache=False)
    a = emb.embed([s for s, _ in changed])
    b = emb.embed([p for _, p in changed])
    cos = (a * b).sum(axis=1)
    assert np.all(cos >= 0.8 - 1e-4), list(zip(cos.tolist(), changed, strict=True))
    # the reported similarity is the constraint's own
    assert all(r["info"]["similarity"] >= 0.8 for r in records
               if r["targeted"] and r["post"] != starts[r["user_id"]])


def same_users_same_posts(part: list[dict], full: list[dict]) -> None:
    first = {r["user_id"]: r for r in full}
    for r in part:
        ref = first[r["user_id"]]
        assert (r["post"], r["status"], r["queries"], r["attacked_prob"]) == \
            (ref["post"], ref["status"], ref["queries"], ref["attacked_prob"])


def test_textbugger_is_deterministic_and_batch_independent(demo, cnn_dir, tmp_path, textbugger_run) -> None:
    """A second run in batches of 7 (other neighbours in every batch): the same post,
    status, query count and verdict for every user."""
    s1, a = textbugger_run
    s2, b = attack(demo, cnn_dir, "textbugger", tmp_path / "r", batch_size=7)
    assert len(b) == len(a) == N_USERS
    same_users_same_posts(b, a)
    assert s1["evasion_rate"] == s2["evasion_rate"]


def test_textbugger_respects_the_query_budget(demo, cnn_dir, tmp_path) -> None:
    q = 8
    summary, records = attack(demo, cnn_dir, "textbugger", tmp_path / "r", budget=q, max_users=10)
    assert max(r["queries"] for r in records) <= q
    assert summary["budget_exhausted"] > 0
    assert all(r["post"] for r in records if r["targeted"])


def test_textbugger_needs_scores() -> None:
    from advseq.detector import CallableDetector

    tm = ThreatModel(CallableDetector(lambda us: [0.5] * len(us)), "label")
    with pytest.raises(CapabilityError, match="score"):
        tm.require(create_attack("textbugger").requires, "textbugger")


def test_textattack_deepwordbug(demo, cnn_dir, tmp_path) -> None:
    summary, records = attack(demo, cnn_dir, "textattack", tmp_path / "r",
                              attack_params={"recipe": "deepwordbug"})
    targeted = [r for r in records if r["targeted"]]
    assert targeted and all(r["post"] for r in targeted)
    starts = start_posts(demo, records)
    assert any(r["post"] != starts[r["user_id"]] for r in targeted)
    assert summary["attack"] == "textattack"


def test_textattack_unknown_recipe_is_refused() -> None:
    with pytest.raises(ConfigError, match="deepwordbug.*pruthi.*pwws"):
        create_attack("textattack", recipe="textfooler")


def test_textattack_pwws_without_wordnet_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import advseq.runtime

    monkeypatch.setattr(advseq.runtime, "wordnet_available", lambda: False)
    with pytest.raises(ResourceMissing, match="pwws.*WordNet.*wordnet-base"):
        create_attack("textattack", recipe="pwws")


def test_textattack_pwws_runs_or_is_refused(demo, cnn_dir, tmp_path) -> None:
    from advseq.runtime import wordnet_available

    if not wordnet_available():
        with pytest.raises(ResourceMissing, match="wordnet-base"):
            create_attack("textattack", recipe="pwws")
        return
    summary, records = attack(demo, cnn_dir, "textattack", tmp_path / "r", max_users=6,
                              budget=40, attack_params={"recipe": "pwws"})
    targeted = [r for r in records if r["targeted"]]
    assert targeted and all(r["post"] for r in targeted)
    assert max(r["queries"] for r in records) <= 40


def test_wrapper_scores_the_whole_user_and_agrees_with_the_threshold(demo) -> None:
    from advseq.detector import CallableDetector
    from attacks.textattack.recipe import UserSequenceWrapper

    table = {"low": 0.2, "tie": 0.6, "high": 0.7, "mid": 0.55}
    seen: list[int] = []

    def score(users):
        seen.extend(len(u.posts) for u in users)
        return np.array([table[u.posts[-1].text] for u in users])

    user = next(u for u in demo.users if u.label == 1)
    tm = ThreatModel(CallableDetector(score), "score", threshold=0.6)
    wrapper = UserSequenceWrapper()
    wrapper.bind(tm, AttackSpec().task(user))
    out = wrapper(["low", "tie", "high", "mid"])
    assert out.shape == (4, 2) and np.allclose(out.sum(axis=1), 1.0)
    assert out.argmax(axis=1).tolist() == [0, 1, 1, 0]      # p >= 0.6 is malicious
    assert seen == [len(user.posts) + 1] * 4                  # history + the candidate post
    assert tm.queries[user.user_id] == 4 and wrapper.scores["mid"] == 0.55
