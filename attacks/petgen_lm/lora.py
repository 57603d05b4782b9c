"""A small LoRA adapter (Hu et al., "LoRA: Low-Rank Adaptation of Large Language
Models", ICLR 2022) for the linear projections of a Llama-style causal LM.

Each adapted ``nn.Linear`` ``W`` becomes ``W x + (alpha / r) B A dropout(x)`` with
``A [r, in]`` (Kaiming-uniform, seeded) and ``B [out, r]`` (zeros): the adapted model
starts exactly equal to the base one, and only ``A`` and ``B`` train. The sum is
computed in the forward pass (never merged into ``W``), so the base weights stay those
of the loaded model and the adapter can be switched off (:func:`adapters_enabled`) to
ask the base model for its opinion.

Written here rather than taken from ``peft`` so that advseq has no extra dependency and
the adapter is saved in advseq's own format: the ``A``/``B`` tensors as safetensors and
the settings as JSON (:func:`save_adapter`, :func:`load_adapter`; never a pickle).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advseq.errors import ConfigError
from advseq.storage import load_safetensors_arrays, read_model_config, save_model_folder

FORMAT = "advseq-petgen-lm-adapter/1"
WEIGHTS_FILE = "adapter.safetensors"
#: the projections each choice of ``targets`` adapts, in a Llama decoder layer
TARGETS = {
    "qv": ("q_proj", "v_proj"),
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "all": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (see the module doc)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, *,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        dev = base.weight.device
        a = torch.empty(r, base.in_features)
        # nn.Linear's own initialisation of A (as in the LoRA paper's code), seeded
        bound = 1.0 / math.sqrt(base.in_features)
        a.uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a.to(dev))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=dev))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if not self.enabled:
            return y
        h = nn.functional.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A)
        return y + (nn.functional.linear(h, self.lora_B) * self.scaling).to(y.dtype)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a Llama-style ``*ForCausalLM`` (``model.model.layers``)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(f"{type(model).__name__}: no decoder layers (model.model.layers) to adapt")
    return layers


def apply_lora(model: nn.Module, *, r: int, alpha: float, dropout: float = 0.0,
               targets: str = "attention", layers: int | None = None,
               seed: int = 0) -> dict[str, LoRALinear]:
    """Freeze every weight of ``model`` and wrap the ``targets`` projections (a key of
    :data:`TARGETS`) of its last ``layers`` decoder layers (None: all) in
    :class:`LoRALinear`; returns the wrappers by their module name (the model is changed
    in place: give it a copy of its own). ``A`` is drawn from ``seed``, layer by layer."""
    if targets not in TARGETS:
        raise ConfigError(f"LoRA targets must be one of {', '.join(TARGETS)}, got {targets!r}")
    for p in model.parameters():
        p.requires_grad_(False)
    stack = decoder_layers(model)
    first = 0 if layers is None else max(0, len(stack) - layers)
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, LoRALinear] = {}
    for i in range(first, len(stack)):
        for parent_name, parent in stack[i].named_modules():
            for child_name, child in list(parent.named_children()):
                if child_name in TARGETS[targets] and isinstance(child, nn.Linear):
                    wrapped = LoRALinear(child, r, alpha, dropout, generator=gen)
                    wrapped.train(child.training)        # an eval-mode model: no dropout
                    setattr(parent, child_name, wrapped)
                    full = ".".join(x for x in (f"layers.{i}", parent_name, child_name) if x)
                    out[full] = wrapped
    if not out:
        raise ConfigError(f"no {targets!r} projections found to adapt in {type(model).__name__}")
    return out


def adapter_parameters(modules: Mapping[str, LoRALinear]) -> list[nn.Parameter]:
    """The trainable tensors, in a fixed order (A then B of each module, by name)."""
    return [p for name in sorted(modules) for p in (modules[name].lora_A, modules[name].lora_B)]


@contextlib.contextmanager
def adapters_enabled(modules: Mapping[str, LoRALinear], enabled: bool) -> Iterator[None]:
    """Inside the block the adapters are on (``enabled``) or off (the base model)."""
    before = {name: m.enabled for name, m in modules.items()}
    for m in modules.values():
        m.enabled = enabled
    try:
        yield
    finally:
        for name, m in modules.items():
            m.enabled = before[name]


def adapter_tensors(modules: Mapping[str, LoRALinear]) -> dict[str, torch.Tensor]:
    """``{"<module>.lora_A": A, "<module>.lora_B": B}`` on the CPU, contiguous."""
    out = {}
    for name in sorted(modules):
        m = modules[name]
        out[f"{name}.lora_A"] = m.lora_A.detach().cpu().contiguous()
        out[f"{name}.lora_B"] = m.lora_B.detach().cpu().contiguous()
    return out


def save_adapter(path: str | Path, modules: Mapping[str, LoRALinear], fields: Mapping[str, Any]) -> Path:
    """Save the adapter to folder ``path``: ``adapter.safetensors`` and ``config.json``
    (format tag, ``fields``: the settings and what the adapter was trained on)."""
    return save_model_folder(path, FORMAT, {**fields, "modules": sorted(modules)},
                             weights=adapter_tensors(modules), weights_file=WEIGHTS_FILE)


def read_adapter_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a saved adapter (a :class:`ConfigError` naming the folder
    when it is not one)."""
    return read_model_config(path, FORMAT, "petgen-lm adapter", required=("modules", "lora"),
                             types={"modules": list, "lora": dict})


def load_adapter(path: str | Path, modules: Mapping[str, LoRALinear]) -> None:
    """Load the tensors saved at ``path`` into ``modules`` (built with the saved
    settings); a :class:`ConfigError` when a module or a shape does not match."""
    path = Path(path)
    names = read_adapter_config(path)["modules"]
    if sorted(names) != sorted(modules):
        raise ConfigError(f"{path}: the saved adapter does not adapt the same projections "
                          f"({len(names)} saved, {len(modules)} built)")
    shapes = {}
    for name, m in modules.items():
        shapes[f"{name}.lora_A"] = lambda s, want=tuple(m.lora_A.shape): tuple(s) == want
        shapes[f"{name}.lora_B"] = lambda s, want=tuple(m.lora_B.shape): tuple(s) == want
    arrays = load_safetensors_arrays(path / WEIGHTS_FILE, shapes)
    with torch.no_grad():
        for name, m in modules.items():
            m.lora_A.copy_(torch.from_numpy(arrays[f"{name}.lora_A"]))
            m.lora_B.copy_(torch.from_numpy(arrays[f"{name}.lora_B"]))


def n_parameters(params: Sequence[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)
