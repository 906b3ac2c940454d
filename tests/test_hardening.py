"""Faults and hostile input (issue 20): hash collisions, killed and terminated runs, orphaned sweep
workers, bad summaries, alias and gzip bombs, and the errors that must stay one clean line."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from initlab import config as C
from initlab.cli import app
from initlab.errors import InitlabError
from initlab.runfolder.storage import (RunRecord, check_run_dir_free, lock_holder, run_dir_for, run_status, try_lock,
                                       unlock, write_run_dir)
from initlab.runfolder.sweeps import expand, load_spec, needs_work

from conftest import small_run

runner = CliRunner()

# Two configs whose digests share their first 8 hex digits (found by a search over depth × width ×
# seed): with the old 32-bit folder hash they were one run folder, the second refused as done.
SMALL = {"name": "small", "data": {"dataset": "gaussian", "input_dim": 8}, "model": {"depth": 2, "width": 8},
         "train": {"steps": 5}}
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


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_sigterm_ends_a_run_as_interrupted(tmp_path):
    data = {**small_run("term"), "train": {"steps": 10 ** 7, "batch_size": 32}, "log": {"every": 10,
                                                                                        "out": str(tmp_path)}}
    config = tmp_path / "term.yaml"
    config.write_text(yaml.safe_dump(data))
    path = run_dir_for(C.from_dict(data))
    proc = subprocess.Popen([sys.executable, "-m", "initlab", "run", str(config), "-q"], stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_for(lambda: (path / "metrics.csv").exists(), 120, "the run to start")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err and "internal error" not in err
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "SIGTERM" in summary["error"]


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

        _wait_for(gone, 10, f"worker {worker} to exit")
    finally:
        parent.kill()


def test_a_different_sweep_of_the_same_name_is_refused_unless_replaced(tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump({**small_run("same"), "log": {"every": 10, "out": str(tmp_path)}, "seeds": 1}))
    assert runner.invoke(app, ["sweep", str(config), "-q"]).exit_code == 0
    index = (tmp_path / "same" / "index.json").read_text()
    for args in (["--dry-run"], ["-q"]):  # the dry run refuses what the sweep refuses
        result = runner.invoke(app, ["sweep", str(config), *args, "--seeds", "1,2"])
        assert result.exit_code == 1 and "holds a different sweep named 'same' (1 of its runs are not in this one" \
            in result.output.replace("\n", " "), result.output
    assert (tmp_path / "same" / "index.json").read_text() == index  # nothing of the first was overwritten
    assert runner.invoke(app, ["sweep", str(config), "-q"]).exit_code == 0  # the same sweep again: fine
    result = runner.invoke(app, ["sweep", str(config), "-q", "--seeds", "1,2", "--replace"])
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "same" / "index.json").read_text())["runs"]) == 2


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


def test_the_dry_run_makes_the_memory_check(tmp_path, monkeypatch):
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump({**small_run("big"), "log": {"every": 10, "out": str(tmp_path)}, "seeds": 2}))
    monkeypatch.setattr("initlab.train.memory.available", lambda: (1000, "a test's tiny device"))
    result = runner.invoke(app, ["sweep", str(config), "--dry-run"])
    assert result.exit_code == 1 and "more than the" in result.output and "tiny device" in result.output, result.output
    assert not (tmp_path / "big").exists()


LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))
BOMB = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + LAUGHS


@pytest.mark.parametrize("text, message", [
    (BOMB + "seed: *l8\n", "aliases expand to more than 100,000 values"),
    (BOMB + "name: *l8\n", "aliases expand to more than 100,000 values"),
    ("seed: &a [*a]\n", "the alias *a is inside the value it names"),  # PyYAML would build a cycle
    ("seed: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested deeper than 64 levels"),
])
def test_alias_bombs_and_deep_nesting_are_refused_at_load(tmp_path, text, message):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    start = time.monotonic()
    result = runner.invoke(app, ["run", str(path)])
    assert time.monotonic() - start < 5
    assert result.exit_code == 2 and message in result.output, result.output
    assert "internal error" not in result.output and len(result.output) < 400


def test_a_sweep_with_an_aliased_seed_list_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB.replace("lol", "1") + "name: s\nseeds: *l8\n")
    result = runner.invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 2 and "aliases expand" in result.output


def test_aliases_within_budget_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("model: &m {depth: 3, width: 16}\nname: ok\n")
    assert C.load(path).model.depth == 3


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe\x00binary", "not UTF-8 text (byte 0xff at offset 0)"),
    (b"seed: 1\n" + b"#" * (C.MAX_CONFIG_BYTES + 1), "larger than 1 MiB"),
])
def test_binary_and_huge_config_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and message in result.output and "internal error" not in result.output


def test_dev_zero_is_refused_without_reading_it_all():
    result = runner.invoke(app, ["run", "/dev/zero"])
    assert result.exit_code == 2 and "larger than 1 MiB" in result.output


def test_an_error_echoing_a_huge_value_stays_short(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(f"seed: '{'7' * 500_000}'\n")
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "seed: '777" in result.output and "characters cut" in result.output
    assert len(result.output) < 1200


GZIP_BOMB = """
import sys, zlib
from pathlib import Path
from initlab.data import mnist
from initlab.errors import InitlabError
path = Path(sys.argv[1]) / "train-images-idx3-ubyte.gz"
z = zlib.compressobj(1, zlib.DEFLATED, 31)
with open(path, "wb") as f:  # 1 GiB of zeros, about 1 MB compressed
    for _ in range(1024):
        f.write(z.compress(bytes(1 << 20)))
    f.write(z.flush())
try:
    mnist.verify_file(path)
except InitlabError as e:
    print(e)
status = Path("/proc/self/status").read_text()  # VmHWM: this program's peak (ru_maxrss keeps the parent's across exec)
print(int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1]) // 1024)
"""


def test_a_gzip_bomb_is_refused_at_the_expected_size(tmp_path):
    out = subprocess.run([sys.executable, "-c", GZIP_BOMB, str(tmp_path)], capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert "wrong size: more than 47,040,016 bytes once decompressed" in out[0]
    assert int(out[1]) < 400  # MiB at peak: the expected size, not the 1 GiB it inflates to


@pytest.fixture
def small_yaml(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(small_run("s")))
    return path


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_file_where_the_output_folder_belongs_is_one_line(tmp_path, small_yaml, command):
    (tmp_path / "afile").write_text("")
    result = runner.invoke(app, [command, str(small_yaml), "--out", str(tmp_path / "afile" / "sub"), "-q"])
    assert result.exit_code == 1 and "internal error" not in result.output, result.output
    assert "Not a directory (a file is in the way where a folder belongs)" in result.output
    assert str(tmp_path / "afile") in result.output and len(result.output.strip().splitlines()) == 1


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


@pytest.mark.parametrize("args, message", [
    (["--activation", "tanh", "--sigma-w2", "0"], "σ_w² must be > 0"),
    (["--activation", "tanh", "--plot", "x.txt"], "--plot x.txt: a figure is written as .png, .pdf, .svg"),
])
def test_theory_bad_input_is_one_line(args, message):
    result = runner.invoke(app, ["theory", *args])
    assert result.exit_code == 1 and message in result.output and "internal error" not in result.output


def test_relu_chi1_is_finite_where_its_variance_explodes_and_depth_scales_are_caveated():
    from initlab.theory.mean_field import MeanField

    exploding = MeanField("relu", 3.0, 0.1)
    assert math.isinf(exploding.q_star) and exploding.chi1 == pytest.approx(1.5) and exploding.phase == "unbounded"
    dying = MeanField("relu", 1.0, 0.0)  # Glorot on a square ReLU net: trains at depth 10, "6ξ_c = 8.7"
    assert dying.q_star == 0 and "not a trainability bound" in dying.depth_scale_caveat
    assert MeanField("tanh", 1.5, 0.05).depth_scale_caveat is None


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

    cfg = C.from_dict({**small_run("m"), "model": {"depth": 2, "width": 16, "dtype": "float64"},
                       "train": {"optimizer": "adam", "batch_size": 32, "steps": 5}})
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
    monkeypatch.setattr(memory, "available", lambda device=None: (6 * 2 ** 30, "a 6 GiB cgroup"))
    start = time.monotonic()
    result = runner.invoke(app, ["run", str(config), "-q"])
    assert result.exit_code == 1 and "more than the 6.00 GiB free in a 6 GiB cgroup" in result.output, result.output
    assert "(parameters 15.57 GiB" in result.output and "--no-memory-check" in result.output
    assert time.monotonic() - start < 10 and not run_dir_for(C.from_dict(big)).exists()
    monkeypatch.setattr(memory, "available", lambda device=None: (2 ** 10, "a tiny device"))
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({**small_run("fits"), "log": {"every": 10, "out": str(tmp_path)}}))
    assert runner.invoke(app, ["run", str(small), "-q"]).exit_code == 1
    monkeypatch.setenv(memory.CHECK_ENV, "1")  # restored after the test; the flag sets it to 0
    assert runner.invoke(app, ["run", str(small), "-q", "--no-memory-check"]).exit_code == 0


def test_metrics_wall_time_is_when_each_step_ran(tmp_path):
    import pandas as pd

    data = {**small_run("wall"), "train": {"steps": 40, "batch_size": 32}, "log": {"every": 5, "out": str(tmp_path)}}
    config = tmp_path / "wall.yaml"
    config.write_text(yaml.safe_dump(data))
    assert runner.invoke(app, ["run", str(config), "-q"]).exit_code == 0
    m = pd.read_csv(run_dir_for(C.from_dict(data)) / "metrics.csv")
    logged = m[m.step > 0].drop_duplicates("step").wall_time.to_numpy()
    assert (logged[1:] > logged[:-1]).all()  # logs inside one chunk no longer share the chunk's end time


def test_progress_shows_losses_readably():
    from initlab.report.display import _fmt_loss

    assert _fmt_loss(2.302585) == "2.3026" and _fmt_loss(3.4e35) == "3.4e+35" and _fmt_loss(float("inf")) == "inf"
    assert _fmt_loss(1.5e-5) == "1.5e-05" and _fmt_loss(None) == "–"


def test_the_progress_bar_hears_the_last_evaluation(tmp_path):
    from initlab.data.datasets import load_dataset
    from initlab.runfolder.storage import RunRecorder
    from initlab.train.loop import train

    heard = []
    cfg = C.from_dict({**small_run("bar"), "train": {"steps": 20, "batch_size": 32}})
    result = train(cfg, load_dataset(cfg.data, None, progress=False), RunRecorder(lambda s, t, i: heard.append((s, i))))
    last_acc = [i["test_acc"] for s, i in heard if "test_acc" in i][-1]
    assert last_acc == result.final["test_acc"] and heard[-1][0] == 20


def test_sweep_progress_moves_within_a_group(tmp_path):
    from initlab.runfolder.sweeps import SweepSpec, run_sweep

    events = []
    base = {**small_run("steps"), "log": {"every": 10, "out": str(tmp_path)}}
    run_sweep(SweepSpec(base, {}, [], [0, 1]), on_event=lambda kind, info: events.append((kind, info)))
    steps = [info["step"] for kind, info in events if kind == "step"]
    assert steps and steps[-1] == 20 and steps == sorted(steps)
    kinds = [k for k, _ in events]
    assert kinds.index("group") < kinds.index("step") < kinds.index("done")  # inside the group, before it ends


def test_a_sigterm_whose_raise_was_swallowed_still_ends_training():
    from initlab.errors import Terminated, note_interrupt
    from initlab.runfolder.storage import RunRecorder

    note_interrupt(signal.SIGTERM)  # the handler's raise landed in a gc callback and was ignored
    with pytest.raises(Terminated):
        RunRecorder().progress(10, 20, {})  # the next look-in on the host ends the run
    RunRecorder().progress(11, 20, {})  # once


def test_a_sweep_group_that_cannot_fit_fails_with_the_estimate(tmp_path, monkeypatch):
    import initlab.train.memory as memory
    from initlab.runfolder.sweeps import SweepSpec, run_sweep

    monkeypatch.setattr(memory, "available", lambda device=None: (2 ** 10, "a tiny device"))
    report = run_sweep(SweepSpec({**small_run("tiny"), "log": {"every": 10, "out": str(tmp_path)}}, {}, [], [0, 1]))
    assert report.failed == 2
    (summary,) = {json.loads(p.read_text())["error"] for p in (tmp_path / "tiny").glob("*/summary.json")}
    assert summary.startswith("InitlabError: this would need about") and "free in a tiny device" in summary


def test_a_dry_run_never_downloads_the_data_and_says_the_memory_check_waits(tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump({"name": "m", "data": {"dataset": "mnist", "train_size": 1000},
                                      "log": {"out": str(tmp_path)}, "seeds": 2}))
    empty = tmp_path / "no-data"
    empty.mkdir()
    result = runner.invoke(app, ["sweep", str(config), "--dry-run", "--data-dir", str(empty)])
    assert result.exit_code == 0, result.output
    assert "memory not checked: the data is not here yet" in " ".join(result.output.split())
    assert list(empty.iterdir()) == []  # nothing fetched
