"""PostLM: a small conditional GPT-2 over posts, its encoding, scoring and sampling.

:class:`PostLM` is a randomly initialised GPT-2 (``transformers``' ``GPT2LMHeadModel``,
2 layers × 128 dims by default) over advseq's word-level :class:`~advseq.text.Vocabulary`,
conditioned on a post's context by prefix::

    <bos> context tokens (≤ max_context_tokens) <sep> post tokens (≤ max_post_tokens) <eos>

The loss covers only the post tokens and ``<eos>``. Training lives in
:mod:`advseq.lm.training` (:meth:`PostLM.fit` calls it).

Sampling draws every row's randomness from its own generator (seeded by the call's seed
and the row's index), so a row's post does not depend on how many rows share the call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from advseq.config import DIM_MAX, SEED, Configurable, Device, Float, Int
from advseq.errors import ConfigError
from advseq.lm.masks import sdpa_mask
from advseq.text import SPECIALS, URL_TOKEN, Tokenizer, Vocabulary

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel

#: a saved PostLM's files and format tag (see the persistence section of PostLM)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
FORMAT = "advseq-postlm/1"

#: dropout of the GPT-2: none; training runs only a few epochs, and early stopping on the
#: held-out share guards against over-fitting (dropout slowed convergence per epoch)
DROPOUT = 0.0
#: with top_p < 1, the nucleus is taken among this many most likely tokens
SAMPLE_TOP_K = 128
#: how a sampled ``<url>`` token is written out: a URL that tokenizes back to ``<url>``
URL_TEXT = "http://example.com"


class PostLM(Configurable):
    """A GPT-2 language model of posts given their context.

    Hyper-parameters are stored verbatim (scikit-learn style); learned state is
    ``vocab_`` (the :class:`~advseq.text.Vocabulary`), ``model_`` (the Hugging Face
    ``GPT2LMHeadModel``, input and output embeddings tied) and ``fit_info_`` (epochs,
    best epoch, seconds, per-epoch losses in nats per token: ``train_loss`` is the
    sampled-softmax estimate when the vocabulary is large, ``valid_loss`` is exact).

    Training cost is dominated by the output layer (tokens × n_embd × vocabulary), so
    vocabularies larger than ``SAMPLED_HEAD + 2 * SAMPLED_TAIL`` (see
    :mod:`advseq.lm.training`) train on a sampled softmax; the learning rate warms up,
    then decays linearly over ``epochs``, so few epochs suffice.
    """

    param_rules = {
        "n_layer": Int(1, 64), "n_embd": Int(1, DIM_MAX), "n_head": Int(1, 1024),
        "max_context_tokens": Int(0, 4096), "max_post_tokens": Int(1, 4096), "min_freq": Int(1),
        "max_vocab": Int(len(SPECIALS) + 1), "epochs": Int(1, 100_000), "batch_size": Int(1, 1 << 20),
        "lr": Float(0, low_open=True), "valid_size": Float(0, 1, high_open=True),
        "patience": Int(1), "seed": SEED, "device": Device(),
    }

    def __init__(self, *, n_layer: int = 2, n_embd: int = 128, n_head: int = 4,
                 max_context_tokens: int = 32, max_post_tokens: int = 30, min_freq: int = 2,
                 max_vocab: int = 20000, epochs: int = 5, batch_size: int = 32, lr: float = 5e-3,
                 valid_size: float = 0.1, patience: int = 2, seed: int = 0,
                 device: str = "cpu") -> None:
        self.n_layer = n_layer
        self.n_embd = n_embd
        self.n_head = n_head
        self.max_context_tokens = max_context_tokens
        self.max_post_tokens = max_post_tokens
        self.min_freq = min_freq
        self.max_vocab = max_vocab
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.valid_size = valid_size
        self.patience = patience
        self.seed = seed
        self.device = device
        self.fit_info_: dict[str, Any] = {}
        if min(n_layer, n_embd, n_head, max_post_tokens, epochs, batch_size, patience) < 1:
            raise ConfigError("n_layer, n_embd, n_head, max_post_tokens, epochs, batch_size and "
                              "patience must be >= 1")
        if n_embd % n_head:
            raise ConfigError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        if max_context_tokens < 0:
            raise ConfigError("max_context_tokens must be >= 0")
        if not 0.0 <= valid_size < 1.0:
            raise ConfigError(f"valid_size must be in [0, 1), got {valid_size}")
        if lr <= 0:
            raise ConfigError(f"lr must be > 0, got {lr}")

    # ---- basics ------------------------------------------------------------------------
    @property
    def n_positions(self) -> int:
        """Longest sequence: ``<bos>`` + context + ``<sep>`` + post + ``<eos>``."""
        return self.max_context_tokens + self.max_post_tokens + 3

    @property
    def torch_device(self) -> torch.device:
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but torch sees no GPU; install a CUDA build "
                              "of torch (see README) or use device='cpu'")
        return torch.device(self.device)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ConfigError("PostLM is not trained: call fit() or PostLM.load()")

    def _build_model(self) -> GPT2LMHeadModel:
        from advseq.runtime import offline_env

        offline_env()
        from transformers import GPT2Config, GPT2LMHeadModel

        v = self.vocab_
        # exact GELU: one fused op on CPU where GPT-2's tanh approximation takes four
        config = GPT2Config(vocab_size=len(v), n_positions=self.n_positions, n_embd=self.n_embd,
                            n_layer=self.n_layer, n_head=self.n_head, activation_function="gelu",
                            attn_pdrop=DROPOUT, resid_pdrop=DROPOUT, embd_pdrop=DROPOUT,
                            bos_token_id=v.bos_id, eos_token_id=v.eos_id)
        return GPT2LMHeadModel(config).to(self.torch_device)

    # ---- encoding ----------------------------------------------------------------------
    def _context_ids(self, contexts: Sequence[str | None]) -> list[list[int]]:
        """Token ids of each context, cut to ``max_context_tokens`` (encoded once per text)."""
        seen: dict[str | None, list[int]] = {}
        out = []
        for c in contexts:
            if c not in seen:
                seen[c] = [] if not c or not self.max_context_tokens else \
                    self.vocab_.encode(c, max_len=self.max_context_tokens)
            out.append(seen[c])
        return out

    def _sequences(self, pairs: Sequence[tuple[str | None, str]]) -> tuple[list[list[int]], list[int]]:
        """Full id sequences ``<bos> ctx <sep> post <eos>`` and each one's prefix length
        (index of the first post token)."""
        ctx = self._context_ids([c for c, _ in pairs])
        seqs, starts = [], []
        for c, (_, post) in zip(ctx, pairs, strict=True):
            p = self.vocab_.encode(post, max_len=self.max_post_tokens + 1, eos=True)
            seqs.append([Vocabulary.bos_id, *c, Vocabulary.sep_id, *p])
            starts.append(len(c) + 2)
        return seqs, starts

    def build_inputs(self, contexts: Sequence[str | None],
                     posts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded input ids ``[N, L]`` for (context, post) pairs and the target mask
        ``[N, L]`` (True at post tokens and ``<eos>``: the positions the loss covers)."""
        self._check_fitted()
        if len(contexts) != len(posts):
            raise ConfigError(f"{len(contexts)} contexts for {len(posts)} posts")
        seqs, starts = self._sequences(list(zip(contexts, posts, strict=True)))
        return pad_right(seqs, starts)

    def prefix(self, contexts: Sequence[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prefix ids ``<bos> context <sep>`` ``[N, L]`` and their attention
        mask ``[N, L]`` (left padding keeps every row's next token in the last column)."""
        self._check_fitted()
        rows = [[Vocabulary.bos_id, *c, Vocabulary.sep_id] for c in self._context_ids(contexts)]
        L = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), L), Vocabulary.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), L), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, L - len(r):] = torch.tensor(r)
            mask[i, L - len(r):] = 1
        return ids, mask

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[..., E]`` (the GPT-2 ``wte``) of ids ``[...]``."""
        self._check_fitted()
        return self.model_.transformer.wte(ids.to(self.torch_device))

    # ---- training ----------------------------------------------------------------------
    def fit(self, pairs: Sequence[tuple[str | None, str]], *,
            progress: bool | None = None) -> PostLM:
        """Train on (context, post) pairs; a seeded ``valid_size`` share is held out for
        early stopping (``patience`` epochs) and the best epoch's weights are kept
        (see :func:`advseq.lm.training.train_post_lm`)."""
        from advseq.lm.training import train_post_lm

        return train_post_lm(self, pairs, progress=progress)

    def _target_hidden(self, ids: torch.Tensor,
                       target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states ``[n_targets, E]`` that predict the target tokens, and those
        tokens' ids ``[n_targets]``, flattened in row-major order."""
        hidden = self.model_.transformer(input_ids=ids, use_cache=False).last_hidden_state
        where = target[:, 1:]
        return hidden[:, :-1][where], ids[:, 1:][where]

    def _nll(self, ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """NLL in nats of every target token (full softmax), flattened in row-major order
        ``[n_targets]``. Only target positions go through the output layer (contexts need
        no logits)."""
        h, y = self._target_hidden(ids, target)
        return nn.functional.cross_entropy(self.model_.lm_head(h).float(), y, reduction="none")

    @torch.no_grad()
    def _score(self, seqs: list[list[int]], starts: list[int],
               batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Summed NLL and target count per sequence (batched by length, eval mode)."""
        self.model_.eval()
        device = self.torch_device
        nll = np.zeros(len(seqs))
        count = np.zeros(len(seqs), dtype=np.int64)
        order = np.argsort([len(s) for s in seqs], kind="stable")
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            ids, target = pad_right([seqs[i] for i in idx], [starts[i] for i in idx])
            tok = self._nll(ids.to(device), target.to(device)).double().cpu()
            per_row = target[:, 1:].sum(1)
            rows = torch.repeat_interleave(torch.arange(len(idx)), per_row)
            nll[idx] = torch.zeros(len(idx), dtype=torch.float64).index_add_(0, rows, tok).numpy()
            count[idx] = per_row.numpy()
        return nll, count

    # ---- scoring -----------------------------------------------------------------------
    def token_nll(self, posts: Sequence[str],
                  contexts: Sequence[str | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-post summed NLL in nats over the post's tokens (cut to ``max_post_tokens``)
        and ``<eos>``, and the number of those tokens; ``[N]`` each."""
        self._check_fitted()
        posts = list(posts)
        contexts = [None] * len(posts) if contexts is None else list(contexts)
        if len(contexts) != len(posts):
            raise ConfigError(f"{len(contexts)} contexts for {len(posts)} posts")
        if not posts:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        seqs, starts = self._sequences(list(zip(contexts, posts, strict=True)))
        return self._score(seqs, starts)

    def perplexity(self, posts: Sequence[str], contexts: Sequence[str | None] | None = None) -> float:
        """Corpus perplexity ``exp(sum NLL / sum tokens)`` of ``posts``."""
        nll, count = self.token_nll(posts, contexts)
        if not count.sum():
            raise ConfigError("perplexity of no posts is undefined")
        return float(math.exp(nll.sum() / count.sum()))

    # ---- sampling ----------------------------------------------------------------------
    def sample(self, contexts: Sequence[str | None], *, temperature: float = 1.0,
               top_p: float = 0.9, seed: int = 0, max_tokens: int | None = None) -> list[str]:
        """One post per context (nucleus sampling), batched. Row ``i`` draws its randomness
        from its own generator seeded by ``(seed, i)``. Posts are never empty (``<eos>`` is
        barred at the first step, special tokens always) and hold at most ``max_tokens``
        tokens (default and cap: ``max_post_tokens``)."""
        self._check_fitted()
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
        if max_tokens is not None and max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}")
        n_tok = min(max_tokens or self.max_post_tokens, self.max_post_tokens)
        contexts = list(contexts)
        if not contexts:
            return []
        uniforms = torch.from_numpy(np.stack(
            [np.random.default_rng([seed & (2**63 - 1), i]).random(n_tok) for i in range(len(contexts))]))
        out: list[str] = []
        for s in range(0, len(contexts), 512):
            ids, mask = self.prefix(contexts[s:s + 512])
            gen = self.generate_ids(self.embed(ids), mask.to(self.torch_device), uniforms[s:s + 512],
                                    temperature=temperature, top_p=top_p)
            out.extend(self.decode(row, n_tok) for row in gen.cpu().tolist())
        return out

    def decode(self, ids: Iterable[int], max_tokens: int | None = None) -> str:
        """Text of generated ids (up to ``<eos>``), detokenized; a ``<url>`` token becomes
        :data:`URL_TEXT`. Never empty: falls back to the most frequent word."""
        tokens = []
        for i in ids:
            if i == Vocabulary.eos_id:
                break
            if i >= len(SPECIALS):
                tok = self.vocab_.itos[i]
                tokens.append(URL_TEXT if tok == URL_TOKEN else tok)
        text = Tokenizer.detokenize(tokens)
        if max_tokens is not None:
            text = self.vocab_.tokenizer.truncate(text, max_tokens)
        if not text.strip() and len(self.vocab_) > len(SPECIALS):
            text = self.vocab_.itos[len(SPECIALS)]
        return text

    @torch.no_grad()
    def generate_ids(self, prefix_embeds: torch.Tensor, prefix_mask: torch.Tensor,
                     uniforms: torch.Tensor, *, temperature: float = 1.0,
                     top_p: float = 0.9, max_repeats: int | None = None,
                     no_repeat_ngram: int | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Sample continuations of left-padded prefixes given as embeddings (no gradients).

        ``prefix_embeds [B, L, E]`` (e.g. :meth:`embed` of :meth:`prefix` ids, or a
        generator's own conditioning vectors), ``prefix_mask [B, L]`` (1 = real),
        ``uniforms [B, T]`` in [0, 1): row ``b``'s random draw at step ``t`` (inverse-CDF
        sampling, so rows are independent of each other). ``max_repeats``: a token already
        written that many times in a row's post is barred from it (no "😂 😂 😂 ..." runs).
        ``no_repeat_ngram`` (n >= 2): no run of n tokens occurs twice in a post (a token
        that would complete an n-gram already written is barred). ``bias [B / r, V]`` is
        added to the logits at every step, after the temperature (e.g. words to favour):
        its row ``i`` to rows ``i * r ... i * r + r - 1`` (r samples per prefix, unrepeated).
        Returns ids ``[B, T]``: each row's tokens, then ``<eos>``, then ``<pad>``.
        """
        self._check_fitted()
        model = self.model_.eval()
        device = self.torch_device
        B, T = uniforms.shape
        uniforms = uniforms.to(device)
        mask = prefix_mask.to(device).long()
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        out = model.transformer(inputs_embeds=prefix_embeds.to(device), position_ids=pos, use_cache=True,
                                attention_mask=sdpa_mask(mask, mask.shape[1]))
        past, hidden = out.past_key_values, out.last_hidden_state[:, -1]
        next_pos = pos[:, -1:] + 1
        barred = torch.tensor([Vocabulary.pad_id, Vocabulary.unk_id, Vocabulary.bos_id,
                               Vocabulary.sep_id], device=device)
        first = torch.cat([barred, torch.tensor([Vocabulary.eos_id], device=device)])
        if bias is not None:
            if B % len(bias):
                raise ValueError(f"bias has {len(bias)} rows for {B} samples")
            bias = bias.to(device)[:, None]                     # [B / r, 1, V]
        tokens = torch.full((B, T), Vocabulary.pad_id, dtype=torch.long, device=device)
        rows = torch.arange(B, device=device)     # the rows still writing; finished ones leave
        done = torch.zeros(B, dtype=torch.bool, device=device)
        for t in range(T):
            logits = model.lm_head(hidden).float()
            if temperature != 1.0:
                logits.div_(temperature)
            if bias is not None:
                logits.add_(bias[rows // (B // len(bias)), 0])
            logits.index_fill_(1, first if t == 0 else barred, -math.inf)
            prev = tokens[rows, :t]
            if max_repeats and t >= max_repeats:
                full = (prev[:, :, None] == prev[:, None, :]).sum(-1) >= max_repeats   # [b, t]
                r, cols = full.nonzero(as_tuple=True)
                logits[r, prev[r, cols]] = -math.inf
            n = no_repeat_ngram
            if n and t >= n:
                heads = prev.unfold(1, n - 1, 1)                  # [b, t - n + 2, n - 1]
                hit = (heads[:, :-1] == prev[:, t - n + 1:].unsqueeze(1)).all(-1)   # [b, t - n + 1]
                r, starts = hit.nonzero(as_tuple=True)
                logits[r, prev[r, starts + n - 1]] = -math.inf
            tok = _nucleus(logits, uniforms[rows, t], top_p).masked_fill(done, Vocabulary.pad_id)
            tokens[rows, t] = tok
            done |= tok == Vocabulary.eos_id
            if bool(done.all()) or t == T - 1:
                break
            if int(done.sum()) * 8 >= len(rows):    # drop the finished rows (their KV cache too)
                keep = (~done).nonzero().squeeze(1)
                rows, tok, mask, next_pos = rows[keep], tok[keep], mask[keep], next_pos[keep]
                past.batch_select_indices(keep)
                done = done[keep]
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], 1)
            out = model.transformer(input_ids=tok[:, None], attention_mask=sdpa_mask(mask, 1),
                                    position_ids=next_pos,
                                    past_key_values=past, use_cache=True)
            past, hidden = out.past_key_values, out.last_hidden_state[:, -1]
            next_pos = next_pos + 1
        return tokens

    # ---- persistence -------------------------------------------------------------------
    # The one place that writes and reads a PostLM's folder (CONFIG_FILE, WEIGHTS_FILE,
    # VOCAB_FILE, FORMAT above); reference_lm's cache stores what save writes.
    def save(self, path: str | Path) -> Path:
        """Write folder ``path``: ``config.json``, ``model.safetensors``, ``vocab.json``."""
        from advseq.storage import save_model_folder

        self._check_fitted()
        # a module, so the tied input/output embedding is stored once
        return save_model_folder(path, FORMAT, {"params": self.get_params(),
                                                "vocab_size": len(self.vocab_),
                                                "fit_info": self.fit_info_},
                                 weights=self.model_, weights_file=WEIGHTS_FILE,
                                 vocab=self.vocab_, vocab_file=VOCAB_FILE)

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> PostLM:
        """A PostLM saved by :meth:`save` (``device`` overrides the saved one)."""
        from advseq.storage import (
            construct,
            load_safetensors,
            read_model_config,
            read_vocabulary,
            require_file,
        )

        path = Path(path)
        config = read_model_config(path, FORMAT, "PostLM", required=("params",))
        require_file(path / WEIGHTS_FILE)
        params = dict(config["params"])
        if device is not None:
            params["device"] = device
        lm = construct(cls, params, path)
        lm.vocab_ = read_vocabulary(path / VOCAB_FILE)
        lm.fit_info_ = config.get("fit_info", {})
        with torch.random.fork_rng(devices=[]):
            lm.model_ = lm._build_model()
        load_safetensors(lm.model_, path / WEIGHTS_FILE, what="this PostLM",
                         device=str(lm.torch_device))
        lm.model_.eval()
        return lm



def pad_right(seqs: Sequence[Sequence[int]], starts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids ``[N, L]`` and target mask ``[N, L]`` (True from ``starts[i]`` to
    the end of row ``i``)."""
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), Vocabulary.pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    ar = torch.arange(L)
    lengths = torch.tensor([len(s) for s in seqs])
    target = (ar[None, :] >= torch.tensor(list(starts))[:, None]) & (ar[None, :] < lengths[:, None])
    return ids, target



def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index ``[B]`` drawn from non-negative ``weights [B, K]`` with uniforms ``u [B]``:
    the first index whose cumulative weight exceeds ``u * total`` (never a zero weight)."""
    cdf = weights.cumsum(-1)
    total = cdf[:, -1:]
    r = torch.minimum(u.to(cdf.dtype).unsqueeze(1) * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, r.contiguous(), right=True).squeeze(1)


def _nucleus(logits: torch.Tensor, u: torch.Tensor, top_p: float) -> torch.Tensor:
    """Top-p sampling by inverse CDF: ``logits [B, V]``, one uniform per row ``u [B]``.

    With ``top_p < 1`` the nucleus is taken among the :data:`SAMPLE_TOP_K` most likely
    tokens (as ``top_k`` + ``top_p`` in Hugging Face ``generate``): sorting the whole
    vocabulary at every step would cost more than the model, and a small model's flat
    tail holds mostly noise. ``top_p = 1`` samples the full distribution."""
    if top_p >= 1.0:
        return _inverse_cdf(torch.softmax(logits, -1), u)
    top, idx = logits.topk(min(logits.shape[1], SAMPLE_TOP_K), dim=-1)
    sp = (top - torch.logsumexp(logits, -1, keepdim=True)).exp()  # probabilities, sorted
    sp = sp * ((sp.cumsum(-1) - sp) < top_p)  # smallest set reaching top_p; the top token always
    return idx.gather(1, _inverse_cdf(sp, u).unsqueeze(1)).squeeze(1)

