"""Generic validation of the config dataclasses: a field's help and constraints (``spec``), a value
coerced to its declared type, bounds and choices checked, and a dataclass built from a mapping with
every unknown key, wrong type and out-of-range value a one-line ConfigError naming the dotted key.
Nothing here knows the run config's sections or the registries (``initlab.config.schema`` does)."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import field
from typing import Any

from initlab.errors import ConfigError


def _bound(x: float) -> str:
    """A range bound as written: an integral bound exactly (4294967295, not 4.29497e+09)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def spec(
    default: Any = dataclasses.MISSING,
    help: str | Callable[[], str] = "",
    *,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    choices: Callable[[], Iterable[str]] | Iterable[str] | None = None,
    factory: Callable[[], Any] | None = None,
    omit_default: bool = False,
):
    """A dataclass field with its help text and constraints, read by the validator. ``help`` may be
    a function (a text listing registry facts, built when it is read); ``omit_default``: the field is
    left out of the config's plain data (config.yaml) at its default (a field added after run
    folders were written, whose files must keep their bytes)."""
    meta = {"help": help, "ge": ge, "le": le, "gt": gt, "lt": lt, "choices": choices, "omit_default": omit_default}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def field_help(f: dataclasses.Field) -> str:
    """A field's help text (built now where it is generated from the registries)."""
    text = f.metadata.get("help", "")
    return text() if callable(text) else text


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp``, or a ConfigError. ints are accepted where floats are wanted."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return coerce(value, args[0], key)
        for a in args:  # e.g. float | str: a number, else a word
            try:
                return coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not a {' or a '.join(a.__name__ for a in args)}")
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: {value!r} is not a mapping (write it as {{name: value, ...}})")
        return {str(k): v for k, v in value.items()}  # entries are checked by the registry entry
    if origin is tuple:  # tuple[str, ...]: a YAML list, or one comma-separated string (--set)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: {value!r} is not a list (write it as [a, b, ...])")
        items = tuple(coerce(v, typing.get_args(tp)[0], key) for v in value)
        if typing.get_args(tp)[0] is str and len(set(items)) != len(items):
            raise ConfigError(f"{key}: {list(items)!r} names an entry twice")
        return items
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: {value!r} is not an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{key}: {value!r} is not a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: {value!r} is not a string")
        return value
    raise TypeError(f"unsupported config type {tp}")  # a bug in this module, not user input


def check_bounds(value: Any, meta: Mapping[str, Any], key: str) -> None:
    """A ConfigError naming ``key`` where ``value`` is not among the field's choices or out of its range."""
    if value is None or isinstance(value, dict):
        return
    choices = meta.get("choices")
    if choices is not None:
        names = list(choices() if callable(choices) else choices)
        for v in value if isinstance(value, tuple) else (value,):
            if v not in names:
                raise ConfigError(f"{key}: {v!r} is not one of {', '.join(names)}")
    if isinstance(value, tuple):
        return
    lo, hi = meta.get("ge"), meta.get("le")
    glo, lhi = meta.get("gt"), meta.get("lt")
    bad = (
        (lo is not None and value < lo)
        or (hi is not None and value > hi)
        or (glo is not None and value <= glo)
        or (lhi is not None and value >= lhi)
    )
    if bad:
        raise ConfigError(f"{key}: {value!r} is out of range (allowed: {range_text(meta)})")


def range_text(meta: Mapping[str, Any]) -> str:
    """A field's bounds as text (``>= 1 and <= 1000``), empty without bounds."""
    parts = [
        f"{op} {_bound(meta[k])}"
        for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if meta.get(k) is not None
    ]
    return " and ".join(parts)


def build(cls: type, data: Any, path: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys, types and bounds recursively."""
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            key = f"{path}.{k}" if path else str(k)
            close = difflib.get_close_matches(str(k), fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{key}: unknown key (allowed: {', '.join(fields)}){hint}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build(tp, data.get(name), key)
        elif name in data:
            value = coerce(data[name], tp, key)
            check_bounds(value, f.metadata, key)
            kwargs[name] = value
    return cls(**kwargs)


def check_name(value: Any, key: str, what: str = "run name") -> str:
    """``value`` if it can name one folder (letters, digits, '.', '_', '-'; no leading dot or dash, so
    never ``..`` or a path); else a ConfigError naming ``key``."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise ConfigError(f"{key}: {value!r} is not a valid {what} (letters, digits, '.', '_', '-'; it names a folder)")
    return value
