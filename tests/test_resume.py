"""Resumable runs (issue 19): checkpoints every ``log.checkpoint_every`` steps and at Ctrl-C or
SIGTERM, ``initlab run --resume`` from them, and a resumed run's files equal an uninterrupted one's."""

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from initlab import config as C
from initlab.cli import app
from initlab.runfolder.storage import CHECKPOINT_FILE, run_dir_for
from initlab.train.schedule import Schedule

from conftest import SMALL_DATA

runner = CliRunner()

STEPS = 96  # 3 epochs of 32 steps (256 examples, batches of 8): evaluations inside and at the end


def config(out: Path, name: str = "res", **log) -> dict:
    return {
        "name": name,
        "data": SMALL_DATA,
        "model": {"depth": 3, "width": 16},
        "train": {"steps": STEPS, "batch_size": 8, "lr": 0.01},
        "log": {"every": 10, "out": str(out), "checkpoint_every": 20, "histograms": 16, "jacobian": 4, **log},
    }


def write(tmp_path: Path, data: dict, name: str = "c.yaml") -> tuple[Path, Path]:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path, run_dir_for(C.from_dict(data))


def rows(path: Path, drop: tuple[str, ...] = ()) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


TIMED = ("wall_time", "seconds", "time_s")  # clock readings, the only columns allowed to differ


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same training: every CSV equal (clock columns aside), every saved
    parameter array bit-equal, the same test accuracy, and no checkpoint left behind."""
    csvs = sorted(p.name for p in a.glob("*.csv"))
    assert csvs == sorted(p.name for p in b.glob("*.csv")) and {"metrics.csv", "layers.csv"} <= set(csvs)
    for name in csvs:
        assert rows(a / name, TIMED) == rows(b / name, TIMED), name
    saved = sorted(p.name for p in (a / "params").iterdir())
    assert saved == sorted(p.name for p in (b / "params").iterdir()) and len(saved) == 2  # init, end
    for name in saved:
        with np.load(a / "params" / name) as x, np.load(b / "params" / name) as y:
            assert sorted(x.files) == sorted(y.files)
            for key in x.files:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name}:{key}")
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    assert sa["status"] == "completed" and sa["final"]["test_acc"] > 0.5
    assert scrub(sa) == scrub(sb)
    assert not (a / CHECKPOINT_FILE).exists() and not (b / CHECKPOINT_FILE).exists()


def scrub(summary):
    """A summary without what differs between two folders of one training: clock readings, the folder."""
    if isinstance(summary, dict):
        return {
            k: scrub(v)
            for k, v in summary.items()
            if not (
                k.endswith("time_s") or k in ("run_dir", "started_at", "steps_per_second", "out", "checkpoint_every")
            )
        }
    return summary


@pytest.fixture
def reference(tmp_path):
    """The uninterrupted run, in its own folder."""
    path, folder = write(tmp_path, config(tmp_path / "reference"), "ref.yaml")
    result = runner.invoke(app, ["run", str(path), "-q"])
    assert result.exit_code == 0, result.output
    return folder


# A CLI run in a subprocess that, once its `after`-th checkpoint is on disk, hangs (as a long run
# would) or signals itself (as Ctrl-C or kill would) at a known point of the training loop.
HANG = """
import os, sys, time
from initlab.runfolder import storage
from initlab.train import loop as train
after, how = int(sys.argv[1]), sys.argv[2]
save, run, saved = storage.FileCheckpointer.save, train.ChunkRunner.run, []
def save_then(self, payload):
    save(self, payload)
    saved.append(payload["step"])
    if len(saved) == after and how == "hang":
        print("saved", payload["step"], flush=True)
        time.sleep(600)
def run_then(self, *a, **k):
    if len(saved) == after and how != "hang":  # the signal lands while the device trains the next chunk
        os.kill(os.getpid(), getattr(__import__("signal"), how))
    return run(self, *a, **k)
storage.FileCheckpointer.save, train.ChunkRunner.run = save_then, run_then
from initlab.cli import app
app(sys.argv[3:], prog_name="initlab")
"""


def _ctrl_c_as_at_a_terminal() -> None:
    # A shell starts background jobs with SIGINT ignored, and then Python (and initlab's gate, which
    # respects an ignored signal, as nohup asks) never sees Ctrl-C: the child gets the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], after: int, how: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HANG, str(after), how, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_at_a_terminal,
    )


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt in this process, even where pytest was started with it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_files(tmp_path, reference):
    path, folder = write(tmp_path, config(tmp_path / "out"))
    proc = start(["run", str(path), "-q"], 2, "hang")
    try:
        assert proc.stdout.readline().split() == ["saved", "40"]  # the checkpoint at step 40 is on disk
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert json.loads((folder / "summary.json").read_text())["status"] == "running"  # as kill -9 left it
    assert (folder / CHECKPOINT_FILE).is_file()
    result = runner.invoke(app, ["run", str(path), "-q", "--resume"])
    assert result.exit_code == 0, result.output
    assert_same_run(folder, reference)


@pytest.mark.slow
@pytest.mark.parametrize("how,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_or_sigterm_leaves_a_complete_interrupted_run_that_resumes(tmp_path, reference, how, code):
    path, folder = write(tmp_path, config(tmp_path / "out", checkpoint_every=0))  # no periodic checkpoints
    proc = start(["run", str(path), "-q"], 0, how)  # the signal comes in the first chunk
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "internal error" not in err
    assert (folder / CHECKPOINT_FILE).is_file() and (folder / "metrics.csv").is_file()
    result = runner.invoke(app, ["run", str(path), "-q", "--resume"])
    assert result.exit_code == 0, result.output
    assert_same_run(folder, reference)


def test_an_interruption_while_the_host_books_a_chunk_waits_for_a_consistent_stop(tmp_path, reference, ctrl_c_raises):
    """Ctrl-C in the host's part of a chunk (the progress callback here) is held back until the
    chunk's rows are written, then checkpointed there: the resumed files still match."""
    from initlab import api

    cfg = api.load_config(write(tmp_path, config(tmp_path / "out", checkpoint_every=0))[0])
    folder = run_dir_for(cfg)
    seen = []

    def progress(step, total, info):
        seen.append(step)
        if len(seen) == 3:
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.01)  # the handler has run: had it raised, it would have raised here

    from initlab.runfolder import experiment

    with pytest.raises(KeyboardInterrupt):
        experiment.run(cfg, on_progress=progress)
    assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"
    assert (folder / CHECKPOINT_FILE).is_file()
    api.run(cfg, resume=True)
    assert_same_run(folder, reference)


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    path, folder = write(tmp_path, config(tmp_path / "out"))
    result = runner.invoke(app, ["run", str(path), "-q", "--resume"])
    assert result.exit_code == 1 and "no run folder to resume" in result.output
    result = runner.invoke(app, ["run", str(path), "-q", "--resume", "--force"])
    assert result.exit_code == 1 and "give one of them" in result.output
    assert runner.invoke(app, ["run", str(path), "-q"]).exit_code == 0
    result = runner.invoke(app, ["run", str(path), "-q", "--resume"])
    assert result.exit_code == 1 and "has finished (completed); nothing to resume" in result.output
    summary = folder / "summary.json"
    summary.write_text(summary.read_text().replace('"completed"', '"interrupted"'))
    result = runner.invoke(app, ["run", str(path), "-q", "--resume"])
    assert result.exit_code == 1 and "has no checkpoint to resume from" in result.output
    (folder / CHECKPOINT_FILE).write_bytes(b"not a pickle")
    result = runner.invoke(app, ["run", str(path), "-q", "--resume"])
    assert result.exit_code == 1 and "not a checkpoint of this initlab version" in result.output


def test_the_checkpoint_interval_is_not_part_of_the_run(tmp_path):
    a = C.from_dict(config(tmp_path, checkpoint_every=20))
    b = C.from_dict(config(tmp_path, checkpoint_every=0))
    assert C.config_digest(a) == C.config_digest(b) and run_dir_for(a) == run_dir_for(b)
    with pytest.raises(C.ConfigError, match="log.checkpoint_every"):
        C.from_dict(config(tmp_path, checkpoint_every=-1))


def test_checkpoint_multiples_are_chunk_stops_and_chunks_start_anywhere_on_a_stop():
    s = Schedule(total_steps=100, steps_per_epoch=32, log_every=10, checkpoint_every=25)
    stops = [p.stop for p in s.chunks()]
    assert {25, 50, 75} <= set(stops) and stops[-1] == 100
    assert [s.is_checkpoint(t) for t in (0, 25, 30, 50, 100)] == [False, True, False, True, False]
    for at in stops[:-1]:  # a run resumed at any stop trains the chunks the uninterrupted one does
        assert [(p.start, p.stop) for p in s.chunks(at)] == [(p.start, p.stop) for p in s.chunks() if p.start >= at]


def sweep_config(out: Path) -> dict:
    return {**config(out, name="sw"), "seeds": [0, 1]}  # one group of two runs, trained together


@pytest.mark.slow
@pytest.mark.parametrize("how,after,step", [("hang", 2, 40), ("SIGINT", 1, 20)])
def test_a_killed_or_interrupted_sweep_resumes_its_group_in_flight(tmp_path, monkeypatch, how, after, step):
    """kill -9 after the checkpoint at step 40; Ctrl-C while the device trains the chunk after step 20."""
    import initlab.train.checkpoint as checkpoints

    ref_path, path = tmp_path / "ref.yaml", tmp_path / "sweep.yaml"
    ref_path.write_text(yaml.safe_dump(sweep_config(tmp_path / "reference")))
    path.write_text(yaml.safe_dump(sweep_config(tmp_path / "out")))
    assert runner.invoke(app, ["sweep", str(ref_path), "-q"]).exit_code == 0
    proc = start(["sweep", str(path), "-q"], after, how)
    try:
        if how == "hang":
            assert proc.stdout.readline().split() == ["saved", str(step)]
            proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == (-9 if how == "hang" else 130)
    finally:
        proc.kill()
    assert not any((tmp_path / "out" / "sw").glob("sw-*"))  # no run folder: the group was in flight
    (checkpoint,) = (tmp_path / "out" / "sw" / ".checkpoints").glob("*.pkl")
    resumed_at = []
    resume = checkpoints.restore
    monkeypatch.setattr(checkpoints, "restore", lambda *a: resumed_at.append(resume(*a)[2]) or resume(*a))
    result = runner.invoke(app, ["sweep", str(path), "-q"])
    assert result.exit_code == 0, result.output
    assert resumed_at[:1] == [step]  # from the checkpoint, not from step 0
    assert not checkpoint.exists()  # the group's folders are written: its checkpoint is gone
    folders = sorted(p.name for p in (tmp_path / "reference" / "sw").iterdir() if p.is_dir() and p.name[0] != ".")
    assert len(folders) == 2 and folders == sorted(
        p.name for p in (tmp_path / "out" / "sw").iterdir() if p.is_dir() and p.name[0] != "."
    )
    for name in folders:
        assert_same_run(tmp_path / "out" / "sw" / name, tmp_path / "reference" / "sw" / name)


# -- issue 34: an interrupted run is never restarted silently; Ctrl-C at any moment; checkpoints
# verified; one flag for requeue scripts ------------------------------------------------------


def interrupted_with_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A run Ctrl-C'd in its first chunk: an `interrupted` folder holding checkpoint.pkl."""
    path, folder = write(tmp_path, config(tmp_path / "out", checkpoint_every=0))
    proc = start(["run", str(path), "-q"], 0, "SIGINT")
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"
    assert (folder / CHECKPOINT_FILE).is_file()
    return path, folder


@pytest.mark.slow
def test_an_interrupted_run_with_a_checkpoint_is_continued_or_refused_never_restarted(tmp_path, reference):
    path, folder = interrupted_with_checkpoint(tmp_path)
    before = (folder / CHECKPOINT_FILE).read_bytes()
    result = runner.invoke(app, ["run", str(path), "-q"])
    assert result.exit_code == 1
    assert "was interrupted at step" in result.output and "--resume" in result.output and "--force" in result.output
    assert (folder / CHECKPOINT_FILE).read_bytes() == before  # nothing trained, nothing deleted
    assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"
    result = runner.invoke(app, ["run", str(path), "-q", "--resume"])
    assert result.exit_code == 0, result.output
    assert_same_run(folder, reference)


@pytest.mark.slow
def test_force_starts_an_interrupted_run_with_a_checkpoint_again(tmp_path):
    path, folder = interrupted_with_checkpoint(tmp_path)
    result = runner.invoke(app, ["run", str(path), "-q", "--force"])
    assert result.exit_code == 0, result.output
    assert json.loads((folder / "summary.json").read_text())["status"] == "completed"
    assert not (folder / CHECKPOINT_FILE).exists()


@pytest.mark.slow
def test_auto_resume_starts_continues_and_is_done_when_finished(tmp_path, reference, monkeypatch):
    """--auto-resume: what a requeue script repeats. Before the first launch it starts; after an
    interruption it continues from the checkpoint; after completion it exits 0 training nothing."""
    import initlab.train.checkpoint as checkpoints

    path, folder = write(tmp_path, config(tmp_path / "fresh"))
    result = runner.invoke(app, ["run", str(path), "-q", "--auto-resume"])
    assert result.exit_code == 0, result.output
    assert_same_run(folder, reference)

    path, folder = interrupted_with_checkpoint(tmp_path)
    resumed_at = []
    resume = checkpoints.restore
    monkeypatch.setattr(checkpoints, "restore", lambda *a: resumed_at.append(resume(*a)[2]) or resume(*a))
    result = runner.invoke(app, ["run", str(path), "-q", "--auto-resume"])
    assert result.exit_code == 0, result.output
    assert len(resumed_at) == 1  # continued from the checkpoint (of step 0: Ctrl-C came in the first chunk)
    assert_same_run(folder, reference)

    stamp = (folder / "metrics.csv").stat().st_mtime_ns
    result = runner.invoke(app, ["run", str(path), "-q", "--auto-resume"])
    assert result.exit_code == 0, result.output
    assert "has already finished (completed): nothing to train" in result.output
    assert (folder / "metrics.csv").stat().st_mtime_ns == stamp
    result = runner.invoke(app, ["run", str(path), "-q", "--auto-resume", "--force"])
    assert result.exit_code == 1 and "give one of them" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
def test_a_corrupted_checkpoint_is_refused_naming_the_file_and_nothing_is_trained(tmp_path, damage):
    path, folder = interrupted_with_checkpoint(tmp_path)
    ckpt = folder / CHECKPOINT_FILE
    data = bytearray(ckpt.read_bytes())
    if damage == "flip":  # 8 bytes overwritten in the middle, as the audit did
        data[len(data) // 2 : len(data) // 2 + 8] = bytes(8 - i for i in range(8))
    elif damage == "truncate":
        data = data[: len(data) - 100]
    else:
        data[:6] = b"xxxxxx"
    ckpt.write_bytes(bytes(data))
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    result = runner.invoke(app, ["run", str(path), "-q", "--resume"])
    assert result.exit_code == 1
    line = " ".join(result.output.split())
    assert str(ckpt) in "".join(result.output.split()) or CHECKPOINT_FILE in line
    assert ("corrupted" if damage != "header" else "not a checkpoint") in line and "nothing was trained" in line
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == files  # the folder untouched


def test_a_checkpoint_round_trips_through_its_checksum(tmp_path):
    from initlab.runfolder.storage import FileCheckpointer

    c = FileCheckpointer(tmp_path / "c.pkl")
    payload = {"leaves": [np.arange(5.0)], "step": 7, "rows": [{"a": 1.5}]}
    c.save(payload)
    back = c.load()
    assert back["step"] == 7 and back["rows"] == payload["rows"]
    np.testing.assert_array_equal(back["leaves"][0], payload["leaves"][0])


def test_a_sweep_group_with_a_corrupted_checkpoint_fails_naming_the_file(tmp_path):
    from initlab.runfolder.experiment import execute_group
    from initlab.runfolder.storage import FileCheckpointer, group_checkpoint_path

    cfgs = [C.from_dict({**config(tmp_path / "out", name="sw"), "seed": s}) for s in (0, 1)]
    ckpt = group_checkpoint_path(cfgs)
    FileCheckpointer(ckpt).save({"format": 1})
    ckpt.write_bytes(ckpt.read_bytes()[:-3] + b"xyz")
    records = execute_group([C.to_dict(c) for c in cfgs])
    for rec in records:
        assert rec.summary["status"] == "failed" and rec.metrics == []
        assert str(ckpt) in rec.summary["error"] and "delete it" in rec.summary["error"]


LONG = """name: long
data: {dataset: gaussian, input_dim: 8, num_classes: 3, train_size: 256, test_size: 64, probe_size: 64}
model: {depth: 3, width: 16}
train: {steps: 20000, batch_size: 8}
log: {every: 10, out: OUT}
"""


@pytest.mark.slow
@pytest.mark.parametrize("after", [0.1, 0.4, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.6, 2.0, 2.5])
def test_ctrl_c_at_any_moment_stops_the_program(tmp_path, after):
    """Ctrl-C from 0.1 s after launch (imports, JAX's start-up, compilation, training) ends
    `initlab run` with exit 130, no traceback, no crash (a signal raised inside jaxlib's import
    once killed it with SIGSEGV or SIGABRT), and no run folder or an interrupted one."""
    out = tmp_path / "out"
    path = tmp_path / "long.yaml"
    path.write_text(LONG.replace("OUT", str(out)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "initlab", "run", str(path), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_at_a_terminal,
    )
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert "interrupted" in err
    folders = [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else []
    for folder in folders:
        assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"


def test_an_interrupt_whose_raise_was_swallowed_still_stops_the_run(tmp_path, monkeypatch, ctrl_c_raises):
    """The handler's raise landed in JAX's gc callback and was lost: the note it left stops the run
    at the next check (here while the network is drawn and compiled), with an interrupted folder."""
    from initlab import errors
    from initlab.runfolder import experiment
    from initlab.train import loop as train

    cfg = C.from_dict(config(tmp_path / "out", checkpoint_every=0))
    start_runs = train._start_runs  # draws the parameters and compiles step 0, before training's loop

    def start_then_swallow(*a, **k):
        errors.note_interrupt(signal.SIGINT)  # as errors.noting_handler does before its raise is lost
        return start_runs(*a, **k)

    monkeypatch.setattr(train, "_start_runs", start_then_swallow)
    with pytest.raises(KeyboardInterrupt):
        experiment.run(cfg)
    folder = run_dir_for(cfg)
    assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"
    errors.note_interrupt(signal.SIGINT)  # before the folder is claimed: nothing is left behind
    cfg2 = C.from_dict(config(tmp_path / "out2"))
    with pytest.raises(KeyboardInterrupt):
        experiment.run(cfg2)
    assert not run_dir_for(cfg2).exists()
    monkeypatch.setattr(train, "_start_runs", start_runs)
    assert experiment.run(cfg2)["status"] == "completed"  # the note was used once


@pytest.mark.slow
def test_the_api_auto_resume_returns_a_finished_run_and_names_python_arguments(tmp_path):
    from initlab import api

    path, folder = interrupted_with_checkpoint(tmp_path)
    with pytest.raises(api.InitlabError, match="resume=True continues it, force=True starts it again"):
        api.run(path)
    run = api.run(path, auto_resume=True)
    assert run.summary["status"] == "completed" and not (folder / CHECKPOINT_FILE).exists()
    again = api.run(path, auto_resume=True)
    assert again.path == run.path and again.summary == run.summary


def test_a_signal_inside_an_import_is_only_noted_and_raised_at_the_next_check(tmp_path, monkeypatch):
    """Raising inside a module's import can leave a native extension half-initialized (jaxlib's
    MLIR libraries died with SIGSEGV/SIGABRT when Ctrl-C landed there): the handler notes it, and
    the next check raises it."""
    from initlab import errors

    (tmp_path / "slow_to_import.py").write_text("import signal\nsignal.raise_signal(signal.SIGINT)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    previous = signal.signal(signal.SIGINT, errors.noting_handler)
    try:
        import slow_to_import  # noqa: F401 - the signal lands in its import, which completes

        assert slow_to_import.DONE
        with pytest.raises(KeyboardInterrupt):
            errors.check_interrupted()
        errors.check_interrupted()  # once
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # outside an import it raises at once
    finally:
        signal.signal(signal.SIGINT, previous)
        errors.clear_interrupts()
