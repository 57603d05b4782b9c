"""``petgen-lm``: PETGEN's conditioning and objectives on a pretrained LM (SmolLM2-135M-
Instruct, offline) with a LoRA adapter.

* :mod:`~attacks.petgen_lm.attack` — the attack: settings, the adapter's cache, the prompt;
* :mod:`~attacks.petgen_lm.train` — MLE and the best-of-k selection rounds;
* :mod:`~attacks.petgen_lm.lora` — the LoRA adapter, its saving and loading.

Design notes, settings and cost: docs/llm-attack.md. Names are imported on first use, so
that listing the plugins does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {"PETGENLMAttack": "attack"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
