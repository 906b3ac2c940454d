"""Width sweeps end to end: `initlab sweep` over width × parameterization (× lr), then the report's
coordinate-check slopes and best learning rates, and `initlab plot --kind coordcheck,transfer`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from matplotlib.image import imread
from typer.testing import CliRunner

from initlab.cli import app
from initlab.report.plot import coordcheck_figure, transfer_figure
from initlab.report.results import discover
from initlab.report.width import best_learning_rates, coordinate_data, slopes_at, width_slopes

runner = CliRunner()
WIDTHS = [32, 128, 512]
LRS = [0.001, 0.01, 0.1]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("width")
    spec = {
        "name": "width",
        "data": {
            "dataset": "gaussian",
            "input_dim": 16,
            "num_classes": 4,
            "train_size": 256,
            "test_size": 64,
            "probe_size": 64,
        },
        "model": {"depth": 2, "init": "he_normal"},
        "train": {"optimizer": "adam", "steps": 4, "batch_size": 64},
        "log": {"every": 1, "stats": ["act_abs_mean", "pre_delta_abs_mean"], "jacobian": 0, "out": str(root)},
        "sweep": {"model.width": WIDTHS, "train.lr": LRS},
        "zip": [{"model.parameterization": ["standard", "mup"], "model.base_width": [None, 32]}],
    }
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["sweep", str(path), "-q"])
    assert result.exit_code == 0, result.output
    return root / "width"


@pytest.mark.slow
def test_the_sweep_trains_both_parameterizations_with_lr_batched(sweep_dir):
    runs, skipped = discover([sweep_dir])
    assert not skipped and len(runs) == len(WIDTHS) * len(LRS) * 2
    assert all(r.status == "completed" for r in runs)
    # runs that differ only in lr trained together
    assert {r.summary["group_size"] for r in runs} == {len(LRS)}


def test_coordinate_data_has_each_parameterization_at_every_width(sweep_dir):
    runs, _ = discover([sweep_dir])
    data = coordinate_data(runs, "pre_delta_abs_mean")
    assert len(data) == 2 * len(LRS)  # one configuration per (parameterization, lr)
    for d in data:
        assert d.widths == WIDTHS and d.steps == [0, 1, 2, 3, 4]
        assert all(np.all(d.values[w][0] == 0) for w in WIDTHS)  # no change at step 0
        assert slopes_at(d, 1).shape == (3,)  # 2 hidden layers + output


def test_report_puts_fitted_slopes_beside_the_theory(sweep_dir):
    runs, _ = discover([sweep_dir])
    rows = {r["configuration"]: r for r in width_slopes(runs)}
    assert set(rows) == {f"parameterization={p}, lr={lr}" for lr in LRS for p in ("standard", "mup, base_width=32")}
    mup = rows["parameterization=mup, base_width=32, lr=0.001"]
    sp = rows["parameterization=standard, lr=0.001"]
    assert mup["step"] == 1 and mup["widths"] == "32–512"
    assert (mup["theory_input"], mup["theory_hidden"], mup["theory_output"]) == (0.0, 0.0, 0.0)
    assert (sp["theory_input"], sp["theory_hidden"], sp["theory_output"]) == (0.0, 1.0, 1.5)
    assert abs(mup["output"]) < 0.25 and sp["output"] > 1.0  # measured, at lr 0.001 after one Adam step
    result = runner.invoke(app, ["report", str(sweep_dir), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert len(data["width_slopes"]) == 2 * len(LRS) and len(data["best_learning_rates"]) == 2 * len(WIDTHS)
    table = runner.invoke(app, ["report", str(sweep_dir), "--format", "markdown"]).output
    assert "Width scaling of the change" in table and "Best learning rate per width" in table
    assert "(+1.50)" in table  # the theory's exponent beside SP's output-layer slope


def test_best_learning_rate_is_the_lowest_mean_loss(sweep_dir):
    runs, _ = discover([sweep_dir])
    rows = best_learning_rates(runs)
    assert {r["configuration"] for r in rows} == {"parameterization=mup, base_width=32", "parameterization=standard"}
    for row in rows:
        members = [
            r
            for r in runs
            if r.flat["model.width"] == row["width"] and r.flat["model.parameterization"] in row["configuration"]
        ]
        losses = {r.flat["train.lr"]: r.final("test_loss") for r in members}
        assert row["best_lr"] == min(losses, key=lambda k: losses[k] if math.isfinite(losses[k]) else math.inf)
        assert row["lrs"] == len(LRS) and row["seeds"] == 1


@pytest.mark.slow
def test_plot_coordcheck_and_transfer(sweep_dir, tmp_path):
    result = runner.invoke(app, ["plot", str(sweep_dir), "--kind", "coordcheck,transfer", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("coordcheck.png", "transfer.png"):
        assert imread(tmp_path / name).shape[0] > 100
    runs, _ = discover([sweep_dir])
    fig = coordcheck_figure(runs, [], "pre_delta_abs_mean")
    panels = [ax for ax in fig.axes if ax.get_lines()]
    assert len(panels) == 2 * len(LRS) * 3  # a row per configuration, a panel per layer
    assert len(panels[0].get_lines()) == 4  # steps 1..4 (the zero change at step 0 is not drawn)
    assert list(panels[0].get_lines()[0].get_xdata()) == WIDTHS
    fig = transfer_figure(runs, [])
    lines = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label().startswith("width")]
    assert len(lines) == 2 * len(WIDTHS)


def test_coordcheck_without_the_statistic_or_with_a_bad_one_is_an_error(sweep_dir, tmp_path):
    bad = runner.invoke(
        app, ["plot", str(sweep_dir), "--kind", "coordcheck", "--stat", "act_var", "--out", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "--stat 'act_var': not one of pre_delta_abs_mean, act_abs_mean" in bad.output
    one = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))[0]
    alone = runner.invoke(app, ["plot", str(one), "--kind", "coordcheck", "--out", str(tmp_path)])
    assert alone.exit_code == 1 and "two or more values of model.width" in alone.output


@pytest.mark.slow
def test_zero_readout_reports_the_first_step_every_layer_moved_without_theory(tmp_path):
    spec = {
        "name": "zero",
        "data": {
            "dataset": "gaussian",
            "input_dim": 16,
            "num_classes": 4,
            "train_size": 256,
            "test_size": 64,
            "probe_size": 64,
        },
        "model": {"depth": 2, "init": "he_normal", "parameterization": "mup", "base_width": 32, "zero_readout": True},
        "train": {"optimizer": "adam", "steps": 3, "batch_size": 64, "lr": 0.01},
        "log": {"every": 1, "stats": ["pre_delta_abs_mean"], "jacobian": 0, "out": str(tmp_path)},
        "sweep": {"model.width": [32, 64]},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert runner.invoke(app, ["sweep", str(tmp_path / "s.yaml"), "-q"]).exit_code == 0
    runs, _ = discover([tmp_path / "zero"])
    (row,) = width_slopes(runs)
    # the first update moves only the output layer (the hidden layers' gradient is W_out = 0)
    assert row["step"] == 2 and math.isnan(row["theory_hidden"]) and math.isfinite(row["hidden"])


@pytest.mark.slow
def test_coordcheck_plots_configurations_of_different_depths(tmp_path):
    spec = {
        "name": "depths",
        "data": {
            "dataset": "gaussian",
            "input_dim": 16,
            "num_classes": 4,
            "train_size": 256,
            "test_size": 64,
            "probe_size": 64,
        },
        "model": {"init": "he_normal"},
        "train": {"optimizer": "adam", "steps": 2, "batch_size": 64},
        "log": {"every": 1, "stats": ["pre_delta_abs_mean"], "jacobian": 0, "out": str(tmp_path)},
        "sweep": {"model.width": [16, 32], "model.depth": [1, 3]},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert runner.invoke(app, ["sweep", str(tmp_path / "s.yaml"), "-q"]).exit_code == 0
    runs, _ = discover([tmp_path / "depths"])
    fig = coordcheck_figure(runs, [], "pre_delta_abs_mean")
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes if ax.get_visible()]
    want = ["layer 1", "output layer", "layer 1", "layer 2", "layer 3", "output layer"]
    assert sorted(titles) == sorted(want), titles
