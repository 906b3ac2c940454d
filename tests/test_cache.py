"""The persistent compilation cache: where it lives, the opt-out, and that compiled programs land on
disk and are reused. Each check runs in a subprocess with the cache settings removed from its
environment (the test session's own cache, ``conftest.py``, is on), so what it sees is what a
fresh ``initlab`` process does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from initlab.train import cache

from conftest import ROOT, small_run

# A tiny jitted function, compiled in a fresh interpreter; ``first`` is what it imports first.
COMPILE = """
{first}
from initlab.train.cache import enable_compilation_cache
import jax, jax.numpy as jnp
print(enable_compilation_cache())
print(jax.jit(lambda x: jnp.tanh(x @ x).sum())(jnp.ones((8, 8))))
"""


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test process's environment with the cache settings removed and XDG_CACHE_HOME in tmp_path."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JAX_") and k not in (cache.OPT_OUT_ENV, "XDG_CACHE_HOME")
    }
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def cache_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "xdg" / "initlab" / "jax"
    return sorted(folder.glob("*-cache")) if folder.is_dir() else []


def test_cache_dir_is_under_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "initlab" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "initlab" / "jax"


def test_opt_out_leaves_jax_alone(monkeypatch, tmp_path):
    for value in ("1", "true", "yes"):
        monkeypatch.setenv(cache.OPT_OUT_ENV, value)
        before = dict(os.environ)
        assert cache.enable_compilation_cache(tmp_path) is None
        assert dict(os.environ) == before
    for value in ("", "0", "false"):
        monkeypatch.setenv(cache.OPT_OUT_ENV, value)
        assert not cache.opted_out()


def test_opted_out_process_writes_no_cache(tmp_path):
    out = python(COMPILE.format(first=""), clean_env(tmp_path, **{cache.OPT_OUT_ENV: "1"}))
    assert out.splitlines()[0] == "None"
    assert cache_files(tmp_path) == []


def test_compiled_functions_land_in_the_cache_before_and_after_importing_jax(tmp_path):
    """Both ways of switching it on work: environment variables (JAX not imported yet) and
    jax.config (JAX already imported)."""
    for i, first in enumerate(["", "import jax"]):
        sub = tmp_path / str(i)
        out = python(COMPILE.format(first=first), clean_env(sub))
        assert Path(out.splitlines()[0]) == sub / "xdg" / "initlab" / "jax"
        assert any(f.name.startswith("jit__lambda-") for f in cache_files(sub)), cache_files(sub)


def test_a_location_chosen_by_the_user_wins(tmp_path):
    mine = tmp_path / "mine"
    out = python(COMPILE.format(first=""), clean_env(tmp_path, JAX_COMPILATION_CACHE_DIR=str(mine)))
    assert Path(out.splitlines()[0]) == mine
    assert list(mine.glob("jit__lambda-*")) and cache_files(tmp_path) == []


@pytest.mark.slow
def test_the_cli_caches_a_runs_programs_and_a_second_process_reuses_them(tmp_path):
    """`initlab run` twice on one config in fresh processes: the first compiles and writes the cache
    (misses), the second reads every program back (hits only), AOT-compiled training chunk included."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(small_run("cached")))
    env = clean_env(tmp_path)
    probe = (
        "import atexit, collections, json, sys; from jax._src import monitoring; seen = collections.Counter(); "
        "monitoring.register_event_listener(lambda e, **kw: seen.update([e.rsplit('/', 1)[-1]])); "
        "atexit.register(lambda: print('events:', json.dumps(seen))); "
        "from initlab.cli import app; sys.argv = ['initlab'] + sys.argv[1:]; app()"
    )
    events, summaries = [], []
    for i in range(2):
        out_dir = tmp_path / f"runs{i}"
        done = subprocess.run(
            [sys.executable, "-c", probe, "run", str(config), "--out", str(out_dir), "-q"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr + done.stdout
        events.append(json.loads(done.stdout.rsplit("events:", 1)[1]))
        (summary,) = out_dir.glob("*/summary.json")
        summaries.append(json.loads(summary.read_text()))
    first, second = events
    assert first.get("cache_misses", 0) > 0 and cache_files(tmp_path), first
    assert second.get("cache_misses", 0) == 0 and second.get("cache_hits", 0) >= first["cache_misses"], second
    assert summaries[0]["final"] == summaries[1]["final"]
