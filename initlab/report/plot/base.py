"""What every figure family shares: the colour-blind-safe palette and line styles, legends that
stay readable, runs grouped by configuration, the steps of ``--steps``, panel grids, the options a
figure kind reads, and writing a figure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from initlab.errors import ConfigError, InitlabError
from initlab.report.results import RunResult, config_label


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
        return OKABE_ITO[: max(n, 1)]
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
            Line2D([], [], color="none", label=f"… and {rest} more configurations (narrow with --filter)")
        ]
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


def _order(v):
    return (0, float(v), "") if isinstance(v, int | float) and not isinstance(v, bool) else (1, 0.0, str(v))


MAX_LAYERS = 8  # curves (histograms) or rows (colorful) per configuration; deeper nets show this many


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
    return [
        Line2D([], [], color="0.3", linestyle=STYLES[j % len(STYLES)], label=_step_label(s, drawn[j]))
        for j, s in enumerate(steps)
        if drawn.get(j)
    ]


def _pick_layers(layers: Sequence[int], limit: int = MAX_LAYERS) -> list[int]:
    """All ``layers``, or ``limit`` of them evenly spaced from the first to the last."""
    if len(layers) <= limit:
        return list(layers)
    return [layers[i] for i in np.unique(np.rint(np.linspace(0, len(layers) - 1, limit)).astype(int))]


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2g}%"


def _panels(n: int, **kwargs):
    """A grid of ``n`` axes (at most 3 a row), the unused ones removed; returns (figure, axes)."""
    ncols = min(max(n, 1), 3)
    nrows = math.ceil(max(n, 1) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        squeeze=False,
        figsize=(max(4.8 * ncols, 6.4), 3.7 * nrows + 1.0),
        constrained_layout=True,
        **kwargs,
    )
    for ax in axes.flat[n:]:
        fig.delaxes(ax)
    return fig, list(axes.flat[:n])


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


FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def check_figure_path(path: str | Path, flag: str = "--plot") -> Path:
    """A path a figure can be written to (by its suffix), or an InitlabError before any work."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise InitlabError(
            f"{flag} {path}: a figure is written as {', '.join(FIGURE_SUFFIXES)} (by the file's suffix); e.g. phase.png"
        )
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
