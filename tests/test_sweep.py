"""Sweeps: grid expansion, validation up front, batched groups, resume after kill -9, concurrent
sweeps, failure isolation, process workers and Ray."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from initlab.cli import app
from initlab.config import to_dict
from initlab.errors import ConfigError
from initlab.runfolder.storage import run_status
from initlab.runfolder.sweeps import expand, load_spec, plan_groups, run_sweep, sweep_dir

from conftest import run_folders, small_run
from conftest import wait_for

runner = CliRunner()
BASE = small_run("grid")


def write_sweep(tmp_path, **blocks):
    data = {**BASE, "log": {**BASE["log"], "out": str(tmp_path / "runs")}, **blocks}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_grid_expansion_seeds_and_zip(tmp_path):
    path = write_sweep(
        tmp_path,
        sweep={"model.depth": [2, 3], "model.init": ["he_normal", "glorot_normal"]},
        seeds=3,
        zip=[{"model.width": [8, 16], "train.lr": [0.01, 0.001]}],
    )
    runs = expand(load_spec(path))
    assert len(runs) == 2 * 2 * 2 * 3
    assert {r.cfg.seed for r in runs} == {0, 1, 2}
    assert {(r.cfg.model.width, r.cfg.train.lr) for r in runs} == {(8, 0.01), (16, 0.001)}
    assert [r.varied["seed"] for r in runs[:3]] == [0, 1, 2]  # seeds vary fastest
    assert len({r.hash for r in runs}) == len(runs)
    assert all(r.path.parent == tmp_path / "runs" / "grid" for r in runs)


def test_command_line_adds_to_and_overrides_the_file(tmp_path):
    path = write_sweep(tmp_path, sweep={"model.depth": [2, 3, 4]}, seeds=2)
    spec = load_spec(
        path,
        grid=["model.depth=5,6", "model.activation=tanh,relu"],
        seeds="0,7",
        zips=["model.width=8,16 train.lr=0.1,0.01"],
        overrides=["train.steps=5"],
    )
    assert spec.grid == {"model.depth": [5, 6], "model.activation": ["tanh", "relu"]}
    assert spec.seeds == [0, 7] and spec.zips == [{"model.width": [8, 16], "train.lr": [0.1, 0.01]}]
    runs = expand(spec)
    assert len(runs) == 2 * 2 * 2 * 2 and all(r.cfg.train.steps == 5 for r in runs)


@pytest.mark.parametrize(
    "blocks, grid, message",
    [
        ({"sweep": {"model.depth": [2, 0]}}, [], "run (model.depth=0): model.depth: 0 is out of range"),
        ({"sweep": {"model.activation": ["relu", "rellu"]}}, [], "model.activation: 'rellu' is not one of"),
        ({"sweep": {"model.dpth": [2]}}, [], "model.dpth: unknown key"),
        ({"sweep": {"model.depth": []}}, [], "not a non-empty list"),
        ({"seeds": -1}, [], "seeds: -1 is not a count"),
        ({"zip": [{"model.width": [8, 16], "train.lr": [0.1]}]}, [], "lists of different lengths"),
        ({"sweep": {"model.depth": [2]}, "zip": [{"model.depth": [3]}]}, [], "already varied"),
        ({}, ["model.depth"], "expected KEY=V1,V2"),
        ({}, ["model.depth=2,,3"], "expected comma-separated values"),
    ],
)
def test_a_bad_value_fails_the_whole_sweep_up_front(tmp_path, blocks, grid, message):
    path = write_sweep(tmp_path, **blocks)
    with pytest.raises(ConfigError) as err:
        expand(load_spec(path, grid=grid))
    assert message in str(err.value)
    result = runner.invoke(app, ["sweep", str(path), *[a for g in grid for a in ("--grid", g)]])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "runs").exists()


def test_groups_share_everything_but_seed_init_and_lr(tmp_path):
    path = write_sweep(
        tmp_path,
        sweep={"model.depth": [2, 3], "model.init": ["he_normal", "orthogonal"], "train.lr": [0.01, 0.001]},
        seeds=2,
    )
    groups = plan_groups(expand(load_spec(path)), max_group=32)
    assert sorted(len(g) for g in groups) == [8, 8]
    assert all(len({r.cfg.model.depth for r in g}) == 1 for g in groups)
    assert [len(g) for g in plan_groups(expand(load_spec(path)), max_group=3)] == [3, 3, 2, 3, 3, 2]


@pytest.mark.slow
def test_sweep_writes_run_folders_and_resumes(tmp_path):
    path = write_sweep(tmp_path, sweep={"model.init": ["he_normal", "glorot_normal"]}, seeds=2)
    spec = load_spec(path)
    report = run_sweep(spec)
    assert report.trained == 4 and report.count("completed") == 4
    directory = sweep_dir(spec)
    index = json.loads((directory / "index.json").read_text())
    assert len(index["runs"]) == 4 and {r["status"] for r in index["runs"]} == {"completed"}
    assert yaml.safe_load((directory / "sweep.yaml").read_text())["seeds"] == [0, 1]
    for run in expand(spec):
        files = sorted(p.name for p in run.path.iterdir())
        assert files == ["config.yaml", "jacobian.csv", "layers.csv", "metrics.csv", "params", "summary.json"]
        summary = json.loads((run.path / "summary.json").read_text())
        assert summary["group_size"] == 4 and len(pd.read_csv(run.path / "layers.csv")) == 3 * 3
    again = run_sweep(spec)
    assert again.trained == 0 and again.skipped_done == 4


@pytest.mark.slow
def test_batched_sweep_run_matches_initlab_run(tmp_path):
    path = write_sweep(tmp_path, sweep={"model.init": ["he_normal", "glorot_normal"]}, seeds=2)
    spec = load_spec(path)
    run_sweep(spec)
    target = expand(spec)[3]
    solo_cfg = tmp_path / "solo.yaml"
    solo_cfg.write_text(yaml.safe_dump(to_dict(target.cfg)))
    result = runner.invoke(app, ["run", str(solo_cfg), "--out", str(tmp_path / "solo"), "-q"])
    assert result.exit_code == 0, result.output
    (solo,) = run_folders(tmp_path / "solo")
    assert solo.name == target.path.name  # same config, same hash
    # what the README promises: step 0 to float32 rounding, later steps apart by rounding that
    # training amplifies (under 1e-4 on a run this short)
    a, b = pd.read_csv(target.path / "metrics.csv"), pd.read_csv(solo / "metrics.csv")
    a, b = a.drop(columns="wall_time"), b.drop(columns="wall_time")
    pd.testing.assert_frame_equal(a[a.step == 0], b[b.step == 0], rtol=1e-5)
    pd.testing.assert_frame_equal(a, b, rtol=1e-4)
    la, lb = pd.read_csv(target.path / "layers.csv"), pd.read_csv(solo / "layers.csv")
    pd.testing.assert_frame_equal(la[la.step == 0], lb[lb.step == 0], rtol=1e-5)
    pd.testing.assert_frame_equal(la, lb, rtol=1e-4)


@pytest.mark.slow
def test_failures_are_isolated_and_reported(tmp_path, monkeypatch):
    import initlab.runfolder.experiment as experiment

    real = experiment.train_group

    def flaky(cfgs, data, sinks, checkpointer=None):
        if cfgs[0].model.depth == 3:
            raise RuntimeError("simulated crash")
        return real(cfgs, data, sinks, checkpointer)

    monkeypatch.setattr(experiment, "train_group", flaky)
    path = write_sweep(
        tmp_path, sweep={"model.depth": [2, 3, 4]}, zip=[{"train.optimizer": ["sgd", "sgd"], "train.lr": [0.05, 1e6]}]
    )
    spec = load_spec(path)
    report = run_sweep(spec)
    statuses = {(r.cfg.model.depth, r.cfg.train.lr): run_status(r.path) for r in expand(spec)}
    assert statuses == {
        (2, 0.05): "completed",
        (2, 1e6): "diverged",
        (3, 0.05): "failed",
        (3, 1e6): "failed",
        (4, 0.05): "completed",
        (4, 1e6): "diverged",
    }
    assert report.failed == 2
    failed = next(r for r in expand(spec) if r.cfg.model.depth == 3)
    assert "simulated crash" in json.loads((failed.path / "summary.json").read_text())["error"]
    # Without --retry-failed a failed run stays; with it, it is trained again.
    monkeypatch.setattr(experiment, "train_group", real)
    assert run_sweep(spec).trained == 0
    assert run_sweep(spec, retry_failed=True).trained == 2
    assert run_status(failed.path) == "completed"


def test_fail_fast_stops_after_the_first_failed_group(tmp_path, monkeypatch):
    import initlab.runfolder.experiment as experiment

    def broken(cfgs, data, sinks):
        raise RuntimeError("always")

    monkeypatch.setattr(experiment, "train_group", broken)
    path = write_sweep(tmp_path, sweep={"model.depth": [2, 3, 4]})
    report = run_sweep(load_spec(path), fail_fast=True)
    assert report.stopped_early and report.trained == 1
    result = runner.invoke(app, ["sweep", str(path), "-q"])
    assert result.exit_code == 1 and "runs failed" in result.output


def test_cli_sweep_dry_run_trains_nothing(tmp_path):
    path = write_sweep(tmp_path, sweep={"model.depth": [2, 3]}, seeds=2)
    result = runner.invoke(app, ["sweep", str(path), "--dry-run", "--grid", "model.init=he_normal,glorot_normal"])
    assert result.exit_code == 0, result.output
    assert "8 runs, 8 to train in 2 groups" in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "blocks, grid, message",
    [
        ({"name": "../escape"}, [], "name: '../escape' is not a valid sweep name"),
        ({"name": "../escape", "sweep": {"name": ["a", "b"]}}, [], "name: '../escape' is not a valid sweep name"),
        ({"name": "/tmp/escape"}, [], "name: '/tmp/escape' is not a valid sweep name"),
        ({"name": 5}, [], "name: 5 is not a valid sweep name"),
        (
            {"sweep": {"name": ["ok", "../escape"]}},
            [],
            "run (name=../escape): name: '../escape' is not a valid run name",
        ),
        ({}, ["name=ok,../escape"], "name: '../escape' is not a valid run name"),
        ({"sweep": {"log.out": ["elsewhere"]}}, [], "sweep.log.out: log.out cannot vary per run"),
        ({"zip": [{"log.out": ["x"], "seed": [1]}]}, [], "zip[0].log.out: log.out cannot vary per run"),
    ],
)
def test_a_path_forming_value_must_name_one_folder(tmp_path, blocks, grid, message):
    # The sweep folder is <log.out>/<name> and its runs <log.out>/<name>/<run name>-<hash>: none may escape.
    path = write_sweep(tmp_path, **blocks)
    with pytest.raises(ConfigError) as err:
        expand(load_spec(path, grid=grid))
    assert message in str(err.value) and "\n" not in str(err.value)
    result = runner.invoke(app, ["sweep", str(path), "-q", *[a for g in grid for a in ("--grid", g)]])
    assert result.exit_code == 2 and message in result.output, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.yaml"]  # nothing written, inside or outside


def test_a_plain_sweep_name_names_the_sweep_folder(tmp_path):
    path = write_sweep(tmp_path, name="he-vs_xavier.v2", sweep={"name": ["a", "b.1"]})
    runs = expand(load_spec(path))
    assert sweep_dir(load_spec(path)) == tmp_path / "runs" / "he-vs_xavier.v2"
    assert {r.path.parent for r in runs} == {tmp_path / "runs" / "he-vs_xavier.v2"}
    assert sorted(r.path.name.rsplit("-", 1)[0] for r in runs) == ["a", "b.1"]
    result = runner.invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output


def test_run_refuses_a_sweep_file(tmp_path):
    path = write_sweep(tmp_path, seeds=2)
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "initlab sweep" in result.output


def _sweep_cmd(path, *extra):
    return [sys.executable, "-m", "initlab", "sweep", str(path), "-q", *extra]


def _child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_resume_after_kill_9_loses_only_runs_in_flight(tmp_path):
    # Six groups (one per depth) of two seeds; kill the sweep once some runs are written.
    path = write_sweep(
        tmp_path, sweep={"model.depth": [2, 3, 4, 5, 6, 7]}, seeds=2, train={"steps": 60, "batch_size": 32}
    )
    spec = load_spec(path)
    runs = expand(spec)
    proc = subprocess.Popen(_sweep_cmd(path), env=_child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and sum(run_status(r.path) == "completed" for r in runs) < 2:
        time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {r.hash: (r.path / "summary.json").read_text() for r in runs if run_status(r.path) == "completed"}
    assert 2 <= len(done_before) < len(runs)
    assert all(run_status(r.path) in ("completed", "missing") for r in runs)  # never half a folder

    report = run_sweep(spec)
    assert report.skipped_done == len(done_before)
    assert report.trained == len(runs) - len(done_before)
    assert all(run_status(r.path) == "completed" for r in runs)
    for r in runs:  # finished runs were not redone
        if r.hash in done_before:
            assert (r.path / "summary.json").read_text() == done_before[r.hash]
    folders = [p for p in sweep_dir(spec).iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(folders) == len(runs)
    assert not list(sweep_dir(spec).glob(".tmp-*"))


@pytest.mark.slow
def test_two_sweeps_on_one_folder_train_each_run_once(tmp_path):
    path = write_sweep(tmp_path, sweep={"model.depth": [2, 3, 4, 5]}, seeds=2, train={"steps": 30, "batch_size": 32})
    procs = [
        subprocess.Popen(
            _sweep_cmd(path, "--max-group", "1"), env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    spec = load_spec(path)
    runs = expand(spec)
    assert all(run_status(r.path) == "completed" for r in runs)
    trained = [int(o[0].decode().split("trained ")[1].split()[0]) for o in outs]
    assert sum(trained) == len(runs)  # no run trained twice
    index = json.loads((sweep_dir(spec) / "index.json").read_text())
    assert sorted(r["hash"] for r in index["runs"]) == sorted(r.hash for r in runs)


@pytest.mark.slow
def test_process_workers(tmp_path):
    path = write_sweep(tmp_path, sweep={"model.depth": [2, 3]}, seeds=2)
    report = run_sweep(load_spec(path), workers=2)
    assert report.trained == 4 and report.count("completed") == 4


@pytest.mark.slow
def test_ray_executor_on_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    path = write_sweep(
        tmp_path, sweep={"model.init": ["he_normal", "glorot_normal"]}, seeds=2, zip=[{"model.depth": [2, 3]}]
    )
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}},
    )
    try:
        report = run_sweep(load_spec(path), executor="ray", workers=2)
    finally:
        ray.shutdown()
    assert report.trained == 8 and report.count("completed") == 8


def test_ray_missing_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    path = write_sweep(tmp_path, seeds=1)
    result = runner.invoke(app, ["sweep", str(path), "--executor", "ray", "-q"])
    assert result.exit_code == 1 and 'pip install -e ".[ray]"' in result.output


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_sweeps_expand_and_validate(path):
    runs = expand(load_spec(path))
    assert len(runs) >= 8
    assert len(plan_groups(runs, 32)) < len(runs)  # something trains together


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "path",
    sorted(p for sub in ("papers", "methods") for p in (CONFIGS / sub).glob("*.yaml")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_shipped_reproductions_expand_and_validate(path):
    """Every reproduction and demonstration the docs run loads as a sweep (one run or a grid)."""
    from initlab.config import load

    text = path.read_text()
    if any(key in text for key in ("\nsweep:", "\nzip:", "\nseeds:")):
        assert len(expand(load_spec(path))) >= 2
    else:
        assert load(path).name


def test_empty_log_section_and_bad_executor(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nlog:\nsweep: {model.depth: [1, 2]}\n")
    assert len(expand(load_spec(path))) == 2
    spec = load_spec(write_sweep(tmp_path, seeds=1))
    with pytest.raises(ConfigError, match="--executor: 'slurm'"):
        run_sweep(spec, executor="slurm")
    assert not sweep_dir(spec).exists()  # rejected before anything was written


@pytest.mark.slow
def test_sweep_run_folders_keep_initializer_traces(tmp_path):
    path = write_sweep(tmp_path, sweep={"model.init": ["lsuv", "he_normal"]}, seeds=2)
    spec = load_spec(path)
    report = run_sweep(spec)
    assert report.count("completed") == 4
    for run in expand(spec):
        has_trace = (run.path / "lsuv_trace.csv").is_file()
        assert has_trace == (run.cfg.model.init == "lsuv"), run.path


# -- workers, sweeps of the same name, progress, a full disk -----------------------------------------


WORKER = """
import sys, time
from initlab.runfolder.sweeps import PoolExecutor
pool = PoolExecutor(1)
print(pool.pool.submit(__import__("os").getpid).result(), flush=True)
time.sleep(600)
"""


def test_pool_workers_die_with_their_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)

        def gone():
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                return True
            return Path(f"/proc/{worker}/stat").read_text().split()[2] == "Z"  # exited, not yet reaped

        wait_for(gone, 10, f"worker {worker} to exit")
    finally:
        parent.kill()


def test_a_different_sweep_of_the_same_name_is_refused_unless_replaced(tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump({**small_run("same"), "log": {"every": 10, "out": str(tmp_path)}, "seeds": 1}))
    assert runner.invoke(app, ["sweep", str(config), "-q"]).exit_code == 0
    index = (tmp_path / "same" / "index.json").read_text()
    for args in (["--dry-run"], ["-q"]):  # the dry run refuses what the sweep refuses
        result = runner.invoke(app, ["sweep", str(config), *args, "--seeds", "1,2"])
        assert (
            result.exit_code == 1
            and "holds a different sweep named 'same' (1 of its runs are not in this one"
            in result.output.replace("\n", " ")
        ), result.output
    assert (tmp_path / "same" / "index.json").read_text() == index  # nothing of the first was overwritten
    assert runner.invoke(app, ["sweep", str(config), "-q"]).exit_code == 0  # the same sweep again: fine
    result = runner.invoke(app, ["sweep", str(config), "-q", "--seeds", "1,2", "--replace"])
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "same" / "index.json").read_text())["runs"]) == 2


@pytest.mark.slow
def test_a_sweep_extended_by_seeds_or_values_needs_no_replace(tmp_path):
    """The commonest extension, more seeds or more grid values, keeps every run of the folder's
    sweep: the dry run plans it and the sweep trains only the new runs."""
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump({**small_run("grow"), "log": {"every": 10, "out": str(tmp_path)}, "seeds": 1}))
    assert runner.invoke(app, ["sweep", str(config), "-q"]).exit_code == 0
    result = runner.invoke(app, ["sweep", str(config), "--dry-run", "--seeds", "0,1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["sweep", str(config), "-q", "--seeds", "0,1"])
    assert result.exit_code == 0 and "trained 1 runs in 1 groups; 1 already done" in result.output, result.output
    result = runner.invoke(app, ["sweep", str(config), "-q", "--seeds", "0,1", "--grid", "model.width=16,8"])
    assert result.exit_code == 0 and "trained 2 runs in 1 groups; 2 already done" in result.output, result.output
    assert len(json.loads((tmp_path / "grow" / "index.json").read_text())["runs"]) == 4


def test_sweep_progress_moves_within_a_group(tmp_path):
    from initlab.runfolder.sweeps import SweepSpec, run_sweep

    events = []
    base = {**small_run("steps"), "log": {"every": 10, "out": str(tmp_path)}}
    run_sweep(SweepSpec(base, {}, [], [0, 1]), on_event=lambda kind, info: events.append((kind, info)))
    steps = [info["step"] for kind, info in events if kind == "step"]
    assert steps and steps[-1] == 20 and steps == sorted(steps)
    kinds = [k for k, _ in events]
    assert kinds.index("group") < kinds.index("step") < kinds.index("done")  # inside the group, before it ends


def test_a_full_disk_fails_the_runs_it_hits_not_the_sweep(tmp_path, small_yaml, monkeypatch):
    import errno

    import initlab.runfolder.storage as storage

    real = storage.atomic_write

    def full_for_seed_0(path, text):  # the disk fills up while seed 0's folder is written
        config = path.parent / "config.yaml"
        if ".tmp-s-" in str(path) and config.exists() and "\nseed: 0\n" in config.read_text():
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(storage, "atomic_write", full_for_seed_0)
    out = tmp_path / "runs"
    result = runner.invoke(app, ["sweep", str(small_yaml), "--seeds", "2", "--out", str(out), "-q"])
    assert result.exit_code == 1 and "1 results could not be written" in result.output, result.output
    assert "the disk is full" in result.output and "internal error" not in result.output
    index = json.loads((out / "s" / "index.json").read_text())
    assert sorted(e["status"] for e in index["runs"]) == ["completed", "missing"]  # bookkeeping intact
    monkeypatch.setattr(storage, "atomic_write", real)  # space freed: the rerun trains only the lost run
    result = runner.invoke(app, ["sweep", str(small_yaml), "--seeds", "2", "--out", str(out), "-q"])
    assert result.exit_code == 0 and "trained 1 runs" in result.output and "1 already done" in result.output
