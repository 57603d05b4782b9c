"""Training PETGEN's generator (:meth:`attacks.petgen.model.PETGEN.fit`).

1. **MLE pre-training** (:func:`pretrain`) of the conditional generator on the training
   users' real posts given the posts before them and their context (the last
   ``mle_positions`` posts of each user are targets), starting from advseq's reference
   PostLM. Cached on disk: it does not depend on the detector.
2. **Adversarial fine-tuning** (:func:`fit`) on the targeted training users, each step a
   sum of switchable, weighted terms on a batch of straight-through Gumbel-softmax posts:
   realism/style (a CNN discriminator with the relativistic GAN loss, real = the users'
   real last posts), attack (the detector's cross-entropy toward the goal verdict on
   history + soft post, through the threat model: the deployed detector in white-box
   mode, the attacker's surrogate otherwise), recency (MMD to the user's last
   ``recent_k`` posts) and relevancy (MMD to the user's earlier posts on the target
   context), plus an MLE term on the real last post that keeps the text fluent. Between
   shares of the steps, best-of-k selection rounds distil the generator's own posts that
   reach the goal (:meth:`_AdversarialState.select_round`).

Deviations from the paper, for CPU budgets: a GPT-2 decoder warm-started from a language
model of the same posts, every post position used for MLE, one optimiser step per batch
on the summed losses instead of separate optimisers per term.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from advseq.attack import AttackSpec, AttackTask
from advseq.errors import ConfigError
from advseq.schema import Dataset
from advseq.threat import ThreatModel
from attacks.petgen.discriminator import SoftTokenCNN
from attacks.petgen.generator import (
    CondExample,
    PersonalizedGenerator,
    map_distribution,
    mean_embedding,
    mle_examples,
    task_example,
    vocab_map,
)
from attacks.petgen.losses import gaussian_mmd, relativistic_d_loss, relativistic_g_loss
from attacks.petgen.naturalness import Naturalness

if TYPE_CHECKING:
    from attacks.petgen.model import PETGEN

#: Part of every cache key of trained generators: bump it when training changes, so that a
#: generator cached by older code is never reused as if it were this code's.
TRAINING_VERSION = 7
#: The same for the MLE pre-training cache alone (it was TRAINING_VERSION up to 4; it only
#: changes when pre-training does, so adversarial changes do not redo minutes of MLE;
#: 5: deterministic history-encoding gradients; 6: it starts from a deterministic
#: reference LM (advseq.lm.REF_LM_VERSION 2)).
MLE_VERSION = 6


def mle_key(model: PETGEN, train: Dataset) -> str:
    """The MLE pre-training cache's key: the training users and the settings pre-training reads."""
    params = {k: model.get_params()[k] for k in ("n_prefix", "max_posts", "mle_positions",
                                                "mle_epochs", "mle_lr", "batch_size", "lm", "seed")}
    h = hashlib.sha256(json.dumps({**params, "training_version": MLE_VERSION},
                                  sort_keys=True).encode()).hexdigest()[:12]
    return f"{train.checksum()[:16]}-{h}"



def pretrain(model: PETGEN, train: Dataset, progress: bool | None) -> None:
    """Reference LM -> conditional generator by MLE (cached on disk)."""
    from advseq.lm import reference_lm
    from advseq.progress import progress_bar
    from advseq.runtime import advseq_home

    cache = advseq_home() / "cache" / "petgen-mle" / mle_key(model, train)
    if (cache / "config.json").exists():
        model._load_parts(cache)
        model.fit_info_["mle"] = json.loads((cache / "config.json").read_text())["fit_info"].get("mle")
        return
    torch.manual_seed(model.seed)
    model.lm_ = copy.deepcopy(reference_lm(train, seed=model.seed, progress=progress, **model.lm_params()))
    model.generator_ = PersonalizedGenerator(model.lm_.model_, model.n_prefix).to(model.lm_.torch_device)
    enc = model._encoder()
    examples = mle_examples(list(train), model.mle_positions)
    opt = torch.optim.Adam(model.generator_.parameters(), lr=model.mle_lr)
    rng = np.random.default_rng(model.seed)
    t0 = time.perf_counter()
    losses = []
    steps = model.mle_epochs * ((len(examples) + model.batch_size - 1) // model.batch_size)
    with progress_bar("petgen: MLE pre-training", steps, enabled=progress) as bar:
        for _epoch in range(model.mle_epochs):
            order = rng.permutation(len(examples))
            total, n = 0.0, 0
            model.generator_.train()
            for s in range(0, len(order), model.batch_size):
                b = enc([examples[i] for i in order[s:s + model.batch_size]]).to(model.lm_.torch_device)
                loss = model.generator_.mle_loss(b)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.generator_.parameters(), 1.0)
                opt.step()
                total += float(loss.detach()) * len(b)
                n += len(b)
                bar.advance()
            losses.append(round(total / n, 4))
            bar.update(status=f"loss={losses[-1]}")
    model.generator_.eval()
    model.fit_info_["mle"] = {"examples": len(examples), "epoch_losses": losses,
                              "seconds": round(time.perf_counter() - t0, 2)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.parent))
    try:
        model.save(tmp)
        os.replace(tmp, cache)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def fit(model: PETGEN, train: Dataset, threat: ThreatModel, spec: AttackSpec | None = None, *,
        progress: bool | None = None) -> PETGEN:
    """Pre-train (cached), then fine-tune against ``threat``'s detector in ``rounds``
    rounds, each a share of the adversarial gradient steps followed (``select``) by a
    selection step. The gradient terms need ``gradient``; selection needs ``score``."""
    from advseq.progress import progress_bar

    spec = spec or AttackSpec()
    t_start = time.perf_counter()
    pretrain(model, train, progress)
    if model.attack:
        threat.require({"gradient"}, "PETGEN's attack loss")
    if model.select:
        threat.require({"score"}, "PETGEN's candidate selection")
    any_term = model.gan or model.attack or model.recency or model.relevancy
    steps = model.adv_steps if any_term else 0
    rounds = max(1, model.rounds)
    tasks = [spec.task(u) for u in train if spec.targets(u)]
    if (steps or model.select) and not tasks:
        raise ConfigError("PETGEN: no targeted users in the training split")
    torch.manual_seed(model.seed)
    natural = None
    if model.select:
        from advseq.lm import reference_lm

        natural = Naturalness(reference_lm(train, seed=model.seed, progress=progress, **model.lm_params()))
    state = _AdversarialState(model, threat, tasks, spec, natural)
    history: list[dict[str, float]] = []
    selections: list[dict[str, float]] = []
    total = steps + (rounds if model.select else 0)
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
            if model.select:
                sel = state.select_round(r)
                selections.append(sel)
                bar.update(status=f"selection: mean P(goal) {sel['best_goal_prob']:.3f}")
                bar.advance()
    model.generator_.eval()
    model.fit_info_.update(adversarial={"steps": steps, "users": len(tasks), "history": history,
                                        "selection": selections},
                           train_seconds=round(time.perf_counter() - t_start, 2))
    return model


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
        teaches the generator the detector's shortcuts (repeated emoji and the like);
        distilling natural posts that evade keeps it writing text.

        On a surrogate a post that only just passes *its* threshold transfers badly, so
        there the natural choice is among the candidates past the goal by
        ``select_margin`` (default 0.25 on a surrogate, 0 on the deployed detector).
        Candidates are sampled at ``select_temperature`` (default: the attack's)."""
        from attacks.petgen.model import scored_together

        m = self.m
        k, T = m.select_k, m.lm_.max_post_tokens
        temperature = m.temperature if m.select_temperature is None else m.select_temperature
        margin = m.select_margin if m.select_margin is not None else (0.25 if self.threat.surrogate else 0.0)
        uniforms = torch.from_numpy(self.np_rng.random((len(self.tasks) * k, T)))
        chosen, goal_probs, reached = [], [], []
        for s in range(0, len(self.tasks), 64):
            part = self.tasks[s:s + 64]
            cands = m.sample(part, uniforms[s * k:(s + len(part)) * k], k, temperature=temperature)
            scored = scored_together(part, cands, self.threat)
            picked, reaching = [], []
            for n, (task, posts) in enumerate(zip(part, cands, strict=True)):
                p = scored[n] if scored is not None else self.threat.score([task.with_post(c) for c in posts])
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
