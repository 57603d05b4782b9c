"""``petgen`` and ``malcom``: personalised text generation attacks.

``petgen`` — He, Ahamad, Kumar. "PETGEN: Personalized Text Generation Attack on Deep
Sequence Embedding-based Classification Models". KDD 2021. A conditional generator
writes the user's next post in their style, on the target context, aware of their
earlier posts on it and their recent interests, trained against the detector
(:mod:`attacks.petgen.model`, :mod:`attacks.petgen.trainer`).

``malcom`` — Le, Wang, Lee. "MALCOM: Generating Malicious Comments to Attack Neural Fake
News Detection Models". ICDM 2020, as the PETGEN authors re-ran it: the same generator
trained without the recency term.

Parameters: every PETGEN setting (:class:`~attacks.petgen.settings.PETGENSettings`) is a
parameter of the attack (``-a petgen -p w_recency=0.5``); the attack adds its own —
``generator`` (a saved generator folder, used instead of training one), ``refine_*``,
``choose``, ``natural_context`` and ``surrogate_detector``.

Threat models: white-box trains against the deployed detector's gradients and keeps the
best of ``candidates`` posts by its score; transfer does both on the attacker's
surrogate; score and label modes train against a surrogate the attacker trains on the
training users, then rank candidates by the deployed detector's scores (score mode) or
query labels in the surrogate's order within the budget (label mode).

Deviation (an addition to the paper): when the attacker has gradients (white-box, or its
surrogate in transfer mode), the chosen post is refined by up to ``refine_flips`` HotFlip
substitutions, each restricted to the ``refine_top_k`` words the generator itself ranks
most likely at that position for this user. The ``refine_starts`` candidates the detector
scores closest to the goal are refined side by side and the best result is kept.
A start stops once it is out of reach: when even ``refine_give_up`` times its best gain
of the last two flips, at every flip left, would not reach the goal
(:func:`advseq.token_search.out_of_reach`; 0 searches every start to the end).
``refine_flips=0`` gives the paper's attack.

Deviation (attack time): where the detector's own scores are known (white-box and score
modes), ``choose="natural"`` (what ``"auto"`` picks there) keeps, among the candidates
and refined posts that already reach the goal, the most natural one for the user — the
most fluent and closest in words to their own posts under the attacker's language model
(:class:`~attacks.petgen.naturalness.Naturalness`) — not the one deepest past the
threshold: success is the same, the text reads more like the user's. A refined post is
kept only where it reaches the goal, and for a user whom no post makes evade the most
natural candidate is posted rather than the closest — except before the last of K
posts, where the next post starts from this one's verdict: there the most natural of
the candidates within ``miss_within`` (0.02 by default, in probability) of the closest
one is kept (0 keeps the closest; a refined post still only where it reaches the goal:
refined posts that miss read worst). In transfer mode ``"auto"`` keeps
the candidate closest to the goal on the surrogate, since a post barely past the
surrogate's threshold transfers worse; given ``surrogate_margin=m`` it keeps the most
natural of those past the surrogate's threshold by ``m`` (the closest where none is);
``choose="goal"`` keeps the closest everywhere.
Training's best-of-k rounds (:meth:`attacks.petgen.trainer._AdversarialState.select_round`)
choose naturally in both modes, on a surrogate only among posts past its threshold by
``select_margin``.

``no_repeat_ngram=N`` (off by default) bars a sampled post from repeating any run of N
tokens, and refinement from flipping one in; ``max_repeats`` caps single words.

Two opt-in levers for writing on the target context, both off by default:
``context_boost=B`` adds ``B`` to the sampling logits of the context's topic words (its
words outside the platform's most frequent ones), and ``natural_context=True`` adds a
third rank to the natural choice — closeness of the post's mean word embedding to the
context's (for users with a context).

K posts (``AttackSpec.posts`` > 1): the generic sequential strategy
(:mod:`advseq.multipost`) is PETGEN's sequence. The generator writes the next post of a
user from their history, and for slot k the history holds the posts written before it
(:meth:`~advseq.attack.AttackSpec.next_task`): they are the most recent posts, which
the recency attention weighs most, and posts on the target context, which relevancy
weighs (the user's real last post keeps its flag), so each post is conditioned on the
ones before it as the paper conditions on a user's own. Each slot samples with its own
random numbers, skips candidates that are near copies of the written posts, and is
chosen and refined with the detector's verdict on the sequence so far; nothing cached
per user outlives a slot (token ids are cached by text, the naturalness judge holds no
user state). Sampling K posts in one pass and choosing among whole sequences would
choose with one verdict per sequence instead of one per post for the same queries, so
it is not offered. One trained generator serves every K: training does not depend on K.

What each of these measured on the benchmark data: docs/petgen.md.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from advseq.attack import Attack, AttackOutput, AttackSpec, AttackTask
from advseq.config import SEED, Bool, Choice, Float, Int, Text
from advseq.errors import ConfigError
from advseq.schema import Dataset
from advseq.threat import SURROGATE_DETECTOR, ThreatModel, surrogate_seed
from attacks.petgen.settings import DEFAULTS, PETGENSettings, check_names

if TYPE_CHECKING:
    from attacks.petgen.naturalness import Naturalness

#: The settings a saved generator is used with (given ``generator``, the attack's win).
SAMPLING = ("candidates", "temperature", "top_p", "max_repeats", "no_repeat_ngram", "context_boost")
#: The settings always in the trained-generator cache key; every other one joins it only
#: where it differs from its default, so generators cached with default settings (and by
#: code that had fewer settings) stay valid.
KEYED = ("candidates", "temperature", "top_p", "max_repeats", "adv_steps", "mle_epochs", "gan",
         "attack", "recency", "relevancy", "select", "rounds", "select_temperature",
         "select_margin", "w_attack", "w_gan", "w_mle", "lm", "seed", "device")


class PETGENAttack(Attack):
    """Personalised post generation trained against the detector (PETGEN)."""

    name = "petgen"
    paper = ("He, Ahamad, Kumar. PETGEN: Personalized Text Generation Attack on Deep Sequence "
             "Embedding-based Classification Models. KDD 2021")
    requires = frozenset()   # adapts: gradient -> trains on it; otherwise trains a surrogate
    #: warm-started from advseq's reference LM, which also ranks its candidates' fluency
    fluency_models = frozenset({"reference-lm"})
    default_recency = True
    param_rules = {**PETGENSettings.param_rules, "generator": Text(none=True),
                   "refine_flips": Int(0, 1000), "refine_top_k": Int(1, 100_000), "refine_starts": Int(1, 1000),
                   "refine_give_up": Float(0), "miss_within": Float(0, 1), "choose": Choice("auto", "natural", "goal"),
                   "natural_context": Bool(), "surrogate_margin": Float(0, 0.5, high_open=True, none=True),
                   "surrogate_detector": Text(), "seed": SEED}

    def __init__(self, *, generator: str | None = None, refine_flips: int = 10,
                 refine_top_k: int = 100, refine_starts: int = 8, refine_give_up: float = 2.0,
                 miss_within: float = 0.02, choose: str = "auto",
                 natural_context: bool = False, surrogate_margin: float | None = None,
                 surrogate_detector: str = SURROGATE_DETECTOR,
                 seed: int = 0, **settings: Any) -> None:
        own = [n for n in inspect.signature(PETGENAttack.__init__).parameters if n not in ("self", "settings")]
        check_names(settings, self.name, extra=tuple(own))
        self.generator = generator
        self.refine_flips = refine_flips
        self.refine_top_k = refine_top_k
        self.refine_starts = refine_starts
        self.refine_give_up = refine_give_up
        self.miss_within = miss_within
        self.choose = choose
        self.natural_context = natural_context
        self.surrogate_margin = surrogate_margin
        self.surrogate_detector = surrogate_detector
        self.seed = seed
        if settings.get("recency") is None:
            settings["recency"] = self.default_recency
        #: the generator's settings (all of PETGEN's; the seed is the attack's)
        self.settings = PETGENSettings(**{**settings, "seed": seed})
        self._train: Dataset | None = None          # set by prepare(): the reference LM's data
        self._natural: Naturalness | None = None

    def get_params(self) -> dict[str, Any]:
        """The attack's own parameters and every PETGEN setting."""
        return {**super().get_params(), **self.settings.get_params()}

    def _cache_params(self) -> dict[str, Any]:
        """The settings that name a trained generator in the cache."""
        params = self.settings.get_params()
        return {**{k: params[k] for k in KEYED},
                **{k: v for k, v in params.items() if k not in KEYED and v != DEFAULTS[k]}}

    def prepare(self, train: Dataset, threat: ThreatModel, spec: AttackSpec) -> None:
        from attacks.petgen.model import PETGEN

        s = self.settings
        self._ranker: ThreatModel | None = None
        self._train, self._natural = train, None
        trainer_threat = threat
        if not threat.has("gradient") and (s.attack or s.select):
            trainer_threat = self._ranker = self._surrogate(train)
        if self.generator is not None:
            self.model_ = PETGEN.load(self.generator, device=s.device,   # where this attack runs
                                      **{k: getattr(s, k) for k in SAMPLING})
            return
        # Generators are cached by everything they depend on, so a resumed run, another
        # deployed detector attacked through the same surrogate, or a later run reuse them.
        from advseq.runtime import advseq_home

        key = self.generator_key(train, spec, trainer_threat)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        state = advseq_home() / "cache" / "petgen" / digest
        if (state / "config.json").exists():
            self.model_ = PETGEN.load(state)
            return
        self.model_ = PETGEN(**s.get_params()).fit(train, trainer_threat, spec)
        tmp = state.with_name(f".{state.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model_.save(tmp)
        (tmp / "attack_key.json").write_text(json.dumps(key))
        shutil.rmtree(state, ignore_errors=True)
        os.replace(tmp, state)

    def generator_key(self, train: Dataset, spec: AttackSpec, threat: ThreatModel) -> dict[str, Any]:
        """What names a generator trained against ``threat`` in the cache. Training does
        not depend on K (the posts the attacker writes per user; each is written by the
        same generator), so the spec enters without it: one generator serves every K."""
        from attacks.petgen.trainer import TRAINING_VERSION

        return {"params": self._cache_params(), "spec": replace(spec, posts=1).to_dict(),
                "train": train.checksum(), "training_version": TRAINING_VERSION,
                "threat": threat.fingerprint}

    def _surrogate(self, train: Dataset) -> ThreatModel:
        """The attacker's own detector, trained on the users it may see (cached)."""
        from advseq import registry
        from advseq.detector import create_detector, load_detector
        from advseq.device import on_device
        from advseq.runtime import advseq_home

        seed, device = surrogate_seed(self.seed), self.settings.device
        where = "" if device == "cpu" else "-" + device.replace(":", "")   # a GPU's apart
        path = advseq_home() / "cache" / "surrogates" / \
            f"{train.checksum()[:16]}-{self.surrogate_detector}-{seed}{where}"
        if (path / "config.json").exists():
            det = load_detector(path, device=device)
        else:
            params = on_device(registry.detectors.get(self.surrogate_detector), {}, device)
            det = create_detector(self.surrogate_detector, seed=seed, **params).fit(train.users)
            det.save(path)
        return ThreatModel(det, det.capabilities, surrogate=True)

    def run(self, tasks: Sequence[AttackTask], threat: ThreatModel) -> list[AttackOutput]:
        if not hasattr(self, "model_"):
            raise ConfigError(f"{self.name}: call prepare() first (the evaluator does)")
        rngs = [self.np_rng(t, "sample") for t in tasks]
        natural = self._naturalness(threat)
        margin = (self.surrogate_margin or 0.0) if threat.surrogate else 0.0
        outputs, runners_up = self.model_.write(tasks, threat, rngs, ranker=self._ranker, natural=natural,
                                                margin=margin)
        if self.refine_flips and threat.has("gradient"):
            outputs = self._refine(tasks, outputs, runners_up, threat, natural=natural, margin=margin)
        if natural is not None:
            outputs = self._natural_misses(tasks, outputs, runners_up, threat, natural)
        return outputs

    def _natural_misses(self, tasks: Sequence[AttackTask], outputs: list[AttackOutput],
                        runners_up: Sequence[Sequence[tuple[str, float]]], threat: ThreatModel,
                        natural: Naturalness) -> list[AttackOutput]:
        """Where neither a candidate nor a refined post reaches the goal, the attack has
        failed whatever the user posts; the most natural candidate is then posted instead
        of the one that came closest: a post that fails anyway should at least read like the
        user's. Before the last of K posts the next post starts from this one's verdict, so
        the choice is among the candidates within ``miss_within`` (in probability) of the
        closest one. Every success stays as it was."""
        miss = [i for i, (t, o) in enumerate(zip(tasks, outputs, strict=True))
                if o.info.get("score") is not None and not threat.reaches(o.info["score"], t.target)]
        options = []
        for i in miss:
            opts = [(outputs[i].post, float(outputs[i].info["score"])), *runners_up[i]]
            if _more_to_come(tasks[i]):
                gap = abs(opts[0][1] - tasks[i].target) + self.miss_within
                opts = [o for o in opts if abs(o[1] - tasks[i].target) <= gap]
            options.append(opts)
        picks = natural.best([tasks[i] for i in miss], [[post for post, _ in o] for o in options])
        out = list(outputs)
        for i, opts, j in zip(miss, options, picks, strict=True):
            if j:
                post, score = opts[j]
                out[i] = AttackOutput(post, outputs[i].status, {**outputs[i].info, "score": round(score, 6),
                                                                "natural_miss": True})
        return out

    def _naturalness(self, threat: ThreatModel) -> Naturalness | None:
        """The judge of natural posts when ``choose`` asks for one (``auto``: where the
        scores are the deployed detector's own, or a surrogate's given ``surrogate_margin``),
        else None."""
        closest_on_surrogate = self.choose == "auto" and threat.surrogate and self.surrogate_margin is None
        if self.choose == "goal" or closest_on_surrogate or not threat.has("score"):
            return None
        if self._natural is None:
            if self._train is None:
                raise ConfigError(f"{self.name}: call prepare() first (the evaluator does)")
            from advseq.lm import reference_lm
            from attacks.petgen.naturalness import Naturalness

            m = self.model_
            self._natural = Naturalness(reference_lm(self._train, seed=m.seed, progress=False, **m.lm_params()),
                                        context=self.natural_context)
        return self._natural

    def _refine(self, tasks: Sequence[AttackTask], outputs: list[AttackOutput],
                runners_up: Sequence[Sequence[tuple[str, float]]], threat: ThreatModel, *,
                natural: Naturalness | None = None, margin: float = 0.0) -> list[AttackOutput]:
        """Gradient refinement of the chosen posts (white-box or on the surrogate): HotFlip
        substitutions, but only to words the generator itself finds plausible at that
        position for this user (its ``refine_top_k`` most likely), so the text stays text.
        The ``refine_starts`` candidates closest to the goal are refined side by side and
        the refined post closest to the goal is kept (given ``natural``: the most natural
        of those past the threshold by ``margin``, else the closest where it reaches the
        goal, and none when none does)."""
        import torch

        from advseq.token_search import encode_post, hotflip_search

        vocab = threat.vocab
        T = min(min(t.max_tokens for t in tasks), threat.max_post_tokens)
        # (output index, start post) for every user whose chosen post misses the goal
        starts = [(i, post) for i, (t, o) in enumerate(zip(tasks, outputs, strict=True))
                  if not threat.reaches(o.info.get("score", 1.0 - t.target), t.target)
                  for post in [o.post, *(c for c, _ in runners_up[i][: max(0, self.refine_starts - 1)])]]
        if not starts:
            return outputs
        sub_tasks = [tasks[i] for i, _ in starts]
        posts = [encode_post(post, vocab, T) for _, post in starts]
        plausible = self.model_.plausible_tokens(sub_tasks, [post for _, post in starts], self.refine_top_k)
        allowed = []
        for post, words in zip(posts, plausible, strict=True):
            mask = torch.zeros(len(post.ids), len(vocab), dtype=torch.bool)
            for t in range(min(len(post.ids), len(words))):
                ids = [vocab.stoi[w] for w in words[t] if w in vocab.stoi]
                if ids:
                    mask[t, ids] = True
            allowed.append(mask)
        refined = hotflip_search(sub_tasks, posts, threat, beam_width=2, candidates=10,
                                 max_flips=self.refine_flips, allowed=allowed, give_up=self.refine_give_up)
        results: dict[int, list[AttackOutput]] = {}
        for (i, _), r, post in zip(starts, refined, posts, strict=True):
            ids = encode_post(r.post, vocab, T).ids
            cap = self.settings.max_repeats
            if cap and _most_repeated_ids(ids) > max(cap, _most_repeated_ids(post.ids)):
                continue             # flips that pile up one word: not a post a user writes
            n = self.settings.no_repeat_ngram
            if n and _repeats_ngram(ids, n) and not _repeats_ngram(post.ids, n):
                continue             # nor ones that repeat a phrase the sampler would not
            results.setdefault(i, []).append(r)
        best = {i: min(rs, key=lambda r, i=i: abs(r.info["surrogate_prob"] - tasks[i].target))
                for i, rs in results.items()}
        if natural is not None:
            past = {i: [r for r in rs if threat.reaches(r.info["surrogate_prob"], tasks[i].target, margin)]
                    for i, rs in results.items()}
            users = [i for i in past if len(past[i]) > 1]
            picks = natural.best([tasks[i] for i in users], [[r.post for r in past[i]] for i in users])
            best.update({i: past[i][j] for i, j in zip(users, picks, strict=True)})
            # Refinement is there to reach the goal: where it does not, the sampled post
            # (fluent text) stays instead of a refined one that fails as well.
            best = {i: r for i, r in best.items() if threat.reaches(r.info["surrogate_prob"], tasks[i].target)}
        out = list(outputs)
        for i, r in best.items():
            out[i] = AttackOutput(r.post, r.status if r.status != "ok" else outputs[i].status,
                                  {**outputs[i].info, "refine_flips": r.info.get("flips", 0),
                                   "score": r.info.get("surrogate_prob")})
        return out


def _more_to_come(task: AttackTask) -> bool:
    """Whether the attacker writes more posts after this one for the user (K posts)."""
    return task.slot + 1 < task.posts


def _most_repeated_ids(ids: Sequence[int]) -> int:
    return max(Counter(ids).values(), default=0)


def _repeats_ngram(ids: Sequence[int], n: int) -> bool:
    """Whether some run of ``n`` tokens occurs twice in ``ids``."""
    grams = [tuple(ids[j:j + n]) for j in range(len(ids) - n + 1)]
    return len(set(grams)) < len(grams)


class MALCOMAttack(PETGENAttack):
    """PETGEN's generator without the recency term (MALCOM, as re-run by the PETGEN authors)."""

    name = "malcom"
    paper = ("Le, Wang, Lee. MALCOM: Generating Malicious Comments to Attack Neural Fake News "
             "Detection Models. ICDM 2020 (as re-run in PETGEN: no recency term)")
    default_recency = False
