"""A width sweep's figures: the coordinate check and learning-rate transfer (Yang et al. 2022)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from initlab.errors import ConfigError
from initlab.report.plot.base import MAX_LAYERS, NothingToDraw, _panels, _pick_layers
from initlab.report.results import RunResult


MAX_COORD_STEPS = 8  # lines per coordinate-check panel


def coordcheck_figure(runs: Sequence[RunResult], keys: Sequence[str], statistic: str = "pre_delta_abs_mean") -> Figure:
    """The coordinate check (Yang et al. 2022, Fig. 5; microsoft/mup's ``coord_check``): a
    coordinate-check statistic (``pre_delta_abs_mean``, the change |z_t − z₀|, or ``act_abs_mean``,
    |a|) against width, log-log, one row of panels per configuration (parameterization, optimizer,
    ...), one panel per layer (up to MAX_LAYERS evenly spaced, the output layer last), one line
    per logged step (up to MAX_COORD_STEPS, from a sequential colour map: light early, dark late).
    Flat lines: the layer's coordinates keep their size as the net widens; a slope: they grow or
    shrink with width. The geometric mean over seeds; zeros (the change at step 0) are not drawn."""
    from initlab.report.width import COORD_STATS, coordinate_data

    if statistic not in COORD_STATS:
        raise ConfigError(f"--stat {statistic!r}: not one of {', '.join(COORD_STATS)}")
    data = coordinate_data(runs, statistic)
    if not data:
        raise NothingToDraw(
            f"coordcheck needs completed runs at two or more values of model.width with {statistic} "
            f"in layers.csv (log.stats: [{statistic}])"
        )

    def layers_of(d):  # each configuration its own layers (a sweep may vary depth too), the output last
        n = len(next(iter(d.values[d.widths[0]].values())))
        return n, _pick_layers(list(range(1, n)), MAX_LAYERS - 1) + [n]

    ncols = max(len(layers_of(d)[1]) for d in data)
    fig, axes = plt.subplots(
        len(data),
        ncols,
        squeeze=False,
        sharex=True,
        sharey=True,
        figsize=(2.6 * ncols + 1.5, 2.5 * len(data) + 1.2),
        constrained_layout=True,
    )
    cmap = plt.get_cmap("cividis_r")
    for row, d in zip(axes, data):
        n_layers, layers = layers_of(d)
        for ax in row[len(layers) :]:
            ax.set_visible(False)
        row = row[: len(layers)]
        steps = [s for s in d.steps if statistic != "pre_delta_abs_mean" or s > 0]
        steps = [steps[i] for i in _pick_layers(list(range(len(steps))), MAX_COORD_STEPS)] if steps else []
        for ax, layer in zip(row, layers):
            for j, step in enumerate(steps):
                y = np.array([d.values[w][step][layer - 1] for w in d.widths])
                ok = np.isfinite(y) & (y > 0)
                ax.plot(
                    np.array(d.widths)[ok],
                    y[ok],
                    marker="o",
                    markersize=3,
                    color=cmap(0.15 + 0.85 * j / max(len(steps) - 1, 1)),
                    label=f"step {step}",
                )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(
                ("output layer" if layer == n_layers else f"layer {layer}") + f"\n{d.label}", fontsize="x-small"
            )
        row[0].set_ylabel(statistic)
        if steps:
            row[-1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    for ax in axes.flat:
        if ax.get_visible():
            ax.set_xlabel("width")
    what = "|z_t − z_0|, the change since initialization" if statistic == "pre_delta_abs_mean" else "|a|"
    fig.suptitle(f"coordinate check: {what} against width (flat: the layer's coordinates keep their size)")
    return fig


def transfer_figure(runs: Sequence[RunResult], keys: Sequence[str], metric: str = "test_loss") -> Figure:
    """Learning-rate transfer (Yang et al. 2022, Fig. 1): the test loss after the runs' budget against
    the learning rate, log x, one panel per configuration (parameterization, ...), one line per
    width (light to dark as the width grows), the mean over seeds with the seeds' range shaded, and
    each width's best learning rate marked. A diverged run is not drawn (and never the best)."""
    from initlab.report.width import transfer_data

    data = transfer_data(runs, metric)
    if not data:
        raise NothingToDraw("transfer needs runs at two or more values of train.lr (and of model.width)")
    fig, axes = _panels(len(data), sharey=True)
    cmap = plt.get_cmap("viridis_r")
    finite = [
        v for table in data.values() for lrs in table.values() for vs in lrs.values() for v in vs if math.isfinite(v)
    ]
    for ax, (label, table) in zip(axes, data.items()):
        widths = sorted(table)
        for i, w in enumerate(widths):
            lrs = sorted(table[w])
            vals = [np.array(table[w][lr], dtype=float) for lr in lrs]
            mean = np.array([np.mean(v) if np.all(np.isfinite(v)) else np.nan for v in vals])
            lo = np.array([np.nanmin(v) if np.any(np.isfinite(v)) else np.nan for v in vals])
            hi = np.array([np.nanmax(v) if np.any(np.isfinite(v)) else np.nan for v in vals])
            colour = cmap(0.1 + 0.8 * i / max(len(widths) - 1, 1))
            ax.plot(lrs, mean, marker="o", markersize=3, color=colour, label=f"width {w}")
            if any(len(v) > 1 for v in vals):
                ax.fill_between(lrs, lo, hi, color=colour, alpha=0.15, linewidth=0)
            if np.any(np.isfinite(mean)):
                best = int(np.nanargmin(mean))
                ax.plot(
                    [lrs[best]],
                    [mean[best]],
                    marker="*",
                    markersize=11,
                    color=colour,
                    markeredgecolor="black",
                    markeredgewidth=0.5,
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("learning rate (train.lr)")
        ax.set_title(label, fontsize="small")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small", loc="best")
    if finite:  # a blown-up run's loss would flatten the rest: the view stops at 1.5× the median
        lo, hi = min(finite), float(np.median(finite))
        axes[0].set_ylim(lo * 0.95, max(hi * 1.5, lo * 1.2))
    axes[0].set_ylabel(f"{metric.replace('_', ' ')} after training")
    fig.suptitle("learning-rate transfer: ★ each width's best learning rate (flat ★: the optimum transfers)")
    return fig
