"""Figures (matplotlib, headless): per-layer variance across depth, training curves, a heatmap of
a metric over two swept keys, per-layer distributions and the input–output Jacobian's spectrum.

The per-layer picture is the classic one of Glorot & Bengio 2010 (Fig. 3–7) and He et al. 2015:
activation variance and back-propagated gradient variance against depth, log scale, one line per
configuration, at initialization and later steps. Distributions, not just moments: the per-layer
histograms of histograms.csv drawn at one step (Glorot & Bengio 2010, Figs. 6–7) or over the whole
of training (fastai's "colorful dimension"), and the squared singular values of jacobian.csv against
dynamical isometry (Saxe et al. 2014; Pennington, Schoenholz & Ganguli 2017). Each figure kind is an
entry of the FIGURES registry. Lines use the Okabe–Ito palette and images cividis, both readable
with colour-vision deficiencies.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")  # headless: files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from initlab.errors import ConfigError, InitlabError  # noqa: E402
from initlab.registry import Registry  # noqa: E402
from initlab.report.results import (RunResult, apply_filters, config_label, discover, geo_mean, key_headers,  # noqa: E402
                                    varied_keys)
from initlab.report.tables import HEADERS, aggregate  # noqa: E402
from initlab.report.width import layer_rows  # noqa: E402
from initlab.runfolder.files import (HISTOGRAM_COLUMNS, HISTOGRAM_FILE, JACOBIAN_COLUMNS, JACOBIAN_FILE,  # noqa: E402
                                     METRICS_FILE)

# Okabe & Ito's colour-blind-safe palette; its yellow is faint on white, so it comes last.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
STYLES = ["-", ":", "-.", (0, (6, 1, 1, 1))]  # one per step; dashed is kept for theory
THEORY_STYLE = "--"


def _groups(runs: Sequence[RunResult], keys: Sequence[str]) -> dict[str, list[RunResult]]:
    """Runs by configuration (seeds together), labelled ``depth=10, init=he_normal``."""
    out: dict[str, list[RunResult]] = {}
    ordered = sorted(runs, key=lambda r: [_order(r.flat.get(k)) for k in keys])
    for run in ordered:
        label = config_label(run.flat, keys) or run.summary.get("name", "run")
        out.setdefault(label, []).append(run)
    return out


def _with_seeds(label: str, members: Sequence[RunResult]) -> str:
    """A configuration's legend entry: its label, and how many seeds its one line is the mean of."""
    return f"{label} ({len(members)} seeds)" if len(members) > 1 else label


def palette(n: int) -> list:
    """``n`` colours that tell configurations apart: Okabe & Ito's for up to 8, tab20 for up to
    20, and beyond that evenly spaced along a perceptual colour map (no colour is reused, so two
    configurations never share a colour and a line style)."""
    if n <= len(OKABE_ITO):
        return OKABE_ITO[:max(n, 1)]
    cmap = plt.get_cmap("tab20" if n <= 20 else "turbo")
    return [cmap(i) for i in range(n)] if n <= 20 else [cmap(0.05 + 0.9 * i / (n - 1)) for i in range(n)]


MAX_LEGEND = 30  # configurations named in a legend; past that, the rest are counted
LEGEND_WRAP = 48  # characters per line of a legend entry below the panels
CHARS_PER_INCH = 17  # of x-small legend text (about 7 points), to lay the entries out in columns
LINE_INCHES = 0.16  # the height of a line of x-small legend text, spacing included


def legend(where, colour_handles: list, other_handles: Sequence = (), **kwargs) -> None:
    """A legend that stays readable, naming at most ``MAX_LEGEND`` configurations: inside the
    panel ``where`` for up to 8 short entries; for more, or longer ones, below the figure's panels,
    entries wrapped at ``LEGEND_WRAP`` characters in as many columns as the figure's width holds,
    the figure made taller by the legend's height so that the panels keep their size."""
    import textwrap

    colour_handles = list(colour_handles)
    if len(colour_handles) > MAX_LEGEND:
        rest = len(colour_handles) - MAX_LEGEND
        colour_handles = colour_handles[:MAX_LEGEND] + [
            Line2D([], [], color="none", label=f"… and {rest} more configurations (narrow with --filter)")]
    handles = colour_handles + list(other_handles)
    short = all(len(h.get_label()) <= LEGEND_WRAP for h in handles)
    if not isinstance(where, Axes) or (len(handles) <= 8 and short):
        where.legend(handles=handles, **{"fontsize": "small", "loc": "best", **kwargs})
        return
    fig = where.figure
    for h in handles:
        h.set_label(textwrap.fill(h.get_label(), LEGEND_WRAP, break_long_words=False))
    lines = [h.get_label().split("\n") for h in handles]
    widest = max(len(line) for entry in lines for line in entry) + 6  # the handle and the gap
    ncols = max(1, min(len(handles), int(fig.get_figwidth() * CHARS_PER_INCH // widest)))
    height = LINE_INCHES * max(sum(len(e) for e in lines[i::ncols]) for i in range(ncols)) + 0.3  # the tallest column
    fig.set_figheight(fig.get_figheight() + height)
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize="x-small", **kwargs)


def _style(i: int, n: int = len(OKABE_ITO)) -> dict:
    return {"color": palette(n)[i % max(n, 1)], "linestyle": "-"}


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
    theory = (members[0].summary.get("theory") or {})
    if not theory.get("applies"):
        return {}
    out = {"act_var": np.array(theory["act_var"], float)}
    last = geo_mean([r.profile("init", "grad_var")[-1:] for r in members], per_layer=True)
    if len(last):
        out["grad_var"] = np.array(theory["grad_ratio"], float) * last[0]
    return out


def profile_figure(runs: Sequence[RunResult], keys: Sequence[str], steps: Sequence[str] = ("init", "end"),
                   theory: bool = True) -> Figure:
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
                    ax.plot(np.arange(1, len(values) + 1), values, color=colour, linestyle=STYLES[j % len(STYLES)],
                            marker="o" if len(values) <= 12 else None, markersize=3,
                            label=f"{label} (step {found[0][0]})")
        if theory:
            predicted = _theory_profile(members)
            for ax, column in zip(axes, ("act_var", "grad_var")):
                if column in predicted:
                    values = predicted[column]
                    ax.plot(np.arange(1, len(values) + 1), values, color=colour, linestyle=THEORY_STYLE,
                            linewidth=1.2, alpha=0.9, label=f"{label} (mean-field theory)")
    titles = ("activation variance across depth", "back-propagated gradient variance ∂ℓ/∂z across depth")
    for ax, title, ylabel in zip(axes, titles, ("Var(a)", "Var(∂ℓ/∂z)")):
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("hidden layer (1 = nearest the input)")
        ax.set_ylabel(ylabel + " (log scale)")
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
    colour_handles = [Line2D([], [], color=colours[i], label=_with_seeds(label, members))
                      for i, (label, members) in enumerate(groups.items())]
    style_handles = _step_handles(steps, drawn)
    if theory and any(_theory_profile(m) for m in groups.values()):
        style_handles.append(Line2D([], [], color="0.3", linestyle=THEORY_STYLE, label="mean-field theory (init)"))
    legend(axes[1], colour_handles, style_handles)
    fig.suptitle("per-layer signal propagation (mean over seeds)")
    return fig


def _curve(run: RunResult) -> dict[str, np.ndarray]:
    cols: dict[str, list[float]] = {"step": [], "train_loss": [], "test_acc": []}
    with open(run.path / METRICS_FILE, newline="") as f:
        for row in csv.DictReader(f):
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
            ax.plot(longest["step"][ok], mean[ok], label=_with_seeds(label, members),
                    marker="o" if ok.sum() <= 12 else None,
                    markersize=3, **_style(i, len(groups)))
    ax_loss.set(xlabel="step", ylabel="training loss (mean since previous point)", title="training loss")
    ax_loss.set_yscale("log")
    ax_acc.set(xlabel="step", ylabel="test accuracy (%)", title="test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
    handles, _ = ax_acc.get_legend_handles_labels()
    legend(ax_acc, handles)
    fig.suptitle("training curves (mean over seeds)")
    return fig


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
    fig, ax = plt.subplots(figsize=(min(1.1 * len(xs) + 3.5, 40), min(0.6 * len(ys) + 2.5, 30)),
                           constrained_layout=True)
    finite = grid[np.isfinite(grid)]
    image = ax.imshow(grid, cmap="cividis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs], rotation=90 if len(xs) > 12 else 0,
                  fontsize="x-small" if len(xs) > 30 else None)
    ax.set_yticks(range(len(ys)), [str(v) for v in ys], fontsize="x-small" if len(ys) > 30 else None)
    xname, yname = key_headers([x, y])
    ax.set(xlabel=xname, ylabel=yname)
    label = "test accuracy (%)" if percent else HEADERS.get(metric, metric)
    ax.set_title(f"{label} over {xname} × {yname} (mean over seeds)")
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    status = {(r[y], r[x]): r["status"] for r in rows}
    if len(xs) * len(ys) <= 400:  # past that the numbers would be unreadable: the colours say it
        for (i, j), v in np.ndenumerate(grid):
            text = (status.get((ys[i], xs[j]), "–") if status.get((ys[i], xs[j]), "ok") != "ok" else "–") \
                if not np.isfinite(v) else (f"{v:.1f}" if percent else f"{v:.3g}")
            ax.text(j, i, text, ha="center", va="center", fontsize="small" if len(xs) <= 12 else "x-small",
                    color="black" if np.isfinite(v) and v > mid else ("0.3" if not np.isfinite(v) else "white"))
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
        rows = np.interp(np.log(np.clip(limit, 1e-9, 1e9)), log_depths, np.arange(len(depths)),
                         left=-0.5, right=len(depths) - 0.5)
    ax.plot(cols, rows, color="white", linewidth=2.2)
    ax.plot(cols, rows, color=OKABE_ITO[3], linewidth=1.4, linestyle="--", label="6ξ_c (mean-field theory)")
    ax.legend(loc="upper right", fontsize="small")


def _order(v):
    return (0, float(v), "") if isinstance(v, int | float) and not isinstance(v, bool) else (1, 0.0, str(v))


# --------------------------------------------------------------------------------------------
# Distributions: histograms.csv (per layer, per logged step) and jacobian.csv (singular values)

HOW_TO_HISTOGRAMS = "runs write it when log.histograms > 0 (e.g. initlab run CONFIG --set log.histograms=64)"
HOW_TO_JACOBIAN = ("runs write it when log.jacobian > 0 and model.norm is not batchnorm "
                   "(e.g. initlab run CONFIG --set log.jacobian=4)")
MAX_LAYERS = 8  # curves (histograms) or rows (colorful) per configuration; deeper nets show this many


class Bins(NamedTuple):
    """The non-empty bins of one (step, layer, quantity) histogram, as histograms.csv lists them."""

    lo: np.ndarray  # (bins,) lower edges; -inf for underflow, NaN for the NaN bin
    hi: np.ndarray  # (bins,) upper edges; +inf for overflow, NaN for the NaN bin
    count: np.ndarray  # (bins,) values in each bin


class Histograms:
    """One quantity's rows of a run's histograms.csv (hidden layers only), indexed by (step, layer)."""

    def __init__(self, step: np.ndarray, layer: np.ndarray, lo: np.ndarray, hi: np.ndarray, count: np.ndarray):
        order = np.lexsort((layer, step))  # rows of one (step, layer) become one contiguous slice
        step, layer = step[order], layer[order]
        self._bins = Bins(lo[order], hi[order], count[order])
        starts = np.flatnonzero(np.r_[True, (np.diff(step) != 0) | (np.diff(layer) != 0)]) if len(step) else []
        ends = np.r_[starts[1:], len(step)] if len(step) else []
        self._slices = {(int(step[a]), int(layer[a])): slice(int(a), int(b)) for a, b in zip(starts, ends)}

    def steps(self) -> list[int]:
        """The logged steps, ascending."""
        return sorted({s for s, _ in self._slices})

    def layers(self, step: int | None = None) -> list[int]:
        """The hidden layers (1-based) with a histogram at ``step`` (at any step if None), ascending."""
        return sorted({layer for s, layer in self._slices if step is None or s == step})

    def bins(self, step: int, layer: int) -> Bins:
        """The non-empty bins of ``layer`` at ``step`` (none if it was not logged)."""
        cut = self._slices.get((step, layer), slice(0, 0))
        return Bins(*(a[cut] for a in self._bins))


def _cell(text: str) -> float:
    """A float cell: written with repr (``inf``, ``-inf``), NaN as an empty cell."""
    return float(text) if text else math.nan


def _check_header(path: Path, header: list[str] | None, columns: Sequence[str]) -> None:
    if header != list(columns):
        raise InitlabError(f"{path}: expected columns {','.join(columns)}, found {','.join(header or []) or 'none'}")


def read_histograms(path: str | Path, quantity: str) -> Histograms:
    """The hidden layers' histograms of ``quantity`` (pre, act, grad or weight) in a histograms.csv,
    read in one pass that keeps only that quantity's rows."""
    path = Path(path)
    cols: tuple[list, ...] = ([], [], [], [], [])
    with open(path, newline="") as f:
        reader = csv.reader(f)
        _check_header(path, next(reader, None), HISTOGRAM_COLUMNS)
        try:
            for step, layer, kind, q, lo, hi, count in reader:
                if q == quantity and kind == "hidden":
                    for col, value in zip(cols, (int(step), int(layer), _cell(lo), _cell(hi), float(count))):
                        col.append(value)
        except ValueError as e:
            raise InitlabError(f"{path}, line {reader.line_num}: not a histograms.csv row ({e})") from None
    step, layer, lo, hi, count = cols
    return Histograms(np.array(step, dtype=int), np.array(layer, dtype=int), np.array(lo, dtype=float),
                      np.array(hi, dtype=float), np.array(count, dtype=float))  # counts: integers, 3.0 read too


def read_jacobian(path: str | Path) -> dict[int, np.ndarray]:
    """A jacobian.csv as {step: the singular values of every probe example at that step, pooled}."""
    path = Path(path)
    by_step: dict[int, list[float]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        _check_header(path, next(reader, None), JACOBIAN_COLUMNS)
        try:
            for step, _example, _index, value in reader:
                by_step.setdefault(int(step), []).append(_cell(value))
        except ValueError as e:
            raise InitlabError(f"{path}, line {reader.line_num}: not a jacobian.csv row ({e})") from None
    return {s: np.array(v, dtype=float) for s, v in sorted(by_step.items())}


class Gridded(NamedTuple):
    """Several histograms of one quantity (layers, or steps of one layer) on one shared grid."""

    edges: np.ndarray  # (bins + 1,) bin edges on the value axis (|value| for log2 bins)
    centres: np.ndarray  # (bins,) where each bin is drawn: the midpoint, or the geometric centre for log2 bins
    counts: np.ndarray  # (inputs, bins) counts on the grid; zero where histograms.csv omitted an empty bin
    totals: np.ndarray  # (inputs,) every value histogrammed, drawn or not
    undrawn: list[dict[str, int]]  # per input: counts off the grid, by reason (under/overflow, zeros, NaN, ...)


def _on_grid(bins: Sequence[Bins], edges: np.ndarray, index, undrawn) -> Gridded:
    """Shared by both binnings: ``index(b)`` gives (mask of rows on the grid, their grid index)."""
    n = max(len(edges) - 1, 0)
    counts = np.zeros((len(bins), n))
    for i, b in enumerate(bins):
        ok, idx = index(b)
        np.add.at(counts[i], np.clip(idx, 0, max(n - 1, 0)), b.count[ok])
    return Gridded(edges, np.array([]), counts, np.array([float(b.count.sum()) for b in bins]),
                   [{reason: int(b.count[mask(b)].sum()) for reason, mask in undrawn.items()} for b in bins])


def _linear_grid(bins: Sequence[Bins], span: tuple[float, float, int] | None = None) -> Gridded:
    """Linear bins on one shared grid: ``span`` = (lo, hi, B), the run's exact bins
    (``initlab.stats.statistics.make_bins``); without it (no config to read), the grid spans the non-empty
    bins at their median width."""
    lo = np.concatenate([b.lo for b in bins]) if bins else np.array([])
    hi = np.concatenate([b.hi for b in bins]) if bins else np.array([])
    inside = np.isfinite(lo) & np.isfinite(hi)
    edges, width = np.array([]), 1.0
    if span is not None:
        start, stop, n = span
        width = (stop - start) / n
        edges = start + (stop - start) * np.arange(n + 1) / n
    elif inside.any():
        width = float(np.median(hi[inside] - lo[inside]))
        first, last = float(lo[inside].min()), float(hi[inside].max())
        edges = first + width * np.arange(max(1, round((last - first) / width)) + 1)

    def index(b: Bins):
        ok = np.isfinite(b.lo) & np.isfinite(b.hi)
        return ok, np.rint((b.lo[ok] - (edges[0] if len(edges) else 0.0)) / width).astype(int)

    grid = _on_grid(bins, edges, index, {"below range": lambda b: b.lo == -np.inf,
                                         "above range": lambda b: b.hi == np.inf, "NaN": lambda b: np.isnan(b.lo)})
    return grid._replace(centres=(edges[:-1] + edges[1:]) / 2)


def _log2_grid(bins: Sequence[Bins], span: tuple[float, float, int] | None = None) -> Gridded:
    """Sign-symmetric log2 bins folded onto |value|: grid bin e holds [2^e, 2^(e+1)) and its negative
    twin [-2^(e+1), -2^e). Exact zeros, ±inf and NaN are off the grid. ``span`` is unused (the
    exponents name the bins)."""

    def exponents(b: Bins):
        ok = np.isfinite(b.lo) & np.isfinite(b.hi) & ((b.lo != 0) | (b.hi != 0))
        return ok, np.rint(np.log2(np.minimum(np.abs(b.lo[ok]), np.abs(b.hi[ok])))).astype(int)

    found = np.concatenate([exponents(b)[1] for b in bins]) if bins else np.array([], dtype=int)
    low = int(found.min()) if len(found) else 0
    edges = 2.0 ** np.arange(low, int(found.max()) + 2) if len(found) else np.array([])

    def index(b: Bins):
        ok, e = exponents(b)
        return ok, e - low

    grid = _on_grid(bins, edges, index, {"zeros": lambda b: (b.lo == 0) & (b.hi == 0),
                                         "±inf": lambda b: np.isinf(b.lo), "NaN": lambda b: np.isnan(b.lo)})
    return grid._replace(centres=np.sqrt(edges[:-1] * edges[1:]))


class Binning(NamedTuple):
    """How a quantity's histogram bins are laid out in histograms.csv, and how they are drawn."""

    grid: Callable[[Sequence[Bins], tuple[float, float, int] | None], Gridded]
    log: bool  # log2 bins: x = |value| on a log axis, y = fraction per bin; else x linear, y = density


LINEAR = Binning(_linear_grid, log=False)
LOG2 = Binning(_log2_grid, log=True)


class Quantity(NamedTuple):
    """A histogrammed quantity of histograms.csv's ``quantity`` column."""

    label: str  # in titles
    symbol: str  # on axes
    binning: Binning


QUANTITIES: Registry[Quantity] = Registry("histogram quantity", {
    "pre": Quantity("pre-activations z", "z", LINEAR),
    "act": Quantity("activations a", "a", LINEAR),
    "grad": Quantity("back-propagated gradients ∂ℓ/∂z", "∂ℓ/∂z", LOG2),
    "weight": Quantity("weights W", "W", LOG2),
})


def _quantity(name: str) -> Quantity:
    if name not in QUANTITIES:
        raise ConfigError(f"--quantity {name!r}: not one of {', '.join(QUANTITIES)}")
    return QUANTITIES[name]


def _step_number(spec: str) -> int | None:
    """--steps entries: init (0), end (None: the last logged step) or a step number."""
    if spec in ("init", "end"):
        return 0 if spec == "init" else None
    try:
        return int(spec)
    except ValueError:
        raise ConfigError(f"--steps {spec!r}: expected init, end or a step number") from None


def _resolve_step(spec: str, logged: Sequence[int]) -> int | None:
    """The logged step ``spec`` names: init → 0 (or the first), end → the last one, a number → the
    logged step nearest to it (the earlier of two as near); None when nothing was logged."""
    want = _step_number(spec)
    if not logged:
        return None
    if want is None:
        return max(logged)
    return min(logged, key=lambda s: (abs(s - want), s))


def _step_label(spec: str, drawn: Sequence[int]) -> str:
    """A line style's legend entry: the step asked for (``step: 100``, ``step: end``), or where no
    run logged it, the logged steps drawn in its place (``step: 100 (nearest logged to 150)``)."""
    want, drawn = _step_number(spec), sorted(set(drawn))
    if spec in ("init", "end") or drawn == [want]:
        return f"step: {spec}"
    if not drawn:
        return f"step: {spec} (no run has it)"
    return f"step{'s' if len(drawn) > 1 else ''}: {', '.join(map(str, drawn))} (nearest logged to {spec})"


def _step_handles(steps: Sequence[str], drawn: dict[int, set[int]]) -> list[Line2D]:
    """One legend entry per step asked for that something was drawn at, in its line style."""
    return [Line2D([], [], color="0.3", linestyle=STYLES[j % len(STYLES)], label=_step_label(s, drawn[j]))
            for j, s in enumerate(steps) if drawn.get(j)]


def _pick_layers(layers: Sequence[int], limit: int = MAX_LAYERS) -> list[int]:
    """All ``layers``, or ``limit`` of them evenly spaced from the first to the last."""
    if len(layers) <= limit:
        return list(layers)
    return [layers[i] for i in np.unique(np.rint(np.linspace(0, len(layers) - 1, limit)).astype(int))]


def _first_seeds(runs: Sequence[RunResult], keys: Sequence[str], filename: str, how_to: str) -> dict[str, RunResult]:
    """Each configuration's lowest-seed run that has ``filename`` (configurations with none are left
    out); an InitlabError saying how to get the file when no run has it."""
    chosen = {}
    for label, members in _groups(runs, keys).items():
        having = [r for r in members if (r.path / filename).is_file()]
        if having:
            chosen[label] = min(having, key=lambda r: _order(r.flat.get("seed", 0)))
    if not chosen:
        raise InitlabError(f"no run has {filename}: {how_to}")
    return chosen


def _span(run: RunResult, quantity: str) -> tuple[float, float, int] | None:
    """The run's linear bins of ``quantity`` (pre or act) as (lo, hi, B), from its config
    (log.histograms, model.activation); None when the config does not say."""
    size, activation = run.flat.get("log.histograms"), run.flat.get("model.activation")
    sized = isinstance(size, int) and not isinstance(size, bool) and size > 0
    if quantity not in ("pre", "act") or not (sized and isinstance(activation, str)):
        return None
    from initlab.stats.statistics import make_bins
    from initlab.theory.shaping import shape_of_flat

    try:
        b = make_bins(quantity, activation, size, shape_of_flat(run.flat))
    except InitlabError:  # an activation this version does not know
        return None
    return b.lo, b.hi, b.n


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2g}%"


def _undrawn_note(undrawn: dict[str, int], total: float) -> str:
    """``3.1% above range, 0.2% NaN``: the mass a panel does not draw (empty when there is none)."""
    return ", ".join(f"{_percent(n / total)} {reason}" for reason, n in undrawn.items() if n and total)


def _panels(n: int, **kwargs):
    """A grid of ``n`` axes (at most 3 a row), the unused ones removed; returns (figure, axes)."""
    ncols = min(max(n, 1), 3)
    nrows = math.ceil(max(n, 1) / ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(max(4.8 * ncols, 6.4), 3.7 * nrows + 1.0),
                             constrained_layout=True, **kwargs)
    for ax in axes.flat[n:]:
        fig.delaxes(ax)
    return fig, list(axes.flat[:n])


def histograms_figure(runs: Sequence[RunResult], keys: Sequence[str], quantity: str = "act",
                      step: str = "init") -> Figure:
    """Per-layer distributions at one step, after Glorot & Bengio 2010 (Figs. 6 and 7): one panel per
    configuration (its first seed's run; seeds are not pooled, so each curve is one network), shared
    axes, one curve per hidden layer (all of them up to MAX_LAYERS, else MAX_LAYERS evenly spaced
    from the first to the last, as the legend's title says).

    ``quantity`` pre or act (linear bins): x = bin centre, y = density, count / (total · bin width),
    so a curve integrates to the fraction of values inside the range; the legend gives the mass below
    and above the range and the NaNs. grad or weight (log2 bins): x = |value| on a log axis (each
    binary exponent at its geometric centre, both signs together), y = fraction of values per bin,
    summing to the fraction of finite non-zero values; the legend gives the zeros, ±inf and NaNs.
    ``step``: init, end (the last logged step) or a number (the last logged step at or before it).
    Runs without histograms.csv are skipped; an InitlabError if none has one."""
    q = _quantity(quantity)
    chosen = _first_seeds(runs, keys, HISTOGRAM_FILE, HOW_TO_HISTOGRAMS)
    fig, axes = _panels(len(chosen), sharex=True, sharey=True)
    drawn = []
    for ax, (label, run) in zip(axes, chosen.items()):
        hist = read_histograms(run.path / HISTOGRAM_FILE, quantity)
        at = _resolve_step(step, hist.steps())
        drawn += [at] if at is not None else []
        seed = f"seed {run.flat.get('seed', 0)}"
        if at is None:
            ax.set_title(f"{label}\n({seed}: no {quantity} histogram at step {step})", fontsize="small")
            continue
        layers = hist.layers(at)
        drawn = _pick_layers(layers)
        grid = q.binning.grid([hist.bins(at, layer) for layer in drawn], _span(run, quantity))
        per_bin = 1.0 if q.binning.log else np.diff(grid.edges)  # fraction per bin, or density per unit
        for i, layer in enumerate(drawn):
            total = grid.totals[i]
            with np.errstate(all="ignore"):
                y = grid.counts[i] / (total * per_bin) if total else np.zeros_like(grid.centres)
            note = _undrawn_note(grid.undrawn[i], total)
            ax.plot(grid.centres, y, color=OKABE_ITO[i % len(OKABE_ITO)],
                    label=f"layer {layer}" + (f" ({note})" if note else ""))
        ax.set_title(f"{label}\n({seed}, step {at})", fontsize="small")
        if drawn:
            ax.legend(fontsize="x-small", loc="best", title_fontsize="x-small",
                      title=f"{len(drawn)} of {len(layers)} layers" if len(drawn) < len(layers) else None)
        ax.grid(True, alpha=0.3)
    for ax in axes:
        if q.binning.log:
            ax.set_xscale("log")
        ax.set_xlabel(f"|{q.symbol}| (log scale)" if q.binning.log else q.symbol)
    axes[0].set_ylabel("fraction of values per binary exponent" if q.binning.log else "density")
    fig.suptitle(f"distribution of {q.label} per hidden layer, {_step_label(step, drawn)}\n"
                 "(after Glorot & Bengio 2010, Figs. 6–7)")
    return fig


def colorful_figure(runs: Sequence[RunResult], keys: Sequence[str], quantity: str = "act") -> Figure:
    """fastai's "colorful dimension" plot (fastai course, lesson 10, 2019; the ActivationStats
    hook's ``color_dim``): a histogram per logged step laid side by side, so the whole of training
    is one image per layer: x = logged step (one column each, ticks name the steps), y = the
    quantity's bin (linear bins: its value; log2 bins: log₂|value|, signs folded), colour =
    log(1 + count) on one cividis scale shared by every image.

    One column per configuration (its first seed's run) and one row per hidden layer drawn: all of
    them up to MAX_LAYERS, else MAX_LAYERS evenly spaced from first to last (each row names its
    layer). Under/overflow, zeros and NaNs are off the image. Runs without histograms.csv are
    skipped; an InitlabError if none has one."""
    q = _quantity(quantity)
    chosen = _first_seeds(runs, keys, HISTOGRAM_FILE, HOW_TO_HISTOGRAMS)
    columns = []  # per configuration: (label, steps, [(layer, image (bins, steps), (y0, y1))])
    for label, run in chosen.items():
        hist = read_histograms(run.path / HISTOGRAM_FILE, quantity)
        steps = hist.steps()
        images = []
        for layer in _pick_layers(hist.layers()):
            grid = q.binning.grid([hist.bins(s, layer) for s in steps], _span(run, quantity))
            if not grid.counts.size:
                continue
            ends = np.log2(grid.edges[[0, -1]]) if q.binning.log else grid.edges[[0, -1]]
            images.append((layer, np.log1p(grid.counts.T), ends))  # (bins, steps)
        columns.append((label, steps, images))
    nrows = max([len(images) for _, _, images in columns] + [1])
    fig, axes = plt.subplots(nrows, len(columns), squeeze=False, constrained_layout=True,
                             figsize=(max(3.4 * len(columns) + 1.4, 6.0), 1.5 * nrows + 1.5))
    top = max([float(image.max()) for _, _, images in columns for _, image, _ in images] + [1.0])
    shown, last = [], None
    for c, (label, steps, images) in enumerate(columns):
        for r in range(nrows):
            ax = axes[r, c]
            if r >= len(images):
                fig.delaxes(ax)
                continue
            layer, image, (y0, y1) = images[r]
            artist = ax.imshow(image, origin="lower", aspect="auto", cmap="cividis", vmin=0, vmax=top,
                               extent=(-0.5, len(steps) - 0.5, y0, y1), interpolation="nearest")
            ticks = np.unique(np.rint(np.linspace(0, len(steps) - 1, min(len(steps), 5))).astype(int))
            ax.set_xticks(ticks, [str(steps[t]) for t in ticks])
            ax.set_ylabel(f"layer {layer}\n{'log₂|' + q.symbol + '|' if q.binning.log else q.symbol}",
                          fontsize="small")
            ax.tick_params(labelsize="x-small")
            if r == 0:
                ax.set_title(label, fontsize="small")
            if r == len(images) - 1:
                ax.set_xlabel("step")
            shown.append(ax)
            last = artist
    if last is not None:
        fig.colorbar(last, ax=shown, label="log(1 + count)", shrink=0.8)
    fig.suptitle(f"colorful dimension (fastai):\nhistograms of {q.label} over training")
    return fig


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
    groups = {label: [r for r in members if (r.path / JACOBIAN_FILE).is_file()]
              for label, members in _groups(runs, keys).items()}
    groups = {label: members for label, members in groups.items() if members}
    if not groups:
        raise InitlabError(f"no run has {JACOBIAN_FILE}: {HOW_TO_JACOBIAN}")
    lines = []  # (configuration index, step index, σ² pooled over examples and seeds, steps drawn)
    drawn: dict[int, set[int]] = {}
    for i, members in enumerate(groups.values()):
        spectra = [read_jacobian(r.path / JACOBIAN_FILE) for r in members]
        for j, spec in enumerate(steps):
            found = [(at, by_step[at], _floor(r, at)) for r, by_step in zip(members, spectra)
                     if (at := _resolve_step(spec, list(by_step))) is not None]
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
            ax.plot(np.sqrt(edges[:-1] * edges[1:]), counts / (len(sq) * np.diff(np.log10(edges))),
                    color=palette(len(groups))[i], linestyle=STYLES[j % len(STYLES)],
                    label=f"{list(groups)[i]} (step {', '.join(map(str, at))})")
            zeros.setdefault(i, []).append((steps[j], 1 - len(pos) / len(sq)))
        ax.set_xlim(min(edges[0], 0.5), max(edges[-1], 2.0))
    ax.axvline(1.0, color="0.4", linestyle=THEORY_STYLE, linewidth=1, label="σ² = 1 (dynamical isometry)")
    ax.set_xscale("log")
    ax.set(xlabel="squared singular value σ² of ∂(last hidden layer)/∂(input) (log scale)",
           ylabel="density per unit log₁₀ σ²", title="input–output Jacobian spectrum (examples and seeds pooled)")
    ax.grid(True, which="major", alpha=0.3)
    colour_handles = []
    for i, label in enumerate(groups):
        below = ", ".join(f"{_percent(z)} at {at}" for at, z in zeros.get(i, []) if z)
        colour_handles.append(Line2D([], [], color=palette(len(groups))[i],
                                     label=label + (f"\n(σ below float32 resolution, not drawn: {below})"
                                                    if below else "")))
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


# --------------------------------------------------------------------------------------------
# Figure kinds: what `initlab plot --kind` draws


@dataclass(frozen=True)
class PlotOptions:
    """The options a figure kind may read (those of `initlab plot`)."""

    steps: tuple[str, ...] = ("init", "end")  # init, end or step numbers; histograms use the first
    x: str | None = None  # heatmap columns: a config key (default: the second varied key)
    y: str | None = None  # heatmap rows: a config key (default: the first varied key)
    metric: str = "test_acc"  # heatmap value
    quantity: str = "act"  # histograms and colorful: pre, act, grad or weight
    statistic: str = "pre_delta_abs_mean"  # coordcheck: a coordinate-check statistic (initlab.report.width.COORD_STATS)


class NothingToDraw(InitlabError):
    """A figure kind has nothing to draw for these runs: make_plots skips it when other kinds were
    asked for, and reports it when it was the only one."""


UNDERFLOW_COLUMNS = ("grad_underflow", "wgrad_underflow")
# the config keys that make a run's number format: one colour each in the underflow figure
FORMAT_KEYS = ("model.dtype", "model.precision", "train.loss_scale", "train.loss_scale_init",
               "train.loss_scale_period")


def _format_label(run: RunResult) -> str:
    """A run's number format in a few words: ``float16, loss scale dynamic``."""
    f = run.flat
    words = [str(f.get("model.dtype", "float32"))]
    if f.get("model.precision", "mixed") != "mixed":
        words.append(f"{f['model.precision']} precision")
    if str(f.get("train.loss_scale", "none")) != "none":
        words.append(f"loss scale {f['train.loss_scale']}")
    return ", ".join(words)


# Each number format's own colour, far apart in hue (float16 vermillion, float32 blue), the same in
# every figure; a variant of one (loss scaling, pure precision) takes the next of VARIANT_COLOURS.
FORMAT_COLOURS = {"float32": OKABE_ITO[0], "float16": OKABE_ITO[3], "bfloat16": OKABE_ITO[2], "float64": OKABE_ITO[6]}
VARIANT_COLOURS = [OKABE_ITO[i] for i in (4, 1, 5, 7)]
STRUCTURAL = "0.85"  # the fill of the share that is zero in the widest format too


def _widest(labels: Sequence[str], runs: Sequence[RunResult]) -> str | None:
    """Of the format labels drawn, the one whose dtype reaches furthest toward zero (most mantissa
    bits next, no loss scaling first), if it has float32's range or more: its zeros are the network's
    own (inactive ReLU units, constant input pixels), not format underflow. None otherwise."""
    from initlab.nn.formats import FORMATS

    def key(label: str):
        fmt = FORMATS[str(next(r for r in runs if _format_label(r) == label).flat.get("model.dtype", "float32"))]
        return fmt.smallest_normal, -fmt.mantissa_bits, label != label.split(",")[0]

    best = min(labels, key=key, default=None)
    return best if best is not None and key(best)[0] <= FORMATS["float32"].smallest_normal else None


def underflow_figure(runs: Sequence[RunResult], keys: Sequence[str], steps: Sequence[str] = ("init", "end")) -> Figure:
    """The share of ∂L/∂z's and ∂L/∂W's entries that are zero or subnormal in each run's number
    format, against layer (the output layer last): one row of two panels per setup (the varied
    keys that are not the format's), one colour per number format (``FORMAT_COLOURS``, the same in
    every row; mean over seeds), one line style per step (init, end, or the logged step nearest a
    number). Exact zeros count in every format, so the share that is zero or subnormal in the widest
    format drawn (float32 or wider) at every step shown is filled grey beneath: structural zeros
    (a ReLU's inactive units, MNIST's constant border pixels in layer 1's ∂L/∂W), not underflow; what
    a narrower format adds above it is what the format lost."""
    setups = _groups(runs, [k for k in keys if k not in FORMAT_KEYS])
    formats = sorted({_format_label(r) for r in runs}, key=lambda s: (s.split(",")[0], s))
    variants = iter(VARIANT_COLOURS * len(formats))
    colour = {f: FORMAT_COLOURS[f] if f in FORMAT_COLOURS else next(variants) for f in formats}
    fig, grid = plt.subplots(len(setups), 2, figsize=(11, 3.4 * len(setups) + 0.8), squeeze=False,
                             constrained_layout=True, sharey=True)
    drawn: dict[int, set[int]] = {}
    floor = None
    for axes, (setup, members) in zip(grid, setups.items()):
        widest = _widest(sorted({_format_label(r) for r in members}), members)
        floor = floor or widest
        for fmt in formats:
            tables = [t for t in (layer_rows(r, UNDERFLOW_COLUMNS, output=True) for r in members
                                  if _format_label(r) == fmt) if t]
            lowest: dict[int, np.ndarray] = {}  # per panel: the widest format's share at every step shown
            for j, step in enumerate(steps):
                picked = [(at, t[at]) for t in tables if (at := _resolve_step(step, sorted(t))) is not None]
                for k, (ax, column) in enumerate(zip(axes, UNDERFLOW_COLUMNS)):
                    values = [p[1][column] for p in picked]
                    if not values or len({len(v) for v in values}) != 1:
                        continue
                    mean = np.nanmean(np.array(values), axis=0)
                    ax.plot(np.arange(1, len(mean) + 1), mean, color=colour[fmt], linestyle=STYLES[j % len(STYLES)],
                            marker="o" if len(mean) <= 25 else None, markersize=3)
                    drawn.setdefault(j, set()).update(p[0] for p in picked)
                    lowest[k] = np.fmin(lowest[k], mean) if k in lowest else mean
            if fmt == widest:
                for k, share in lowest.items():
                    axes[k].fill_between(np.arange(1, len(share) + 1), 0, np.nan_to_num(share), color=STRUCTURAL,
                                         zorder=0, linewidth=0)
        for ax, what in zip(axes, ("∂L/∂z", "∂L/∂W")):
            ax.set_title(f"{setup}: {what}" if len(setups) > 1 or setup != "run" else what, fontsize="medium")
    if not drawn:
        raise NothingToDraw("no run has the format statistics (grad_underflow, wgrad_underflow) in layers.csv")
    for ax in grid.flat:
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
    for ax in grid[-1]:
        ax.set_xlabel("layer (1 = nearest the input; the last is the output layer)")
    for ax in grid[:, 0]:
        ax.set_ylabel("share zero or subnormal")
    handles = [Line2D([], [], color=colour[f], label=f) for f in formats]
    handles += _step_handles(steps, drawn)
    if floor:
        from matplotlib.patches import Patch

        handles.append(Patch(color=STRUCTURAL, label=f"zero in {floor} too: structural, not underflow"))
    fig.legend(handles=handles, fontsize="small", loc="outside lower center", ncols=min(len(handles), 4))
    fig.suptitle("gradient entries zero or subnormal in each number format, per layer (mean over seeds)"
                 + ("\nexact zeros count in every format: the grey share is zero in the widest format as well "
                    "(inactive units, constant inputs); above it, lost to a narrower format" if floor else
                    "\nexact zeros (inactive units, constant inputs) count too: no float32 or wider run here to "
                    "tell them from underflow"))
    return fig


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
            raise NothingToDraw((f"no varied key makes a grid with {given}" if given else "no two config keys vary "
                                 "as a grid here") + " (every value of one run with every value of the other): "
                                "pass --x KEY --y KEY")
        hy, hx = pair if given is None else ((hy, pair[1]) if hy else (pair[1], hx))
    return heatmap_figure(runs, hx, hy, options.metric)


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
        raise NothingToDraw(f"coordcheck needs completed runs at two or more values of model.width with {statistic} "
                            f"in layers.csv (log.stats: [{statistic}])")
    def layers_of(d):  # each configuration its own layers (a sweep may vary depth too), the output last
        n = len(next(iter(d.values[d.widths[0]].values())))
        return n, _pick_layers(list(range(1, n)), MAX_LAYERS - 1) + [n]

    ncols = max(len(layers_of(d)[1]) for d in data)
    fig, axes = plt.subplots(len(data), ncols, squeeze=False, sharex=True, sharey=True,
                             figsize=(2.6 * ncols + 1.5, 2.5 * len(data) + 1.2), constrained_layout=True)
    cmap = plt.get_cmap("cividis_r")
    for row, d in zip(axes, data):
        n_layers, layers = layers_of(d)
        for ax in row[len(layers):]:
            ax.set_visible(False)
        row = row[:len(layers)]
        steps = [s for s in d.steps if statistic != "pre_delta_abs_mean" or s > 0]
        steps = [steps[i] for i in _pick_layers(list(range(len(steps))), MAX_COORD_STEPS)] if steps else []
        for ax, layer in zip(row, layers):
            for j, step in enumerate(steps):
                y = np.array([d.values[w][step][layer - 1] for w in d.widths])
                ok = np.isfinite(y) & (y > 0)
                ax.plot(np.array(d.widths)[ok], y[ok], marker="o", markersize=3,
                        color=cmap(0.15 + 0.85 * j / max(len(steps) - 1, 1)), label=f"step {step}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(("output layer" if layer == n_layers else f"layer {layer}") + f"\n{d.label}",
                         fontsize="x-small")
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
    finite = [v for table in data.values() for lrs in table.values() for vs in lrs.values() for v in vs
              if math.isfinite(v)]
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
                ax.plot([lrs[best]], [mean[best]], marker="*", markersize=11, color=colour, markeredgecolor="black",
                        markeredgewidth=0.5)
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


FigureKind = Callable[[Sequence[RunResult], Sequence[str], PlotOptions], Figure]

FIGURES: Registry[FigureKind] = Registry("figure kind", {
    "profile": lambda runs, keys, o: profile_figure(runs, keys, o.steps),
    "curves": lambda runs, keys, o: curves_figure(runs, keys),
    "heatmap": _heatmap_kind,
    "histograms": lambda runs, keys, o: histograms_figure(runs, keys, o.quantity, o.steps[0] if o.steps else "init"),
    "colorful": lambda runs, keys, o: colorful_figure(runs, keys, o.quantity),
    "spectrum": lambda runs, keys, o: spectrum_figure(runs, keys, o.steps),
    "underflow": lambda runs, keys, o: underflow_figure(runs, keys, o.steps),
    "coordcheck": lambda runs, keys, o: coordcheck_figure(runs, keys, o.statistic),
    "transfer": lambda runs, keys, o: transfer_figure(runs, keys),
})
KINDS = tuple(FIGURES)
DEFAULT_KINDS = ("profile", "curves", "heatmap")  # need only what every run writes
# saved as <kind>-<quantity>.png, so one quantity's does not replace another's
PER_QUANTITY = ("histograms", "colorful")


def make_plots(paths: Sequence[str | Path], *, out: str | Path | None = None, kinds: Sequence[str] = DEFAULT_KINDS,
               steps: Sequence[str] = ("init", "end"), x: str | None = None, y: str | None = None,
               metric: str = "test_acc", filters: Sequence[str] = (), quantity: str = "act",
               statistic: str = "pre_delta_abs_mean",
               on_skip: Callable[[str, str], None] | None = None) -> list[Path]:
    """Write the requested figures (names from FIGURES) as ``<kind>.png`` (histograms and colorful:
    ``<kind>-<quantity>.png``; to ``out``, or beside the
    runs) and return their paths. A heatmap needs two keys: ``x``/``y``, or two config keys that
    vary as a grid (``grid_keys``). A figure with nothing to draw is skipped, with
    ``on_skip(kind, reason)``, unless it is the only kind asked for (then its reason is the error).
    ``quantity`` is the histogrammed quantity of histograms and colorful, ``statistic`` the
    coordinate check's."""
    if not kinds:
        raise ConfigError(f"--kind: name at least one figure ({', '.join(KINDS)})")
    for k in kinds:
        FIGURES.get(k, "--kind")
    from initlab.report.tables import METRICS

    if metric not in METRICS + ("theory_ratio",):
        raise ConfigError(f"--metric {metric!r}: not one of {', '.join(METRICS + ('theory_ratio',))}")
    _quantity(quantity)
    from initlab.report.width import COORD_STATS

    if statistic not in COORD_STATS:
        raise ConfigError(f"--stat {statistic!r}: not one of {', '.join(COORD_STATS)}")
    for s in steps:
        _step_number(s)
    runs, _ = discover(paths)
    runs = apply_filters(runs, filters)
    runs = [r for r in runs if r.status in ("completed", "diverged")]
    if not runs:
        raise InitlabError("no completed or diverged runs to plot under " + ", ".join(map(str, paths)))
    keys = varied_keys(runs)
    first = Path(paths[0])
    target_dir = Path(out) if out is not None else (first if first.is_dir() else first.parent)
    target_dir.mkdir(parents=True, exist_ok=True)
    options = PlotOptions(tuple(steps), x, y, metric, quantity, statistic)
    written = []
    for kind in kinds:
        try:
            fig = FIGURES[kind](runs, keys, options)
        except NothingToDraw as e:
            if len(kinds) == 1:
                raise
            if on_skip is not None:
                on_skip(kind, str(e))
            continue
        name = f"{kind}-{quantity}" if kind in PER_QUANTITY else kind
        written.append(save(fig, target_dir / f"{name}.png"))
    return written


FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def check_figure_path(path: str | Path, flag: str = "--plot") -> Path:
    """A path a figure can be written to (by its suffix), or an InitlabError before any work."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise InitlabError(f"{flag} {path}: a figure is written as {', '.join(FIGURE_SUFFIXES)} (by the file's "
                           "suffix); e.g. phase.png")
    if path.is_dir():
        raise InitlabError(f"{flag} {path}: is a folder; give a file name, e.g. {path / 'phase.png'}")
    return path


def save(fig: Figure, path: str | Path) -> Path:
    """Write a figure (PNG, PDF or SVG, by the suffix) and free it."""
    path = check_figure_path(path, "figure")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def phase_figure(table: dict) -> Figure:
    """χ₁ and ξ_c against σ_w² for one activation and σ_b², the critical point marked."""
    rows = table["rows"]
    s = [r["sigma_w2"] for r in rows]
    fig, (ax_chi, ax_xi) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    ax_chi.plot(s, [r["chi1"] for r in rows], marker="o", color=OKABE_ITO[0], label="χ₁")
    ax_chi.axhline(1.0, color="0.4", linestyle=":", label="χ₁ = 1")
    ax_xi.plot(s, [r["xi_c"] for r in rows], marker="o", color=OKABE_ITO[1], label="ξ_c")
    ax_xi.set_yscale("log")
    crit = table["critical_sigma_w2"]
    for ax in (ax_chi, ax_xi):
        if math.isfinite(crit):
            ax.axvline(crit, color=OKABE_ITO[3], linestyle="--", label=f"critical σ_w² = {crit:.3g}")
        ax.set_xlabel("σ_w²")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    ax_chi.set(ylabel="χ₁ (gradient growth per layer)", title="χ₁: below 1 ordered, above 1 chaotic")
    ax_xi.set(ylabel="ξ_c (layers, log scale)", title="depth scale ξ_c (trainable to ≈ 6ξ_c)")
    fig.suptitle(f"mean-field phase diagram: {table['activation']}, σ_b² = {table['sigma_b2']:g}")
    return fig
