"""Attention masks for the small GPT-2 decoders, built once per forward call.

transformers (4.57) turns a 2D padding mask into the 4D mask of its sdpa path on every
forward call through ``torch.vmap`` over a mask function; for a 2-layer, 128-wide model that
costs about as much as the layers themselves, and decoding calls the model once per token.
:func:`sdpa_mask` builds the same boolean mask with two comparisons; transformers uses a 4D
mask it is given as it is.
"""

from __future__ import annotations

import torch


def sdpa_mask(mask: torch.Tensor, q_len: int) -> torch.Tensor | None:
    """The boolean ``[B, 1, q_len, kv]`` mask (True = attend) for the last ``q_len`` of
    ``kv`` positions given a 2D padding mask ``[B, kv]`` (1 = a real token): a query
    attends to the real keys at or before its own position, as transformers' sdpa mask
    (without the fix for torch < 2.5). None where nothing is padded, so that transformers
    takes its own path there (sdpa's ``is_causal``) and the numbers stay its own."""
    real = mask.bool()
    if bool(real.all()):
        return None
    kv = real.shape[1]
    keys = torch.arange(kv, device=real.device)
    queries = torch.arange(kv - q_len, kv, device=real.device)
    causal = keys[None, :] <= queries[:, None]                      # [q_len, kv]
    return causal[None, None] & real[:, None, None, :]
