"""The benchmark scripts stay in step with the library they measure (they run outside the suite)."""

from __future__ import annotations

import importlib.util
import inspect
import sys

from initlab.train.book import Sink

from conftest import ROOT


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (its sibling imports resolved as the script's are)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_the_benchmark_sink_has_every_method_training_calls():
    """run.py's ClockSink is handed to ``train`` as its Sink: a method the protocol gains must be
    there too (a missing ``parameters`` once broke every initlab arm of the benchmark)."""
    wanted = {name for name, _ in inspect.getmembers(Sink, inspect.isfunction) if not name.startswith("_")}
    clock = load_benchmark("run").ClockSink
    assert wanted <= {name for name in dir(clock) if callable(getattr(clock, name))}, wanted
