"""The training program: what one run's training step computes, built once for a group's static
choices (``make_program``) as a frozen ``Program`` whose methods are the traced pieces a chunk
(``initlab.train.chunk``) strings together: the mini-batch of a step, the forward/backward pass
(with the per-layer statistics when asked), the update, the plain training step and the evaluation.

Nothing here is jitted: ``initlab.train.device`` compiles chunks of these steps for a group.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from initlab.config import RunConfig
from initlab.nn.loss_scale import LossScaling, all_finite, from_config
from initlab.nn.model import ModelSpec, NormState, Params
from initlab.nn.optimizers import ADAM_LIKE, build_optimizer, make_loss, per_class
from initlab.nn.parameterizations import class_factors, get_parameterization, param_classes
from initlab.nn.regularizers import max_norm
from initlab.stats.statistics import Layout
from initlab.train.evaluate import loss_and_accuracy
from initlab.train.schedule import Schedule
from initlab.train.step import loss_and_grads, reference_values, table_of

# fold_in index of the dropout masks' stream in a run's data key (epochs use 0, 1, 2, ...).
DROPOUT_STREAM = 2**31 - 1


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


def select(ok, a, b):
    """``a`` where ``ok`` (a traced bool), else ``b``, leaf by leaf."""
    return jax.tree.map(lambda u, v: jnp.where(ok, u, v), a, b)


@dataclass(frozen=True)
class Optimizer:
    """A group's optimizer as a function of a run's (traced) peak learning rate: ``optimizer(lr)``.

    Every optax optimizer here applies the learning rate as its last scaling, so a traced per-run
    rate gives exactly the update a constant one would. ``factors``: each parameter class's
    learning-rate factor (``nn.parameterizations.class_factors``); all 1, the plain optimizer.
    """

    name: str
    schedule: str
    total_steps: int
    warmup_steps: int
    momentum: float
    weight_decay: float
    factors: dict[Any, float]

    def __call__(self, lr) -> optax.GradientTransformation:
        """The optax transformation at peak learning rate ``lr``."""
        if all(f == 1.0 for f in self.factors.values()):
            return build_optimizer(
                self.name, self.schedule, lr, self.total_steps, self.warmup_steps, self.momentum, self.weight_decay
            )
        return per_class(functools.partial(self.of_class, lr), self.factors, param_classes)

    def of_class(self, lr, factor: float) -> optax.GradientTransformation:
        """A parameter class's optimizer: its rate, and weight decay such that lr × decay is kept
        (as the mup package does)."""
        return build_optimizer(
            self.name,
            self.schedule,
            lr * factor,
            self.total_steps,
            self.warmup_steps,
            self.momentum,
            self.weight_decay / factor,
        )


@dataclass(frozen=True)
class Program:
    """One run's training computation for a group's static choices; its methods are traced inside
    the group's jitted chunk (``initlab.train.chunk.steps``) and evaluation."""

    spec: ModelSpec
    layout: Layout  # the statistics the group computes and the rows of their table
    loss_fn: Callable  # (logits, labels, num_classes) -> (batch,)
    scaling: LossScaling
    optimizer: Optimizer
    n_train: int  # training examples
    batch_size: int
    steps_per_epoch: int
    log_every: int
    probe_size: int
    on_batch: bool  # log.stats_on: train_batch (statistics inside a logged step's own pass)
    max_norm: float | None  # train.max_norm

    @property
    def scaled(self) -> bool:
        """The loss is scaled (a constant or dynamic loss scale)."""
        return self.scaling.active

    @property
    def table_shape(self) -> tuple[int, int]:
        """One logged step's statistics table: (rows, depth + 1)."""
        return self.layout.rows, self.spec.num_layers

    def batch_at(self, state: TrainState, step):
        """The example order in effect at ``step`` (a new shuffle at each epoch start) and the
        indices of its mini-batch."""
        epoch, i = step // self.steps_per_epoch, step % self.steps_per_epoch
        order = jax.lax.cond(  # the step is shared by the group, so this stays a real branch
            (i == 0) & (step > 0),
            lambda: jax.random.permutation(jax.random.fold_in(state.data_key, epoch), self.n_train).astype(jnp.int32),
            lambda: state.order,
        )
        return order, jax.lax.dynamic_slice(order, (i * self.batch_size,), (self.batch_size,))

    def minibatch(self, state: TrainState, step, x, y):
        """``step``'s mini-batch of ``state``'s run: (example order, (inputs, labels, dropout key))."""
        order, idx = self.batch_at(state, step)
        drop_key = jax.random.fold_in(jax.random.fold_in(state.data_key, DROPOUT_STREAM), step)
        return order, (x[idx], y[idx], drop_key)

    def forward_backward(self, params, norm_state, batch, update=None, scale=None, holds_batch=None, z0=None):
        """The forward/backward pass of ``params`` on ``batch`` (inputs, labels, dropout key or
        None): (loss, gradient, new norm state, table). Given the layers' ``update`` statistics
        since the previous log, the same pass also yields the per-layer statistics table of these
        weights on this batch, else table is None; given the probe's step-0 pre-activations ``z0``
        (``batch`` then being the probe), the table has the reference statistics too. ``scale``:
        the run's LossScaleState or None."""
        layout, spec = self.layout, self.spec
        xb, yb, key = batch
        ref = None if z0 is None else reference_values(layout, spec, params, norm_state, xb, z0)
        loss, norm_state, grads, raw = loss_and_grads(
            spec,
            self.loss_fn,
            params,
            norm_state,
            xb,
            yb,
            key=key,
            layout=None if update is None else layout,
            loss_scale=None if scale is None else scale.scale,
            holds_batch=holds_batch,
        )
        table = None if raw is None else table_of(layout, params, raw, update, ref)
        return loss, grads, norm_state, table

    def update_state(self, state: TrainState, grads, norm_state, order) -> TrainState:
        """``state`` after applying ``grads`` (and taking the pass's ``norm_state`` and the
        epoch's ``order``); with loss scaling, a skipped step keeps all but the order."""
        updates, opt_state = self.optimizer(state.lr).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if self.max_norm is not None:
            params = max_norm(params, self.max_norm)
        new = state._replace(params=params, norm_state=norm_state, opt_state=opt_state, order=order)
        if not self.scaled:
            return new
        # Loss scaling: a skipped step (non-finite gradient under dynamic scaling) keeps the
        # parameters, optimizer and normalization state; the data order moves on.
        loss_scale, apply_it = self.scaling.adjust(state.loss_scale, all_finite(grads))
        return select(apply_it, new, state._replace(order=order))._replace(loss_scale=loss_scale)

    def train_step(self, state: TrainState, step, x, y):
        """One update of one run on its next mini-batch: (state, loss)."""
        order, batch = self.minibatch(state, step, x, y)
        loss, grads, norm_state, _ = self.forward_backward(
            state.params, state.norm_state, batch, scale=state.loss_scale
        )
        return self.update_state(state, grads, norm_state, order), loss

    def evaluate(self, params, norm_state, x, y):
        """(mean loss, accuracy) of ``params`` on ``x``, ``y`` (``initlab.train.evaluate``)."""
        return loss_and_accuracy(self.spec, self.loss_fn, params, norm_state, x, y)


def make_program(cfg: RunConfig, spec: ModelSpec, schedule: Schedule, n_train: int) -> Program:
    """The training program of a group sharing ``cfg``'s static choices, with model ``spec``,
    ``schedule`` (``initlab.train.schedule.make_schedule``) and ``n_train`` training examples."""
    t = cfg.train
    scaling = from_config(t.loss_scale, t.loss_scale_init, t.loss_scale_period)
    # Under dynamic scaling a non-finite gradient is a skipped step, not a divergence: only the
    # forward signal is checked (a run still overflowing at the smallest scale applies the step,
    # and its parameters go non-finite).
    layout = Layout(
        cfg.log.stats,
        cfg.log.histograms,
        spec.dtype,
        signal=("forward",) if scaling.kind == "dynamic" else ("forward", "backward"),
    )
    param = get_parameterization(cfg.model.parameterization)
    factors = class_factors(param, cfg.model.width, cfg.model.base_width, t.optimizer in ADAM_LIKE)
    optimizer = Optimizer(
        t.optimizer, t.schedule, schedule.total_steps, t.warmup_steps, t.momentum, t.weight_decay, factors
    )
    return Program(
        spec=spec,
        layout=layout,
        loss_fn=make_loss(t.loss, t.targets),
        scaling=scaling,
        optimizer=optimizer,
        n_train=n_train,
        batch_size=t.batch_size,
        steps_per_epoch=schedule.steps_per_epoch,
        log_every=schedule.log_every,
        probe_size=cfg.data.probe_size,
        on_batch=cfg.log.stats_on == "train_batch",
        max_norm=t.max_norm,
    )
