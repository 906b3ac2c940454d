"""Per-layer signal propagation: activation and back-propagated gradient variance against depth
(Glorot & Bengio 2010, Figs. 3–7; He et al. 2015), with the mean-field prediction at
initialization (Poole et al. 2016)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from initlab.report.plot.base import (
    STYLES,
    THEORY_STYLE,
    _groups,
    _resolve_step,
    _step_handles,
    _with_seeds,
    legend,
    palette,
)
from initlab.report.results import RunResult, geo_mean
from initlab.report.width import layer_rows


def _profile_at(run: RunResult, step: str) -> tuple[int, dict[str, np.ndarray]] | None:
    """Per-layer act_var and grad_var at ``step`` ("init", "end" or a number: the logged step
    nearest to it) as (the step drawn, values)."""
    if step in ("init", "0"):
        return 0, {c: run.profile("init", c) for c in ("act_var", "grad_var")}
    if step == "end":
        return int(run.summary.get("steps", 0)), {c: run.profile("final", c) for c in ("act_var", "grad_var")}
    rows = layer_rows(run)
    at = _resolve_step(step, sorted(rows))
    return (at, rows[at]) if at is not None else None


def _theory_profile(members: Sequence[RunResult]) -> dict[str, np.ndarray]:
    """Mean-field predictions at init (Poole et al. 2016): activation variance per layer, and the
    gradient variance scaled to the measured last hidden layer's (theory gives only ratios)."""
    theory = members[0].summary.get("theory") or {}
    if not theory.get("applies"):
        return {}
    out = {"act_var": np.array(theory["act_var"], float)}
    last = geo_mean([r.profile("init", "grad_var")[-1:] for r in members], per_layer=True)
    if len(last):
        out["grad_var"] = np.array(theory["grad_ratio"], float) * last[0]
    return out


def profile_figure(
    runs: Sequence[RunResult], keys: Sequence[str], steps: Sequence[str] = ("init", "end"), theory: bool = True
) -> Figure:
    """Activation variance and ∂ℓ/∂z variance against layer, log scale: one colour per
    configuration, one line style per step (mean over seeds, geometric), and the mean-field
    prediction at initialization dashed where the theory applies."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    groups = _groups(runs, keys)
    colours = palette(len(groups))
    drawn: dict[int, set[int]] = {}  # per step asked for, the logged steps drawn
    for i, (label, members) in enumerate(groups.items()):
        colour = colours[i]
        for j, step in enumerate(steps):
            found = [p for p in (_profile_at(r, step) for r in members) if p is not None]
            if not found:
                continue
            drawn.setdefault(j, set()).update(p[0] for p in found)
            for ax, column in zip(axes, ("act_var", "grad_var")):
                values = geo_mean([p[1][column] for p in found], per_layer=True)
                if len(values):
                    ax.plot(
                        np.arange(1, len(values) + 1),
                        values,
                        color=colour,
                        linestyle=STYLES[j % len(STYLES)],
                        marker="o" if len(values) <= 12 else None,
                        markersize=3,
                        label=f"{label} (step {found[0][0]})",
                    )
        if theory:
            predicted = _theory_profile(members)
            for ax, column in zip(axes, ("act_var", "grad_var")):
                if column in predicted:
                    values = predicted[column]
                    ax.plot(
                        np.arange(1, len(values) + 1),
                        values,
                        color=colour,
                        linestyle=THEORY_STYLE,
                        linewidth=1.2,
                        alpha=0.9,
                        label=f"{label} (mean-field theory)",
                    )
    titles = ("activation variance across depth", "back-propagated gradient variance ∂ℓ/∂z across depth")
    for ax, title, ylabel in zip(axes, titles, ("Var(a)", "Var(∂ℓ/∂z)")):
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("hidden layer (1 = nearest the input)")
        ax.set_ylabel(ylabel + " (log scale)")
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
    colour_handles = [
        Line2D([], [], color=colours[i], label=_with_seeds(label, members))
        for i, (label, members) in enumerate(groups.items())
    ]
    style_handles = _step_handles(steps, drawn)
    if theory and any(_theory_profile(m) for m in groups.values()):
        style_handles.append(Line2D([], [], color="0.3", linestyle=THEORY_STYLE, label="mean-field theory (init)"))
    legend(axes[1], colour_handles, style_handles)
    fig.suptitle("per-layer signal propagation (mean over seeds)")
    return fig
