"""How far can *any* K written posts move a detector? An attack ceiling.

An attacker who writes K posts (K = 1 by default) fills K new slots of the user's
sequence. For a detector that reads soft token distributions (every first-party neural
detector), the set of all posts of ``length`` tokens relaxes to the product of ``length``
probability simplices over the detector's vocabulary: every text is a vertex of it.
:func:`append_ceiling` runs gradient descent over that relaxation of the K posts jointly
(one softmax-parameterised ``[K, length, V]`` block per user, ``restarts`` random starts)
for every eligible user and reports

* ``relaxed_rate`` — share of eligible users whose verdict the relaxed posts change: an
  estimate of the best any text attack writing K posts can reach (the optimiser may miss
  the relaxation's optimum, so it is not a proof);
* ``token_rate`` — share changed by the arg-max tokens of that solution, re-scored as
  text through the detector (the K posts written in a row, as an attack writes them): a
  rate real posts reach (their text is kept per user). For K > 1 a success also needs
  the K posts distinct (none a near copy of another, :func:`advseq.quality.copies.is_near_copy`;
  ``token_distinct`` per user).

A relaxed rate well under 100% says the detector's *vocabulary* cannot express what a
flip needs, whatever the attacker's search: the remaining gap is not the attacker's.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advseq.attack import AttackSpec, AttackTask
from advseq.detector import Detector
from advseq.errors import CapabilityError, ConfigError
from advseq.quality.copies import is_near_copy
from advseq.schema import Dataset, User
from advseq.text import SPECIALS
from advseq.threat import ThreatModel

CEILING_FILE = "ceiling.json"
#: the relaxation's working set per batch (theta, its gradient, Adam's two moments, the
#: softmax and its gradient: six float32 [B, K, length, V] tensors) is kept under this for K > 1
MEMORY_BYTES = 1 << 30


def run_ceiling(data: Dataset, detector_dir: str | Path, out: str | Path, *, spec: AttackSpec | None = None,
                max_users: int | None = None, seed: int = 0, device: str | None = None,
                **kw: Any) -> dict[str, Any]:
    """:func:`append_ceiling` on the recorded test users of the detector in
    ``detector_dir`` (a seeded sample of ``max_users``; the detector on ``device``),
    written to ``out/ceiling.json`` with a manifest."""
    from advseq.detector import load_detector
    from advseq.evaluation import require_recorded_split, subset_users
    from advseq.manifest import build_manifest, write_json

    split = require_recorded_split(detector_dir, data, "the ceiling is computed on")
    users = subset_users(split.test.users, max_users, seed)
    res = append_ceiling(load_detector(detector_dir, device=device), users, spec=spec, seed=seed, **kw)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "manifest.json", build_manifest(
        {"command": "ceiling", "detector": str(detector_dir), "max_users": max_users, **{
            k: res[k] for k in ("posts", "length", "steps", "lr", "restarts", "spec") if k in res}},
        seed=seed, data={"checksum": data.checksum()}))
    write_json(out / CEILING_FILE, res)
    return res


def append_ceiling(detector: Detector, users: Sequence[User], *, spec: AttackSpec | None = None,
                   posts: int | None = None, length: int = 10, steps: int = 300, lr: float = 0.5,
                   restarts: int = 1, batch_size: int = 64, threshold: float = 0.5, seed: int = 0,
                   progress: bool | None = None) -> dict[str, Any]:
    """The attack ceiling of ``posts`` = K written posts (default: ``spec.posts``) for
    ``users`` (see the module docstring); for K > 1 the batch shrinks below
    ``batch_size`` as needed to keep the relaxation under :data:`MEMORY_BYTES`, and each
    user's random starts are its own (the result does not depend on the batch).

    Users the goal does not target or the detector already judges as the attacker wants
    are not eligible, exactly as in :func:`advseq.evaluation.run_attack`."""
    from advseq.progress import progress_bar

    spec = with_posts(spec or AttackSpec(), posts)
    K = spec.posts
    if length < 1 or steps < 1 or restarts < 1 or batch_size < 1:
        raise ConfigError("length, steps, restarts and batch_size must be >= 1")
    if "gradient" not in detector.capabilities:
        raise CapabilityError(f"detector {detector.name!r} reads no soft tokens, so no relaxed "
                              "ceiling can be computed for it (hlstm, cnn, ties and transformer can)")
    threat = ThreatModel(detector, "white-box", threshold=threshold)
    length = min(length, threat.max_post_tokens, spec.max_tokens)
    vocab = threat.vocab
    clean = detector.predict_proba(users)
    tasks = [spec.task(u) for u, p in zip(users, clean, strict=True)
             if spec.targets(u) and int(p >= threshold) != spec.target_label(u)]
    cut = math.log(threshold / (1 - threshold))
    V = len(vocab)
    if K > 1:
        batch_size = max(1, min(batch_size, MEMORY_BYTES // (6 * 4 * K * length * V)))
    barred = torch.zeros(V, dtype=torch.bool)
    barred[: len(SPECIALS)] = True
    gen = torch.Generator().manual_seed(seed)
    relaxed = np.zeros(len(tasks), dtype=bool)
    best_logit = np.full(len(tasks), np.nan)
    witness: list[list[str]] = [[] for _ in tasks]
    t0 = time.perf_counter()
    with progress_bar(f"ceiling {detector.name}", len(tasks) * restarts, enabled=progress) as bar:
        for s in range(0, len(tasks), batch_size):
            part = tasks[s:s + batch_size]
            hist = [t.history for t in part]
            # +1: push the logit up (target malicious), -1: push it down (target benign).
            sign = torch.tensor([1.0 if t.target == 1 else -1.0 for t in part])
            lengths = torch.full((len(part), K), length, dtype=torch.long)
            best = torch.full((len(part),), -math.inf)
            best_ids = torch.zeros(len(part), K, length, dtype=torch.long)
            for r in range(restarts):
                start = torch.randn(len(part), K, length, V, generator=gen) if K == 1 else \
                    torch.stack([_start(seed, t.user_id, r, (K, length, V)) for t in part])
                theta = (start * (0.1 + r)).requires_grad_(True)
                opt = torch.optim.Adam([theta], lr=lr)
                for _ in range(steps):
                    soft = torch.softmax(theta.masked_fill(barred, -1e9), -1)
                    # one post goes in the [B, T, V] form every soft-post detector reads
                    logits = threat.soft_logits(hist, soft[:, 0], lengths[:, 0]) if K == 1 else \
                        threat.soft_logits(hist, soft, lengths)
                    margin = sign * (logits - cut)
                    loss = torch.nn.functional.softplus(-margin).sum()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                m = margin.detach()
                better = m > best
                best = torch.where(better, m, best)
                best_ids[better] = theta.detach().masked_fill(barred, -1e9).argmax(-1)[better]
                bar.advance(len(part))
            relaxed[s:s + len(part)] = (best > 0).numpy()
            best_logit[s:s + len(part)] = (sign * best + cut).numpy()
            for i, rows in enumerate(best_ids.tolist()):
                witness[s + i] = [vocab.decode(ids) for ids in rows]
    # The witness posts are re-scored as text, the way a deployed detector sees them.
    attacked = [written_user(spec, t, texts) for t, texts in zip(tasks, witness, strict=True)]
    after = detector.predict_proba(attacked) if attacked else np.zeros(0)
    token = np.array([int(p >= threshold) == t.target for p, t in zip(after, tasks, strict=True)], dtype=bool)
    # K posts that repeat one another are no K-post attack: a success needs distinct posts.
    distinct = np.array([not any(is_near_copy(w, texts[:j]) for j, w in enumerate(texts) if j)
                         for texts in witness], dtype=bool)
    token &= distinct
    n = len(tasks)
    return {
        "detector": detector.name, "fingerprint": detector.fingerprint(), "spec": spec.to_dict(),
        **({"posts": K} if K > 1 else {}),
        "length": length, "steps": steps, "lr": lr, "restarts": restarts, "seed": seed,
        "n_users": len(users), "n_eligible": n,
        "relaxed_rate": round(float(relaxed.mean()), 6) if n else None,
        "token_rate": round(float(token.mean()), 6) if n else None,
        "seconds": round(time.perf_counter() - t0, 2),
        "users": [{"user_id": t.user_id, "relaxed": bool(r), "relaxed_logit": round(float(b), 4),
                   "token": bool(k),
                   **({"token_posts": w, "token_distinct": bool(d)} if K > 1 else {"token_post": w[0]})}
                  for t, r, b, k, w, d in zip(tasks, relaxed, best_logit, token, witness, distinct, strict=True)],
    }


def _start(seed: int, user_id: str, restart: int, shape: tuple[int, ...]) -> torch.Tensor:
    """A user's random start for K > 1, drawn from (seed, user, restart) alone: the result
    does not depend on the batch, which shrinks with the vocabulary (one-post ceilings
    keep the one stream they always drew from)."""
    key = hashlib.sha256(f"{seed}:{user_id}:{restart}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(key[:8], "little") >> 1)
    return torch.randn(shape, generator=gen)


def with_posts(spec: AttackSpec, posts: int | None) -> AttackSpec:
    """``spec`` writing ``posts`` = K posts (None: the spec's own K); a spec that already
    says another K > 1 is a contradiction."""
    if posts is None or posts == spec.posts:
        return spec
    if spec.posts != 1:
        raise ConfigError(f"posts={posts} disagrees with the attack spec's posts={spec.posts}")
    return replace(spec, posts=posts)             # AttackSpec checks K


def written_user(spec: AttackSpec, task: AttackTask, texts: Sequence[str]) -> User:
    """The user as the detector sees them after ``texts`` were written in a row for
    ``task``, each at the time and context :meth:`AttackSpec.next_task` gives it."""
    for text in texts[:-1]:
        task = spec.next_task(task, text)
    return task.with_post(texts[-1])
