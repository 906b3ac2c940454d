"""Training: one pure, jitted ``train_step``, run many steps at a time inside ``lax.while_loop``.

The whole dataset lives on the device and each epoch's shuffle is drawn there. The host returns to
Python only at boundaries: logging (per-layer statistics), end of epoch (test evaluation) and a
progress tick. The chunk's length is a traced argument, so one compilation serves every chunk.
A step whose loss or gradient is not finite is not applied: the chunk stops there and the run is
recorded as diverged, with the statistics of the last finite parameters showing where it blew up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from initlab.config import RunConfig
from initlab.data import Dataset
from initlab.errors import ConfigError
from initlab.model import ModelSpec, NormState, Params, apply, init_params
from initlab.optimizers import LOSSES, build_optimizer
from initlab.stats import first_nonfinite_layer, make_layer_stats

# Longest stretch of steps between returns to Python, so the progress display stays live.
PROGRESS_CHUNK = 200


class TrainState(NamedTuple):
    """Everything that changes during training, as one pytree."""

    params: Params
    norm_state: NormState
    opt_state: optax.OptState
    step: jax.Array  # () int32: updates applied so far
    order: jax.Array  # (n_train,) int32: this epoch's shuffled example order
    data_key: jax.Array  # key of the shuffles (epoch e uses fold_in(data_key, e))


@dataclass(frozen=True)
class Schedule:
    """Step arithmetic of a run."""

    total_steps: int
    steps_per_epoch: int
    log_every: int

    def next_stop(self, step: int) -> int:
        """The next step at which the host must look: a log, an epoch end, the end, or a tick."""
        candidates = (
            (step // self.log_every + 1) * self.log_every,
            (step // self.steps_per_epoch + 1) * self.steps_per_epoch,
            self.total_steps,
            step + PROGRESS_CHUNK,
        )
        return min(candidates)

    def is_log(self, step: int) -> bool:
        return step % self.log_every == 0 or step == self.total_steps

    def is_eval(self, step: int) -> bool:
        return step % self.steps_per_epoch == 0 or step == self.total_steps


def make_schedule(cfg: RunConfig, n_train: int) -> Schedule:
    """Steps per epoch (the last partial batch is dropped) and the total number of steps."""
    b = cfg.train.batch_size
    if b > n_train:
        raise ConfigError(f"train.batch_size: {b} is more than the {n_train} training examples")
    spe = n_train // b
    total = cfg.train.steps if cfg.train.steps is not None else cfg.train.epochs * spe
    return Schedule(total, spe, cfg.log.every)


class TrainFns(NamedTuple):
    """The jitted pieces of a run, built once from its static choices."""

    init: Callable[[jax.Array], TrainState]
    chunk: Callable  # (state, x, y, n_steps) -> (state, ok, loss_sum, steps_done)
    evaluate: Callable  # (params, norm_state, x, y) -> (loss, accuracy)
    stats: Callable  # (params, norm_state, prev_params, x, y) -> {column: (depth + 1,)}


def make_train_fns(cfg: RunConfig, spec: ModelSpec, schedule: Schedule, n_train: int) -> TrainFns:
    """Build init, the training chunk, evaluation and statistics for one configuration."""
    loss_fn = LOSSES.get(cfg.train.loss, "train.loss")
    t = cfg.train
    optimizer = build_optimizer(t.optimizer, t.schedule, t.lr, schedule.total_steps, t.warmup_steps,
                                t.momentum, t.weight_decay)
    batch = t.batch_size
    spe = schedule.steps_per_epoch

    def init(key: jax.Array) -> TrainState:
        init_key, data_key = jax.random.split(key)
        params, norm_state = init_params(spec, cfg.model, init_key)
        order = jax.random.permutation(jax.random.fold_in(data_key, 0), n_train).astype(jnp.int32)
        return TrainState(params, norm_state, optimizer.init(params), jnp.zeros((), jnp.int32), order, data_key)

    def batch_loss(params, norm_state, xb, yb):
        logits, new_state, _ = apply(spec, params, norm_state, xb, train=True)
        return jnp.mean(loss_fn(logits, yb, spec.num_classes)), new_state

    def train_step(state: TrainState, x, y) -> tuple[TrainState, jax.Array, jax.Array]:
        """One update on the next mini-batch; returns (state, loss, finite)."""
        epoch, i = state.step // spe, state.step % spe
        order = jax.lax.cond(
            (i == 0) & (state.step > 0),
            lambda: jax.random.permutation(jax.random.fold_in(state.data_key, epoch), n_train).astype(jnp.int32),
            lambda: state.order,
        )
        idx = jax.lax.dynamic_slice(order, (i * batch,), (batch,))
        (loss, norm_state), grads = jax.value_and_grad(batch_loss, has_aux=True)(
            state.params, state.norm_state, x[idx], y[idx])
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new = TrainState(optax.apply_updates(state.params, updates), norm_state, opt_state,
                         state.step + 1, order, state.data_key)
        finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
        # A non-finite step is not applied: the last finite parameters show where the blow-up began.
        return jax.lax.cond(finite, lambda: new, lambda: state), loss, finite

    def chunk(state: TrainState, x, y, n_steps):
        """Up to ``n_steps`` steps; stops early at the first non-finite one."""

        def cond(carry):
            _, ok, _, done = carry
            return ok & (done < n_steps)

        def body(carry):
            st, _, loss_sum, done = carry
            st, loss, finite = train_step(st, x, y)
            return st, finite, loss_sum + jnp.where(finite, loss, 0.0), done + finite.astype(jnp.int32)

        carry = (state, jnp.array(True), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
        return jax.lax.while_loop(cond, body, carry)

    def evaluate(params, norm_state, x, y):
        logits, _, _ = apply(spec, params, norm_state, x, train=False)
        loss = jnp.mean(loss_fn(logits, y, spec.num_classes))
        return loss, jnp.mean(jnp.argmax(logits, axis=-1) == y)

    return TrainFns(jax.jit(init), jax.jit(chunk), jax.jit(evaluate), make_layer_stats(spec, loss_fn))


class Sink(Protocol):
    """Where a training run reports: storage and display implement these."""

    def metrics(self, row: dict[str, Any]) -> None: ...
    def layers(self, step: int, stats: dict[str, np.ndarray]) -> None: ...
    def checkpoint(self) -> None: ...
    def progress(self, step: int, total: int, info: dict[str, float]) -> None: ...


@dataclass
class TrainResult:
    """What a finished (or diverged) training run produced, beyond what it sent to the sink."""

    status: str  # completed | diverged
    steps: int
    total_steps: int
    steps_per_epoch: int
    compile_time_s: float
    train_time_s: float
    wall_time_s: float
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    divergence: dict[str, Any] | None = None
    init_stats: dict[str, np.ndarray] = field(default_factory=dict)
    last_stats: dict[str, np.ndarray] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _divergence(step: int, cause: str, stats: dict[str, np.ndarray]) -> dict[str, Any]:
    """The divergence record: step, first non-finite layer and direction, and a readable reason."""
    where = first_nonfinite_layer(stats)
    layer, direction = where if where else (None, None)
    detail = f"; {'activations' if direction == 'forward' else 'gradients'} first non-finite at layer {layer}" \
        if where else ""
    return {"step": step, "layer": layer, "direction": direction, "reason": cause + detail}


def device_info() -> dict[str, Any]:
    """The device JAX trains on (platform, kind, count)."""
    d = jax.devices()[0]
    return {"platform": d.platform, "kind": d.device_kind, "count": jax.device_count()}


def train(cfg: RunConfig, data: Dataset, sink: Sink) -> TrainResult:
    """Train ``cfg`` on ``data``, sending metrics rows, per-layer statistics and progress to ``sink``.

    Per-layer statistics are taken on the probe batch (the first ``data.probe_size`` training
    examples) at step 0, every ``log.every`` steps and at the last step; the test set is evaluated
    at step 0, at the end of each epoch and at the last step.
    """
    start = time.perf_counter()
    n_train = len(data.y_train)
    schedule = make_schedule(cfg, n_train)
    spec = ModelSpec.from_config(cfg.model, data.input_dim, data.num_classes)
    fns = make_train_fns(cfg, spec, schedule, n_train)

    x, y = jax.device_put(data.x_train), jax.device_put(data.y_train)
    x_test, y_test = jax.device_put(data.x_test), jax.device_put(data.y_test)
    probe_x, probe_y = x[: cfg.data.probe_size], y[: cfg.data.probe_size]
    state = fns.init(jax.random.PRNGKey(cfg.seed))

    t0 = time.perf_counter()
    chunk = fns.chunk.lower(state, x, y, jnp.int32(1)).compile()
    evaluate = fns.evaluate.lower(state.params, state.norm_state, x_test, y_test).compile()
    stats_fn = fns.stats.lower(state.params, state.norm_state, state.params, probe_x, probe_y).compile()
    compile_time = time.perf_counter() - t0

    result = TrainResult("completed", 0, schedule.total_steps, schedule.steps_per_epoch, compile_time, 0.0, 0.0,
                         device=device_info())
    prev_params = state.params

    def log_stats(step: int, st: TrainState) -> dict[str, np.ndarray]:
        nonlocal prev_params
        stats = _host(stats_fn(st.params, st.norm_state, prev_params, probe_x, probe_y))
        if step == 0:
            stats["update_ratio"] = np.full_like(stats["update_ratio"], np.nan)
        prev_params = st.params
        sink.layers(step, stats)
        return stats

    def evaluation(st: TrainState) -> tuple[float, float]:
        loss, acc = _host(evaluate(st.params, st.norm_state, x_test, y_test))
        return float(loss), float(acc)

    result.init_stats = result.last_stats = log_stats(0, state)
    test_loss, test_acc = evaluation(state)
    sink.metrics({"step": 0, "epoch": 0.0, "train_loss": float("nan"), "test_loss": test_loss,
                  "test_acc": test_acc, "wall_time": time.perf_counter() - start})
    result.best = {"test_acc": test_acc, "step": 0}
    result.final = {"train_loss": float("nan"), "test_loss": test_loss, "test_acc": test_acc}

    step, loss_sum, loss_count = 0, 0.0, 0
    while step < schedule.total_steps:
        target = schedule.next_stop(step)
        t1 = time.perf_counter()
        state, ok, chunk_loss, done = chunk(state, x, y, jnp.int32(target - step))
        ok, chunk_loss, done = bool(ok), float(chunk_loss), int(done)
        result.train_time_s += time.perf_counter() - t1
        step += done
        loss_sum, loss_count = loss_sum + chunk_loss, loss_count + done
        train_loss = loss_sum / loss_count if loss_count else float("nan")
        sink.progress(step, schedule.total_steps, {"loss": train_loss, "test_acc": result.final["test_acc"],
                                                   "steps_per_s": step / max(result.train_time_s, 1e-9)})
        if not ok:
            result.last_stats = log_stats(step, state)
            result.status = "diverged"
            result.divergence = _divergence(step, "non-finite loss or gradient", result.last_stats)
            sink.metrics({"step": step, "epoch": step / schedule.steps_per_epoch, "train_loss": train_loss,
                          "test_loss": float("nan"), "test_acc": float("nan"),
                          "wall_time": time.perf_counter() - start})
            result.final["train_loss"] = train_loss
            break
        logged, evaluated = schedule.is_log(step), schedule.is_eval(step)
        if logged:
            result.last_stats = log_stats(step, state)
            if first_nonfinite_layer(result.last_stats) is not None:
                result.status = "diverged"
                result.divergence = _divergence(step, "non-finite per-layer statistics", result.last_stats)
        if logged or evaluated:
            test_loss, test_acc = evaluation(state) if evaluated else (float("nan"), float("nan"))
            sink.metrics({"step": step, "epoch": step / schedule.steps_per_epoch, "train_loss": train_loss,
                          "test_loss": test_loss, "test_acc": test_acc, "wall_time": time.perf_counter() - start})
            result.final["train_loss"] = train_loss
            loss_sum, loss_count = 0.0, 0
            if evaluated:
                result.final.update(test_loss=test_loss, test_acc=test_acc)
                if test_acc > result.best["test_acc"]:
                    result.best = {"test_acc": test_acc, "step": step}
                sink.checkpoint()
        if result.status == "diverged":
            break
    result.steps = step
    result.wall_time_s = time.perf_counter() - start
    return result
