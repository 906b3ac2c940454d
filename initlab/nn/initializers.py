"""Weight and bias initializers, one registry each.

Each entry makes samplers in ``jax.nn.initializers``' ``(key, shape, dtype)`` form from its
arguments and the layer's role (``Role``). Weights are shaped ``(fan_in, fan_out)``, biases
``(fan_out,)``. Most methods are ``jax.nn.initializers.variance_scaling`` with different arguments
(as jax itself builds He and Glorot); the normal variants use the plain, untruncated normal that
the papers define (jax's own ``he_normal`` etc. truncate at two standard deviations). Each entry
also carries its law's variance for ``initlab.theory.mean_field``.

References: docs/references.md [he2015], [glorot2010], [lecun1989], [lecun1998efficient],
[saxe2014], [poole2016], [schoenholz2017], [mishkin2016], [zhang2019fixup], [salimans2016],
[bengio2007], [hinton2006].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import jax
import jax.numpy as jnp
from jax.nn import initializers as jinit

from initlab.errors import ConfigError
from initlab.registry import Registry

Array = jax.Array
DType = Any  # a jnp dtype or its name
# jax.nn.initializers' form: (key, shape, dtype) -> array.
Sampler = Callable[[Array, tuple[int, ...], DType], Array]


class Role(str, Enum):
    """Which layer of the network a parameter belongs to: what a sampler may depend on (μP scales
    the input, hidden and output layers differently)."""

    INPUT = "input"  # the first hidden layer, input_dim -> width
    HIDDEN = "hidden"  # hidden layers 2..depth of a plain MLP
    BRANCH = "branch"  # the residual branches' layers (hidden layers 2..depth of a residual MLP)
    OUTPUT = "output"  # the linear output layer, width -> classes


# (args, role, fan_in) -> sampler. ``args`` holds the entry's declared arguments, defaults filled
# in; ``fan_in`` is the layer's input size (a bias sampler's own shape is (fan_out,)).
SamplerFactory = Callable[[Mapping[str, float], Role, int], Sampler]


@dataclass(frozen=True)
class Trace:
    """A record of an initialization procedure, written to ``<file>`` in the run folder."""

    file: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class Initializer:
    """A weight or bias initializer: its sampler factory, its arguments with defaults, and what
    the theory needs to know about its law.

    Weight entries: ``sigma_w2(fan_in, fan_out, args)`` = fan_in · Var(W), the quantity mean-field
    theory needs (None: not a fixed law); ``bias`` the bias sampler the method prescribes, if any
    (mean-field init draws biases too), with ``sigma_b2`` its variance. Bias entries:
    ``sigma_b2(fan_in, args)`` = Var(b), None where the theory does not apply (a constant non-zero
    bias). Methods defined on the whole network (Fixup, LSUV, layer-wise pre-training) draw every
    layer with ``sampler`` first, then the ``scheme`` of that name in ``initlab.nn.network_init``
    refines the parameters; ``residual`` says whether they need (True) or exclude (False) a
    residual network, ``needs_data`` whether the scheme reads the training inputs."""

    sampler: SamplerFactory
    args: Mapping[str, float] = field(default_factory=dict)
    bias: SamplerFactory | None = None
    sigma_w2: Callable[[int, int, Mapping[str, float]], float] | None = None
    sigma_b2: Callable[[int, Mapping[str, float]], float | None] | None = None
    scheme: str | None = None
    residual: bool | None = None
    needs_data: bool = False
    # argument name -> a key of ARG_RULES, checked when the config loads
    rules: Mapping[str, str] = field(default_factory=dict)
    law: str | None = None


# What an initializer argument may be: (test, description for the error).
ARG_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "positive": (lambda v: v > 0, "a number > 0"),
    "count": (lambda v: v >= 0 and v == int(v), "a whole number >= 0"),
    "positive_count": (lambda v: v >= 1 and v == int(v), "a whole number >= 1"),
    "fraction": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "open_fraction": (lambda v: 0 < v < 1, "a number in (0, 1)"),
    "above_one": (lambda v: v > 1, "a number > 1"),
    "flag": (lambda v: v in (0, 1), "0 or 1"),
}


def _scaling(scale: float | Callable[[Mapping[str, float]], float], mode: str, distribution: str) -> SamplerFactory:
    """variance_scaling with a scale that may depend on the entry's arguments."""

    def make(args, role, fan_in):
        return jinit.variance_scaling(scale(args) if callable(scale) else scale, mode, distribution)

    return make


def _symmetric_uniform(limit: Callable[[int, Mapping[str, float]], float]) -> SamplerFactory:
    """U[-limit, +limit], the limit a function of fan-in and the arguments."""

    def make(args, role, fan_in):
        a = limit(fan_in, args)
        return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -a, a)

    return make


def _constant(value: Callable[[Mapping[str, float]], float]) -> SamplerFactory:
    def make(args, role, fan_in):
        v = value(args)
        return lambda key, shape, dtype: jnp.full(shape, v, dtype)

    return make


def _normal(std: Callable[[Mapping[str, float]], float]) -> SamplerFactory:
    def make(args, role, fan_in):
        s = std(args)
        return lambda key, shape, dtype: s * jax.random.normal(key, shape, dtype)

    return make


def _orthogonal(args, role, fan_in):
    ortho = jinit.orthogonal(scale=args["gain"])

    def sample(key, shape, dtype):
        # QR (LAPACK) takes float32 or wider: a narrower dtype is drawn in float32, then cast.
        return ortho(key, shape, jnp.promote_types(dtype, jnp.float32)).astype(dtype)

    return sample


def unit_sampler(law: str) -> Sampler:
    """Unit-variance draws of a fan-in law's shape, exactly the values jax's variance_scaling
    draws before its scaling (normal: N(0, 1); uniform: U[-√3, √3])."""
    if law == "normal":
        return lambda key, shape, dtype: jax.random.normal(key, shape, dtype)
    return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -1) * jnp.sqrt(jnp.asarray(3.0, dtype))


def _identity(args, role, fan_in):
    """``scale`` × I for the square hidden layers (a residual net's branch layers included); the
    non-square input and output layers are drawn LeCun-normal, Var = 1/fan_in, the law that keeps
    a linear net's variance, so the square layers alone make the activations grow or shrink by
    ``scale`` per layer."""
    if role in (Role.HIDDEN, Role.BRANCH):
        return lambda key, shape, dtype: args["scale"] * jnp.eye(shape[0], shape[1], dtype=dtype)
    return jinit.variance_scaling(1.0, "fan_in", "normal")


_zeros = _constant(lambda a: 0.0)
_glorot_standard = _scaling(1 / 3, "fan_in", "uniform")
_he_normal = _scaling(2.0, "fan_in", "normal")


INITIALIZERS: Registry[Initializer] = Registry(
    "initializer",
    {
        # Symmetric inits: every unit of a layer computes the same function and stays so.
        "zeros": Initializer(_zeros, sigma_w2=lambda fi, fo, a: 0.0),
        # A constant has no variance: mean-field theory does not describe it (sigma_w2 None).
        "constant": Initializer(_constant(lambda a: a["value"]), {"value": 0.01}),
        "normal": Initializer(
            _normal(lambda a: a["std"]), {"std": 0.01}, sigma_w2=lambda fi, fo, a: fi * a["std"] ** 2
        ),
        "uniform": Initializer(
            _symmetric_uniform(lambda fi, a: a["limit"]),
            {"limit": 0.05},
            sigma_w2=lambda fi, fo, a: fi * a["limit"] ** 2 / 3,
        ),
        # LeCun et al. 1989, "Backpropagation applied to handwritten zip code recognition".
        "lecun1989": Initializer(
            _symmetric_uniform(lambda fi, a: 2.4 / fi), sigma_w2=lambda fi, fo, a: 2.4**2 / (3 * fi)
        ),
        # Glorot & Bengio 2010's "standard" baseline U[±1/sqrt(fan_in)]: fan_in * Var = 1/3.
        "standard": Initializer(_glorot_standard, sigma_w2=lambda fi, fo, a: 1 / 3, law="uniform"),
        # LeCun et al. 1998, "Efficient BackProp": Var = 1/fan_in; the init SELU needs.
        "lecun_normal": Initializer(_scaling(1.0, "fan_in", "normal"), sigma_w2=lambda fi, fo, a: 1.0, law="normal"),
        "lecun_uniform": Initializer(_scaling(1.0, "fan_in", "uniform"), sigma_w2=lambda fi, fo, a: 1.0, law="uniform"),
        # Glorot & Bengio 2010, normalized init: Var = 2 / (fan_in + fan_out).
        "glorot_normal": Initializer(_scaling(1.0, "fan_avg", "normal"), sigma_w2=lambda fi, fo, a: 2 * fi / (fi + fo)),
        "glorot_uniform": Initializer(
            _scaling(1.0, "fan_avg", "uniform"), sigma_w2=lambda fi, fo, a: 2 * fi / (fi + fo)
        ),
        # He et al. 2015, "Delving deep into rectifiers": Var = 2 / fan_in.
        "he_normal": Initializer(_he_normal, sigma_w2=lambda fi, fo, a: 2.0, law="normal"),
        "he_uniform": Initializer(_scaling(2.0, "fan_in", "uniform"), sigma_w2=lambda fi, fo, a: 2.0, law="uniform"),
        # The identity (deeplearning.ai's initialization demo: "slightly larger or smaller than the
        # identity", scale 1 ± ε): with a linear activation the activations scale by exactly scale^l.
        # Not i.i.d., so mean-field theory does not describe it (sigma_w2 None).
        "identity": Initializer(_identity, {"scale": 1.0}, rules={"scale": "positive"}),
        # Saxe et al. 2014: Haar-random (semi-)orthogonal times a gain.
        "orthogonal": Initializer(
            _orthogonal, {"gain": 1.0}, sigma_w2=lambda fi, fo, a: a["gain"] ** 2 * min(fi, fo) / fo
        ),
        # Poole et al. 2016; Schoenholz et al. 2017: W ~ N(0, sigma_w²/fan_in), b ~ N(0, sigma_b²).
        "mean_field": Initializer(
            _scaling(lambda a: a["sigma_w"] ** 2, "fan_in", "normal"),
            {"sigma_w": 1.0, "sigma_b": 0.0},
            bias=_normal(lambda a: a["sigma_b"]),
            sigma_w2=lambda fi, fo, a: a["sigma_w"] ** 2,
            sigma_b2=lambda fi, a: a["sigma_b"] ** 2,
            law="normal",
        ),
        # Zhang, Dauphin & Ma 2019, "Fixup initialization": He-normal layers, then each residual
        # branch's last layer and the output layer set to zero and the branches' other layer scaled
        # by L^(-1/(2m-2)) (L branches of m = 2 layers).
        "fixup": Initializer(_he_normal, bias=_zeros, sigma_b2=lambda fi, a: 0.0, scheme="fixup", residual=True),
        # Mishkin & Matas 2016, "All you need is a good init": orthogonal, then each layer in turn
        # rescaled on a data batch until its output variance is within tol of 1.
        "lsuv": Initializer(
            _orthogonal,
            {"gain": 1.0, "tol": 0.05, "max_iters": 10, "batch_size": 256},
            scheme="lsuv",
            needs_data=True,
            rules={"tol": "positive", "max_iters": "count", "batch_size": "positive_count"},
        ),
        # Salimans & Kingma 2016, "Weight normalization", §3: directions v ~ N(0, std²) (their 0.05),
        # then layer by layer on a batch, each unit's g and b set so its pre-activation has mean 0 and
        # variance 1 there. Needs model.reparam: weightnorm (config).
        "weightnorm_data": Initializer(
            _normal(lambda a: a["std"]),
            {"std": 0.05, "batch_size": 256},
            scheme="weightnorm_data",
            residual=False,
            needs_data=True,
            rules={"std": "positive", "batch_size": "positive_count"},
        ),
        # Greedy layer-wise pre-training (Hinton, Osindero & Teh 2006 with RBMs; Bengio et al. 2007
        # with autoencoders): each hidden layer trained as the encoder of an autoencoder on the
        # previous layer's outputs. Layers start from Glorot's "standard" init.
        "layerwise_autoencoder": Initializer(
            _glorot_standard,
            {"steps": 200, "lr": 1e-3, "batch_size": 128, "examples": 10000, "noise": 0.0, "tied": 0, "log_every": 10},
            scheme="layerwise_autoencoder",
            residual=False,
            needs_data=True,
            rules={
                "steps": "positive_count",
                "lr": "positive",
                "batch_size": "positive_count",
                "examples": "positive_count",
                "noise": "fraction",
                "tied": "flag",
                "log_every": "positive_count",
            },
        ),
    },
    aliases={
        "xavier_normal": "glorot_normal",
        "xavier_uniform": "glorot_uniform",
        "kaiming_normal": "he_normal",
        "kaiming_uniform": "he_uniform",
    },
)

# Bias samplers draw shape (fan_out,); their factories get the layer's fan_in.
BIAS_INITIALIZERS: Registry[Initializer] = Registry(
    "bias initializer",
    {
        "zeros": Initializer(_zeros, sigma_b2=lambda fi, a: 0.0),
        # A constant non-zero bias shifts every unit alike: not the theory's random bias (None).
        "constant": Initializer(
            _constant(lambda a: a["value"]), {"value": 0.0}, sigma_b2=lambda fi, a: 0.0 if a["value"] == 0 else None
        ),
        "normal": Initializer(_normal(lambda a: a["std"]), {"std": 0.01}, sigma_b2=lambda fi, a: a["std"] ** 2),
        "uniform": Initializer(
            _symmetric_uniform(lambda fi, a: a["limit"]), {"limit": 0.05}, sigma_b2=lambda fi, a: a["limit"] ** 2 / 3
        ),
        # PyTorch's nn.Linear default: U[±1/sqrt(fan_in)], the same law as Glorot's "standard".
        "standard": Initializer(
            _symmetric_uniform(lambda fi, a: 1 / math.sqrt(fi)), sigma_b2=lambda fi, a: 1 / (3 * fi)
        ),
    },
)


def resolve_args(
    entry: Initializer, given: Mapping[str, float] | None, key: str, init_name: str = "this initializer"
) -> dict[str, float]:
    """The entry's declared arguments with ``given`` laid over the defaults.

    Raises ConfigError for an argument the entry does not take (naming the initializer and the
    arguments it does take).
    """
    given = dict(given or {})
    for name, value in given.items():
        if name not in entry.args:
            allowed = ", ".join(entry.args) or "none"
            raise ConfigError(f"{key}.{name}: not an argument of {init_name} (its arguments: {allowed})")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}.{name}: {value!r} is not a number")
    # floats throughout: a default written as 256 and the same value read back from config.yaml
    # (given, so float) must hash alike
    resolved = {k: float(v) for k, v in {**entry.args, **given}.items()}
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
