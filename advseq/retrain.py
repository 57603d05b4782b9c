"""Adversarial retraining: attack, augment, retrain, repeat — and measure what it buys.

Round 0 trains the detector on the training split. Every round ``r``:

1. the attacker is (re)trained against the current detector — an adaptive attacker —
   and attacks the untouched test users: the round's evasion rate, next to the
   detector's clean F1 / AUC on the same users;
2. unless it is the last round, the same attacker writes a post for every malicious
   training user; those users, with the post appended, join the training set as extra
   examples (labels unchanged), and the detector is retrained on the augmented set. So
   that neither "has an extra post" nor "the last post reads like the attacker's" can
   become a malicious shortcut (nor the classes drift apart in size), every benign
   training user joins too, with a post the same attacker writes for them (aiming at
   the verdict they already have; attacks that stop once the goal holds, like HotFlip,
   leave their starting post: one of the user's own earlier posts). Benign users that
   joined with a re-posted earlier post instead taught the detector "a new-looking last
   post means malicious", the one slot the attacker controls (docs/results.md).
   A detector that early-stops on a held-out share of its training users draws that
   share among the original users, and each copy goes to its original's side: a held-out
   copy of a user it trains on only measured memory, so early stopping never stopped.

With ``posts`` = K > 1 the attacker writes up to K posts per user
(:meth:`advseq.attack.Attack.write_posts`): the round table adds the test attack's
evasion after each k (``evasion_by_k``) and its median posts to evade; each targeted
training user joins with the posts the attacker wrote for it (it stops once the goal
holds), and each other training user with as many posts as a targeted user got (drawn
per user from the targeted users' counts, seeded), so the number of new posts cannot
become the label signal either.

With ``fine_tune_epochs`` = N the loop warm-starts: every round after 0 continues the
round before's detector on the augmented set for up to N epochs (vocabulary and weights
kept, :meth:`advseq.detector.Detector.fine_tune`) instead of training a new one from
scratch on a set that grows by the training split every round. A platform hardening a
deployed model would do the same; it makes a round cost a few epochs.

In ``transfer`` mode the attacker trains its own ``surrogate`` detector (with
``surrogate_params``) on the training split and attacks that white-box.

``rounds.json`` holds the per-round table; each round's detector and attack run are kept
under ``round_<r>/`` (a killed loop resumes at the first unfinished step).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from advseq.attack import AttackSpec, AttackTask, create_attack
from advseq.detector import create_detector, load_detector
from advseq.errors import CapabilityError, ConfigError, DataError
from advseq.evaluation import run_attack
from advseq.manifest import build_manifest
from advseq.metrics import classification_metrics
from advseq.run_config import check_out_folder
from advseq.schema import Dataset, User
from advseq.storage import atomic_write_json, replace_dir, scratch_dir_for
from advseq.threat import SURROGATE_DETECTOR, ThreatModel, applicability, check_mode, surrogate_seed
from advseq.training import MANIFEST_FILE, METRICS_FILE, SPLIT_FILE, data_record

ROUNDS_FILE = "rounds.json"


def _save_detector(det: Any, out: Path, data: Dataset, split: Any, metrics: dict[str, Any],
                   config: dict[str, Any], seed: int) -> None:
    det.save(out)
    atomic_write_json(out / METRICS_FILE, metrics)
    atomic_write_json(out / SPLIT_FILE, split.to_dict())
    atomic_write_json(out / MANIFEST_FILE, build_manifest(config, seed=seed, data=data_record(data),
                                                          split={"file": SPLIT_FILE},
                                                          fit_info=getattr(det, "fit_info_", {})))


def augment(users: list[User], posts: dict[str, str | Sequence[str]], tasks: dict[str, Any], tag: str,
            spec: AttackSpec | None = None) -> list[User]:
    """Copies of ``users`` with their written post (or posts, written in a row from the
    task by ``spec``'s rule) appended, as new training examples."""
    out = []
    for u in users:
        if u.user_id in posts:
            written = posts[u.user_id]
            task = tasks[u.user_id]
            if isinstance(written, str):
                attacked = task.with_post(written)
            else:
                from advseq.multipost import written_states

                attacked = written_states(spec or AttackSpec(), task, written)[-1]
            out.append(User(f"{u.user_id}#{tag}", u.label, attacked.posts))
    return out


def origin_id(user_id: str) -> str:
    """The id of the training user an augmented copy (:func:`augment`) was made from."""
    return user_id.rsplit("#", 1)[0]


def _train_valid(det: Any, users: list[User],
                 copy_of: dict[str, str]) -> tuple[list[User], list[User] | None]:
    """The users ``det`` trains on and early-stops on: where it holds out a validation
    share, each augmented copy (``copy_of``: its id -> its original's) goes to the side
    its original is on (:func:`advseq.torch_fit.carve_validation`); otherwise all of
    them, and no share (the detector's own rule, if any)."""
    valid_size = float(getattr(det, "valid_size", 0.0) or 0.0)
    if valid_size <= 0:
        return users, None
    from advseq.torch_fit import carve_validation

    return carve_validation(users, valid_size, det.seed, copy_of)


def retrain_loop(data: Dataset, detector: str, attack: str, out: str | Path, *, rounds: int = 3,
                 mode: str = "white-box", seed: int = 0, test_size: float = 0.2, split_seed: int = 0,
                 detector_params: dict[str, Any] | None = None,
                 attack_params: dict[str, Any] | None = None, spec: AttackSpec | None = None,
                 max_users: int | None = None, quality: bool = False,
                 initial: str | Path | None = None, surrogate: str = SURROGATE_DETECTOR,
                 surrogate_params: dict[str, Any] | None = None, repair: bool = False,
                 posts: int | None = None, fine_tune_epochs: int | None = None,
                 progress: bool | None = None, device: str | None = None) -> dict[str, Any]:
    """Run the loop; returns (and writes ``out/rounds.json``) the per-round table.

    ``initial``: a detector folder already trained with these settings on this split
    (e.g. by ``advseq train`` or a run matrix), used as round 0 instead of training it
    again; refused when its recorded split or settings differ. ``surrogate`` and
    ``surrogate_params``: the detector the attacker trains in ``transfer`` mode.
    ``posts``: K, the posts the attacker writes per user (default: the spec's, 1).
    ``fine_tune_epochs``: warm start; each round after 0 continues the round before's
    detector on the augmented set for up to this many epochs (``Detector.fine_tune``)
    instead of training a new one from scratch (None, the default).
    ``device``: where its detectors and attacks run (:mod:`advseq.device`)."""
    from advseq.progress import progress_bar

    if rounds < 1:
        raise ConfigError("rounds must be >= 1")
    check_mode(mode)
    out = Path(out)
    spec = spec or AttackSpec()
    if posts is not None:
        if spec.posts not in (1, posts):
            raise ConfigError(f"posts={posts} disagrees with the attack spec's posts={spec.posts}")
        spec = replace(spec, posts=posts)
    from advseq import registry
    from advseq.device import on_device

    detector_params = on_device(registry.detectors.get(detector), detector_params, device,
                                what="--detector-param device")
    attack_params = on_device(registry.attacks.get(attack), attack_params, device)
    surrogate_params = on_device(registry.detectors.get(surrogate), surrogate_params, device,
                                 what="surrogate device")
    split = data.split(test_size=test_size, seed=split_seed)
    config = {"detector": detector, "detector_params": detector_params, "attack": attack,
              "attack_params": attack_params, "mode": mode, "rounds": rounds, "seed": seed,
              "test_size": test_size, "split_seed": split_seed, "spec": spec.to_dict(),
              "data_checksum": data.checksum()}
    sur = {"detector": surrogate, "params": dict(surrogate_params or {})} if mode == "transfer" else None
    if sur is not None:   # recorded only where it matters: other loops keep their config
        config["surrogate"] = sur
    if fine_tune_epochs is not None:
        if fine_tune_epochs < 1:
            raise ConfigError("fine_tune_epochs must be >= 1")
        if not registry.detectors.get(detector).can_fine_tune:
            raise CapabilityError(f"fine_tune_epochs: detector {detector!r} cannot fine-tune (it trains "
                                  "from scratch only); leave fine_tune_epochs out")
        config["fine_tune_epochs"] = fine_tune_epochs
    # Refuse bad settings, and a combination that cannot run, before anything is written.
    create_detector(detector, seed=seed, **detector_params)
    if sur is not None:
        create_detector(surrogate, seed=surrogate_seed(seed), **sur["params"])
    needs = create_attack(attack, seed=seed, **attack_params).requires
    target = surrogate if sur is not None else detector
    reason = applicability(needs, mode, registry.detectors.get(target).capabilities,
                           attack=f"attack {attack!r}", detector=repr(target))
    if reason:
        raise CapabilityError(reason)
    cfg_file = out / "retrain.json"
    check_out_folder(out, "--out")
    if cfg_file.exists() and json.loads(cfg_file.read_text()) != config:
        raise ConfigError(f"{out} holds a retraining run with other settings; use another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg_file, config)

    train_users = list(split.train)
    copy_of: dict[str, str] = {}            # augmented copy's id -> its original's
    table: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with progress_bar(f"retrain {detector} vs {attack}", rounds + 1, enabled=progress) as bar:
        for r in range(rounds + 1):
            rdir = out / f"round_{r}"
            det_dir = rdir / "detector"
            if not (det_dir / METRICS_FILE).exists() and r == 0 and initial is not None:
                _adopt(Path(initial), det_dir, data, split, detector, detector_params, seed)
            if (det_dir / METRICS_FILE).exists():
                det = load_detector(det_dir, device=device)
            else:
                if r > 0 and fine_tune_epochs is not None:
                    det = load_detector(out / f"round_{r - 1}" / "detector", device=device)
                    det.fine_tune(*_train_valid(det, train_users, copy_of), epochs=fine_tune_epochs, progress=False)
                else:
                    det = create_detector(detector, seed=seed, **detector_params)
                    det.fit(*_train_valid(det, train_users, copy_of), progress=False)
                clean = classification_metrics(split.test.labels, det.predict_proba(split.test.users))
                clean.update(n_train=len(train_users), train_seconds=det.fit_info_.get("train_seconds"))
                _save_detector(det, det_dir, data, split, clean,
                               {"detector": detector, "params": det.get_params(), "round": r}, seed)
            clean = json.loads((det_dir / METRICS_FILE).read_text())
            summary = run_attack(data, det_dir, attack, out=rdir / "attack", mode=mode, spec=spec,
                                 attack_params=attack_params, seed=seed, resume=True, repair=repair,
                                 max_users=max_users, quality=quality, progress=False,
                                 device=device, **_surrogate_args(sur))
            row = {"round": r, "n_train": clean.get("n_train", len(train_users)),
                   "f1": clean["f1"], "roc_auc": clean["roc_auc"], "accuracy": clean["accuracy"],
                   "evasion_rate": summary["evasion_rate"],
                   "attack_success_rate": summary["attack_success_rate"],
                   "f1_after_attack": summary["after"]["f1"]}
            if spec.posts > 1:
                row.update(evasion_by_k=summary.get("evasion_by_k"),
                           posts_to_evade_median=summary.get("posts_to_evade_median"))
            table.append(row)
            atomic_write_json(out / ROUNDS_FILE, {"config": config, "rounds": table})
            bar.advance()
            bar.update(status=f"round {r}: F1 {row['f1']:.3f}, evasion {row['evasion_rate']}")
            if r == rounds:
                break
            aug_file = rdir / "augmented.jsonl"
            if aug_file.exists():
                added = _read_augmented(aug_file)
            else:
                added = _attack_training_users(data, split, det, attack, attack_params, mode, spec,
                                               seed, rdir, sur, device)
                from advseq.io import save_jsonl

                save_jsonl(Dataset(added, name="augmented") if added else Dataset([], "augmented"), aug_file)
            train_users = train_users + added
            copy_of.update((u.user_id, origin_id(u.user_id)) for u in added)
    result = {"config": config, "rounds": table, "seconds": round(time.perf_counter() - t0, 1)}
    first, last = table[0], table[-1]
    if first["evasion_rate"]:
        result["evasion_relative_change"] = round((last["evasion_rate"] - first["evasion_rate"])
                                                  / first["evasion_rate"], 4)
    result["f1_change"] = round(last["f1"] - first["f1"], 4)
    atomic_write_json(out / ROUNDS_FILE, result)
    atomic_write_json(out / MANIFEST_FILE, build_manifest(config, seed=seed, data=data_record(data)))
    return result


def _adopt(initial: Path, det_dir: Path, data: Dataset, split: Any, detector: str,
           params: dict[str, Any], seed: int) -> None:
    """Copy a trained detector in as round 0 after checking it is the one round 0 would train."""
    from advseq.training import recorded_split

    rec = recorded_split(initial, data)
    cfg = json.loads((initial / "config.json").read_text())
    want = json.loads(json.dumps(create_detector(detector, seed=seed, **params).get_params()))
    have = cfg.get("params", {})
    if rec is None or rec.to_dict() != split.to_dict() or any(have.get(k) != v for k, v in want.items()):
        raise ConfigError(f"{initial} was not trained with these settings on this split; "
                          "leave out the initial detector to train round 0")
    tmp = scratch_dir_for(det_dir)
    shutil.copytree(initial, tmp, dirs_exist_ok=True)
    replace_dir(tmp, det_dir)


def _surrogate_args(sur: dict[str, Any] | None) -> dict[str, Any]:
    """run_attack's surrogate arguments for a loop's surrogate record (transfer mode)."""
    return {} if sur is None else {"surrogate_detector": sur["detector"],
                                   "surrogate_params": sur["params"]}


def _read_augmented(path: Path) -> list[User]:
    """The training copies a resumed loop wrote before; a damaged line is one DataError."""
    users = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            d = json.loads(line)
            users.append(User(d["user_id"], d["label"], tuple(_posts(d["posts"]))))
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise DataError(path, f"not a user record ({type(err).__name__}: {err}); delete the "
                                  "file to attack the training users again", line=lineno) from None
    return users


def _posts(raw: list[dict[str, Any]]) -> list[Any]:
    from advseq.schema import Post

    return [Post(p["text"], p.get("context"), p.get("timestamp"), p.get("relevancy")) for p in raw]


def _attack_training_users(data: Dataset, split: Any, det: Any, attack: str,
                           attack_params: dict[str, Any], mode: str, spec: AttackSpec, seed: int,
                           rdir: Path, sur: dict[str, Any] | None,
                           device: str | None = None) -> list[User]:
    """The round's attacker writes a post for every training user (see the module docstring)."""
    atk = create_attack(attack, seed=seed, **attack_params)
    if sur is not None:
        from advseq.evaluation import prepare_surrogate

        # The round's test attack trained the surrogate in rdir/attack: this loads it.
        model, _ = prepare_surrogate(split.train, surrogate=None, detector=sur["detector"],
                                     params=sur["params"], seed=seed, out=rdir / "attack",
                                     progress=False, device=device)
        threat = ThreatModel(model, model.capabilities, surrogate=True)
    else:
        threat = ThreatModel(det, mode)
    threat.require(atk.requires, f"attack {attack!r}")
    # The round's test attack left its trained state here (e.g. PETGEN's generator): reuse it.
    atk.workdir = rdir / "attack" / "attack_state"
    atk.prepare(split.train, threat, spec)
    # Every training user gets the attacker's post: the targeted ones (malicious under
    # evasion) as attacked examples, the others aimed at the verdict they already have, so
    # that the attacker's writing cannot become the label signal.
    users = [u for u in split.train if spec.targets(u)] + [u for u in split.train if not spec.targets(u)]
    tasks = {u.user_id: spec.task(u) for u in users}
    tag = f"adv{rdir.name.split('_')[-1]}"
    if spec.posts > 1:
        return augment(users, _write_training_posts(atk, users, tasks, threat, spec, seed), tasks, tag, spec)
    posts: dict[str, str | Sequence[str]] = {}
    for s in range(0, len(users), 32):
        part = [tasks[u.user_id] for u in users[s:s + 32]]
        for task, output in zip(part, atk.run(part, threat), strict=True):
            posts[task.user_id] = output.post
    return augment(users, posts, tasks, tag)


def _write_training_posts(atk: Any, users: list[User], tasks: dict[str, AttackTask], threat: ThreatModel,
                          spec: AttackSpec, seed: int) -> dict[str, str | Sequence[str]]:
    """K > 1: the posts of every training user (see the module docstring): the targeted
    users' from the attack's ``write_posts``; each other user gets as many as a targeted
    user got (a seeded draw per user id), written slot by slot by the attack's ``run``,
    a near copy of the user's earlier posts ending its sequence."""
    from advseq.quality.copies import is_near_copy

    posts: dict[str, str | Sequence[str]] = {}
    targeted = [u for u in users if spec.targets(u)]
    for s in range(0, len(targeted), 32):
        part = [tasks[u.user_id] for u in targeted[s:s + 32]]
        for task, outs in zip(part, atk.write_posts(part, threat, spec), strict=True):
            posts[task.user_id] = [o.post for o in outs]
    counts = [len(posts[u.user_id]) for u in targeted] or [spec.posts]
    want = {}
    for u in users:
        if not spec.targets(u):
            draw = hashlib.blake2b(f"{seed}|{u.user_id}|posts".encode(), digest_size=8).digest()
            want[u.user_id] = counts[int.from_bytes(draw, "little") % len(counts)]
    current = {uid: tasks[uid] for uid in want}
    written: dict[str, list[str]] = {uid: [] for uid in want}
    for slot in range(max(want.values(), default=0)):
        active = [uid for uid in want if len(written[uid]) == slot and want[uid] > slot]
        for s in range(0, len(active), 32):
            part = [current[uid] for uid in active[s:s + 32]]
            for task, output in zip(part, atk.run(part, threat), strict=True):
                if slot and is_near_copy(output.post, written[task.user_id]):
                    continue                  # the user's sequence ends here
                written[task.user_id].append(output.post)
                current[task.user_id] = spec.next_task(task, output.post)
    posts.update({uid: texts for uid, texts in written.items() if texts})
    return posts
