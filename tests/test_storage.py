"""The run folder's name and claim (initlab.runfolder.storage): 16 hex digits of the config hash,
legacy 8-digit folders, a loud hash collision, and a killed run's lock."""

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from initlab import config as C
from initlab.cli import app
from initlab.errors import InitlabError
from initlab.runfolder.storage import (
    RunRecord,
    check_run_dir_free,
    lock_holder,
    run_dir_for,
    run_status,
    try_lock,
    unlock,
    write_run_dir,
)
from initlab.runfolder.sweeps import expand, load_spec, needs_work

from conftest import small_run

runner = CliRunner()


# Two configs whose digests share their first 8 hex digits (found by a search over depth × width ×
# seed): with the old 32-bit folder hash they were one run folder, the second refused as done.
SMALL = {
    "name": "small",
    "data": {"dataset": "gaussian", "input_dim": 8},
    "model": {"depth": 2, "width": 8},
    "train": {"steps": 5},
}
A = {"model": {"depth": 52, "width": 60}, "seed": 5}
B = {"model": {"depth": 62, "width": 63}, "seed": 6}


def small(out: Path, extra: dict) -> C.RunConfig:
    data = json.loads(json.dumps(SMALL))
    data["model"].update(extra["model"])
    data["seed"] = extra["seed"]
    data["log"] = {"out": str(out)}
    return C.from_dict(data)


def fake_run_dir(cfg: C.RunConfig, path: Path, status: str = "completed") -> None:
    write_run_dir(path, cfg, RunRecord({"status": status, "name": cfg.name}))


def test_the_32_bit_collision_is_two_folders_now(tmp_path):
    a, b = small(tmp_path, A), small(tmp_path, B)
    assert C.config_digest(a)[:8] == C.config_digest(b)[:8]  # the collision the old hash had
    assert len(C.config_hash(a)) == 16 and C.config_hash(a) != C.config_hash(b)
    assert run_dir_for(a) != run_dir_for(b)


def test_folders_named_by_the_old_hash_keep_their_names(tmp_path):
    a, b = small(tmp_path, A), small(tmp_path, B)
    legacy = tmp_path / f"small-{C.config_digest(a)[:8]}"
    fake_run_dir(a, legacy)
    assert run_dir_for(a) == legacy  # the 8-digit folder holds this very config: still its run
    assert run_dir_for(b) == tmp_path / f"small-{C.config_hash(b)}"  # not b's, though it shares the name


def test_a_folder_holding_another_config_is_a_loud_collision(tmp_path):
    a, b = small(tmp_path, A), small(tmp_path, B)
    path = run_dir_for(b)
    fake_run_dir(a, path)  # as if a's run had landed at b's path
    with pytest.raises(InitlabError, match="different config with the same hash"):
        check_run_dir_free(b, path, force=True)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({**small_run("s"), "log": {"out": str(tmp_path)}, "seeds": 1}))
    (run,) = expand(load_spec(sweep))
    fake_run_dir(a, run.path)
    with pytest.raises(InitlabError, match="hash collision"):
        needs_work(run, retry_failed=False)


def test_a_killed_run_reads_as_interrupted_and_reruns_without_force(tmp_path):
    data = {**small_run("killed"), "log": {"every": 10, "out": str(tmp_path)}}
    cfg = C.from_dict(data)
    path = run_dir_for(cfg)
    fake_run_dir(cfg, path, status="running")  # what kill -9 or the OOM killer leaves
    assert run_status(path) == "interrupted"  # nobody holds its lock
    fd = try_lock(path)  # a live process training it
    try:
        assert run_status(path) == "running" and lock_holder(path) == os.getpid()
        with pytest.raises(InitlabError, match=f"being trained by process {os.getpid()}"):
            check_run_dir_free(cfg, path, force=True)
    finally:
        unlock(fd)
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["run", str(config), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((path / "summary.json").read_text())["status"] == "completed"
    assert runner.invoke(app, ["run", str(config), "-q"]).exit_code == 1  # a finished run still needs --force
