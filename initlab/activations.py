"""Activation functions, one registry.

Each entry is an elementwise ``f(x) -> y``. Saturation statistics need the largest slope
``max |f'(x)|`` of each activation; it is measured numerically (``max_slope``) so a new entry
needs no hand-written constant.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Shape:
    """A kernel-shaping transformation of an activation (``initlab.shaping`` solves for it):
    φ̂(x) = output_scale · (φ(input_scale · x + input_shift) + output_shift), where φ is the registry
    activation or, when ``negative_slope`` is set, the leaky ReLU of that slope (TAT's tailored
    rectifier; Zhang et al. 2022). DKS (Martens et al. 2021) sets all four numbers."""

    method: str
    input_scale: float = 1.0
    input_shift: float = 0.0
    output_shift: float = 0.0
    output_scale: float = 1.0
    negative_slope: float | None = None

    def wrap(self, f):
        """φ̂ of ``f`` (already the leaky ReLU of ``negative_slope`` when that is set)."""
        a, b, c, d = self.input_scale, self.input_shift, self.output_shift, self.output_scale
        return lambda x: d * (f(a * x + b) + c)

    def describe(self) -> str:
        """The transformation as one line of numbers."""
        parts = [] if self.negative_slope is None else [f"negative slope {self.negative_slope:.6g}"]
        parts += [f"{k.replace('_', ' ')} {getattr(self, k):.6g}" for k in
                  ("input_scale", "input_shift", "output_shift", "output_scale")]
        return ", ".join(parts)


def activation_fn(name: str, shape: Shape | None = None):
    """The elementwise function of registry activation ``name``, transformed by ``shape`` when given."""
    if shape is None:
        return ACTIVATIONS[name]
    base = ACTIVATIONS[name] if shape.negative_slope is None else parametric_relu(shape.negative_slope)
    return shape.wrap(base)


@functools.cache
def numeric(name: str, shape: Shape | None = None):
    """φ, φ' and φ'' of ``activation_fn(name, shape)`` as float64 functions of numpy arrays (for
    the quadratures of ``initlab.theory`` and ``initlab.shaping``)."""
    f = activation_fn(name, shape)

    def run(fn):
        def call(x: np.ndarray) -> np.ndarray:
            with jax.enable_x64(True):
                return np.asarray(fn(jnp.asarray(x, jnp.float64)))

        return call

    return run(f), run(lambda x: derivative(f, x)), run(lambda x: derivative(lambda y: derivative(f, y), x))


N_NODES = 200  # Gauss–Legendre nodes on each half-line; 2-D integrals use the tensor product
Z_MAX = 12.0  # the Gaussian measure beyond ±12 is below 1e-32


@functools.cache
def gaussian_nodes(n: int = N_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of ∫Dz f(z) ≈ Σ w_i f(z_i) for the standard Gaussian measure Dz.

    Gauss–Legendre on [−Z_MAX, 0] and [0, Z_MAX] with the Gaussian density in the weights: every
    registry activation is smooth except at 0 (ReLU's kink, SELU's and ELU's jump in slope), and
    splitting there keeps the rule accurate where Gauss–Hermite is not (SELU's χ₁ is off by 10%
    with 151 Hermite nodes)."""
    x, w = np.polynomial.legendre.leggauss(n)
    half = Z_MAX / 2
    z = np.concatenate([(x - 1) * half, (x + 1) * half])
    weights = np.concatenate([w, w]) * half * np.exp(-z**2 / 2) / np.sqrt(2 * np.pi)
    return z, weights


def derivative(f, x):
    """Elementwise f'(x) by forward-mode differentiation (same shape as x)."""
    return jax.jvp(f, (x,), (jnp.ones_like(x),))[1]


@functools.cache
def max_slope(name: str, shape: Shape | None = None) -> float:
    """max |f'(x)| over a dense grid on [-20, 20]; the reference for "saturated" (|f'| < 1% of it)."""
    f = activation_fn(name, shape)
    with jax.ensure_compile_time_eval():  # a constant, also when first asked for while tracing
        grid = jnp.linspace(-20.0, 20.0, 400_001)
        return float(np.max(np.abs(np.asarray(derivative(f, grid)))))


@functools.cache
def image(name: str, shape: Shape | None = None) -> tuple[float, float]:
    """The activation's range (lo, hi), measured numerically like ``max_slope``: the extremes of f
    over a dense grid on [-20, 20] and at ±10⁶, a side being unbounded (±inf) where |f(±10⁶)|
    exceeds 10³, and a bounded side rounded outward to 4 decimals (softsign's ±1 is approached, not
    reached)."""
    f = activation_fn(name, shape)
    with jax.ensure_compile_time_eval():
        grid = jnp.concatenate([jnp.linspace(-20.0, 20.0, 400_001), jnp.asarray([-1e6, 1e6])])
        y = np.asarray(f(grid), np.float64)
    lo, hi = float(np.min(y)), float(np.max(y))
    return (-math.inf if lo < -1e3 else math.floor(lo * 1e4) / 1e4 + 0.0,
            math.inf if hi > 1e3 else math.ceil(hi * 1e4) / 1e4 + 0.0)
