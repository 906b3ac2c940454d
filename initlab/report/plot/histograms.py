"""Distributions from histograms.csv (per layer, per logged step): per-layer histograms at one
step (Glorot & Bengio 2010, Figs. 6–7) and fastai's "colorful dimension" over the whole of
training, on the binnings of the QUANTITIES registry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from initlab.errors import ConfigError, InitlabError
from initlab.registry import Registry
from initlab.report.plot.base import (
    OKABE_ITO,
    _groups,
    _order,
    _panels,
    _percent,
    _pick_layers,
    _resolve_step,
    _step_label,
)
from initlab.report.results import RunResult
from initlab.runfolder import reader
from initlab.runfolder.files import HISTOGRAM_FILE


HOW_TO_HISTOGRAMS = "runs write it when log.histograms > 0 (e.g. initlab run CONFIG --set log.histograms=64)"


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


def read_histograms(path: str | Path, quantity: str) -> Histograms:
    """The hidden layers' histograms of ``quantity`` (pre, act, grad or weight) in a histograms.csv
    (its rows read by ``initlab.runfolder.reader.read_histograms``), indexed by (step, layer)."""
    return Histograms(*reader.read_histograms(path, quantity))


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
    return Gridded(
        edges,
        np.array([]),
        counts,
        np.array([float(b.count.sum()) for b in bins]),
        [{reason: int(b.count[mask(b)].sum()) for reason, mask in undrawn.items()} for b in bins],
    )


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

    grid = _on_grid(
        bins,
        edges,
        index,
        {
            "below range": lambda b: b.lo == -np.inf,
            "above range": lambda b: b.hi == np.inf,
            "NaN": lambda b: np.isnan(b.lo),
        },
    )
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

    grid = _on_grid(
        bins,
        edges,
        index,
        {
            "zeros": lambda b: (b.lo == 0) & (b.hi == 0),
            "±inf": lambda b: np.isinf(b.lo),
            "NaN": lambda b: np.isnan(b.lo),
        },
    )
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


QUANTITIES: Registry[Quantity] = Registry(
    "histogram quantity",
    {
        "pre": Quantity("pre-activations z", "z", LINEAR),
        "act": Quantity("activations a", "a", LINEAR),
        "grad": Quantity("back-propagated gradients ∂ℓ/∂z", "∂ℓ/∂z", LOG2),
        "weight": Quantity("weights W", "W", LOG2),
    },
)


def _quantity(name: str) -> Quantity:
    if name not in QUANTITIES:
        raise ConfigError(f"--quantity {name!r}: not one of {', '.join(QUANTITIES)}")
    return QUANTITIES[name]


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


def _undrawn_note(undrawn: dict[str, int], total: float) -> str:
    """``3.1% above range, 0.2% NaN``: the mass a panel does not draw (empty when there is none)."""
    return ", ".join(f"{_percent(n / total)} {reason}" for reason, n in undrawn.items() if n and total)


def histograms_figure(
    runs: Sequence[RunResult], keys: Sequence[str], quantity: str = "act", step: str = "init"
) -> Figure:
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
    drawn = []  # the step drawn for each run (the suptitle says which)
    for ax, (label, run) in zip(axes, chosen.items()):
        hist = read_histograms(run.path / HISTOGRAM_FILE, quantity)
        at = _resolve_step(step, hist.steps())
        drawn += [at] if at is not None else []
        seed = f"seed {run.flat.get('seed', 0)}"
        if at is None:
            ax.set_title(f"{label}\n({seed}: no {quantity} histogram at step {step})", fontsize="small")
            continue
        layers = hist.layers(at)
        picked = _pick_layers(layers)
        grid = q.binning.grid([hist.bins(at, layer) for layer in picked], _span(run, quantity))
        per_bin = 1.0 if q.binning.log else np.diff(grid.edges)  # fraction per bin, or density per unit
        for i, layer in enumerate(picked):
            total = grid.totals[i]
            with np.errstate(all="ignore"):
                y = grid.counts[i] / (total * per_bin) if total else np.zeros_like(grid.centres)
            note = _undrawn_note(grid.undrawn[i], total)
            ax.plot(
                grid.centres,
                y,
                color=OKABE_ITO[i % len(OKABE_ITO)],
                label=f"layer {layer}" + (f" ({note})" if note else ""),
            )
        ax.set_title(f"{label}\n({seed}, step {at})", fontsize="small")
        if picked:
            ax.legend(
                fontsize="x-small",
                loc="best",
                title_fontsize="x-small",
                title=f"{len(picked)} of {len(layers)} layers" if len(picked) < len(layers) else None,
            )
        ax.grid(True, alpha=0.3)
    for ax in axes:
        if q.binning.log:
            ax.set_xscale("log")
        ax.set_xlabel(f"|{q.symbol}| (log scale)" if q.binning.log else q.symbol)
    axes[0].set_ylabel("fraction of values per binary exponent" if q.binning.log else "density")
    fig.suptitle(
        f"distribution of {q.label} per hidden layer, {_step_label(step, drawn)}\n"
        "(after Glorot & Bengio 2010, Figs. 6–7)"
    )
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
    fig, axes = plt.subplots(
        nrows,
        len(columns),
        squeeze=False,
        constrained_layout=True,
        figsize=(max(3.4 * len(columns) + 1.4, 6.0), 1.5 * nrows + 1.5),
    )
    top = max([float(image.max()) for _, _, images in columns for _, image, _ in images] + [1.0])
    shown, last = [], None
    for c, (label, steps, images) in enumerate(columns):
        for r in range(nrows):
            ax = axes[r, c]
            if r >= len(images):
                fig.delaxes(ax)
                continue
            layer, image, (y0, y1) = images[r]
            artist = ax.imshow(
                image,
                origin="lower",
                aspect="auto",
                cmap="cividis",
                vmin=0,
                vmax=top,
                extent=(-0.5, len(steps) - 0.5, y0, y1),
                interpolation="nearest",
            )
            ticks = np.unique(np.rint(np.linspace(0, len(steps) - 1, min(len(steps), 5))).astype(int))
            ax.set_xticks(ticks, [str(steps[t]) for t in ticks])
            ax.set_ylabel(f"layer {layer}\n{'log₂|' + q.symbol + '|' if q.binning.log else q.symbol}", fontsize="small")
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
