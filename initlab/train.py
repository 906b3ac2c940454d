"""Training: one pure, jitted ``train_step``, run many steps at a time inside a ``lax`` loop, for a
*group* of runs at once.

A group is one or more runs that share every shape and static choice and differ only in seed,
initializer, init arguments or learning rate (``batch_key``). Their parameters are initialized one
by one, stacked, and trained together as one ``jax.vmap``-ed computation: a grid of inits × seeds
for one architecture compiles once and trains in one pass. A single `initlab run` is a group of
one, through the same code, so a run trained alone and inside a sweep give the same numbers.

The dataset lives on the device and each epoch's shuffle is drawn there. The host returns to
Python only at boundaries: logging (per-layer statistics, on the probe batch or, measured inside
the logged step itself, on its mini-batch), end of epoch (test evaluation) and a progress tick.
The chunk length is a traced argument, so one compilation serves every chunk. Each chunk is
checked once at its end; a chunk in which a run went non-finite is replayed step by step,
and the step whose loss or new parameters are not finite is not applied and freezes that run (the
others keep their result); the statistics of its last finite parameters show where it blew up.
"""

from __future__ import annotations

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
from initlab.stats import first_nonfinite_layer, from_table, layer_stats_fn, loss_and_grads, summarize, to_table

# Longest stretch of steps between returns to Python, so the progress display stays live.
PROGRESS_CHUNK = 200
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
    """The jitted pieces of a group, built once from its static choices; each maps over runs."""

    chunk: Callable  # (states, prev_params, step0, x, y, n_steps, alive) -> (states, ok, loss_sum, done, stats)
    guarded_chunk: Callable  # (states, step0, x, y, n_steps, alive): checks every step (replays a failed chunk)
    evaluate: Callable  # (params, norm_state, x, y) -> (loss, accuracy), each (runs,)
    stats: Callable  # (params, norm_state, prev_params, x, y) -> (runs, columns, depth + 1): the probe's (to_table)
    optimizer: Callable[[Any], optax.GradientTransformation]


def make_train_fns(cfg: RunConfig, spec: ModelSpec, schedule: Schedule, n_train: int, n_runs: int = 1) -> TrainFns:
    """Build the training chunk, evaluation and statistics for a group sharing ``cfg``'s static choices."""
    t = cfg.train
    loss_fn = make_loss(t.loss, t.target_scale)
    probe_stats = layer_stats_fn(spec, loss_fn)
    batch = t.batch_size
    spe = schedule.steps_per_epoch
    on_batch = cfg.log.stats_on == "train_batch"

    def optimizer(lr) -> optax.GradientTransformation:
        # Every optax optimizer here applies the learning rate as its last scaling, so a traced
        # per-run rate gives exactly the update a constant one would.
        return build_optimizer(t.optimizer, t.schedule, lr, schedule.total_steps, t.warmup_steps,
                               t.momentum, t.weight_decay)

    def train_step(state: TrainState, step, x, y, guard: bool, prev_params: Params | None = None):
        """One update of one run on its next mini-batch; returns (state, loss, finite, stats).
        ``finite`` (loss and update both finite) is only computed when ``guard``, otherwise it is
        True. With ``prev_params`` (the weights at the previous log) the same forward/backward pass
        also yields the per-layer statistics of ``state`` on this mini-batch, else stats is None."""
        epoch, i = step // spe, step % spe
        order = jax.lax.cond(  # the step is shared by the group, so this stays a real branch
            (i == 0) & (step > 0),
            lambda: jax.random.permutation(jax.random.fold_in(state.data_key, epoch), n_train).astype(jnp.int32),
            lambda: state.order,
        )
        idx = jax.lax.dynamic_slice(order, (i * batch,), (batch,))
        drop_key = jax.random.fold_in(jax.random.fold_in(state.data_key, DROPOUT_STREAM), step)
        loss, norm_state, grads, raw = loss_and_grads(spec, loss_fn, state.params, state.norm_state, x[idx], y[idx],
                                                      key=drop_key, collect=prev_params is not None)
        updates, opt_state = optimizer(state.lr).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if t.max_norm is not None:
            params = max_norm(params, t.max_norm)
        new = state._replace(params=params, norm_state=norm_state, opt_state=opt_state, order=order)
        # The new parameters, not just the loss: an overflowing step (huge lr) must not be applied
        # either. The same test as the fast path's end-of-chunk check, so both agree on every run.
        finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(params)) if guard else jnp.bool_(True)
        stats = None if raw is None else to_table(summarize(state.params, prev_params, grads, raw))
        return new, loss, finite, stats

    def select(ok, a: TrainState, b: TrainState) -> TrainState:
        return jax.tree.map(lambda u, v: jnp.where(ok, u, v), a, b)

    def guarded_chunk(state: TrainState, step0, x, y, n_steps, alive):
        """``n_steps`` steps of one run from the group's step ``step0``, each checked: a run that is
        not alive, or meets a non-finite step, keeps its last finite state from then on.
        Returns (state, ok, loss sum, steps done)."""

        def body(j, carry):
            st, ok, loss_sum, done = carry
            new, loss, finite, _ = train_step(st, step0 + j, x, y, True)
            ok = ok & finite
            return select(ok, new, st), ok, loss_sum + jnp.where(ok, loss, 0.0), done + ok.astype(jnp.int32)

        carry = (state, alive, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
        return jax.lax.fori_loop(0, n_steps, body, carry)

    def chunk(state: TrainState, prev_params, step0, x, y, n_steps, alive):
        """The fast path of ``guarded_chunk``: the steps run unchecked and the chunk is checked once
        at its end (finite loss sum and parameters). A run that fails the check reports ok=False;
        the caller then replays the chunk with ``guarded_chunk`` from the same start to find the
        exact step, so the per-step checks (7-12% of a step) are only paid after a blow-up.

        With ``log.stats_on: train_batch`` the first step also returns the per-layer statistics of
        ``state`` on its own mini-batch (update ratios against ``prev_params``), and is taken even
        when ``n_steps`` is 0 (to measure a state without training it, discard the result: a
        select to undo it would copy the whole state on every chunk). Otherwise stats is None.
        Returns (state, ok, loss sum, steps done, stats)."""
        st, loss_sum, first, stats = state, jnp.zeros((), jnp.float32), 0, None
        if on_batch:
            st, loss_sum, _, stats = train_step(state, step0, x, y, False, prev_params)
            first = 1

        def body(j, carry):
            st, loss_sum = carry
            new, loss, _, _ = train_step(st, step0 + j, x, y, False)
            return new, loss_sum + loss

        st, loss_sum = jax.lax.fori_loop(first, n_steps, body, (st, loss_sum))
        ok = alive & jnp.isfinite(loss_sum) & jnp.isfinite(optax.tree.norm(st.params))
        return (select(alive, st, state), ok, jnp.where(alive, loss_sum, 0.0),
                jnp.where(alive, n_steps, 0).astype(jnp.int32), stats)

    def evaluate(params, norm_state, x, y):
        logits, _, _ = apply(spec, params, norm_state, x, train=False)
        loss = jnp.mean(loss_fn(logits, y, spec.num_classes))
        return loss, jnp.mean(jnp.argmax(logits, axis=-1) == y)

    return TrainFns(
        chunk=jax.jit(over_runs(chunk, (True, True, False, False, False, False, True), n_runs)),
        guarded_chunk=jax.jit(over_runs(guarded_chunk, (True, False, False, False, False, True), n_runs)),
        evaluate=jax.jit(over_runs(evaluate, (True, True, False, False), n_runs)),
        stats=jax.jit(over_runs(lambda *a: to_table(probe_stats(*a)), (True, True, True, False, False), n_runs)),
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
    train_batch``, inside the logged step's own forward/backward pass; the test set is evaluated
    at step 0, at the end of each epoch and at the last step. A run that diverges stops there and
    is reported as diverged; the rest of the group trains on.
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
    probe_x, probe_y = x[: cfg.data.probe_size], y[: cfg.data.probe_size]
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

    on_batch = cfg.log.stats_on == "train_batch"
    t0 = time.perf_counter()
    # Host scalars and masks go in as numpy values: building jax arrays for them costs more than a
    # small network's training step.
    chunk = fns.chunk.lower(state, state.params, np.int32(0), x, y, np.int32(1), alive.copy()).compile()
    evaluate = fns.evaluate.lower(state.params, state.norm_state, x_test, y_test).compile()
    probe_stats = None if on_batch else \
        fns.stats.lower(state.params, state.norm_state, state.params, probe_x, probe_y).compile()
    compile_time = time.perf_counter() - t0

    probe_q0 = float(jnp.mean(jnp.square(probe_x)))
    results = [TrainResult("completed", 0, schedule.total_steps, schedule.steps_per_epoch, compile_time, 0.0, 0.0,
                           group_size=n_runs, init_time_s=init_time, init_trace_file=trace_file,
                           input_dim=data.input_dim, probe_q0=probe_q0, device=device_info())
               for trace_file, init_time in zip(trace_files, init_times)]
    prev_params = state.params  # weights at the previous log: the reference of update ratios
    logged_at = np.full(n_runs, -1)  # per run, the last step with a statistics row
    row_at = np.full(n_runs, -1)  # ... and with a metrics row

    def measure(st: TrainState, at: int) -> jax.Array:
        """Per-layer statistics of every run of ``st`` (runs, columns, depth + 1), on the probe or,
        with ``train_batch``, on step ``at``'s mini-batch (the chunk's first step, its update discarded)."""
        if on_batch:
            return chunk(st, prev_params, np.int32(at), x, y, np.int32(0), np.ones(n_runs, bool))[4]
        return probe_stats(st.params, st.norm_state, prev_params, probe_x, probe_y)

    def emit(table: jax.Array, members: Sequence[int], at: int) -> None:
        """Send the statistics rows of ``members`` (run indices) at step ``at`` to their sinks; a
        run whose statistics are not finite is marked diverged there and stops (``alive``)."""
        table = np.asarray(jax.device_get(table))  # (runs, columns, depth + 1): one transfer
        for r in members:
            res = results[r]
            res.last_stats = from_table(table[r])
            if at == 0:
                res.last_stats["update_ratio"] = np.full_like(res.last_stats["update_ratio"], np.nan)
                res.init_stats = res.last_stats
            sinks[r].layers(at, res.last_stats)
            logged_at[r] = at
            if res.status != "diverged" and first_nonfinite_layer(res.last_stats) is not None:
                res.status = "diverged"
                res.divergence = _divergence(at, "non-finite per-layer statistics", res.last_stats)
                alive[r] = False

    def log_stats(st: TrainState, members: Sequence[int], steps: Sequence[int]) -> None:
        """Measure and send the statistics of ``members`` at their ``steps`` (one pass per distinct step)."""
        t_stats = time.perf_counter()
        for at in sorted(set(steps)):
            emit(measure(st, at), [r for r, s in zip(members, steps) if s == at], at)
        for r in members:  # statistics are part of what a run costs: steps/s includes them
            results[r].train_time_s += time.perf_counter() - t_stats

    def evaluation(st: TrainState) -> tuple[np.ndarray, np.ndarray]:
        loss, acc = jax.device_get(evaluate(st.params, st.norm_state, x_test, y_test))
        return np.asarray(loss, np.float64), np.asarray(acc, np.float64)

    def metrics_row(r: int, step: int, train_loss: float, test_loss: float, test_acc: float) -> None:
        row_at[r] = step
        sinks[r].metrics({"step": step, "epoch": step / schedule.steps_per_epoch, "train_loss": train_loss,
                          "test_loss": test_loss, "test_acc": test_acc, "wall_time": time.perf_counter() - start})

    # with train_batch, step 0's statistics come out of the first chunk's first step, if there is one
    if not on_batch or schedule.total_steps == 0:
        log_stats(state, range(n_runs), [0] * n_runs)
    test_loss, test_acc = evaluation(state)
    for r, res in enumerate(results):
        metrics_row(r, 0, float("nan"), float(test_loss[r]), float(test_acc[r]))
        res.best = {"test_acc": float(test_acc[r]), "step": 0}
        res.record_eval(0, float(test_loss[r]), float(test_acc[r]))
        res.final = {"train_loss": float("nan"), "test_loss": float(test_loss[r]), "test_acc": float(test_acc[r])}

    step = 0
    guarded = None
    loss_sum, loss_count = np.zeros(n_runs), np.zeros(n_runs, np.int64)
    while step < schedule.total_steps and alive.any():
        target = schedule.next_stop(step)
        t1 = time.perf_counter()
        args = (np.int32(step), x, y, np.int32(target - step), alive.copy())
        new_state, ok, chunk_loss, done, chunk_stats = chunk(state, prev_params, *args)
        ok, chunk_loss, done = (np.array(a) for a in jax.device_get((ok, chunk_loss, done)))
        members = np.flatnonzero(alive)
        if on_batch and schedule.is_log(step):  # the chunk's first step measured the state at `step`
            emit(chunk_stats, members, step)
            prev_params = state.params
            stopped = [r for r in members if not alive[r]]
            if stopped:  # statistics not finite at `step`: the run stops there, as if logged before the chunk
                keep = np.ones(n_runs, bool)
                keep[stopped] = False
                new_state = _pick(keep, new_state, state)
                ok[stopped], chunk_loss[stopped], done[stopped] = True, 0.0, 0
        if (alive & ~ok).any():  # a run blew up somewhere in the chunk: replay it step by step
            if guarded is None:  # compiled on first need; its compile time is not training time
                t_c = time.perf_counter()
                guarded = fns.guarded_chunk.lower(state, *args).compile()
                compile_s = time.perf_counter() - t_c
                t1 += compile_s  # keeps the compilation out of the chunk's training time
                for res in results:
                    res.compile_time_s += compile_s
            replay = guarded(state, *args)
            g_ok, g_loss, g_done = (np.asarray(a) for a in jax.device_get(replay[1:]))
            # Runs that passed the fast check keep the fast result: a run's numbers never depend on
            # whether another run of its group blew up.
            new_state = _pick(ok, new_state, replay[0])
            chunk_loss, done = np.where(ok, chunk_loss, g_loss), np.where(ok, done, g_done)
            ok = ok | g_ok
        state = new_state
        elapsed = time.perf_counter() - t1
        loss_sum, loss_count = loss_sum + chunk_loss, loss_count + done
        train_loss = np.where(loss_count > 0, loss_sum / np.maximum(loss_count, 1), np.nan)
        members = np.flatnonzero(alive)
        for r in members:
            results[r].train_time_s += elapsed
            results[r].steps = step + int(done[r])
            sinks[r].progress(results[r].steps, schedule.total_steps,
                              {"loss": float(train_loss[r]), "test_acc": results[r].final["test_acc"],
                               "steps_per_s": results[r].steps / max(results[r].train_time_s, 1e-9)})
        step = target
        diverged = [r for r in members if not ok[r]]
        if diverged:
            for r in diverged:
                results[r].status = "diverged"
                results[r].final["train_loss"] = float(train_loss[r])
            # the last finite parameters, on the probe or on the mini-batch of the step that failed
            # (unless that step was just logged: a run that blew up on a chunk's first step)
            fresh = [r for r in diverged if logged_at[r] != results[r].steps]
            log_stats(state, fresh, [results[r].steps for r in fresh])
            for r in diverged:
                results[r].divergence = _divergence(results[r].steps, "non-finite loss or gradient",
                                                    results[r].last_stats)
                if row_at[r] != results[r].steps:
                    metrics_row(r, results[r].steps, float(train_loss[r]), float("nan"), float("nan"))
            alive[diverged] = False
        members = np.flatnonzero(alive)
        if not len(members):
            break
        logged, evaluated = schedule.is_log(step), schedule.is_eval(step)
        # (with train_batch the next chunk measures this step, unless there is none)
        if logged and (not on_batch or step == schedule.total_steps):
            log_stats(state, members, [step] * len(members))
            prev_params = state.params
        if logged or evaluated:
            test_loss, test_acc = evaluation(state) if evaluated else (np.full(n_runs, np.nan),) * 2
            for r in members:
                metrics_row(r, step, float(train_loss[r]), float(test_loss[r]), float(test_acc[r]))
                res = results[r]
                res.final["train_loss"] = float(train_loss[r])
                if evaluated:
                    res.final.update(test_loss=float(test_loss[r]), test_acc=float(test_acc[r]))
                    res.record_eval(step, float(test_loss[r]), float(test_acc[r]))
                    if test_acc[r] > res.best["test_acc"]:
                        res.best = {"test_acc": float(test_acc[r]), "step": step}
                    sinks[r].checkpoint()
            loss_sum[members], loss_count[members] = 0.0, 0
        for r in members:
            if results[r].status == "diverged":
                alive[r] = False
    wall = time.perf_counter() - start
    for res in results:
        res.wall_time_s = wall
    return results
