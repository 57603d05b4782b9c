"""PETGEN (He, Ahamad, Kumar, KDD 2021) and MALCOM as an advseq attack plugin.

* :mod:`~attacks.petgen.attack` — the ``petgen`` and ``malcom`` attacks;
* :mod:`~attacks.petgen.settings` — every generator setting (no torch);
* :mod:`~attacks.petgen.model` — the generator model: writing posts, saving, loading;
* :mod:`~attacks.petgen.trainer` — MLE pre-training and adversarial fine-tuning;
* :mod:`~attacks.petgen.generator`, :mod:`~attacks.petgen.discriminator`,
  :mod:`~attacks.petgen.losses` — the networks and the training terms;
* :mod:`~attacks.petgen.naturalness` — choosing the most natural candidate;
* :mod:`~attacks.petgen.cli` — ``advseq petgen train`` (entry point group ``advseq.cli``).

Design notes and measured behaviour: docs/petgen.md. The names below are imported on
first use, so that listing the plugins or ``advseq --help`` does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {"PETGENAttack": "attack", "MALCOMAttack": "attack", "PETGEN": "model",
            "PETGENSettings": "settings"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
