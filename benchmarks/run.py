"""initlab's benchmark suite (issue #7): every figure measured on this machine in one invocation, so
the ratios between arms are comparable.

    python benchmarks/run.py [--quick] [--data-dir DIR] [--out benchmarks/results] [--only SECTION,...]

``--quick`` (few steps, few repeats) takes about 2–3 minutes on a 2-core CPU; the full run about
10–15. Needs MNIST (``--data-dir``, ``$INITLAB_DATA_DIR`` or the user cache) and, for the PyTorch
arm, the ``bench`` extra (``pip install -e ".[bench]"``; without it that arm is skipped).

Sections (MNIST, batch 128, width 256, ReLU, He-normal init, plain SGD lr 0.01 unless said):

- ``throughput``: training steps/s after compilation at depth 10 and 50 of initlab with per-layer
  statistics every 10 steps, a PyTorch eager loop with hooks collecting the same per-layer
  variances every 10 steps, and a bare JAX loop without statistics (``benchmarks/baselines.py``).
  initlab and PyTorch each run twice: statistics on the logged step's own mini-batch
  (``log.stats_on: train_batch``; hooks inside the training step) and on the 512-example probe
  batch (initlab's default ``probe``; hooks on an extra forward/backward pass of the probe). The
  same PyTorch loop with no hooks at all (bare PyTorch) runs beside bare JAX: the two frameworks'
  floor for this training. initlab's figure is the training loop's wall clock (from the step-0
  record to the last step, so the statistics every 10 steps are paid inside it);
  ``TrainResult.steps / train_time_s`` (training
  chunks and statistics, as ``summary.json``'s steps/s) is shown beside it. Step 0's statistics
  and the last step's are taken inside the training loop's chunks, so they are in the window.
- ``stats``: initlab at depth 10 with statistics every step, 10 steps and 100 steps on the training
  batch and on the default 512-example probe, every 10 steps on a 128-example probe, and off
  (``log.every`` beyond the last step: statistics at step 0 and at the end only, on the training batch).
- ``compile``: ``TrainResult.compile_time_s`` at depth 5, 50, 200, 500, each in a fresh process,
  with the persistent compilation cache cold (empty folder: compile and write) and warm (the same
  folder again); the full run adds the cache switched off.
- ``sweep``: 16 runs (4 inits × 4 seeds, depth 10, as ``benchmarks/sweep_batching.py``) through
  ``run_sweep`` batched (``max_group=16``) vs one at a time (``max_group=1``), each arm a fresh
  process with an empty compilation cache (a first sweep of this architecture: one at a time, runs
  2-16 load the programs run 1 compiled); the full run adds one at a time with the cache off. Then
  runs per hour of a larger grid, 64 runs (depth 10, 20 × relu, tanh × 4 inits × 4 seeds), batched.
- ``flops``: training FLOP/s (6 × batch × parameters × steps/s) of initlab and bare JAX at depth 50
  as a fraction of the FLOP/s of a jitted float32 matmul measured on the same device; then the
  matmul rate of JAX and of PyTorch at that square size and at a hidden layer's shape (batch ×
  width @ width × width), the kernels both training loops are built on.
- ``memory``: peak resident memory (``ru_maxrss``) of a fresh process training depth 200, width 1024
  for a few steps, beside its peak before training started (interpreter, JAX, data).
- ``distributions``: the cost of the per-layer histograms (``log.histograms: 64``) and of the
  Jacobian spectrum (``log.jacobian: 4``) side by side with both off, at depth 10 and 50, width
  256, statistics every 10 steps on the training batch: loop steps/s, and the seconds the two
  spectra (init and end, compilation included) took beside the training loop's; then the spectrum
  alone at depth 50 × width 512: compile and per-call time for 4 examples.
- ``formats``: steps/s of float32, bfloat16 and float16 (``model.dtype``, mixed precision) side by
  side at depth 10 and 50, width 256 and 1024, statistics every 10 steps on the training batch; and
  the cost of the four format statistics (``grad_underflow``, ``wgrad_underflow``,
  ``act_underflow``, ``pre_overflow``) beside the default statistics without them, at depth 10 ×
  width 256.
- ``report``: `initlab report` over 1,000 synthetic run folders (``benchmarks/report_speed.py``'s
  generator): ``build_report`` in-process and the whole command in a fresh process.

How: every training measurement runs in a worker process, never in this one. The JAX arms share
one long-lived worker and the PyTorch arm has its own, so their thread pools never share a
process; arms are interleaved (A, B, C, A, B, C, ...) so machine noise hits them alike; each figure
is the median of the repeats and each ratio the median of the per-round ratios (the matmul
reference is measured in the depth-50 rounds). Compile time, memory and the sweep arms get a fresh
process per measurement. The test set is cut to 1,000 examples in every initlab run: it is
evaluated only at step 0 and at the end, outside every measured window. The CPU time that other
processes used (and the hypervisor stole) during the run is reported, with a warning above 5%:
the figures are only as good as the machine is idle. Results go to ``<out>/run.json`` and
``<out>/run.md`` (markdown tables with the issue's targets and pass/fail); the markdown is also
printed. A GPU is used when JAX has one (the PyTorch arm stays on the CPU).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark modules

from baselines import (
    Workload,
    bare_jax_steps_per_s,
    jax_matmul_flops,
    torch_hooks_steps_per_s,  # noqa: E402
    torch_matmul_flops,
)

SECTIONS = (
    "throughput",
    "stats",
    "statcost",
    "distributions",
    "formats",
    "width",
    "compile",
    "sweep",
    "flops",
    "memory",
    "report",
)
COORD_STATS = ("act_abs_mean", "pre_delta_abs_mean")
FORMAT_ARMS = ("float32", "bfloat16", "float16")
FORMAT_STATS = ("grad_underflow", "wgrad_underflow", "act_underflow", "pre_overflow")
TEST_SIZE = 1000  # test examples per initlab run (evaluated outside the measured windows)
MNIST_INPUTS, MNIST_CLASSES = 784, 10


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to do (``--quick`` or the full run)."""

    repeats: int  # rounds of interleaved arms
    steps: dict[int, int]  # throughput: depth -> training steps per measurement
    stats_steps: int
    stats_every: tuple[int, ...]  # steps between statistics (each on the training batch and the probe)
    compile_depths: tuple[int, ...]
    compile_modes: tuple[str, ...]  # off | cold | warm
    sweep_steps: int | None  # None: one epoch
    sweep_repeats: int
    sweep_arms: tuple[str, ...]  # batched | sequential | sequential-no-cache
    memory: tuple[int, int, int]  # depth, width, steps
    report_runs: int
    report_repeats: int
    matmul_n: int
    torch_max_seconds: float  # the PyTorch arm stops early after this long (see baselines.py)
    format_steps: tuple[tuple[int, int, int], ...] = ()  # formats: (depth, width, steps per measurement)


QUICK = Plan(
    repeats=3,
    steps={10: 200, 50: 40},
    stats_steps=200,
    stats_every=(1, 10, 100),
    compile_depths=(5, 50, 200, 500),
    compile_modes=("cold", "warm"),
    sweep_steps=30,
    sweep_repeats=2,
    sweep_arms=("batched", "sequential"),
    memory=(200, 1024, 2),
    report_runs=1000,
    report_repeats=2,
    matmul_n=2048,
    torch_max_seconds=10,
    format_steps=((10, 256, 200), (50, 256, 40), (10, 1024, 30), (50, 1024, 10)),
)
FULL = Plan(
    repeats=5,
    steps={10: 300, 50: 100},
    stats_steps=300,
    stats_every=(1, 10, 100),
    compile_depths=(5, 50, 200, 500),
    compile_modes=("off", "cold", "warm"),
    sweep_steps=None,
    sweep_repeats=2,
    sweep_arms=("batched", "sequential", "sequential-no-cache"),
    memory=(200, 1024, 5),
    report_runs=1000,
    report_repeats=3,
    matmul_n=2048,
    torch_max_seconds=30,
    format_steps=((10, 256, 300), (50, 256, 100), (10, 1024, 60), (50, 1024, 20)),
)


# --------------------------------------------------------------------------------------------------
# measurements (they run inside worker processes)


class ClockSink:
    """A training sink that keeps nothing but the clock: when the loop started (the step-0 metrics
    row, sent after the step-0 statistics and evaluation) and when the last training chunk returned."""

    def __init__(self) -> None:
        self.loop_start: float | None = None
        self.last_step_at: float | None = None

    def metrics(self, row: dict[str, Any]) -> None:
        if row["step"] == 0:
            self.loop_start = time.perf_counter()

    def layers(self, step: int, stats: dict[str, Any]) -> None:
        pass

    def checkpoint(self) -> None:
        pass

    def progress(self, step: int, total: int, info: dict[str, float]) -> None:
        self.last_step_at = time.perf_counter()

    def jacobian(self, step: int, singular_values: Any) -> None:
        pass

    def init_trace(self, trace: Any) -> None:
        pass

    def parameters(self, step: int, arrays: dict[str, Any]) -> None:
        pass

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, snapshot: dict[str, Any]) -> None:
        pass


def initlab_config(w: Workload, log_every: int | None) -> dict[str, Any]:
    """initlab's config for workload ``w``; ``log_every=None`` switches the statistics off: they are
    then taken only at step 0 and at the last step, as logged steps on the training batch (inside
    the measured window: they are the first and the end of the training loop's chunks)."""
    return {
        "name": "bench",
        "seed": w.seed,
        "data": {"dataset": "mnist", "probe_size": w.probe_size, "test_size": TEST_SIZE},
        "model": {
            "depth": w.depth,
            "width": w.width,
            "activation": "relu",
            "init": "he_normal",
            "dtype": w.dtype,
            "parameterization": w.parameterization,
            **({"base_width": max(w.width // 4, 1)} if w.parameterization == "mup" else {}),
        },
        "train": {"optimizer": "sgd", "lr": w.lr, "batch_size": w.batch_size, "steps": w.steps},
        "log": {
            "every": log_every if log_every is not None else w.steps + 1,
            "stats_on": w.stats_on if log_every is not None else "train_batch",
            "histograms": w.histograms,
            "jacobian": w.jacobian,
            **({} if w.stats is None else {"stats": list(w.stats)}),
        },
    }


@functools.cache
def load_mnist(data_dir: str | None):
    """MNIST as initlab's benchmark runs load it (standardized, test set cut to TEST_SIZE), once per process."""
    from initlab.config import from_dict
    from initlab.data.datasets import load_dataset

    return load_dataset(from_dict(initlab_config(Workload(depth=1), 10)).data, data_dir, progress=False)


def initlab_train(w: Workload, data_dir: str | None, log_every: int | None):
    """Train ``w`` with initlab (``initlab.train.loop.train``); returns (TrainResult, ClockSink)."""
    from initlab.config import from_dict
    from initlab.train.loop import train

    sink = ClockSink()
    result = train(from_dict(initlab_config(w, log_every)), load_mnist(data_dir), sink)
    if result.status != "completed" or result.steps != w.steps:
        raise RuntimeError(f"initlab run {result.status} after {result.steps} steps")
    return result, sink


def initlab_steps_per_s(w: Workload, data_dir: str | None, log_every: int | None) -> dict[str, float]:
    """``loop``: steps/s over the training loop's wall clock (statistics included); ``chunks``:
    TrainResult.steps / train_time_s (training chunks and statistics, without the host's bookkeeping)."""
    result, sink = initlab_train(w, data_dir, log_every)
    return {
        "loop": w.steps / (sink.last_step_at - sink.loop_start),
        "chunks": result.steps / result.train_time_s,
        "loop_s": sink.last_step_at - sink.loop_start,
        "jacobian_s": result.jacobian_time_s,
    }


def spectrum_seconds(depth: int, width: int, examples: int, data_dir: str | None, calls: int = 3) -> dict[str, float]:
    """The Jacobian spectrum of a He-initialized ReLU net on ``examples`` MNIST probe examples:
    the first call (compilation included) and the median of ``calls`` more."""
    import jax

    from initlab.config import from_dict
    from initlab.stats.spectrum import singular_values_fn
    from initlab.train.build import init_params, model_spec

    cfg = from_dict(initlab_config(Workload(depth=depth, width=width), 10))
    spec = model_spec(cfg.model, MNIST_INPUTS, MNIST_CLASSES)
    params, state = init_params(spec, cfg.model, jax.random.PRNGKey(0))
    x = jax.device_put(load_mnist(data_dir).x_train[:examples])
    fn = jax.jit(singular_values_fn(spec))
    t0 = time.perf_counter()
    fn(params, state, x).block_until_ready()
    first = time.perf_counter() - t0
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(params, state, x).block_until_ready()
        times.append(time.perf_counter() - t0)
    return {"first_s": first, "call_s": median(times)}


def matmul_flops(n: int, repeats: int = 10) -> float:
    """FLOP/s of a jitted float32 n×n matmul on the default device (median of ``repeats`` calls)."""
    import jax
    import jax.numpy as jnp

    a, b = (jax.random.normal(k, (n, n), jnp.float32) for k in jax.random.split(jax.random.PRNGKey(0)))
    f = jax.jit(jnp.matmul).lower(a, b).compile()
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times)


def peak_memory(depth: int, width: int, steps: int, data_dir: str | None) -> dict[str, Any]:
    """Peak RSS of training depth × width for a few steps (call it in a fresh process)."""
    import jax

    data = load_mnist(data_dir)
    jax.block_until_ready(jax.device_put(data.x_train[:1]))  # the runtime is up before the first reading
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    w = Workload(depth=depth, width=width, steps=steps)
    from initlab.config import from_dict
    from initlab.train.loop import memory_estimate

    estimate = memory_estimate([from_dict(initlab_config(w, None))], data)  # what the pre-flight check compares
    initlab_train(w, data_dir, None)
    stats = jax.devices()[0].memory_stats() or {}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "peak_rss_bytes": peak,
        "peak_rss_before_training_bytes": before,
        "estimate_bytes": estimate.total,
        "estimate_without_data_bytes": estimate.total - estimate.data,
        "device_peak_bytes": stats.get("peak_bytes_in_use"),
        "parameters": w.parameters(data.input_dim, data.num_classes),
        "chunk_buffers": chunk_buffers(w, data_dir),
    }


def chunk_buffers(w: Workload, data_dir: str | None) -> dict[str, int]:
    """XLA's own accounting of the training chunk's memory for ``w`` (statistics off, as
    ``peak_memory`` trains it): the compiled program's argument, output and temporary bytes
    (``Compiled.memory_analysis()``). Call it after reading the peak RSS: it builds one more state."""
    import jax
    import numpy as np

    from initlab.config import from_dict
    from initlab.train.build import model_spec
    from initlab.train.chunk import ChunkIn
    from initlab.train.device import init_state, make_train_fns
    from initlab.train.group import stack
    from initlab.train.schedule import make_schedule

    cfg, data = from_dict(initlab_config(w, None)), load_mnist(data_dir)
    n_train = len(data.y_train)
    spec = model_spec(cfg.model, data.input_dim, data.num_classes)
    fns = make_train_fns(cfg, spec, make_schedule(cfg, n_train), n_train)
    x, y = jax.device_put(data.x_train), jax.device_put(data.y_train)
    state = stack([init_state(cfg, spec, fns, x)[0]])
    chunk_in = ChunkIn(state, state.params, np.int32(0), np.int32(1), np.ones(1, bool), np.True_)
    m = fns.chunk.lower(chunk_in, x, y).compile()
    a = m.memory_analysis()
    return {
        "arguments": a.argument_size_in_bytes,
        "outputs": a.output_size_in_bytes,
        "temporaries": a.temp_size_in_bytes,
        "aliased": a.alias_size_in_bytes,
    }


# The larger grid: 2 depths × 2 activations × 4 initializers × 4 seeds = 64 runs (4 groups of 16).
GRID64 = {"model.depth": [10, 20], "model.activation": ["relu", "tanh"]}


def sweep_seconds(arm: str, steps: int | None, data_dir: str | None, runs: int = 16) -> dict[str, Any]:
    """``benchmarks/sweep_batching.py``'s 16 runs (or, with ``runs=64``, GRID64 over them) through
    ``run_sweep``, batched or one at a time."""
    from initlab.runfolder.sweeps import run_sweep
    from sweep_batching import spec as sweep_spec

    out = Path(tempfile.mkdtemp(prefix=f"initlab-bench-sweep-{arm}-"))
    try:
        s = sweep_spec(out, 1)
        if runs == 64:
            s = replace(s, grid={**GRID64, **s.grid})
        train = dict(s.base["train"])
        if steps is not None:
            train.pop("epochs")
            train["steps"] = steps
        s = replace(s, base={**s.base, "train": train, "data": {**s.base["data"], "test_size": TEST_SIZE}})
        t0 = time.perf_counter()
        report = run_sweep(s, data_dir=data_dir, max_group=16 if arm == "batched" else 1)
        return {"seconds": time.perf_counter() - t0, "completed": report.count("completed")}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def cpu_seconds() -> dict[str, float] | None:
    """Busy and stolen CPU-seconds of the whole machine since boot (``/proc/stat``; Linux only)."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return {"busy": (user + nice + system + irq + softirq) / hz, "steal": steal / hz}


def own_cpu_seconds() -> float:
    """CPU time of this process and its finished children (the workers, once closed)."""
    return sum(
        resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )


def other_load(start: dict[str, float] | None, own_start: float, wall: float) -> dict[str, float] | None:
    """How busy the machine was with other work during the run: CPU used by other processes and
    stolen by the hypervisor, as fractions of all cores over the run's wall time."""
    end = cpu_seconds()
    if start is None or end is None:
        return None
    capacity = wall * (os.cpu_count() or 1)
    other = end["busy"] - start["busy"] - (own_cpu_seconds() - own_start)
    return {"other_fraction": max(other, 0.0) / capacity, "steal_fraction": (end["steal"] - start["steal"]) / capacity}


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, JAX device and package versions."""
    import jax

    from initlab.runfolder.experiment import versions

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = None
    dev = jax.devices()[0]
    vers = versions()
    vers["torch"] = torch_version()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_bytes": ram,
        "device": f"{dev.platform}: {dev.device_kind}",
        "versions": vers,
    }


def torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def measure(req: dict[str, Any]) -> Any:
    """One measurement, described by plain data (what a worker receives)."""
    kind, data_dir = req["kind"], req.get("data_dir")
    w = Workload(**req["workload"]) if "workload" in req else None
    if kind == "initlab":
        return initlab_steps_per_s(w, data_dir, req["log_every"])
    if kind == "bare_jax":
        data = load_mnist(data_dir)
        return bare_jax_steps_per_s(w, data.x_train, data.y_train)
    if kind in ("torch_hooks", "torch_bare"):
        data = load_mnist(data_dir)
        return torch_hooks_steps_per_s(
            w, data.x_train, data.y_train, max_seconds=req["max_seconds"], hooks=kind == "torch_hooks"
        )
    if kind == "gemm":  # (m, k, n) matmuls in JAX and, in the PyTorch worker, in PyTorch
        fn = torch_matmul_flops if req["library"] == "torch" else jax_matmul_flops
        return fn(*req["shape"])
    if kind == "compile":
        result, _ = initlab_train(w, data_dir, None)
        return result.compile_time_s
    if kind == "matmul":
        return matmul_flops(req["n"])
    if kind == "spectrum":
        return spectrum_seconds(req["depth"], req["width"], req["examples"], data_dir)
    if kind == "memory":
        return peak_memory(w.depth, w.width, w.steps, data_dir)
    if kind == "sweep":
        return sweep_seconds(req["arm"], req["steps"], data_dir, req.get("runs", 16))
    if kind == "machine":
        return machine()
    raise ValueError(f"unknown measurement {kind!r}")


def serve() -> None:
    """Worker loop: one JSON request per line on stdin, one JSON answer per line on stdout."""
    from initlab.train.cache import enable_compilation_cache

    enable_compilation_cache()  # as the CLI does; the parent chose the folder (or opted out) in our environment
    answers, sys.stdout = sys.stdout, sys.stderr  # library chatter must not corrupt the answers
    for line in sys.stdin:
        try:
            answer = {"ok": measure(json.loads(line))}
        except Exception:  # noqa: BLE001 - sent back to the parent, which raises it
            answer = {"error": traceback.format_exc()}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


# --------------------------------------------------------------------------------------------------
# the parent: workers, interleaving, sections


class Worker:
    """A measurement process (``run.py --worker``) with its own environment; ``cache_dir=None``
    switches the persistent compilation cache off in it."""

    def __init__(self, cache_dir: str | None) -> None:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))
        }
        env.pop("INITLAB_NO_COMPILE_CACHE", None)
        env.update({"INITLAB_NO_COMPILE_CACHE": "1"} if cache_dir is None else {"JAX_COMPILATION_CACHE_DIR": cache_dir})
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    def __call__(self, kind: str, **req: Any) -> Any:
        self.proc.stdin.write(json.dumps({"kind": kind, **req}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker died during {kind} (exit code {self.proc.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{kind} {req} failed in the worker:\n{answer['error']}")
        return answer["ok"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def once(cache_dir: str | None, kind: str, **req: Any) -> Any:
    """One measurement in a fresh process."""
    with Worker(cache_dir) as worker:
        return worker(kind, **req)


# Pause between arms: OpenMP (PyTorch) and Eigen (XLA) worker threads spin for a while after their
# work is done, and would take the cores from the next arm.
SETTLE_S = 0.5


def interleaved(arms: dict[str, Callable[[], Any]], repeats: int, label: str) -> dict[str, list[Any]]:
    """Run every arm once per round, in turn, for ``repeats`` rounds; all values per arm."""
    values: dict[str, list[Any]] = {name: [] for name in arms}
    for r in range(repeats):
        for name, fn in arms.items():
            time.sleep(SETTLE_S)
            values[name].append(fn())
            print(
                f"  [{label}] round {r + 1}/{repeats} {name}: {_short(values[name][-1])}", file=sys.stderr, flush=True
            )
    return values


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of a[i] / b[i]: arms measured in one round share that round's machine state."""
    return median([x / y for x, y in zip(a, b)])


# Where initlab and the hooks loop take the per-layer statistics (initlab's log.stats_on).
SOURCES = ("train_batch", "probe")
SOURCE_LABEL = {"train_batch": "training batch", "probe": "probe of 512"}


def arm_name(arm: str, on: str) -> str:
    """An arm's name in a round: ``initlab`` / ``torch_hooks`` with the statistics on the training
    batch, ``initlab_probe`` / ``torch_hooks_probe`` on the probe."""
    return arm if on == "train_batch" else f"{arm}_probe"


def loops(runs: Sequence[dict[str, float]]) -> list[float]:
    """initlab's loop steps/s (statistics included) of each round."""
    return [r["loop"] for r in runs]


@dataclass
class Suite:
    """The parent's state: plan, data folder and the long-lived workers."""

    plan: Plan
    data_dir: str | None
    jax: Worker
    torch: Worker | None

    def _rounds(self, depth: int, steps: int, torch: bool, matmul: bool) -> dict[str, list[Any]]:
        """Interleaved rounds at ``depth``: initlab and PyTorch with hooks (statistics every 10 steps,
        on the training batch and on the probe), bare JAX and, with ``matmul``, the matmul reference
        of the FLOP efficiency."""
        arms: dict[str, Callable[[], Any]] = {}
        for on in SOURCES:
            w = asdict(Workload(depth=depth, steps=steps, stats_on=on))
            arms[arm_name("initlab", on)] = lambda w=w: self.jax(
                "initlab", workload=w, log_every=10, data_dir=self.data_dir
            )
            if torch and self.torch is not None:
                arms[arm_name("torch_hooks", on)] = lambda w=w: self.torch(
                    "torch_hooks", workload=w, data_dir=self.data_dir, max_seconds=self.plan.torch_max_seconds
                )
        bare = asdict(Workload(depth=depth, steps=steps))
        arms["bare_jax"] = lambda: self.jax("bare_jax", workload=bare, data_dir=self.data_dir)
        if torch and self.torch is not None:
            arms["torch_bare"] = lambda: self.torch(
                "torch_bare", workload=bare, data_dir=self.data_dir, max_seconds=self.plan.torch_max_seconds
            )
        if matmul:
            arms["matmul"] = lambda: self.jax("matmul", n=self.plan.matmul_n)
        return interleaved(arms, self.plan.repeats, f"depth {depth}")

    def throughput(self, with_matmul: bool = False) -> dict[str, Any]:
        """initlab (stats every 10 steps) vs PyTorch with hooks vs bare JAX, at depth 10 and 50, with
        the statistics on the training batch and on the probe."""
        out = {}
        for depth, steps in self.plan.steps.items():
            runs = self._rounds(depth, steps, torch=True, matmul=with_matmul and depth == 50)
            row: dict[str, Any] = {"steps": steps, "runs": runs, "bare_jax": median(runs["bare_jax"])}
            if "torch_bare" in runs:  # the frameworks' floor: neither loop computes any statistics
                row["torch_bare"] = median(runs["torch_bare"])
                row["bare_jax_vs_torch_bare"] = paired(runs["bare_jax"], runs["torch_bare"])
            for on in SOURCES:
                initlab = loops(runs[arm_name("initlab", on)])
                torch = runs.get(arm_name("torch_hooks", on))
                row[on] = {
                    "initlab": median(initlab),
                    "initlab_chunks": median([r["chunks"] for r in runs[arm_name("initlab", on)]]),
                    "torch_hooks": median(torch) if torch else None,
                    "ratio_torch": paired(initlab, torch) if torch else None,
                    "ratio_bare": paired(initlab, runs["bare_jax"]),
                }
            out[str(depth)] = row
        return out

    def stats(self) -> dict[str, Any]:
        """initlab at depth 10 with statistics every 1, 10, 100 steps (training batch and probe) and off."""
        arms = {}
        for on in SOURCES:
            w = asdict(Workload(depth=10, steps=self.plan.stats_steps, stats_on=on))
            for every in self.plan.stats_every:
                arms[f"{every}, {SOURCE_LABEL[on]}"] = lambda w=w, every=every: self.jax(
                    "initlab", workload=w, log_every=every, data_dir=self.data_dir
                )
        # Every 10 steps on a probe of one training batch's size (128) instead of 512 examples.
        small = asdict(Workload(depth=10, steps=self.plan.stats_steps, stats_on="probe", probe_size=128))
        arms["10, probe of 128"] = lambda: self.jax("initlab", workload=small, log_every=10, data_dir=self.data_dir)
        off = asdict(Workload(depth=10, steps=self.plan.stats_steps))
        arms["off"] = lambda: self.jax("initlab", workload=off, log_every=None, data_dir=self.data_dir)
        runs = interleaved(arms, self.plan.repeats, "stats overhead")
        base = loops(runs["off"])
        rows = {
            name: {
                "loop": median(loops(v)),
                "chunks": median([r["chunks"] for r in v]),
                "cost": paired(base, loops(v)) - 1,
            }
            for name, v in runs.items()
        }
        return {"steps": self.plan.stats_steps, "runs": runs, "rows": rows}

    def statcost(self) -> dict[str, Any]:
        """What each default statistic costs: at depth 10 and 50, statistics every 10 steps on the
        training batch, bare JAX, the signal statistics alone (what every run computes), the signal
        statistics plus one family of default statistics (those sharing one computation measured
        together), and all the defaults, side by side in rounds."""
        from initlab.stats.statistics import default_names, signal_names

        signal = tuple(signal_names())
        families: dict[str, tuple[str, ...]] = {}
        for name in default_names():
            if name in signal:
                continue
            family = (
                "unit percentiles"
                if name.startswith("unit_p")
                else "saturated_frac, dead_frac"
                if name in ("saturated_frac", "dead_frac")
                else name
            )
            families[family] = families.get(family, ()) + (name,)
        out: dict[str, Any] = {"signal": list(signal), "families": {k: list(v) for k, v in families.items()}}
        for depth, steps in self.plan.steps.items():

            def arm(stats, depth=depth, steps=steps):
                w = asdict(Workload(depth=depth, steps=steps, stats=stats))
                return lambda: loops([self.jax("initlab", workload=w, log_every=10, data_dir=self.data_dir)])[0]

            bare = asdict(Workload(depth=depth, steps=steps))
            arms = {
                "bare JAX": lambda w=bare: self.jax("bare_jax", workload=w, data_dir=self.data_dir),
                "signal only": arm(signal),
                **{f"+ {family}": arm(signal + names) for family, names in families.items()},
                "all defaults": arm(None),
            }
            runs = interleaved(arms, self.plan.repeats, f"statistic costs, depth {depth}")
            base, only = runs["bare JAX"], runs["signal only"]
            out[str(depth)] = {
                "steps": steps,
                "runs": runs,
                "rows": {
                    name: {"steps_per_s": median(v), "vs_bare": paired(v, base), "cost_vs_signal": paired(only, v) - 1}
                    for name, v in runs.items()
                },
            }
        return out

    def distributions(self) -> dict[str, Any]:
        """Histograms and the Jacobian spectrum on, beside both off, at depth 10 and 50 (statistics
        every 10 steps on the training batch); then the spectrum alone at depth 50 × width 512."""
        out: dict[str, Any] = {}
        arms_of = {
            "off": {"histograms": 0, "jacobian": 0},
            "histograms 64": {"histograms": 64, "jacobian": 0},
            "spectrum 4": {"histograms": 0, "jacobian": 4},
        }
        for depth, steps in self.plan.steps.items():
            arms = {}
            for name, log in arms_of.items():
                w = asdict(Workload(depth=depth, steps=steps, **log))
                arms[name] = lambda w=w: self.jax("initlab", workload=w, log_every=10, data_dir=self.data_dir)
            runs = interleaved(arms, self.plan.repeats, f"distributions, depth {depth}")
            base = loops(runs["off"])
            out[str(depth)] = {
                "steps": steps,
                "runs": runs,
                "rows": {
                    name: {
                        "loop": median(loops(v)),
                        "vs_off": paired(loops(v), base),
                        "jacobian_s": median([r["jacobian_s"] for r in v]),
                        "loop_s": median([r["loop_s"] for r in v]),
                    }
                    for name, v in runs.items()
                },
            }
        out["spectrum_50x512"] = self.jax("spectrum", depth=50, width=512, examples=4, data_dir=self.data_dir)
        return out

    def formats(self) -> dict[str, Any]:
        """float32, bfloat16 and float16 side by side per (depth, width); the format statistics' cost."""
        from initlab.stats.statistics import default_names

        out: dict[str, Any] = {}
        for depth, width, steps in self.plan.format_steps:
            arms = {}
            for dtype in FORMAT_ARMS:
                w = asdict(Workload(depth=depth, width=width, steps=steps, dtype=dtype))
                arms[dtype] = lambda w=w: self.jax("initlab", workload=w, log_every=10, data_dir=self.data_dir)
            runs = interleaved(arms, self.plan.repeats, f"formats, depth {depth} x width {width}")
            base = loops(runs["float32"])
            out[f"{depth}x{width}"] = {
                "depth": depth,
                "width": width,
                "steps": steps,
                "rows": {
                    name: {"loop": median(loops(v)), "vs_float32": paired(loops(v), base)} for name, v in runs.items()
                },
            }
        without = tuple(n for n in default_names() if n not in FORMAT_STATS)
        steps = self.plan.stats_steps
        arms = {
            "default statistics": asdict(Workload(depth=10, steps=steps)),
            "without the format statistics": asdict(Workload(depth=10, steps=steps, stats=without)),
        }
        runs = interleaved(
            {
                k: (lambda w=w: self.jax("initlab", workload=w, log_every=10, data_dir=self.data_dir))
                for k, w in arms.items()
            },
            self.plan.repeats,
            "format statistics",
        )
        base = loops(runs["without the format statistics"])
        out["statistics"] = {
            "steps": steps,
            "rows": {k: {"loop": median(loops(v)), "vs_without": paired(loops(v), base)} for k, v in runs.items()},
        }
        return out

    def width(self) -> dict[str, Any]:
        """The coordinate-check statistics' cost (on the probe, every 10 steps, beside the default
        statistics alone) and μP's per-class optimizer (optax.multi_transform) against the standard one."""
        from initlab.stats.statistics import default_names

        steps = self.plan.stats_steps
        default = tuple(default_names())
        arms_of = {
            "default statistics": Workload(depth=10, steps=steps, stats_on="probe", stats=default),
            "+ act_abs_mean": Workload(depth=10, steps=steps, stats_on="probe", stats=default + COORD_STATS[:1]),
            "+ both": Workload(depth=10, steps=steps, stats_on="probe", stats=default + COORD_STATS),
            "mup, default statistics": Workload(
                depth=10, steps=steps, stats_on="probe", stats=default, parameterization="mup"
            ),
        }
        arms = {
            k: (lambda w=asdict(w): self.jax("initlab", workload=w, log_every=10, data_dir=self.data_dir))
            for k, w in arms_of.items()
        }
        runs = interleaved(arms, self.plan.repeats, "coordinate-check statistics and mup")
        base = loops(runs["default statistics"])
        return {
            "steps": steps,
            "rows": {k: {"loop": median(loops(v)), "vs_default": paired(loops(v), base)} for k, v in runs.items()},
        }

    def compile(self) -> dict[str, Any]:
        """compile_time_s per depth, each in a fresh process: cache off, cold (empty folder) and warm."""
        rows = {}
        for depth in self.plan.compile_depths:
            w = asdict(Workload(depth=depth, steps=0))
            folder = tempfile.mkdtemp(prefix="initlab-bench-jaxcache-")
            try:
                row = {}
                for mode in self.plan.compile_modes:  # cold comes before warm: it fills the folder
                    row[mode] = once(None if mode == "off" else folder, "compile", workload=w, data_dir=self.data_dir)
                    print(f"  [compile] depth {depth} cache {mode}: {row[mode]:.3f} s", file=sys.stderr, flush=True)
                rows[str(depth)] = row
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        return rows

    def sweep(self) -> dict[str, Any]:
        """16 runs batched vs sequential, then once the 64-run grid batched; each arm a fresh process
        with an empty compilation cache."""

        def arm(name: str, n_runs: int = 16) -> float:
            folder = tempfile.mkdtemp(prefix="initlab-bench-jaxcache-")
            try:
                res = once(
                    None if name.endswith("no-cache") else folder,
                    "sweep",
                    arm=name.split("-")[0],
                    steps=self.plan.sweep_steps,
                    data_dir=self.data_dir,
                    runs=n_runs,
                )
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            if res["completed"] != n_runs:
                raise RuntimeError(f"sweep arm {name}: only {res['completed']} of {n_runs} runs completed")
            return res["seconds"]

        runs = interleaved(
            {name: functools.partial(arm, name) for name in self.plan.sweep_arms}, self.plan.sweep_repeats, "sweep"
        )
        secs = {name: median(v) for name, v in runs.items()}
        grid64 = arm("batched", 64)
        print(f"  [sweep] 64-run grid batched: {grid64:.1f} s", file=sys.stderr, flush=True)
        return {
            "steps_per_run": self.plan.sweep_steps or "1 epoch",
            "runs": runs,
            "seconds": secs,
            "runs_per_hour": {k: 16 * 3600 / v for k, v in secs.items()},
            "speedup": paired(runs["sequential"], runs["batched"]),
            "grid64": {
                "grid": {**GRID64, "model.init": 4, "seeds": 4},
                "seconds": grid64,
                "runs_per_hour": 64 * 3600 / grid64,
            },
        }

    def flops(self, depth50: dict[str, list[Any]] | None) -> dict[str, Any]:
        """Training FLOP/s at depth 50 over matmul FLOP/s, each training arm paired with the matmul of
        its round (the throughput section's depth-50 rounds, or rounds measured here)."""
        w = Workload(depth=50, steps=self.plan.steps[50])
        runs = depth50 if depth50 and "matmul" in depth50 else self._rounds(50, w.steps, torch=False, matmul=True)
        per_step = w.flops_per_step(MNIST_INPUTS, MNIST_CLASSES)
        out = {
            "matmul_n": self.plan.matmul_n,
            "matmul_flops": median(runs["matmul"]),
            "flops_per_step": per_step,
            "parameters": w.parameters(MNIST_INPUTS, MNIST_CLASSES),
        }
        for arm in ("initlab", "bare_jax"):  # initlab: statistics every 10 steps on the training batch
            achieved = [per_step * v for v in (loops(runs[arm]) if arm == "initlab" else runs[arm])]
            out[arm] = {"flops": median(achieved), "fraction": paired(achieved, runs["matmul"])}
        # The matrix multiplication libraries themselves, at the big square size and at a hidden
        # layer's forward shape (batch × width @ width × width): what the training loops are built on.
        n, b, width = self.plan.matmul_n, w.batch_size, w.width
        out["gemm"] = {}
        for label, shape in ((f"{n}²", (n, n, n)), (f"{b}×{width} @ {width}×{width}", (b, width, width))):
            arms = {"jax": lambda shape=shape: self.jax("gemm", library="jax", shape=shape)}
            if self.torch is not None:
                arms["torch"] = lambda shape=shape: self.torch("gemm", library="torch", shape=shape)
            got = interleaved(arms, self.plan.repeats, f"gemm {label}")
            out["gemm"][label] = {lib: median(v) for lib, v in got.items()}
        return out

    def memory(self) -> dict[str, Any]:
        """Peak RSS of a fresh process training depth 200, width 1024 for a few steps (no cache)."""
        depth, width, steps = self.plan.memory
        res = once(
            None, "memory", workload=asdict(Workload(depth=depth, width=width, steps=steps)), data_dir=self.data_dir
        )
        return {"depth": depth, "width": width, "steps": steps, **res}

    def report(self) -> dict[str, Any]:
        """`initlab report` over synthetic run folders: build_report in this process, the CLI in a fresh one."""
        from initlab.report.tables import build_report
        from report_speed import synthesize

        root = Path(tempfile.mkdtemp(prefix="initlab-bench-report-"))
        try:
            synthesize(root, self.plan.report_runs)

            def timed(fn: Callable[[], Any]) -> float:
                t0 = time.perf_counter()
                fn()
                return time.perf_counter() - t0

            command = [sys.executable, "-m", "initlab", "report", str(root), "--format", "csv"]
            runs = interleaved(
                {
                    "build_report": lambda: timed(lambda: build_report([root])),
                    "cli": lambda: timed(lambda: subprocess.run(command, check=True, capture_output=True)),
                },
                self.plan.report_repeats,
                "report",
            )
            return {"runs": self.plan.report_runs, "seconds": {k: median(v) for k, v in runs.items()}, "all": runs}
        finally:
            shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# targets and output


@dataclass
class Target:
    """One target of the issue and how this run fared."""

    name: str
    target: str
    measured: str
    passed: bool


def targets(res: dict[str, Any]) -> list[Target]:
    """The issue's targets that this run measured."""
    out: list[Target] = []
    for on in SOURCES:
        where = f"statistics on the {SOURCE_LABEL[on]}"
        for depth, row in res.get("throughput", {}).items():
            r = row[on]
            if r["ratio_torch"] is not None:
                out.append(
                    Target(
                        f"initlab vs PyTorch + hooks, depth {depth}, {where}",
                        "≥ 2×",
                        f"{r['ratio_torch']:.2f}×",
                        r["ratio_torch"] >= 2,
                    )
                )
            out.append(
                Target(
                    f"initlab vs bare JAX, depth {depth}, {where}",
                    "≥ 0.9×",
                    f"{r['ratio_bare']:.2f}×",
                    r["ratio_bare"] >= 0.9,
                )
            )
        if "stats" in res:
            cost = res["stats"]["rows"][f"10, {SOURCE_LABEL[on]}"]["cost"]
            out.append(
                Target(
                    f"statistics every 10 steps on the {SOURCE_LABEL[on]}: extra time per step vs off (depth 10)",
                    "≤ 10%",
                    f"{cost:+.1%}",
                    cost <= 0.10,
                )
            )
    for depth, row in {k: v for k, v in res.get("distributions", {}).items() if "rows" in v}.items():
        cost = 1 - row["rows"]["histograms 64"]["vs_off"]
        out.append(
            Target(
                f"histograms (64 bins) on, statistics every 10 steps, depth {depth}: throughput lost",
                "≤ 10%",
                f"{cost:.1%}",
                cost <= 0.10,
            )
        )
    fs = res.get("formats", {}).get("statistics")
    if fs:
        cost = 1 - fs["rows"]["default statistics"]["vs_without"]
        out.append(
            Target(
                "the four format statistics, every 10 steps on the training batch, depth 10: throughput lost",
                "≤ 5%",
                f"{cost:.1%}",
                cost <= 0.05,
            )
        )
    ws = res.get("width")
    if ws:
        cost = 1 - ws["rows"]["+ both"]["vs_default"]
        out.append(
            Target(
                "the coordinate-check statistics, every 10 steps on the probe, depth 10: throughput lost",
                "stated",
                f"{cost:.1%}",
                True,
            )
        )
    compile_rows = res.get("compile", {})
    if "5" in compile_rows and "500" in compile_rows:
        r = compile_rows["500"]["cold"] / compile_rows["5"]["cold"]
        out.append(Target("compile time, depth 500 / depth 5 (cold cache)", "≤ 1.5×", f"{r:.2f}×", r <= 1.5))
    if "sweep" in res:
        s = res["sweep"]["speedup"]
        out.append(Target("sweep of 16: batched vs sequential", "≥ 3×", f"{s:.2f}×", s >= 3))
    if "flops" in res:
        f = res["flops"]["initlab"]["fraction"]
        out.append(Target("training FLOP/s / matmul FLOP/s, depth 50", "≥ 50%", f"{f:.1%}", f >= 0.5))
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "—" if x is None else format(x, fmt)


def _mib(b: float | None) -> str:
    return "—" if b is None else f"{b / 2**20:,.0f} MiB"


def markdown(res: dict[str, Any]) -> str:
    """Every section as a markdown table, then the targets."""
    m = res["machine"]
    ram = f"{m['ram_bytes'] / 2**30:.0f} GiB" if m["ram_bytes"] else "?"
    vers = ", ".join(
        f"{k} {m['versions'].get(k) or 'not installed'}"
        for k in ("python", "jax", "jaxlib", "optax", "torch", "initlab")
    )
    parts = [
        f"# initlab benchmarks ({'quick' if res['quick'] else 'full'})",
        f"{m['date']} · {m['cpu']}, {m['cores']} cores, {ram} RAM · device {m['device']} · {vers}",
    ]
    load = res.get("other_load")
    if load:
        busy = load["other_fraction"] + load["steal_fraction"]
        parts.append(
            f"Other work during the run: {load['other_fraction']:.0%} of the CPU used by other processes, "
            f"{load['steal_fraction']:.0%} stolen by the hypervisor"
            + (" — **the machine was busy: figures are noisy, rerun on an idle machine**" if busy > 0.05 else ".")
        )
    if "throughput" in res:
        rows = [
            [
                d,
                SOURCE_LABEL[on],
                r["steps"],
                _num(r[on]["initlab"]),
                _num(r[on]["initlab_chunks"]),
                _num(r[on]["torch_hooks"]),
                _num(r["bare_jax"]),
                _num(r[on]["ratio_torch"], ".2f"),
                _num(r[on]["ratio_bare"], ".2f"),
            ]
            for d, r in res["throughput"].items()
            for on in SOURCES
        ]
        parts += [
            "## Training throughput (steps/s, statistics every 10 steps; medians, ratios: median of per-round ratios)",
            table(
                [
                    "depth",
                    "statistics on",
                    "steps",
                    "initlab",
                    "initlab, steps / train_time_s",
                    "PyTorch + hooks",
                    "bare JAX",
                    "initlab / PyTorch",
                    "initlab / bare JAX",
                ],
                rows,
            ),
        ]
        floor = [
            [d, _num(r["bare_jax"]), _num(r.get("torch_bare")), _num(r.get("bare_jax_vs_torch_bare"), ".2f")]
            for d, r in res["throughput"].items()
        ]
        parts += [
            "The frameworks' floor: the same training with no statistics and no hooks at all (steps/s).",
            table(["depth", "bare JAX", "bare PyTorch", "bare JAX / bare PyTorch"], floor),
        ]
    if "statcost" in res:
        sc = res["statcost"]
        for d, r in ((d, r) for d, r in sc.items() if d not in ("signal", "families")):
            rows = [
                [
                    k,
                    _num(v["steps_per_s"]),
                    _num(v["vs_bare"], ".2f"),
                    "" if k in ("bare JAX", "signal only") else f"{v['cost_vs_signal']:+.1%}",
                ]
                for k, v in sorted(r["rows"].items(), key=lambda kv: -kv[1]["steps_per_s"])
            ]
            parts += [
                f"## What each statistic costs, depth {d} (every 10 steps on the training batch, "
                f"{r['steps']} steps; signal statistics: {', '.join(sc['signal'])})",
                table(["arm", "steps/s", "vs bare JAX", "cost vs signal only"], rows),
            ]
    if "stats" in res:
        st = res["stats"]
        rows = [[k, _num(v["loop"]), _num(v["chunks"]), f"{v['cost']:+.1%}"] for k, v in st["rows"].items()]
        parts += [
            f"## Statistics overhead (depth 10, {st['steps']} steps; steps/s, median)",
            table(["statistics every", "steps/s", "steps / train_time_s", "time per step vs off"], rows),
        ]
    if "distributions" in res:
        d = res["distributions"]
        rows = [
            [
                depth,
                name,
                r["steps"],
                _num(v["loop"]),
                f"{v['vs_off']:.2f}",
                f"{v['jacobian_s']:.2f}",
                f"{v['loop_s']:.2f}",
            ]
            for depth, r in d.items()
            if "rows" in r
            for name, v in r["rows"].items()
        ]
        sp = d["spectrum_50x512"]
        parts += [
            "## Distributions: histograms and the Jacobian spectrum (width 256, statistics every 10 steps on "
            "the training batch; steps/s, median; ratio: median of per-round ratios)",
            table(["depth", "arm", "steps", "steps/s", "vs off", "spectra (init + end), s", "training loop, s"], rows),
            f"The spectrum alone at depth 50 × width 512, 4 examples: {sp['first_s']:.2f} s for the first "
            f"call (compilation included), {sp['call_s']:.2f} s per call after.",
        ]
    if "formats" in res:
        f = res["formats"]
        rows = [
            [r["depth"], r["width"], r["steps"]]
            + [f"{_num(r['rows'][d]['loop'])} ({r['rows'][d]['vs_float32']:.2f}×)" for d in FORMAT_ARMS]
            for key, r in f.items()
            if key != "statistics"
        ]
        st = f["statistics"]
        srows = [[k, _num(v["loop"]), f"{v['vs_without']:.2f}"] for k, v in st["rows"].items()]
        parts += [
            "## Number formats (model.dtype, mixed precision; statistics every 10 steps on the training batch; "
            "steps/s, median, and the median per-round ratio to float32)",
            table(["depth", "width", "steps"] + list(FORMAT_ARMS), rows),
            f"The four format statistics (depth 10 × width 256, {st['steps']} steps; steps/s):",
            table(["statistics", "steps/s", "vs without"], srows),
        ]
    if "width" in res:
        ws = res["width"]
        rows = [[k, _num(v["loop"]), f"{v['vs_default']:.2f}"] for k, v in ws["rows"].items()]
        parts += [
            f"## Width: the coordinate-check statistics and μP (depth 10 × width 256, {ws['steps']} steps, "
            "statistics every 10 steps on the probe; steps/s, median, and the median per-round ratio)",
            table(["arm", "steps/s", "vs default statistics"], rows),
        ]
    if "compile" in res:
        c = res["compile"]
        modes = list(next(iter(c.values())))
        first = next(iter(c))
        rows = [
            [d] + [f"{v[mode]:.2f}" for mode in modes] + [f"{v['cold'] / c[first]['cold']:.2f}×"] for d, v in c.items()
        ]
        parts += [
            "## Compile time (`compile_time_s` in s, a fresh process each)",
            table(["depth"] + [f"cache {mode}" for mode in modes] + [f"cold / depth {first}"], rows),
        ]
    if "sweep" in res:
        s = res["sweep"]
        rows = [[arm, f"{secs:.1f}", f"{s['runs_per_hour'][arm]:,.0f}"] for arm, secs in s["seconds"].items()]
        each = f"{s['steps_per_run']} steps" if isinstance(s["steps_per_run"], int) else s["steps_per_run"]
        g = s["grid64"]
        parts += [
            f"## Sweep of 16 runs ({each} each): batched {s['speedup']:.2f}× faster than sequential",
            table(["arm", "seconds", "runs/hour"], rows),
            f"A larger grid, batched: 64 runs (depth 10, 20 × relu, tanh × 4 initializers × 4 seeds; "
            f"{each} each) in {g['seconds']:.1f} s, **{g['runs_per_hour']:,.0f} runs/hour**.",
        ]
    if "flops" in res:
        f = res["flops"]
        rows = [[arm, f"{f[arm]['flops'] / 1e9:.1f}", f"{f[arm]['fraction']:.1%}"] for arm in ("initlab", "bare_jax")]
        parts += [
            f"## FLOP efficiency at depth 50 ({f['parameters']:,} parameters; float32 {f['matmul_n']}² "
            f"matmul: {f['matmul_flops'] / 1e9:.1f} GFLOP/s)",
            table(["arm", "training GFLOP/s", "of matmul"], rows),
        ]
        if f.get("gemm"):
            rows = [
                [
                    shape,
                    _num(v["jax"] / 1e9),
                    _num(v["torch"] / 1e9 if "torch" in v else None),
                    _num(v["jax"] / v["torch"] if "torch" in v else None, ".2f"),
                ]
                for shape, v in f["gemm"].items()
            ]
            parts += [
                "Matrix multiplication alone (float32 GFLOP/s; JAX: XLA's CPU dot, chained in one program "
                "at the layer's shape; PyTorch: eager `torch.mm`)",
                table(["shape", "JAX", "PyTorch", "JAX / PyTorch"], rows),
            ]
    if "memory" in res:
        mem = res["memory"]
        parts += [
            f"## Memory (depth {mem['depth']}, width {mem['width']}, {mem['steps']} steps; "
            f"{mem['parameters']:,} parameters = {_mib(4 * mem['parameters'])} in float32)",
            table(
                ["peak RSS", "peak RSS before training", "device peak"],
                [
                    [
                        _mib(mem["peak_rss_bytes"]),
                        _mib(mem["peak_rss_before_training_bytes"]),
                        _mib(mem["device_peak_bytes"]),
                    ]
                ],
            ),
        ]
        if mem.get("estimate_bytes"):
            growth = mem["peak_rss_bytes"] - mem["peak_rss_before_training_bytes"]
            parts += [
                "initlab's pre-flight estimate (`initlab.train.memory`; the data are loaded before the first "
                "reading, so the growth compares with the estimate without them)",
                table(
                    ["estimate", "estimate without data", "peak RSS growth", "estimate / growth"],
                    [
                        [
                            _mib(mem["estimate_bytes"]),
                            _mib(mem["estimate_without_data_bytes"]),
                            _mib(growth),
                            f"{mem['estimate_without_data_bytes'] / growth:.2f}" if growth > 0 else "–",
                        ]
                    ],
                ),
            ]
        if mem.get("chunk_buffers"):
            b, weights = mem["chunk_buffers"], 4 * mem["parameters"]
            parts += [
                "XLA's buffers for the training chunk (`memory_analysis()` of the compiled program; "
                "in brackets, in copies of the weights; the arguments include the training set)",
                table(
                    ["arguments", "outputs", "temporaries"],
                    [[f"{_mib(b[k])} ({b[k] / weights:.2f})" for k in ("arguments", "outputs", "temporaries")]],
                ),
            ]
    if "report" in res:
        r = res["report"]
        parts += [
            f"## `initlab report` over {r['runs']:,} run folders (median)",
            table(
                ["build_report (in-process)", "`initlab report --format csv` (fresh process)"],
                [[f"{r['seconds']['build_report']:.3f} s", f"{r['seconds']['cli']:.3f} s"]],
            ),
        ]
    rows = [[t.name, t.target, t.measured, "pass" if t.passed else "FAIL"] for t in targets(res)]
    parts += ["## Targets (issue #7)", table(["target", "wanted", "measured", "result"], rows)]
    return "\n\n".join(parts) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="few steps and repeats (about 2-3 minutes on a 2-core CPU) instead of the full run",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the MNIST files (default: $INITLAB_DATA_DIR, then the user cache)",
    )
    parser.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parent / "results"),
        help="folder for run.json and run.md (default: benchmarks/results)",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        metavar="SECTION,...",
        help=f"comma-separated sections to run (always in this order): {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="rounds of interleaved arms in throughput, stats and flops (default: 3 quick, 5 full)",
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="internal: serve measurements (JSON lines on stdin and stdout); the suite starts these",
    )
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        serve()
        return
    plan = QUICK if args.quick else FULL
    if args.repeats is not None:
        plan = replace(plan, repeats=args.repeats)
    wanted = [s for s in SECTIONS if s in args.only.split(",")]
    t_start, cpu_start, own_start = time.perf_counter(), cpu_seconds(), own_cpu_seconds()
    # The long-lived JAX worker gets a private, throw-away compilation cache: each repeat builds new
    # jitted functions, which then load their programs instead of compiling again (timings exclude
    # compilation either way).
    if not torch_version():
        print("PyTorch is not installed (pip install -e '.[bench]'): its arm is skipped", file=sys.stderr)
    own_cache = tempfile.mkdtemp(prefix="initlab-bench-jaxcache-")
    jax_worker = Worker(own_cache)
    torch_worker = Worker(None) if torch_version() and "throughput" in wanted else None
    suite = Suite(plan, args.data_dir, jax_worker, torch_worker)
    res: dict[str, Any] = {"quick": args.quick, "plan": asdict(plan), "section_seconds": {}}
    try:
        res["machine"] = jax_worker("machine")
        for section in wanted:
            print(f"{section} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            if section == "throughput":
                res["throughput"] = suite.throughput(with_matmul="flops" in wanted)
            elif section == "flops":
                res["flops"] = suite.flops(res.get("throughput", {}).get("50", {}).get("runs"))
            else:
                res[section] = getattr(suite, section)()
            res["section_seconds"][section] = time.perf_counter() - t0
    finally:
        for worker in (jax_worker, torch_worker):
            if worker is not None:
                worker.close()
        shutil.rmtree(own_cache, ignore_errors=True)
    res["targets"] = [asdict(t) for t in targets(res)]
    res["elapsed_s"] = time.perf_counter() - t_start
    res["other_load"] = other_load(cpu_start, own_start, res["elapsed_s"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "run.md").write_text(markdown(res))
    print(markdown(res) + f"\n(benchmark took {res['elapsed_s']:.0f} s; written to {out / 'run.json'} and run.md)")


if __name__ == "__main__":
    main()
