"""Figures (matplotlib, headless): per-layer variance across depth, training curves, and a
heatmap of a metric over two swept keys.

The per-layer picture is the classic one of Glorot & Bengio 2010 (Fig. 3–7) and He et al. 2015:
activation variance and back-propagated gradient variance against depth, log scale, one line per
configuration, at initialization and later steps. Lines use the Okabe–Ito palette and heatmaps
cividis, both readable with colour-vision deficiencies.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from initlab.errors import InitlabError  # noqa: E402
from initlab.report import HEADERS, Run, aggregate, discover, key_headers, varied_keys, _matches, _parse_filter  # noqa: E402

# Okabe & Ito's colour-blind-safe palette; its yellow is faint on white, so it comes last.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
STYLES = ["-", ":", "-.", (0, (6, 1, 1, 1))]  # one per step; dashed is kept for theory
THEORY_STYLE = "--"
KINDS = ("profile", "curves", "heatmap")


def _groups(runs: Sequence[Run], keys: Sequence[str]) -> dict[str, list[Run]]:
    """Runs by configuration (seeds together), labelled ``depth=10, init=he_normal``."""
    names = key_headers(keys)
    out: dict[str, list[Run]] = {}
    ordered = sorted(runs, key=lambda r: [_order(r.flat.get(k)) for k in keys])
    for run in ordered:
        label = ", ".join(f"{n}={run.flat.get(k)}" for n, k in zip(names, keys)) or run.summary.get("name", "run")
        out.setdefault(label, []).append(run)
    return out


def _style(i: int) -> dict:
    return {"color": OKABE_ITO[i % len(OKABE_ITO)], "linestyle": STYLES[(i // len(OKABE_ITO)) % len(STYLES)]}


def _layer_rows(run: Run) -> dict[int, dict[str, np.ndarray]]:
    """layers.csv as {step: {column: per-layer values (hidden layers only)}}."""
    by_step: dict[int, dict[str, list[float]]] = {}
    with open(run.path / "layers.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["kind"] != "hidden":
                continue
            cols = by_step.setdefault(int(row["step"]), {"act_var": [], "grad_var": []})
            for c in cols:
                cols[c].append(float(row[c]) if row[c] else math.nan)
    return {s: {c: np.array(v) for c, v in cols.items()} for s, cols in by_step.items()}


def _profile_at(run: Run, step: str) -> tuple[int, dict[str, np.ndarray]] | None:
    """Per-layer act_var and grad_var at ``step`` ("init", "end" or a number: the last logged
    step at or before it)."""
    if step in ("init", "0"):
        return 0, {c: run.profile("init", c) for c in ("act_var", "grad_var")}
    if step == "end":
        return int(run.summary.get("steps", 0)), {c: run.profile("final", c) for c in ("act_var", "grad_var")}
    try:
        want = int(step)
    except ValueError:
        raise InitlabError(f"--steps {step!r}: expected init, end or a step number") from None
    rows = _layer_rows(run)
    logged = [s for s in rows if s <= want]
    return (max(logged), rows[max(logged)]) if logged else None


def _geo_mean(arrays: list[np.ndarray]) -> np.ndarray:
    arrays = [a for a in arrays if len(a)]
    if not arrays or len({len(a) for a in arrays}) != 1:
        return np.array([])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # layers where every seed is non-finite stay NaN
        return np.exp(np.nanmean(np.log(np.array(arrays)), axis=0))


def _theory_profile(members: Sequence[Run]) -> dict[str, np.ndarray]:
    """Mean-field predictions at init (Poole et al. 2016): activation variance per layer, and the
    gradient variance scaled to the measured last hidden layer's (theory gives only ratios)."""
    theory = (members[0].summary.get("theory") or {})
    if not theory.get("applies"):
        return {}
    out = {"act_var": np.array(theory["act_var"], float)}
    last = _geo_mean([r.profile("init", "grad_var")[-1:] for r in members])
    if len(last):
        out["grad_var"] = np.array(theory["grad_ratio"], float) * last[0]
    return out


def profile_figure(runs: Sequence[Run], keys: Sequence[str], steps: Sequence[str] = ("init", "end"),
                   theory: bool = True) -> Figure:
    """Activation variance and ∂ℓ/∂z variance against layer, log scale: one colour per
    configuration, one line style per step (mean over seeds, geometric), and the mean-field
    prediction at initialization dashed where the theory applies."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    groups = _groups(runs, keys)
    for i, (label, members) in enumerate(groups.items()):
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        for j, step in enumerate(steps):
            found = [p for p in (_profile_at(r, step) for r in members) if p is not None]
            if not found:
                continue
            for ax, column in zip(axes, ("act_var", "grad_var")):
                values = _geo_mean([p[1][column] for p in found])
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
        ax.set_xlabel("hidden layer (1 = nearest the input)")
        ax.set_ylabel(ylabel + " (log scale)")
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
    colour_handles = [Line2D([], [], color=OKABE_ITO[i % len(OKABE_ITO)], label=label)
                      for i, label in enumerate(groups)]
    style_handles = [Line2D([], [], color="0.3", linestyle=STYLES[j % len(STYLES)], label=f"step: {s}")
                     for j, s in enumerate(steps)]
    if theory and any(_theory_profile(m) for m in groups.values()):
        style_handles.append(Line2D([], [], color="0.3", linestyle=THEORY_STYLE, label="mean-field theory (init)"))
    axes[1].legend(handles=colour_handles + style_handles, fontsize="small", loc="best")
    fig.suptitle("per-layer signal propagation (mean over seeds)")
    return fig


def _curve(run: Run) -> dict[str, np.ndarray]:
    cols: dict[str, list[float]] = {"step": [], "train_loss": [], "test_acc": []}
    with open(run.path / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            for c in cols:
                cols[c].append(float(row[c]) if row[c] else math.nan)
    return {c: np.array(v) for c, v in cols.items()}


def curves_figure(runs: Sequence[Run], keys: Sequence[str]) -> Figure:
    """Training loss and test accuracy against step, one line per configuration (mean over seeds)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for i, (label, members) in enumerate(_groups(runs, keys).items()):
        curves = [_curve(r) for r in members if (r.path / "metrics.csv").exists()]
        if not curves:
            continue
        longest = max(curves, key=lambda c: len(c["step"]))
        for ax, column in ((ax_loss, "train_loss"), (ax_acc, "test_acc")):
            stacked = np.full((len(curves), len(longest["step"])), np.nan)
            for k, c in enumerate(curves):
                stacked[k, : len(c[column])] = c[column]
            with warnings.catch_warnings():  # rows where no seed has a value stay NaN, silently
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(stacked, axis=0)
            ok = np.isfinite(mean)
            ax.plot(longest["step"][ok], mean[ok], label=label, marker="o" if ok.sum() <= 12 else None,
                    markersize=3, **_style(i))
    ax_loss.set(xlabel="step", ylabel="training loss (mean since previous point)", title="training loss")
    ax_loss.set_yscale("log")
    ax_acc.set(xlabel="step", ylabel="test accuracy", title="test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
    ax_acc.legend(fontsize="small", loc="best")
    fig.suptitle("training curves (mean over seeds)")
    return fig


def heatmap_figure(runs: Sequence[Run], x: str, y: str, metric: str = "test_acc", target: float = 0.9) -> Figure:
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
    fig, ax = plt.subplots(figsize=(1.1 * len(xs) + 3.5, 0.6 * len(ys) + 2.5), constrained_layout=True)
    image = ax.imshow(grid, cmap="cividis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    xname, yname = key_headers([x, y])
    ax.set(xlabel=xname, ylabel=yname)
    label = "test accuracy (%)" if percent else HEADERS.get(metric, metric)
    ax.set_title(f"{label} over {xname} × {yname} (mean over seeds)")
    finite = grid[np.isfinite(grid)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for (i, j), v in np.ndenumerate(grid):
        text = "–" if not np.isfinite(v) else (f"{v:.1f}" if percent else f"{v:.3g}")
        ax.text(j, i, text, ha="center", va="center", fontsize="small",
                color="black" if np.isfinite(v) and v > mid else "white")
    fig.colorbar(image, ax=ax, label=label)
    if x.endswith("init_args.sigma_w") and y == "model.depth":
        _depth_scale_curve(ax, runs, xs, ys)
    return fig


def _depth_scale_curve(ax, runs: Sequence[Run], sigma_ws: list, depths: list) -> None:
    """Overlay 6ξ_c (Schoenholz et al. 2017) on a σ_w × depth heatmap: trainable below the curve."""
    from initlab.theory import MeanField

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


def make_plots(paths: Sequence[str | Path], *, out: str | Path | None = None, kinds: Sequence[str] = KINDS,
               steps: Sequence[str] = ("init", "end"), x: str | None = None, y: str | None = None,
               metric: str = "test_acc", filters: Sequence[str] = ()) -> list[Path]:
    """Write the requested figures as PNGs (to ``out``, or beside the runs) and return their paths.
    A heatmap needs two keys: ``x``/``y``, or the first two config keys that vary."""
    for k in kinds:
        if k not in KINDS:
            raise InitlabError(f"--kind {k!r}: not one of {', '.join(KINDS)}")
    from initlab.report import METRICS

    if metric not in METRICS + ("theory_ratio",):
        raise InitlabError(f"--metric {metric!r}: not one of {', '.join(METRICS + ('theory_ratio',))}")
    runs, _ = discover(paths)
    for item in filters:
        key, value = _parse_filter(item)
        runs = [r for r in runs if _matches(r, key, value)]
    runs = [r for r in runs if r.status in ("completed", "diverged")]
    if not runs:
        raise InitlabError("no completed or diverged runs to plot under " + ", ".join(map(str, paths)))
    keys = varied_keys(runs)
    first = Path(paths[0])
    target_dir = Path(out) if out is not None else (first if first.is_dir() else first.parent)
    target_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in kinds:
        if kind == "heatmap":
            hx, hy = x or (keys[1] if len(keys) > 1 else None), y or (keys[0] if keys else None)
            if hx is None or hy is None:
                if "heatmap" in kinds and len(kinds) == 1:
                    raise InitlabError("a heatmap needs two varied keys: pass --x KEY --y KEY")
                continue
            for k in (hx, hy):
                if all(k not in r.flat for r in runs):
                    raise InitlabError(f"--x/--y {k}: not a config key of these runs")
            fig = heatmap_figure(runs, hx, hy, metric)
        elif kind == "profile":
            fig = profile_figure(runs, keys, steps)
        else:
            fig = curves_figure(runs, keys)
        written.append(save(fig, target_dir / f"{kind}.png"))
    return written


def save(fig: Figure, path: str | Path) -> Path:
    """Write a figure as PNG and free it."""
    path = Path(path)
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
