"""Optimizers, learning-rate schedules and losses, one registry each, all from optax.

References: docs/references.md [polyak1964], [nesterov1983], [sutskever2013], [kingma2015],
[loshchilov2019], [tieleman2012], [loshchilov2017], [goyal2017], [lecun1989], [yang2022].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

from initlab.registry import Registry


@dataclass(frozen=True)
class OptimizerSettings:
    """What an optimizer factory may read: the schedule, momentum and weight decay."""

    learning_rate: optax.Schedule
    momentum: float
    weight_decay: float


def _coupled_decay(opt: optax.GradientTransformation, s: OptimizerSettings) -> optax.GradientTransformation:
    """Classic L2-style decay added to the gradient before the optimizer (not AdamW's decoupled one)."""
    if s.weight_decay == 0:
        return opt
    return optax.chain(optax.add_decayed_weights(s.weight_decay), opt)


# Optimizers that divide by a running second moment plus optax's eps = 1e-8: in float16 eps and
# (1 - β₂)·g² of any |g| below about 1e-2 are 0, so their state cannot be kept in float16.
SECOND_MOMENT = ("adam", "adamw", "rmsprop")
# The mup package's "Adam-like" optimizers (Yang et al. 2022): they normalize each entry of the
# update by its running second moment, so μP scales their learning rates differently from SGD's.
ADAM_LIKE = SECOND_MOMENT

OPTIMIZERS: Registry[Callable[[OptimizerSettings], optax.GradientTransformation]] = Registry(
    "optimizer",
    {
        "sgd": lambda s: _coupled_decay(optax.sgd(s.learning_rate), s),
        # Polyak 1964 heavy-ball momentum; Nesterov 1983 as in Sutskever et al. 2013.
        "momentum": lambda s: _coupled_decay(optax.sgd(s.learning_rate, momentum=s.momentum), s),
        "nesterov": lambda s: _coupled_decay(optax.sgd(s.learning_rate, momentum=s.momentum, nesterov=True), s),
        # Kingma & Ba 2015; Loshchilov & Hutter 2019 (decoupled decay); Tieleman & Hinton 2012.
        "adam": lambda s: _coupled_decay(optax.adam(s.learning_rate), s),
        "adamw": lambda s: optax.adamw(s.learning_rate, weight_decay=s.weight_decay),
        "rmsprop": lambda s: _coupled_decay(optax.rmsprop(s.learning_rate, momentum=s.momentum), s),
    },
)


@dataclass(frozen=True)
class ScheduleSettings:
    """Peak learning rate, total steps and warm-up steps of a run."""

    lr: float
    total_steps: int
    warmup_steps: int


def _scaled(lr, unit: optax.Schedule) -> optax.Schedule:
    """``unit`` (a schedule peaking at 1) times the learning rate ``lr``, a float or a traced value."""
    return lambda step: lr * unit(step)


SCHEDULES: Registry[Callable[[ScheduleSettings], optax.Schedule]] = Registry(
    "schedule",
    {
        "constant": lambda s: optax.constant_schedule(s.lr),
        # Loshchilov & Hutter 2017 (SGDR), without restarts: lr → 0 at the last step.
        "cosine": lambda s: optax.cosine_decay_schedule(s.lr, max(s.total_steps, 1)),
        # Goyal et al. 2017's linear warm-up, then the cosine. Built at a peak of 1 and scaled: optax
        # branches in Python on the peak value, which is traced when a sweep batches runs by lr.
        "warmup_cosine": lambda s: _scaled(
            s.lr, optax.warmup_cosine_decay_schedule(0.0, 1.0, s.warmup_steps, max(s.total_steps, s.warmup_steps + 1))
        ),
    },
)


def cross_entropy(logits, labels, num_classes, targets=None):
    """Softmax cross-entropy with integer labels; per-example values (batch,)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def mse(logits, labels, num_classes, targets=None):
    """Squared error averaged over classes; per-example values (batch,). Targets are one-hot 0/1;
    with ``targets`` a scale s, +s for the true class and -s for the others: LeCun et al. 1989 and
    Efficient BackProp (§4.5) put the targets inside the sigmoid's range, at ±1 for the scaled tanh,
    so that training never drives units into saturation; with ``targets`` a pair (low, high), high
    for the true class and low for the others (0.1/0.9 for sigmoid outputs)."""
    onehot = jax.nn.one_hot(labels, num_classes)
    if targets is None:
        t = onehot
    elif isinstance(targets, tuple | list):
        t = targets[0] + (targets[1] - targets[0]) * onehot
    else:
        t = targets * (2.0 * onehot - 1.0)
    return jnp.mean((logits - t) ** 2, axis=-1)


LOSSES: Registry[Callable] = Registry("loss", {"cross_entropy": cross_entropy, "mse": mse})


def make_loss(name: str, targets: float | tuple[float, float] | None = None) -> Callable:
    """``loss(logits, labels, num_classes) -> (batch,)`` for the loss ``name`` and its targets (a
    scale s for ±s, a (low, high) pair, or None: one-hot)."""
    fn = LOSSES.get(name, "train.loss")
    return lambda logits, labels, num_classes: fn(logits, labels, num_classes, targets)


def per_class(
    make: Callable[[float], optax.GradientTransformation], factors: dict[Any, float], labels: Callable[[Any], Any]
) -> optax.GradientTransformation:
    """Per-layer learning rates (``initlab.nn.parameterizations``): ``optax.multi_transform`` gives
    the parameters ``labels`` puts in each class the optimizer ``make(factor)`` of that class's
    factor."""
    return optax.multi_transform({cls: make(f) for cls, f in factors.items()}, labels)


def build_optimizer(
    name: str, schedule: str, lr: float, total_steps: int, warmup_steps: int, momentum: float, weight_decay: float
) -> optax.GradientTransformation:
    """The optax optimizer ``name`` driven by the learning-rate ``schedule``."""
    sched = SCHEDULES.get(schedule, "train.schedule")(ScheduleSettings(lr, total_steps, warmup_steps))
    return OPTIMIZERS.get(name, "train.optimizer")(OptimizerSettings(sched, momentum, weight_decay))
