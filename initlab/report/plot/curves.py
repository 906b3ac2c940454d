"""Training curves: training loss and test accuracy against step."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from initlab.report.plot.base import _groups, _style, _with_seeds, legend
from initlab.report.results import RunResult
from initlab.runfolder.files import METRICS_FILE
from initlab.runfolder.reader import read_metrics


def _curve(run: RunResult) -> dict[str, np.ndarray]:
    cols: dict[str, list[float]] = {"step": [], "train_loss": [], "test_acc": []}
    for row in read_metrics(run.path):
        for c in cols:
            cols[c].append(float(row[c]) if row[c] else math.nan)
    return {c: np.array(v) for c, v in cols.items()}


def curves_figure(runs: Sequence[RunResult], keys: Sequence[str]) -> Figure:
    """Training loss and test accuracy against step, one line per configuration (mean over seeds)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    groups = _groups(runs, keys)
    for i, (label, members) in enumerate(groups.items()):
        curves = [_curve(r) for r in members if (r.path / METRICS_FILE).exists()]
        if not curves:
            continue
        longest = max(curves, key=lambda c: len(c["step"]))
        for ax, column in ((ax_loss, "train_loss"), (ax_acc, "test_acc")):
            stacked = np.full((len(curves), len(longest["step"])), np.nan)
            for k, c in enumerate(curves):
                stacked[k, : len(c[column])] = c[column] * (100 if column == "test_acc" else 1)  # % as the report
            with warnings.catch_warnings():  # rows where no seed has a value stay NaN, silently
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(stacked, axis=0)
            ok = np.isfinite(mean)
            ax.plot(
                longest["step"][ok],
                mean[ok],
                label=_with_seeds(label, members),
                marker="o" if ok.sum() <= 12 else None,
                markersize=3,
                **_style(i, len(groups)),
            )
    ax_loss.set(xlabel="step", ylabel="training loss (mean since previous point)", title="training loss")
    ax_loss.set_yscale("log")
    ax_acc.set(xlabel="step", ylabel="test accuracy (%)", title="test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
    handles, _ = ax_acc.get_legend_handles_labels()
    legend(ax_acc, handles)
    fig.suptitle("training curves (mean over seeds)")
    return fig
