"""Group batching: which runs train together, and how a function maps over a group's runs.

A group is one or more runs that share every shape and static choice and differ only in seed,
initializer, init arguments or learning rate (``batch_key``). Their states are stacked along a
leading run axis (``stack``) and trained by one ``jax.vmap``-ed computation (``over_runs``); a
group of one runs the same function on the squeezed arguments.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initlab.config import RunConfig, to_dict
from initlab.nn.parameterizations import get_parameterization

# Fields in which runs of one group may differ: they only change the initial values and the
# learning rate, not the compiled program.
BATCHABLE = (
    "name",
    "seed",
    "model.init",
    "model.init_args",
    "model.bias_init",
    "model.bias_init_args",
    "train.lr",
    "log.out",
)


# ...except where the initializer's σ_w² is a forward multiplier of the program (ntk).
IN_PROGRAM_UNDER_UNIT_WEIGHTS = ("model.init", "model.init_args")


def batch_key(cfg: RunConfig) -> str:
    """Runs with equal keys can train together in one vmapped group."""
    d = to_dict(cfg)
    unit = get_parameterization(cfg.model.parameterization).unit_weights
    for dotted in BATCHABLE:
        if unit and dotted in IN_PROGRAM_UNDER_UNIT_WEIGHTS:
            continue
        section, _, leaf = dotted.rpartition(".")
        (d[section] if section else d).pop(leaf)
    return json.dumps(d, sort_keys=True)


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


def stack(trees: Sequence[Any]) -> Any:
    """The runs' pytrees ``trees`` stacked along a new leading run axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def pick(mask: np.ndarray, a: Any, b: Any) -> Any:
    """Per run (leading axis): ``a`` where ``mask``, else ``b``."""
    m = jnp.asarray(mask)
    return jax.tree.map(lambda u, v: jnp.where(m.reshape(m.shape + (1,) * (u.ndim - 1)), u, v), a, b)
