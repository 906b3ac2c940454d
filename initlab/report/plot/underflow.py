"""Gradient entries zero or subnormal in each number format, per layer: what a narrow format
loses, told apart from the network's own structural zeros."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from initlab.report.plot.base import OKABE_ITO, STYLES, NothingToDraw, _groups, _resolve_step, _step_handles
from initlab.report.results import RunResult
from initlab.report.width import layer_rows


UNDERFLOW_COLUMNS = ("grad_underflow", "wgrad_underflow")
# the config keys that make a run's number format: one colour each in the underflow figure
FORMAT_KEYS = ("model.dtype", "model.precision", "train.loss_scale", "train.loss_scale_init", "train.loss_scale_period")


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
    fig, grid = plt.subplots(
        len(setups), 2, figsize=(11, 3.4 * len(setups) + 0.8), squeeze=False, constrained_layout=True, sharey=True
    )
    drawn: dict[int, set[int]] = {}
    floor = None
    for axes, (setup, members) in zip(grid, setups.items()):
        widest = _widest(sorted({_format_label(r) for r in members}), members)
        floor = floor or widest
        for fmt in formats:
            tables = [
                t
                for t in (layer_rows(r, UNDERFLOW_COLUMNS, output=True) for r in members if _format_label(r) == fmt)
                if t
            ]
            lowest: dict[int, np.ndarray] = {}  # per panel: the widest format's share at every step shown
            for j, step in enumerate(steps):
                picked = [(at, t[at]) for t in tables if (at := _resolve_step(step, sorted(t))) is not None]
                for k, (ax, column) in enumerate(zip(axes, UNDERFLOW_COLUMNS)):
                    values = [p[1][column] for p in picked]
                    if not values or len({len(v) for v in values}) != 1:
                        continue
                    mean = np.nanmean(np.array(values), axis=0)
                    ax.plot(
                        np.arange(1, len(mean) + 1),
                        mean,
                        color=colour[fmt],
                        linestyle=STYLES[j % len(STYLES)],
                        marker="o" if len(mean) <= 25 else None,
                        markersize=3,
                    )
                    drawn.setdefault(j, set()).update(p[0] for p in picked)
                    lowest[k] = np.fmin(lowest[k], mean) if k in lowest else mean
            if fmt == widest:
                for k, share in lowest.items():
                    axes[k].fill_between(
                        np.arange(1, len(share) + 1), 0, np.nan_to_num(share), color=STRUCTURAL, zorder=0, linewidth=0
                    )
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
    fig.suptitle(
        "gradient entries zero or subnormal in each number format, per layer (mean over seeds)"
        + (
            "\nexact zeros count in every format: the grey share is zero in the widest format as well "
            "(inactive units, constant inputs); above it, lost to a narrower format"
            if floor
            else "\nexact zeros (inactive units, constant inputs) count too: no float32 or wider run here to "
            "tell them from underflow"
        )
    )
    return fig
