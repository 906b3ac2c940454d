"""The Python API (initlab.api): the README's example, tables equal to ``initlab report --format
csv``, saved parameters that reproduce the summary's test accuracy, and its errors."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import SMALL_DATA

pd = pytest.importorskip("pandas")

import initlab  # noqa: E402
from initlab.errors import ConfigError, InitlabError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def small(tmp_path, **over):
    base = {
        "name": "api",
        "data": SMALL_DATA,
        "model": {"depth": 3, "width": 16},
        "train": {"steps": 12, "batch_size": 32},
        "log": {"every": 4, "out": str(tmp_path / "runs")},
    }
    for section, values in over.items():
        base[section] = {**base.get(section, {}), **values}
    return base


def write_config(tmp_path, cfg: dict) -> Path:
    import yaml

    path = tmp_path / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys, mnist_dir):
    monkeypatch.setenv("INITLAB_DATA_DIR", str(mnist_dir))
    (body,) = [
        b
        for lang, b in re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S)
        if lang == "python" and "import initlab" in b
    ]
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    exec(compile(body, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("completed ")
    assert "(2, 512, 512)" in out  # the quickstart's 3 hidden layers of 512: two stacked hidden matrices
    (run,) = [p for p in (tmp_path / "runs" / "api").iterdir() if not p.name.startswith(".")]
    assert sorted(p.name for p in (run / "params").iterdir()) == ["step_000000.npz", "step_000200.npz"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A sweep of two inits × two seeds (four runs), trained once for the tests that read it."""
    tmp_path = tmp_path_factory.mktemp("swept")
    path = write_config(
        tmp_path, {**small(tmp_path), "sweep": {"model.init": ["he_normal", "glorot_normal"]}, "seeds": 2}
    )
    return tmp_path, initlab.sweep(path)


@pytest.mark.slow
def test_open_runs_table_equals_report_csv(swept):
    from typer.testing import CliRunner

    from initlab.cli import app

    tmp_path, runs = swept
    assert len(runs) == 4 and all(r.status == "completed" for r in runs)
    cols = ["model.init", "test_acc", "grad_ratio_init"]
    for columns in (cols, None):  # the chosen columns, and the report's default table
        args = ["report", str(tmp_path / "runs"), "--format", "csv"]
        args += ["--columns", ",".join(cols)] if columns else []
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        table = initlab.open_runs(tmp_path / "runs").table(columns=columns)
        assert len(table) == 2
        pd.testing.assert_frame_equal(table, pd.read_csv(io.StringIO(result.stdout)), check_dtype=False)


@pytest.mark.parametrize(
    "model",
    [{}, {"norm": "batchnorm", "residual": True, "depth": 5}, {"reparam": "weightnorm"}, {"dtype": "bfloat16"}],
    ids=["plain", "batchnorm-residual", "weightnorm", "bfloat16"],
)
@pytest.mark.slow
def test_saved_end_parameters_reproduce_the_summary_accuracy(tmp_path, model):
    run = initlab.run(initlab.load_config(write_config(tmp_path, small(tmp_path, model=model))))
    assert run.param_steps == [0, 12]
    final = run.summary["final"]
    assert run.evaluate("end") == {
        "test_loss": pytest.approx(final["test_loss"], rel=0, abs=0),
        "test_acc": final["test_acc"],
    }
    params, state = run.params("end")
    init, _ = run.params("init")
    assert params.hidden.dense.w.shape == (run.config.model.depth - 1, 16, 16)
    assert not np.array_equal(np.asarray(params.out.w, np.float32), np.asarray(init.out.w, np.float32))
    if model.get("norm") == "batchnorm":  # the running statistics moved from their start
        assert not np.allclose(np.asarray(state.hidden["mean"]), 0)
    assert run.params(12)[0].out.b.dtype == init.out.b.dtype


def test_init_parameters_are_those_training_started_from(tmp_path):
    # steps=0: the evaluation at init is the summary's final one
    run = initlab.run(write_config(tmp_path, small(tmp_path, train={"steps": 0})))
    assert run.param_steps == [0]
    assert run.evaluate("init")["test_acc"] == run.summary["final"]["test_acc"]


def test_save_params_can_be_turned_off_and_does_not_change_the_hash(tmp_path):
    with_params = initlab.run(write_config(tmp_path, small(tmp_path)))
    cfg = small(tmp_path, log={"save_params": [], "out": str(tmp_path / "other")})
    without = initlab.run(write_config(tmp_path, cfg))
    assert without.path.name == with_params.path.name
    assert without.param_steps == [] and not (without.path / "params").exists()
    with pytest.raises(InitlabError, match=r"no parameters saved at step 'end' \(saved: none"):
        without.params("end")
    with pytest.raises(InitlabError, match=r"no parameters saved at step 5 \(saved: 0, 12\)"):
        with_params.params(5)
    with pytest.raises(ConfigError, match="log.save_params"):
        initlab.load_config(write_config(tmp_path, small(tmp_path, log={"save_params": ["every"]})))


@pytest.mark.slow
def test_a_sweep_saves_every_runs_parameters(tmp_path):
    path = write_config(tmp_path, {**small(tmp_path), "sweep": {"train.lr": [0.001, 0.01]}})
    runs = initlab.sweep(path)
    for r in runs:
        assert r.param_steps == [0, 12]
        assert r.evaluate("end")["test_acc"] == r.summary["final"]["test_acc"]


@pytest.mark.slow
def test_overrides_and_errors(tmp_path):
    cfg = initlab.load_config(write_config(tmp_path, small(tmp_path)), ["model.depth=2"])
    assert cfg.model.depth == 2
    with pytest.raises(ConfigError, match="model.depth"):
        initlab.load_config(write_config(tmp_path, small(tmp_path)), ["model.depth=-1"])
    with pytest.raises(InitlabError, match="not a run folder"):
        initlab.open_run(tmp_path)
    run = initlab.run(cfg, overrides=["train.steps=4"])
    assert run.config.train.steps == 4 and run.config.model.depth == 2
    with pytest.raises(InitlabError, match="already"):
        initlab.run(cfg, overrides=["train.steps=4"])
    assert initlab.run(cfg, overrides=["train.steps=4"], force=True).status == "completed"
    assert list(run.layers.columns[:3]) == ["step", "layer", "kind"]
    assert run.histograms is None


def test_dir_lists_the_api_without_importing_it():
    import subprocess
    import sys

    code = "import initlab, sys; print(sorted(dir(initlab))); print('initlab.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    listed, imported = out.splitlines()
    assert all(repr(name) in listed for name in initlab.__all__)
    assert imported == "False"


def test_overrides_may_be_one_string(tmp_path):
    path = write_config(tmp_path, small(tmp_path))
    assert initlab.load_config(path, "model.depth=2").model.depth == 2
    with pytest.raises(InitlabError, match="overrides: 2 is not a string"):
        initlab.load_config(path, ["model.depth=2", 2])


def test_an_existing_run_names_the_python_argument_and_exist_ok_returns_it(tmp_path):
    cfg = initlab.load_config(write_config(tmp_path, small(tmp_path, train={"steps": 4})))
    first = initlab.run(cfg)
    with pytest.raises(InitlabError) as info:
        initlab.run(cfg)
    assert "force=True" in str(info.value) and "--force" not in str(info.value)
    with pytest.raises(InitlabError, match="resume=True continues a run and force=True starts it again"):
        initlab.run(cfg, force=True, resume=True)
    started = first.summary["started_at"]
    again = initlab.run(cfg, exist_ok=True)  # the stored run, not trained again
    assert again.path == first.path and again.summary["started_at"] == started
    with pytest.raises(InitlabError, match="give one of them"):
        initlab.run(cfg, exist_ok=True, force=True)
    fresh = initlab.run(cfg, overrides="train.steps=2", exist_ok=True)  # nothing stored yet: trains it
    assert fresh.path != first.path and fresh.config.train.steps == 2


def test_a_slice_of_runs_is_runs_and_its_table_is_of_those_runs(swept):
    _, runs = swept
    part = runs[0:1]
    assert isinstance(part, initlab.Runs) and len(part) == 1 and part[0].path == runs[0].path
    assert isinstance(runs[-1], initlab.Run)
    table = part.table(columns=["test_acc"])
    assert len(table) == 1
    assert table["test_acc"].tolist() == [runs[0].summary["final"]["test_acc"]]


def test_a_per_run_table_has_a_row_and_the_folder_of_each_run(swept):
    _, runs = swept
    table = runs.table(per_run=True, sort="-test_acc")
    assert len(table) == 4
    assert list(table.columns[:3]) == ["model.init", "seed", "run"]
    assert sorted(table["run"]) == sorted(str(r.path) for r in runs)
    for _, row in table.iterrows():
        run = initlab.open_run(row["run"])
        assert (row["model.init"], row["seed"]) == (run.config.model.init, run.config.seed)
        assert row["test_acc"] == run.summary["final"]["test_acc"]
    means = runs.table(sort="-test_acc")  # configurations in the aggregated table's order, each by seed
    assert list(dict.fromkeys(table["model.init"])) == means["model.init"].tolist()
    assert table.groupby("model.init", sort=False)["seed"].apply(list).tolist() == [[0, 1], [0, 1]]
