"""Evaluation: a network's test loss and accuracy, the one function training evaluates with and
the one a saved network is evaluated with afterwards (``evaluate_params``, without building the
training program), so that both give the same numbers."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from initlab.config import RunConfig
from initlab.nn.formats import context
from initlab.nn.model import ModelSpec, NormState, Params, apply
from initlab.nn.optimizers import make_loss
from initlab.train.group import over_runs

# evaluate's arguments mapped over a group's runs: (params, norm_state) per run, the data shared.
EVALUATE_AXES = (0, 0, None, None)


def loss_and_accuracy(
    spec: ModelSpec, loss_fn: Callable, params: Params, norm_state: NormState, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The mean loss (``loss_fn``, as ``nn.optimizers.make_loss`` gives it) and the accuracy of
    ``params`` on ``x``, ``y``, in inference mode (no dropout, normalization's running state)."""
    logits, _, _ = apply(spec, params, norm_state, x, train=False)
    loss = jnp.mean(loss_fn(logits, y, spec.num_classes))
    return loss, jnp.mean(jnp.argmax(logits, axis=-1) == y)


def evaluate_params(
    cfg: RunConfig, spec: ModelSpec, params: Params, norm_state: NormState, x_test: np.ndarray, y_test: np.ndarray
) -> dict[str, float]:
    """``{"test_loss", "test_acc"}`` of one run's ``params`` and ``norm_state`` (host arrays, as
    saved) on the test set, in ``cfg``'s number format: the jitted program a group of one
    evaluates with in training, so a network saved at an evaluated step gives its numbers again."""
    loss_fn = make_loss(cfg.train.loss, cfg.train.targets)
    with context(cfg.model.dtype):
        evaluate = jax.jit(over_runs(functools.partial(loss_and_accuracy, spec, loss_fn), EVALUATE_AXES, 1))
        stacked = jax.tree.map(lambda a: a[None], (params, norm_state))
        loss, acc = evaluate(*stacked, jax.device_put(x_test), jax.device_put(y_test))
    return {"test_loss": float(np.asarray(loss)[0]), "test_acc": float(np.asarray(acc)[0])}
