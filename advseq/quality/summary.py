"""Every text-quality metric of one set of posts, and the report of an attack's posts next
to the same users' real last posts (the yardstick)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from advseq.attack import FLUENCY_MODELS, AttackSpec
from advseq.errors import ConfigError, ResourceMissing
from advseq.quality.bleu import (
    BLEU_ORDERS,
    SELF_BLEU_MAX,
    SELF_BLEU_ORDERS,
    bleu_scores,
    nanmean,
    self_bleu_scores,
)
from advseq.quality.copies import NEAR_COPY_JACCARD, REPETITIVE_SHARE, copy_flags, repetitive_flags
from advseq.quality.items import SAME_CONTEXT_RELEVANCY, QualityItem
from advseq.quality.style import style_similarity
from advseq.quality.topics import TOPIC_COUNTS, TopicModels, topic_models, topic_similarities
from advseq.schema import Dataset, DataSplit, User

METRICS = (
    *(f"bleu_{n}" for n in BLEU_ORDERS),
    *(f"bleu_history_{n}" for n in BLEU_ORDERS),
    *(f"self_bleu_{n}" for n in SELF_BLEU_ORDERS),
    "perplexity_judge", "perplexity_ref",
    "topic_sim_context", "topic_sim_recent", "topic_sim_same_context",
    "style_similarity",
    "copy_exact", "copy_near", "repetitive",
)


#: names an attack gives in ``Attack.fluency_models``: the judge's model (SmolLM2) and
#: advseq's reference LM, the models behind ``perplexity_judge`` and ``perplexity_ref``
JUDGE_MODEL, REFERENCE_LM = FLUENCY_MODELS
_MEASURED_BY = {JUDGE_MODEL: "perplexity_judge", REFERENCE_LM: "perplexity_ref"}


def not_independent(fluency_models: Collection[str], judge_name: str | None) -> dict[str, str]:
    """The perplexity metrics that are no independent opinion of an attack's posts
    because the attack writes or chooses its posts with the model behind them, each with
    the reason (empty when every measure is independent)."""
    out = {}
    for model in sorted(set(fluency_models)):
        if model not in _MEASURED_BY:
            raise ConfigError(f"fluency model {model!r}: expected one of {sorted(_MEASURED_BY)}")
        what = (judge_name or "the judge's model") if model == JUDGE_MODEL else "advseq's reference LM"
        out[_MEASURED_BY[model]] = f"the attack writes or chooses its posts with {what}"
    return out


class PerplexityModel(Protocol):
    """What ``quality_report`` needs of a reference LM (``advseq.lm.PostLM``)."""

    def perplexity(self, posts: Sequence[str], contexts: Sequence[str | None] | None) -> float: ...


_REF_LM_CACHE: dict[tuple[str, int], PerplexityModel] = {}


def _reference_lm(train: Dataset, seed: int) -> PerplexityModel:
    """advseq's reference LM on the training users (imported lazily: heavy), cached
    in-process per (training data, seed)."""
    from advseq.lm import reference_lm

    key = (train.checksum(), seed)
    if key not in _REF_LM_CACHE:
        _REF_LM_CACHE[key] = reference_lm(train, seed=seed)
    return _REF_LM_CACHE[key]


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def quality_metrics(items: Sequence[QualityItem], refs: Sequence[str], *,
                    leave_out: Sequence[int] | None = None, topics: TopicModels,
                    judge: Any | None = None, ref_lm: PerplexityModel | None = None,
                    corpus: Sequence[str] | None = None, seed: int = 0) -> dict[str, float | None]:
    """Every metric of :data:`METRICS` for one set of posts. ``refs`` is the shared BLEU
    reference set; ``leave_out[i]`` the index in ``refs`` of post ``i``'s own copy (-1:
    none). ``judge`` / ``ref_lm`` None leave their perplexity None; ``corpus`` (the
    training posts) None leaves the copy shares None."""
    posts = [it.post for it in items]
    out: dict[str, float | None] = dict.fromkeys(METRICS)
    if not items:
        return out
    shared = bleu_scores(posts, [refs] * len(posts), BLEU_ORDERS, leave_out=leave_out)
    history = bleu_scores(posts, [it.history_texts for it in items], BLEU_ORDERS)
    selfb = self_bleu_scores(posts, SELF_BLEU_ORDERS, seed=seed)
    for n in BLEU_ORDERS:
        out[f"bleu_{n}"] = _round(nanmean(shared[n]))
        out[f"bleu_history_{n}"] = _round(nanmean(history[n]))
    for n in SELF_BLEU_ORDERS:
        out[f"self_bleu_{n}"] = _round(selfb[n])
    if judge is not None:
        out["perplexity_judge"] = _round(judge.perplexity(posts), 4)
    if ref_lm is not None:
        out["perplexity_ref"] = _round(ref_lm.perplexity(posts, [it.context for it in items]), 4)
    out.update({k: _round(v) for k, v in topic_similarities(items, topics).items()})
    out["style_similarity"] = _round(style_similarity(posts, [it.history_texts for it in items]))
    if corpus is not None:
        exact, near = copy_flags(posts, [it.history_texts for it in items], corpus)
        out["copy_exact"], out["copy_near"] = _round(exact.mean()), _round(near.mean())
    out["repetitive"] = _round(float(repetitive_flags(posts).mean()))
    return out


def _items(records: Sequence[dict[str, Any]], data: Dataset,
           spec: AttackSpec) -> tuple[list[QualityItem], list[int], list[QualityItem], list[User]]:
    """(attack items, the 0-based slot of each, real yardstick items, their users) of the
    targeted records: one attack item per written post (K > 1: each with the history it
    was written after, the attacker's earlier posts included), one real item per user."""
    attack, slots, real, users = [], [], [], []
    for rec in records:
        if not rec.get("targeted") or rec.get("post") is None:
            continue
        user = data[rec["user_id"]]
        last = user.posts[-1]
        task = spec.task(user)
        on_last = rec.get("context") == last.context
        if spec.posts > 1:
            from advseq.multipost import slot_tasks

            posts = rec.get("posts") or [rec["post"]]
            for k, (t, text) in enumerate(zip(slot_tasks(spec, task, posts), posts, strict=True)):
                attack.append(QualityItem(text, tuple(t.history.posts), rec.get("context"), on_last))
                slots.append(k)
        else:
            attack.append(QualityItem(rec["post"], tuple(task.history.posts), rec.get("context"),
                                      on_last))
            slots.append(0)
        real.append(QualityItem(last.text, user.posts[:-1], last.context, True))
        users.append(user)
    return attack, slots, real, users


class _CachedPerplexity:
    """A reference LM whose per-post NLLs are computed once, so the K-post report's
    per-k blocks re-read the flattened block's scores instead of re-running the LM."""

    def __init__(self, lm: Any) -> None:
        self._lm = lm
        self._nll: dict[tuple[str, str | None], tuple[float, int]] = {}

    def perplexity(self, posts: Sequence[str], contexts: Sequence[str | None] | None) -> float:
        keys = list(zip(posts, contexts or [None] * len(posts), strict=True))
        missing = list(dict.fromkeys(k for k in keys if k not in self._nll))
        if missing:
            nll, count = self._lm.token_nll([k[0] for k in missing], [k[1] for k in missing])
            self._nll.update({k: (float(n), int(c)) for k, n, c in zip(missing, nll, count, strict=True)})
        total = sum(self._nll[k][0] for k in keys)
        tokens = sum(self._nll[k][1] for k in keys)
        if not tokens:
            raise ConfigError("perplexity of no posts is undefined")
        return math.exp(total / tokens)


_REAL_CACHE: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], dict[str, float | None]]] = OrderedDict()
_REAL_CACHE_MAX = 16


def _real_metrics(items: Sequence[QualityItem], refs: Sequence[str], leave_out: Sequence[int], *,
                  topics: TopicModels, judge: Any | None, ref_lm: PerplexityModel | None,
                  corpus: Sequence[str], seed: int) -> dict[str, float | None]:
    """:func:`quality_metrics` of the real yardstick, memoized in-process: every attack
    unit on the same detector's test users reports the same real posts against the same
    references, corpus and models, so only the first computes it. Keyed by content; the
    models (judge, reference LM, topics) by identity, held so that an id is not reused."""
    models = (judge, getattr(ref_lm, "_lm", ref_lm), type(ref_lm), topics)
    key = (tuple(items),
           tuple(refs), tuple(leave_out), len(corpus), hash(tuple(corpus)), seed,
           tuple(id(m) for m in models))
    hit = _REAL_CACHE.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], models, strict=True)):
        _REAL_CACHE.move_to_end(key)
        return dict(hit[1])
    out = quality_metrics(items, refs, leave_out=leave_out, topics=topics, judge=judge,
                          ref_lm=ref_lm, corpus=corpus, seed=seed)
    _REAL_CACHE[key] = (models, dict(out))
    while len(_REAL_CACHE) > _REAL_CACHE_MAX:
        _REAL_CACHE.popitem(last=False)
    return out


def quality_report(records: Sequence[dict[str, Any]], data: Dataset, split: DataSplit,
                   spec: AttackSpec | None = None, *, seed: int = 0,
                   ref_lm: PerplexityModel | None = None, judge: bool | Any = True,
                   topic_counts: Sequence[int] = TOPIC_COUNTS,
                   fluency_models: Collection[str] = ()) -> dict[str, Any]:
    """Text quality of the posts an attack wrote (``attack``) and of the same users' real
    last posts (``real``, the yardstick), from the evaluator's per-user ``records``.

    BLEU references are the real last posts of the scored test users (the real yardstick
    leaves each post's own copy out). ``ref_lm``: any object with
    ``perplexity(posts, contexts)``; None trains advseq's reference LM on
    ``split.train``. ``judge``: True for SmolLM2, False for none, or an object with
    ``perplexity(texts)``. ``fluency_models``: the attack's ``Attack.fluency_models``;
    the perplexities of those models are listed under ``not_independent`` (only when
    there are any) with the reason, and a note names the independent measure left.
    """
    t0 = time.perf_counter()
    spec = spec or AttackSpec()
    notes: list[str] = []
    attack_items, slots, real_items, users = _items(records, data, spec)
    ids = {r["user_id"] for r in records}
    ref_users = [u for u in split.test if u.user_id in ids]
    refs = [u.posts[-1].text for u in ref_users]
    ref_pos = {u.user_id: i for i, u in enumerate(ref_users)}
    leave_out = [ref_pos.get(u.user_id, -1) for u in users]
    notes.append(f"bleu_*: references = the {len(refs)} real last posts of the scored test users; "
                 "the real yardstick leaves each post's own copy out")
    if len(attack_items) > SELF_BLEU_MAX:
        notes.append(f"self_bleu_*: a seeded sample of {SELF_BLEU_MAX} of {len(attack_items)} posts")

    judge_obj: Any | None = None
    judge_name: str | None = None
    if judge is True:
        from advseq.judge import MODEL_NAME, PerplexityJudge

        judge_obj, judge_name = PerplexityJudge.shared(), MODEL_NAME
    elif judge not in (False, None):
        judge_obj, judge_name = judge, getattr(judge, "name", type(judge).__name__)
    if judge_obj is None:
        notes.append("perplexity_judge: not computed (judge disabled)")
    elif attack_items:
        try:
            if hasattr(judge_obj, "load"):
                judge_obj.load()
        except ResourceMissing as err:
            notes.append(f"perplexity_judge: not computed ({err})")
            judge_obj, judge_name = None, None
        if judge_obj is not None and getattr(judge_obj, "dtype", "float32") != "float32":
            notes.append(f"perplexity_judge: computed in {judge_obj.dtype}")

    lm: PerplexityModel | None = ref_lm
    if lm is None and attack_items:
        try:
            lm = _reference_lm(split.train, seed)
        except ModuleNotFoundError as err:
            if err.name != "advseq.lm":
                raise
            notes.append("perplexity_ref: not computed (advseq.lm is not available)")
        except ResourceMissing as err:
            notes.append(f"perplexity_ref: not computed ({err})")

    topics = topic_models(data, seed=seed, topic_counts=topic_counts)
    if topics.corpus == "posts":
        notes.append(f"topic_sim_*: the data has no contexts; LDA ({', '.join(map(str, topic_counts))} "
                     f"topics) fitted on {topics.n_docs} posts")
    n_attack = sum(bool(it.same_context()) for it in attack_items)
    n_real = sum(bool(it.same_context()) for it in real_items)
    notes.append(f"topic_sim_same_context: users with earlier posts on the target context (same "
                 f"context, or relevancy >= {SAME_CONTEXT_RELEVANCY}): {n_attack} of "
                 f"{len(attack_items)} (attack), {n_real} of {len(real_items)} (real)")

    corpus = [p.text for u in split.train for p in u.posts]
    notes.append(f"copy_exact / copy_near: share of posts that repeat (same tokens / word-set Jaccard "
                 f">= {NEAR_COPY_JACCARD}) one of the {len(corpus)} training posts or the user's own "
                 "earlier posts")
    notes.append(f"repetitive: share of posts of 4+ words in which one word makes up more than "
                 f"{REPETITIVE_SHARE:.0%} of the words")
    if spec.posts > 1 and lm is not None and hasattr(lm, "token_nll"):
        lm = _CachedPerplexity(lm)
    attack = quality_metrics(attack_items, refs, topics=topics, judge=judge_obj, ref_lm=lm,
                             corpus=corpus, seed=seed)
    real = _real_metrics(real_items, refs, leave_out, topics=topics, judge=judge_obj, ref_lm=lm,
                         corpus=corpus, seed=seed)
    out = {"attack": attack, "real": real, "n_posts": len(attack_items),
           "topic_corpus": topics.corpus, "judge": judge_name, "notes": notes,
           "seconds": round(time.perf_counter() - t0, 3)}
    dependent = not_independent(fluency_models, judge_name)
    if dependent:
        out["not_independent"] = dependent
        left = [m for m in _MEASURED_BY.values() if m not in dependent]
        notes.append(f"{', '.join(dependent)}: no independent opinion ({'; '.join(dependent.values())})"
                     + (f"; {', '.join(left)} is the independent fluency measure" if left else ""))
    if spec.posts > 1:
        notes.append("K posts: `attack` covers every written post, each judged with the history it "
                     "was written after (the attacker's earlier posts included); `by_k[k - 1]` "
                     "covers the k-th posts")
        out["by_k"] = []
        for k in range(spec.posts):
            items = [it for it, s in zip(attack_items, slots, strict=True) if s == k]
            block = quality_metrics(items, refs, topics=topics, judge=judge_obj, ref_lm=lm,
                                    corpus=corpus, seed=seed)
            out["by_k"].append({**block, "n_posts": len(items)})
        out["seconds"] = round(time.perf_counter() - t0, 3)
    return out
