"""A metric over two swept config keys as a heatmap, with the depth scale 6ξ_c over a σ_w × depth
grid (Schoenholz et al. 2017), and the keys that vary as a grid when none are given."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from initlab.errors import ConfigError
from initlab.report.plot.base import OKABE_ITO, NothingToDraw, PlotOptions, _order
from initlab.report.results import RunResult, key_headers
from initlab.report.tables import HEADERS, aggregate


def heatmap_figure(runs: Sequence[RunResult], x: str, y: str, metric: str = "test_acc", target: float = 0.9) -> Figure:
    """``metric`` (mean over seeds and anything else not on the axes) over two config keys."""
    rows = aggregate(runs, [y, x], target)
    xs = sorted({r[x] for r in rows}, key=_order)
    ys = sorted({r[y] for r in rows}, key=_order)
    grid = np.full((len(ys), len(xs)), np.nan)
    for r in rows:
        grid[ys.index(r[y]), xs.index(r[x])] = r.get(metric, np.nan)
    percent = metric == "test_acc"
    if percent:
        grid = 100 * grid
    # the figure grows with the grid up to a readable poster (40 × 30 inches), then the cells shrink
    fig, ax = plt.subplots(
        figsize=(min(1.1 * len(xs) + 3.5, 40), min(0.6 * len(ys) + 2.5, 30)), constrained_layout=True
    )
    finite = grid[np.isfinite(grid)]
    image = ax.imshow(grid, cmap="cividis", aspect="auto", origin="lower")
    ax.set_xticks(
        range(len(xs)),
        [str(v) for v in xs],
        rotation=90 if len(xs) > 12 else 0,
        fontsize="x-small" if len(xs) > 30 else None,
    )
    ax.set_yticks(range(len(ys)), [str(v) for v in ys], fontsize="x-small" if len(ys) > 30 else None)
    xname, yname = key_headers([x, y])
    ax.set(xlabel=xname, ylabel=yname)
    label = "test accuracy (%)" if percent else HEADERS.get(metric, metric)
    ax.set_title(f"{label} over {xname} × {yname} (mean over seeds)")
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    status = {(r[y], r[x]): r["status"] for r in rows}
    if len(xs) * len(ys) <= 400:  # past that the numbers would be unreadable: the colours say it
        for (i, j), v in np.ndenumerate(grid):
            text = (
                (status.get((ys[i], xs[j]), "–") if status.get((ys[i], xs[j]), "ok") != "ok" else "–")
                if not np.isfinite(v)
                else (f"{v:.1f}" if percent else f"{v:.3g}")
            )
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize="small" if len(xs) <= 12 else "x-small",
                color="black" if np.isfinite(v) and v > mid else ("0.3" if not np.isfinite(v) else "white"),
            )
    if finite.size:
        fig.colorbar(image, ax=ax, label=label)
    else:  # nothing completed: no colour scale to read, and the reason in the panel
        ax.set_title(f"{label} over {xname} × {yname}: no completed run (every cell diverged or failed)")
    if x.endswith("init_args.sigma_w") and y == "model.depth":
        _depth_scale_curve(ax, runs, xs, ys)
    return fig


def _depth_scale_curve(ax, runs: Sequence[RunResult], sigma_ws: list, depths: list) -> None:
    """Overlay 6ξ_c (Schoenholz et al. 2017) on a σ_w × depth heatmap: trainable below the curve."""
    from initlab.theory.mean_field import MeanField

    activation = runs[0].flat.get("model.activation", "tanh")
    sigma_b = float(runs[0].flat.get("model.init_args.sigma_b", 0.0))
    fine = np.linspace(min(sigma_ws), max(sigma_ws), 60)
    limit = np.array([MeanField(activation, s * s, sigma_b * sigma_b).max_trainable_depth for s in fine])
    # Columns and rows are categories: place σ_w and depth by interpolating between their positions.
    cols = np.interp(fine, [float(v) for v in sigma_ws], np.arange(len(sigma_ws)))
    log_depths = np.log([float(d) for d in depths])
    with np.errstate(all="ignore"):
        rows = np.interp(
            np.log(np.clip(limit, 1e-9, 1e9)), log_depths, np.arange(len(depths)), left=-0.5, right=len(depths) - 0.5
        )
    ax.plot(cols, rows, color="white", linewidth=2.2)
    ax.plot(cols, rows, color=OKABE_ITO[3], linewidth=1.4, linestyle="--", label="6ξ_c (mean-field theory)")
    ax.legend(loc="upper right", fontsize="small")


# Sections whose keys make the better heatmap axes, first to last (what the network and its
# training are before how much data and logging).
AXIS_SECTIONS = ("model", "train", "data")


def grid_keys(runs: Sequence[RunResult], keys: Sequence[str]) -> tuple[str, str] | None:
    """The two varied keys that vary as a grid, (rows, columns): every value of one was run with
    every value of the other. The largest such grid, then the one of the earlier sections of
    ``AXIS_SECTIONS``, then config order; None where no two keys do."""
    from itertools import combinations

    def values(k: str) -> set[str]:
        return {repr(r.flat.get(k)) for r in runs}

    def rank(k: str) -> int:
        section = k.split(".")[0]
        return AXIS_SECTIONS.index(section) if section in AXIS_SECTIONS else len(AXIS_SECTIONS)

    grids = []
    for i, (a, b) in enumerate(combinations(keys, 2)):
        va, vb = values(a), values(b)
        pairs = {(repr(r.flat.get(a)), repr(r.flat.get(b))) for r in runs}
        if len(va) > 1 and len(vb) > 1 and len(pairs) == len(va) * len(vb):
            grids.append((-len(pairs), rank(a) + rank(b), i, (a, b)))
    return min(grids)[-1] if grids else None


def _heatmap_kind(runs: Sequence[RunResult], keys: Sequence[str], options: PlotOptions) -> Figure:
    """The heatmap over --x and --y; where one or both are not given, over keys that vary as a grid."""
    for k in (options.x, options.y):
        if k is not None and all(k not in r.flat for r in runs):
            raise ConfigError(f"--x/--y {k}: not a config key of these runs")
    hx, hy, given = options.x, options.y, options.x or options.y
    if hx is None or hy is None:
        found = (grid_keys(runs, [given, k]) for k in keys if k != given) if given else iter([grid_keys(runs, keys)])
        pair = next((p for p in found if p), None)
        if pair is None:
            raise NothingToDraw(
                (f"no varied key makes a grid with {given}" if given else "no two config keys vary as a grid here")
                + " (every value of one run with every value of the other): "
                "pass --x KEY --y KEY"
            )
        hy, hx = pair if given is None else ((hy, pair[1]) if hy else (pair[1], hx))
    return heatmap_figure(runs, hx, hy, options.metric)
