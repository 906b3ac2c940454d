"""The run folder: files written, nothing lost when a run fails or is interrupted."""

import json

import pandas as pd
import pytest

from initlab.config import config_hash
from initlab.errors import InitlabError
from initlab.runfolder import experiment
from initlab.runfolder.storage import METRIC_COLUMNS, run_dir_for
from initlab.stats.statistics import default_names

import signal
import subprocess
import sys

import numpy as np
import yaml

from initlab import config as C
from initlab.config import from_dict
from initlab.data.datasets import load_dataset
from initlab.runfolder.storage import RunRecorder
from initlab.train.loop import train

from conftest import tiny
from conftest import SMALL_DATA, run_with, small_run, wait_for


def test_run_writes_its_files(tmp_path):
    cfg = tiny(log={"every": 10, "out": str(tmp_path)})
    summary = experiment.run(cfg)
    path = tmp_path / f"tiny-{config_hash(cfg)}"
    assert summary["run_dir"] == str(path) == str(run_dir_for(cfg))
    assert sorted(p.name for p in path.iterdir()) == [
        "config.yaml",
        "jacobian.csv",
        "layers.csv",
        "metrics.csv",
        "params",
        "summary.json",
    ]
    metrics = pd.read_csv(path / "metrics.csv")
    layers = pd.read_csv(path / "layers.csv")
    assert tuple(metrics.columns) == METRIC_COLUMNS
    assert tuple(layers.columns) == ("step", "layer", "kind", *default_names())  # every default statistic
    assert len(layers) == 5 * 4  # logged steps 0, 10, 20, 30, 40 × (3 hidden + output)
    assert list(layers[layers.step == 0].kind) == ["hidden"] * 3 + ["output"]
    assert layers[layers.step == 0].update_ratio.isna().all()
    assert layers[layers.step == 40].update_ratio.notna().all()
    saved = json.loads((path / "summary.json").read_text())
    assert saved["status"] == "completed" and saved["steps"] == 40
    assert saved["final"]["test_acc"] == pytest.approx(metrics.test_acc.iloc[-1])
    assert saved["device"]["platform"] and saved["versions"]["jax"]
    assert len(saved["signal"]["init"]["act_var"]) == 4
    assert not list(path.glob(".*"))  # no temporary files left


def test_existing_folder_needs_force(tmp_path):
    cfg = tiny(log={"out": str(tmp_path)})
    experiment.run(cfg)
    with pytest.raises(InitlabError, match="already exists.*--force"):
        experiment.run(cfg)
    assert experiment.run(cfg, force=True)["status"] == "completed"


def test_interrupted_run_keeps_what_it_had(tmp_path):
    cfg = tiny(log={"out": str(tmp_path)}, train={"steps": 400})

    def stop(step, total, info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        experiment.run(cfg, on_progress=stop)
    path = run_dir_for(cfg)
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert len(pd.read_csv(path / "metrics.csv")) >= 1
    assert set(default_names()) <= set(pd.read_csv(path / "layers.csv").columns)


def test_failed_run_is_recorded_and_reported(tmp_path):
    cfg = tiny(log={"out": str(tmp_path)})

    def boom(step, total, info):
        raise RuntimeError("disk on fire")

    with pytest.raises(InitlabError, match="disk on fire.*partial results"):
        experiment.run(cfg, on_progress=boom)
    summary = json.loads((run_dir_for(cfg) / "summary.json").read_text())
    assert summary["status"] == "failed" and "disk on fire" in summary["error"]


@pytest.mark.slow
def test_diverged_run_is_a_result_not_an_error(tmp_path):
    cfg = tiny(log={"out": str(tmp_path)}, train={"optimizer": "sgd", "lr": 1e6})
    summary = experiment.run(cfg)
    assert summary["status"] == "diverged"
    assert summary["divergence"]["layer"] is not None
    assert json.loads((run_dir_for(cfg) / "summary.json").read_text())["status"] == "diverged"


def test_a_config_error_that_needs_the_data_leaves_no_folder(tmp_path):
    from initlab.errors import ConfigError

    cfg = tiny(log={"out": str(tmp_path)}, train={"batch_size": 4096})
    for _ in range(2):  # the same error both times, never "already exists"
        with pytest.raises(ConfigError, match="train.batch_size: 4096"):
            experiment.run(cfg)
    assert not run_dir_for(cfg).exists()


def test_layers_view_of_a_critical_relu_run(tmp_path):
    """He + ReLU is critical (ξ_c infinite): the summary stores "inf", and reports read it back."""
    from initlab.report.tables import build_report, layer_report

    cfg = tiny(log={"out": str(tmp_path)}, model={"activation": "relu", "init": "he_normal"})
    summary = experiment.run(cfg)
    assert summary["theory"]["phase"] == "critical"
    layers = layer_report(run_dir_for(cfg))
    assert "critical phase" in layers["theory"] and "inf" in layers["theory"]
    assert build_report([tmp_path]).rows[0]["theory_ratio"] > 0


@pytest.mark.parametrize(
    "init, file, columns",
    [
        ("lsuv", "lsuv_trace.csv", ["layer", "iteration", "variance", "scale"]),
        ("layerwise_autoencoder", "pretrain_losses.csv", ["layer", "step", "loss"]),
    ],
)
@pytest.mark.slow
def test_run_folder_keeps_the_initializers_trace(tmp_path, init, file, columns):
    args = {"steps": 20, "examples": 256, "log_every": 10} if init == "layerwise_autoencoder" else {}
    cfg = tiny(model={"init": init, "init_args": args}, train={"steps": 10}, log={"out": str(tmp_path)})
    summary = experiment.run(cfg)
    path = run_dir_for(cfg)
    trace = pd.read_csv(path / file)
    assert list(trace.columns) == columns
    assert sorted(trace.layer.unique()) == ([1, 2, 3, 4] if init == "lsuv" else [1, 2, 3])
    assert summary["init_time_s"] > 0
    assert summary["theory"]["applies"] is False


@pytest.mark.slow
def test_log_stats_selects_the_columns_of_layers_csv(tmp_path):
    cfg = tiny(log={"every": 20, "out": str(tmp_path), "stats": ["w_norm", "update_ratio"]})
    assert cfg.log.stats == ("pre_var", "act_var", "grad_var", "w_norm", "update_ratio")  # registry order
    experiment.run(cfg)
    layers = pd.read_csv(run_dir_for(cfg) / "layers.csv")
    assert tuple(layers.columns) == ("step", "layer", "kind", *cfg.log.stats)
    default = tiny(log={"every": 20, "out": str(tmp_path)})
    experiment.run(default)
    full = pd.read_csv(run_dir_for(default) / "layers.csv")
    for c in cfg.log.stats:  # the selection does not change a number
        assert list(layers[c].fillna(-1)) == list(full[c].fillna(-1)), c


def test_a_shaped_statistic_gets_a_tidy_file_of_its_own(tmp_path, monkeypatch):
    """A statistic of k values per layer, added to the registry alone, is selectable and written
    to <name>.csv (one row per step, layer and index), in a solo run and in a sweep's group."""
    import jax.numpy as jnp

    import initlab.stats.statistics as S
    from initlab.registry import Registry

    quartiles = S.Statistic(
        "quartiles of a",
        "forward",
        lambda f: jnp.percentile(f.a, jnp.asarray([25.0, 50.0, 75.0])),
        size=3,
        default=False,
    )
    monkeypatch.setattr(S, "STATISTICS", Registry("statistic", {**S.STATISTICS, "act_quartiles": quartiles}))
    cfg = tiny(train={"steps": 20}, log={"every": 10, "out": str(tmp_path), "stats": ["act_quartiles"]})
    experiment.run(cfg)
    path = run_dir_for(cfg)
    shaped = pd.read_csv(path / "act_quartiles.csv")
    assert tuple(shaped.columns) == ("step", "layer", "kind", "index", "value")
    assert len(shaped) == 3 * 4 * 3  # steps 0, 10, 20 × 4 layers × 3 values
    assert "act_quartiles" not in pd.read_csv(path / "layers.csv").columns
    q = shaped[(shaped.step == 0) & (shaped.layer == 1)].sort_values("index").value.to_numpy()
    assert q[0] <= q[1] <= q[2]
    records = experiment.execute_group([experiment.to_dict(cfg)])
    assert len(records[0].shaped["act_quartiles"]) == len(shaped)
    assert records[0].shaped["act_quartiles"][0]["value"] == pytest.approx(shaped.value.iloc[0])


def test_log_stats_names_are_checked_when_the_config_loads():
    with pytest.raises(InitlabError, match=r"log.stats: 'w_nrm' is not one of pre_mean, pre_var"):
        tiny(log={"stats": ["w_norm", "w_nrm"]})
    with pytest.raises(InitlabError, match=r"log.stats: .* names an entry twice"):
        tiny(log={"stats": ["w_norm", "w_norm"]})
    with pytest.raises(InitlabError, match=r"log.stats: 3 is not a list"):
        tiny(log={"stats": 3})


# -- interrupted by SIGTERM --------------------------------------------------------------------------


def test_sigterm_ends_a_run_as_interrupted(tmp_path):
    data = {
        **small_run("term"),
        "train": {"steps": 10**7, "batch_size": 32},
        "log": {"every": 10, "out": str(tmp_path)},
    }
    config = tmp_path / "term.yaml"
    config.write_text(yaml.safe_dump(data))
    path = run_dir_for(C.from_dict(data))
    proc = subprocess.Popen(
        [sys.executable, "-m", "initlab", "run", str(config), "-q"], stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: (path / "metrics.csv").exists(), 120, "the run to start")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err and "internal error" not in err
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "SIGTERM" in summary["error"]


# -- histograms.csv ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_histograms_csv_round_trips_through_pandas(tmp_path):
    run = run_with(tmp_path, histograms=8)
    df = pd.read_csv(run / "histograms.csv")
    assert list(df.columns) == ["step", "layer", "kind", "quantity", "lo", "hi", "count"]
    assert sorted(df.step.unique()) == [0, 10, 20]
    assert set(df.quantity) == {"pre", "act", "grad", "weight"} and (df["count"] > 0).all()
    sums = df.groupby(["step", "layer", "quantity"])["count"].sum()
    probe, width, d, classes = SMALL_DATA["probe_size"], 16, SMALL_DATA["input_dim"], SMALL_DATA["num_classes"]
    assert (sums.xs("pre", level="quantity").xs(1, level="layer") == probe * width).all()
    assert (sums.xs("grad", level="quantity").xs(3, level="layer") == probe * classes).all()
    assert (sums.xs("weight", level="quantity").xs(1, level="layer") == d * width).all()
    assert set(df[df.quantity == "act"].layer) == {1, 2}  # hidden layers only
    assert set(df.kind[df.layer == 3]) == {"output"}
    lin = df[df.quantity == "pre"]
    inside = lin[np.isfinite(lin.lo) & np.isfinite(lin.hi)]
    assert ((inside.hi - inside.lo).round(9) == 1.25).all()  # 8 bins over [-5, 5]


def test_histograms_are_off_by_default_and_keep_old_hashes(tmp_path):
    run = run_with(tmp_path)
    assert not (run / "histograms.csv").exists()
    base = from_dict(small_run("h"))
    on = from_dict({**small_run("h"), "log": {"every": 10, "histograms": 64}})
    assert config_hash(base) != config_hash(on)
    assert config_hash(base) == config_hash(
        from_dict({**small_run("h"), "log": {"every": 10, "histograms": 0, "jacobian": 4}})
    )


# -- jacobian.csv and the summary's spectrum ---------------------------------------------------------


def test_a_run_stores_its_spectrum_at_init_and_end(tmp_path):
    run = run_with(tmp_path, jacobian=3)
    df = pd.read_csv(run / "jacobian.csv")
    assert list(df.columns) == ["step", "example", "index", "singular_value"]
    assert sorted(df.step.unique()) == [0, 20] and sorted(df.example.unique()) == [0, 1, 2]
    assert len(df) == 2 * 3 * 8  # min(width 16, input 8) values per example
    for _, g in df.groupby(["step", "example"]):
        assert (np.diff(g.sort_values("index").singular_value.to_numpy()) <= 0).all()  # largest first
    summary = json.loads((run / "summary.json").read_text())
    jac = summary["jacobian"]
    assert jac["applies"] and jac["examples"] == 3 and jac["end"]["step"] == 20
    init = df[df.step == 0].singular_value
    assert jac["init"]["max"] == pytest.approx(init.max())
    floor = init.max() * 16 * np.finfo(np.float32).eps  # max(width 16, input 8) · ε
    assert jac["init"]["floor"] == pytest.approx(floor)
    assert jac["init"]["min"] == pytest.approx(init[init > floor].min())
    assert jac["init"]["unresolved"] == pytest.approx(np.mean(init <= floor))
    assert jac["init"]["mean_sq"] == pytest.approx((init**2).sum() / 3 / 16)
    assert summary["theory"]["jacobian_mean_sq"] > 0


def test_batch_norm_runs_say_why_they_have_no_spectrum(tmp_path):
    cfg = tiny(model={"norm": "batchnorm"}, log={"every": 10, "out": str(tmp_path)})
    res = train(cfg, load_dataset(cfg.data), RunRecorder())
    assert res.spectra == {}
    from initlab.runfolder.experiment import jacobian_summary

    out = jacobian_summary(cfg, res)
    assert out["applies"] is False and "batch statistics" in out["reason"]
