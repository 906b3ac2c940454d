"""What ``initlab plot --kind`` draws: the FIGURES registry and ``make_plots``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from initlab.errors import ConfigError, InitlabError
from initlab.registry import Registry
from initlab.report.plot.base import NothingToDraw, PlotOptions, _step_number, save
from initlab.report.plot.curves import curves_figure
from initlab.report.plot.heatmap import _heatmap_kind
from initlab.report.plot.histograms import _quantity, colorful_figure, histograms_figure
from initlab.report.plot.profile import profile_figure
from initlab.report.plot.spectrum import spectrum_figure
from initlab.report.plot.underflow import underflow_figure
from initlab.report.plot.widths import coordcheck_figure, transfer_figure
from initlab.report.results import RunResult, apply_filters, discover, varied_keys


FigureKind = Callable[[Sequence[RunResult], Sequence[str], PlotOptions], Figure]

FIGURES: Registry[FigureKind] = Registry(
    "figure kind",
    {
        "profile": lambda runs, keys, o: profile_figure(runs, keys, o.steps),
        "curves": lambda runs, keys, o: curves_figure(runs, keys),
        "heatmap": _heatmap_kind,
        "histograms": lambda runs, keys, o: histograms_figure(
            runs, keys, o.quantity, o.steps[0] if o.steps else "init"
        ),
        "colorful": lambda runs, keys, o: colorful_figure(runs, keys, o.quantity),
        "spectrum": lambda runs, keys, o: spectrum_figure(runs, keys, o.steps),
        "underflow": lambda runs, keys, o: underflow_figure(runs, keys, o.steps),
        "coordcheck": lambda runs, keys, o: coordcheck_figure(runs, keys, o.statistic),
        "transfer": lambda runs, keys, o: transfer_figure(runs, keys),
    },
)
KINDS = tuple(FIGURES)
DEFAULT_KINDS = ("profile", "curves", "heatmap")  # need only what every run writes
# saved as <kind>-<quantity>.png, so one quantity's does not replace another's
PER_QUANTITY = ("histograms", "colorful")


def make_plots(
    paths: Sequence[str | Path],
    *,
    out: str | Path | None = None,
    kinds: Sequence[str] = DEFAULT_KINDS,
    steps: Sequence[str] = ("init", "end"),
    x: str | None = None,
    y: str | None = None,
    metric: str = "test_acc",
    filters: Sequence[str] = (),
    quantity: str = "act",
    statistic: str = "pre_delta_abs_mean",
    on_skip: Callable[[str, str], None] | None = None,
) -> list[Path]:
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
