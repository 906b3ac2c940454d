"""Weight and bias initializers, one registry each.

Weights are shaped ``(fan_in, fan_out)``. Most methods are ``jax.nn.initializers.variance_scaling``
with different arguments (as jax itself builds He and Glorot); the normal variants use the plain,
untruncated normal that the papers define (jax's own ``he_normal`` etc. truncate at two standard
deviations). Facts and formulas: ``shared/REFERENCE.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from jax.nn import initializers as jinit

from initlab.errors import ConfigError
from initlab.registry import Registry

Array = jax.Array
# (key, shape, args) -> array; args holds the entry's declared arguments, defaults filled in.
InitFn = Callable[[Array, tuple[int, ...], Mapping[str, float]], Array]


@dataclass(frozen=True)
class RefineContext:
    """What a network-level initializer sees after every layer has been drawn with its ``weight``
    sampler: the model's static spec, the drawn parameters and normalization state, its arguments,
    a fresh key, and the training inputs (on the device) for data-dependent methods."""

    spec: Any  # initlab.model.ModelSpec
    params: Any
    norm_state: Any
    args: Mapping[str, float]
    key: Array
    x_train: Array | None


@dataclass(frozen=True)
class Trace:
    """A record of an initialization procedure, written to ``<file>`` in the run folder."""

    file: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]


# ctx -> (params, trace or None)
RefineFn = Callable[[RefineContext], tuple[Any, Trace | None]]


@dataclass(frozen=True)
class Initializer:
    """A weight initializer: its sampler, its arguments with defaults, and optionally the bias
    distribution it prescribes (mean-field init draws biases too).

    Methods defined on the whole network (Fixup, LSUV, layer-wise pre-training) draw every layer with
    ``weight`` first, then ``refine`` the parameters; ``residual`` says whether they need (True) or
    exclude (False) a residual network."""

    weight: InitFn
    args: Mapping[str, float] = field(default_factory=dict)
    bias: InitFn | None = None
    # sigma_w^2 = fan_in * Var(W), the quantity mean-field theory needs; None if not a fixed law.
    sigma_w2: Callable[[int, int, Mapping[str, float]], float] | None = None
    refine: RefineFn | None = None
    residual: bool | None = None
    needs_data: bool = False
    # argument name -> a key of ARG_RULES, checked when the config loads
    rules: Mapping[str, str] = field(default_factory=dict)


# What an initializer argument may be: (test, description for the error).
ARG_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "positive": (lambda v: v > 0, "a number > 0"),
    "count": (lambda v: v >= 0 and v == int(v), "a whole number >= 0"),
    "positive_count": (lambda v: v >= 1 and v == int(v), "a whole number >= 1"),
    "fraction": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "flag": (lambda v: v in (0, 1), "0 or 1"),
}


def _scaling(scale: float | Callable[[Mapping[str, float]], float], mode: str, distribution: str) -> InitFn:
    """variance_scaling with a scale that may depend on the entry's arguments."""

    def sample(key, shape, args):
        s = scale(args) if callable(scale) else scale
        return jinit.variance_scaling(s, mode, distribution)(key, shape, jnp.float32)

    return sample


def _symmetric_uniform(limit: Callable[[int, Mapping[str, float]], float]) -> InitFn:
    """U[-limit, +limit], the limit a function of fan-in and the arguments."""

    def sample(key, shape, args):
        a = limit(shape[0], args)
        return jax.random.uniform(key, shape, jnp.float32, -a, a)

    return sample



def _zeros_bias(key, shape, args):
    return jnp.zeros(shape[1:], jnp.float32)


def _zeros(key, shape, args):
    return jnp.zeros(shape, jnp.float32)


def _constant(key, shape, args):
    return jnp.full(shape, args["value"], jnp.float32)


def _normal(key, shape, args):
    return args["std"] * jax.random.normal(key, shape, jnp.float32)


def _orthogonal(key, shape, args):
    return jinit.orthogonal(scale=args["gain"])(key, shape, jnp.float32)


# Network-level methods live in initlab.network_init, which needs the model (imported lazily: the
# model imports this module).
def _fixup(ctx: RefineContext):
    from initlab.network_init import fixup

    return fixup(ctx)


def _lsuv(ctx: RefineContext):
    from initlab.network_init import lsuv

    return lsuv(ctx)


def _layerwise_autoencoder(ctx: RefineContext):
    from initlab.network_init import layerwise_autoencoder

    return layerwise_autoencoder(ctx)


INITIALIZERS: Registry[Initializer] = Registry(
    "initializer",
    {
        # Symmetric inits: every unit of a layer computes the same function and stays so.
        "zeros": Initializer(_zeros, sigma_w2=lambda fi, fo, a: 0.0),
        # A constant has no variance: mean-field theory does not describe it (sigma_w2 None).
        "constant": Initializer(_constant, {"value": 0.01}),
        "normal": Initializer(_normal, {"std": 0.01}, sigma_w2=lambda fi, fo, a: fi * a["std"] ** 2),
        "uniform": Initializer(
            _symmetric_uniform(lambda fi, a: a["limit"]), {"limit": 0.05},
            sigma_w2=lambda fi, fo, a: fi * a["limit"] ** 2 / 3,
        ),
        # LeCun et al. 1989, "Backpropagation applied to handwritten zip code recognition".
        "lecun1989": Initializer(
            _symmetric_uniform(lambda fi, a: 2.4 / fi), sigma_w2=lambda fi, fo, a: 2.4**2 / (3 * fi)
        ),
        # Glorot & Bengio 2010's "standard" baseline U[±1/sqrt(fan_in)]: fan_in * Var = 1/3.
        "standard": Initializer(_scaling(1 / 3, "fan_in", "uniform"), sigma_w2=lambda fi, fo, a: 1 / 3),
        # LeCun et al. 1998, "Efficient BackProp": Var = 1/fan_in; the init SELU needs.
        "lecun_normal": Initializer(_scaling(1.0, "fan_in", "normal"), sigma_w2=lambda fi, fo, a: 1.0),
        "lecun_uniform": Initializer(_scaling(1.0, "fan_in", "uniform"), sigma_w2=lambda fi, fo, a: 1.0),
        # Glorot & Bengio 2010, normalized init: Var = 2 / (fan_in + fan_out).
        "glorot_normal": Initializer(
            _scaling(1.0, "fan_avg", "normal"), sigma_w2=lambda fi, fo, a: 2 * fi / (fi + fo)
        ),
        "glorot_uniform": Initializer(
            _scaling(1.0, "fan_avg", "uniform"), sigma_w2=lambda fi, fo, a: 2 * fi / (fi + fo)
        ),
        # He et al. 2015, "Delving deep into rectifiers": Var = 2 / fan_in.
        "he_normal": Initializer(_scaling(2.0, "fan_in", "normal"), sigma_w2=lambda fi, fo, a: 2.0),
        "he_uniform": Initializer(_scaling(2.0, "fan_in", "uniform"), sigma_w2=lambda fi, fo, a: 2.0),
        # Saxe et al. 2014: Haar-random (semi-)orthogonal times a gain.
        "orthogonal": Initializer(
            _orthogonal, {"gain": 1.0}, sigma_w2=lambda fi, fo, a: a["gain"] ** 2 * min(fi, fo) / fo
        ),
        # Poole et al. 2016; Schoenholz et al. 2017: W ~ N(0, sigma_w²/fan_in), b ~ N(0, sigma_b²).
        "mean_field": Initializer(
            _scaling(lambda a: a["sigma_w"] ** 2, "fan_in", "normal"),
            {"sigma_w": 1.0, "sigma_b": 0.0},
            bias=lambda key, shape, a: a["sigma_b"] * jax.random.normal(key, shape[1:], jnp.float32),
            sigma_w2=lambda fi, fo, a: a["sigma_w"] ** 2,
        ),
        # Zhang, Dauphin & Ma 2019, "Fixup initialization": He-normal layers, then each residual
        # branch's last layer and the output layer set to zero and the branches' other layer scaled
        # by L^(-1/(2m-2)) (L branches of m = 2 layers).
        "fixup": Initializer(_scaling(2.0, "fan_in", "normal"), bias=_zeros_bias, refine=_fixup, residual=True),
        # Mishkin & Matas 2016, "All you need is a good init": orthogonal, then each layer in turn
        # rescaled on a data batch until its output variance is within tol of 1.
        "lsuv": Initializer(
            _orthogonal, {"gain": 1.0, "tol": 0.05, "max_iters": 10, "batch_size": 256},
            refine=_lsuv, needs_data=True,
            rules={"tol": "positive", "max_iters": "count", "batch_size": "positive_count"},
        ),
        # Greedy layer-wise pre-training (Hinton, Osindero & Teh 2006 with RBMs; Bengio et al. 2007
        # with autoencoders): each hidden layer trained as the encoder of an autoencoder on the
        # previous layer's outputs. Layers start from Glorot's "standard" init.
        "layerwise_autoencoder": Initializer(
            _scaling(1 / 3, "fan_in", "uniform"),
            {"steps": 200, "lr": 1e-3, "batch_size": 128, "examples": 10000, "noise": 0.0, "tied": 0,
             "log_every": 10},
            refine=_layerwise_autoencoder, residual=False, needs_data=True,
            rules={"steps": "positive_count", "lr": "positive", "batch_size": "positive_count",
                   "examples": "positive_count", "noise": "fraction", "tied": "flag", "log_every": "positive_count"},
        ),
    },
    aliases={
        "xavier_normal": "glorot_normal",
        "xavier_uniform": "glorot_uniform",
        "kaiming_normal": "he_normal",
        "kaiming_uniform": "he_uniform",
    },
)

# Bias initializers take the weight's shape (fan_in, fan_out) and return (fan_out,).
BIAS_INITIALIZERS: Registry[Initializer] = Registry(
    "bias initializer",
    {
        "zeros": Initializer(lambda key, shape, a: jnp.zeros(shape[1:], jnp.float32)),
        "constant": Initializer(lambda key, shape, a: jnp.full(shape[1:], a["value"], jnp.float32), {"value": 0.0}),
        "normal": Initializer(lambda key, shape, a: a["std"] * jax.random.normal(key, shape[1:], jnp.float32), {"std": 0.01}),
        "uniform": Initializer(
            lambda key, shape, a: jax.random.uniform(key, shape[1:], jnp.float32, -a["limit"], a["limit"]),
            {"limit": 0.05},
        ),
        # PyTorch's nn.Linear default: U[±1/sqrt(fan_in)], the same law as Glorot's "standard".
        "standard": Initializer(
            lambda key, shape, a: jax.random.uniform(
                key, shape[1:], jnp.float32, -1 / math.sqrt(shape[0]), 1 / math.sqrt(shape[0])
            )
        ),
    },
)


def resolve_args(entry: Initializer, given: Mapping[str, float] | None, key: str) -> dict[str, float]:
    """The entry's declared arguments with ``given`` laid over the defaults.

    Raises ConfigError for an argument the entry does not take (naming the ones it does).
    """
    given = dict(given or {})
    for name, value in given.items():
        if name not in entry.args:
            allowed = ", ".join(entry.args) or "none"
            raise ConfigError(f"{key}.{name}: not an argument of this initializer (allowed: {allowed})")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}.{name}: {value!r} is not a number")
    resolved = {**entry.args, **{k: float(v) for k, v in given.items()}}
    for name, rule in entry.rules.items():
        ok, allowed = ARG_RULES[rule]
        if not ok(resolved[name]):
            raise ConfigError(f"{key}.{name}: {resolved[name]:g} is not allowed (expected {allowed})")
    return resolved


def get_initializer(name: str, key: str = "model.init") -> Initializer:
    """The weight initializer called ``name`` (ConfigError listing valid names otherwise)."""
    return INITIALIZERS.get(name, key)


def get_bias_initializer(name: str, key: str = "model.bias_init") -> Initializer:
    """The bias initializer called ``name`` (ConfigError listing valid names otherwise)."""
    return BIAS_INITIALIZERS.get(name, key)
