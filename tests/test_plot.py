"""initlab plot: valid PNGs with the expected number of lines and cells."""

import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from initlab.cli import app
from initlab.plot import curves_figure, heatmap_figure, profile_figure
from initlab.report import discover, varied_keys
from initlab.sweep import SweepSpec, run_sweep

from conftest import SMALL_DATA

runner = CliRunner()


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


def test_profile_has_one_line_per_configuration_and_step(sweep_dir):
    runs, keys = loaded(sweep_dir)
    fig = profile_figure(runs, keys, steps=("init", "16", "end"), theory=False)
    act, grad = fig.axes[:2]
    assert len(act.get_lines()) == len(grad.get_lines()) == 6 * 3
    assert act.get_yscale() == "log" and act.get_xlabel() and act.get_ylabel() and act.get_title()
    depths = sorted({len(line.get_xdata()) for line in act.get_lines()})
    assert depths == [2, 4, 6]
    assert grad.get_legend() is not None


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
    assert bad_kind.exit_code == 1 and "--kind 'pie'" in bad_kind.output
    bad_key = runner.invoke(app, ["plot", str(sweep_dir), "--kind", "heatmap", "--x", "model.nope",
                                  "--out", str(tmp_path)])
    assert bad_key.exit_code == 1 and "model.nope" in bad_key.output
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
    result = runner.invoke(app, ["plot", str(sweep_dir), "--kind", "heatmap", "--metric", "verdict",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 1 and "--metric 'verdict'" in result.output
