"""Hand-written baselines that `benchmarks/run.py` times against initlab, doing the same training:
an MLP of ``depth`` ReLU hidden layers of ``width`` units and a linear output layer, He-normal
weights and zero biases, mean softmax cross-entropy, plain SGD at a constant learning rate, batches
drawn from a shuffled order of the training set (reshuffled each epoch, last partial batch dropped).

- ``bare_jax_steps_per_s``: the minimal JAX loop, with no statistics at all. Hidden layers 2..depth
  are stacked and run under ``lax.scan`` (as in initlab); each epoch's permutation is drawn on the
  device (epoch 0's before the clock starts, as initlab draws it at initialization) and the epoch's
  steps run in one jitted ``lax.fori_loop``; compiled ahead of time, then timed (its first
  execution included, as in initlab's figure).
- ``torch_hooks_steps_per_s``: a minimal PyTorch eager loop (CPU) with forward/backward hooks that
  collect, per layer, the pre-activation variance, the activation variance and the variance of the
  back-propagated gradient dℓ/dz of each example's loss, three of the variances initlab logs, every
  ``log_every`` steps: with ``stats_on="train_batch"`` during that training step's own forward and
  backward pass (the usual hooks loop), with ``stats_on="probe"`` in an extra forward/backward pass
  of the probe batch (the first ``probe_size`` training examples), as initlab's two
  ``log.stats_on`` settings do. Needs the ``bench`` extra (``pip install -e ".[bench]"``).

Both return training steps per second over ``steps`` steps, after compilation (JAX) or a few
warm-up steps (PyTorch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Workload:
    """What every arm trains: the network, the batch and how long."""

    depth: int
    width: int = 256
    batch_size: int = 128
    steps: int = 300
    lr: float = 0.01
    log_every: int = 10
    probe_size: int = 512
    stats_on: str = "train_batch"  # where the per-layer statistics are taken: train_batch | probe
    seed: int = 0
    histograms: int = 0  # initlab's log.histograms (linear bins; 0: off, its default)
    jacobian: int = 4  # initlab's log.jacobian (probe examples of the spectrum at init and end; its default)
    dtype: str = "float32"  # initlab's model.dtype (the number format of the pass)
    stats: tuple[str, ...] | None = None  # initlab's log.stats (None: its default)
    parameterization: str = "standard"  # initlab's model.parameterization (mup: base width = width / 4)

    def parameters(self, input_dim: int, num_classes: int) -> int:
        """Weights and biases of the MLP."""
        w, d = self.width, self.depth
        return (input_dim * w + w) + (d - 1) * (w * w + w) + (w * num_classes + num_classes)

    def flops_per_step(self, input_dim: int, num_classes: int) -> float:
        """The usual estimate of a training step's work: 6 × batch × parameters (forward 2, backward 4)."""
        return 6.0 * self.batch_size * self.parameters(input_dim, num_classes)


def bare_jax_steps_per_s(w: Workload, x_train: np.ndarray, y_train: np.ndarray) -> float:
    """Training steps per second of the minimal JAX loop (no statistics, no divergence guard)."""
    import jax
    import jax.numpy as jnp
    import optax

    n, input_dim = x_train.shape
    num_classes = int(y_train.max()) + 1
    spe = n // w.batch_size
    he = jax.nn.initializers.he_normal()
    k_in, k_hid, k_out, data_key = jax.random.split(jax.random.PRNGKey(w.seed), 4)
    params = {
        "inp": {"w": he(k_in, (input_dim, w.width)), "b": jnp.zeros(w.width)},
        "hidden": {
            "w": jax.vmap(lambda k: he(k, (w.width, w.width)))(jax.random.split(k_hid, w.depth - 1)),
            "b": jnp.zeros((w.depth - 1, w.width)),
        },
        "out": {"w": he(k_out, (w.width, num_classes)), "b": jnp.zeros(num_classes)},
    }
    opt = optax.sgd(w.lr)

    def loss_fn(p, xb, yb):
        h = jax.nn.relu(xb @ p["inp"]["w"] + p["inp"]["b"])
        h, _ = jax.lax.scan(lambda h, lp: (jax.nn.relu(h @ lp["w"] + lp["b"]), None), h, p["hidden"])
        logits = h @ p["out"]["w"] + p["out"]["b"]
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

    def steps(p, opt_state, x, y, order, n_steps):
        """``n_steps`` steps on the batches of one epoch's ``order``, starting at its first batch."""

        def step(i, carry):
            p, opt_state, loss_sum = carry
            idx = jax.lax.dynamic_slice(order, (i * w.batch_size,), (w.batch_size,))
            loss, grads = jax.value_and_grad(loss_fn)(p, x[idx], y[idx])
            updates, opt_state = opt.update(grads, opt_state, p)
            return optax.apply_updates(p, updates), opt_state, loss_sum + loss

        return jax.lax.fori_loop(0, n_steps, step, (p, opt_state, jnp.zeros(())))

    x, y = jax.device_put(x_train), jax.device_put(y_train)
    opt_state = opt.init(params)
    shuffle = jax.jit(lambda e: jax.random.permutation(jax.random.fold_in(data_key, e), n).astype(jnp.int32))
    order = shuffle(0)  # epoch 0's order is drawn before the clock starts, as initlab does at initialization
    run = jax.jit(steps).lower(params, opt_state, x, y, order, jnp.int32(1)).compile()
    jax.block_until_ready((x, y, params, order))
    t0 = time.perf_counter()
    done = 0
    for e in range(-(-w.steps // spe)):
        if e > 0:
            order = shuffle(e)
        n_steps = min(spe, w.steps - done)
        params, opt_state, loss_sum = run(params, opt_state, x, y, order, jnp.int32(n_steps))
        done += n_steps
    jax.block_until_ready((params, loss_sum))
    elapsed = time.perf_counter() - t0
    if not np.isfinite(float(loss_sum)):
        raise RuntimeError("bare JAX baseline diverged")
    return w.steps / elapsed


class _VarianceHooks:
    """Forward/backward hooks on an ``nn.Sequential`` MLP that record, between ``start`` and
    ``finish``, each layer's pre-activation variance, activation variance and dℓ/dz variance (as
    0-d tensors)."""

    def __init__(self, model) -> None:
        import torch

        self.active = False
        self.grad_scale = 1.0
        self.pre: list = []
        self.act: list = []
        self.grad: dict[int, object] = {}
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        for i, lin in enumerate(linears):
            lin.register_forward_hook(self._on_linear(i, last=i == len(linears) - 1))
        for m in model:
            if isinstance(m, torch.nn.ReLU):
                m.register_forward_hook(self._on_relu)

    def _on_linear(self, i: int, last: bool):
        def hook(module, inputs, z):
            if not self.active:
                return
            self.pre.append(z.detach().var(unbiased=False))
            if last:  # the output layer has no nonlinearity: its "activation" is z itself
                self.act.append(self.pre[-1])
            scale = self.grad_scale
            z.register_hook(lambda g: self.grad.__setitem__(i, (g * scale).var(unbiased=False)))

        return hook

    def _on_relu(self, module, inputs, a):
        if self.active:
            self.act.append(a.detach().var(unbiased=False))

    def start(self, grad_scale: float) -> None:
        """Record the next forward/backward pass; the loss's gradients are multiplied by
        ``grad_scale`` (the batch size for a mean loss: each example's own dℓ/dz)."""
        self.active, self.grad_scale, self.pre, self.act, self.grad = True, grad_scale, [], [], {}

    def finish(self) -> np.ndarray:
        """Stop recording; returns (3, layers): pre, act, grad."""
        import torch

        self.active = False
        grads = [self.grad[i] for i in range(len(self.pre))]
        return torch.stack([torch.stack(self.pre), torch.stack(self.act), torch.stack(grads)]).numpy()

    def collect(self, model, loss_fn, x, y) -> np.ndarray:
        """An extra forward and backward pass on (x, y) (summed loss) with the hooks on."""
        self.start(1.0)
        try:
            loss_fn(model(x), y, reduction="sum").backward()
        finally:
            self.active = False
        return self.finish()


def torch_hooks_steps_per_s(
    w: Workload,
    x_train: np.ndarray,
    y_train: np.ndarray,
    warmup: int = 5,
    max_seconds: float = float("inf"),
    hooks: bool = True,
) -> float:
    """Training steps per second of a PyTorch eager loop (CPU) with per-layer variance hooks on every
    ``log_every``-th step: in that step's forward/backward pass (``w.stats_on == "train_batch"``) or
    in a pass of the probe batch before it (``"probe"``). The step-0 statistics and ``warmup``
    steps come before the clock starts. Stops early, at a multiple of ``log_every`` steps, once
    ``max_seconds`` have passed: PyTorch's OpenMP threads slow down by orders of magnitude when
    another process competes for the cores, and the suite must still finish. ``hooks=False``:
    the same loop with no hooks and no statistics at all (bare PyTorch, the framework's floor)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(w.seed)
    n, input_dim = x_train.shape
    num_classes = int(y_train.max()) + 1
    spe = n // w.batch_size
    sizes = [input_dim] + [w.width] * w.depth
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(w.width, num_classes))
    for m in layers:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # N(0, 2 / fan_in)
            torch.nn.init.zeros_(m.bias)
    model = torch.nn.Sequential(*layers)
    if not hooks:
        w = replace(w, log_every=w.steps + warmup + 1, stats_on="probe")  # never logs
    hooks = _VarianceHooks(model) if hooks else None
    opt = torch.optim.SGD(model.parameters(), lr=w.lr)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    probe_x, probe_y = x[: w.probe_size], y[: w.probe_size]
    gen = torch.Generator().manual_seed(w.seed)
    order = torch.randperm(n, generator=gen)

    def train_step(step: int, log: bool = False) -> None:
        nonlocal order
        i = step % spe
        if i == 0 and step > 0:
            order = torch.randperm(n, generator=gen)
        idx = order[i * w.batch_size : (i + 1) * w.batch_size]
        opt.zero_grad(set_to_none=True)
        if log:
            hooks.start(grad_scale=float(w.batch_size))
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        if log:
            stats.append(hooks.finish())
        opt.step()

    on_batch = w.stats_on == "train_batch"
    stats = [] if on_batch or hooks is None else [hooks.collect(model, F.cross_entropy, probe_x, probe_y)]
    for step in range(warmup):
        train_step(step, log=on_batch and step == 0)
    t0 = time.perf_counter()
    done = 0
    while done < w.steps:
        log = done > 0 and done % w.log_every == 0
        if log:
            if time.perf_counter() - t0 > max_seconds:
                break
            if not on_batch:
                stats.append(hooks.collect(model, F.cross_entropy, probe_x, probe_y))
        train_step(warmup + done, log=log and on_batch)
        done += 1
    elapsed = time.perf_counter() - t0
    if not all(np.isfinite(s).all() for s in stats):
        raise RuntimeError("PyTorch baseline produced non-finite statistics")
    return done / elapsed


def torch_matmul_flops(m: int, k: int, n: int, seconds: float = 0.5) -> float:
    """FLOP/s of eager float32 (m, k) @ (k, n) matmuls in PyTorch (CPU), each call as a training
    loop makes it: ``torch.mm`` into a preallocated output, timed over about ``seconds``."""
    import torch

    a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    for _ in range(5):
        torch.mm(a, b, out=out)
    calls, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for _ in range(10):
            torch.mm(a, b, out=out)
        calls += 10
    return 2.0 * m * k * n * calls / elapsed


def jax_matmul_flops(m: int, k: int, n: int, seconds: float = 0.5) -> float:
    """FLOP/s of float32 (m, k) @ (k, n) matmuls in JAX on the default device: for a square matmul,
    one jitted call per matmul; otherwise (k == n, a layer's shape) a chain of them inside one
    jitted ``lax.fori_loop``, as initlab's training chunk runs its layers."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (m, k), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (k, n), jnp.float32) / np.sqrt(k)
    reps = 1 if m == k == n else 100
    if reps == 1:
        f = jax.jit(jnp.matmul).lower(a, b).compile()
    else:
        assert k == n, "a chain of matmuls needs a square right-hand side"
        f = jax.jit(lambda a, b: jax.lax.fori_loop(0, reps, lambda i, c: c @ b, a)).lower(a, b).compile()
    f(a, b).block_until_ready()
    calls, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        f(a, b).block_until_ready()
        calls += 1
    return 2.0 * m * k * n * reps * calls / elapsed
