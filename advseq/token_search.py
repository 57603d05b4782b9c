"""Gradient-guided token search, shared by the attacks that edit words with the
detector's gradients (``hotflip``, ``unitrigger``, and PETGEN's refinement).

Posts live in the detector's vocabulary as id sequences; the detector scores them as
one-hot soft posts through :meth:`advseq.threat.ThreatModel.soft_logits` (exact for real
tokens), and its gradient with respect to the one-hot matrix gives HotFlip's
first-order estimate of every substitution at once (:func:`hotflip_search`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from advseq import history_cache
from advseq.attack import AttackOutput, AttackTask
from advseq.post_tensors import one_hot_ids
from advseq.schema import User
from advseq.text import SPECIALS, Tokenizer, Vocabulary
from advseq.threat import ThreatModel


@dataclass
class TokenPost:
    """A post as detector ids plus the original-case token strings they came from."""

    ids: list[int]
    words: list[str]

    def text(self, vocab: Vocabulary, changed: Sequence[int] = ()) -> str:
        """Original words where unchanged (keeps case and out-of-vocabulary words),
        vocabulary tokens where a position was changed."""
        changed = set(changed)
        words = [vocab.itos[i] if j in changed else w
                 for j, (i, w) in enumerate(zip(self.ids, self.words, strict=True))]
        return Tokenizer.detokenize(words)


def encode_post(text: str, vocab: Vocabulary, max_tokens: int) -> TokenPost:
    tok = vocab.tokenizer
    raw = Tokenizer(lowercase=False, replace_urls=tok.replace_urls).tokenize(text)[:max_tokens]
    ids = [vocab.token_id(t.lower() if tok.lowercase else t) for t in raw]
    if not ids:
        ids, raw = [vocab.unk_id], ["..."]
    return TokenPost(ids, raw)


def id_matrix(batch: Sequence[Sequence[int]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, length]`` token ids (0 past a post's end) and lengths ``[N]``."""
    ids = torch.tensor([[*seq, *[0] * (length - len(seq))] for seq in batch], dtype=torch.long)
    return ids.view(len(batch), length), torch.tensor([len(seq) for seq in batch], dtype=torch.long)


def one_hot(batch: Sequence[Sequence[int]], vocab_size: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, length, V]`` one-hot matrix and lengths ``[N]`` (rows past a post's end are 0)."""
    ids, lengths = id_matrix(batch, length)
    return one_hot_ids(ids, lengths, vocab_size), lengths


def forbidden_mask(vocab: Vocabulary) -> torch.Tensor:
    """Tokens an attack may not write: the special tokens (pad, unk, bos, eos, sep)."""
    mask = torch.zeros(len(vocab), dtype=torch.bool)
    mask[: len(SPECIALS)] = True
    return mask


@torch.no_grad()
def exact_scores(threat: ThreatModel, histories: Sequence[User], batch: Sequence[Sequence[int]],
                 chunk: int | None = None) -> np.ndarray:
    """P(malicious) for each (history, id sequence) pair; one query per pair (the one-hot
    soft post's score, through the detector's token path), ``chunk`` pairs per call (by
    default 256; 64 with the faster query paths off, as before them)."""
    chunk = chunk or (256 if history_cache.fast() else 64)
    out = []
    for s in range(0, len(batch), chunk):
        part = batch[s:s + chunk]
        ids, lengths = id_matrix(part, max(len(p) for p in part))
        out.append(torch.sigmoid(threat.token_logits(histories[s:s + chunk], ids, lengths)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def losses_from_probs(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return -(targets * np.log(p) + (1 - targets) * np.log(1 - p))


def hotflip_search(tasks: Sequence[AttackTask], posts: Sequence[TokenPost], threat: ThreatModel, *,
                   beam_width: int = 3, candidates: int = 10, max_flips: int = 5,
                   allowed: Sequence[torch.Tensor] | None = None,
                   give_up: float | None = None) -> list[AttackOutput]:
    """Beam search over word substitutions in ``posts`` (one per task), guided by the
    first-order estimate; ``allowed[u]`` (``[T, V]`` bools, optional) restricts which
    tokens may be written at each position of post ``u``. ``give_up`` (a slack factor,
    optional) stops a user's search once it is out of reach (:func:`out_of_reach`)."""
    vocab = threat.vocab
    V = len(vocab)
    forbidden = forbidden_mask(vocab)
    targets = np.array([t.target for t in tasks], dtype=np.float64)
    allow = _stacked(allowed, max(len(p.ids) for p in posts), V) if allowed is not None and posts else None
    if allow is not None:
        per_post = [m.any(0).nonzero().squeeze(1) for m in allowed]      # tokens allowed somewhere

        def allow_cols(rows: torch.Tensor) -> torch.Tensor:
            return torch.cat([per_post[u] for u in rows.unique().tolist()])
    # Each beam: (ids tuple, changed positions tuple, loss, prob)
    p0 = exact_scores(threat, [t.history for t in tasks], [p.ids for p in posts])
    beams = [[(tuple(p.ids), (), float(losses_from_probs(p0[u:u + 1], targets[u:u + 1])[0]), float(p0[u]))]
             for u, p in enumerate(posts)]
    done = [_reached(p0[u], targets[u]) for u in range(len(tasks))]
    gaps = [[goal_gap(p0[u], targets[u])] for u in range(len(tasks))]
    status = ["ok"] * len(tasks)
    for step in range(max_flips):
        active = [u for u in range(len(tasks)) if not done[u]]
        active = [u for u in active if _afford(threat, tasks[u], len(beams[u]) * (1 + candidates), status, u)]
        if not active:
            break
        flat = [(u, b) for u in active for b in beams[u]]
        hist = [tasks[u].history for u, _ in flat]
        ids, lengths = id_matrix([b[0] for _, b in flat], max(len(b[0]) for _, b in flat))
        T = ids.shape[1]
        rows = torch.tensor([u for u, _ in flat])
        columns = None
        if allow is not None and history_cache.fast():         # only allowed and current tokens are read
            columns = torch.cat([allow_cols(rows), ids.reshape(-1)]).unique()
        _, grad = threat.token_gradient(hist, ids, lengths, [tasks[u].target for u, _ in flat], columns=columns)
        delta = _flip_deltas(grad, ids.to(grad.device), forbidden)
        if allow is not None:                                   # tokens the caller allows
            delta.masked_fill_(~allow.index_select(0, rows.to(allow.device))[:, :T].to(delta.device), float("inf"))
        blocked = torch.arange(T)[None, :] >= lengths[:, None]  # beyond a post's end
        done_at = [(n, pos) for n, (_, b) in enumerate(flat) for pos in b[1]]
        if done_at:
            blocked[tuple(torch.tensor(done_at).T)] = True      # each position once
        delta[blocked.to(delta.device)] = float("inf")
        k = min(candidates, delta[0].numel())
        best = torch.topk(-delta.reshape(len(flat), -1), k, dim=1)
        top, finite = best.indices.tolist(), torch.isfinite(best.values).tolist()
        cand_users, cand_hist, cand_ids, cand_changed = [], [], [], []
        for n, (u, b) in enumerate(flat):
            for flat_idx, ok in zip(top[n], finite[n], strict=True):
                pos, tok = divmod(flat_idx, V)
                if not ok:
                    continue
                ids = list(b[0])
                ids[pos] = tok
                cand_users.append(u)
                cand_hist.append(tasks[u].history)
                cand_ids.append(tuple(ids))
                cand_changed.append(tuple(sorted((*b[1], pos))))
        if not cand_ids:
            break
        probs = exact_scores(threat, cand_hist, cand_ids)
        losses = losses_from_probs(probs, targets[cand_users])
        _keep_best(beams, active, zip(cand_users, cand_ids, cand_changed, losses, probs, strict=True),
                   beam_width, targets, done)
        if give_up:
            for u in active:
                gaps[u].append(goal_gap(beams[u][0][3], targets[u]))
                done[u] = done[u] or out_of_reach(gaps[u], max_flips - step - 1, give_up)
    outputs = []
    for u, post in enumerate(posts):
        ids, changed, _, prob = beams[u][0]
        flipped = TokenPost(list(ids), post.words)
        outputs.append(AttackOutput(flipped.text(threat.vocab, changed), status[u],
                                    {"flips": len(changed), "surrogate_prob": round(prob, 6)}))
    return outputs


def _keep_best(beams: list[list[Any]], active: Sequence[int], scored: Iterable[tuple[Any, ...]],
               beam_width: int, targets: np.ndarray, done: list[bool]) -> None:
    """One beam-search step's selection: each active user keeps the ``beam_width`` best
    distinct states of its beams and its newly ``scored`` candidates (``(user, ids,
    changed, loss, prob)``), lowest loss first. A user is done at the goal, and also when
    its beams come out as they went in: the next step would take the same gradients and
    score the same candidates (the search is deterministic), so it could only repeat."""
    pools: dict[int, list[Any]] = {u: list(beams[u]) for u in active}
    for u, ids, ch, loss, p in scored:
        pools[u].append((ids, ch, float(loss), float(p)))
    for u in active:
        seen, ranked = set(), []
        for beam in sorted(pools[u], key=lambda b: b[2]):
            if beam[0] not in seen:
                seen.add(beam[0])
                ranked.append(beam)
        stuck = [b[:2] for b in ranked[:beam_width]] == [b[:2] for b in beams[u]]
        beams[u] = ranked[:beam_width]
        done[u] = stuck or _reached(beams[u][0][3], targets[u])


def _flip_deltas(grad: torch.Tensor, ids: torch.Tensor, forbidden: torch.Tensor) -> torch.Tensor:
    """HotFlip's first-order change ``g[.., t, b] - g[.., t, a]`` of every flip of token
    ``a = ids[.., t]`` to ``b`` (``grad`` ``[..., T, V]``, overwritten), ``inf`` for the
    forbidden tokens and for the no-op flip: the values of ``grad - (grad * x).sum(-1)``
    for the one-hot ``x`` of ``ids`` (positions past a post's end are the caller's)."""
    index = ids.unsqueeze(-1)
    delta = grad.sub_(grad.gather(-1, index))
    delta[..., forbidden] = float("inf")
    return delta.scatter_(-1, index, float("inf"))


def _stacked(allowed: Sequence[torch.Tensor], length: int, vocab_size: int) -> torch.Tensor:
    """``allowed`` (``[T_u, V]`` per post) as one ``[U, length, V]`` tensor, True past
    each post's end (those positions are blocked anyway)."""
    out = torch.ones(len(allowed), length, vocab_size, dtype=torch.bool)
    for u, mask in enumerate(allowed):
        out[u, : mask.shape[0]] = mask[:length].cpu()
    return out


def goal_gap(prob: float, target: float) -> float:
    """How far P(malicious) ``prob`` is from the verdict ``target``, in logits (the
    detector's own scale, where flips add up): positive short of the 0.5 threshold,
    negative past it."""
    p = min(max(float(prob), 1e-7), 1 - 1e-7)
    z = float(np.log(p / (1 - p)))
    return -z if target else z


def out_of_reach(gaps: Sequence[float], flips_left: int, slack: float) -> bool:
    """Whether a greedy search is out of reach of its goal: ``gaps`` are its best state's
    :func:`goal_gap` after each flip so far (the start first), and even ``slack`` times the
    largest gain of its last two flips, made by each of the ``flips_left`` flips to come,
    would not close the gap. A search's gains shrink as it goes (each step takes the best
    flip left), so ``slack`` > 1 leaves room for a later flip that gains more than the
    recent ones; it is a bound in practice, not in theory (docs/petgen.md has what it cut
    and lost)."""
    if len(gaps) < 2 or gaps[-1] <= 0:
        return False
    gain = max(gaps[j - 1] - gaps[j] for j in range(max(1, len(gaps) - 2), len(gaps)))
    return gaps[-1] > slack * flips_left * max(gain, 0.0)


def _reached(prob: float, target: float) -> bool:
    return (prob >= 0.5) == bool(target)


#: whether a probability gives the target verdict (the searches' stopping rule)
reached = _reached


def _afford(threat: ThreatModel, task: AttackTask, n: int, status: list[str], u: int) -> bool:
    left = threat.remaining(task.user_id)
    if left is not None and left < n:
        status[u] = "budget_exhausted"
        return False
    return True


# ---- K slots searched together (joint K-post attacks) -----------------------------------

#: a user's state in a joint search: the K posts' ids, each post's changed positions,
#: the loss toward the target and P(malicious) on the attacker's threat model
Beam = tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...], float, float]


def one_hot_slots(batch: Sequence[Sequence[Sequence[int]]], vocab_size: int,
                  length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, K, length, V]`` one-hot matrix and lengths ``[N, K]`` for N rows of K id
    sequences each (every row has the same K)."""
    K = len(batch[0])
    x, lengths = one_hot([ids for row in batch for ids in row], vocab_size, length)
    return x.view(len(batch), K, length, vocab_size), lengths.view(len(batch), K)


def slot_ids(batch: Sequence[Sequence[Sequence[int]]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, K, length]`` token ids and lengths ``[N, K]`` for N rows of K id sequences
    each (every row has the same K): :func:`one_hot_slots` as ids."""
    K = len(batch[0])
    ids, lengths = id_matrix([ids for row in batch for ids in row], length)
    return ids.view(len(batch), K, length), lengths.view(len(batch), K)


@torch.no_grad()
def exact_slot_scores(threat: ThreatModel, histories: Sequence[User],
                      batch: Sequence[Sequence[Sequence[int]]], cells: int = 64 * 30) -> np.ndarray:
    """P(malicious) for each (history, K id sequences) pair, the K posts written after
    the history in order; one query per pair. Chunks hold about ``cells`` token rows, so a
    chunk's one-hot matrix stays the size of 64 one-post rows whatever K is."""
    out = []
    s = 0
    while s < len(batch):
        K = len(batch[s])
        T = max(len(ids) for row in batch[s:s + 64] for ids in row)
        n = max(1, min(64, cells // max(1, K * T)))
        part = batch[s:s + n]
        ids, lengths = id_matrix([ids for row in part for ids in row], max(len(ids) for row in part for ids in row))
        ids, lengths = ids.view(len(part), K, -1), lengths.view(len(part), K)
        out.append(torch.sigmoid(threat.token_logits(histories[s:s + n], ids, lengths)).cpu().numpy())
        s += n
    return np.concatenate(out) if out else np.zeros(0)


def slot_texts(beam: Beam, words: Sequence[Sequence[str]], vocab: Vocabulary) -> list[str]:
    """The K posts of a beam as text (original words where unchanged)."""
    return [TokenPost(list(ids), list(w)).text(vocab, ch)
            for ids, w, ch in zip(beam[0], words, beam[1], strict=True)]


def joint_search(tasks: Sequence[AttackTask], beams: list[list[Beam]], words: Sequence[Sequence[Sequence[str]]],
                 threat: ThreatModel, *, beam_width: int = 3, candidates: int = 10, max_flips: int = 5,
                 status: list[str] | None = None) -> list[list[Beam]]:
    """HotFlip's beam search over the K posts of each user at once: every step takes one
    gradient query per beam over the ``[B, K, T, V]`` soft posts, ranks every (slot,
    position, word) flip by the first-order estimate, scores the ``candidates`` best
    exactly (one query each), keeps the ``beam_width`` best states; a user stops at the
    goal or after ``max_flips`` steps. ``beams[u]`` (scored states of user ``u``, best
    first, all with the same K) and ``words[u][k]`` (slot k's original words) describe
    where each user starts. A flip that makes a post a near copy of another of the user's
    posts (or of ``task.written``) is never scored. ``status[u]`` becomes
    ``budget_exhausted`` for a user the budget stops. Returns the final beams."""
    from advseq.quality.copies import is_near_copy

    vocab = threat.vocab
    V = len(vocab)
    forbidden = forbidden_mask(vocab)
    targets = np.array([t.target for t in tasks], dtype=np.float64)
    status = status if status is not None else ["ok"] * len(tasks)
    beams = [list(b) for b in beams]
    done = [reached(beams[u][0][3], targets[u]) for u in range(len(tasks))]
    for _ in range(max_flips):
        active = [u for u in range(len(tasks)) if not done[u]]
        active = [u for u in active if _afford(threat, tasks[u], len(beams[u]) * (1 + candidates), status, u)]
        if not active:
            break
        flat = [(u, b) for u in active for b in beams[u]]
        T = max(len(ids) for _, b in flat for ids in b[0])
        ids, lengths = slot_ids([b[0] for _, b in flat], T)
        _, grad = threat.token_gradient([tasks[u].history for u, _ in flat], ids, lengths,
                                        [tasks[u].target for u, _ in flat])
        delta = _flip_deltas(grad, ids.to(grad.device), forbidden)
        past = torch.arange(T)[None, None, :] >= lengths[:, :, None]   # beyond a post's end
        done_at = [(n, k, pos) for n, (_, b) in enumerate(flat) for k, ch in enumerate(b[1]) for pos in ch]
        if done_at:
            past[tuple(torch.tensor(done_at).T)] = True          # each position once
        delta[past] = float("inf")
        K = ids.shape[1]
        best = torch.topk(-delta.reshape(len(flat), -1), min(candidates, K * T * V), dim=1)
        top, finite = best.indices.tolist(), torch.isfinite(best.values).tolist()
        cand_users, cand_ids, cand_changed = [], [], []
        for n, (u, b) in enumerate(flat):
            texts = slot_texts(b, words[u], vocab)
            for flat_idx, ok in zip(top[n], finite[n], strict=True):
                k, rest = divmod(flat_idx, T * V)
                pos, tok = divmod(rest, V)
                if not ok:
                    continue
                ids = list(b[0][k])
                ids[pos] = tok
                changed = tuple(sorted((*b[1][k], pos)))
                text = TokenPost(ids, list(words[u][k])).text(vocab, changed)
                others = [*texts[:k], *texts[k + 1:], *tasks[u].written]
                if is_near_copy(text, others):
                    continue                                     # the K posts stay distinct
                cand_users.append(u)
                cand_ids.append((*b[0][:k], tuple(ids), *b[0][k + 1:]))
                cand_changed.append((*b[1][:k], changed, *b[1][k + 1:]))
        if not cand_ids:
            break
        probs = exact_slot_scores(threat, [tasks[u].history for u in cand_users], cand_ids)
        losses = losses_from_probs(probs, targets[cand_users])
        _keep_best(beams, active, zip(cand_users, cand_ids, cand_changed, losses, probs, strict=True),
                   beam_width, targets, done)
    return beams


def score_beams(tasks: Sequence[AttackTask], states: Sequence[Sequence[tuple[tuple[tuple[int, ...], ...],
                                                                             tuple[tuple[int, ...], ...]]]],
                threat: ThreatModel) -> list[list[Beam]]:
    """Scored beams (best first) from unscored (ids, changed) states, one query each."""
    flat = [(u, s) for u, sts in enumerate(states) for s in sts]
    probs = exact_slot_scores(threat, [tasks[u].history for u, _ in flat], [s[0] for _, s in flat])
    targets = np.array([tasks[u].target for u, _ in flat], dtype=np.float64)
    losses = losses_from_probs(probs, targets) if flat else np.zeros(0)
    out: list[list[Beam]] = [[] for _ in tasks]
    for (u, (ids, ch)), loss, p in zip(flat, losses, probs, strict=True):
        out[u].append((ids, ch, float(loss), float(p)))
    return [sorted(b, key=lambda b: b[2]) for b in out]
