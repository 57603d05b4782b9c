"""Configurable components: scikit-learn style hyper-parameters read back from the
constructor, so any detector or attack serialises to a config for free, and checked
against declared rules when they enter.

A class declares what each hyper-parameter accepts in ``param_rules`` (rules of its bases
apply too)::

    class MyDetector(Detector):
        param_rules = {"hidden": Int(1, DIM_MAX), "dropout": Float(0, 1, high_open=True)}

Every constructor of a :class:`Configurable` subclass checks the arguments it is given
against those rules before its body runs, so a bad value is refused with one line naming
the key (:class:`ParamError`) instead of failing deep inside training. The same rules
check run configs (:func:`check_params`) and model folders.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from advseq.errors import ConfigError

#: default upper bound of integer settings (beyond it a value is a typo, not a setting)
INT_MAX = 2**31 - 1
#: upper bound of layer widths and embedding sizes
DIM_MAX = 1 << 16
#: seeds every generator advseq uses (numpy, torch, random) accepts
SEED_MAX = 2**32 - 1


class ParamError(ConfigError):
    """A hyper-parameter value that breaks its rule: ``key`` names it, ``problem`` says why."""

    def __init__(self, key: str, problem: str, owner: str | None = None) -> None:
        self.key = key
        self.problem = problem
        self.owner = owner
        super().__init__(f"{owner}: {key}: {problem}" if owner else f"{key}: {problem}")


def show(value: Any, limit: int = 60) -> str:
    """A short printable form of a user-supplied value (huge integers by their size)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        digits = int(math.log10(abs(value)))
        return f"an integer of {digits if 10**digits > abs(value) else digits + 1} digits"
    try:
        text = repr(value)
    except ValueError:        # an integer too long for str() inside a container
        return "a value too large to print"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {_num(low)}"
    if high is not None:
        return f" {'<' if high_open else '<='} {_num(high)}"
    return ""


class Rule:
    """What one setting accepts; :meth:`problem` says what is wrong with a value, or None."""

    #: None is accepted too (the setting's "off" / "automatic" value)
    none: bool = False

    def problem(self, value: Any) -> str | None:
        if value is None and self.none:
            return None
        return self._problem(value)

    def _problem(self, value: Any) -> str | None:
        raise NotImplementedError

    def _want(self, what: str, value: Any) -> str:
        return f"must be {what}{' or null' if self.none else ''}, got {show(value)}"


class Int(Rule):
    """An integer (never a bool) in ``[low, high]``."""

    def __init__(self, low: int | None = None, high: int | None = INT_MAX, *, none: bool = False) -> None:
        self.low, self.high, self.none = low, high, none

    def _problem(self, value: Any) -> str | None:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) \
            and (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
        return None if ok else self._want("an integer" + _bounds(self.low, self.high, False, False), value)


class Float(Rule):
    """A finite number (an integer is fine unless ``ints`` is false, a bool never is)
    between ``low`` and ``high``."""

    def __init__(self, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False, none: bool = False, ints: bool = True) -> None:
        self.low, self.high, self.low_open, self.high_open, self.none = low, high, low_open, high_open, none
        self.ints = ints

    def _problem(self, value: Any) -> str | None:
        kind = numbers.Real if self.ints else float
        ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        bounds = _bounds(self.low, self.high, self.low_open, self.high_open)
        return None if ok else self._want(f"a finite number{bounds}", value)


class Bool(Rule):
    """``true`` or ``false``."""

    def __init__(self, *, none: bool = False) -> None:
        self.none = none

    def _problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else self._want("true or false", value)


class Choice(Rule):
    """One of a few values (``None`` among them where it is allowed)."""

    def __init__(self, *options: Any) -> None:
        self.options = options

    def _problem(self, value: Any) -> str | None:
        if any(value == o and type(value) is type(o) for o in self.options):
            return None
        return f"must be one of {', '.join(map(show, self.options))}, got {show(value)}"


class Text(Rule):
    """A string, non-empty unless ``empty``."""

    def __init__(self, *, empty: bool = False, none: bool = False, limit: int = 4096) -> None:
        self.empty, self.none, self.limit = empty, none, limit

    def _problem(self, value: Any) -> str | None:
        if not isinstance(value, str) or (not value and not self.empty):
            return self._want("a string" if self.empty else "a non-empty string", value)
        return None if len(value) <= self.limit else f"must be at most {self.limit} characters long"


class Items(Rule):
    """A list (a tuple from Python) of ``min_len`` or more values, each passing ``item``."""

    def __init__(self, item: Rule, *, min_len: int = 1, max_len: int = 1000, none: bool = False) -> None:
        self.item, self.min_len, self.max_len, self.none = item, min_len, max_len, none

    def _problem(self, value: Any) -> str | None:
        if not isinstance(value, list | tuple) or not self.min_len <= len(value) <= self.max_len:
            return self._want(f"a list of {self.min_len} to {self.max_len} values", value)
        for i, v in enumerate(value):
            bad = self.item.problem(v)
            if bad:
                return f"item {i}: {bad}"
        return None


class Table(Rule):
    """A mapping of string keys (a TOML table, a JSON object)."""

    def __init__(self, *, none: bool = False) -> None:
        self.none = none

    def _problem(self, value: Any) -> str | None:
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            return None
        return self._want("a table of key = value settings", value)


class Device(Rule):
    """A torch device this machine offers: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``
    (checked by :func:`advseq.device.device_problem`). ``available=False``: the name only,
    for settings read on a machine other than the one that runs them; ``auto=True``: also
    ``auto``, for settings resolved before use (a run config's ``device`` keys)."""

    def __init__(self, *, available: bool = True, auto: bool = False) -> None:
        self.available, self.auto = available, auto

    def _problem(self, value: Any) -> str | None:
        from advseq.device import device_problem

        return device_problem(value, available=self.available, auto=self.auto)


class AnyOf(Rule):
    """A value that passes one of ``rules`` (e.g. a count or a share)."""

    def __init__(self, *rules: Rule, what: str) -> None:
        self.rules, self.what = rules, what

    def _problem(self, value: Any) -> str | None:
        if any(r.problem(value) is None for r in self.rules):
            return None
        return f"must be {self.what}, got {show(value)}"


#: the rule of every ``seed`` setting
SEED = Int(0, SEED_MAX)


@functools.cache
def rules_of(cls: type) -> dict[str, Rule]:
    """The rules of ``cls`` and its bases (a subclass's rule for a key wins)."""
    rules: dict[str, Rule] = {}
    for klass in reversed(cls.__mro__):
        rules.update(klass.__dict__.get("param_rules", {}))
    return rules


def owner_name(cls: type) -> str:
    return str(getattr(cls, "name", "") or cls.__name__)


def check_params(cls: type, params: Mapping[str, Any], *, owner: str | None = None) -> None:
    """Refuse the first value of ``params`` that breaks a rule of ``cls`` (a :class:`ParamError`)."""
    rules = rules_of(cls)
    for key, value in params.items():
        rule = rules.get(key)
        bad = rule.problem(value) if rule is not None else None
        if bad:
            raise ParamError(key, bad, owner)


def _checking(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` preceded by a check of the arguments it is given (keyword arguments it
    forwards with ``**kwargs`` included) against the rules of the instance's class."""
    sig = inspect.signature(init)
    var_kw = next((p.name for p in sig.parameters.values() if p.kind is p.VAR_KEYWORD), None)

    @functools.wraps(init)
    def checked_init(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            given = dict(sig.bind(self, *args, **kwargs).arguments)
        except TypeError:
            return init(self, *args, **kwargs)    # raises the usual "unexpected argument" error
        given.pop(next(iter(sig.parameters)), None)
        given.update(given.pop(var_kw, None) or {})
        check_params(type(self), given, owner=owner_name(type(self)))
        return init(self, *args, **kwargs)

    checked_init._checks_params = True  # type: ignore[attr-defined]
    return checked_init


class Configurable:
    """``get_params()`` returns the constructor arguments of the class and its bases,
    read back from attributes of the same name; ``cls(**get_params())`` rebuilds it.
    Constructor arguments are checked against ``param_rules`` (see the module docstring)."""

    #: what each hyper-parameter accepts (merged with the rules of the bases)
    param_rules: ClassVar[Mapping[str, Rule]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_checks_params", False):
            cls.__init__ = _checking(init)  # type: ignore[method-assign]

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in param_names(type(self))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"



@functools.cache
def param_names(cls: type) -> tuple[str, ...]:
    """The hyper-parameters of ``cls``: the named constructor arguments of it and its bases."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) \
                    and p.name not in names:
                names.append(p.name)
    return tuple(names)


def build(cls: Callable[..., Any], params: Mapping[str, Any], owner: str) -> Any:
    """``cls(**params)``; a :class:`ParamError` naming the key when a value breaks its rule,
    a setting is unknown or given twice (``owner`` names the component in messages)."""
    try:
        return cls(**params)
    except TypeError as err:
        text = str(err)
        unknown = re.search(r"unexpected keyword argument '([^']*)'", text)
        if unknown and isinstance(cls, type):
            known = ", ".join(param_names(cls)) or "none"
            raise ParamError(unknown.group(1), f"unknown setting ({owner} takes {known})", owner) from None
        twice = re.search(r"multiple values for keyword argument '([^']*)'", text)
        if twice:
            raise ParamError(twice.group(1), "is set by advseq itself; leave it out", owner) from None
        raise ConfigError(f"bad parameters for {owner}: {text}") from None
