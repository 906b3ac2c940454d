"""Training: one pure, jitted training step, run many steps at a time inside a ``lax`` loop, for a
*group* of runs at once.

A group is one or more runs that share every shape and static choice and differ only in seed,
initializer, init arguments or learning rate (``batch_key``). Their parameters are initialized one
by one, stacked, and trained together as one ``jax.vmap``-ed computation: a grid of inits × seeds
for one architecture compiles once and trains in one pass. A single `initlab run` is a group of
one, through the same code, so a run trained alone and inside a sweep give the same numbers.

The parts, in the order a run meets them:

- ``initlab.train.schedule`` plans the chunks (plain Python): steps between returns to Python, the
  logged steps each one measures, evaluations.
- ``make_train_fns`` builds the device programs. A chunk (``ChunkIn`` -> ``ChunkOut``) runs up to
  ``PROGRESS_CHUNK`` steps; every logged step's per-layer statistics (on the probe batch or, with
  ``log.stats_on: train_batch``, inside the logged step's own forward/backward pass) go into a
  buffer of up to ``LOG_BUFFER`` tables and every step's loss is kept. The dataset lives on the
  device and each epoch's shuffle is drawn there. A chunk's steps go through a ``StepPolicy``:
  ``FAST`` applies them unchecked (the chunk is checked once at its end: losses, parameters and
  the statistics' signal rows finite), ``GUARDED`` applies a step only if its statistics, loss
  and new parameters are finite, and freezes a run at its first non-finite step.
- ``ChunkRunner`` runs the fast chunk and, when a run went non-finite in it, replays the chunk
  guarded from the same start (compiled on first need); runs that passed keep the fast result.
- ``RunBook`` keeps one run's host-side record (alive, rows written, losses since the last metrics
  row, divergence) and talks to its sink.
- ``train_group`` ties them together.
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

from initlab.config import RunConfig, config_digest, to_dict
from initlab.data.datasets import Dataset
from initlab.errors import InitlabError, InterruptGate
from initlab.nn.formats import context
from initlab.nn.initializers import Trace
from initlab.nn.loss_scale import LossScaling, all_finite, from_config
from initlab.nn.model import ModelSpec, NormState, Params, apply, pre_activations
from initlab.nn.optimizers import ADAM_LIKE, build_optimizer, make_loss, per_class
from initlab.nn.parameterizations import class_factors, get_parameterization, param_classes
from initlab.nn.params import named_arrays
from initlab.nn.regularizers import max_norm
from initlab.stats.spectrum import applies as spectrum_applies
from initlab.stats.spectrum import singular_values_fn
from initlab.stats.statistics import Layout, first_nonfinite_layer
from initlab.train import memory
from initlab.train.build import init_params_traced, model_spec
from initlab.train.schedule import LOG_BUFFER, PROGRESS_CHUNK, ChunkPlan, Schedule, make_schedule
from initlab.train.step import loss_and_grads, reference_values, table_of, update_values

# fold_in index of the dropout masks' stream in a run's data key (epochs use 0, 1, 2, ...).
DROPOUT_STREAM = 2**31 - 1

# Fields in which runs of one group may differ: they only change the initial values and the
# learning rate, not the compiled program.
BATCHABLE = ("name", "seed", "model.init", "model.init_args", "model.bias_init", "model.bias_init_args",
             "train.lr", "log.out")


# ...except where the initializer's σ_w² is a forward multiplier of the program (ntk).
IN_PROGRAM_UNDER_UNIT_WEIGHTS = ("model.init", "model.init_args")


def batch_key(cfg: RunConfig) -> str:
    """Runs with equal keys can train together in one vmapped group."""
    import json

    d = to_dict(cfg)
    unit = get_parameterization(cfg.model.parameterization).unit_weights
    for dotted in BATCHABLE:
        if unit and dotted in IN_PROGRAM_UNDER_UNIT_WEIGHTS:
            continue
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
    loss_scale: Any = None  # LossScaleState (train.loss_scale), None without loss scaling
    # the probe's pre-activations at step 0 (initlab.nn.model.pre_activations), for reference statistics; else None
    z0: Any = None


class ChunkIn(NamedTuple):
    """A chunk's inputs besides the training set: ``n_steps`` steps from the group's step
    ``step0`` and, with ``measure_end``, a measurement of the state they end in (``n_steps`` 0: a
    measurement only). Host scalars and masks go in as numpy values: building jax arrays for them
    costs more than a small network's training step."""

    state: TrainState  # per run
    prev_params: Params  # per run: the weights at the previous log, the reference of update statistics
    step0: Any  # np.int32
    n_steps: Any  # np.int32
    alive: Any  # per run, bool
    measure_end: Any  # np.bool_


# ChunkIn's leading run axis, field by field (vmap's in_axes).
CHUNK_AXES = ChunkIn(0, 0, None, None, 0, None)


class ChunkOut(NamedTuple):
    """What a chunk returns, per run."""

    state: TrainState
    prev_params: Params
    ok: jax.Array  # bool: every step (and statistics table) of the run was finite
    losses: jax.Array  # (PROGRESS_CHUNK + 1,) the training loss of each step taken
    done: jax.Array  # int32: steps applied (n_steps, or the step the run blew up at)
    tables: jax.Array  # (LOG_BUFFER + 1, rows, depth + 1): the statistics of each logged step, in order
    # (2, PROGRESS_CHUNK + 1) with loss scaling: the loss scale after each step and whether it was skipped (1.0)
    scales: Any = None


class Step(NamedTuple):
    """A run's candidate transition inside a chunk, for a ``StepPolicy`` to accept or not."""

    state: TrainState
    prev_params: Params
    loss: jax.Array
    signal_ok: jax.Array  # the step's statistics (if it logged any) are finite
    stepped: jax.Array  # a training step was taken (not only a measurement)


class Carry(NamedTuple):
    """What a policy keeps of a run through a chunk."""

    state: TrainState
    prev_params: Params
    ok: jax.Array
    done: jax.Array


def finite(loss, params) -> jax.Array:
    """The loss and the new parameters are finite: an overflowing step (huge lr) must not be applied."""
    return jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(params))


def select(ok, a, b):
    return jax.tree.map(lambda u, v: jnp.where(ok, u, v), a, b)


def fast(carry: Carry, step: Step) -> Carry:
    """Apply every step unchecked; the chunk is checked once at its end (``fast_end``)."""
    return Carry(step.state, step.prev_params, carry.ok & step.signal_ok, carry.done)


def fast_end(out: ChunkOut, alive, n_steps) -> ChunkOut:
    ok = out.ok & finite(jnp.sum(out.losses), out.state.params)
    return out._replace(ok=ok, done=jnp.where(alive, n_steps, 0).astype(jnp.int32))


def guarded(carry: Carry, step: Step) -> Carry:
    """Apply a step only if its statistics, loss and parameters are finite; a run that meets a
    non-finite one keeps its last finite state from then on (its statistics at that step, if it is
    a logged one, are kept for the record)."""
    ok = carry.ok & step.signal_ok & (~step.stepped | finite(step.loss, step.state.params))
    state, prev = select(ok, (step.state, step.prev_params), (carry.state, carry.prev_params))
    return Carry(state, prev, ok, carry.done + (ok & step.stepped).astype(jnp.int32))


class StepPolicy(NamedTuple):
    """How a chunk takes its steps: ``accept`` each candidate step, then ``end`` the chunk."""

    accept: Callable[[Carry, Step], Carry]
    end: Callable[[ChunkOut, Any, Any], ChunkOut]


FAST = StepPolicy(fast, fast_end)
GUARDED = StepPolicy(guarded, lambda out, alive, n_steps: out)


class TrainFns(NamedTuple):
    """The jitted pieces of a group, built once from its static choices; each maps over runs."""

    layout: Layout  # the statistics the group computes and the rows of their table
    chunk: Callable  # (ChunkIn, x, y) -> ChunkOut, the FAST policy
    guarded_chunk: Callable  # the same with the GUARDED policy (replays a chunk that failed its end check)
    evaluate: Callable  # (params, norm_state, x, y) -> (loss, accuracy), each (runs,)
    optimizer: Callable[[Any], optax.GradientTransformation]
    # (params, norm_state, x) -> the Jacobian's singular values (runs, examples, k); None when off
    jacobian: Callable | None = None
    scaling: LossScaling | None = None  # train.loss_scale; None without loss scaling
    # one run's (params, norm_state, probe inputs) -> its pre-activations (initlab.nn.model.pre_activations),
    # the reference statistics' z0; None when no statistic needs them
    pre_activations: Callable | None = None


def make_train_fns(cfg: RunConfig, spec: ModelSpec, schedule: Schedule, n_train: int, n_runs: int = 1) -> TrainFns:
    """Build the training chunk, evaluation and statistics for a group sharing ``cfg``'s static choices."""
    t = cfg.train
    loss_fn = make_loss(t.loss, t.targets)
    batch = t.batch_size
    spe = schedule.steps_per_epoch
    every = schedule.log_every
    probe_size = cfg.data.probe_size
    on_batch = cfg.log.stats_on == "train_batch"
    scaling = from_config(t.loss_scale, t.loss_scale_init, t.loss_scale_period)
    scaled = scaling.active
    # Under dynamic scaling a non-finite gradient is a skipped step, not a divergence: only the
    # forward signal is checked (a run still overflowing at the smallest scale applies the step,
    # and its parameters go non-finite).
    layout = Layout(cfg.log.stats, cfg.log.histograms, spec.dtype,
                    signal=("forward",) if scaling.kind == "dynamic" else ("forward", "backward"))
    table_shape = (layout.rows, spec.num_layers)

    param = get_parameterization(cfg.model.parameterization)
    factors = class_factors(param, cfg.model.width, cfg.model.base_width, t.optimizer in ADAM_LIKE)

    def optimizer(lr) -> optax.GradientTransformation:
        # Every optax optimizer here applies the learning rate as its last scaling, so a traced
        # per-run rate gives exactly the update a constant one would.
        def make(factor):  # a class's rate and weight decay (lr × decay kept, as the mup package does)
            return build_optimizer(t.optimizer, t.schedule, lr * factor, schedule.total_steps, t.warmup_steps,
                                   t.momentum, t.weight_decay / factor)

        if all(f == 1.0 for f in factors.values()):
            return build_optimizer(t.optimizer, t.schedule, lr, schedule.total_steps, t.warmup_steps,
                                   t.momentum, t.weight_decay)
        return per_class(make, factors, param_classes)

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

    def forward_backward(params, norm_state, batch, update=None, scale=None, holds_batch=None, z0=None):
        """The forward/backward pass of ``params`` on ``batch`` (inputs, labels, dropout key or
        None): (loss, gradient, new norm state, table). Given the layers' ``update`` statistics
        since the previous log, the same pass also yields the per-layer statistics table of these
        weights on this batch, else table is None; given the probe's step-0 pre-activations ``z0``
        (``batch`` then being the probe), the table has the reference statistics too. ``scale``:
        the run's LossScaleState or None."""
        xb, yb, key = batch
        ref = None if z0 is None else reference_values(layout, spec, params, norm_state, xb, z0)
        loss, norm_state, grads, raw = loss_and_grads(spec, loss_fn, params, norm_state, xb, yb, key=key,
                                                      layout=None if update is None else layout,
                                                      loss_scale=None if scale is None else scale.scale,
                                                      holds_batch=holds_batch)
        table = None if raw is None else table_of(layout, params, raw, update, ref)
        return loss, grads, norm_state, table

    def update_state(state: TrainState, grads, norm_state, order) -> TrainState:
        updates, opt_state = optimizer(state.lr).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if t.max_norm is not None:
            params = max_norm(params, t.max_norm)
        new = state._replace(params=params, norm_state=norm_state, opt_state=opt_state, order=order)
        if not scaled:
            return new
        # Loss scaling: a skipped step (non-finite gradient under dynamic scaling) keeps the
        # parameters, optimizer and normalization state; the data order moves on.
        loss_scale, apply_it = scaling.adjust(state.loss_scale, all_finite(grads))
        return select(apply_it, new, state._replace(order=order))._replace(loss_scale=loss_scale)

    def train_step(state: TrainState, step, x, y):
        """One update of one run on its next mini-batch: (state, loss)."""
        order, batch = minibatch(state, step, x, y)
        loss, grads, norm_state, _ = forward_backward(state.params, state.norm_state, batch, scale=state.loss_scale)
        return update_state(state, grads, norm_state, order), loss

    def put(bufs, j, loss, before: TrainState, after: TrainState):
        """Step j's loss into the chunk's buffers and, with loss scaling, the scale after it and
        whether it was skipped (the scale fell)."""
        losses, scales = bufs
        losses = losses.at[j].set(loss.astype(jnp.float32))
        if scales is not None:
            s0, s1 = before.loss_scale.scale, after.loss_scale.scale
            scales = scales.at[:, j].set(jnp.stack([s1, (s1 < s0).astype(jnp.float32)]))
        return losses, scales

    def steps(inp: ChunkIn, x, y, policy: StepPolicy) -> ChunkOut:
        """``inp.n_steps`` steps of one run from the group's step ``inp.step0`` and, with
        ``measure_end``, a measurement of the state they end in.

        Every multiple of ``log_every`` among the steps, and the end with ``measure_end``, takes
        the per-layer statistics of the state it starts from into the next slot of the tables
        buffer, and ``prev_params`` moves to those weights (the reference of the next update
        statistics): on the probe (the first ``probe_size`` training examples) or, with
        train_batch, inside the step's own forward/backward pass (the end's measurement is such a
        step, its update dropped). Each step goes through ``policy``. A run that is not ``alive``
        keeps its state when guarded; unguarded it trains on, its results unused (keeping its
        state would take one more copy of the weights: the select's output beside the loop's)."""
        step0, n_steps = inp.step0, inp.n_steps
        tables = jnp.zeros((LOG_BUFFER + 1, *table_shape), jnp.float32)
        losses = (jnp.zeros((PROGRESS_CHUNK + 1,), jnp.float32),
                  jnp.zeros((2, PROGRESS_CHUNK + 1), jnp.float32) if scaled else None)
        n_iter = n_steps + jnp.asarray(inp.measure_end).astype(n_steps.dtype)  # the end's measurement is one more

        def measurement(j, c: Carry, losses, tables, slot):
            """A segment's start: at a multiple of ``log_every``, or at the end's measurement
            (j == n_steps, where nothing is trained), the statistics of the state go into the next
            slot: from a pass of the probe, or from the logged step's own pass. With train_batch
            the segment's first step is taken here whether or not it is logged (a segment that
            does not start at a log, the chunk's first, takes it unlogged). The branch is shared by
            the group: a real branch, not both sides. Returns the carry and the first step still
            to take."""
            st, prev = c.state, c.prev_params
            s = step0 + j
            last = j == n_steps
            is_log = (s % every == 0) | last

            def record(tables, table):
                return jax.lax.dynamic_update_index_in_dim(tables, table, slot, 0), layout.signal_finite(table)

            # prev_params move to this step's weights, and the update statistics they were the
            # reference of are taken, outside the branch, and the branch reads the moved copy; the
            # update is applied outside it too. Ordered so by data, XLA moves and updates the weights
            # in place instead of copying the weights and prev_params at every segment (one run on the
            # training batch: temporaries 3.0 -> 1.2 copies of the weights; a group of 3: 4.9 -> 2.9).
            update = update_values(layout, st.params, prev)
            new_prev = select(is_log, st.params, prev)
            if on_batch:
                order, batch = minibatch(st, s, x, y)

                def logged(at_log, params, tables):  # at_log: the weights, as moved to prev_params
                    loss, grads, norm_state, table = forward_backward(at_log, st.norm_state, batch, update,
                                                                      st.loss_scale)
                    return (loss, grads, norm_state, *record(tables, table))

                def plain(at_log, params, tables):
                    return (*forward_backward(params, st.norm_state, batch, scale=st.loss_scale)[:3], tables,
                            jnp.bool_(True))

                loss, grads, norm_state, tables, signal_ok = jax.lax.cond(is_log, logged, plain, new_prev, st.params,
                                                                          tables)
                # the segment's first step; the end's measurement (j == n_steps) is not applied
                new = select(last, st, update_state(st, grads, norm_state, order))
                stepped = ~last
                losses = put(losses, j, jnp.where(stepped, loss, 0.0), st, new)
            else:
                def logged(at_log, tables):
                    probe = (x[:probe_size], y[:probe_size], None)
                    return record(tables, forward_backward(at_log, st.norm_state, probe, update, st.loss_scale,
                                                            holds_batch=t.batch_size, z0=st.z0)[3])

                tables, signal_ok = jax.lax.cond(is_log, logged, lambda at_log, tables: (tables, jnp.bool_(True)),
                                                 new_prev, tables)
                new, loss, stepped = st, jnp.zeros((), jnp.float32), jnp.bool_(False)
            c = policy.accept(c, Step(new, new_prev, loss, signal_ok, stepped))
            return (c, losses, tables, slot + is_log.astype(jnp.int32)), j + stepped.astype(j.dtype)

        def plain_steps(j0, j1, c: Carry, losses):
            """Plain steps j0..j1-1, the loop body a bare training step (prev_params stay out of
            the loop: carrying them would cost a copy of the weights)."""

            def body(j, carry):
                c, losses = carry
                new, loss = train_step(c.state, step0 + j, x, y)
                return (policy.accept(c, Step(new, None, loss, jnp.bool_(True), jnp.bool_(True))),
                        put(losses, j, loss, c.state, new))

            inner, losses = jax.lax.fori_loop(j0, j1, body, (c._replace(prev_params=None), losses))
            return inner._replace(prev_params=c.prev_params), losses

        def segment(carry):
            """From step j: its measurement, if any, then plain steps up to the next log or the chunk's end."""
            c, losses, tables, slot, j = carry
            (c, losses, tables, slot), first = measurement(j, c, losses, tables, slot)
            end = jnp.minimum(n_steps, ((step0 + j) // every + 1) * every - step0)  # the next log, or the chunk's end
            c, losses = plain_steps(first, end, c, losses)
            return c, losses, tables, slot, jnp.where(j < n_steps, end, j + 1)

        start = Carry(inp.state, inp.prev_params, inp.alive, jnp.zeros((), jnp.int32))
        carry = (start, losses, tables, jnp.zeros((), jnp.int32), jnp.zeros((), n_steps.dtype))
        c, (losses, scales), tables, _, _ = jax.lax.while_loop(lambda c: c[-1] < n_iter, segment, carry)
        return policy.end(ChunkOut(c.state, c.prev_params, c.ok, losses, c.done, tables, scales), inp.alive, n_steps)

    def evaluate(params, norm_state, x, y):
        logits, _, _ = apply(spec, params, norm_state, x, train=False)
        loss = jnp.mean(loss_fn(logits, y, spec.num_classes))
        return loss, jnp.mean(jnp.argmax(logits, axis=-1) == y)

    chunk_axes = (CHUNK_AXES, None, None)
    return TrainFns(
        layout=layout,
        chunk=jax.jit(over_runs(functools.partial(steps, policy=FAST), chunk_axes, n_runs)),
        guarded_chunk=jax.jit(over_runs(functools.partial(steps, policy=GUARDED), chunk_axes, n_runs)),
        evaluate=jax.jit(over_runs(evaluate, (0, 0, None, None), n_runs)),
        optimizer=optimizer,
        jacobian=jax.jit(over_runs(singular_values_fn(spec), (0, 0, None), n_runs))
        if cfg.log.jacobian > 0 and spectrum_applies(spec) is None else None,
        scaling=scaling if scaled else None,
        pre_activations=jax.jit(functools.partial(pre_activations, spec)) if layout.needs_reference else None,
    )


def over_runs(fn: Callable, in_axes: Sequence[Any], n_runs: int) -> Callable:
    """``fn`` mapped over the leading run axis of its arguments: ``in_axes`` as for ``jax.vmap``
    (0 or None per argument, or a pytree prefix of 0s and Nones).

    A group of one runs ``fn`` itself on the squeezed arguments: vmap over an axis of size 1 would
    turn every matmul into a batched one, which XLA's CPU backend runs ~25% slower.
    """
    if n_runs > 1:
        return jax.vmap(fn, in_axes=tuple(in_axes))

    def squeeze(axis, arg):
        return arg if axis is None else jax.tree.map(lambda a: a[0], arg)

    def single(*args):
        squeezed = [jax.tree.map(squeeze, axes, arg, is_leaf=lambda v: v is None) for axes, arg in zip(in_axes, args)]
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
    loss_scale = None if fns.scaling is None else fns.scaling.initial()
    z0 = None if fns.pre_activations is None else fns.pre_activations(params, norm_state,
                                                                        x_train[:cfg.data.probe_size])
    return TrainState(params, norm_state, fns.optimizer(lr).init(params), order, data_key, lr, loss_scale, z0), trace


class Sink(Protocol):
    """Where a training run reports: storage and display implement these."""

    def metrics(self, row: dict[str, Any]) -> None: ...
    def layers(self, step: int, stats: dict[str, np.ndarray]) -> None: ...
    def checkpoint(self) -> None: ...
    def progress(self, step: int, total: int, info: dict[str, float]) -> None: ...
    def init_trace(self, trace: Trace) -> None: ...
    def jacobian(self, step: int, singular_values: np.ndarray) -> None: ...
    def parameters(self, step: int, arrays: dict[str, np.ndarray]) -> None: ...
    def snapshot(self) -> dict[str, Any]: ...  # what it holds, for a checkpoint (plain data)
    def restore(self, snapshot: dict[str, Any]) -> None: ...  # back to a checkpoint's ``snapshot()``


class Checkpointer(Protocol):
    """Where a group's checkpoints go (``log.checkpoint_every``): ``save`` gets the whole training
    state as plain data (numpy arrays, lists, dicts, dataclasses); ``load`` returns the last one
    saved, or None to start from step 0."""

    def save(self, payload: dict[str, Any]) -> None: ...
    def load(self) -> dict[str, Any] | None: ...


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
    spectra: dict[int, np.ndarray] = field(default_factory=dict)  # step -> Jacobian singular values (examples, k)
    jacobian_time_s: float = 0.0  # taking the spectra (compilation included), not counted as training time
    loss_scale: dict[str, Any] | None = None  # with loss scaling: skipped steps and the last scale


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


def save_parameters(cfgs: Sequence[RunConfig], books: Sequence[RunBook], state: TrainState, when: str) -> None:
    """Send each run that asks for it in ``log.save_params`` its parameters and normalization state
    at ``when`` (``init``: step 0; ``end``: its last step) as named host arrays
    (``params.named_arrays``)."""
    wanted = [r for r, c in enumerate(cfgs) if when in c.log.save_params]
    if not wanted:
        return
    params, norm_state = jax.device_get((state.params, state.norm_state))
    for r in wanted:
        run = jax.tree.map(lambda a: np.asarray(a[r]), (params, norm_state))
        books[r].sink.parameters(0 if when == "init" else books[r].result.steps,
                                 {**named_arrays(run[0], "params"), **named_arrays(run[1], "state")})


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


# ChunkOut's fields that come to the host after each chunk, in one transfer.
HOST_FIELDS = ("ok", "losses", "done", "tables", "scales")


def _host(out: ChunkOut) -> dict[str, Any]:
    """``out``'s host fields as numpy arrays (None stays None)."""
    values = jax.device_get([getattr(out, f) for f in HOST_FIELDS])
    return {f: None if v is None else np.asarray(v) for f, v in zip(HOST_FIELDS, values)}


class ChunkRunner:
    """Runs a group's chunks: the fast chunk, and where a live run failed its end check, a guarded
    replay of the same chunk (compiled on first need, its compile time counted as compile time,
    not training time). Runs that passed the fast check keep the fast result, so a run's numbers
    never depend on whether another run of its group blew up."""

    def __init__(self, fns: TrainFns, x: jax.Array, y: jax.Array, state: TrainState):
        self.fns, self.x, self.y = fns, x, y
        n_runs = len(state.lr)
        self.fast = fns.chunk.lower(self._inputs(state, state.params, 0, 1, np.ones(n_runs, bool), True),
                                    x, y).compile()
        self.guarded = None
        self.compile_time_s = 0.0  # of the guarded replay, when it was needed

    @staticmethod
    def _inputs(state, prev_params, step0: int, n_steps: int, alive: np.ndarray, measure_end: bool) -> ChunkIn:
        return ChunkIn(state, prev_params, np.int32(step0), np.int32(n_steps), alive.copy(), np.bool_(measure_end))

    def measure(self, state: TrainState, prev_params: Params, at: int) -> np.ndarray:
        """The statistics tables (runs, rows, depth + 1) of ``state`` at step ``at``, without
        training: a chunk of no steps that measures its end (one transfer)."""
        out = self.fast(self._inputs(state, prev_params, at, 0, np.ones(len(state.lr), bool), True), self.x, self.y)
        return np.asarray(jax.device_get(out.tables))[:, 0]

    def run(self, state: TrainState, prev_params: Params, plan: ChunkPlan, alive: np.ndarray) -> ChunkOut:
        """The chunk ``plan`` from ``state``: device state, host (numpy) ok, losses, done and tables."""
        inp = self._inputs(state, prev_params, plan.start, plan.n_steps, alive, plan.measure_end)
        out = self.fast(inp, self.x, self.y)
        out = out._replace(**_host(out))  # one transfer
        if not (alive & ~out.ok).any():
            return out
        if self.guarded is None:
            t_c = time.perf_counter()
            self.guarded = self.fns.guarded_chunk.lower(inp, self.x, self.y).compile()
            self.compile_time_s += time.perf_counter() - t_c
        replay = self.guarded(inp, self.x, self.y)
        host = _host(replay)
        ok = out.ok

        def per_run(a, b):
            return None if a is None else np.where(ok.reshape(-1, *(1,) * (a.ndim - 1)), a, b)

        return ChunkOut(_pick(ok, out.state, replay.state), _pick(ok, out.prev_params, replay.prev_params),
                        ok | host["ok"], *(per_run(getattr(out, f), host[f]) for f in HOST_FIELDS[1:]))


class RunBook:
    """One run's host-side record through training: whether it is still training, the last steps
    with a statistics row and a metrics row, the training losses since that row, and its result."""

    def __init__(self, sink: Sink, result: TrainResult, layout: Layout, schedule: Schedule, start: float):
        self.sink, self.result, self.layout, self.schedule, self.start = sink, result, layout, schedule, start
        self.alive = True
        self.logged_at = self.row_at = -1
        self.loss_sum, self.loss_count = 0.0, 0
        self.skipped = 0  # loss scaling: steps skipped since the last metrics row

    BOOKED = ("alive", "logged_at", "row_at", "loss_sum", "loss_count", "skipped", "result")

    def snapshot(self) -> dict[str, Any]:
        """The book's state (and its result so far) as plain data, for a checkpoint."""
        return {name: getattr(self, name) for name in self.BOOKED}

    def restore(self, snapshot: dict[str, Any], elapsed: float) -> None:
        """Back to ``snapshot()``; ``wall_time`` goes on from ``elapsed`` seconds."""
        for name in self.BOOKED:
            setattr(self, name, snapshot[name])
        self.start = time.perf_counter() - elapsed

    def add_scales(self, scales: np.ndarray | None) -> None:
        """Loss scaling: steps' (2, k) scales after each step and skipped flags, in order."""
        if scales is None or scales.shape[1] == 0:
            return
        skipped = int(scales[1].sum())
        self.skipped += skipped
        self.result.loss_scale["skipped_steps"] += skipped
        self.result.loss_scale["final_scale"] = float(scales[0, -1])

    def add_losses(self, losses: np.ndarray) -> None:
        self.loss_sum += losses.sum(dtype=np.float64)
        self.loss_count += len(losses)

    def emit(self, at: int, table: np.ndarray) -> None:
        """Send the statistics table (rows, depth + 1) at step ``at`` to the sink; a run whose
        statistics are not finite is marked diverged there and stops."""
        res = self.result
        res.last_stats = self.layout.split(table)
        if at == 0:  # nothing to compare the weights with yet
            for name in self.layout.reading("update"):
                res.last_stats[name] = np.full_like(res.last_stats[name], np.nan)
            res.init_stats = res.last_stats
        self.sink.layers(at, res.last_stats)
        self.logged_at = at
        if res.status != "diverged" and first_nonfinite_layer(res.last_stats, self.layout.signal) is not None:
            self.diverge(at, "non-finite per-layer statistics", record=res.divergence is None)

    def diverge(self, at: int, cause: str, record: bool = True) -> None:
        """The run ends at ``at``; with ``record``, ``cause`` (and where its last statistics
        show the blow-up) is its divergence record."""
        res = self.result
        res.status = "diverged"
        if record:
            res.divergence = _divergence(at, cause, res.last_stats)
        self.alive = False

    def spectrum(self, step: int, singular_values: np.ndarray, seconds: float) -> None:
        """The Jacobian's singular values (examples, k) at ``step``, taken in ``seconds``."""
        self.result.spectra[step] = singular_values
        self.result.jacobian_time_s += seconds
        self.sink.jacobian(step, singular_values)

    def metrics_row(self, step: int, test_loss: float = float("nan"), test_acc: float = float("nan"),
                    at_time: float | None = None) -> None:
        """The metrics row at ``step``: the mean training loss since the previous row; its
        ``wall_time`` is when the step ran (``at_time``, a perf_counter reading), by default now."""
        train_loss = float(self.loss_sum / self.loss_count) if self.loss_count else float("nan")
        self.loss_sum, self.loss_count = 0.0, 0
        self.row_at = step
        self.result.final["train_loss"] = train_loss
        row = {"step": step, "epoch": step / self.schedule.steps_per_epoch, "train_loss": train_loss,
               "test_loss": test_loss, "test_acc": test_acc,
               "wall_time": (time.perf_counter() if at_time is None else at_time) - self.start}
        if self.result.loss_scale is not None:  # the scale now in effect, and the steps skipped since the last row
            row.update(loss_scale=self.result.loss_scale["final_scale"], skipped_steps=self.skipped)
            self.skipped = 0
        self.sink.metrics(row)

    def evaluated(self, step: int, test_loss: float, test_acc: float) -> None:
        """The test set's loss and accuracy at ``step``: its metrics row and the test curve."""
        res = self.result
        self.metrics_row(step, test_loss, test_acc)
        res.final.update(test_loss=test_loss, test_acc=test_acc)
        res.history["step"].append(step)
        res.history["test_loss"].append(test_loss)
        res.history["test_acc"].append(test_acc)
        if step == 0 or test_acc > res.best["test_acc"]:
            res.best = {"test_acc": test_acc, "step": step}
        if step and step == self.schedule.total_steps:  # the last evaluation is the result: the bar shows it
            self.sink.progress(step, step, {"test_acc": test_acc})

    def take_chunk(self, plan: ChunkPlan, losses: np.ndarray, done: int, tables: np.ndarray,
                   scales: np.ndarray | None = None, span: tuple[float, float] | None = None) -> int:
        """Record a chunk: the statistics of each logged step it reached (a logged step inside the
        chunk gets its metrics row here), its losses and, with loss scaling, its steps' scales.
        ``span``: the chunk's start and end (perf_counter); the device reports no per-step times,
        so a logged step inside the chunk is timed by its place in the chunk (steps of one chunk
        take equal time). Returns the step the run is now at."""
        stop = plan.start + done  # plan.stop, or the step it blew up at
        cursor = 0  # losses of the chunk's steps [start, start + cursor) are counted
        for slot, at in enumerate(plan.logs):
            if at > stop:
                break
            if plan.start < at < plan.stop:
                self.add_losses(losses[cursor:at - plan.start])
                self.add_scales(None if scales is None else scales[:, cursor:at - plan.start])
                cursor = at - plan.start
                when = (None if span is None
                        else span[0] + (span[1] - span[0]) * (at - plan.start) / (plan.stop - plan.start))
                self.metrics_row(at, at_time=when)
            self.emit(at, tables[slot])
        self.add_losses(losses[cursor:done])
        self.add_scales(None if scales is None else scales[:, cursor:done])
        self.result.steps = stop
        chunk_loss = float(np.mean(losses[:done])) if done else float("nan")
        self.sink.progress(stop, self.schedule.total_steps,
                           {"loss": chunk_loss, "test_acc": self.result.final["test_acc"],
                            "steps_per_s": stop / max(self.result.train_time_s, 1e-9)})
        return stop


def _start_runs(cfgs: Sequence[RunConfig], sinks: Sequence[Sink], spec: ModelSpec, fns: TrainFns,
                schedule: Schedule, data: Dataset, x: jax.Array, start: float) -> tuple[TrainState, list[RunBook]]:
    """Each run's initial state, stacked over the group, and its book; initializers' traces go to
    the sinks."""
    probe_q0 = float(jnp.mean(jnp.square(x[: cfgs[0].data.probe_size])))
    states, books = [], []
    for c, sink in zip(cfgs, sinks):
        t_init = time.perf_counter()
        st, trace = init_state(c, spec, fns, x)
        result = TrainResult("completed", 0, schedule.total_steps, schedule.steps_per_epoch, 0.0, 0.0, 0.0,
                             group_size=len(cfgs), init_time_s=time.perf_counter() - t_init,
                             init_trace_file=None if trace is None else trace.file, input_dim=data.input_dim,
                             probe_q0=probe_q0, device=device_info(),
                             loss_scale=None if st.loss_scale is None else
                             {"skipped_steps": 0, "final_scale": float(st.loss_scale.scale)})
        if trace is not None:
            sink.init_trace(trace)
        states.append(st)
        books.append(RunBook(sink, result, fns.layout, schedule, start))
    return _stack(states), books


def memory_estimate(cfgs: Sequence[RunConfig], data: Dataset) -> memory.Estimate:
    """``initlab.train.memory.estimate`` for a batchable group, from its configs alone (nothing allocated),
    in the group's number format (so float64 parameters count 8 bytes, as they will in training)."""
    cfg = cfgs[0]
    with context(cfg.model.dtype):
        spec = model_spec(cfg.model, data.input_dim, data.num_classes)
        fns = make_train_fns(cfg, spec, make_schedule(cfg, len(data.y_train)), len(data.y_train), len(cfgs))
        return memory.estimate(cfgs, spec, fns.optimizer, data)


def train(cfg: RunConfig, data: Dataset, sink: Sink, checkpointer: Checkpointer | None = None) -> TrainResult:
    """Train one configuration (a group of one); see ``train_group``."""
    return train_group([cfg], data, [sink], checkpointer)[0]


def train_group(cfgs: Sequence[RunConfig], data: Dataset, sinks: Sequence[Sink],
                checkpointer: Checkpointer | None = None) -> list[TrainResult]:
    """``_train_group`` in the group's number format (float64 runs switch JAX's x64 mode on for
    their own training only)."""
    with context(cfgs[0].model.dtype):
        return _train_group(cfgs, data, sinks, checkpointer)


CHECKPOINT_FORMAT = 1


def _checkpoint(cfgs: Sequence[RunConfig], books: Sequence[RunBook], state: TrainState, prev_params: Params,
                step: int, elapsed: float) -> dict[str, Any]:
    """The whole training state of a group at the chunk stop ``step``, as plain data: the device
    state's leaves (params, optimizer state, data order and key, loss scale) and the previous
    log's weights, each run's book and what its sink holds."""
    leaves = [np.asarray(a) for a in jax.tree.leaves(jax.device_get((state, prev_params)))]
    return {"format": CHECKPOINT_FORMAT, "digests": [config_digest(c) for c in cfgs], "step": step,
            "elapsed": elapsed, "leaves": leaves, "books": [b.snapshot() for b in books],
            "sinks": [b.sink.snapshot() for b in books]}


def _resume(payload: dict[str, Any], cfgs: Sequence[RunConfig], books: Sequence[RunBook], state: TrainState,
            prev_params: Params) -> tuple[TrainState, Params, int]:
    """Put a checkpoint back: the device state (into the structure ``state`` and ``prev_params``
    have), the books and the sinks; returns them and the step to continue from."""
    if payload.get("format") != CHECKPOINT_FORMAT or payload.get("digests") != [config_digest(c) for c in cfgs]:
        raise InitlabError("the checkpoint is of another config or initlab version: delete it (initlab run: run "
                           "without --resume) to start again")
    template, treedef = jax.tree.flatten((state, prev_params))
    leaves = payload["leaves"]
    if len(leaves) != len(template) or any(a.shape != t.shape for a, t in zip(leaves, template)):
        raise InitlabError("the checkpoint's arrays do not match this config's network: run without --resume")
    restored = jax.tree.unflatten(treedef, [jnp.asarray(a, t.dtype) for a, t in zip(leaves, template)])
    for b, book, held in zip(books, payload["books"], payload["sinks"]):
        b.restore(book, payload["elapsed"])
        b.sink.restore(held)
    return restored[0], restored[1], int(payload["step"])


def _train_group(cfgs: Sequence[RunConfig], data: Dataset, sinks: Sequence[Sink],
                 checkpointer: Checkpointer | None = None) -> list[TrainResult]:
    """Train runs that share a ``batch_key`` together on ``data``; each run reports to its sink.

    Per-layer statistics are taken at step 0, every ``log.every`` steps and at the last step, on
    the probe batch (the first ``data.probe_size`` training examples) or, with ``log.stats_on:
    train_batch``, inside the logged step's own forward/backward pass; a metrics row (training
    loss since the previous row) is written at each of those steps and at each epoch end, where
    the test set is evaluated (and at step 0). A run that diverges stops there and is reported as
    diverged; the rest of the group trains on.

    With a ``checkpointer``, the group starts from its last checkpoint if it has one (the chunks
    from there are those the uninterrupted run trains, so the files come out the same), saves one
    at every multiple of ``log.checkpoint_every`` and, when Ctrl-C or SIGTERM interrupts a chunk,
    one at the last chunk's stop before the interruption goes on up.
    """
    start = time.perf_counter()
    if len({batch_key(c) for c in cfgs}) != 1:
        raise ValueError("train_group needs runs that differ only in " + ", ".join(BATCHABLE))
    cfg, n_train = cfgs[0], len(data.y_train)
    schedule = make_schedule(cfg, n_train)
    spec = model_spec(cfg.model, data.input_dim, data.num_classes)
    fns = make_train_fns(cfg, spec, schedule, n_train, len(cfgs))
    x, y = jax.device_put(data.x_train), jax.device_put(data.y_train)
    x_test, y_test = jax.device_put(data.x_test), jax.device_put(data.y_test)

    state, books = _start_runs(cfgs, sinks, spec, fns, schedule, data, x, start)
    prev_params = state.params  # weights at the previous log: the reference of update statistics
    payload = None if checkpointer is None else checkpointer.load()
    resumed_at = 0
    if payload is not None:
        state, prev_params, resumed_at = _resume(payload, cfgs, books, state, prev_params)
    else:
        save_parameters(cfgs, books, state, "init")

    t0 = time.perf_counter()
    runner = ChunkRunner(fns, x, y, state)
    evaluate = fns.evaluate.lower(state.params, state.norm_state, x_test, y_test).compile()
    compile_time = time.perf_counter() - t0
    for b in books:
        b.result.compile_time_s = compile_time

    def live() -> list[RunBook]:
        return [b for b in books if b.alive]

    def measure(members: Sequence[int], at: int) -> None:
        """Statistics of ``members`` at ``at`` without training; their time counts as training's."""
        t_stats = time.perf_counter()
        tables = runner.measure(state, prev_params, at)
        for r in members:
            books[r].emit(at, tables[r])
        for r in members:
            books[r].result.train_time_s += time.perf_counter() - t_stats

    def evaluation(step: int, members: Sequence[RunBook]) -> None:
        loss, acc = (np.asarray(a, np.float64) for a in jax.device_get(evaluate(state.params, state.norm_state,
                                                                                 x_test, y_test)))
        for r, b in enumerate(books):
            if b in members:
                b.evaluated(step, float(loss[r]), float(acc[r]))

    def spectrum(at: Sequence[int]) -> None:
        """Each run's Jacobian spectrum on the first ``log.jacobian`` probe examples, at its step ``at[r]``."""
        if fns.jacobian is None:
            return
        t_j = time.perf_counter()
        sv = np.asarray(jax.device_get(fns.jacobian(state.params, state.norm_state, x[:cfg.log.jacobian])))
        seconds = time.perf_counter() - t_j
        for b, step, values in zip(books, at, sv):
            b.spectrum(step, values, seconds)

    def save_checkpoint(at: int) -> None:
        checkpointer.save(_checkpoint(cfgs, books, state, prev_params, at, time.perf_counter() - books[0].start))

    if payload is None:
        spectrum([0] * len(books))
        if schedule.total_steps == 0:  # otherwise step 0's statistics come out of the first chunk
            measure(range(len(books)), 0)
        evaluation(0, books)

    # The last chunk stop whose host work is done: a consistent point to checkpoint from. Ctrl-C or
    # SIGTERM (errors.Terminated) raises at once while the device trains a chunk and waits for the
    # chunk's books otherwise (errors.InterruptGate); either way the checkpoint is of `stopped_at`
    # (at step 0 too: step 0's evaluation is done, its statistics come with the first chunk).
    stopped_at, booking = resumed_at, False
    with InterruptGate() as gate:
        try:
            for plan in schedule.chunks(resumed_at):
                members = [r for r, b in enumerate(books) if b.alive]
                if not members:
                    break
                t1 = time.perf_counter()
                compiled_before = runner.compile_time_s
                with gate.opened():  # Ctrl-C here leaves `state` as it was at `stopped_at`
                    out = runner.run(state, prev_params, plan, np.array([b.alive for b in books]))
                booking = True
                state, prev_params = out.state, out.prev_params
                replay_compile = runner.compile_time_s - compiled_before
                t2 = time.perf_counter()
                elapsed = t2 - t1 - replay_compile  # the replay's compilation is not training time
                for b in books:
                    b.result.compile_time_s += replay_compile
                for r in members:
                    b = books[r]
                    b.result.train_time_s += elapsed
                    stop = b.take_chunk(plan, out.losses[r], int(out.done[r]), out.tables[r],
                                        None if out.scales is None else out.scales[r], span=(t2 - elapsed, t2))
                    if not out.ok[r]:  # its statistics, loss or update went non-finite at `stop`: it ends there
                        first = b.result.divergence is None  # (non-finite statistics have said so already)
                        if first and b.logged_at != stop:
                            measure([r], stop)  # the statistics of its last finite parameters
                        b.diverge(stop, "non-finite loss or gradient", record=first)
                        if b.row_at != stop:
                            b.metrics_row(stop)
                if not live():
                    break
                if plan.evaluate_at_stop:
                    evaluation(plan.stop, live())
                    for b in live():
                        b.sink.checkpoint()
                elif plan.log_at_stop:
                    for b in live():
                        b.metrics_row(plan.stop)
                stopped_at, booking = plan.stop, False
                if checkpointer is not None and schedule.is_checkpoint(plan.stop):
                    save_checkpoint(plan.stop)
                gate.check()
        except KeyboardInterrupt:
            if checkpointer is not None and not booking and (payload is None or stopped_at > resumed_at):
                save_checkpoint(stopped_at)
            raise
    if schedule.total_steps > 0:
        spectrum([b.result.steps for b in books])
    save_parameters(cfgs, books, state, "end")
    wall = time.perf_counter() - start
    for b in books:
        b.result.wall_time_s = wall
    return [b.result for b in books]
