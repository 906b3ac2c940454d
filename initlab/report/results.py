"""Run folders read back: each run from its summary.json (``RunResult``: its status, final figures,
per-layer profiles and resolved config as dotted keys), the folders found under some paths (``discover``),
``--filter KEY=VALUE`` and the config keys that vary across runs. What every report, figure and
export reads; it reads files, never training.

Each run is read from its summary.json alone (it carries the resolved config, final figures, the
test-accuracy history and per-layer variance profiles), so reading a thousand runs takes well
under a second. Unreadable folders are listed as skipped, with the reason, never dropped silently.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from initlab.config import migrate
from initlab.errors import ConfigError, InitlabError
from initlab.runfolder.files import CONFIG_FILE, RUN_MARKERS
from initlab.runfolder.reader import load_summary
from initlab.runfolder.summary import check_summary, with_infinities

IGNORED_KEYS = ("name", "seed", "log.out")  # never a reason to tell configurations apart


@dataclass
class RunResult:
    """One run folder as the report sees it (the Python API's ``initlab.Run`` opens one whole)."""

    path: Path
    summary: dict[str, Any]
    flat: dict[str, Any]  # the resolved config as dotted keys

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown"))

    def final(self, key: str) -> float:
        """A final figure of a completed run; NaN otherwise (a diverged run's last evaluation
        predates its blow-up and would flatter the seed mean)."""
        v = (self.summary.get("final") or {}).get(key)
        return float(v) if isinstance(v, int | float) and self.status == "completed" else math.nan

    def profile(self, when: str, key: str) -> np.ndarray:
        """Per-layer values (hidden layers only) of a signal statistic at ``init`` or ``final``."""
        values = ((self.summary.get("signal") or {}).get(when) or {}).get(key) or []
        arr = np.array([math.nan if v is None else v for v in values], dtype=float)
        return arr[:-1]  # the last entry is the output layer

    def ratio(self, when: str, key: str) -> float:
        """act_var: last / first hidden layer; grad_var: first / last (toward the input)."""
        p = self.profile(when, key)
        if len(p) == 0:
            return math.nan
        first, last = p[0], p[-1]
        num, den = (last, first) if key == "act_var" else (first, last)
        with np.errstate(all="ignore"):
            return float(num / den) if den != 0 else math.nan

    def theory_ratio(self) -> float:
        """Measured / predicted pre-activation variance of the last hidden layer at init (NaN where
        the theory does not apply or was not recorded)."""
        theory = self.summary.get("theory") or {}
        measured = self.profile("init", "pre_var")
        if not theory.get("applies") or not len(measured) or not theory.get("q"):
            return math.nan
        predicted = theory["q"][-1]
        return float(measured[-1] / predicted) if predicted else math.nan

    def jacobian(self, key: str, when: str = "init") -> float:
        """A summary figure of the input-output Jacobian's singular values (``init`` or ``end``;
        see ``initlab.stats.spectrum.summarize``), NaN where none was taken."""
        jac = self.summary.get("jacobian") or {}
        v = (jac.get(when) or {}).get(key) if jac.get("applies") else None
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan

    def jacobian_theory(self) -> float:
        """Mean-field theory's mean squared singular value of the Jacobian at init (NaN where it does not apply)."""
        theory = self.summary.get("theory") or {}
        v = theory.get("jacobian_mean_sq") if theory.get("applies") else None
        return float(v) if isinstance(v, int | float) else math.nan

    def steps_to(self, target: float) -> float:
        hist = self.summary.get("history") or {}
        for step, acc in zip(hist.get("step", []), hist.get("test_acc", [])):
            if acc is not None and acc >= target:
                return float(step)
        return math.nan


@dataclass
class Skipped:
    path: Path
    reason: str


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → dotted keys (``model.init_args.gain``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        elif not isinstance(v, dict):
            out[key] = v
    return out


def _is_run_folder(path: Path) -> bool:
    return any((path / f).exists() for f in RUN_MARKERS)


def load_run(path: Path) -> RunResult | Skipped:
    """A run folder, or why it cannot be read."""
    try:
        summary = load_summary(path)
    except FileNotFoundError:
        return Skipped(path, "no summary.json (a partial or foreign folder)")
    except (OSError, ValueError) as e:
        return Skipped(path, f"summary.json unreadable ({type(e).__name__}: {e})")
    summary = with_infinities(summary)
    problem = check_summary(summary)
    if problem:
        return Skipped(path, problem)
    if summary.get("status") == "running":
        from initlab.runfolder.storage import LOST, live_status

        if live_status("running", path) == "interrupted":  # no process trains it: killed (kill -9, out of memory)
            summary = {**summary, "status": "interrupted", "error": LOST}
    config = summary.get("config")
    if not isinstance(config, dict):
        try:
            import yaml

            from initlab.config import parse_yaml

            config = parse_yaml((path / CONFIG_FILE).read_text())
        except (OSError, ValueError, yaml.YAMLError, InitlabError) as e:
            return Skipped(path, f"no config in summary.json and config.yaml unreadable ({e})")
        if not isinstance(config, dict):
            return Skipped(path, "config.yaml is not a mapping")
    # keys added since read as their hash-keeping value; a default log.stats of any era as today's
    return RunResult(path, summary, migrate(flatten(config)))


def discover(paths: Iterable[str | Path]) -> tuple[list[RunResult], list[Skipped]]:
    """Every run folder under ``paths`` (run folders themselves, or folders holding them at any
    depth; hidden folders such as sweep locks and temporaries are not entered). A symbolic link
    inside the tree is not followed (a link to ``/`` would walk the filesystem): it is listed as
    skipped; the paths given are followed."""
    runs: list[RunResult] = []
    skipped: list[Skipped] = []
    stack = [Path(p) for p in paths]
    for p in stack:
        if not p.exists():
            raise ConfigError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    while stack:
        p = stack.pop(0)
        real = p.resolve()
        if real in seen:
            continue
        seen.add(real)
        if _is_run_folder(p):
            item = load_run(p)
            (runs if isinstance(item, RunResult) else skipped).append(item)
            continue
        try:
            entries = sorted((e for e in os.scandir(p) if not e.name.startswith(".")), key=lambda e: e.name)
        except NotADirectoryError:
            skipped.append(Skipped(p, "not a folder"))
            continue
        except OSError as e:
            skipped.append(Skipped(p, f"cannot list it ({e.strerror or type(e).__name__})"))
            continue
        for e in entries:
            if e.is_symlink() and e.is_dir():
                skipped.append(Skipped(Path(e.path), "a symbolic link, not followed (report its target directly)"))
        stack[0:0] = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    return runs, skipped


def _parse_filter(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--filter {item!r}: expected KEY=VALUE, e.g. --filter model.init=he_normal")
    return key.strip(), value.strip()


def apply_filters(runs: Sequence[RunResult], filters: Sequence[str]) -> list[RunResult]:
    """The runs matching every ``KEY=VALUE`` of ``filters``. A key no run has, or a filter that
    leaves no run, is an InitlabError saying what the runs do have (never a silently empty result)."""
    runs = list(runs)
    for item in filters:
        key, value = _parse_filter(item)
        if runs and key != "status" and all(key not in r.flat for r in runs):
            import difflib

            close = difflib.get_close_matches(key, sorted({k for r in runs for k in r.flat}), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"--filter {item}: no run has the key {key!r}{hint}")
        kept = [r for r in runs if _matches(r, key, value)]
        if runs and not kept:
            have = sorted({str(r.status if key == "status" else r.flat.get(key)) for r in runs})
            shown = ", ".join(have[:12]) + (", …" if len(have) > 12 else "")
            raise InitlabError(f"--filter {item}: matches none of the {len(runs)} runs ({key} here: {shown})")
        runs = kept
    return runs


def _matches(run: RunResult, key: str, value: str) -> bool:
    have = run.status if key == "status" else run.flat.get(key, None)
    if have is None:
        return False
    if isinstance(have, int | float) and not isinstance(have, bool):
        try:
            return float(have) == float(value)
        except ValueError:
            return False
    return str(have).lower() == value.lower()


def varied_keys(runs: Sequence[RunResult]) -> list[str]:
    """Config keys whose values differ across ``runs`` (in config order), ignoring name/seed/out."""
    keys: dict[str, set[str]] = {}
    for run in runs:
        for k, v in run.flat.items():
            keys.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    n_missing = {k for k in keys if any(k not in r.flat for r in runs)}
    return [k for k, vals in keys.items() if k not in IGNORED_KEYS and (len(vals) > 1 or k in n_missing)]


def key_headers(keys: Sequence[str]) -> list[str]:
    """Short names for config-key columns: the last part (``depth``) unless two keys share it."""
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    return [leaf if leaves.count(leaf) == 1 else k for k, leaf in zip(keys, leaves)]


def config_label(
    values: dict[str, Any],
    keys: Sequence[str],
    *,
    headers: Sequence[str] | None = None,
    fmt: Callable[[Any], str] = str,
    sep: str = ", ",
    skip_none: bool = True,
) -> str:
    """The label of a configuration, ``depth=10, init=he_normal``: each of ``keys`` that ``values``
    (a run's dotted config, or a report row) sets, under its header (``key_headers``' short name
    unless ``headers`` are given), written by ``fmt``; a key set to None is left out unless not
    ``skip_none`` (a key a run does not set, e.g. another initializer's argument, always is). ''
    when nothing is left: the caller names the run another way."""
    heads = key_headers(keys) if headers is None else headers
    return sep.join(
        f"{h}={fmt(values.get(k))}"
        for h, k in zip(heads, keys)
        if k in values and (values[k] is not None or not skip_none)
    )


def geo_mean(values: Sequence[Any], *, per_layer: bool = False) -> Any:
    """The geometric mean over seeds: the reports' one average of ratios and variances.

    Of numbers (a report-table cell): NaN ones left out, NaN when none is left, and the median
    instead when one is zero or negative (a logarithm would make it -inf or NaN).

    ``per_layer``: of equal-length arrays (per-layer profiles), element by element: NaN where
    every seed is non-finite, a negative left out, a zero pulling the mean to 0; empty when there
    are none or their lengths differ.

    The two rules are what the table and the figures have always shown; one function states both."""
    if per_layer:
        arrays = [a for a in values if len(a)]
        if not arrays or len({len(a) for a in arrays}) != 1:
            return np.array([])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # layers where every seed is non-finite stay NaN
            return np.exp(np.nanmean(np.log(np.array(arrays)), axis=0))
    v = np.array([x for x in values if not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return math.nan
    if (v <= 0).any():
        return float(np.median(v))
    with np.errstate(all="ignore"):
        return float(np.exp(np.log(v).mean()))
