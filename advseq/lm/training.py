"""Training of :class:`~advseq.lm.model.PostLM`, and the cached reference LM of a dataset.

:func:`train_post_lm` (what :meth:`PostLM.fit` runs) trains with AdamW, a warm-up then
linearly decaying learning rate, length-bucketed batches in a seeded order, early stopping
on a held-out share, and a sampled softmax on large vocabularies. :func:`reference_lm` is
the PostLM of a training set's posts, trained once and cached on disk; it is the generator
of the ``lm-generic`` baseline attack and the reference LM of the ``perplexity_ref``
text-quality metric.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advseq.errors import ConfigError
from advseq.lm.model import CONFIG_FILE, PostLM, pad_right
from advseq.schema import Dataset, User
from advseq.text import Tokenizer, Vocabulary

#: training softmax: the SAMPLED_HEAD most frequent ids exactly, plus SAMPLED_TAIL ids
#: sampled uniformly from the rest, reweighted (see :func:`sampled_nll`); validation,
#: scoring and sampling always use the full softmax
SAMPLED_HEAD = 1024
SAMPLED_TAIL = 1024


def train_post_lm(lm: PostLM, pairs: Sequence[tuple[str | None, str]], *,
                  progress: bool | None = None) -> PostLM:
    """Train ``lm`` on (context, post) pairs in place and return it: a seeded
    ``valid_size`` share is held out for early stopping (``patience`` epochs) and the best
    epoch's weights are kept; ``lm.fit_info_`` records the run."""
    from advseq.progress import progress_bar

    t0 = time.perf_counter()
    pairs = [(c, p) for c, p in pairs]
    if len(pairs) < 2:
        raise ConfigError(f"PostLM.fit needs at least 2 (context, post) pairs, got {len(pairs)}")
    rng = np.random.default_rng(lm.seed)
    order = rng.permutation(len(pairs))
    n_valid = int(round(lm.valid_size * len(pairs))) if lm.valid_size > 0 else 0
    n_valid = min(max(n_valid, 1 if lm.valid_size > 0 else 0), len(pairs) - 1)
    valid = [pairs[i] for i in sorted(order[:n_valid])]
    train = [pairs[i] for i in sorted(order[n_valid:])]
    texts = [p for _, p in train] + sorted({c for c, _ in train if c})
    lm.vocab_ = Vocabulary.build(texts, Tokenizer(), min_freq=lm.min_freq,
                                 max_size=lm.max_vocab)
    seqs, starts = lm._sequences(train)
    vseqs, vstarts = lm._sequences(valid)
    lengths = np.array([len(s) for s in seqs])
    device = lm.torch_device
    history: list[dict[str, Any]] = []
    best_loss, best_state, best_epoch, bad = math.inf, None, 0, 0
    n_batches = math.ceil(len(seqs) / lm.batch_size)
    with torch.random.fork_rng(devices=[]), \
            progress_bar("train post LM", lm.epochs * n_batches, enabled=progress) as bar:
        torch.manual_seed(lm.seed)
        lm.model_ = lm._build_model()
        opt = torch.optim.AdamW(lm.model_.parameters(), lr=lm.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, _warmup_linear_decay(warmup=min(100, n_batches), total=lm.epochs * n_batches))
        V = len(lm.vocab_)
        head_size = min(V, SAMPLED_HEAD)
        n_neg = min(SAMPLED_TAIL, V - head_size)
        sampled = V - head_size > 2 * n_neg  # else the full softmax is as cheap
        gen = torch.Generator().manual_seed(lm.seed)
        for epoch in range(1, lm.epochs + 1):
            lm.model_.train()
            total, count = 0.0, 0
            for idx in _length_batches(lengths, lm.batch_size, rng):
                ids, target = pad_right([seqs[i] for i in idx], [starts[i] for i in idx])
                if sampled:
                    negatives = (torch.randperm(V - head_size, generator=gen)[:n_neg]
                                 + head_size).to(device)
                    nll = sampled_nll(lm, ids.to(device), target.to(device), negatives,
                                      head_size)
                else:
                    nll = lm._nll(ids.to(device), target.to(device))
                loss = nll.sum() / nll.numel()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(lm.model_.parameters(), 1.0)
                opt.step()
                sched.step()
                total += float(nll.detach().sum())
                count += nll.numel()
                bar.advance()
            record: dict[str, Any] = {"epoch": epoch, "train_loss": round(total / count, 5)}
            if vseqs:
                vnll, vcount = lm._score(vseqs, vstarts)
                vloss = float(vnll.sum() / vcount.sum())
                record.update(valid_loss=round(vloss, 5), valid_ppl=round(math.exp(vloss), 3))
            else:
                vloss = -float(epoch)  # no validation: keep the last epoch
            history.append(record)
            bar.update(status=" ".join(f"{k}={v}" for k, v in record.items() if k != "epoch"))
            if vloss < best_loss:
                best_loss, best_epoch, bad = vloss, epoch, 0
                best_state = copy.deepcopy(lm.model_.state_dict())
            else:
                bad += 1
                if bad >= lm.patience:
                    break
    assert best_state is not None
    lm.model_.load_state_dict(best_state)
    lm.model_.eval()
    seconds = time.perf_counter() - t0
    lm.fit_info_ = {
        "epochs": len(history), "best_epoch": best_epoch, "train_seconds": round(seconds, 3),
        "n_train": len(train), "n_valid": len(valid), "vocab_size": len(lm.vocab_),
        "n_params": sum(p.numel() for p in lm.model_.parameters()),
        "valid_ppl": history[best_epoch - 1].get("valid_ppl"), "history": history,
    }
    return lm


def sampled_nll(lm: PostLM, ids: torch.Tensor, target: torch.Tensor, negatives: torch.Tensor,
                head_size: int) -> torch.Tensor:
    """NLL in nats of every target token ``[n_targets]`` under a stratified estimate of the
    softmax, used in training: the ``head_size`` most frequent ids exactly, the tail
    through ``negatives`` (ids ``[K]`` drawn uniformly from ids >= ``head_size``)
    reweighted by ``tail size / K`` (importance sampling of the partition function)."""
    h, y = lm._target_hidden(ids, target)
    W = lm.model_.lm_head.weight
    H = head_size
    log_w = math.log((W.shape[0] - H) / len(negatives))
    head = h @ W[:H].T
    # F.embedding, not W[y]: its CPU backward adds the rows of repeated ids in a fixed
    # order; index_put_'s follows thread timing, so cold caches trained different LMs.
    tail = (h @ nn.functional.embedding(negatives, W).T + log_w).masked_fill(
        negatives[None, :] == y[:, None], -math.inf)
    y_logit = (h * nn.functional.embedding(y, W)).sum(-1)
    y_tail = y_logit.masked_fill(y < H, -math.inf)
    log_z = torch.logsumexp(torch.cat([head, tail, y_tail[:, None]], 1).float(), 1)
    return log_z - y_logit.float()


def _warmup_linear_decay(warmup: int, total: int, floor: float = 0.1) -> Any:
    """LR multiplier: linear warm-up over ``warmup`` steps, then linear decay to ``floor``
    at step ``total`` (short runs converge much better with a decaying rate)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(floor, 1.0 - (1.0 - floor) * (step - warmup) / max(1, total - warmup))
    return factor


def _length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of similar length (little padding) in a seeded random order; ties in length
    are broken at random so batches differ between epochs."""
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def post_pairs(users: Iterable[User]) -> list[tuple[str | None, str]]:
    """Every post of ``users`` as a (context, text) pair."""
    return [(p.context, p.text) for u in users for p in u.posts]


#: the reference LM trains on at most this many posts (a seeded sample beyond it), which
#: bounds its training time on large datasets
REF_LM_MAX_POSTS = 30_000
#: Part of the reference LM's cache key: 2 = training independent of thread timing
#: (a key without it was cached by the thread-order-dependent sampled softmax).
REF_LM_VERSION = 2


def reference_lm(train: Dataset, *, seed: int = 0, progress: bool | None = None,
                 max_posts: int = REF_LM_MAX_POSTS, **params: Any) -> PostLM:
    """The PostLM of ``train``'s posts (a seeded sample of ``max_posts`` when there are
    more), trained once and cached under ``advseq_home()/cache/reflm``, keyed by the data
    checksum, seed and hyper-parameters."""
    from advseq.runtime import advseq_home

    lm = PostLM(seed=seed, **params)
    pairs = post_pairs(train)
    key_params: dict[str, Any] = {k: v for k, v in lm.get_params().items()   # one trained on a GPU
                                  if k != "seed" and (k, v) != ("device", "cpu")}  # is kept apart
    key_params["training_version"] = REF_LM_VERSION
    if len(pairs) > max_posts:
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), max_posts, replace=False))
        pairs = [pairs[i] for i in keep]
        key_params["max_posts"] = max_posts
    digest = hashlib.sha256(json.dumps(key_params, sort_keys=True).encode()).hexdigest()[:12]
    root = advseq_home() / "cache" / "reflm"
    path = root / f"{train.checksum()[:16]}-{seed}-{digest}"
    if (path / CONFIG_FILE).is_file():
        try:
            return PostLM.load(path, device=lm.device)
        except ConfigError:
            shutil.rmtree(path, ignore_errors=True)  # a damaged cache entry: train again
    lm.fit(pairs, progress=progress)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=root))
    try:
        lm.save(tmp)
        os.rename(tmp, path)
    except OSError:
        if not (path / CONFIG_FILE).is_file():  # lost a race to another process: theirs is fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return lm
