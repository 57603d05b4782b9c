"""The training loop of torch detectors (:class:`advseq.neural.TorchDetector`): Adam,
class weights, gradient clipping, early stopping on a validation split carved from the
training users, the best epoch's weights kept (and checkpointed).

One loop serves both ways in: ``fresh`` (``fit``: learn the vocabulary or whatever the
module's size depends on, build the network, train) and warm (``fine_tune``: keep the
fitted detector's vocabulary and weights and train on). Retraining's warm start uses the
second, so that a round costs a few epochs instead of a whole training run.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from advseq.schema import Dataset, User

if TYPE_CHECKING:
    from advseq.neural import TorchDetector


def carve_validation(users: Sequence[User], valid_size: float, seed: int,
                     copy_of: Mapping[str, str] | None = None) -> tuple[list[User], list[User]]:
    """The training users and the seeded stratified ``valid_size`` share held out from
    them for early stopping. ``copy_of`` maps the id of a user that is a copy of another
    (retraining's attacked copies) to its original's id: the share is then drawn among the
    originals and every copy goes where its original went, since a held-out copy whose
    original is trained on measures memory, not detection (early stopping never stops)."""
    copy_of = copy_of or {}
    originals = [u for u in users if u.user_id not in copy_of]
    carved = Dataset(originals, name="train").split(valid_size, seed=seed)
    if not copy_of:
        return list(carved.train), list(carved.test)
    held = {u.user_id for u in carved.test}
    copies = [u for u in users if u.user_id in copy_of]
    return ([*carved.train, *(u for u in copies if copy_of[u.user_id] not in held)],
            [*carved.test, *(u for u in copies if copy_of[u.user_id] in held)])


def train_loop(det: TorchDetector, train: Sequence[User], valid: Sequence[User] | None, *,
               epochs: int, fresh: bool, checkpoint_dir: str | Path | None = None,
               progress: bool | None = None) -> TorchDetector:
    """Train ``det`` in place for up to ``epochs`` epochs and return it (see the module
    docstring); ``det.fit_info_`` records the run (``fine_tuned`` when warm)."""
    from advseq.metrics import classification_metrics
    from advseq.progress import progress_bar

    t0 = time.perf_counter()  # training time includes tokenising / embedding the posts
    train = list(train)
    torch.manual_seed(det.seed)
    rng = np.random.default_rng(det.seed)
    gen = torch.Generator().manual_seed(det.seed)
    if valid is None and det.valid_size > 0:
        train, valid = carve_validation(train, det.valid_size, det.seed)
    device = det.torch_device
    if fresh:
        det._prepare(train)
        det.module_ = det.build_module().to(device)
    else:
        det.module_.to(device).requires_grad_(True)
    data = det.tensorize(train)
    vdata = det.tensorize(valid) if valid else None
    y = data.labels.numpy()
    pos_weight = None
    if det.class_weight == "balanced" and y.sum() > 0:
        pos_weight = torch.tensor((len(y) - y.sum()) / y.sum(), device=device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.Adam(det.module_.parameters(), lr=det.lr, weight_decay=det.weight_decay)
    best: tuple[float, float] | None = None
    best_state, best_epoch, history, bad = None, 0, [], 0
    n = len(train)
    with progress_bar(f"{'train' if fresh else 'fine-tune'} {det.name}", epochs * n,
                      enabled=progress) as bar:
        for epoch in range(1, epochs + 1):
            det.module_.train()
            order = torch.from_numpy(rng.permutation(n))
            total = 0.0
            for start in range(0, n, det.batch_size):
                batch = det._augment(data.index(order[start:start + det.batch_size]), gen).to(device)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(det.module_(batch), batch.labels)
                loss.backward()
                if det.grad_clip:
                    nn.utils.clip_grad_norm_(det.module_.parameters(), det.grad_clip)
                opt.step()
                total += float(loss.detach()) * len(batch.labels)
                bar.advance(len(batch.labels))
            record: dict[str, Any] = {"epoch": epoch, "train_loss": round(total / n, 6)}
            if vdata is not None:
                logits = det._logits(vdata)
                vloss = float(nn.functional.binary_cross_entropy_with_logits(
                    logits, vdata.labels.to(logits.device)))
                vm = classification_metrics(vdata.labels.numpy(), torch.sigmoid(logits).cpu().numpy())
                record.update(valid_loss=round(vloss, 6), valid_auc=vm["roc_auc"], valid_f1=vm["f1"])
                score = ((vm["roc_auc"] or 0.0) if det.monitor == "auc" else -vloss, -vloss)
            else:
                score = (float(epoch), 0.0)  # no validation: keep the last epoch
            history.append(record)
            bar.update(status=" ".join(f"{k}={v}" for k, v in record.items() if k != "epoch"))
            if best is None or score > best:
                best, best_epoch, bad = score, epoch, 0
                best_state = copy.deepcopy(det.module_.state_dict())
                if checkpoint_dir is not None:
                    det.fit_info_ = {"best_epoch": epoch, "partial": True}
                    det.save(checkpoint_dir)
            else:
                bad += 1
                if bad >= det.patience:
                    break
    seconds = time.perf_counter() - t0
    assert best_state is not None
    det.module_.load_state_dict(best_state)
    # A fitted detector is frozen: gradients flow through it (white-box attacks) but are
    # never computed for its own weights, which would cost every attack step dearly.
    det.module_.eval().requires_grad_(False)
    epochs_run = len(history)
    det.fit_info_ = {
        "epochs": epochs_run, "best_epoch": best_epoch, "history": history,
        "n_train": n, "n_valid": len(valid or []),
        "train_seconds": round(seconds, 3),
        "train_users_per_second": round(n * epochs_run / seconds, 2) if seconds else None,
    }
    if not fresh:
        det.fit_info_["fine_tuned"] = True
    return det
