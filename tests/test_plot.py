"""initlab plot: valid PNGs with the expected number of lines, panels, images and cells."""

import csv
import math
import shutil
from collections import Counter

import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from initlab.cli import app
from initlab.errors import InitlabError
from initlab.report.plot import (
    FIGURES,
    KINDS,
    MAX_LAYERS,
    QUANTITIES,
    NothingToDraw,
    PlotOptions,
    colorful_figure,
    curves_figure,
    heatmap_figure,
    histograms_figure,
    profile_figure,
    read_histograms,
    spectrum_figure,
)
from initlab.report.results import discover, varied_keys
from initlab.runfolder.files import HISTOGRAM_COLUMNS, JACOBIAN_COLUMNS
from initlab.runfolder.sweeps import SweepSpec, run_sweep

from conftest import SMALL_DATA

runner = CliRunner()


@pytest.fixture(autouse=True)
def _close_figures():
    """The tests inspect figures without saving them (save() closes its figure): free them after each test."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("plot")
    base = {
        "name": "grid",
        "data": SMALL_DATA,
        "model": {"width": 16},
        "train": {"steps": 24, "batch_size": 32},
        "log": {"every": 8, "out": str(root)},
    }
    run_sweep(SweepSpec(base, {"model.depth": [2, 4, 6], "model.init": ["he_normal", "glorot_normal"]}, [], [0, 1]))
    return root / "grid"


def loaded(sweep_dir):
    runs, _ = discover([sweep_dir])
    return runs, varied_keys(runs)


@pytest.mark.slow
def test_profile_has_one_line_per_configuration_and_step(sweep_dir):
    runs, keys = loaded(sweep_dir)
    fig = profile_figure(runs, keys, steps=("init", "16", "end"), theory=False)
    act, grad = fig.axes[:2]
    assert len(act.get_lines()) == len(grad.get_lines()) == 6 * 3
    assert act.get_yscale() == "log" and act.get_xlabel() and act.get_ylabel() and act.get_title()
    depths = sorted({len(line.get_xdata()) for line in act.get_lines()})
    assert depths == [2, 4, 6]
    assert grad.get_legend() is not None or fig.legends


def test_curves_have_one_line_per_configuration(sweep_dir):
    runs, keys = loaded(sweep_dir)
    fig = curves_figure(runs, keys)
    assert [len(ax.get_lines()) for ax in fig.axes[:2]] == [6, 6]


def test_heatmap_has_one_cell_per_pair(sweep_dir):
    runs, _ = loaded(sweep_dir)
    fig = heatmap_figure(runs, "model.depth", "model.init")
    grid = fig.axes[0].images[0].get_array()
    assert grid.shape == (2, 3)  # rows: inits, columns: depths
    assert float(grid.max()) <= 100 and len(fig.axes[0].texts) == 6


def test_cli_writes_valid_pngs(sweep_dir, tmp_path):
    result = runner.invoke(app, ["plot", str(sweep_dir), "--out", str(tmp_path), "--steps", "init,8,end"])
    assert result.exit_code == 0, result.output
    for name in ("profile.png", "curves.png", "heatmap.png"):
        image = imread(tmp_path / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_plot_errors_are_one_line(sweep_dir, tmp_path):
    bad_kind = runner.invoke(app, ["plot", str(sweep_dir), "--kind", "pie", "--out", str(tmp_path)])
    assert bad_kind.exit_code == 2 and "--kind: 'pie' is not one of" in bad_kind.output  # bad input: 2
    bad_key = runner.invoke(
        app, ["plot", str(sweep_dir), "--kind", "heatmap", "--x", "model.nope", "--out", str(tmp_path)]
    )
    assert bad_key.exit_code == 2 and "model.nope" in bad_key.output
    empty = runner.invoke(app, ["plot", str(tmp_path)])
    assert empty.exit_code == 1 and "no completed or diverged runs" in empty.output


def test_profile_overlays_the_mean_field_prediction(sweep_dir):
    runs, keys = loaded(sweep_dir)
    with_theory = profile_figure(runs, keys, steps=("init",))
    without = profile_figure(runs, keys, steps=("init",), theory=False)
    act = with_theory.axes[0]
    assert len(act.get_lines()) == 2 * len(without.axes[0].get_lines()) == 12
    dashed = [line for line in act.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 6


def test_heatmap_metric_is_validated(sweep_dir, tmp_path):
    result = runner.invoke(
        app, ["plot", str(sweep_dir), "--kind", "heatmap", "--metric", "verdict", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "--metric 'verdict'" in result.output


# --------------------------------------------------------------------------------------------
# Distributions: synthetic histograms.csv / jacobian.csv, written to the spec, in copies of real runs

LOGGED = (0, 8, 16, 24)  # the fixture's logged steps: log.every 8, 24 steps
RANGES = {"pre": (-5.0, 5.0), "act": (0.0, 5.0)}  # relu, the default activation


def _cell(x: float) -> str:
    return "" if math.isnan(x) else repr(float(x))


def linear_rows(values: np.ndarray, lo: float, hi: float, bins: int) -> list[tuple[float, float, int]]:
    """histograms.csv's linear bins: the non-empty ones of B over [lo, hi], underflow, overflow, NaN."""
    edges = np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(values[(values >= lo) & (values <= hi)], edges)
    rows = [(a, b, int(c)) for a, b, c in zip(edges[:-1], edges[1:], counts) if c]
    extra = [
        (-math.inf, lo, int((values < lo).sum())),
        (hi, math.inf, int((values > hi).sum())),
        (math.nan, math.nan, int(np.isnan(values).sum())),
    ]
    return rows + [r for r in extra if r[2]]


def log2_rows(values: np.ndarray) -> list[tuple[float, float, int]]:
    """histograms.csv's sign-symmetric log2 bins, one per binary exponent, and zeros, ±inf, NaN."""
    finite = values[np.isfinite(values) & (values != 0)]
    exponents = np.frexp(np.abs(finite))[1] - 1  # |v| in [2^e, 2^(e+1))
    rows = [(2.0**e, 2.0 ** (e + 1), c) for e, c in sorted(Counter(exponents[finite > 0].tolist()).items())]
    rows += [(-(2.0 ** (e + 1)), -(2.0**e), c) for e, c in sorted(Counter(exponents[finite < 0].tolist()).items())]
    extra = [
        (0.0, 0.0, int((values == 0).sum())),
        (math.inf, math.inf, int((values == math.inf).sum())),
        (-math.inf, -math.inf, int((values == -math.inf).sum())),
        (math.nan, math.nan, int(np.isnan(values).sum())),
    ]
    return rows + [r for r in extra if r[2]]


def synthetic_values(depth: int, step: int, layer: int, quantity: str) -> np.ndarray:
    """Known values per (depth, step, layer): the same for every seed and init of a depth. Layer 1's
    activations are all 0.3 (one bin); deeper layers spill out of range; layer 2 has NaNs, its
    gradients an inf; a tenth of the gradients are exact zeros."""
    rng = np.random.default_rng([depth, step, layer, list(QUANTITIES).index(quantity)])
    if quantity == "act" and layer == 1:
        return np.full(200, 0.3)
    if quantity in ("pre", "act"):
        v = rng.normal(0.5, 0.8 * layer, 200)
        v = np.maximum(v, 0) if quantity == "act" else v
    elif quantity == "grad":
        v = rng.normal(0, 2.0**-layer, 200) * (rng.random(200) > 0.1)
        if layer == 2:
            v[:2] = (math.inf, -math.inf)
    else:
        v = rng.normal(0, 0.3, 200)
    if layer == 2:
        v[-3:] = math.nan
    return v


def write_histograms(run_dir, depth: int, bins: int) -> None:
    with open(run_dir / "histograms.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HISTOGRAM_COLUMNS)
        for step in LOGGED:
            for layer in range(1, depth + 2):
                kind = "hidden" if layer <= depth else "output"
                for q in QUANTITIES:
                    v = synthetic_values(depth, step, layer, q)
                    rows = linear_rows(v, *RANGES[q], bins) if q in RANGES else log2_rows(v)
                    for lo, hi, count in rows:
                        w.writerow([step, layer, kind, q, _cell(lo), _cell(hi), count])


def write_jacobian(run_dir, depth: int, zero: bool = False) -> None:
    """Singular values, descending, of 3 examples at init and at the end; ``zero``: one is 0."""
    rng = np.random.default_rng(depth)
    with open(run_dir / "jacobian.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(JACOBIAN_COLUMNS)
        for step in (0, LOGGED[-1]):
            for example in range(3):
                s = np.sort(rng.lognormal(0.0, 0.3 * depth, 8))[::-1]
                if zero and example == 0:
                    s[-1] = 0.0
                for i, value in enumerate(s):
                    w.writerow([step, example, i, repr(float(value))])


BINS = 16  # B of the synthetic linear histograms, where a run's config does not say (log.histograms 0)


def bins_of(run) -> int:
    return run.flat.get("log.histograms") or BINS


def loaded_dist(root):
    """Runs and varied keys, each run's config saying the B its histograms.csv was written with (as
    a run that wrote one does: the plot reads B from there where the data leave the range unclear)."""
    runs, keys = loaded(root)
    for run in runs:
        run.flat["log.histograms"] = bins_of(run)
    return runs, keys


@pytest.fixture(scope="module")
def dist_dir(sweep_dir, tmp_path_factory):
    """The sweep's runs with synthetic histograms.csv and jacobian.csv."""
    root = tmp_path_factory.mktemp("dist") / "grid"
    shutil.copytree(sweep_dir, root)
    for run in discover([root])[0]:
        depth = run.flat["model.depth"]
        write_histograms(run.path, depth, bins_of(run))
        write_jacobian(run.path, depth, zero=depth == 2)
    return root


@pytest.fixture(scope="module")
def bare_dir(sweep_dir, tmp_path_factory):
    """The sweep's runs with neither file."""
    root = tmp_path_factory.mktemp("bare") / "grid"
    shutil.copytree(sweep_dir, root)
    for name in ("histograms.csv", "jacobian.csv"):
        for f in root.rglob(name):
            f.unlink()
    return root


def depth_of(ax) -> int:
    return int(ax.get_title().split("depth=")[1].split(",")[0])


def test_every_kind_is_registered():
    assert KINDS == tuple(FIGURES)
    assert {"profile", "curves", "heatmap", "histograms", "colorful", "spectrum"} <= set(KINDS)


def test_histograms_have_one_panel_per_configuration_and_one_curve_per_layer(dist_dir):
    runs, keys = loaded_dist(dist_dir)
    fig = histograms_figure(runs, keys, "act", "init")
    assert len(fig.axes) == 6  # 3 depths × 2 inits; seeds share a panel
    for ax in fig.axes:
        depth = depth_of(ax)
        assert [line.get_label().split(" (")[0] for line in ax.get_lines()] == [
            f"layer {i}" for i in range(1, depth + 1)
        ]
        assert "step 0" in ax.get_title() and "seed 0" in ax.get_title()
        assert ax.get_legend() is not None
    first = fig.axes[0]
    assert all(
        first.get_shared_x_axes().joined(first, ax) and first.get_shared_y_axes().joined(first, ax) for ax in fig.axes
    )
    assert "Glorot" in fig.texts[0].get_text() if fig.texts else "Glorot" in fig._suptitle.get_text()


@pytest.mark.parametrize("quantity", list(QUANTITIES))
def test_histogram_mass_is_the_drawn_fraction(dist_dir, quantity):
    """Linear bins: each density integrates to the fraction of values in range; log2 bins: the
    fractions per exponent sum to the fraction of finite non-zero values. The rest is stated."""
    runs, keys = loaded_dist(dist_dir)
    fig = histograms_figure(runs, keys, quantity, "end")
    log = QUANTITIES[quantity].binning.log
    for ax in fig.axes:
        depth = depth_of(ax)
        assert ax.get_xscale() == ("log" if log else "linear") and "step 24" in ax.get_title()
        for layer, line in enumerate(ax.get_lines(), start=1):
            x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
            v = synthetic_values(depth, 24, layer, quantity)
            if log:
                drawn = np.isfinite(v) & (v != 0)
                assert np.sum(y) == pytest.approx(drawn.mean())
                assert np.allclose(np.log2(x) % 1, 0.5)  # each exponent at its geometric centre
                missing = {"zeros": v == 0, "±inf": np.isinf(v), "NaN": np.isnan(v)}
            else:
                lo, hi = RANGES[quantity]
                drawn = (v >= lo) & (v <= hi)
                assert np.sum(y) * np.diff(x).mean() == pytest.approx(drawn.mean())
                missing = {"below range": v < lo, "above range": v > hi, "NaN": np.isnan(v)}
            for reason, mask in missing.items():
                assert (f"{100 * mask.mean():.2g}% {reason}" in line.get_label()) == bool(mask.any())


def test_one_bin_of_mass_is_one_peak(dist_dir):
    runs, keys = loaded_dist(dist_dir)
    fig = histograms_figure(runs, keys, "act", "init")
    line = fig.axes[0].get_lines()[0]  # layer 1: every activation is 0.3
    x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    width = 5.0 / bins_of(runs[0])
    assert np.count_nonzero(y) == 1 and y.max() * width == pytest.approx(1.0)
    assert abs(x[np.argmax(y)] - 0.3) <= width / 2
    assert line.get_label() == "layer 1"  # nothing out of range, nothing to state


def test_histogram_steps_resolve_to_logged_steps(dist_dir):
    runs, keys = loaded_dist(dist_dir)
    fig = histograms_figure(runs, keys, "pre", "15")
    assert "step 16" in fig.axes[0].get_title()  # the nearest logged
    assert "step: 16 (nearest logged to 15)" in fig._suptitle.get_text()  # the step, not the layers drawn
    assert "step 24" in histograms_figure(runs, keys, "pre", "end").axes[0].get_title()
    with pytest.raises(InitlabError, match="--quantity 'loss'"):
        histograms_figure(runs, keys, "loss")


def test_deep_nets_draw_at_most_eight_layers(dist_dir, tmp_path):
    run = loaded_dist(dist_dir)[0][0]
    deep = tmp_path / run.path.name
    shutil.copytree(run.path, deep)
    write_histograms(deep, 20, bins_of(run))
    runs, keys = loaded_dist(deep)
    ax = histograms_figure(runs, keys, "weight").axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert len(labels) == MAX_LAYERS and labels[0] == "layer 1" and labels[-1] == "layer 20"
    assert ax.get_legend().get_title().get_text() == "8 of 20 layers"
    image_axes = [a for a in colorful_figure(runs, keys).axes if a.images]
    assert [a.get_ylabel().splitlines()[0] for a in image_axes] == labels


def test_runs_without_histograms_are_skipped(dist_dir, tmp_path):
    root = tmp_path / "grid"
    shutil.copytree(dist_dir, root)
    for run in discover([root])[0]:
        if run.flat["model.depth"] == 4:
            (run.path / "histograms.csv").unlink()
    runs, keys = loaded_dist(root)
    fig = histograms_figure(runs, keys)
    assert len(fig.axes) == 4 and sorted({depth_of(ax) for ax in fig.axes}) == [2, 6]


def test_colorful_image_is_bins_by_logged_steps(dist_dir):
    runs, keys = loaded_dist(dist_dir)
    fig = colorful_figure(runs, keys, "pre")
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 2 * (2 + 4 + 6)  # one column per configuration, one row per layer
    for ax in image_axes:
        image = np.asarray(ax.images[0].get_array())
        assert image.shape == (bins_of(runs[0]), len(LOGGED))
        assert image.min() >= 0 and np.isfinite(image).all()
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(s) for s in LOGGED]
    assert any(ax.get_ylabel() == "log(1 + count)" for ax in fig.axes)  # one shared colour bar
    grad = [ax for ax in colorful_figure(runs, keys, "grad").axes if ax.images]
    assert "log₂" in grad[0].get_ylabel()


def test_spectrum_has_one_line_per_configuration_and_step(dist_dir):
    runs, keys = loaded_dist(dist_dir)
    fig = spectrum_figure(runs, keys, steps=("init", "end"))
    ax = fig.axes[0]
    reference = [line for line in ax.get_lines() if line.get_label().startswith("σ² = 1")]
    data = [line for line in ax.get_lines() if line not in reference]
    assert len(reference) == 1 and list(reference[0].get_xdata()) == [1.0, 1.0]
    assert len(data) == 6 * 2 and ax.get_xscale() == "log"
    assert sorted({line.get_linestyle() for line in data}) == sorted({"-", ":"})
    for line in data:  # density per unit log10 σ²: integrates to the fraction of σ² > 0 (one is 0 per depth-2 run)
        x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        mass = np.sum(y) * np.diff(np.log10(x)).mean()
        assert mass == pytest.approx(1 - 2 / 48 if "depth=2," in line.get_label() else 1.0)  # a 0 per seed
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("below float32 resolution, not drawn: 4.2% at init, 4.2% at end" in t for t in legend)
    assert "step: init" in legend


@pytest.mark.slow
def test_cli_writes_distribution_pngs(dist_dir, tmp_path):
    result = runner.invoke(
        app,
        [
            "plot",
            str(dist_dir),
            "--out",
            str(tmp_path),
            "--kind",
            "histograms,colorful,spectrum",
            "--quantity",
            "grad",
            "--steps",
            "init,end",
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("histograms-grad.png", "colorful-grad.png", "spectrum.png"):
        image = imread(tmp_path / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "kind, file, how",
    [
        ("histograms", "histograms.csv", "log.histograms > 0"),
        ("colorful", "histograms.csv", "log.histograms > 0"),
        ("spectrum", "jacobian.csv", "log.jacobian > 0"),
    ],
)
def test_cli_missing_file_is_a_one_line_error(bare_dir, tmp_path, kind, file, how):
    result = runner.invoke(app, ["plot", str(bare_dir), "--kind", kind, "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1
    assert file in result.output and how in result.output
    assert not list(tmp_path.glob("*.png"))


def test_cli_quantity_is_validated(dist_dir, tmp_path):
    result = runner.invoke(
        app, ["plot", str(dist_dir), "--kind", "histograms", "--quantity", "loss", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "--quantity 'loss'" in result.output and "grad" in result.output


def test_read_histograms_keeps_one_quantity_of_the_hidden_layers(dist_dir, tmp_path):
    run = loaded_dist(dist_dir)[0][0]
    depth = run.flat["model.depth"]
    hist = read_histograms(run.path / "histograms.csv", "grad")
    assert hist.steps() == list(LOGGED) and hist.layers() == list(range(1, depth + 1))  # no output layer
    bins = hist.bins(0, 2)
    assert int(bins.count.sum()) == 200 and np.isnan(bins.lo).any() and np.isinf(bins.lo).any()
    bad = tmp_path / "histograms.csv"
    bad.write_text("step,layer,value\n0,1,2\n")
    with pytest.raises(InitlabError, match="expected columns step,layer,kind"):
        read_histograms(bad, "act")


@pytest.fixture(scope="module")
def formats_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    base = {
        "name": "fmt",
        "data": SMALL_DATA,
        "model": {"width": 16, "depth": 3, "activation": "sigmoid"},
        "train": {"steps": 8, "batch_size": 32},
        "log": {"every": 4, "out": str(root)},
    }
    run_sweep(
        SweepSpec(
            base,
            {"model.init": ["standard", "he_normal"]},
            [{"model.dtype": ["float32", "float16", "float16"], "train.loss_scale": ["none", "none", "dynamic"]}],
            [0],
        )
    )
    return root / "fmt"


@pytest.mark.slow
def test_underflow_has_a_row_per_setup_and_a_colour_per_format(formats_dir):
    from initlab.report.plot import underflow_figure

    runs, keys = loaded(formats_dir)
    fig = underflow_figure(runs, keys, steps=("init", "end"))
    assert len(fig.axes) == 2 * 2  # two setups (init) × (∂L/∂z, ∂L/∂W)
    assert all(len(ax.get_lines()) == 3 * 2 for ax in fig.axes)  # three formats × two steps
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [
        "float16",
        "float16, loss scale dynamic",
        "float32",
        "step: init",
        "step: end",
        "zero in float32 too: structural, not underflow",
    ]
    first = fig.axes[0]
    assert "init=he_normal" in first.get_title() and "∂L/∂z" in first.get_title()
    colours = {line.get_color() for ax in fig.axes for line in ax.get_lines()}
    assert len(colours) == 3  # one per format, the same in every panel
    for ax in fig.axes:  # shares, one point per layer and the output layer
        for line in ax.get_lines():
            y = line.get_ydata()
            assert len(y) == 4 and np.all((y >= 0) & (y <= 1))


def test_cli_underflow_png_and_runs_without_format_statistics(formats_dir, sweep_dir, tmp_path):
    result = runner.invoke(app, ["plot", str(formats_dir), "--kind", "underflow", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert imread(tmp_path / "underflow.png").shape[2] in (3, 4)
    bare = tmp_path / "bare"
    for run in sorted(sweep_dir.glob("grid-*"))[:1]:
        shutil.copytree(run, bare / run.name)
        rows = list(csv.DictReader(open(bare / run.name / "layers.csv")))
        with open(bare / run.name / "layers.csv", "w", newline="") as f:
            keep = [c for c in rows[0] if c not in ("grad_underflow", "wgrad_underflow")]
            w = csv.DictWriter(f, keep, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    missing = runner.invoke(app, ["plot", str(bare), "--kind", "underflow", "--out", str(tmp_path)])
    assert missing.exit_code == 1 and "format statistics" in missing.output


@pytest.mark.parametrize("n", [8, 20, 100])
def test_every_configuration_gets_its_own_colour(n):
    from matplotlib.colors import to_hex

    from initlab.report.plot import palette

    assert len({to_hex(c) for c in palette(n)}) == n


def test_many_configurations_keep_distinct_lines_and_a_legend_below_the_panels(sweep_dir):
    runs, _ = loaded(sweep_dir)
    fig = profile_figure(runs, ["model.depth", "model.init", "seed"], steps=("init",), theory=False)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 12 and len({(str(ln.get_color()), ln.get_linestyle()) for ln in lines}) == 12
    fig.canvas.draw()
    (legend,) = fig.legends
    assert legend.get_window_extent().y1 < min(ax.get_window_extent().y0 for ax in fig.axes)  # not over a panel


def test_a_heatmap_of_only_diverged_runs_says_so_without_a_colour_bar(sweep_dir, tmp_path):
    import json

    bad = tmp_path / "grid"
    shutil.copytree(sweep_dir, bad)
    for summary in bad.glob("*/summary.json"):
        data = json.loads(summary.read_text())
        data["status"] = "diverged"
        summary.write_text(json.dumps(data))
    runs, _ = discover([bad])
    fig = heatmap_figure(runs, "model.depth", "model.init")
    assert len(fig.axes) == 1 and "no completed run" in fig.axes[0].get_title()
    assert {t.get_text() for t in fig.axes[0].texts} == {"diverged"}


# --------------------------------------------------------------------------------------------
# Issue 34: mixed folders of ad-hoc runs, steps that were never logged, units and colours


def mixed(sweep_dir):
    """The sweep's runs as a folder of ad-hoc runs: every configuration also differs in keys that do
    not vary as a grid (data sizes, steps, logging), which come first in config order."""
    runs, _ = loaded(sweep_dir)
    ad_hoc = {}
    for r in runs:
        i = ad_hoc.setdefault((r.flat["model.depth"], r.flat["model.init"]), len(ad_hoc))
        r.flat = {
            **r.flat,
            "data.train_size": 2000 + 1000 * (i % 2),
            "data.test_size": 1000 + 500 * (i == 5),
            "train.steps": 150 + 50 * i,
            "log.every": 50 + 10 * i,
        }
    return runs, varied_keys(runs)


def test_the_default_heatmap_takes_keys_that_vary_as_a_grid(sweep_dir):
    runs, keys = mixed(sweep_dir)
    assert keys[:2] == ["data.train_size", "data.test_size"]  # what the heatmap used to take
    fig = FIGURES["heatmap"](runs, keys, PlotOptions())
    ax = fig.axes[0]
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("depth", "init") and ax.images[0].get_array().shape == (3, 2)
    with pytest.raises(NothingToDraw, match="vary as a grid"):
        FIGURES["heatmap"](runs[:3], varied_keys(runs[:3]), PlotOptions())


def test_a_legend_of_long_configurations_leaves_the_panels_their_size(sweep_dir):
    import warnings

    runs, keys = mixed(sweep_dir)
    for draw in (lambda: profile_figure(runs, keys, steps=("init", "end")), lambda: curves_figure(runs, keys)):
        fig = draw()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "constrained_layout not applied ... collapsed to zero" is a failure
            fig.canvas.draw()
        width = fig.get_window_extent().width
        assert all(ax.get_window_extent().width > 0.3 * width for ax in fig.axes[:2])
        labels = [t.get_text().replace("\n", " ") for legend in fig.legends for t in legend.get_texts()]
        assert sum("depth=" in t for t in labels) == 6  # one entry per configuration: seeds share it
        assert all("(2 seeds)" in t for t in labels if "depth=" in t)


@pytest.mark.parametrize("asked, drawn", [("15", 16), ("99999", 24)])
def test_a_step_that_was_not_logged_is_drawn_and_labelled_as_the_nearest_logged_one(sweep_dir, asked, drawn):
    runs, keys = loaded(sweep_dir)
    fig = profile_figure(runs, keys, steps=(asked,), theory=False)
    labels = [t.get_text() for legend in [*fig.legends, fig.axes[1].get_legend()] if legend for t in legend.get_texts()]
    assert f"step: {drawn} (nearest logged to {asked})" in labels and f"step: {asked}" not in labels
    assert {line.get_label().rsplit("(step ", 1)[1] for line in fig.axes[0].get_lines()} == {f"{drawn})"}


def test_curves_show_test_accuracy_in_percent_as_the_report(sweep_dir):
    runs, keys = loaded(sweep_dir)
    acc = curves_figure(runs, keys).axes[1]
    assert "%" in acc.get_ylabel() and max(max(line.get_ydata()) for line in acc.get_lines()) > 1


def test_underflow_tells_structural_zeros_from_the_formats_and_colours_formats_apart(formats_dir):
    from matplotlib.colors import rgb_to_hsv, to_rgb

    from initlab.report.plot import underflow_figure

    runs, keys = loaded(formats_dir)
    fig = underflow_figure(runs, keys, steps=("init", "end"))
    assert "lost to the number format" not in fig.get_suptitle() and "zeros" in fig.get_suptitle()
    assert all(ax.collections for ax in fig.axes)  # the float32 share, filled: zero in every format
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "zero in float32 too: structural, not underflow" in labels
    hue = {
        h.get_label(): rgb_to_hsv(to_rgb(h.get_color()))[0]
        for h in fig.legends[0].legend_handles
        if h.get_label() in ("float16", "float32")
    }
    assert min(abs(hue["float16"] - hue["float32"]), 1 - abs(hue["float16"] - hue["float32"])) > 0.25


def test_the_default_plot_says_which_figure_it_skipped_and_why(sweep_dir, tmp_path):
    """Two runs of one configuration: no two keys vary as a grid, so the default heatmap is left
    out, and the command says so instead of leaving heatmap.png silently missing."""
    one = tmp_path / "one"
    one.mkdir()
    for folder in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))[:2]:
        shutil.copytree(folder, one / folder.name)
    result = runner.invoke(app, ["plot", str(one), "--out", str(tmp_path / "figs")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "skipped heatmap:" in text and "grid" in text
    assert (tmp_path / "figs" / "profile.png").is_file() and not (tmp_path / "figs" / "heatmap.png").exists()
