"""Regularizers that act on activations or weights rather than on the loss: dropout (one registry)
and the max-norm constraint.

References: docs/references.md [srivastava2014], [klambauer2017], [srebro2005], [hinton2012].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from initlab.nn.activations import SELU_ALPHA, SELU_LAMBDA
from initlab.nn.params import is_affine
from initlab.registry import Registry

# (key, a (batch, width), rate) -> a with units dropped
DropoutFn = Callable[[jax.Array, jax.Array, float], jax.Array]


def standard_dropout(key: jax.Array, a: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout (Srivastava et al. 2014): each unit is zeroed with probability ``rate`` and
    the survivors are scaled by 1/(1 - rate), so the expected activation is unchanged and nothing
    needs rescaling at test time."""
    keep = jax.random.bernoulli(key, 1.0 - rate, a.shape)
    return jnp.where(keep, a / (1.0 - rate), 0.0)


def alpha_dropout_affine(rate: float) -> tuple[float, float, float]:
    """(a', A, B) of alpha-dropout (Klambauer et al. 2017, §"New Dropout Technique"): dropped units
    are set to a' = -λα, the SELU's negative saturation value, and y = A·x + B restores zero mean and
    unit variance for inputs of mean 0 and variance 1, with q = 1 - rate:
    A = (q + a'² q (1 - q))^(-1/2), B = -A (1 - q) a'."""
    q = 1.0 - rate
    a_prime = -SELU_LAMBDA * SELU_ALPHA
    scale = 1.0 / math.sqrt(q + a_prime**2 * q * (1.0 - q))
    return a_prime, scale, -scale * (1.0 - q) * a_prime


def alpha_dropout(key: jax.Array, a: jax.Array, rate: float) -> jax.Array:
    """Alpha-dropout (Klambauer et al. 2017): keeps the mean and variance of SELU activations
    (the self-normalizing fixed point), where standard dropout would change the variance."""
    a_prime, scale, shift = alpha_dropout_affine(rate)
    keep = jax.random.bernoulli(key, 1.0 - rate, a.shape)
    return scale * jnp.where(keep, a, a_prime) + shift


DROPOUTS: Registry[DropoutFn] = Registry("dropout kind", {"standard": standard_dropout, "alpha": alpha_dropout})


def get_dropout(name: str, key: str = "model.dropout_kind") -> DropoutFn:
    """The dropout called ``name`` (ConfigError listing valid names otherwise)."""
    return DROPOUTS.get(name, key)


def max_norm(params: Any, bound: float) -> Any:
    """The max-norm constraint (Srebro & Shraibman 2005; used with dropout by Hinton et al. 2012 and
    Srivastava et al. 2014): in every affine layer of ``params`` (found by type, stacked
    (layers, fan_in, fan_out) ones included), every unit's incoming weight vector (a column of the
    weight matrix) whose L2 norm exceeds ``bound`` is scaled back onto the ball of radius ``bound``;
    biases and all other parameters are unchanged."""

    def project(node):
        if not is_affine(node):
            return node
        w = node.weight()
        norms = jnp.sqrt(jnp.sum(jnp.square(w), axis=-2, keepdims=True))  # (..., 1, fan_out)
        return node.scaled(jnp.minimum(1.0, bound / jnp.maximum(norms, 1e-12)))

    return jax.tree.map(project, params, is_leaf=is_affine)
