"""Activation functions, one registry.

Each entry is an elementwise ``f(x) -> y``. Saturation statistics need the largest slope
``max |f'(x)|`` of each activation; it is measured numerically (``max_slope``) so a new entry
needs no hand-written constant.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from initlab.registry import Registry

# Klambauer et al. 2017, "Self-normalizing neural networks": the constants that make mean 0,
# variance 1 a fixed point under LeCun-normal weights.
SELU_LAMBDA = 1.0507009873554804934
SELU_ALPHA = 1.6732632423543772848


def parametric_relu(negative_slope: float):
    """max(x, 0) + negative_slope * min(x, 0): ReLU (slope 0; Nair & Hinton 2010) and leaky ReLU
    (Maas et al. 2013) are both this function."""

    def f(x):
        return jnp.where(x >= 0, x, negative_slope * x)

    return f


def scaled_tanh(x):
    """1.7159 * tanh(2x/3), so that f(±1) = ±1 (LeCun et al. 1998, "Efficient BackProp")."""
    return 1.7159 * jnp.tanh(2.0 * x / 3.0)


def selu(x):
    """Scaled exponential linear unit (Klambauer et al. 2017)."""
    return SELU_LAMBDA * jnp.where(x > 0, x, SELU_ALPHA * jnp.expm1(jnp.minimum(x, 0.0)))


def softsign(x):
    """x / (1 + |x|), the polynomial-tailed alternative to tanh in Glorot & Bengio 2010."""
    return x / (1.0 + jnp.abs(x))


def linear(x):
    """The identity: a deep linear network (Saxe et al. 2014)."""
    return x


ACTIVATIONS: Registry = Registry(
    "activation",
    {
        "linear": linear,
        "relu": parametric_relu(0.0),
        "leaky_relu": parametric_relu(0.01),
        "elu": jax.nn.elu,  # Clevert et al. 2016
        "selu": selu,
        "gelu": functools.partial(jax.nn.gelu, approximate=False),  # Hendrycks & Gimpel 2016
        "swish": jax.nn.silu,  # Ramachandran et al. 2017; Elfwing et al. 2018 (SiLU)
        "softplus": jax.nn.softplus,
        "sigmoid": jax.nn.sigmoid,
        "tanh": jnp.tanh,
        "scaled_tanh": scaled_tanh,
        "softsign": softsign,
    },
    aliases={"silu": "swish"},
)


def get_activation(name: str, key: str = "model.activation"):
    """The activation function called ``name`` (ConfigError listing valid names otherwise)."""
    return ACTIVATIONS.get(name, key)


def derivative(f, x):
    """Elementwise f'(x) by forward-mode differentiation (same shape as x)."""
    return jax.jvp(f, (x,), (jnp.ones_like(x),))[1]


@functools.cache
def max_slope(name: str) -> float:
    """max |f'(x)| over a dense grid on [-20, 20]; the reference for "saturated" (|f'| < 1% of it)."""
    f = ACTIVATIONS[name]
    with jax.ensure_compile_time_eval():  # a constant, also when first asked for while tracing
        grid = jnp.linspace(-20.0, 20.0, 400_001)
        return float(np.max(np.abs(np.asarray(derivative(f, grid)))))


@functools.cache
def image(name: str) -> tuple[float, float]:
    """The activation's range (lo, hi), measured numerically like ``max_slope``: the extremes of f
    over a dense grid on [-20, 20] and at ±10⁶, a side being unbounded (±inf) where |f(±10⁶)|
    exceeds 10³, and a bounded side rounded outward to 4 decimals (softsign's ±1 is approached, not
    reached)."""
    f = ACTIVATIONS[name]
    with jax.ensure_compile_time_eval():
        grid = jnp.concatenate([jnp.linspace(-20.0, 20.0, 400_001), jnp.asarray([-1e6, 1e6])])
        y = np.asarray(f(grid), np.float64)
    lo, hi = float(np.min(y)), float(np.max(y))
    return (-math.inf if lo < -1e3 else math.floor(lo * 1e4) / 1e4 + 0.0,
            math.inf if hi > 1e3 else math.ceil(hi * 1e4) / 1e4 + 0.0)
