"""Training: one pure, jitted ``train_step``, run many steps at a time inside a ``lax`` loop, for a
*group* of runs at once.

A group is one or more runs that share every shape and static choice and differ only in seed,
initializer, init arguments or learning rate (``batch_key``). Their parameters are initialized one
by one, stacked, and trained together as one ``jax.vmap``-ed computation: a grid of inits × seeds
for one architecture compiles once and trains in one pass. A single `initlab run` is a group of
one, through the same code, so a run trained alone and inside a sweep give the same numbers.

The dataset lives on the device and each epoch's shuffle is drawn there. Logging stays on the
device too: a chunk of up to ``PROGRESS_CHUNK`` steps takes the per-layer statistics at every
logged step inside the loop (on the probe batch or, measured inside the logged step itself, on its
mini-batch) into a buffer of up to ``LOG_BUFFER`` tables, and keeps every step's loss. The host
returns to Python only at the end of a chunk: an epoch end (test evaluation), the last step, a
full buffer or a progress tick; it then sends the chunk's statistics and metrics rows to the
sinks. The chunk length is a traced argument, so one compilation serves every chunk. Each chunk is
checked once at its end (losses, parameters and the statistics' signal columns finite); a chunk in
which a run went non-finite is replayed step by step, and the step whose statistics, loss or new
parameters are not finite is not applied and freezes that run (the others keep their result); the
statistics of its last finite parameters show where it blew up.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from initlab.config import RunConfig, to_dict
from initlab.data import Dataset
from initlab.errors import ConfigError
from initlab.initializers import Trace
from initlab.model import ModelSpec, NormState, Params, apply, init_params_traced
from initlab.optimizers import build_optimizer, make_loss
from initlab.regularizers import max_norm
from initlab.stats import (COLUMNS, first_nonfinite_layer, from_table, loss_and_grads, signal_finite, summarize,
                           to_table, update_ratios)

# Longest stretch of steps between returns to Python, so the progress display stays live.
PROGRESS_CHUNK = 200
# Most statistics tables a chunk keeps on the device before it returns them (bounds its memory).
LOG_BUFFER = 32
# fold_in index of the dropout masks' stream in a run's data key (epochs use 0, 1, 2, ...).
DROPOUT_STREAM = 2**31 - 1

# Fields in which runs of one group may differ: they only change the initial values and the
# learning rate, not the compiled program.
BATCHABLE = ("name", "seed", "model.init", "model.init_args", "model.bias_init", "model.bias_init_args",
             "train.lr", "log.out")


def batch_key(cfg: RunConfig) -> str:
    """Runs with equal keys can train together in one vmapped group."""
    import json

    d = to_dict(cfg)
    for dotted in BATCHABLE:
        section, _, leaf = dotted.rpartition(".")
        (d[section] if section else d).pop(leaf)
    return json.dumps(d, sort_keys=True)


class TrainState(NamedTuple):
    """Everything of one run that changes during training, as one pytree (stacked over a group)."""

    params: Params
    norm_state: NormState
    opt_state: optax.OptState
    order: jax.Array  # (n_train,) int32: this epoch's shuffled example order
    data_key: jax.Array  # key of the shuffles (epoch e uses fold_in(data_key, e))
    lr: jax.Array  # () float32: peak learning rate, traced so runs with different rates share a program


@dataclass(frozen=True)
class Schedule:
    """Step arithmetic of a run."""

    total_steps: int
    steps_per_epoch: int
    log_every: int

    def next_stop(self, step: int) -> int:
        """The next step at which the host must look: an epoch end, the end, a tick, or the step
        after which a chunk from ``step`` would hold more than ``LOG_BUFFER`` statistics tables."""
        candidates = (
            (step // self.steps_per_epoch + 1) * self.steps_per_epoch,
            self.total_steps,
            step + PROGRESS_CHUNK,
            self.first_log(step) + LOG_BUFFER * self.log_every,
        )
        return min(candidates)

    def first_log(self, step: int) -> int:
        """The first multiple of ``log_every`` at or after ``step``."""
        return -(-step // self.log_every) * self.log_every

    def logs_between(self, start: int, stop: int) -> list[int]:
        """The logged steps a chunk from ``start`` to ``stop`` measures in order (its buffer slots):
        the multiples of ``log_every`` in [start, stop)."""
        return list(range(self.first_log(start), stop, self.log_every))

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
    """The jitted pieces of a group, built once from its static choices; each maps over runs."""

    # (states, prev_params, step0, x, y, n_steps, alive, measure_end)
    #   -> (states, prev_params, ok, losses, done, tables); n_steps 0 with measure_end: a measurement only
    chunk: Callable
    guarded_chunk: Callable  # the same, with every step checked (replays a chunk that failed its end check)
    evaluate: Callable  # (params, norm_state, x, y) -> (loss, accuracy), each (runs,)
    optimizer: Callable[[Any], optax.GradientTransformation]


def make_train_fns(cfg: RunConfig, spec: ModelSpec, schedule: Schedule, n_train: int, n_runs: int = 1) -> TrainFns:
    """Build the training chunk, evaluation and statistics for a group sharing ``cfg``'s static choices."""
    t = cfg.train
    loss_fn = make_loss(t.loss, t.target_scale)
    batch = t.batch_size
    spe = schedule.steps_per_epoch
    every = schedule.log_every
    probe_size = cfg.data.probe_size
    on_batch = cfg.log.stats_on == "train_batch"
    table_shape = (len(COLUMNS), spec.num_layers)

    def optimizer(lr) -> optax.GradientTransformation:
        # Every optax optimizer here applies the learning rate as its last scaling, so a traced
        # per-run rate gives exactly the update a constant one would.
        return build_optimizer(t.optimizer, t.schedule, lr, schedule.total_steps, t.warmup_steps,
                               t.momentum, t.weight_decay)

    def batch_at(state: TrainState, step):
        """The example order in effect at ``step`` (a new shuffle at each epoch start) and the
        indices of its mini-batch."""
        epoch, i = step // spe, step % spe
        order = jax.lax.cond(  # the step is shared by the group, so this stays a real branch
            (i == 0) & (step > 0),
            lambda: jax.random.permutation(jax.random.fold_in(state.data_key, epoch), n_train).astype(jnp.int32),
            lambda: state.order,
        )
        return order, jax.lax.dynamic_slice(order, (i * batch,), (batch,))

    def minibatch(state: TrainState, step, x, y):
        """``step``'s mini-batch of ``state``'s run: (example order, (inputs, labels, dropout key))."""
        order, idx = batch_at(state, step)
        drop_key = jax.random.fold_in(jax.random.fold_in(state.data_key, DROPOUT_STREAM), step)
        return order, (x[idx], y[idx], drop_key)

    def forward_backward(params, norm_state, batch, update_ratio=None):
        """The forward/backward pass of ``params`` on ``batch`` (inputs, labels, dropout key or
        None): (loss, gradient, new norm state, table). Given the layers' ``update_ratio`` since the
        previous log, the same pass also yields the per-layer statistics table of these weights on
        this batch, else table is None."""
        xb, yb, key = batch
        loss, norm_state, grads, raw = loss_and_grads(spec, loss_fn, params, norm_state, xb, yb, key=key,
                                                      collect=update_ratio is not None)
        table = None if raw is None else to_table(summarize(params, update_ratio, grads, raw))
        return loss, grads, norm_state, table

    def update(state: TrainState, grads, norm_state, order) -> TrainState:
        updates, opt_state = optimizer(state.lr).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if t.max_norm is not None:
            params = max_norm(params, t.max_norm)
        return state._replace(params=params, norm_state=norm_state, opt_state=opt_state, order=order)

    def train_step(state: TrainState, step, x, y):
        """One update of one run on its next mini-batch: (state, loss)."""
        order, batch = minibatch(state, step, x, y)
        loss, grads, norm_state, _ = forward_backward(state.params, state.norm_state, batch)
        return update(state, grads, norm_state, order), loss

    def finite(loss, params):
        # The new parameters, not just the loss: an overflowing step (huge lr) must not be applied either.
        return jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(params))

    def select(ok, a, b):
        return jax.tree.map(lambda u, v: jnp.where(ok, u, v), a, b)

    def steps(state: TrainState, prev_params, step0, x, y, n_steps, alive, measure_end, guard: bool):
        """``n_steps`` steps of one run from the group's step ``step0`` and, with ``measure_end``,
        a measurement of the state they end in (``n_steps`` 0: a measurement only).

        Every multiple of ``log_every`` among the steps, and the end with ``measure_end``, takes
        the per-layer statistics of the state it starts from into the next slot of a
        (LOG_BUFFER + 1, columns, depth + 1) buffer, and ``prev_params`` moves to those weights
        (the reference of the next update ratios): on the probe (the first ``probe_size`` training
        examples) or, with train_batch, inside the step's own forward/backward pass (the end's
        measurement is such a step, its update dropped). Every step's loss goes into a
        (PROGRESS_CHUNK + 1,) buffer.

        Unguarded (the fast path), the steps run unchecked and the chunk is checked once at its
        end: losses, final parameters and the statistics' signal columns finite. A run that fails
        reports ok=False; the caller then replays the chunk guarded from the same start, where
        each step is checked and a run meeting a non-finite step keeps its last finite state (its
        statistics at that step, if it is a logged one, are kept for the record), so the per-step
        checks are only paid after a blow-up. A run that is not ``alive`` keeps its state when guarded;
        unguarded it trains on, its results unused.
        Returns (state, prev_params, ok, losses, steps done, tables)."""
        tables = jnp.zeros((LOG_BUFFER + 1, *table_shape), jnp.float32)
        losses = jnp.zeros((PROGRESS_CHUNK + 1,), jnp.float32)
        n_iter = n_steps + jnp.asarray(measure_end).astype(n_steps.dtype)  # the end's measurement is one more

        def check(ok, done, st, prev, new, new_prev, loss, signal_ok, stepped):
            """Guarded: the step is applied only if its statistics, loss and parameters are finite."""
            ok = ok & signal_ok & (~stepped | finite(loss, new.params))
            st, prev = select(ok, (new, new_prev), (st, prev))
            return ok, done + (ok & stepped).astype(jnp.int32), st, prev

        def measurement(j, st, prev, ok, done, losses, tables, slot):
            """A segment's start: at a multiple of ``log_every``, or at the end's measurement
            (j == n_steps, where nothing is trained), the statistics of ``st`` go into the next
            slot: from a pass of the probe, or from the logged step's own pass. With train_batch
            the segment's first step is taken here whether or not it is logged (a segment that
            does not start at a log, the chunk's first, takes it unlogged). The branch is shared by
            the group: a real branch, not both sides. Returns the carry and the first step still
            to take."""
            s = step0 + j
            last = j == n_steps
            is_log = (s % every == 0) | last

            def record(tables, table):
                return jax.lax.dynamic_update_index_in_dim(tables, table, slot, 0), signal_finite(table)

            # prev_params move to this step's weights, and the update ratios they were the reference
            # of are taken, outside the branch, and the branch reads the moved copy; the update is
            # applied outside it too. Ordered so by data, XLA moves and updates the weights in place
            # instead of copying the weights and prev_params at every segment (one run on the
            # training batch: temporaries 3.0 -> 1.2 copies of the weights; a group of 3: 4.9 -> 2.9).
            update_ratio = update_ratios(st.params, prev)
            new_prev = select(is_log, st.params, prev)
            if on_batch:
                order, batch = minibatch(st, s, x, y)

                def logged(at_log, params, tables):  # at_log: the weights, as moved to prev_params
                    loss, grads, norm_state, table = forward_backward(at_log, st.norm_state, batch, update_ratio)
                    return (loss, grads, norm_state, *record(tables, table))

                def plain(at_log, params, tables):
                    return (*forward_backward(params, st.norm_state, batch)[:3], tables, jnp.bool_(True))

                loss, grads, norm_state, tables, signal_ok = jax.lax.cond(is_log, logged, plain, new_prev, st.params,
                                                                          tables)
                # the segment's first step; the end's measurement (j == n_steps) is not applied
                new = select(last, st, update(st, grads, norm_state, order))
                stepped = ~last
                losses = losses.at[j].set(jnp.where(stepped, loss, 0.0))
            else:
                def logged(at_log, tables):
                    probe = (x[:probe_size], y[:probe_size], None)
                    return record(tables, forward_backward(at_log, st.norm_state, probe, update_ratio)[3])

                tables, signal_ok = jax.lax.cond(is_log, logged, lambda at_log, tables: (tables, jnp.bool_(True)),
                                                 new_prev, tables)
                new, loss, stepped = st, jnp.zeros((), jnp.float32), jnp.bool_(False)
            if guard:
                ok, done, st, prev = check(ok, done, st, prev, new, new_prev, loss, signal_ok, stepped)
            else:
                st, prev, ok = new, new_prev, ok & signal_ok
            return (st, prev, ok, done, losses, tables, slot + is_log.astype(jnp.int32)), j + stepped.astype(j.dtype)

        def plain_steps(j0, j1, st, ok, done, losses):
            """Plain steps j0..j1-1, the loop body a bare training step."""

            def body(j, carry):
                st, ok, done, losses = carry
                new, loss = train_step(st, step0 + j, x, y)
                losses = losses.at[j].set(loss)
                if guard:
                    ok, done, st, _ = check(ok, done, st, (), new, (), loss, jnp.bool_(True), jnp.bool_(True))
                    return st, ok, done, losses
                return new, ok, done, losses

            return jax.lax.fori_loop(j0, j1, body, (st, ok, done, losses))

        def segment(carry):
            """From step j: its measurement, if any, then plain steps up to the next log or the chunk's end."""
            *inner, j = carry
            (st, prev, ok, done, losses, tables, slot), first = measurement(j, *inner)
            s = step0 + j
            end = jnp.minimum(n_steps, (s // every + 1) * every - step0)  # the next log, or the chunk's end
            st, ok, done, losses = plain_steps(first, end, st, ok, done, losses)
            return st, prev, ok, done, losses, tables, slot, jnp.where(j < n_steps, end, j + 1)

        carry = (state, prev_params, alive, jnp.zeros((), jnp.int32), losses, tables, jnp.zeros((), jnp.int32),
                 jnp.zeros((), n_steps.dtype))
        st, prev, ok, done, losses, tables, _, _ = jax.lax.while_loop(lambda c: c[-1] < n_iter, segment, carry)
        if not guard:
            ok = ok & finite(jnp.sum(losses), st.params)
            done = jnp.where(alive, n_steps, 0).astype(jnp.int32)
        # A run that is not alive trains on here, its results unused: keeping its state would
        # take one more copy of the weights (the select's output beside the loop's).
        return st, prev, ok, losses, done, tables

    def evaluate(params, norm_state, x, y):
        logits, _, _ = apply(spec, params, norm_state, x, train=False)
        loss = jnp.mean(loss_fn(logits, y, spec.num_classes))
        return loss, jnp.mean(jnp.argmax(logits, axis=-1) == y)

    chunk_axes = (True, True, False, False, False, False, True, False)
    return TrainFns(
        chunk=jax.jit(over_runs(functools.partial(steps, guard=False), chunk_axes, n_runs)),
        guarded_chunk=jax.jit(over_runs(functools.partial(steps, guard=True), chunk_axes, n_runs)),
        evaluate=jax.jit(over_runs(evaluate, (True, True, False, False), n_runs)),
        optimizer=optimizer,
    )


def over_runs(fn: Callable, per_run: Sequence[bool], n_runs: int) -> Callable:
    """``fn`` mapped over the leading run axis of the arguments flagged in ``per_run``.

    A group of one runs ``fn`` itself on the squeezed arguments: vmap over an axis of size 1 would
    turn every matmul into a batched one, which XLA's CPU backend runs ~25% slower.
    """
    if n_runs > 1:
        return jax.vmap(fn, in_axes=tuple(0 if p else None for p in per_run))

    def single(*args):
        squeezed = [jax.tree.map(lambda a: a[0], a) if p else a for a, p in zip(args, per_run)]
        return jax.tree.map(lambda a: a[None], fn(*squeezed))

    return single


def init_state(cfg: RunConfig, spec: ModelSpec, fns: TrainFns, x_train: jax.Array) -> tuple[TrainState, Trace | None]:
    """One run's initial state (parameters from its own initializer and seed; data-dependent
    initializers see ``x_train``) and its initializer's trace."""
    n_train = x_train.shape[0]
    init_key, data_key = jax.random.split(jax.random.PRNGKey(cfg.seed))
    params, norm_state, trace = init_params_traced(spec, cfg.model, init_key, x_train)
    lr = jnp.asarray(cfg.train.lr, jnp.float32)
    order = jax.random.permutation(jax.random.fold_in(data_key, 0), n_train).astype(jnp.int32)
    return TrainState(params, norm_state, fns.optimizer(lr).init(params), order, data_key, lr), trace


class Sink(Protocol):
    """Where a training run reports: storage and display implement these."""

    def metrics(self, row: dict[str, Any]) -> None: ...
    def layers(self, step: int, stats: dict[str, np.ndarray]) -> None: ...
    def checkpoint(self) -> None: ...
    def progress(self, step: int, total: int, info: dict[str, float]) -> None: ...
    def init_trace(self, trace: Trace) -> None: ...


@dataclass
class TrainResult:
    """What a finished (or diverged) training run produced, beyond what it sent to its sink."""

    status: str  # completed | diverged
    steps: int
    total_steps: int
    steps_per_epoch: int
    compile_time_s: float
    train_time_s: float  # training steps and per-layer statistics, after compilation
    wall_time_s: float
    group_size: int = 1
    init_time_s: float = 0.0  # drawing (and, for LSUV or pre-training, fitting) the initial parameters
    init_trace_file: str | None = None  # the initializer's trace in the run folder, if it keeps one
    input_dim: int = 0
    probe_q0: float = float("nan")  # mean squared input of the probe batch: mean-field theory's q⁰
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    divergence: dict[str, Any] | None = None
    history: dict[str, list[float]] = field(default_factory=lambda: {"step": [], "test_acc": [], "test_loss": []})
    init_stats: dict[str, np.ndarray] = field(default_factory=dict)
    last_stats: dict[str, np.ndarray] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)


    def record_eval(self, step: int, test_loss: float, test_acc: float) -> None:
        """Keep the test-set curve (one point per evaluation) for reports."""
        self.history["step"].append(step)
        self.history["test_loss"].append(test_loss)
        self.history["test_acc"].append(test_acc)


def device_info() -> dict[str, Any]:
    """The device JAX trains on (platform, kind, count)."""
    d = jax.devices()[0]
    return {"platform": d.platform, "kind": d.device_kind, "count": jax.device_count()}


def _divergence(step: int, cause: str, stats: dict[str, np.ndarray]) -> dict[str, Any]:
    """The divergence record: step, first non-finite layer and direction, and a readable reason."""
    where = first_nonfinite_layer(stats)
    layer, direction = where if where else (None, None)
    detail = f"; {'activations' if direction == 'forward' else 'gradients'} first non-finite at layer {layer}" \
        if where else ""
    return {"step": step, "layer": layer, "direction": direction, "reason": cause + detail}


def _pick(mask: np.ndarray, a: Any, b: Any) -> Any:
    """Per run (leading axis): ``a`` where ``mask``, else ``b``."""
    m = jnp.asarray(mask)
    return jax.tree.map(lambda u, v: jnp.where(m.reshape(m.shape + (1,) * (u.ndim - 1)), u, v), a, b)


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def train(cfg: RunConfig, data: Dataset, sink: Sink) -> TrainResult:
    """Train one configuration (a group of one); see ``train_group``."""
    return train_group([cfg], data, [sink])[0]


def train_group(cfgs: Sequence[RunConfig], data: Dataset, sinks: Sequence[Sink]) -> list[TrainResult]:
    """Train runs that share a ``batch_key`` together on ``data``; each run reports to its sink.

    Per-layer statistics are taken at step 0, every ``log.every`` steps and at the last step, on
    the probe batch (the first ``data.probe_size`` training examples) or, with ``log.stats_on:
    train_batch``, inside the logged step's own forward/backward pass; a metrics row (training
    loss since the previous row) is written at each of those steps and at each epoch end, where
    the test set is evaluated (and at step 0). A run that diverges stops there and is reported as
    diverged; the rest of the group trains on.
    """
    start = time.perf_counter()
    keys = {batch_key(c) for c in cfgs}
    if len(keys) != 1:
        raise ValueError("train_group needs runs that differ only in " + ", ".join(BATCHABLE))
    cfg, n_runs = cfgs[0], len(cfgs)
    n_train = len(data.y_train)
    schedule = make_schedule(cfg, n_train)
    spec = ModelSpec.from_config(cfg.model, data.input_dim, data.num_classes)
    fns = make_train_fns(cfg, spec, schedule, n_train, n_runs)

    x, y = jax.device_put(data.x_train), jax.device_put(data.y_train)
    x_test, y_test = jax.device_put(data.x_test), jax.device_put(data.y_test)
    states, trace_files, init_times = [], [], []
    for c, sink in zip(cfgs, sinks):
        t_init = time.perf_counter()
        st, trace = init_state(c, spec, fns, x)
        init_times.append(time.perf_counter() - t_init)
        states.append(st)
        trace_files.append(None if trace is None else trace.file)
        if trace is not None:
            sink.init_trace(trace)
    state = _stack(states)
    alive = np.ones(n_runs, bool)

    t0 = time.perf_counter()
    # Host scalars and masks go in as numpy values: building jax arrays for them costs more than a
    # small network's training step.
    chunk = fns.chunk.lower(state, state.params, np.int32(0), x, y, np.int32(1), alive.copy(), np.True_).compile()
    evaluate = fns.evaluate.lower(state.params, state.norm_state, x_test, y_test).compile()
    compile_time = time.perf_counter() - t0

    probe_q0 = float(jnp.mean(jnp.square(x[: cfg.data.probe_size])))
    results = [TrainResult("completed", 0, schedule.total_steps, schedule.steps_per_epoch, compile_time, 0.0, 0.0,
                           group_size=n_runs, init_time_s=init_time, init_trace_file=trace_file,
                           input_dim=data.input_dim, probe_q0=probe_q0, device=device_info())
               for trace_file, init_time in zip(trace_files, init_times)]
    prev_params = state.params  # weights at the previous log: the reference of update ratios
    logged_at = np.full(n_runs, -1)  # per run, the last step with a statistics row
    row_at = np.full(n_runs, -1)  # ... and with a metrics row
    loss_sum, loss_count = np.zeros(n_runs), np.zeros(n_runs, np.int64)  # training losses since that row

    def emit(r: int, at: int, table: np.ndarray) -> None:
        """Send run ``r``'s statistics table (columns, depth + 1) at step ``at`` to its sink; a run
        whose statistics are not finite is marked diverged there and stops (``alive``)."""
        res = results[r]
        res.last_stats = from_table(table)
        if at == 0:
            res.last_stats["update_ratio"] = np.full_like(res.last_stats["update_ratio"], np.nan)
            res.init_stats = res.last_stats
        sinks[r].layers(at, res.last_stats)
        logged_at[r] = at
        if res.status != "diverged" and first_nonfinite_layer(res.last_stats) is not None:
            res.status = "diverged"
            res.divergence = _divergence(at, "non-finite per-layer statistics", res.last_stats)
            alive[r] = False

    def measure_now(st: TrainState, members: Sequence[int], at: int) -> None:
        """Measure and send the statistics of ``members`` at step ``at`` without training (a run of
        no steps, or one that blew up between logs): a chunk of no steps that measures its end."""
        t_stats = time.perf_counter()
        out = chunk(st, prev_params, np.int32(at), x, y, np.int32(0), np.ones(n_runs, bool), np.True_)
        table = np.asarray(jax.device_get(out[5]))[:, 0]  # (runs, columns, depth + 1): one transfer
        for r in members:
            emit(r, at, table[r])
        for r in members:  # statistics are part of what a run costs: steps/s includes them
            results[r].train_time_s += time.perf_counter() - t_stats

    def evaluation(st: TrainState) -> tuple[np.ndarray, np.ndarray]:
        loss, acc = jax.device_get(evaluate(st.params, st.norm_state, x_test, y_test))
        return np.asarray(loss, np.float64), np.asarray(acc, np.float64)

    def metrics_row(r: int, step: int, test_loss: float = float("nan"), test_acc: float = float("nan")) -> None:
        """Run ``r``'s metrics row at ``step``: the mean training loss since its previous row."""
        train_loss = float(loss_sum[r] / loss_count[r]) if loss_count[r] else float("nan")
        loss_sum[r], loss_count[r] = 0.0, 0
        row_at[r] = step
        results[r].final["train_loss"] = train_loss
        sinks[r].metrics({"step": step, "epoch": step / schedule.steps_per_epoch, "train_loss": train_loss,
                          "test_loss": test_loss, "test_acc": test_acc, "wall_time": time.perf_counter() - start})

    if schedule.total_steps == 0:  # otherwise step 0's statistics come out of the first chunk
        measure_now(state, range(n_runs), 0)
    test_loss, test_acc = evaluation(state)
    for r, res in enumerate(results):
        metrics_row(r, 0, float(test_loss[r]), float(test_acc[r]))
        res.best = {"test_acc": float(test_acc[r]), "step": 0}
        res.record_eval(0, float(test_loss[r]), float(test_acc[r]))
        res.final.update(test_loss=float(test_loss[r]), test_acc=float(test_acc[r]))

    step = 0
    guarded = None
    while step < schedule.total_steps and alive.any():
        target = schedule.next_stop(step)
        t1 = time.perf_counter()
        measure_end = target == schedule.total_steps  # (the last step is always logged)
        args = (np.int32(step), x, y, np.int32(target - step), alive.copy(), np.bool_(measure_end))
        out = chunk(state, prev_params, *args)
        new_state, new_prev = out[0], out[1]
        ok, losses, done, tables = (np.asarray(a) for a in jax.device_get(out[2:]))  # one transfer
        if (alive & ~ok).any():  # a run blew up somewhere in the chunk: replay it step by step
            if guarded is None:  # compiled on first need; its compile time is not training time
                t_c = time.perf_counter()
                guarded = fns.guarded_chunk.lower(state, prev_params, *args).compile()
                compile_s = time.perf_counter() - t_c
                t1 += compile_s  # keeps the compilation out of the chunk's training time
                for res in results:
                    res.compile_time_s += compile_s
            replay = guarded(state, prev_params, *args)
            g_ok, g_losses, g_done, g_tables = (np.asarray(a) for a in jax.device_get(replay[2:]))
            # Runs that passed the fast check keep the fast result: a run's numbers never depend on
            # whether another run of its group blew up.
            new_state, new_prev = _pick(ok, new_state, replay[0]), _pick(ok, new_prev, replay[1])
            losses, done, tables = (np.where(ok.reshape(-1, *(1,) * (a.ndim - 1)), a, b)
                                    for a, b in ((losses, g_losses), (done, g_done), (tables, g_tables)))
            ok = ok | g_ok
        state, prev_params = new_state, new_prev
        elapsed = time.perf_counter() - t1
        logs = schedule.logs_between(step, target) + [target] * measure_end  # the tables' steps, in order
        for r in np.flatnonzero(alive):
            res = results[r]
            res.train_time_s += elapsed
            stop = step + int(done[r])  # where the run is now: `target`, or the step it blew up at
            cursor = 0  # losses of the chunk's steps [step, step + cursor) are counted
            for slot, at in enumerate(logs):
                if at > stop:
                    break
                if step < at < target:  # a logged step inside the chunk gets its metrics row here
                    loss_sum[r] += losses[r, cursor:at - step].sum(dtype=np.float64)
                    loss_count[r] += at - step - cursor
                    cursor = at - step
                    metrics_row(r, at)
                emit(r, at, tables[r, slot])
            loss_sum[r] += losses[r, cursor:done[r]].sum(dtype=np.float64)
            loss_count[r] += done[r] - cursor
            res.steps = stop
            chunk_loss = float(np.mean(losses[r, :done[r]])) if done[r] else float("nan")
            sinks[r].progress(stop, schedule.total_steps,
                              {"loss": chunk_loss, "test_acc": res.final["test_acc"],
                               "steps_per_s": stop / max(res.train_time_s, 1e-9)})
            if not ok[r]:  # its statistics, loss or update went non-finite at `stop`: it ends there
                res.status = "diverged"
                if res.divergence is None:  # (non-finite statistics have said so already)
                    if logged_at[r] != stop:  # the statistics of its last finite parameters
                        measure_now(state, [r], stop)
                    res.divergence = _divergence(stop, "non-finite loss or gradient", res.last_stats)
                if row_at[r] != stop:
                    metrics_row(r, stop)
                alive[r] = False
        step = target
        members = np.flatnonzero(alive)
        if not len(members):
            break
        logged, evaluated = schedule.is_log(step), schedule.is_eval(step)
        if logged or evaluated:
            test_loss, test_acc = evaluation(state) if evaluated else (np.full(n_runs, np.nan),) * 2
            for r in members:
                metrics_row(r, step, float(test_loss[r]), float(test_acc[r]))
                if evaluated:
                    res = results[r]
                    res.final.update(test_loss=float(test_loss[r]), test_acc=float(test_acc[r]))
                    res.record_eval(step, float(test_loss[r]), float(test_acc[r]))
                    if test_acc[r] > res.best["test_acc"]:
                        res.best = {"test_acc": float(test_acc[r]), "step": step}
                    sinks[r].checkpoint()
    wall = time.perf_counter() - start
    for res in results:
        res.wall_time_s = wall
    return results
