"""``petgen-lm``: the LoRA adapter's math and files, the backbone's teacher-forced
log-probabilities, training, the adapter cache and the attack end to end.

The fast tests run a tiny randomly initialised Llama (SmolLM2's architecture, a few
thousand parameters) with a byte-level BPE tokenizer trained on the demo posts in a
second and SmolLM2's chat template: ``advseq.judge.load_model`` is replaced, so no real
weights are read. The tests marked slow run SmolLM2 itself on the demo data."""

from __future__ import annotations

import json

import pytest
import torch

import advseq.judge as judge_mod
from advseq.attack import AttackSpec, create_attack
from advseq.config import ParamError
from advseq.errors import ConfigError
from advseq.evaluation import RESULTS_FILE, read_records, run_attack
from advseq.quality.copies import copy_flags
from advseq.schema import Dataset
from advseq.threat import ThreatModel
from attacks.llm.backbone import Backbone
from attacks.petgen_lm import lora
from attacks.petgen_lm import train as T
from attacks.petgen_lm.attack import PETGENLMAttack

TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
            " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
            "{{ '<|im_start|>assistant\n' }}{% endif %}")
#: small settings: a handful of examples, users and candidates
SMALL = {"mle_examples": 24, "train_batch": 4, "adv_rounds": 1, "adv_users": 6, "select_k": 3,
         "candidates": 4, "rounds": 1, "lora_r": 4, "lora_layers": None, "max_new_tokens": 16,
         "threads": 1}


@pytest.fixture(scope="session")
def tiny_tokenizer(demo: Dataset):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [p.text for u in demo for p in u.posts] + [p.context or "" for u in demo for p in u.posts]
    tok.train_from_iterator(texts + ["Write your next post about: system user assistant\n"], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.chat_template = TEMPLATE
    return fast


def tiny_model(vocab: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                      max_position_embeddings=4096, tie_word_embeddings=True, initializer_range=0.3, bos_token_id=1,
                      eos_token_id=2, pad_token_id=2, attn_implementation="sdpa")
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def tiny_lm(tiny_tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every backbone loads a fresh tiny model (the same weights each time)."""
    def load(device="cpu", dtype="float32", *, shared=False):
        return tiny_tokenizer, tiny_model(len(tiny_tokenizer)), {"source": "test"}

    monkeypatch.setattr(judge_mod, "load_model", load)


def _backbone() -> Backbone:
    return Backbone(threads=1, shared=False).load()


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


# ---- the adapter ----------------------------------------------------------------------
def test_lora_starts_equal_and_only_the_adapter_trains(tiny_lm) -> None:
    bb = _backbone()
    ids = torch.tensor([bb.chat_ids([{"role": "user", "content": "the boots are great"}])])
    before = _logits(bb.model, ids)
    base = {k: v.clone() for k, v in bb.model.state_dict().items()}
    mods = lora.apply_lora(bb.model, r=4, alpha=8, dropout=0.1, targets="all", seed=3)
    assert len(mods) == 3 * 7
    assert torch.equal(_logits(bb.model, ids), before)            # B = 0: the base model
    trainable = [n for n, p in bb.model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    params = lora.adapter_parameters(mods)
    assert len(params) == len(trainable)
    opt = torch.optim.AdamW(params, lr=1e-2)
    sums, n = bb.answer_logprobs([ids[0].tolist()], [[5, 6, 7]])
    (-sums.sum() / n.sum()).backward()
    opt.step()
    after = _logits(bb.model, ids)
    assert not torch.equal(after, before)
    for name, value in bb.model.state_dict().items():           # base weights untouched
        if "lora_" not in name:
            assert torch.equal(value, base[name.replace(".base.", ".")]), name
    with lora.adapters_enabled(mods, False):
        assert torch.equal(_logits(bb.model, ids), before)
    assert torch.equal(_logits(bb.model, ids), after)


def test_lora_targets_and_layers(tiny_lm) -> None:
    bb = _backbone()
    mods = lora.apply_lora(bb.model, r=2, alpha=2, targets="qv", layers=1)
    assert sorted(mods) == ["layers.2.self_attn.q_proj", "layers.2.self_attn.v_proj"]
    assert mods["layers.2.self_attn.q_proj"].lora_A.shape == (2, 32)
    with pytest.raises(ConfigError, match="targets"):
        lora.apply_lora(_backbone().model, r=2, alpha=2, targets="mlp")


def test_adapter_saves_and_loads_identically(tiny_lm, tmp_path) -> None:
    bb = _backbone()
    mods = lora.apply_lora(bb.model, r=4, alpha=8, seed=1)
    with torch.no_grad():
        for m in mods.values():
            m.lora_B.normal_(0, 0.5)
    ids = torch.tensor([[3, 9, 27, 81, 200, 11]])
    want = _logits(bb.model, ids)
    lora.save_adapter(tmp_path / "a", mods, {"lora": {"lora_r": 4}})
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["format"] == lora.FORMAT and (tmp_path / "a" / lora.WEIGHTS_FILE).is_file()
    other = _backbone()
    fresh = lora.apply_lora(other.model, r=4, alpha=8, seed=2)     # another A: differs until loaded
    lora.load_adapter(tmp_path / "a", fresh)
    assert torch.equal(_logits(other.model, ids), want)
    wrong = lora.apply_lora(_backbone().model, r=2, alpha=8)
    with pytest.raises(ConfigError, match="does not fit"):
        lora.load_adapter(tmp_path / "a", wrong)
    with pytest.raises(ConfigError, match="not a saved petgen-lm adapter"):
        lora.load_adapter(tmp_path, fresh)


def test_answer_logprobs_match_a_plain_forward_pass(tiny_lm) -> None:
    bb = _backbone()
    prompts = [[1, 40, 41, 42, 43, 44], [1, 50], [1, 60, 61]]
    answers = [[7, 8], [9, 10, 11, 12, 13], [14]]
    sums, lengths = bb.answer_logprobs(prompts, answers)
    assert lengths.tolist() == [2, 5, 1]
    for p, a, s in zip(prompts, answers, sums, strict=True):
        logp = torch.log_softmax(_logits(bb.model, torch.tensor([p + a]))[0], -1)
        want = sum(float(logp[len(p) - 1 + t, tok]) for t, tok in enumerate(a))
        assert float(s.detach()) == pytest.approx(want, abs=1e-4)
    with pytest.raises(ValueError):
        bb.answer_logprobs([[1]], [[]])


# ---- settings ---------------------------------------------------------------------------
def test_settings_checked() -> None:
    with pytest.raises(ParamError, match="lora_r"):
        create_attack("petgen-lm", lora_r=0)
    with pytest.raises(ParamError, match="lora_targets"):
        create_attack("petgen-lm", lora_targets="mlp")
    with pytest.raises(ParamError, match="select_margin"):
        create_attack("petgen-lm", select_margin=0.5)
    with pytest.raises(ParamError, match="unknown setting"):
        create_attack("petgen-lm", lora_rank=4)
    atk = create_attack("petgen-lm", adv_rounds=0, context=False)
    assert atk.get_params()["adv_rounds"] == 0 and atk.get_params()["candidates"] == 8


def test_saved_adapter_with_bad_settings_is_named(tiny_lm, demo, cnn_dir, tmp_path) -> None:
    from advseq.detector import load_detector

    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"format": lora.FORMAT, "modules": [], "lora": {
        "lora_r": -1, "lora_alpha": 1, "lora_dropout": 0, "lora_targets": "qv", "lora_layers": None}}))
    atk = create_attack("petgen-lm", adapter=str(folder))
    with pytest.raises(ParamError, match="lora_r"):
        atk.prepare(Dataset(demo.users[:10]), ThreatModel(load_detector(cnn_dir), "score"), AttackSpec())


# ---- training ---------------------------------------------------------------------------
def test_mle_steps_lower_the_loss(tiny_lm, demo) -> None:
    atk = PETGENLMAttack(**{**SMALL, "lr": 3e-2})
    atk.backbone_ = atk._backbone().load()
    atk._adapt({k: getattr(atk, k) for k in ("lora_r", "lora_alpha", "lora_dropout", "lora_targets",
                                               "lora_layers")})
    train = Dataset(demo.users[:40])
    examples = T.mle_examples(atk, train, AttackSpec())
    assert len(examples) == 24
    # targets are real posts after the posts before them: never inside their own prompt
    assert all(e.answer[-1] == atk.backbone_.pad_id or len(e.answer) == atk.max_new_tokens
               for e in examples)

    def loss() -> float:
        with torch.no_grad():
            s, n = atk.backbone_.answer_logprobs([e.prompt for e in examples], [e.answer for e in examples])
        return float(-s.sum() / n.sum())

    before = loss()
    info = T.train_steps(atk, examples, 3, stage="test", salt=0, progress=False)
    assert info["steps"] == 18 and info["tokens"] == 3 * sum(e.tokens for e in examples)
    assert loss() < before - 0.1
    assert len(info["epoch_losses"]) == 3 and info["epoch_losses"][-1] < info["epoch_losses"][0]


def test_prompt_shortened_and_context_ablation(tiny_lm, demo) -> None:
    atk = PETGENLMAttack(recent=4, relevant=2, max_prompt_tokens=10_000)
    atk.backbone_ = atk._backbone().load()
    task = AttackSpec().task(demo.users[0])
    full = atk._prompt(task)
    atk.max_prompt_tokens = len(full) - 1
    assert len(atk._prompt(task)) < len(full)
    atk.context, atk.max_prompt_tokens = False, 10_000
    text = atk.backbone_.tokenizer.decode(atk._prompt(task))
    assert task.context[:30] not in text and "Write your next post." in text


# ---- the attack end to end (tiny model) ---------------------------------------------------
def _run(demo, cnn_dir, out, **kw):
    kw.setdefault("quality", False)
    kw.setdefault("max_users", 8)
    params = {**SMALL, **kw.pop("params", {})}
    return run_attack(demo, cnn_dir, "petgen-lm", out=out, progress=False, attack_params=params, **kw)


def _check(records, demo, budget=None) -> None:
    users = {u.user_id: u for u in demo}
    corpus = [p.text for u in demo for p in u.posts]
    written = [r for r in records if r["targeted"]]
    assert written
    for r in written:
        assert r["post"].strip()
        if budget is not None:
            assert r["queries"] <= budget
    usable = [r for r in written if r["status"] != "failed"]
    exact, _ = copy_flags([r["post"] for r in usable], [[p.text for p in users[r["user_id"]].posts]
                                                        for r in usable], corpus)
    assert not exact.any()


def test_attack_trains_caches_and_is_deterministic(tiny_lm, demo, cnn_dir, tmp_path, monkeypatch) -> None:
    from advseq.runtime import advseq_home

    s = _run(demo, cnn_dir, tmp_path / "w", mode="white-box")
    first = read_records(tmp_path / "w" / RESULTS_FILE)
    _check(first, demo)
    assert s["mode"] == "white-box"
    cached = sorted(p.name for p in (advseq_home() / "cache" / "petgen-lm").iterdir())
    assert len(cached) >= 2                                      # the MLE stage and the final adapter

    def no_training(*a, **k):
        raise AssertionError("trained again instead of loading the cached adapter")

    monkeypatch.setattr(T, "train_steps", no_training)
    _run(demo, cnn_dir, tmp_path / "w2", mode="white-box")
    assert [r["post"] for r in read_records(tmp_path / "w2" / RESULTS_FILE)] == [r["post"] for r in first]


def test_training_is_reproducible(tiny_lm, demo, cnn_dir, tmp_path, monkeypatch) -> None:
    """Two cold trainings (separate caches) give the same adapter tensors."""
    from advseq.detector import load_detector

    train = Dataset(demo.users[:60])
    tensors = []
    for name in ("a", "b"):
        monkeypatch.setenv("ADVSEQ_HOME", str(tmp_path / name))
        atk = PETGENLMAttack(**SMALL)
        atk.prepare(train, ThreatModel(load_detector(cnn_dir), "score"), AttackSpec())
        assert atk.fit_info_["adversarial"][0]["chosen"] > 0
        tensors.append(lora.adapter_tensors(atk.adapter_modules_))
    assert tensors[0].keys() == tensors[1].keys()
    assert all(torch.equal(tensors[0][k], tensors[1][k]) for k in tensors[0])
    assert any(bool(v.abs().sum()) for k, v in tensors[0].items() if k.endswith("lora_B"))


def test_attack_modes_and_budget(tiny_lm, demo, cnn_dir, tmp_path) -> None:
    _run(demo, cnn_dir, tmp_path / "s", mode="score", budget=3, params={"candidates": 6})
    _check(read_records(tmp_path / "s" / RESULTS_FILE), demo, budget=3)
    _run(demo, cnn_dir, tmp_path / "l", mode="label", budget=5, params={"adv_rounds": 0})
    _check(read_records(tmp_path / "l" / RESULTS_FILE), demo, budget=5)
    s = _run(demo, cnn_dir, tmp_path / "t", mode="transfer", surrogate=cnn_dir)
    assert s["mode"] == "transfer"
    _check(read_records(tmp_path / "t" / RESULTS_FILE), demo)


def test_attack_writes_k_posts(tiny_lm, demo, cnn_dir, tmp_path) -> None:
    _run(demo, cnn_dir, tmp_path / "k", mode="score", spec=AttackSpec(posts=2), budget=20)
    records = [r for r in read_records(tmp_path / "k" / RESULTS_FILE) if r["targeted"]]
    assert records and all(1 <= len(r["posts"]) <= 2 for r in records)
    assert any(len(r["posts"]) == 2 for r in records)
    for r in records:
        assert len(set(r["posts"])) == len(r["posts"]) and r["queries"] <= 20


def test_adapter_key(tiny_lm, demo, cnn_dir) -> None:
    from advseq.detector import load_detector

    train = Dataset(demo.users[:20])
    tm = ThreatModel(load_detector(cnn_dir), "score")
    atk = PETGENLMAttack(**SMALL)
    key = atk.adapter_key(train, AttackSpec(posts=3), tm)
    assert key["threat"] == tm.fingerprint and "posts" not in key["spec"]
    assert key == atk.adapter_key(train, AttackSpec(), tm)             # one adapter for every K
    mle = atk.adapter_key(train, AttackSpec(), None)
    assert mle["threat"] is None and "select_k" not in mle["params"]
    plain = PETGENLMAttack(**{**SMALL, "adv_rounds": 0}).adapter_key(train, AttackSpec(), tm)
    assert plain["threat"] is None
    assert PETGENLMAttack(**{**SMALL, "seed": 1}).adapter_key(train, AttackSpec(), tm) != key


# ---- the real backbone (slow) -------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_petgen_lm_white_box_and_transfer(demo, cnn_dir, tmp_path, smollm2) -> None:
    params = {"mle_examples": 16, "train_batch": 4, "adv_rounds": 1, "adv_users": 4, "select_k": 3,
              "candidates": 3, "rounds": 1, "max_new_tokens": 24, "threads": 2}
    s = _run(demo, cnn_dir, tmp_path / "w", mode="white-box", max_users=6, params=params)
    records = read_records(tmp_path / "w" / RESULTS_FILE)
    _check(records, demo)
    assert all(len(r["post"].split()) >= 3 for r in records if r["targeted"] and r["status"] == "ok")
    assert s["prepare_seconds"] > 0
    _run(demo, cnn_dir, tmp_path / "t", mode="transfer", surrogate=cnn_dir, max_users=6, params=params)
    _check(read_records(tmp_path / "t" / RESULTS_FILE), demo)
