"""Configurable components: scikit-learn style hyper-parameters read back from the
constructor, so any detector or attack serialises to a config for free."""

from __future__ import annotations

import inspect
from typing import Any


class Configurable:
    """``get_params()`` returns the constructor arguments of the class and its bases,
    read back from attributes of the same name; ``cls(**get_params())`` rebuilds it."""

    def get_params(self) -> dict[str, Any]:
        names: list[str] = []
        for klass in type(self).__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) \
                        and p.name not in names:
                    names.append(p.name)
        return {k: getattr(self, k) for k in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
