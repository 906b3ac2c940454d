"""The pre-flight memory estimate (initlab.train.memory, train.loop.memory_estimate) and where its check
refuses: a run before its folder exists, a sweep's group, a sweep's dry run."""

import json
import time

import yaml
from typer.testing import CliRunner

from initlab import config as C
from initlab.cli import app
from initlab.runfolder.storage import run_dir_for

from conftest import small_run

runner = CliRunner()


def test_the_memory_estimate_counts_parameters_and_optimizer_state_exactly():
    from initlab.data.datasets import load_dataset
    from initlab.train.loop import memory_estimate
    from initlab.train.memory import OPT_COPIES, PARAM_COPIES

    cfg = C.from_dict({**small_run("m"), "train": {"optimizer": "adam", "batch_size": 32, "steps": 5}})
    data = load_dataset(cfg.data, None, progress=False)
    n = 8 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3  # input, hidden and output layers: weights and biases
    est = memory_estimate([cfg, cfg], data)
    assert est.parameters == 2 * PARAM_COPIES * 4 * n
    assert est.optimizer == 2 * OPT_COPIES * 4 * (2 * n + 2)  # adam's two moments, and two scalar step counts
    assert est.data == data.x_train.nbytes + data.y_train.nbytes + data.x_test.nbytes + data.y_test.nbytes


def test_the_memory_estimate_counts_float64_parameters_at_8_bytes_without_a_warning():
    import warnings

    from initlab.data.datasets import load_dataset
    from initlab.train.loop import memory_estimate
    from initlab.train.memory import OPT_COPIES, PARAM_COPIES

    cfg = C.from_dict(
        {
            **small_run("m"),
            "model": {"depth": 2, "width": 16, "dtype": "float64"},
            "train": {"optimizer": "adam", "batch_size": 32, "steps": 5},
        }
    )
    data = load_dataset(cfg.data, None, progress=False)
    n = 8 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # JAX's "explicitly requested dtype float64 ... truncated" was one
        est = memory_estimate([cfg], data)
    assert est.parameters == PARAM_COPIES * 8 * n
    assert est.optimizer == OPT_COPIES * 8 * (2 * n + 1)  # two float64 moments and a 64-bit step count


def test_a_run_that_cannot_fit_is_refused_before_its_folder_exists(tmp_path, monkeypatch):
    import initlab.train.memory as memory

    big = {**small_run("big"), "model": {"depth": 250, "width": 2048}, "log": {"every": 10, "out": str(tmp_path)}}
    config = tmp_path / "big.yaml"
    config.write_text(yaml.safe_dump(big))
    monkeypatch.setattr(memory, "available", lambda device=None: (6 * 2**30, "a 6 GiB cgroup"))
    start = time.monotonic()
    result = runner.invoke(app, ["run", str(config), "-q"])
    assert result.exit_code == 1 and "more than the 6.00 GiB free in a 6 GiB cgroup" in result.output, result.output
    assert "(parameters 15.57 GiB" in result.output and "--no-memory-check" in result.output
    assert time.monotonic() - start < 10 and not run_dir_for(C.from_dict(big)).exists()
    monkeypatch.setattr(memory, "available", lambda device=None: (2**10, "a tiny device"))
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({**small_run("fits"), "log": {"every": 10, "out": str(tmp_path)}}))
    assert runner.invoke(app, ["run", str(small), "-q"]).exit_code == 1
    monkeypatch.setenv(memory.CHECK_ENV, "1")  # restored after the test; the flag sets it to 0
    assert runner.invoke(app, ["run", str(small), "-q", "--no-memory-check"]).exit_code == 0


def test_a_sweep_group_that_cannot_fit_fails_with_the_estimate(tmp_path, monkeypatch):
    import initlab.train.memory as memory
    from initlab.runfolder.sweeps import SweepSpec, run_sweep

    monkeypatch.setattr(memory, "available", lambda device=None: (2**10, "a tiny device"))
    report = run_sweep(SweepSpec({**small_run("tiny"), "log": {"every": 10, "out": str(tmp_path)}}, {}, [], [0, 1]))
    assert report.failed == 2
    (summary,) = {json.loads(p.read_text())["error"] for p in (tmp_path / "tiny").glob("*/summary.json")}
    assert summary.startswith("InitlabError: this would need about") and "free in a tiny device" in summary


def test_the_dry_run_makes_the_memory_check(tmp_path, monkeypatch):
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump({**small_run("big"), "log": {"every": 10, "out": str(tmp_path)}, "seeds": 2}))
    monkeypatch.setattr("initlab.train.memory.available", lambda: (1000, "a test's tiny device"))
    result = runner.invoke(app, ["sweep", str(config), "--dry-run"])
    assert result.exit_code == 1 and "more than the" in result.output and "tiny device" in result.output, result.output
    assert not (tmp_path / "big").exists()


def test_a_dry_run_never_downloads_the_data_and_says_the_memory_check_waits(tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text(
        yaml.safe_dump(
            {"name": "m", "data": {"dataset": "mnist", "train_size": 1000}, "log": {"out": str(tmp_path)}, "seeds": 2}
        )
    )
    empty = tmp_path / "no-data"
    empty.mkdir()
    result = runner.invoke(app, ["sweep", str(config), "--dry-run", "--data-dir", str(empty)])
    assert result.exit_code == 0, result.output
    assert "memory not checked: the data is not here yet" in " ".join(result.output.split())
    assert list(empty.iterdir()) == []  # nothing fetched
