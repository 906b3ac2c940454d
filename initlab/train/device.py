"""A group's device programs: the training program (``initlab.train.program``) compiled for the
group, each piece mapped over its runs (``initlab.train.group.over_runs``): the chunk under the
fast and the guarded step policy, the evaluation, the Jacobian spectrum and the reference
pre-activations; and each run's initial state."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from initlab.config import RunConfig
from initlab.nn.initializers import Trace
from initlab.nn.loss_scale import LossScaling
from initlab.nn.model import ModelSpec, pre_activations
from initlab.stats.spectrum import applies as spectrum_applies
from initlab.stats.spectrum import singular_values_fn
from initlab.stats.statistics import Layout
from initlab.train.build import init_params_traced
from initlab.train.chunk import CHUNK_AXES, FAST, GUARDED, steps
from initlab.train.evaluate import EVALUATE_AXES
from initlab.train.group import over_runs
from initlab.train.program import TrainState, make_program
from initlab.train.schedule import Schedule


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
    """Build the training chunk, evaluation and statistics for a group of ``n_runs`` sharing
    ``cfg``'s static choices (``initlab.train.program.make_program``), jitted over its runs."""
    program = make_program(cfg, spec, schedule, n_train)
    chunk_axes = (CHUNK_AXES, None, None)
    return TrainFns(
        layout=program.layout,
        chunk=jax.jit(over_runs(functools.partial(steps, program, policy=FAST), chunk_axes, n_runs)),
        guarded_chunk=jax.jit(over_runs(functools.partial(steps, program, policy=GUARDED), chunk_axes, n_runs)),
        evaluate=jax.jit(over_runs(program.evaluate, EVALUATE_AXES, n_runs)),
        optimizer=program.optimizer,
        jacobian=jax.jit(over_runs(singular_values_fn(spec), (0, 0, None), n_runs))
        if cfg.log.jacobian > 0 and spectrum_applies(spec) is None
        else None,
        scaling=program.scaling if program.scaled else None,
        pre_activations=jax.jit(functools.partial(pre_activations, spec)) if program.layout.needs_reference else None,
    )


def init_state(cfg: RunConfig, spec: ModelSpec, fns: TrainFns, x_train: jax.Array) -> tuple[TrainState, Trace | None]:
    """One run's initial state (parameters from its own initializer and seed; data-dependent
    initializers see ``x_train``) and its initializer's trace."""
    n_train = x_train.shape[0]
    init_key, data_key = jax.random.split(jax.random.PRNGKey(cfg.seed))
    params, norm_state, trace = init_params_traced(spec, cfg.model, init_key, x_train)
    lr = jnp.asarray(cfg.train.lr, jnp.float32)
    order = jax.random.permutation(jax.random.fold_in(data_key, 0), n_train).astype(jnp.int32)
    loss_scale = None if fns.scaling is None else fns.scaling.initial()
    z0 = (
        None if fns.pre_activations is None else fns.pre_activations(params, norm_state, x_train[: cfg.data.probe_size])
    )
    return TrainState(params, norm_state, fns.optimizer(lr).init(params), order, data_key, lr, loss_scale, z0), trace
