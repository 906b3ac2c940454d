"""``initlab export tensorboard``: event files that TensorBoard's own reader loads, holding the run
folder's numbers under the documented tags."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import SMALL_DATA
from initlab.cli import app

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from initlab.runfolder.sweeps import SweepSpec, run_sweep

    root = tmp_path_factory.mktemp("export")
    base = {
        "name": "tb",
        "data": SMALL_DATA,
        "model": {"depth": 2, "width": 8},
        "train": {"steps": 8, "batch_size": 32},
        "log": {"every": 4, "histograms": 8, "out": str(root / "runs")},
    }
    run_sweep(SweepSpec(base, {"model.init": ["he_normal", "glorot_normal"]}, [], [0]))
    return root


def load(folder):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
def test_export_writes_every_statistic_under_its_tag(runs, tmp_path):
    out = tmp_path / "tb"
    result = CliRunner().invoke(app, ["export", "tensorboard", str(runs / "runs"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 2 runs" in result.output
    run_dirs = sorted(p for p in (runs / "runs").rglob("tb-*") if p.is_dir())
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in run_dirs]
    for run in run_dirs:
        acc = load(out / run.name)
        layers, metrics = pd.read_csv(run / "layers.csv"), pd.read_csv(run / "metrics.csv")
        tags = acc.Tags()
        stats = [c for c in layers.columns if c not in ("step", "layer", "kind")]
        for stat in stats:
            for layer, rows in layers.groupby("layer"):
                finite = rows.dropna(subset=[stat])
                if finite.empty:
                    assert f"layers/{stat}/layer_{layer:03d}" not in tags["scalars"]
                    continue
                events = acc.Scalars(f"layers/{stat}/layer_{layer:03d}")
                assert [e.step for e in events] == finite["step"].tolist()
                assert [e.value for e in events] == pytest.approx(finite[stat].tolist(), rel=1e-6)
        acc_rows = metrics.dropna(subset=["test_acc"])
        assert [(e.step, e.value) for e in acc.Scalars("metrics/test_acc")] == [
            (s, pytest.approx(v, rel=1e-6)) for s, v in zip(acc_rows["step"], acc_rows["test_acc"])
        ]
        assert "metrics/wall_time" not in tags["scalars"] and "metrics/epoch" not in tags["scalars"]
        # histograms: each (step, layer, quantity) of histograms.csv, counts without the NaN bin
        hist = pd.read_csv(run / "histograms.csv")
        for (step, layer, quantity), rows in hist.groupby(["step", "layer", "quantity"]):
            (event,) = [e for e in acc.Histograms(f"histograms/{quantity}/layer_{layer:03d}") if e.step == step]
            counted = rows.dropna(subset=["lo", "hi"])["count"]
            assert event.histogram_value.num == counted.sum()
            assert sorted(event.histogram_value.bucket) == sorted(counted.astype(float).tolist())
        pre = acc.Histograms("histograms/pre/layer_001")[0].histogram_value
        assert -5.0 <= pre.min < pre.max <= 5.0 or math.isinf(pre.max)
        jac = pd.read_csv(run / "jacobian.csv")
        assert [e.step for e in acc.Histograms("jacobian/singular_values")] == sorted(jac["step"].unique())
        assert acc.Histograms("jacobian/singular_values")[0].histogram_value.num == (jac["step"] == 0).sum()
        assert {"config/text_summary", "summary/text_summary"} <= set(tags["tensors"])


def test_export_refuses_to_mix_into_an_earlier_export_and_bad_formats(runs, tmp_path):
    out = tmp_path / "tb"
    assert CliRunner().invoke(app, ["export", "tensorboard", str(runs / "runs"), "--out", str(out)]).exit_code == 0
    again = CliRunner().invoke(app, ["export", "tensorboard", str(runs / "runs"), "--out", str(out)])
    assert again.exit_code == 1 and "already holds files" in again.output
    bad = CliRunner().invoke(app, ["export", "csv2", str(runs / "runs"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "'csv2' is not one of tensorboard" in bad.output  # a usage error
    assert not (tmp_path / "x").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    none = CliRunner().invoke(app, ["export", "tensorboard", str(empty), "--out", str(tmp_path / "y")])
    assert none.exit_code == 1 and "no run folders" in none.output
