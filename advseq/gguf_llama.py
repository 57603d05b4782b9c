"""A llama-architecture GGUF file (the packaged SmolLM2) as a transformers model and fast
tokenizer, read in one pass.

transformers can load a GGUF itself (``from_pretrained(..., gguf_file=...)``), but it
parses the file's metadata three times (tokenizer, config, weights) and rebuilds gguf's
tensor-name table once per module of the model, which costs far more than dequantizing
the tensors (bench/results/profile-demo.md). This reader parses once and builds the name
table once, with transformers' own pieces where the result must be the same: its key renames
(``GGUF_TO_TRANSFORMERS_MAPPING``), its tokenizer converter and config classes, and gguf's
dequantization and name map. The llama rotary permutation of the query and key weights is
undone as llama.cpp's converter applied it. ``tests/test_judge.py`` checks the result
against transformers' own loader, tensor for tensor and token for token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_ARCHITECTURE = "llama"


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones (transformers' parser gives ``int``, ``float``, ``bool``
    and ``str``; a config must serialise as JSON)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def read_llama_gguf(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Any]:
    """(config, tokenizer, tokenizer_config, reader) of a llama GGUF, the dicts named and
    renamed as transformers' GGUF loader names them."""
    from gguf import GGUFReader
    from transformers.modeling_gguf_pytorch_utils import GGUF_TO_TRANSFORMERS_MAPPING

    reader = GGUFReader(str(path))
    arch = reader.fields["general.architecture"].contents()
    if arch != _ARCHITECTURE:
        raise ValueError(f"{path}: architecture {arch!r}, expected {_ARCHITECTURE!r}")
    parsed: dict[str, dict[str, Any]] = {k: {} for k in GGUF_TO_TRANSFORMERS_MAPPING}
    parsed["config"]["tie_word_embeddings"] = all(t.name != "output.weight" for t in reader.tensors)
    for key, field in reader.fields.items():
        prefix, _, rest = key.partition(".")
        for param, renames in GGUF_TO_TRANSFORMERS_MAPPING.items():
            new = renames.get(prefix, {}).get(rest, -1) if prefix in renames else -1
            if new == -1 or new is None:
                continue
            parsed[param][new] = _plain(field.contents())
    if "vocab_size" not in parsed["config"] and "tokens" in parsed["tokenizer"]:
        parsed["config"]["vocab_size"] = len(parsed["tokenizer"]["tokens"])
    return parsed["config"], parsed["tokenizer"], parsed["tokenizer_config"], reader


def _unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's rotary interleave of a query/key projection (``n_head`` heads of
    the projection's output rows)."""
    dim = weights.shape[0] // n_head // 2
    return weights.reshape(n_head, dim, 2, *weights.shape[1:]).swapaxes(2, 1).reshape(weights.shape)


def load_llama_gguf(path: Path) -> tuple[Any, Any]:
    """(fast tokenizer, causal LM in float32, eval mode) of the llama GGUF at ``path``."""
    import torch
    from gguf import MODEL_ARCH, dequantize, get_tensor_name_map
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaTokenizerFast
    from transformers.integrations.ggml import convert_gguf_tokenizer

    config_dict, tok_dict, tok_config, reader = read_llama_gguf(path)
    fast, extra = convert_gguf_tokenizer(config_dict["model_type"], tok_dict)
    tokenizer = LlamaTokenizerFast(tokenizer_object=fast, **tok_config, **extra)

    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config)   # float32; every weight is overwritten
    names = get_tensor_name_map(MODEL_ARCH.LLAMA, config.num_hidden_layers)
    to_hf: dict[str, str] = {}
    for hf_name in model.state_dict():
        stem, _, suffix = hf_name.rpartition(".")
        gguf_name = names.get_name(stem)
        if gguf_name is not None:
            to_hf.setdefault(f"{gguf_name}.{suffix}", hf_name)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        hf_name = to_hf.get(tensor.name)
        if hf_name is None:
            continue
        weights = dequantize(tensor.data, tensor.tensor_type)
        if ".attn_q." in tensor.name:
            weights = _unpermute(weights, heads)
        elif ".attn_k." in tensor.name:
            weights = _unpermute(weights, kv_heads)
        state[hf_name] = torch.from_numpy(np.array(weights, dtype=np.float32))
    missing = set(model.state_dict()) - set(state)
    if config.tie_word_embeddings:
        missing.discard("lm_head.weight")
    if missing:
        raise ValueError(f"{path}: no tensor for {sorted(missing)[:3]}")
    model.load_state_dict(state, strict=False)
    return tokenizer, model.eval()
