"""PETGEN: the personalised generation attacker — its settings, training
(:mod:`attacks.petgen.trainer`), writing posts, saving and loading.

He, Ahamad, Kumar. "PETGEN: Personalized Text Generation Attack on Deep Sequence
Embedding-based Classification Models". KDD 2021.

Writing (:meth:`PETGEN.write`): ``candidates`` posts are sampled per user (at
``temperature``) and the one the detector (or the surrogate) finds closest to the goal
is kept, within the budget — or, given a :class:`~attacks.petgen.naturalness.Naturalness`,
the most natural of those that already reach the goal. No token is sampled more than
``max_repeats`` times in one post: without that cap, best-of-k selection can distil the
generator into repeating a token the detector reads as benign, a post no reader would
take for the user's. Candidate re-ranking at attack time is an addition to the paper.
MALCOM (Le et al., ICDM 2020), as the PETGEN authors re-ran it, is this model without
the recency term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from advseq.attack import AttackOutput, AttackSpec, AttackTask
from advseq.candidates import fresh
from advseq.schema import Dataset
from advseq.text import SPECIALS
from advseq.threat import ThreatModel
from attacks.petgen import trainer
from attacks.petgen.generator import CondExample, Encoder, PersonalizedGenerator, task_example
from attacks.petgen.naturalness import Naturalness
from attacks.petgen.settings import PETGENSettings

FORMAT = "advseq-petgen/1"
DECODER_DIR = "decoder"
ENCODER_FILE = "encoder.safetensors"
#: With ``context_boost``: the platform's most frequent words (function words, punctuation)
#: are not what a context is about, so they get no boost.
COMMON_WORDS = 100


class Written(NamedTuple):
    """What :meth:`PETGEN.write` chose for each task, and the other candidates it scored."""

    outputs: list[AttackOutput]
    #: per task, the other scored candidates with their scores, closest to the goal first
    runners_up: list[list[tuple[str, float]]]



class PETGEN(PETGENSettings):
    """The personalised generation attacker: train with :meth:`fit`, write with :meth:`write`
    (settings: :class:`~attacks.petgen.settings.PETGENSettings`)."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.fit_info_: dict[str, Any] = {}

    def _encoder(self) -> Encoder:
        lm = self.lm_
        return Encoder(lm.vocab_, max_posts=self.max_posts, max_tokens=lm.max_post_tokens,
                       max_context_tokens=max(0, lm.max_context_tokens - self.n_prefix),
                       recent_k=self.recent_k)

    def fit(self, train: Dataset, threat: ThreatModel, spec: AttackSpec | None = None, *,
            progress: bool | None = None) -> PETGEN:
        """Pre-train (cached), then fine-tune against ``threat``'s detector
        (:func:`attacks.petgen.trainer.fit`)."""
        return trainer.fit(self, train, threat, spec, progress=progress)

    # ---- writing -------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, tasks: Sequence[AttackTask], uniforms: torch.Tensor, k: int, *,
               temperature: float | None = None) -> list[list[str]]:
        """``k`` posts per task; ``uniforms [len(tasks) * k, T]`` are the random draws
        (at ``temperature``, by default the model's)."""
        if not tasks:
            return []
        enc = self._encoder()
        b = enc([task_example(t) for t in tasks]).to(self.lm_.torch_device)
        emb, mask = self.generator_.prefix(b)
        emb = emb.repeat_interleave(k, 0)
        mask = mask.repeat_interleave(k, 0)
        temperature = self.temperature if temperature is None else temperature
        bias = self._context_bias(tasks) if self.context_boost else None     # one row per task
        ids = self.lm_.generate_ids(emb, mask, uniforms, temperature=temperature, top_p=self.top_p,
                                    max_repeats=self.max_repeats, no_repeat_ngram=self.no_repeat_ngram,
                                    bias=bias)
        T = min(tasks[0].max_tokens, self.lm_.max_post_tokens)
        texts = [self.lm_.decode(row, T) for row in ids.cpu().tolist()]
        return [texts[i * k:(i + 1) * k] for i in range(len(tasks))]

    def _context_bias(self, tasks: Sequence[AttackTask]) -> torch.Tensor:
        """``[B, V]``: ``context_boost`` on the topic words of each task's target context —
        its words outside the platform's ``COMMON_WORDS`` most frequent ones (the
        vocabulary is ordered by frequency) — and 0 elsewhere."""
        vocab = self.lm_.vocab_
        bias = torch.zeros(len(tasks), len(vocab))
        for n, t in enumerate(tasks):
            ids = [i for i in vocab.encode(t.context or "") if i >= len(SPECIALS) + COMMON_WORDS]
            bias[n, ids] = self.context_boost
        return bias

    @torch.no_grad()
    def plausible_tokens(self, tasks: Sequence[AttackTask], posts: Sequence[str], top_k: int) -> list[list[list[str]]]:
        """For each (task, post): at every position of the post, the ``top_k`` tokens the
        generator finds most likely there given the user and the post's preceding words —
        the substitutions that keep the post plausible."""
        examples = [CondExample(e.history, e.context, post, e.label, e.relevancy)
                    for e, post in zip((task_example(t) for t in tasks), posts, strict=True)]
        b = self._encoder()(examples).to(self.lm_.torch_device)
        logits, tmask = self.generator_.target_logits(b)
        logits[:, :, : len(SPECIALS)] = -math.inf
        top = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).indices.cpu()
        itos = self.lm_.vocab_.itos
        out = []
        for n in range(len(tasks)):
            n_tok = int(tmask[n].sum()) - 1          # post tokens, without <eos>
            out.append([[itos[i] for i in top[n, t].tolist()] for t in range(max(0, n_tok))])
        return out

    def write(self, tasks: Sequence[AttackTask], threat: ThreatModel, rngs: Sequence[np.random.Generator],
              ranker: ThreatModel | None = None, natural: Naturalness | None = None,
              margin: float = 0.0) -> Written:
        """Sample ``candidates`` posts per task and keep one: by the threat model's scores
        when granted; with labels only, candidates are ranked by ``ranker`` (the attacker's
        surrogate) and label-queried in that order.

        With scores, the candidate closest to the goal verdict is kept; given ``natural``,
        the most natural (:class:`Naturalness`) of the candidates past the goal's threshold
        by ``margin``, and the closest one when none is. The :class:`Written` result also holds,
        for every task, the other scored candidates with their scores, closest to the goal
        first (empty where no scores were granted)."""
        k = self.candidates
        T = self.lm_.max_post_tokens
        uniforms = torch.from_numpy(np.concatenate([r.random((k, T)) for r in rngs]))
        cands = self.sample(tasks, uniforms, k)
        outputs: list[AttackOutput] = []
        runners_up: list[list[tuple[str, float]]] = []
        reaching: list[list[tuple[str, float]]] = []   # score mode: candidates past the margin
        cands = [fresh(task, list(dict.fromkeys(posts))) for task, posts in zip(tasks, cands, strict=True)]
        scored = scored_together(tasks, cands, threat)
        for n, (task, posts) in enumerate(zip(tasks, cands, strict=True)):
            left = threat.remaining(task.user_id)
            status = "ok"
            if threat.has("score"):
                if left is not None and left < len(posts):
                    posts, status = posts[:max(1, left)], "budget_exhausted"
                p = scored[n] if scored is not None else threat.score([task.with_post(c) for c in posts])
                order = np.argsort(np.abs(p - task.target), kind="stable")
                best = int(order[0])
                runners_up.append([(posts[i], float(p[i])) for i in order[1:]])
                reaching.append([(posts[i], float(p[i])) for i in order
                                 if threat.reaches(p[i], task.target, margin)])
                ok = threat.reaches(p[best], task.target)
                outputs.append(AttackOutput(posts[best], "ok" if ok else status,
                                            {"candidates": len(posts), "score": round(float(p[best]), 6)}))
                continue
            reaching.append([])
            if ranker is not None:
                rp = ranker.score([task.with_post(c) for c in posts])
                posts = [posts[i] for i in np.argsort(np.abs(rp - task.target), kind="stable")]
            runners_up.append([])
            chosen, info = posts[0], {"candidates": len(posts)}
            if threat.has("label"):
                for c in posts:
                    if threat.remaining(task.user_id) == 0:
                        status = "budget_exhausted"
                        break
                    if threat.label([task.with_post(c)])[0] == task.target:
                        chosen = c
                        break
                info["label_queries"] = threat.queries[task.user_id]
            outputs.append(AttackOutput(chosen, status, info))
        if natural is not None:
            picks = natural.best(tasks, [[c for c, _ in r] for r in reaching])
            for n, (r, j) in enumerate(zip(reaching, picks, strict=True)):
                if r:
                    o = outputs[n]
                    outputs[n] = AttackOutput(r[j][0], o.status, {**o.info, "score": round(r[j][1], 6),
                                                                  "reaching": len(r)})
        return Written(outputs, runners_up)

    # ---- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write folder ``path``: the decoder (a saved PostLM in ``decoder/``), the history
        encoder (``encoder.safetensors``), then ``config.json``."""
        from advseq.storage import save_model_folder

        path = Path(path)
        self.lm_.save(path / DECODER_DIR)
        return save_model_folder(path, FORMAT, {"params": self.get_params(), "fit_info": self.fit_info_},
                                 weights=self.generator_.encoder, weights_file=ENCODER_FILE)

    def _load_parts(self, path: Path) -> None:
        from advseq.lm import PostLM
        from advseq.storage import load_safetensors

        self.lm_ = PostLM.load(path / DECODER_DIR, device=self.device)
        self.generator_ = PersonalizedGenerator(self.lm_.model_, self.n_prefix).to(self.lm_.torch_device)
        load_safetensors(self.generator_.encoder, path / ENCODER_FILE, what="this PETGEN encoder",
                         device=str(self.lm_.torch_device))
        self.generator_.eval()

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> PETGEN:
        """A generator saved by :meth:`save`; ``overrides`` replace saved sampling settings."""
        from advseq.storage import construct, read_model_config

        path = Path(path)
        config = read_model_config(path, FORMAT, "PETGEN generator", required=("params",))
        model = construct(cls, {**config["params"], **overrides}, path)
        model.fit_info_ = config.get("fit_info", {})
        model._load_parts(path)
        return model


def scored_together(tasks: Sequence[AttackTask], cands: Sequence[Sequence[str]],
                     threat: ThreatModel) -> list[np.ndarray] | None:
    """Every task's candidates scored in one batch across users (one query each, as one
    call per task charges them), where scores are granted, the faster query paths are on
    (``ADVSEQ_FAST_QUERIES``) and every user can afford all its candidates; else None
    (one call per task)."""
    from advseq import history_cache

    if not (threat.has("score") and history_cache.fast() and cands) or \
            not all(threat.affordable([t.history], len(c))[0] for t, c in zip(tasks, cands, strict=True)):
        return None
    p = threat.score([t.with_post(c) for t, posts in zip(tasks, cands, strict=True) for c in posts])
    bounds = np.cumsum([0, *map(len, cands)])
    return [p[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
