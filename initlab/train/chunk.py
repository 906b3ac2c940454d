"""A chunk: up to ``PROGRESS_CHUNK`` training steps of one run inside one device loop, with the
per-layer statistics of every logged step (``ChunkIn`` -> ``ChunkOut``).

The loop walks the chunk in segments, each from a multiple of ``log.every`` (or the chunk's start)
to the next: a segment starts with its measurement (``measurement``: the statistics of the state
at a logged step, on the probe or inside that step's own pass), then takes plain training steps
(``plain_steps``). Every step goes through a ``StepPolicy``: ``FAST`` applies them unchecked (the
chunk is checked once at its end), ``GUARDED`` applies a step only if it is finite and freezes a
run at its first non-finite one. ``initlab.train.device`` compiles ``steps`` under each policy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from initlab.nn.model import Params
from initlab.train.program import Program, TrainState, select
from initlab.train.schedule import LOG_BUFFER, PROGRESS_CHUNK
from initlab.train.step import update_values


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


def fast(carry: Carry, step: Step) -> Carry:
    """Apply every step unchecked; the chunk is checked once at its end (``fast_end``)."""
    return Carry(step.state, step.prev_params, carry.ok & step.signal_ok, carry.done)


def fast_end(out: ChunkOut, alive, n_steps) -> ChunkOut:
    """The fast chunk's one check: its losses and final parameters finite; every live run did
    ``n_steps`` steps."""
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


class Walk(NamedTuple):
    """What every part of one run's chunk reads: the program, the step policy, the chunk's first
    step and number of steps (traced), and the training set."""

    program: Program
    policy: StepPolicy
    step0: Any
    n_steps: Any
    x: jax.Array
    y: jax.Array


def put(bufs, j, loss, before: TrainState, after: TrainState):
    """Step j's loss into the chunk's buffers and, with loss scaling, the scale after it and
    whether it was skipped (the scale fell)."""
    losses, scales = bufs
    losses = losses.at[j].set(loss.astype(jnp.float32))
    if scales is not None:
        s0, s1 = before.loss_scale.scale, after.loss_scale.scale
        scales = scales.at[:, j].set(jnp.stack([s1, (s1 < s0).astype(jnp.float32)]))
    return losses, scales


def steps(program: Program, inp: ChunkIn, x, y, policy: StepPolicy) -> ChunkOut:
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
    walk = Walk(program, policy, step0, n_steps, x, y)
    tables = jnp.zeros((LOG_BUFFER + 1, *program.table_shape), jnp.float32)
    losses = (
        jnp.zeros((PROGRESS_CHUNK + 1,), jnp.float32),
        jnp.zeros((2, PROGRESS_CHUNK + 1), jnp.float32) if program.scaled else None,
    )
    n_iter = n_steps + jnp.asarray(inp.measure_end).astype(n_steps.dtype)  # the end's measurement is one more
    start = Carry(inp.state, inp.prev_params, inp.alive, jnp.zeros((), jnp.int32))
    carry = (start, losses, tables, jnp.zeros((), jnp.int32), jnp.zeros((), n_steps.dtype))
    c, (losses, scales), tables, _, _ = jax.lax.while_loop(
        lambda c: c[-1] < n_iter, functools.partial(segment, walk), carry
    )
    return policy.end(ChunkOut(c.state, c.prev_params, c.ok, losses, c.done, tables, scales), inp.alive, n_steps)


def segment(walk: Walk, carry):
    """From step j: its measurement, if any, then plain steps up to the next log or the chunk's end."""
    c, losses, tables, slot, j = carry
    every, step0, n_steps = walk.program.log_every, walk.step0, walk.n_steps
    (c, losses, tables, slot), first = measurement(walk, j, c, losses, tables, slot)
    end = jnp.minimum(n_steps, ((step0 + j) // every + 1) * every - step0)  # the next log, or the chunk's end
    c, losses = plain_steps(walk, first, end, c, losses)
    return c, losses, tables, slot, jnp.where(j < n_steps, end, j + 1)


def measurement(walk: Walk, j, c: Carry, losses, tables, slot):
    """A segment's start: at a multiple of ``log_every``, or at the end's measurement
    (j == n_steps, where nothing is trained), the statistics of the state go into the next
    slot: from a pass of the probe, or from the logged step's own pass. With train_batch
    the segment's first step is taken here whether or not it is logged (a segment that
    does not start at a log, the chunk's first, takes it unlogged). The branch is shared by
    the group: a real branch, not both sides. Returns the carry and the first step still
    to take."""
    program = walk.program
    st, prev = c.state, c.prev_params
    s = walk.step0 + j
    last = j == walk.n_steps
    is_log = (s % program.log_every == 0) | last

    # prev_params move to this step's weights, and the update statistics they were the
    # reference of are taken, outside the branch, and the branch reads the moved copy; the
    # update is applied outside it too. Ordered so by data, XLA moves and updates the weights
    # in place instead of copying the weights and prev_params at every segment (one run on the
    # training batch: temporaries 3.0 -> 1.2 copies of the weights; a group of 3: 4.9 -> 2.9).
    update = update_values(program.layout, st.params, prev)
    new_prev = select(is_log, st.params, prev)
    measure = _on_batch if program.on_batch else _on_probe
    new, loss, stepped, losses, tables, signal_ok = measure(
        walk, j, s, st, update, new_prev, is_log, last, losses, tables, slot
    )
    c = walk.policy.accept(c, Step(new, new_prev, loss, signal_ok, stepped))
    return (c, losses, tables, slot + is_log.astype(jnp.int32)), j + stepped.astype(j.dtype)


def _record(program: Program, tables, table, slot):
    """``table`` into slot ``slot`` of the buffer, and whether its signal rows are finite."""
    return jax.lax.dynamic_update_index_in_dim(tables, table, slot, 0), program.layout.signal_finite(table)


def _on_batch(walk: Walk, j, s, st: TrainState, update, new_prev, is_log, last, losses, tables, slot):
    """``measurement`` with train_batch: step j's (the group's step ``s``) own pass, logged or
    not, and its update (but at the end's measurement, j == n_steps, which is not applied)."""
    program = walk.program
    order, batch = program.minibatch(st, s, walk.x, walk.y)

    def logged(at_log, params, tables):  # at_log: the weights, as moved to prev_params
        loss, grads, norm_state, table = program.forward_backward(at_log, st.norm_state, batch, update, st.loss_scale)
        return (loss, grads, norm_state, *_record(program, tables, table, slot))

    def plain(at_log, params, tables):
        return (
            *program.forward_backward(params, st.norm_state, batch, scale=st.loss_scale)[:3],
            tables,
            jnp.bool_(True),
        )

    loss, grads, norm_state, tables, signal_ok = jax.lax.cond(is_log, logged, plain, new_prev, st.params, tables)
    # the segment's first step; the end's measurement (j == n_steps) is not applied
    new = select(last, st, program.update_state(st, grads, norm_state, order))
    stepped = ~last
    losses = put(losses, j, jnp.where(stepped, loss, 0.0), st, new)
    return new, loss, stepped, losses, tables, signal_ok


def _on_probe(walk: Walk, j, s, st: TrainState, update, new_prev, is_log, last, losses, tables, slot):
    """``measurement`` on the probe: a pass of the first ``probe_size`` training examples at a
    log; no step is taken."""
    program = walk.program

    def logged(at_log, tables):
        probe = (walk.x[: program.probe_size], walk.y[: program.probe_size], None)
        return _record(
            program,
            tables,
            program.forward_backward(
                at_log, st.norm_state, probe, update, st.loss_scale, holds_batch=program.batch_size, z0=st.z0
            )[3],
            slot,
        )

    tables, signal_ok = jax.lax.cond(is_log, logged, lambda at_log, tables: (tables, jnp.bool_(True)), new_prev, tables)
    return st, jnp.zeros((), jnp.float32), jnp.bool_(False), losses, tables, signal_ok


def plain_steps(walk: Walk, j0, j1, c: Carry, losses):
    """Plain steps j0..j1-1, the loop body a bare training step (prev_params stay out of
    the loop: carrying them would cost a copy of the weights)."""
    program, policy = walk.program, walk.policy

    def body(j, carry):
        c, losses = carry
        new, loss = program.train_step(c.state, walk.step0 + j, walk.x, walk.y)
        return (
            policy.accept(c, Step(new, None, loss, jnp.bool_(True), jnp.bool_(True))),
            put(losses, j, loss, c.state, new),
        )

    inner, losses = jax.lax.fori_loop(j0, j1, body, (c._replace(prev_params=None), losses))
    return inner._replace(prev_params=c.prev_params), losses
