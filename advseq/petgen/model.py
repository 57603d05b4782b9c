"""PETGEN: training the personalised generator and writing posts with it.

He, Ahamad, Kumar. "PETGEN: Personalized Text Generation Attack on Deep Sequence
Embedding-based Classification Models". KDD 2021.

Training (:meth:`PETGEN.fit`):

1. **MLE pre-training** of the conditional generator on the training users' real posts
   given the posts before them and their context (the last ``mle_positions`` posts of
   each user are targets), starting from advseq's reference PostLM. Cached on disk: it
   does not depend on the detector.
2. **Adversarial fine-tuning** on the targeted training users, each step a sum of
   switchable, weighted terms on a batch of straight-through Gumbel-softmax posts:
   realism/style (a CNN discriminator with the relativistic GAN loss, real = the users'
   real last posts), attack (the detector's cross-entropy toward the goal verdict on
   history + soft post, through the threat model: the deployed detector in white-box
   mode, the attacker's surrogate otherwise), recency (MMD to the user's last
   ``recent_k`` posts) and relevancy (MMD to the user's earlier posts on the target
   context), plus an MLE term on the real last post that keeps the text fluent.

Writing (:meth:`PETGEN.write`): ``candidates`` posts are sampled per user (at
``temperature`` 0.8) and the one the detector (or the surrogate) finds closest to the goal
is kept, within the budget — or, given a :class:`Naturalness`, the most natural of those
that already reach the goal.
No token is sampled more than ``max_repeats`` times in one post: without that cap,
best-of-k selection on pan19-bots-en distilled the generator into "happy 😂 😂 😂 ..."
(a cnn reads the emoji as human), a post no reader would take for the user's.

Improvements over the paper, for CPU budgets: a GPT-2 decoder warm-started from a
language model of the same posts, every post position used for MLE, one optimiser step
per batch on the summed losses instead of separate optimisers per term, and candidate
re-ranking at attack time. MALCOM (Le et al., ICDM 2020), as the PETGEN authors re-ran
it, is this model without the recency term.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from advseq.attack import AttackOutput, AttackSpec, AttackTask
from advseq.config import Configurable
from advseq.errors import ConfigError
from advseq.petgen.discriminator import SoftTokenCNN
from advseq.petgen.generator import (
    CondExample,
    Encoder,
    PersonalizedGenerator,
    map_distribution,
    mean_embedding,
    vocab_map,
)
from advseq.petgen.losses import gaussian_mmd, relativistic_d_loss, relativistic_g_loss
from advseq.schema import Dataset, User, has_context
from advseq.text import SPECIALS
from advseq.threat import ThreatModel

FORMAT = "advseq-petgen/1"
#: Part of every cache key of trained generators: bump it when training changes, so that a
#: generator cached by older code is never reused as if it were this code's.
TRAINING_VERSION = 7
#: The same for the MLE pre-training cache alone (it was TRAINING_VERSION up to 4; it only
#: changes when pre-training does, so adversarial changes do not redo minutes of MLE;
#: 5: deterministic history-encoding gradients; 6: it starts from a deterministic
#: reference LM (advseq.lm.REF_LM_VERSION 2)).
MLE_VERSION = 6
#: With ``context_boost``: the platform's most frequent words (function words, punctuation)
#: are not what a context is about, so they get no boost.
COMMON_WORDS = 100


def _flags(history: Sequence[Any], context: str | None, final_context: str | None) -> list[float]:
    """Relevancy of each history post to ``context``: the dataset's 0/1 flag when the
    target is the user's final context, else (and when missing) equal contexts."""
    out = []
    for p in history:
        if context is not None and context == final_context and p.relevancy is not None:
            out.append(float(p.relevancy >= 0.5))
        else:
            out.append(float(context is not None and p.context == context))
    return out


def task_example(task: AttackTask) -> CondExample:
    """What the generator conditions on for an attack task (the real last post is the
    realism reference)."""
    user = task.user
    flags = _flags(task.history.posts, task.context, user.posts[-1].context)
    if (len(task.history.posts) == len(user.posts) and task.context is not None
            and task.context == user.posts[-1].context):
        flags[-1] = 1.0  # append: the real last post is on the target context
    # Without contexts (tweets) nothing is relevant: the relevancy term and relevancy
    # attention stay off, as in pre-training, instead of treating "no context" as one context.
    return CondExample(task.history.posts, task.context, user.posts[-1].text, float(task.target), flags)


class Written(NamedTuple):
    """What :meth:`PETGEN.write` chose for each task, and the other candidates it scored."""

    outputs: list[AttackOutput]
    #: per task, the other scored candidates with their scores, closest to the goal first
    runners_up: list[list[tuple[str, float]]]


def mle_examples(users: Sequence[User], positions: int) -> list[CondExample]:
    """Each user's last ``positions`` posts as targets, given the posts before them."""
    out = []
    for u in users:
        final_ctx = u.posts[-1].context
        for j in range(max(1, len(u.posts) - positions), len(u.posts)):
            target = u.posts[j]
            ctx = target.context
            history = u.posts[:j]
            flags = _flags(history, ctx, final_ctx) if j == len(u.posts) - 1 else \
                [float(ctx is not None and p.context == ctx) for p in history]
            out.append(CondExample(history, ctx, target.text, float(u.label), flags))
    return out


class PETGEN(Configurable):
    """The personalised generation attacker: train with :meth:`fit`, write with :meth:`write`."""

    def __init__(self, *, n_prefix: int = 4, max_posts: int = 20, mle_positions: int = 4,
                 mle_epochs: int = 3, mle_lr: float = 2e-3, adv_steps: int = 60,
                 batch_size: int = 32, lr: float = 1e-3, d_lr: float = 3e-4, tau: float = 1.0,
                 gan: bool = True, attack: bool = True, recency: bool = True, relevancy: bool = True,
                 w_gan: float = 0.5, w_attack: float = 1.0, w_recency: float = 0.2,
                 w_relevancy: float = 0.2, w_mle: float = 0.3, recent_k: int = 3,
                 select: bool = True, rounds: int = 3, select_k: int = 16, select_epochs: int = 3,
                 select_real_share: float = 0.25, select_temperature: float | None = None,
                 select_margin: float | None = None,
                 candidates: int = 32, temperature: float = 0.8, top_p: float = 0.9,
                 max_repeats: int | None = 4, no_repeat_ngram: int | None = None,
                 context_boost: float = 0.0, lm: dict[str, Any] | None = None, seed: int = 0, device: str = "cpu") -> None:
        self.n_prefix = n_prefix
        self.max_posts = max_posts
        self.mle_positions = mle_positions
        self.mle_epochs = mle_epochs
        self.mle_lr = mle_lr
        self.adv_steps = adv_steps
        self.batch_size = batch_size
        self.lr = lr
        self.d_lr = d_lr
        self.tau = tau
        self.gan = gan
        self.attack = attack
        self.recency = recency
        self.relevancy = relevancy
        self.w_gan = w_gan
        self.w_attack = w_attack
        self.w_recency = w_recency
        self.w_relevancy = w_relevancy
        self.w_mle = w_mle
        self.recent_k = recent_k
        self.select = select
        self.rounds = rounds
        self.select_k = select_k
        self.select_epochs = select_epochs
        self.select_real_share = select_real_share
        self.select_temperature = select_temperature
        self.select_margin = select_margin
        self.candidates = candidates
        self.temperature = temperature
        self.top_p = top_p
        self.max_repeats = max_repeats
        self.no_repeat_ngram = no_repeat_ngram
        self.context_boost = context_boost
        self.lm = lm
        self.seed = seed
        self.device = device
        self.fit_info_: dict[str, Any] = {}
        if candidates < 1 or adv_steps < 0 or mle_epochs < 0:
            raise ConfigError("candidates must be >= 1, adv_steps and mle_epochs >= 0")
        if select_margin is not None and not 0.0 <= select_margin < 0.5:
            raise ConfigError(f"select_margin must be in [0, 0.5), got {select_margin}")
        if no_repeat_ngram is not None and no_repeat_ngram < 2:
            raise ConfigError(f"no_repeat_ngram must be >= 2 (or None: off), got {no_repeat_ngram}")
        if context_boost < 0:
            raise ConfigError(f"context_boost must be >= 0, got {context_boost}")
        if select_temperature is not None and select_temperature <= 0:
            raise ConfigError(f"select_temperature must be > 0, got {select_temperature}")

    # ---- building ------------------------------------------------------------------------
    def _encoder(self) -> Encoder:
        lm = self.lm_
        return Encoder(lm.vocab_, max_posts=self.max_posts, max_tokens=lm.max_post_tokens,
                       max_context_tokens=max(0, lm.max_context_tokens - self.n_prefix),
                       recent_k=self.recent_k)

    def _mle_key(self, train: Dataset) -> str:
        params = {k: self.get_params()[k] for k in ("n_prefix", "max_posts", "mle_positions",
                                                    "mle_epochs", "mle_lr", "batch_size", "lm", "seed")}
        h = hashlib.sha256(json.dumps({**params, "training_version": MLE_VERSION},
                                      sort_keys=True).encode()).hexdigest()[:12]
        return f"{train.checksum()[:16]}-{h}"

    def _pretrain(self, train: Dataset, progress: bool | None) -> None:
        """Reference LM -> conditional generator by MLE (cached on disk)."""
        from advseq.lm import reference_lm
        from advseq.progress import progress_bar
        from advseq.runtime import advseq_home

        cache = advseq_home() / "cache" / "petgen-mle" / self._mle_key(train)
        if (cache / "config.json").exists():
            self._load_parts(cache)
            self.fit_info_["mle"] = json.loads((cache / "config.json").read_text())["fit_info"].get("mle")
            return
        torch.manual_seed(self.seed)
        self.lm_ = copy.deepcopy(reference_lm(train, seed=self.seed, progress=progress, **(self.lm or {})))
        self.generator_ = PersonalizedGenerator(self.lm_.model_, self.n_prefix).to(self.lm_.torch_device)
        enc = self._encoder()
        examples = mle_examples(list(train), self.mle_positions)
        opt = torch.optim.Adam(self.generator_.parameters(), lr=self.mle_lr)
        rng = np.random.default_rng(self.seed)
        t0 = time.perf_counter()
        losses = []
        steps = self.mle_epochs * ((len(examples) + self.batch_size - 1) // self.batch_size)
        with progress_bar("petgen: MLE pre-training", steps, enabled=progress) as bar:
            for _epoch in range(self.mle_epochs):
                order = rng.permutation(len(examples))
                total, n = 0.0, 0
                self.generator_.train()
                for s in range(0, len(order), self.batch_size):
                    b = enc([examples[i] for i in order[s:s + self.batch_size]]).to(self.lm_.torch_device)
                    loss = self.generator_.mle_loss(b)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.generator_.parameters(), 1.0)
                    opt.step()
                    total += float(loss.detach()) * len(b)
                    n += len(b)
                    bar.advance()
                losses.append(round(total / n, 4))
                bar.update(status=f"loss={losses[-1]}")
        self.generator_.eval()
        self.fit_info_["mle"] = {"examples": len(examples), "epoch_losses": losses,
                                 "seconds": round(time.perf_counter() - t0, 2)}
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache.parent))
        try:
            self.save(tmp)
            os.replace(tmp, cache)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- training ------------------------------------------------------------------------
    def fit(self, train: Dataset, threat: ThreatModel, spec: AttackSpec | None = None, *,
            progress: bool | None = None) -> PETGEN:
        """Pre-train (cached), then fine-tune against ``threat``'s detector in ``rounds``
        rounds, each a share of the adversarial gradient steps followed (``select``) by a
        selection step. The gradient terms need ``gradient``; selection needs ``score``."""
        from advseq.progress import progress_bar

        spec = spec or AttackSpec()
        t_start = time.perf_counter()
        self._pretrain(train, progress)
        if self.attack:
            threat.require({"gradient"}, "PETGEN's attack loss")
        if self.select:
            threat.require({"score"}, "PETGEN's candidate selection")
        any_term = self.gan or self.attack or self.recency or self.relevancy
        steps = self.adv_steps if any_term else 0
        rounds = max(1, self.rounds)
        tasks = [spec.task(u) for u in train if spec.targets(u)]
        if (steps or self.select) and not tasks:
            raise ConfigError("PETGEN: no targeted users in the training split")
        torch.manual_seed(self.seed)
        natural = None
        if self.select:
            from advseq.lm import reference_lm

            natural = Naturalness(reference_lm(train, seed=self.seed, progress=progress, **(self.lm or {})))
        state = _AdversarialState(self, threat, tasks, spec, natural)
        history: list[dict[str, float]] = []
        selections: list[dict[str, float]] = []
        total = steps + (rounds if self.select else 0)
        with progress_bar("petgen: adversarial training", total, enabled=progress) as bar:
            done = 0
            for r in range(rounds):
                n = steps // rounds + (1 if r < steps % rounds else 0)
                for _ in range(n):
                    done += 1
                    log = state.step(done)
                    if done % 10 == 0 or done == steps:
                        history.append(log)
                        bar.update(status=" ".join(f"{k}={v:.3f}" for k, v in log.items() if k != "step"))
                    bar.advance()
                if self.select:
                    sel = state.select_round(r)
                    selections.append(sel)
                    bar.update(status=f"selection: mean P(goal) {sel['best_goal_prob']:.3f}")
                    bar.advance()
        self.generator_.eval()
        self.fit_info_.update(adversarial={"steps": steps, "users": len(tasks), "history": history,
                                           "selection": selections},
                              train_seconds=round(time.perf_counter() - t_start, 2))
        return self

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
              ranker: ThreatModel | None = None, natural: Naturalness | None = None) -> Written:
        """Sample ``candidates`` posts per task and keep one: by the threat model's scores
        when granted; with labels only, candidates are ranked by ``ranker`` (the attacker's
        surrogate) and label-queried in that order.

        With scores, the candidate closest to the goal verdict is kept; given ``natural``,
        the most natural (:class:`Naturalness`) of the candidates that already reach the
        goal, and the closest one when none does. The :class:`Written` result also holds,
        for every task, the other scored candidates with their scores, closest to the goal
        first (empty where no scores were granted)."""
        k = self.candidates
        T = self.lm_.max_post_tokens
        uniforms = torch.from_numpy(np.concatenate([r.random((k, T)) for r in rngs]))
        cands = self.sample(tasks, uniforms, k)
        outputs: list[AttackOutput] = []
        runners_up: list[list[tuple[str, float]]] = []
        reaching: list[list[tuple[str, float]]] = []   # score mode: candidates at the goal
        for task, posts in zip(tasks, cands, strict=True):
            posts = list(dict.fromkeys(posts))
            left = threat.remaining(task.user_id)
            status = "ok"
            if threat.has("score"):
                if left is not None and left < len(posts):
                    posts, status = posts[:max(1, left)], "budget_exhausted"
                p = threat.score([task.with_post(c) for c in posts])
                order = np.argsort(np.abs(p - task.target), kind="stable")
                best = int(order[0])
                runners_up.append([(posts[i], float(p[i])) for i in order[1:]])
                reaching.append([(posts[i], float(p[i])) for i in order
                                 if threat.reaches(p[i], task.target)])
                outputs.append(AttackOutput(posts[best], status if not reaching[-1] else "ok",
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
        from safetensors.torch import save_model

        from advseq.manifest import write_json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.lm_.save(path / "decoder")
        save_model(self.generator_.encoder, str(path / "encoder.safetensors"))
        write_json(path / "config.json", {"format": FORMAT, "params": self.get_params(),
                                          "fit_info": self.fit_info_})
        return path

    def _load_parts(self, path: Path) -> None:
        from safetensors.torch import load_model

        from advseq.lm import PostLM

        self.lm_ = PostLM.load(path / "decoder", device=self.device)
        self.generator_ = PersonalizedGenerator(self.lm_.model_, self.n_prefix).to(self.lm_.torch_device)
        load_model(self.generator_.encoder, str(path / "encoder.safetensors"), device=str(self.lm_.torch_device))
        self.generator_.eval()

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> PETGEN:
        path = Path(path)
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: not a saved PETGEN generator ({err})") from None
        if config.get("format") != FORMAT:
            raise ConfigError(f"{path / 'config.json'}: not a PETGEN generator (format {FORMAT!r})")
        model = cls(**{**config["params"], **overrides})
        model.fit_info_ = config.get("fit_info", {})
        model._load_parts(path)
        return model


class Naturalness:
    """How natural a post is for its user, judged by the attacker's own language model of
    the platform's posts (advseq's reference :class:`~advseq.lm.PostLM`, which the
    generator is warm-started from): among one user's options, the Borda count of two
    ranks — fluency (mean NLL per token given the target context, lower first) and
    closeness to the user's own posts (cosine between the post's mean word embedding and
    the mean of the user's history posts' ones).

    Neither alone will do on wiki: the likeliest posts run short (13.6 words against the
    real posts' 19.7; an earlier generator's were three-word fragments such as "the album"),
    the closest in words run long (25.9); together they keep posts of the users' length at
    the lowest judge perplexity of the criteria the attacker can compute
    (bench/results/petgen-choice-wiki.md: 200; counting fluency twice 210). The evaluator's
    judge is a different model.

    ``context=True`` adds a third rank, closeness to the target context (the same cosine
    against the context's mean word embedding), for tasks that have a context: on that
    pool topic similarity to the context 0.297 -> 0.326 and judge perplexity 200 -> 190.
    """

    def __init__(self, lm: Any, *, context: bool = False) -> None:
        self.lm = lm
        self.context = context
        self._wte = lm.model_.transformer.wte.weight.detach().float().cpu()

    @torch.no_grad()
    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length mean word embedding of each text (special tokens left out)."""
        ids, lengths = self.lm.vocab_.encode_batch(texts, self.lm.max_post_tokens)
        ids_t = torch.from_numpy(ids)
        keep = (torch.arange(ids.shape[1])[None] < torch.from_numpy(lengths)[:, None]) & (ids_t >= len(SPECIALS))
        v = (self._wte[ids_t] * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)
        return torch.nn.functional.normalize(v, dim=-1)

    def scores(self, tasks: Sequence[AttackTask], options: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Per task, the Borda score of each option (higher = more natural)."""
        flat = [(n, c) for n, opts in enumerate(options) for c in opts]
        if not flat:
            return [np.zeros(0) for _ in options]
        nll, count = self.lm.token_nll([c for _, c in flat], [tasks[n].context for n, _ in flat])
        fluency = -nll / np.maximum(count, 1)
        hist = torch.stack([torch.nn.functional.normalize(self._embed([p.text for p in t.history.posts]).mean(0), dim=0)
                            if t.history.posts else torch.zeros(self._wte.shape[1]) for t in tasks])
        emb = self._embed([c for _, c in flat])
        close = (emb * hist[[n for n, _ in flat]]).sum(-1).numpy()
        has_ctx = [self.context and has_context(t.context) for t in tasks]
        on_ctx = np.zeros(len(flat))
        if any(has_ctx):
            ctx = self._embed([t.context or "" for t in tasks])
            on_ctx = (emb * ctx[[n for n, _ in flat]]).sum(-1).numpy()
        out, s = [], 0
        for n, opts in enumerate(options):
            k = len(opts)
            score = _ranks(fluency[s:s + k]) + _ranks(close[s:s + k])
            if has_ctx[n]:
                score += _ranks(on_ctx[s:s + k])
            out.append(score)
            s += k
        return out

    def best(self, tasks: Sequence[AttackTask], options: Sequence[Sequence[str]]) -> list[int]:
        """For each task, the index of its most natural option (0 where it has none or one;
        ties go to the earlier option)."""
        many = [n for n, opts in enumerate(options) if len(opts) > 1]
        best = [0] * len(options)
        for n, sc in zip(many, self.scores([tasks[n] for n in many], [options[n] for n in many]), strict=True):
            best[n] = int(np.argmax(sc))
        return best


def _ranks(values: np.ndarray) -> np.ndarray:
    """0 for the smallest value ... n-1 for the largest (stable)."""
    return np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(np.float64)


class _AdversarialState:
    """Optimisers, critic and data of one adversarial fine-tuning run."""

    def __init__(self, model: PETGEN, threat: ThreatModel, tasks: Sequence[AttackTask],
                 spec: AttackSpec, natural: Naturalness | None = None) -> None:
        self.m = model
        self.threat = threat
        self.natural = natural
        self.tasks = list(tasks)
        self.examples = [task_example(t) for t in tasks]
        self.enc = model._encoder()
        self.device = model.lm_.torch_device
        gen = model.generator_
        self.torch_gen = torch.Generator().manual_seed(model.seed)
        self.rng = random.Random(model.seed)
        self.np_rng = np.random.default_rng(model.seed)
        self.w_rep = gen.wte.detach().clone()   # frozen post representation for the MMD terms
        self.disc = SoftTokenCNN(len(model.lm_.vocab_)).to(self.device)
        self.opt_g = torch.optim.Adam(gen.parameters(), lr=model.lr)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=model.d_lr)
        self.index, self.det_v = None, 0
        if model.attack:
            det_vocab = threat.vocab
            self.index, self.det_v = vocab_map(model.lm_.vocab_, det_vocab), len(det_vocab)
        self.T = min(spec.max_tokens, model.lm_.max_post_tokens)

    def step(self, step: int) -> dict[str, float]:
        """One generator step on the summed PETGEN terms (and one critic step)."""
        m, gen, device, T = self.m, self.m.generator_, self.device, self.T
        idx = [self.rng.randrange(len(self.examples)) for _ in range(min(m.batch_size, len(self.examples)))]
        b = self.enc([self.examples[i] for i in idx]).to(device)
        gen.train()
        y, _, lengths = gen.gumbel(b, T, m.tau, self.torch_gen)
        real_len = (b.target_len - 1).clamp(min=1)
        real = torch.nn.functional.one_hot(b.target_ids[:, :T], y.shape[-1]).float()
        real = real * (torch.arange(T, device=device)[None] < real_len[:, None]).unsqueeze(-1)
        log: dict[str, float] = {"step": step}
        if m.gan:
            d_loss = relativistic_d_loss(self.disc(real, real_len), self.disc(y.detach(), lengths))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            log["d"] = float(d_loss.detach())
        terms: dict[str, torch.Tensor] = {}
        if m.gan:
            terms["gan"] = m.w_gan * relativistic_g_loss(self.disc(real, real_len), self.disc(y, lengths))
        if m.attack:
            soft = map_distribution(y, self.index, self.det_v)
            logits = self.threat.soft_logits([self.tasks[i].history for i in idx], soft, lengths)
            terms["attack"] = m.w_attack * torch.nn.functional.binary_cross_entropy_with_logits(
                logits, b.labels.to(logits.device))
            log["p_malicious"] = float(torch.sigmoid(logits).mean().detach())
        if m.recency or m.relevancy:
            rep = (y @ self.w_rep).sum(1) / lengths.unsqueeze(-1).to(y.dtype)
        if m.recency:
            refs = mean_embedding(b.recent_ids, b.recent_len, self.w_rep)
            terms["recency"] = m.w_recency * gaussian_mmd(rep, refs, b.recent_len > 0).mean()
        if m.relevancy:
            has = b.same_len > 0
            if bool(has.any()):
                refs = mean_embedding(b.same_ids, b.same_len, self.w_rep)
                terms["relevancy"] = m.w_relevancy * gaussian_mmd(rep, refs, has).mean()
        if m.w_mle:
            terms["mle"] = m.w_mle * gen.mle_loss(b)
        loss = sum(terms.values())
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
        self.opt_g.step()
        log.update({k: round(float(v.detach()), 4) for k, v in terms.items()})
        return log

    def select_round(self, r: int) -> dict[str, float]:
        """Selection: sample ``select_k`` posts per targeted training user, keep the one the
        detector finds closest to the goal — given ``natural``, the most natural of those
        that reach it — and fine-tune on those (with the real last posts, so the text stays
        fluent): best-of-k distillation. Distilling the posts deepest past the threshold
        collapsed the generator onto a detector shortcut on pan19-bots-en ("😂 😂 😂 😂
        thanks for!!!"); distilling natural posts that evade keeps it writing text.

        On a surrogate a post that only just passes *its* threshold transfers badly, so
        there the natural choice is among the candidates past the goal by
        ``select_margin`` (default 0.25 on a surrogate, 0 on the deployed detector).
        Distilling the deepest posts instead collapsed pan19-bots-en transfer to 31
        distinct posts (evasion 0.304 -> 0.065) once sampling ran at 0.8.
        Candidates are sampled at ``select_temperature`` (default: the attack's)."""
        m = self.m
        k, T = m.select_k, m.lm_.max_post_tokens
        temperature = m.temperature if m.select_temperature is None else m.select_temperature
        margin = m.select_margin if m.select_margin is not None else (0.25 if self.threat.surrogate else 0.0)
        uniforms = torch.from_numpy(self.np_rng.random((len(self.tasks) * k, T)))
        chosen, goal_probs, reached = [], [], []
        for s in range(0, len(self.tasks), 64):
            part = self.tasks[s:s + 64]
            cands = m.sample(part, uniforms[s * k:(s + len(part)) * k], k, temperature=temperature)
            picked, reaching = [], []
            for task, posts in zip(part, cands, strict=True):
                p = self.threat.score([task.with_post(c) for c in posts])
                dist = np.abs(p - task.target)
                best = int(np.argmin(dist))
                picked.append((posts[best], 1.0 - float(dist[best])))
                # the closest candidate gives the goal verdict iff any does, whichever is posted
                reached.append(self.threat.reaches(p[best], task.target))
                reaching.append([(c, 1.0 - float(d)) for c, d, q in zip(posts, dist, p, strict=True)
                                 if self.threat.reaches(q, task.target, margin)])
            if self.natural is not None:
                picks = self.natural.best(part, [[c for c, _ in r] for r in reaching])
                picked = [r[j] if r else pk for pk, r, j in zip(picked, reaching, picks, strict=True)]
            chosen += [c for c, _ in picked]
            goal_probs += [g for _, g in picked]
        examples = [CondExample(e.history, e.context, post, e.label, e.relevancy)
                    for e, post in zip(self.examples, chosen, strict=True)]
        # A share of real last posts keeps the language real.
        n_real = int(round(m.select_real_share * len(self.examples)))
        examples += [self.examples[i] for i in self.np_rng.permutation(len(self.examples))[:n_real]]
        gen = m.generator_
        gen.train()
        for _ in range(m.select_epochs):
            order = self.np_rng.permutation(len(examples))
            for s in range(0, len(order), m.batch_size):
                b = self.enc([examples[i] for i in order[s:s + m.batch_size]]).to(self.device)
                loss = gen.mle_loss(b)
                self.opt_g.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
                self.opt_g.step()
        gen.eval()
        return {"round": r + 1, "best_goal_prob": round(float(np.mean(goal_probs)), 4),
                "reached": round(float(np.mean(reached)), 4)}
