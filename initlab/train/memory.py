"""What a group of runs will need in memory, estimated before anything is allocated, and the
check that refuses one that cannot fit (a valid config such as depth 250 × width 2048 would
otherwise be killed silently by the OOM killer, or fail deep inside XLA).

Parameter and optimizer-state sizes are exact: their shapes come from ``jax.eval_shape`` of the
run's own initializer and optax optimizer, so nothing is drawn. The rest is a model of what a
training chunk holds (``initlab.train.loop``): the parameters at the previous log (the reference of
the update statistics), the gradient, and the new parameters and optimizer state beside the old
(``PARAM_COPIES``, ``OPT_COPIES``); the forward pass's pre-activations and activations and their
cotangents on the training batch and on the probe batch (``ACT_COPIES`` per unit and example),
and with ``pre_delta_abs_mean`` the probe's step-0 pre-activations; the datasets once.
``benchmarks/run.py --only memory`` compares the estimate with the measured peak.

The check compares the estimate with the memory the device has free: an accelerator's
``memory_stats`` (bytes_limit − bytes_in_use), or on CPU the smaller of the system's
MemAvailable and the cgroup's limit minus its usage (a container's budget, not the host's).
``INITLAB_MEMORY_CHECK=0`` (the CLI's ``--no-memory-check``) skips it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from initlab.errors import InitlabError

PARAM_COPIES = 4  # current, previous log's, gradient, updated
OPT_COPIES = 2  # current and updated optimizer state
ACT_COPIES = 4  # z and a, and their cotangents, per unit and example
CHECK_ENV = "INITLAB_MEMORY_CHECK"


@dataclass(frozen=True)
class Estimate:
    """Bytes a group of runs needs, by kind."""

    parameters: int  # all copies, the whole group
    optimizer: int
    activations: int
    data: int
    runs: int

    @property
    def total(self) -> int:
        """The bytes of the whole estimate."""
        return self.parameters + self.optimizer + self.activations + self.data

    def describe(self) -> str:
        """The estimate in one line: its total and its parts."""
        parts = {
            "parameters": self.parameters,
            "optimizer state": self.optimizer,
            "activations": self.activations,
            "data": self.data,
        }
        group = f" for {self.runs} runs trained together" if self.runs > 1 else ""
        return f"{gib(self.total)}{group} (" + ", ".join(f"{k} {gib(v)}" for k, v in parts.items()) + ")"


def gib(n: float) -> str:
    """``n`` bytes, readable: in GiB from 128 MiB, else in MiB."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


def _bytes(tree) -> int:
    return sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree_util.tree_leaves(tree))


def estimate(cfgs: Sequence, spec, optimizer, data) -> Estimate:
    """The estimate for ``cfgs`` (one batchable group) with model ``spec``, ``optimizer`` (the
    train functions' ``lr -> optax transformation``) and ``data`` (an ``initlab.data.datasets.Dataset``)."""
    from initlab.nn.formats import compute_dtype
    from initlab.train.build import init_params_traced

    cfg = cfgs[0]
    m, t = cfg.model, cfg.train
    params, _, _ = jax.eval_shape(lambda k: init_params_traced(spec, _no_scheme(m), k), jax.random.PRNGKey(0))
    opt = jax.eval_shape(lambda p: optimizer(np.float32(t.lr)).init(p), params)
    units = m.depth * m.width + data.num_classes
    compute = np.dtype(compute_dtype(m.dtype)).itemsize
    per_example = units * ACT_COPIES * max(compute, 4)  # statistics and cotangents in at least float32
    examples = t.batch_size + cfg.data.probe_size
    # pre_delta_abs_mean: the probe's step-0 pre-activations, float32, kept for the whole run
    reference = cfg.data.probe_size * units * 4 if "pre_delta_abs_mean" in cfg.log.stats else 0
    arrays = (data.x_train, data.y_train, data.x_test, data.y_test)
    g = len(cfgs)
    return Estimate(
        parameters=g * PARAM_COPIES * _bytes(params),
        optimizer=g * OPT_COPIES * _bytes(opt),
        activations=g * (examples * per_example + reference),
        data=sum(int(a.nbytes) for a in arrays),
        runs=g,
    )


def _no_scheme(m):
    """The model config with a per-layer initializer of the same shapes: a whole-network scheme
    (LSUV, Fixup, pre-training) refines values, never shapes, and may need data to run."""
    import dataclasses

    from initlab.nn.initializers import get_initializer

    return m if get_initializer(m.init).scheme is None else dataclasses.replace(m, init="he_normal", init_args={})


def available(device=None) -> tuple[int | None, str]:
    """Bytes free for a new allocation on ``device`` (default: JAX's first) and where that figure
    comes from; None when it cannot be told."""
    device = device or jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), f"{device.platform} memory"
        return None, device.platform
    figures = []
    meminfo = _read(Path("/proc/meminfo"))
    if meminfo:
        for line in meminfo.splitlines():
            if line.startswith("MemAvailable:"):
                figures.append((int(line.split()[1]) * 1024, "MemAvailable"))
    cgroup = _cgroup_free()
    if cgroup is not None:
        figures.append((cgroup, "the cgroup's memory limit"))
    if not figures:
        return None, "cpu"
    free, source = min(figures)
    return free, f"cpu memory ({source})"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _cgroup_free() -> int | None:
    """limit − usage of this process's cgroup (v2, else v1), None without a limit."""
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        limit, usage = _read(Path("/sys/fs/cgroup") / limit_file), _read(Path("/sys/fs/cgroup") / usage_file)
        if limit is None or usage is None:
            continue
        limit = limit.strip()
        if not limit.isdigit() or int(limit) >= 2**60:  # "max", or v1's "no limit" sentinel
            return None
        return int(limit) - int(usage.strip() or 0)
    return None


def check(est: Estimate, free: int | None = None, where: str | None = None) -> None:
    """InitlabError when ``est`` does not fit in the free memory (``available()`` by default)."""
    if os.environ.get(CHECK_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return
    if free is None:
        free, where = available()
    if free is None or est.total <= free:
        return
    raise InitlabError(
        f"this would need about {est.describe()}, more than the {gib(max(free, 0))} free in "
        f"{where}; lower model.width, model.depth or train.batch_size (or --max-group for a "
        f"sweep), or skip this check with --no-memory-check ({CHECK_ENV}=0)"
    )
