"""Training the ``petgen-lm`` adapter: PETGEN's two objectives on a pretrained backbone.

1. **MLE** (:func:`mle_examples`, :func:`train_steps`): each training user's last
   ``mle_positions`` posts are the answers to the attack's own chat prompt built from the
   posts before them (recent posts, earlier posts on the post's context, the context), at
   most ``mle_examples`` of them, for ``mle_epochs`` passes in batches of
   ``train_batch``; the loss is the answer tokens' mean negative log-likelihood (the end
   of turn included), the prompt is not learnt.
2. **Adversarial fine-tuning without the detector's vocabulary**
   (:func:`selection_round`): PETGEN's best-of-k selection rounds as rejection-sampling
   fine-tuning. Each round samples ``select_k`` candidates for up to ``adv_users``
   targeted training users from the adapted model, drops the unusable ones exactly as the
   attack does (empty, chat-assistant answers, exact or near copies of the user's posts,
   of any training post or of the context: :meth:`attacks.llm.attack.LLMAttack._filter`),
   asks the attacker's threat model about the rest (the deployed detector's scores in
   white-box and score modes, the surrogate's in transfer mode, labels in label mode;
   the training users' own query budgets apply), and keeps per user the most natural
   candidate (the backbone's mean token log-probability) that reaches the goal — by
   ``select_margin`` on a surrogate, so that the posts learnt transfer — or, where none
   does and scores are known (``select_misses``), the one closest to it. The adapter is
   then trained by MLE on those posts as the answers to their prompts, mixed with a
   ``select_real_share`` of real posts so that the text stays the users' language.

Everything is seeded: example order, LoRA dropout (a forked torch generator) and the
candidates' draws (the attack's per-user :meth:`~advseq.attack.Attack.rng`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from advseq.attack import AttackSpec, AttackTask
from advseq.candidates import truncate_post
from advseq.schema import Dataset
from advseq.threat import ThreatModel
from attacks.llm.attack import _State
from attacks.llm.backbone import torch_threads

if TYPE_CHECKING:
    from attacks.petgen_lm.attack import PETGENLMAttack

#: part of every adapter cache key: bump it when training changes
TRAINING_VERSION = 1
#: the default selection margin on a surrogate (past its threshold), as PETGEN's
SURROGATE_MARGIN = 0.25


@dataclass(frozen=True)
class Example:
    """One training sequence: the prompt's token ids and the answer's (learnt) ones."""

    prompt: tuple[int, ...]
    answer: tuple[int, ...]

    @property
    def tokens(self) -> int:
        return len(self.prompt) + len(self.answer)


def position_task(user: Any, j: int, spec: AttackSpec) -> AttackTask:
    """The task of writing ``user``'s post ``j`` (>= 1) from the posts before it, on its
    own context: the attack's task with the real post as the answer to learn."""
    post = user.posts[j]
    return AttackTask(user=user, history=user.with_posts(user.posts[:j]), context=post.context,
                      target=spec.target_label(user), timestamp=post.timestamp,
                      max_tokens=spec.max_tokens)


def answer_ids(atk: PETGENLMAttack, text: str, task: AttackTask) -> tuple[int, ...]:
    """The answer tokens of ``text`` (cut to the task's token limit, then to the
    candidate's room) followed by the end of turn when it was not cut there."""
    bb = atk.backbone_
    ids = bb.tokenizer(truncate_post(text, task.max_tokens), add_special_tokens=False)["input_ids"]
    room = atk._steps(task)
    return tuple(ids[:room]) if len(ids) >= room else (*ids, bb.pad_id)


def mle_examples(atk: PETGENLMAttack, train: Dataset, spec: AttackSpec) -> list[Example]:
    """Up to ``mle_examples`` (prompt, real post) examples of the training users (each
    user's last ``mle_positions`` posts that have a post before them), drawn with the
    attack's seed."""
    pairs = [(u, j) for u in train for j in range(max(1, len(u.posts) - atk.mle_positions), len(u.posts))]
    rng = np.random.default_rng(atk.seed)
    keep = sorted(rng.permutation(len(pairs))[:atk.mle_examples].tolist())
    out = []
    for i in keep:
        user, j = pairs[i]
        task = position_task(user, j, spec)
        out.append(Example(tuple(atk._prompt(task)), answer_ids(atk, user.posts[j].text, task)))
    return out


def _batches(examples: Sequence[Example], size: int, rng: np.random.Generator) -> list[list[Example]]:
    """Shuffled batches of ``size``; within blocks of 8 batches similar lengths go
    together (less padding), the blocks' order and the batches' order are shuffled."""
    order = [examples[i] for i in rng.permutation(len(examples))]
    block = size * 8
    batches = []
    for s in range(0, len(order), block):
        part = sorted(order[s:s + block], key=lambda e: e.tokens)
        batches += [part[b:b + size] for b in range(0, len(part), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def train_steps(atk: PETGENLMAttack, examples: Sequence[Example], epochs: int, *,
                stage: str, salt: int, progress: bool | None = None) -> dict[str, Any]:
    """``epochs`` passes of teacher-forced MLE over ``examples`` on the adapter's
    parameters (AdamW, gradients clipped at 1); returns what it did: steps, the mean loss
    of each epoch and of the first and last step, tokens and seconds."""
    from advseq.progress import progress_bar

    info: dict[str, Any] = {"examples": len(examples), "steps": 0, "tokens": 0, "answer_tokens": 0,
                            "epoch_losses": []}
    if not examples or not epochs:
        return {**info, "seconds": 0.0}
    bb, params = atk.backbone_, atk.adapter_params_
    opt = torch.optim.AdamW(params, lr=atk.lr, weight_decay=0.0)
    rng = np.random.default_rng([atk.seed, salt])
    t0, c0 = time.perf_counter(), time.process_time()
    n_batches = math.ceil(len(examples) / atk.train_batch)
    step_losses: list[float] = []
    with torch_threads(atk.threads), torch.random.fork_rng(devices=[]), \
            progress_bar(f"petgen-lm: {stage}", epochs * n_batches, enabled=progress) as bar:
        torch.manual_seed(atk.seed * 1009 + salt)          # LoRA dropout
        bb.model.train()
        try:
            for _ in range(epochs):
                total, count = 0.0, 0
                for batch in _batches(examples, atk.train_batch, rng):
                    sums, lengths = bb.answer_logprobs([e.prompt for e in batch], [e.answer for e in batch])
                    n = int(lengths.sum())
                    loss = -sums.sum() / n
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()
                    value = float(loss.detach())
                    step_losses.append(value)
                    total, count = total + value * n, count + n
                    info["steps"] += 1
                    info["tokens"] += sum(e.tokens for e in batch)
                    info["answer_tokens"] += n
                    bar.advance()
                    bar.update(status=f"loss={value:.3f}")
                info["epoch_losses"].append(round(total / max(count, 1), 4))
        finally:
            bb.model.eval()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {**info, "first_loss": round(step_losses[0], 4), "last_loss": round(step_losses[-1], 4),
            "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "tokens_per_s": round(info["tokens"] / max(seconds, 1e-9), 1)}


def selection_round(atk: PETGENLMAttack, tasks: Sequence[AttackTask], threat: ThreatModel,
                    r: int) -> tuple[list[Example], dict[str, Any]]:
    """One best-of-k round (see the module doc): the chosen (prompt, candidate) examples
    and what the round found."""
    margin = atk.select_margin if atk.select_margin is not None else \
        (SURROGATE_MARGIN if threat.surrogate else 0.0)
    tasks = [t for t in tasks if threat.remaining(t.user_id) is None or threat.remaining(t.user_id) > 0]
    states = [_State(t, steps=atk._steps(t)) for t in tasks]
    info: dict[str, Any] = {"round": r + 1, "users": len(tasks), "margin": margin}
    if not tasks:
        return [], {**info, "chosen": 0}
    prompts = [atk._prompt(t) for t in tasks]
    seeds = [atk.rng(t, f"petgen-lm-select{r}").getrandbits(63) for t in tasks]
    t0, c0 = time.perf_counter(), time.process_time()
    samples = atk.backbone_.sample(prompts, seeds, n=atk.select_k, max_new_tokens=[s.steps for s in states],
                                   temperature=atk.temperature, top_p=atk.top_p)
    sample_seconds, sample_cpu = time.perf_counter() - t0, time.process_time() - c0
    new_tokens = sum(len(s.ids) for row in samples for s in row)
    picked = atk._filter(states, samples)
    use_score = threat.has("score")
    atk._query(states, picked, threat, use_score)
    chosen: list[Example] = []
    hits = misses = 0
    goal_scores = []
    for s, prompt in zip(states, prompts, strict=True):
        target = s.task.target
        reach = [c for c in s.tried if (threat.reaches(c.score, target, margin) if c.score is not None
                                        else c.hit)]
        if reach:
            best = max(reach, key=lambda c: (round(c.logprob, 4), c.text))
            hits += 1
        elif atk.select_misses and s.tried and s.tried[0].score is not None:
            best = min(s.tried, key=lambda c: (abs(c.score - target), -c.logprob, c.text))
            misses += 1
        else:
            continue
        if best.score is not None:
            goal_scores.append(1.0 - abs(best.score - target))
        chosen.append(Example(tuple(prompt), answer_ids(atk, best.text, s.task)))
    info.update(candidates=sum(len(s.tried) for s in states), reached=hits, closest=misses,
                chosen=len(chosen), sample_seconds=round(sample_seconds, 2),
                sample_cpu_seconds=round(sample_cpu, 2), new_tokens=new_tokens,
                sample_tokens_per_s=round(new_tokens / max(sample_seconds, 1e-9), 1))
    if goal_scores:
        info["mean_goal_prob"] = round(float(np.mean(goal_scores)), 4)
    return chosen, info


def adversarial(atk: PETGENLMAttack, train: Dataset, threat: ThreatModel, spec: AttackSpec,
                real: Sequence[Example], *, progress: bool | None = None) -> list[dict[str, Any]]:
    """``adv_rounds`` selection rounds, each followed by MLE on the chosen posts and a
    ``select_real_share`` of ``real`` examples; the rounds' records."""
    targeted = [spec.task(u) for u in train if spec.targets(u) and len(u.posts) > 1]
    log = []
    for r in range(atk.adv_rounds):
        rng = np.random.default_rng([atk.seed, 7919, r])
        pick = sorted(rng.permutation(len(targeted))[:atk.adv_users].tolist())
        chosen, info = selection_round(atk, [targeted[i] for i in pick], threat, r)
        n_real = min(len(real), int(round(atk.select_real_share * len(chosen))))
        mix = chosen + [real[i] for i in rng.permutation(len(real))[:n_real]]
        info["real"] = n_real
        info["train"] = train_steps(atk, mix, atk.select_epochs, stage=f"selection round {r + 1}",
                                    salt=100 + r, progress=progress)
        log.append(info)
    return log
