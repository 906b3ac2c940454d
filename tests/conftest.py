"""Shared fixtures: the canonical MNIST folder and tiny configurations.

The test session turns on JAX's persistent compilation cache, as the CLI does for every run
(``initlab.train.cache``; ``$XDG_CACHE_HOME/initlab/jax``, inside the checkout in CI): many tests
train the same small programs, and a cached program is loaded rather than compiled again, by the
other tests of a session and by the next session. A cached program is the same executable, so no
result depends on it; ``INITLAB_NO_COMPILE_CACHE=1`` turns it off.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from initlab.config import RunConfig, from_dict
from initlab.train.cache import enable_compilation_cache

ROOT = Path(__file__).resolve().parents[1]
enable_compilation_cache()


def shared_mnist_dir() -> Path:
    """The canonical MNIST files: ``$INITLAB_DATA_DIR`` (the project's own data-directory setting,
    as the README says), else ``../shared/data/mnist`` beside the project."""
    env = os.environ.get("INITLAB_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "mnist"


@pytest.fixture
def mnist_dir() -> Path:
    d = shared_mnist_dir()
    if not d.is_dir():
        pytest.skip(f"canonical MNIST files not found at {d}")
    return d


# A small Gaussian-teacher dataset section shared by the CLI, sweep, report and plot tests.
SMALL_DATA = {
    "dataset": "gaussian",
    "input_dim": 8,
    "num_classes": 3,
    "train_size": 256,
    "test_size": 64,
    "probe_size": 64,
}


def small_run(name: str) -> dict:
    """A 2-layer, 20-step run on SMALL_DATA, as plain config data (CLI and sweep tests)."""
    return {
        "name": name,
        "data": SMALL_DATA,
        "model": {"depth": 2, "width": 16},
        "train": {"steps": 20, "batch_size": 32},
        "log": {"every": 10},
    }


def assert_lists_names(message: str, registry) -> None:
    """A registry error names every valid choice, aliases included."""
    for name in registry.all_names():
        assert name in message, name


def tiny(**sections) -> RunConfig:
    """A small, fast config on Gaussian data; ``sections`` update the defaults per section."""
    base = {
        "name": "tiny",
        "data": {
            "dataset": "gaussian",
            "input_dim": 16,
            "num_classes": 4,
            "train_size": 512,
            "test_size": 256,
            "probe_size": 128,
        },
        "model": {"depth": 3, "width": 32},
        "train": {"batch_size": 32, "steps": 40, "lr": 0.003},
        "log": {"every": 10},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return from_dict(base)


@pytest.fixture
def tiny_config():
    return tiny


def run_folders(out: Path) -> list[Path]:
    """The run folders under ``out`` (not ``.locks``, where runs in training hold their locks)."""
    return sorted(p for p in out.iterdir() if not p.name.startswith("."))


def wait_for(predicate, timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s until it holds; fail naming ``what`` after ``timeout_s`` seconds."""
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def small_yaml(tmp_path):
    """``small_run("s")`` written to ``tmp_path/s.yaml``."""
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(small_run("s")))
    return path


def run_with(tmp_path, **log):
    """``initlab run`` of ``small_run("h")`` with these ``log`` settings, out under ``tmp_path``: its run folder."""
    import yaml
    from typer.testing import CliRunner

    from initlab.cli import app

    cfg = small_run("h")
    cfg["log"].update(out=str(tmp_path), **log)
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    return next(tmp_path.glob("h-*"))


def layer_stats_fn(spec, loss_fn, layout=None, holds_batch=None):
    """``stats(params, state, prev_params, x, y) -> dict[statistic, (depth + 1,) or (depth + 1, k)]``
    (pure, unjitted): the statistics of a training step's forward/backward pass on ``x``, ``y``
    without the update, from ``initlab.train.step``'s own pieces. Batch norm uses the batch's own
    statistics (training mode) without touching the running averages; dropout is off. Default
    layout: ``Layout.default()``."""
    from initlab.stats.statistics import Layout
    from initlab.train.step import loss_and_grads, table_of, update_values

    layout = layout or Layout.default()

    def stats(params, state, prev_params, x, y):
        _, _, _, raw = loss_and_grads(spec, loss_fn, params, state, x, y, layout=layout, holds_batch=holds_batch)
        return layout.split(table_of(layout, params, raw, update_values(layout, params, prev_params)))

    return stats


def make_layer_stats(spec, loss_fn, layout=None):
    """``layer_stats_fn`` compiled for one network."""
    import jax

    return jax.jit(layer_stats_fn(spec, loss_fn, layout))
