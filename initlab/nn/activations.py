"""Activation functions, one registry.

Each entry is an elementwise ``f(x) -> y`` (an ``Activation``, called like the function) with the
points where it is not smooth, which the Gaussian quadratures split at, and, where one is known, its
Gaussian kernel in closed form (``Kernel``: ReLU's and linear's arc-cosine kernels, erf's arcsine
kernel). Saturation statistics need the largest slope ``max |f'(x)|`` of each activation; it is
measured numerically (``max_slope``) so a new entry needs no hand-written constant.

References: docs/references.md [nair2010], [maas2013], [lecun1998efficient], [klambauer2017],
[clevert2016], [hendrycks2016], [ramachandran2017], [elfwing2018], [glorot2010], [saxe2014],
[williams1997], [martens2021], [zhang2022].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

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


def erf(x):
    """The error function, the sigmoid of the mean-field and kernel literature: its Gaussian kernel
    E[erf(u) erf(v)] is the closed-form arcsine kernel (Williams 1997, "Computing with infinite
    networks"; its entry's ``Kernel``), as in neural-tangents' ``Erf``."""
    return jax.lax.erf(x)


class Kernel(NamedTuple):
    """An activation's Gaussian integrals in closed form, for u₁, u₂ ~ N(0, q) of correlation c
    (``initlab.theory.mean_field`` uses them in place of its quadratures)."""

    second_moment: Callable[[float], float]  # E[φ(u)²]
    slope_moment: Callable[[float], float]  # E[φ'(u)²]
    cross: Callable[[float, float], float]  # E[φ(u₁)φ(u₂)]
    slope_cross: Callable[[float, float], float]  # E[φ'(u₁)φ'(u₂)]
    mean: Callable[[float], float]  # E[φ(u)]
    second_moment_slope: Callable[[float], float]  # d/dq E[φ(u)²] = E[φ'²] + E[φ''φ]


def _clip(c: float) -> float:
    return min(max(c, -1.0), 1.0)


def arc_cosine(c: float) -> float:
    """√(1 − c²) + (π − arccos c) c, c clipped to [−1, 1]: π times the arc-cosine kernel of degree 1
    (Cho & Saul 2009) of unit-variance inputs of correlation c, so E[relu(u₁) relu(u₂)] = q/(2π) ·
    this for u₁, u₂ ~ N(0, q); a leaky ReLU's local C map (``initlab.theory.shaping.leaky_relu_c``)
    is built from it too."""
    c = _clip(c)
    return math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c


# the arc-cosine kernels of degrees 1 and 0 (Cho & Saul 2009)
RELU_KERNEL = Kernel(
    lambda q: q / 2,
    lambda q: 0.5,
    lambda q, c: q / (2 * math.pi) * arc_cosine(c),
    lambda q, c: (math.pi - math.acos(_clip(c))) / (2 * math.pi),
    lambda q: math.sqrt(max(q, 0.0) / (2 * math.pi)),
    lambda q: 0.5,
)
LINEAR_KERNEL = Kernel(lambda q: q, lambda q: 1.0, lambda q, c: q * c, lambda q, c: 1.0, lambda q: 0.0, lambda q: 1.0)
# the arcsine kernel (Williams 1997): E[erf(u₁)erf(u₂)] = (2/π) arcsin(2qc / (1 + 2q)), and with
# erf'(x) = (2/√π) e^(−x²), E[erf'(u₁)erf'(u₂)] = (4/π) / √((1 + 2q)² − (2qc)²)
ERF_KERNEL = Kernel(
    lambda q: 2 / math.pi * math.asin(2 * q / (1 + 2 * q)),
    lambda q: 4 / math.pi / math.sqrt(1 + 4 * q),
    lambda q, c: 2 / math.pi * math.asin(2 * q * _clip(c) / (1 + 2 * q)),
    lambda q, c: 4 / math.pi / math.sqrt((1 + 2 * q) ** 2 - (2 * q * _clip(c)) ** 2),
    lambda q: 0.0,
    lambda q: 4 / (math.pi * (1 + 2 * q) * math.sqrt(1 + 4 * q)),
)


@dataclass(frozen=True)
class Activation:
    """A registry activation: its elementwise function and ``kinks``, the points where it or one of
    its first two derivatives is not smooth (ReLU's corner, SELU's jump in slope, the jump in ELU's
    and softsign's curvature). Gauss–Legendre quadrature converges slowly across such a point, so
    every Gaussian integral of the activation is split there (``gaussian_nodes``,
    ``correlated_nodes``), wherever a shaping's transformation moves it (``kinks``). ``odd``: point
    symmetric about (0, φ(0)), φ(x) + φ(−x) = 2φ(0) (tanh, erf, sigmoid), so that an input shift β
    and −β give mirror-image transformations with the same kernel (``initlab.theory.shaping.solve_dks``).
    ``kernel``: its Gaussian integrals in closed form, None where only quadrature knows them."""

    fn: Callable
    kinks: tuple[float, ...] = ()
    odd: bool = False
    kernel: Kernel | None = None

    def __call__(self, x):
        return self.fn(x)


ACTIVATIONS: Registry[Activation] = Registry(
    "activation",
    {
        "linear": Activation(linear, odd=True, kernel=LINEAR_KERNEL),
        "relu": Activation(parametric_relu(0.0), kinks=(0.0,), kernel=RELU_KERNEL),
        "leaky_relu": Activation(parametric_relu(0.01), kinks=(0.0,)),
        "elu": Activation(jax.nn.elu, kinks=(0.0,)),  # Clevert et al. 2016
        "selu": Activation(selu, kinks=(0.0,)),
        "gelu": Activation(functools.partial(jax.nn.gelu, approximate=False)),  # Hendrycks & Gimpel 2016
        "swish": Activation(jax.nn.silu),  # Ramachandran et al. 2017; Elfwing et al. 2018 (SiLU)
        "softplus": Activation(jax.nn.softplus),
        "sigmoid": Activation(jax.nn.sigmoid, odd=True),
        "tanh": Activation(jnp.tanh, odd=True),
        "erf": Activation(erf, odd=True, kernel=ERF_KERNEL),
        "scaled_tanh": Activation(scaled_tanh, odd=True),
        "softsign": Activation(softsign, kinks=(0.0,), odd=True),
    },
    aliases={"silu": "swish"},
)


def get_activation(name: str, key: str = "model.activation"):
    """The activation function called ``name`` (ConfigError listing valid names otherwise)."""
    return ACTIVATIONS.get(name, key)


@dataclass(frozen=True)
class Shape:
    """A kernel-shaping transformation of an activation (``initlab.theory.shaping`` solves for it):
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
        parts += [
            f"{k.replace('_', ' ')} {getattr(self, k):.6g}"
            for k in ("input_scale", "input_shift", "output_shift", "output_scale")
        ]
        return ", ".join(parts)


def activation_fn(name: str, shape: Shape | None = None):
    """The elementwise function of registry activation ``name``, transformed by ``shape`` when given."""
    if shape is None:
        return ACTIVATIONS[name].fn
    base = ACTIVATIONS[name].fn if shape.negative_slope is None else parametric_relu(shape.negative_slope)
    return shape.wrap(base)


def kinks(name: str, shape: Shape | None = None) -> tuple[float, ...]:
    """The points x where ``activation_fn(name, shape)`` is not smooth: the registry entry's kinks
    (a leaky ReLU's 0 for TAT's tailored rectifier), moved by the transformation's input scale and
    shift to where input_scale · x + input_shift reaches them."""
    base = ACTIVATIONS["leaky_relu" if shape is not None and shape.negative_slope is not None else name].kinks
    if shape is None:
        return base
    return tuple(sorted((k - shape.input_shift) / shape.input_scale for k in base))


@functools.cache
def numeric(name: str, shape: Shape | None = None):
    """φ, φ' and φ'' of ``activation_fn(name, shape)`` as float64 functions of numpy arrays (for
    the quadratures of ``initlab.theory.mean_field`` and ``initlab.theory.shaping``)."""
    f = activation_fn(name, shape)

    def run(fn):
        def call(x: np.ndarray) -> np.ndarray:
            with jax.enable_x64(True):
                return np.asarray(fn(jnp.asarray(x, jnp.float64)))

        return call

    return run(f), run(lambda x: derivative(f, x)), run(lambda x: derivative(lambda y: derivative(f, y), x))


N_NODES = 200  # Gauss–Legendre nodes on each piece between split points; 2-D integrals: the product
Z_MAX = 12.0  # the Gaussian measure beyond ±12 is below 1e-32


@functools.cache
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def _split_rule(breaks: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights (Gaussian density included) on [−Z_MAX, Z_MAX] split at 0
    and at ``breaks`` (shape (..., k): one set of split points per row; those beyond ±Z_MAX are
    dropped by clipping, which leaves a piece of zero length and weight). Returns arrays of shape
    (..., (k + 2) · n)."""
    cuts = np.clip(
        np.sort(np.concatenate([np.zeros(breaks.shape[:-1] + (1,)), breaks], axis=-1), axis=-1), -Z_MAX, Z_MAX
    )
    edges = np.concatenate(
        [np.full(cuts.shape[:-1] + (1,), -Z_MAX), cuts, np.full(cuts.shape[:-1] + (1,), Z_MAX)], axis=-1
    )  # (..., k + 3)
    lo, half = edges[..., :-1, None], (edges[..., 1:, None] - edges[..., :-1, None]) / 2  # (..., k + 2, 1)
    x, w = _legendre(n)
    z = (lo + half * (x + 1)).reshape(edges.shape[:-1] + (-1,))
    weights = (half * w).reshape(z.shape) * np.exp(-(z**2) / 2) / np.sqrt(2 * np.pi)
    return z, weights


def gaussian_nodes(breaks: Sequence[float] = (), n: int = N_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of ∫Dz f(z) ≈ Σ w_i f(z_i) for the standard Gaussian measure Dz.

    Gauss–Legendre on [−Z_MAX, Z_MAX], split at 0 and at ``breaks``, the points where f is not
    smooth (for f = φ(√q z), ``kinks(name, shape)`` divided by √q), with the Gaussian density in
    the weights. Split at the non-smooth points, the rule converges as fast as for a smooth f;
    unsplit, the error falls only like a power of n (DKS's transformations of SELU were off by
    up to 3.5e-2 with the split at 0 alone once the shift moved SELU's kink away from 0), and
    Gauss–Hermite is worse still (SELU's χ₁ off by 10% with 151 nodes)."""
    return _split_rule(np.asarray(breaks, np.float64).reshape(-1), n)


def correlated_nodes(
    c: float, breaks: Sequence[float] = (), n: int = N_NODES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes (u, v) and weights w, each (len, len'), of E[f(u) g(v)] ≈ Σ w f(u) g(v) for standard
    Gaussians u, v of correlation c, with f and g not smooth at ``breaks``.

    u = z₁ and v = c z₁ + √(1 − c²) z₂ for independent z₁, z₂: the rule in z₁ is split at the breaks
    (f's kinks), and for each node z₁ the rule in z₂ is split where v crosses a break, at
    z₂ = (b − c z₁)/√(1 − c²) (g's kinks), so neither factor is integrated across its kink."""
    b = np.asarray(breaks, np.float64).reshape(-1)
    s = math.sqrt(max(1.0 - c * c, 0.0))
    z1, w1 = _split_rule(b, n)
    rows = (b[None, :] - c * z1[:, None]) / s if s > 0 and b.size else np.zeros((z1.size, 0))
    z2, w2 = _split_rule(rows, n)  # (len z1, len z2): each row split where v meets a break
    u = np.broadcast_to(z1[:, None], z2.shape)
    return u, c * u + s * z2, w1[:, None] * w2


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
    return (
        -math.inf if lo < -1e3 else math.floor(lo * 1e4) / 1e4 + 0.0,
        math.inf if hi > 1e3 else math.ceil(hi * 1e4) / 1e4 + 0.0,
    )
