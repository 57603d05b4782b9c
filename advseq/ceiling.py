"""How far can *any* single written post move a detector? An attack ceiling.

An attacker who writes one post changes one slot of the user's sequence. For a detector
that reads soft token distributions (every first-party neural detector), the set of all
posts of ``length`` tokens relaxes to the product of ``length`` probability simplices over
the detector's vocabulary: every text is a vertex of it. :func:`append_ceiling` runs
gradient descent over that relaxation (softmax-parameterised, ``restarts`` random starts)
for every eligible user and reports

* ``relaxed_rate`` — share of eligible users whose verdict the relaxed post changes: an
  estimate of the best any text attack placing one post can reach (the optimiser may
  miss the relaxation's optimum, so it is not a proof);
* ``token_rate`` — share changed by the arg-max tokens of that solution, re-scored as
  text through the detector: a rate real posts reach (their text is kept per user).

A relaxed rate well under 100% says the detector's *vocabulary* cannot express what a
flip needs, whatever the attacker's search: the remaining gap is not the attacker's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advseq.attack import AttackSpec
from advseq.detector import Detector
from advseq.errors import CapabilityError, ConfigError
from advseq.schema import Dataset, User
from advseq.text import SPECIALS
from advseq.threat import ThreatModel

CEILING_FILE = "ceiling.json"


def run_ceiling(data: Dataset, detector_dir: str | Path, out: str | Path, *, spec: AttackSpec | None = None,
                max_users: int | None = None, seed: int = 0, **kw: Any) -> dict[str, Any]:
    """:func:`append_ceiling` on the recorded test users of the detector in
    ``detector_dir`` (a seeded sample of ``max_users``), written to ``out/ceiling.json``
    with a manifest."""
    from advseq.detector import load_detector
    from advseq.evaluation import require_recorded_split, subset_users
    from advseq.manifest import build_manifest, write_json

    split = require_recorded_split(detector_dir, data, "the ceiling is computed on")
    res = append_ceiling(load_detector(detector_dir), subset_users(split.test.users, max_users, seed),
                         spec=spec, seed=seed, **kw)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "manifest.json", build_manifest(
        {"command": "ceiling", "detector": str(detector_dir), "max_users": max_users, **{
            k: res[k] for k in ("length", "steps", "lr", "restarts", "spec")}},
        seed=seed, data={"checksum": data.checksum()}))
    write_json(out / CEILING_FILE, res)
    return res


def append_ceiling(detector: Detector, users: Sequence[User], *, spec: AttackSpec | None = None,
                   length: int = 10, steps: int = 300, lr: float = 0.5, restarts: int = 1,
                   batch_size: int = 64, threshold: float = 0.5, seed: int = 0,
                   progress: bool | None = None) -> dict[str, Any]:
    """The attack ceiling of one written post for ``users`` (see the module docstring).

    Users the goal does not target or the detector already judges as the attacker wants
    are not eligible, exactly as in :func:`advseq.evaluation.run_attack`."""
    from advseq.progress import progress_bar

    spec = spec or AttackSpec()
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
    barred = torch.zeros(V, dtype=torch.bool)
    barred[: len(SPECIALS)] = True
    gen = torch.Generator().manual_seed(seed)
    relaxed = np.zeros(len(tasks), dtype=bool)
    best_logit = np.full(len(tasks), np.nan)
    witness: list[str] = [""] * len(tasks)
    t0 = time.perf_counter()
    with progress_bar(f"ceiling {detector.name}", len(tasks) * restarts, enabled=progress) as bar:
        for s in range(0, len(tasks), batch_size):
            part = tasks[s:s + batch_size]
            hist = [t.history for t in part]
            # +1: push the logit up (target malicious), -1: push it down (target benign).
            sign = torch.tensor([1.0 if t.target == 1 else -1.0 for t in part])
            lengths = torch.full((len(part),), length, dtype=torch.long)
            best = torch.full((len(part),), -math.inf)
            best_ids = torch.zeros(len(part), length, dtype=torch.long)
            for r in range(restarts):
                theta = (torch.randn(len(part), length, V, generator=gen) * (0.1 + r)).requires_grad_(True)
                opt = torch.optim.Adam([theta], lr=lr)
                for _ in range(steps):
                    soft = torch.softmax(theta.masked_fill(barred, -1e9), -1)
                    margin = sign * (threat.soft_logits(hist, soft, lengths) - cut)
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
            for i, ids in enumerate(best_ids.tolist()):
                witness[s + i] = vocab.decode(ids)
    # The witness posts are re-scored as text, the way a deployed detector sees them.
    attacked = [t.with_post(text) for t, text in zip(tasks, witness, strict=True)]
    after = detector.predict_proba(attacked) if attacked else np.zeros(0)
    token = np.array([int(p >= threshold) == t.target for p, t in zip(after, tasks, strict=True)], dtype=bool)
    n = len(tasks)
    return {
        "detector": detector.name, "fingerprint": detector.fingerprint(), "spec": spec.to_dict(),
        "length": length, "steps": steps, "lr": lr, "restarts": restarts, "seed": seed,
        "n_users": len(users), "n_eligible": n,
        "relaxed_rate": round(float(relaxed.mean()), 6) if n else None,
        "token_rate": round(float(token.mean()), 6) if n else None,
        "seconds": round(time.perf_counter() - t0, 2),
        "users": [{"user_id": t.user_id, "relaxed": bool(r), "relaxed_logit": round(float(b), 4),
                   "token": bool(k), "token_post": w}
                  for t, r, b, k, w in zip(tasks, relaxed, best_logit, token, witness, strict=True)],
    }
