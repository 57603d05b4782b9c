"""Tokenizer and vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from advseq.errors import ConfigError
from advseq.text import SPECIALS, Tokenizer, Vocabulary


def test_tokenizer_splits_words_punctuation_urls() -> None:
    toks = Tokenizer().tokenize("RT @Bob: It's well-known https://t.co/x1!! Costs 3.50 (ok)")
    assert toks == ["rt", "@bob", ":", "it's", "well-known", "<url>", "!", "!", "costs", "3.50",
                    "(", "ok", ")"]


def test_tokenizer_options() -> None:
    toks = Tokenizer(lowercase=False, replace_urls=False).tokenize("Hi www.a.org/b now")
    assert toks == ["Hi", "www.a.org/b", "now"]


def test_detokenize_closes_punctuation() -> None:
    assert Tokenizer.detokenize(["hello", ",", "world", "(", "x", ")", "!"]) == "hello, world (x)!"


def test_vocab_specials_frequency_order_and_cuts() -> None:
    texts = ["a a a b b c", "a b d"]
    v = Vocabulary.build(texts, min_freq=2)
    assert v.itos[: len(SPECIALS)] == list(SPECIALS)
    assert v.itos[len(SPECIALS):] == ["a", "b"]
    assert v.encode("a c zzz") == [5, v.unk_id, v.unk_id]
    assert len(Vocabulary.build(texts, min_freq=1, max_size=7)) == 7
    with pytest.raises(ConfigError):
        Vocabulary.build(texts, max_size=3)


def test_encode_bos_eos_max_len_and_batch() -> None:
    v = Vocabulary.build(["x y z"], min_freq=1)
    assert v.encode("x y z", max_len=4, bos=True, eos=True) == [v.bos_id, 5, 6, v.eos_id]
    ids, lengths = v.encode_batch(["x y z", "", "z"], max_len=2)
    assert ids.shape == (3, 2) and lengths.tolist() == [2, 0, 1]
    assert ids[1].tolist() == [v.pad_id, v.pad_id]


def test_vocab_save_load(tmp_path: Path) -> None:
    v = Vocabulary.build(["Hello World hello"], Tokenizer(lowercase=False), min_freq=1)
    back = Vocabulary.load(v.save(tmp_path / "vocab.json"))
    assert back.itos == v.itos and back.tokenizer == v.tokenizer and back.counts == v.counts


def test_vocab_load_rejects_other_json(tmp_path: Path) -> None:
    path = tmp_path / "v.json"
    path.write_text('{"tokens": ["a"]}')
    with pytest.raises(ConfigError, match="not an advseq vocabulary"):
        Vocabulary.load(path)


words = st.text(alphabet="abcdefghij", min_size=1, max_size=6)


@given(st.lists(words, min_size=1, max_size=20))
def test_decode_inverts_encode_for_known_words(ws: list[str]) -> None:
    text = " ".join(ws)
    v = Vocabulary.build([text], min_freq=1)
    assert v.decode(v.encode(text, bos=True, eos=True)) == text
