"""summary.json's schema, read side: the fields the reports and figures read and the type each
must have (``SUMMARY_SCHEMA``), checked when a run is read back (``check_summary``), and its
infinities, which JSON cannot hold and the writer (``runfolder.storage.jsonable``) stores as
"inf"/"-inf", read back as floats (``with_infinities``)."""

from __future__ import annotations

from typing import Any


def with_infinities(obj: Any) -> Any:
    """JSON has no infinity, so summaries store "inf"/"-inf": read them back as floats."""
    if isinstance(obj, dict):
        return {k: with_infinities(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [with_infinities(v) for v in obj]
    if obj == "inf" or obj == "-inf":
        return float(obj)
    return obj


class _Num:
    """Schema marker: a number (not a bool)."""


# What reports and plots read from a summary.json, and the type each field must have. A field may
# be absent or null (NaN is stored as null); {str: T} is a mapping whose every value is a T, [T] a
# list of T, a dict a mapping with those typed fields (others free).
SUMMARY_SCHEMA: dict[str, Any] = {
    "status": str,
    "name": str,
    "error": str,
    "init_trace_file": str,
    "steps": _Num,
    "steps_per_second": _Num,
    "final": {str: _Num},
    "best": {str: _Num},
    "history": {str: [_Num]},
    "signal": {str: {str: [_Num]}},
    "theory": {"applies": bool, "q": [_Num], "act_var": [_Num], "grad_ratio": [_Num], "jacobian_mean_sq": _Num},
    "jacobian": {"applies": bool, "init": {str: Any}, "end": {str: Any}},
    "divergence": {str: Any},
    "config": {str: Any},
}


def _schema_error(value: Any, spec: Any, where: str) -> str | None:
    """Where ``value`` breaks ``spec`` (``final.test_acc: a list, expected a number``), or None."""
    if value is None or spec is Any:
        return None
    if spec is _Num:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"{where}: {_kind(value)}, expected a number"
    if isinstance(spec, type):
        return None if isinstance(value, spec) else f"{where}: {_kind(value)}, expected {_kind(spec())}"
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{where}: {_kind(value)}, expected a list"
        return next((e for i, v in enumerate(value) if (e := _schema_error(v, spec[0], f"{where}[{i}]"))), None)
    if not isinstance(value, dict):
        return f"{where}: {_kind(value)}, expected a mapping"
    if list(spec) == [str]:
        return next((e for k, v in value.items() if (e := _schema_error(v, spec[str], f"{where}.{k}"))), None)
    return next((e for k, sub in spec.items() if (e := _schema_error(value.get(k), sub, f"{where}.{k}"))), None)


def _kind(value: Any) -> str:
    names = {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list", dict: "a mapping"}
    return names.get(type(value), type(value).__name__)


def check_summary(summary: Any) -> str | None:
    """Why a parsed summary.json cannot be reported (its first wrongly typed field), or None."""
    if not isinstance(summary, dict):
        return "summary.json is not an object"
    errors = (_schema_error(summary.get(k), spec, k) for k, spec in SUMMARY_SCHEMA.items())
    error = next((e for e in errors if e), None)
    return f"summary.json {error}" if error else None
