"""The `initlab` command end to end, through typer's CliRunner and the real commands."""

import functools
import http.server
import json
import threading
from pathlib import Path

import pandas as pd
import pytest
import typer
import yaml
from typer.testing import CliRunner

from initlab import config as cfgmod
from initlab.cli import app

from conftest import ROOT, run_folders, small_run

runner = CliRunner()
TINY = small_run("cli")


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_run_writes_a_run_folder(tiny_yaml, tmp_path):
    out = tmp_path / "runs"
    result = invoke("run", tiny_yaml, "--out", out)
    assert result.exit_code == 0, result.output
    (folder,) = run_folders(out)
    assert folder.name.startswith("cli-")
    assert "run folder:" in result.output and "per-layer variance" in result.output
    assert len(pd.read_csv(folder / "layers.csv")) == 3 * 3
    assert json.loads((folder / "summary.json").read_text())["status"] == "completed"
    again = invoke("run", tiny_yaml, "--out", out)
    assert again.exit_code == 1 and "already exists" in again.output and "--force" in again.output
    assert invoke("run", tiny_yaml, "--out", out, "--force", "-q").exit_code == 0


@pytest.mark.slow
def test_run_with_statistics_on_the_training_batch(tiny_yaml, tmp_path):
    result = invoke("run", tiny_yaml, "--out", tmp_path / "batch", "-q", "--set", "log.stats_on=train_batch")
    assert result.exit_code == 0, result.output
    (folder,) = run_folders(tmp_path / "batch")
    layers = pd.read_csv(folder / "layers.csv")
    probe_run = invoke("run", tiny_yaml, "--out", tmp_path / "probe", "-q")
    assert probe_run.exit_code == 0, probe_run.output
    (probe_folder,) = run_folders(tmp_path / "probe")
    probe = pd.read_csv(probe_folder / "layers.csv")
    assert list(layers["step"]) == list(probe["step"]) and len(layers) == 3 * 3
    assert layers[["pre_var", "act_var", "grad_var"]].notna().all().all()
    # the weights are the same at step 0; the statistics of the activations come from another batch
    assert list(layers["w_norm"][:3]) == list(probe["w_norm"][:3])
    assert list(layers["grad_var"][:3]) != list(probe["grad_var"][:3])
    assert yaml.safe_load((folder / "config.yaml").read_text())["log"]["stats_on"] == "train_batch"


def test_set_overrides_are_typed_and_saved(tiny_yaml, tmp_path):
    result = invoke(
        "run",
        tiny_yaml,
        "--out",
        tmp_path,
        "-q",
        "--set",
        "model.depth=4",
        "--set",
        "model.init=orthogonal",
        "--set",
        "model.init_args.gain=1.5",
        "--set",
        "name=123",
    )
    assert result.exit_code == 0, result.output
    (folder,) = tmp_path.glob("123-*")
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["model"]["depth"] == 4 and saved["model"]["init_args"] == {"gain": 1.5} and saved["name"] == "123"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.activation=rellu", "model.activation: 'rellu' is not one of"),
        ("model.depth=0", "model.depth: 0 is out of range"),
        ("model.width=wide", "model.width: 'wide' is not an integer"),
        ("model.dpth=3", "model.dpth: unknown key"),
        ("train.optimizer=adamax", "train.optimizer: 'adamax' is not one of sgd, momentum"),
        ("model.init_args.gian=2", "model.init_args.gian: not an argument"),
        ("nokey", "expected KEY=VALUE"),
        ("log.histograms=1", "log.histograms: 1 bins are too few"),  # one bin: every activation "saturated"
    ],
)
def test_bad_config_is_one_line_and_exit_code_2(tiny_yaml, tmp_path, override, expected):
    out = tmp_path / "runs"
    result = invoke("run", tiny_yaml, "--out", out, "--set", override)
    assert result.exit_code == 2
    assert expected in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing ran, nothing written


def test_missing_config_file(tmp_path):
    result = invoke("run", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "no such config file" in result.output


@pytest.mark.slow
def test_quickstart_trains_on_real_mnist(mnist_dir, tmp_path):
    result = invoke(
        "run",
        ROOT / "configs" / "quickstart.yaml",
        "--data-dir",
        mnist_dir,
        "--out",
        tmp_path,
        "-q",
        "--set",
        "train.steps=60",
        "--set",
        "data.train_size=4000",
        "--set",
        "data.test_size=1000",
    )
    assert result.exit_code == 0, result.output
    (folder,) = run_folders(tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final"]["test_acc"] > 0.8


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = cfgmod.load(path)
    assert cfg.data.dataset == "mnist"


def test_data_check(mnist_dir, tmp_path):
    ok = invoke("data", "check", mnist_dir)
    assert ok.exit_code == 0 and ok.output.count("ok") >= 4
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01garbage")
    bad = invoke("data", "check", tmp_path)
    assert bad.exit_code == 1 and "corrupt" in bad.output and "missing" in bad.output


def test_data_fetch_from_a_local_mirror(mnist_dir, tmp_path, monkeypatch):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mnist_dir))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("INITLAB_MNIST_MIRRORS", f"http://127.0.0.1:{server.server_address[1]}/")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.delenv("INITLAB_DATA_DIR", raising=False)
        result = invoke("data", "fetch")
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    target = tmp_path / "cache" / "initlab" / "mnist"
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in Path(mnist_dir).glob("*.gz"))
    assert invoke("data", "check", target).exit_code == 0


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a group (typer ships its own click core)
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def test_every_command_and_option_has_help():
    root = typer.main.get_command(app)
    found = list(_commands(root))
    assert {" ".join(p) for p, _ in found} >= {"run", "data fetch", "data check"}
    for path, cmd in found:
        assert cmd.help, path
        for param in cmd.params:
            assert getattr(param, "help", None), (path, param.name)
        assert invoke(*path, "--help").exit_code == 0


def test_run_with_lsuv_names_its_trace_file(tmp_path):
    cfg = tmp_path / "lsuv.yaml"
    cfg.write_text(yaml.safe_dump({**small_run("lsuv"), "model": {"depth": 2, "width": 16, "init": "lsuv"}}))
    result = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "initialization (lsuv)" in result.output and "trace in lsuv_trace.csv" in result.output
    (folder,) = run_folders(tmp_path / "runs")
    assert (folder / "lsuv_trace.csv").is_file()


def test_config_keys_lists_every_key_default_and_allowed_values():
    result = runner.invoke(app, ["config", "keys"])
    assert result.exit_code == 0, result.output
    for key, _, _ in cfgmod.describe_fields():
        assert f"│ {key} " in result.output, key
    from initlab.nn.initializers import INITIALIZERS

    assert all(name in result.output for name in INITIALIZERS)  # model.init's registry
    assert "model.init: mean_field" in result.output and "sigma_w (1)" in result.output  # its arguments
    assert runner.invoke(app, ["config", "keys", "--section", "nope"]).exit_code == 1


def test_data_check_of_a_missing_folder_says_so_in_one_line(tmp_path):
    result = invoke("data", "check", tmp_path / "nope")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path / 'nope'}: no such folder; `initlab data fetch --data-dir {tmp_path / 'nope'}` downloads "
        "MNIST into it"
    ]


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_data_fetch_offline_is_one_line(tmp_path, monkeypatch):
    # three mirrors that refuse the connection at once: offline, without touching the network
    monkeypatch.setenv("INITLAB_MNIST_MIRRORS", ",".join(f"http://127.0.0.1:{closed_port()}/m{i}/" for i in range(3)))
    result = invoke("data", "fetch", "--data-dir", tmp_path)
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: downloading train-images-idx3-ubyte.gz failed from every mirror")
    assert line.count("Connection refused") == 1 and "offline?" in line and str(tmp_path) in line


def test_an_interrupted_run_says_what_to_run_next(tiny_yaml, tmp_path, monkeypatch):
    from initlab.runfolder import experiment
    from initlab.runfolder import storage

    def interrupted(checkpoint):
        def run(cfg, **kwargs):  # as a Ctrl-C in training leaves it: the folder, and a checkpoint unless too early
            path = storage.run_dir_for(cfg)
            path.mkdir(parents=True)
            if checkpoint:
                (path / storage.CHECKPOINT_FILE).write_bytes(b"")
            raise KeyboardInterrupt

        return run

    out = tmp_path / "runs"
    for checkpoint in (True, False):
        monkeypatch.setattr(experiment, "run", interrupted(checkpoint))
        result = invoke("run", tiny_yaml, "--set", "train.lr=0.01", "--out", out / str(checkpoint), "-q")
        assert result.exit_code == 130
        (folder,) = run_folders(out / str(checkpoint))
        said = " ".join(result.output.split())  # the line as a wide terminal shows it
        assert said.startswith(
            f"interrupted: partial results were kept; `initlab report {folder}` shows what it logged"
        )
        resume = f"`initlab run {tiny_yaml} --set train.lr=0.01 --out {out / str(checkpoint)} --resume` continues it"
        assert (resume in said) == checkpoint


def test_an_interrupted_sweep_says_what_to_run_next(tiny_yaml, tmp_path, monkeypatch):
    from initlab.runfolder import sweeps

    def interrupted(spec, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweeps, "run_sweep", interrupted)
    result = invoke("sweep", tiny_yaml, "--grid", "train.lr=0.01,0.1", "--out", tmp_path / "runs")
    assert result.exit_code == 130
    said = " ".join(result.output.split())
    assert f"`initlab report {tmp_path / 'runs' / 'cli'}` shows the runs that finished" in said
    assert "the same `initlab sweep` command continues" in said


def test_the_sweep_ends_with_what_to_run_next(tiny_yaml, tmp_path):
    result = invoke("sweep", tiny_yaml, "--grid", "model.depth=1,2", "--out", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    sweep = tmp_path / "runs" / "cli"
    assert result.output.strip().splitlines()[-1] == (
        f"next: `initlab report {sweep}` for the table of results, `initlab plot {sweep}` for figures"
    )


def test_the_progress_bar_says_compiling_until_training_reports(monkeypatch):
    import io

    from rich.console import Console

    from initlab.report import display

    screen = io.StringIO()
    monkeypatch.setattr(display, "err_console", Console(file=screen, force_terminal=True, color_system=None, width=160))
    with display.training_progress("tiny") as update:
        assert "tiny (compiling)" in screen.getvalue()  # the first frame, before any step
        seen = len(screen.getvalue())
        update(10, 20, {"loss": 0.5, "test_acc": 0.25, "steps_per_s": 100.0})
    assert "compiling" not in screen.getvalue()[seen:]
    assert "10/20" in screen.getvalue()[seen:]
