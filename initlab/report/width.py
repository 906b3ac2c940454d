"""Width sweeps read back: the coordinate check's slopes against the theory's exponents, and the
best learning rate per width (learning-rate transfer; Yang et al. 2022, "Tensor Programs V").

``coordinate_data`` gathers, for runs that differ in ``model.width`` (and anything else), each
configuration's per-layer coordinate-check statistic at every logged step, averaged over seeds;
``width_slopes`` fits each layer's slope of log(statistic) against log(width) at one step and sets
the expected exponent beside it (``initlab.nn.parameterizations.change_exponent``), and
``best_learning_rates`` finds, per configuration and width, the learning rate with the lowest mean
test loss after the runs' common budget. ``initlab report`` and ``initlab plot --kind
coordcheck/transfer`` read these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from initlab.report.results import IGNORED_KEYS, RunResult, config_label, geo_mean, varied_keys
from initlab.runfolder import reader
from initlab.runfolder.files import LAYERS_FILE

WIDTH = "model.width"
LR = "train.lr"
COORD_STATS = ("pre_delta_abs_mean", "act_abs_mean")


def layer_rows(
    run: RunResult, columns: Sequence[str] = ("act_var", "grad_var"), output: bool = False
) -> dict[int, dict[str, np.ndarray]]:
    """A run's layers.csv as {step: {column: per-layer values (hidden layers only, unless
    ``output``: then the output layer last)}}; empty when the file lacks a column or is missing."""
    path = run.path / LAYERS_FILE
    if not path.is_file():
        return {}
    by_step: dict[int, dict[str, list[float]]] = {}
    rows = reader.read_layers(run.path)
    if rows and not set(columns) <= set(rows[0]):
        return {}
    for row in rows:
        if row["kind"] != "hidden" and not output:
            continue
        cols = by_step.setdefault(int(row["step"]), {c: [] for c in columns})
        for c in cols:
            cols[c].append(float(row[c]) if row[c] else math.nan)
    return {s: {c: np.array(v) for c, v in cols.items()} for s, cols in by_step.items()}


def read_layers(run: RunResult, column: str) -> dict[int, np.ndarray]:
    """``column`` of a run's layers.csv as {step: values of every layer, the output layer last}."""
    return {s: cols[column] for s, cols in layer_rows(run, (column,), output=True).items()}


def configurations(runs: Sequence[RunResult], leave_out: Sequence[str]) -> tuple[list[str], dict[str, list[RunResult]]]:
    """The varied keys other than ``leave_out`` (and seeds), and the runs of each of their
    configurations, labelled ``parameterization=mup, optimizer=adam``."""
    keys = [k for k in varied_keys(runs) if k not in leave_out and k not in IGNORED_KEYS]
    groups: dict[str, list[RunResult]] = {}
    for r in runs:
        groups.setdefault(config_label(r.flat, keys) or "runs", []).append(r)
    return keys, groups


@dataclass
class CoordData:
    """One configuration's coordinate check: {width: {step: per-layer geometric mean over seeds}}."""

    label: str
    statistic: str
    widths: list[int]
    steps: list[int]  # logged by every width
    values: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    runs: list[RunResult] = field(default_factory=list)


def coordinate_data(runs: Sequence[RunResult], statistic: str = "pre_delta_abs_mean") -> list[CoordData]:
    """Every configuration that has ``statistic`` at two or more widths (runs of other widths
    alone, or without the statistic, are left out), at the steps every one of its runs logged
    (completed or diverged: a diverged run's steps before it stopped)."""
    # a diverged run's rows before its blow-up count (dropping it would drop the widths that make a slope)
    _, groups = configurations([r for r in runs if r.status in ("completed", "diverged")], (WIDTH,))
    out = []
    for label, members in groups.items():
        by_width: dict[int, list[dict[int, np.ndarray]]] = {}
        for r in members:
            rows = read_layers(r, statistic)
            if rows:
                by_width.setdefault(int(r.flat[WIDTH]), []).append(rows)
        if len(by_width) < 2:
            continue
        steps = sorted(set.intersection(*(set(rows) for seeds in by_width.values() for rows in seeds)))
        shapes = {len(rows[s]) for seeds in by_width.values() for rows in seeds for s in steps}
        if not steps or len(shapes) != 1:
            continue
        values = {
            w: {s: geo_mean([rows[s] for rows in seeds], per_layer=True) for s in steps}
            for w, seeds in by_width.items()
        }
        out.append(CoordData(label, statistic, sorted(values), steps, values, list(members)))
    return out


def slopes_at(data: CoordData, step: int) -> np.ndarray:
    """Each layer's least-squares slope of log(statistic) against log(width) at ``step`` (NaN for
    a layer with a zero or non-finite value at some width)."""
    x = np.log(np.array(data.widths, dtype=float))
    y = np.log(np.array([data.values[w][step] for w in data.widths]))  # (widths, layers)
    out = np.full(y.shape[1], math.nan)
    for i in range(y.shape[1]):
        if np.all(np.isfinite(y[:, i])):
            out[i] = np.polyfit(x, y[:, i], 1)[0]
    return out


def expected_exponents(run: RunResult) -> tuple[float, float, float] | None:
    """The theory's exponents (input, hidden, output layers) for a run's parameterization and
    optimizer, or None where the theory does not apply (normalization, residual blocks, a zero
    readout, whose first update moves only the output layer)."""
    from initlab.nn.optimizers import ADAM_LIKE
    from initlab.nn.parameterizations import PARAMETERIZATIONS, change_exponent

    f = run.flat
    if f.get("model.norm", "none") != "none" or f.get("model.residual") or f.get("model.zero_readout"):
        return None
    p = PARAMETERIZATIONS.get(str(f.get("model.parameterization", "standard")), "model.parameterization")
    adam = f.get("train.optimizer") in ADAM_LIKE
    return tuple(change_exponent(p, role, adam) for role in ("input", "hidden", "output"))  # type: ignore[return-value]


def _measurable(data: CoordData, step: int) -> bool:
    """Whether every layer's change at ``step`` is finite and non-zero at every width (a slope exists)."""
    return all(np.all(np.isfinite(data.values[w][step]) & (data.values[w][step] > 0)) for w in data.widths)


def width_slopes(runs: Sequence[RunResult]) -> list[dict[str, Any]]:
    """Per configuration of a width sweep with ``pre_delta_abs_mean``: at the first logged step
    after 0 where every layer has moved at every width, the fitted slopes of the input layer, the
    hidden layers (their mean) and the output layer, with the theory's exponents beside them when
    that step is step 1 (they describe the first update only)."""
    rows = []
    for data in coordinate_data(runs, "pre_delta_abs_mean"):
        later = [s for s in data.steps if s > 0 and _measurable(data, s)]
        if not later:
            continue
        step = later[0]
        s = slopes_at(data, step)
        hidden = s[1:-1]
        theory = expected_exponents(data.runs[0]) if step == 1 else None
        rows.append(
            {
                "configuration": data.label,
                "step": step,
                "widths": f"{data.widths[0]}–{data.widths[-1]}",
                "input": float(s[0]),
                "hidden": float(np.nanmean(hidden)) if len(hidden) and np.any(np.isfinite(hidden)) else math.nan,
                "output": float(s[-1]),
                "theory_input": theory[0] if theory else math.nan,
                "theory_hidden": theory[1] if theory else math.nan,
                "theory_output": theory[2] if theory else math.nan,
            }
        )
    return rows


def transfer_data(
    runs: Sequence[RunResult], metric: str = "test_loss"
) -> dict[str, dict[int, dict[float, list[float]]]]:
    """{configuration (without width and lr): {width: {lr: the seeds' final ``metric`` (NaN: diverged)}}}
    for configurations with two or more learning rates."""
    _, groups = configurations(runs, (WIDTH, LR))
    out: dict[str, dict[int, dict[float, list[float]]]] = {}
    for label, members in groups.items():
        table: dict[int, dict[float, list[float]]] = {}
        for r in members:
            if WIDTH in r.flat and LR in r.flat:
                table.setdefault(int(r.flat[WIDTH]), {}).setdefault(float(r.flat[LR]), []).append(r.final(metric))
        if any(len(lrs) >= 2 for lrs in table.values()):
            out[label] = table
    return out


def best_learning_rates(runs: Sequence[RunResult], metric: str = "test_loss") -> list[dict[str, Any]]:
    """Per configuration and width: the learning rate with the lowest mean ``metric`` over seeds
    (a diverged run counts as worse than any finite one), the loss there, and how many runs it has."""
    rows = []
    for label, table in transfer_data(runs, metric).items():
        for width in sorted(table):
            means = {lr: (float(np.mean(v)) if np.all(np.isfinite(v)) else math.inf) for lr, v in table[width].items()}
            lr = min(means, key=lambda k: (means[k], k))
            rows.append(
                {
                    "configuration": label,
                    "width": width,
                    "best_lr": lr if math.isfinite(means[lr]) else math.nan,
                    metric: means[lr],
                    "lrs": len(means),
                    "seeds": max(len(v) for v in table[width].values()),
                }
            )
    return rows
