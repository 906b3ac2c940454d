"""The input–output Jacobian's squared singular values from jacobian.csv, against dynamical
isometry (Saxe et al. 2014; Pennington, Schoenholz & Ganguli 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from initlab.errors import InitlabError
from initlab.report.plot.base import (
    STYLES,
    THEORY_STYLE,
    _groups,
    _percent,
    _resolve_step,
    _step_handles,
    legend,
    palette,
)
from initlab.report.results import RunResult
from initlab.runfolder.files import JACOBIAN_FILE
from initlab.runfolder.reader import read_jacobian


HOW_TO_JACOBIAN = (
    "runs write it when log.jacobian > 0 and model.norm is not batchnorm (e.g. initlab run CONFIG --set log.jacobian=4)"
)


def spectrum_figure(runs: Sequence[RunResult], keys: Sequence[str], steps: Sequence[str] = ("init", "end")) -> Figure:
    """The density of the input–output Jacobian's squared singular values σ² (∂ last hidden layer /
    ∂ input, of a few probe examples; all examples and seeds of a configuration pooled), one colour
    per configuration and one line style per step, log-spaced bins shared by every line and
    y = density per unit log₁₀ σ² (normalised by all values, so a curve integrates to the fraction
    of resolved σ²; the share at or below float32's resolution, ``initlab.stats.spectrum.resolution``,
    numerically zero, is stated in the legend). The dashed vertical line marks σ² = 1:
    dynamical isometry, every singular value near 1, is what lets very deep nets train fast
    (Saxe et al. 2014; Pennington, Schoenholz & Ganguli 2017). Runs without jacobian.csv are
    skipped; an InitlabError if none has one."""
    groups = {
        label: [r for r in members if (r.path / JACOBIAN_FILE).is_file()]
        for label, members in _groups(runs, keys).items()
    }
    groups = {label: members for label, members in groups.items() if members}
    if not groups:
        raise InitlabError(f"no run has {JACOBIAN_FILE}: {HOW_TO_JACOBIAN}")
    lines = []  # (configuration index, step index, σ² pooled over examples and seeds, steps drawn)
    drawn: dict[int, set[int]] = {}
    for i, members in enumerate(groups.values()):
        spectra = [read_jacobian(r.path / JACOBIAN_FILE) for r in members]
        for j, spec in enumerate(steps):
            found = [
                (at, by_step[at], _floor(r, at))
                for r, by_step in zip(members, spectra)
                if (at := _resolve_step(spec, list(by_step))) is not None
            ]
            if found:
                sv = np.concatenate([v for _, v, _ in found])
                floor = np.concatenate([np.full(len(v), f) for _, v, f in found])
                lines.append((i, j, np.where(sv > floor, sv, 0.0) ** 2, sorted({at for at, _, _ in found})))
                drawn.setdefault(j, set()).update(at for at, _, _ in found)
    positive = [sq[np.isfinite(sq) & (sq > 0)] for _, _, sq, _ in lines]
    pooled = np.concatenate(positive) if positive else np.array([])
    fig, ax = plt.subplots(figsize=(13, 5.2), layout="constrained")
    zeros: dict[int, list[float]] = {}
    if pooled.size:
        low, high = float(pooled.min()), float(pooled.max())
        if low == high:
            low, high = low / 2, high * 2
        bins = int(np.clip(np.sqrt(max(len(p) for p in positive)), 10, 50))
        edges = np.logspace(np.log10(low), np.log10(high), bins + 1)
        edges[[0, -1]] = low, high  # exactly: rounding in logspace would drop the extremes
        for (i, j, sq, at), pos in zip(lines, positive):
            counts, _ = np.histogram(pos, edges)
            ax.plot(
                np.sqrt(edges[:-1] * edges[1:]),
                counts / (len(sq) * np.diff(np.log10(edges))),
                color=palette(len(groups))[i],
                linestyle=STYLES[j % len(STYLES)],
                label=f"{list(groups)[i]} (step {', '.join(map(str, at))})",
            )
            zeros.setdefault(i, []).append((steps[j], 1 - len(pos) / len(sq)))
        ax.set_xlim(min(edges[0], 0.5), max(edges[-1], 2.0))
    ax.axvline(1.0, color="0.4", linestyle=THEORY_STYLE, linewidth=1, label="σ² = 1 (dynamical isometry)")
    ax.set_xscale("log")
    ax.set(
        xlabel="squared singular value σ² of ∂(last hidden layer)/∂(input) (log scale)",
        ylabel="density per unit log₁₀ σ²",
        title="input–output Jacobian spectrum (examples and seeds pooled)",
    )
    ax.grid(True, which="major", alpha=0.3)
    colour_handles = []
    for i, label in enumerate(groups):
        below = ", ".join(f"{_percent(z)} at {at}" for at, z in zeros.get(i, []) if z)
        colour_handles.append(
            Line2D(
                [],
                [],
                color=palette(len(groups))[i],
                label=label + (f"\n(σ below float32 resolution, not drawn: {below})" if below else ""),
            )
        )
    style_handles = _step_handles(steps, drawn)
    reference = Line2D([], [], color="0.4", linestyle=THEORY_STYLE, label="σ² = 1 (dynamical isometry)")
    legend(fig, colour_handles, [*style_handles, reference], loc="outside right upper")
    return fig


def _floor(run: RunResult, step: int) -> float:
    """The float32 resolution of a run's spectrum at ``step`` (summary.json's ``jacobian`` floor:
    singular values at or below it are numerically zero), 0 where the summary has none."""
    jac = run.summary.get("jacobian") or {}
    for part in (jac.get("init") or {}, jac.get("end") or {}):
        if part.get("step", 0) == step and isinstance(part.get("floor"), int | float):
            return float(part["floor"])
    return 0.0
