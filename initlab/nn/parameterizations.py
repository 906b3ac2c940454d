"""Parameterizations: how each layer's initial variance, forward multiplier and learning rate scale
with the width n, one registry.

- ``standard`` (SP): what deep-learning libraries do. Weights are drawn by the initializer
  (variance σ_w²/fan_in for the fan-in laws), no multiplier, one learning rate for every layer.
- ``ntk``: the neural-tangent parameterization (Jacot, Gabriel & Hongler 2018; the convention of
  neural-tangents): the stored weights have the initializer's shape with unit variance, and the
  forward pass multiplies each layer's product by σ_w/√fan_in, so the network equals the standard
  one with the same σ_w² at initialization; one learning rate. Biases are as in ``standard``.
- ``mup``: the maximal-update parameterization (Yang & Hu 2021, "Tensor Programs IV"; Yang et al.
  2022, "Tensor Programs V", Table 3) in the form of the mup package (``MuReadout``, ``MuSGD``,
  ``MuAdam``), relative to ``model.base_width`` n₀ with m = n/n₀, so that it equals ``standard`` at
  n = n₀. Input weights: the initializer's variance, learning rate ×m under SGD-like optimizers.
  Hidden weights: the initializer's variance, learning rate ×1/m under Adam-like ones. Output
  weights: stored variance σ_w²·m/n (mup's rescaled readout) or zero (``model.zero_readout``, which
  Yang et al. 2022 recommend), forward multiplier 1/m (so the effective variance is σ_w²·n₀/n², Table
  3's 1/fan_in²), learning rate ×m under SGD. Width-sized vectors (hidden biases, normalization
  gains and shifts): learning rate ×m under SGD. The output bias and the residual scalars: unchanged.
  Weight decay is divided by the same factor (the mup package's default, ``decoupled_wd=False``),
  so that learning rate × decay keeps its base value.

"SGD-like" and "Adam-like" are the mup package's classes: an optimizer that divides by a running
second moment normalizes each entry of the update, so its step size does not follow the
gradient's scale (``initlab.nn.optimizers.ADAM_LIKE``).

The exponents of ``change_exponent`` are the theory the coordinate check tests: how the change
Δz of a layer's pre-activations after the first update scales with n at a fixed learning rate
(Yang & Hu 2021's analysis; derived for a plain MLP without normalization, where every update is
aligned with the layer's input so that x·ΔW sums coherently over its n coordinates). A layer's
change is the larger of its own update's and the one it inherits: hidden layers inherit the input
layer's through random weights (the same coordinate size); the output layer inherits the last
hidden layer's times n^1/2, because that change is aligned with the output weights (it comes from
the gradient they sent back through a fixed number of classes).

This module knows the roles of the layers (``initlab.nn.initializers.Role``) and nothing above them.

References: docs/references.md [jacot2018], [yang2021], [yang2022].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from initlab.nn.initializers import Role
from initlab.nn.params import Blocks, Dense, Layer, MLPParams
from initlab.registry import Registry


class ParamClass(str, Enum):
    """Which width dimensions a parameter has: what its learning-rate factor depends on (the mup
    package's "infshape": matrix-like, vector-like with a width fan-in or fan-out, or fixed)."""

    INPUT = "input"  # the first layer's weights (input_dim, n): width fan-out
    HIDDEN = "hidden"  # hidden weights (n, n): matrix-like
    OUTPUT = "output"  # the output layer's weights (n, classes): width fan-in
    VECTOR = "vector"  # width-sized vectors: hidden biases, normalization gains and shifts
    FIXED = "fixed"  # no width dimension: the output bias, the residual blocks' scalars


# A factor of the width multiplier m: "1", "m" or "1/m" (the README's table spells them η, η·m, η/m).
FACTORS: dict[str, Callable[[float], float]] = {"1": lambda m: 1.0, "m": lambda m: m, "1/m": lambda m: 1.0 / m}


@dataclass(frozen=True)
class Parameterization:
    """One parameterization.

    ``unit_weights``: the stored weights are the initializer's shape at unit variance (ntk);
    ``multiplier(role, fan_in, m, sigma_w2)``: the factor on a layer's matrix product;
    ``init_factor(role, m)``: the factor on the standard draw's values (mup's output layer √m);
    ``lr``: per ``ParamClass``, its learning-rate factor for SGD-like and Adam-like optimizers;
    ``needs_law``: only initializers that are a fan-in law (``Initializer.law``) apply;
    ``needs_base``: ``model.base_width`` is required; ``uses``: the config keys it reads beyond
    ``model.parameterization`` (``initlab.registry``: the config rejects them set for another
    parameterization, and its help texts name their users); ``exponents``: per optimizer class
    ("sgd", "adam") the exponent of Δz with n for the input, hidden and output layers."""

    doc: str
    multiplier: Callable[[Role, int, float, float], float]
    init_factor: Callable[[Role, float], float]
    lr: Mapping[ParamClass, tuple[str, str]]
    exponents: Mapping[str, tuple[float, float, float]]
    unit_weights: bool = False
    needs_law: bool = False
    needs_base: bool = False
    uses: tuple[str, ...] = ()


_SAME_LR = {c: ("1", "1") for c in ParamClass}

PARAMETERIZATIONS: Registry[Parameterization] = Registry(
    "parameterization",
    {
        "standard": Parameterization(
            "the initializer's weights, no multipliers, one learning rate",
            multiplier=lambda role, fan_in, m, s2: 1.0,
            init_factor=lambda role, m: 1.0,
            lr=_SAME_LR,
            # SGD: Δz of the input layer ~ n^-1/2 (its gradient), hidden ~ n^1/2, output ~ n.
            # Adam (sign-like steps of size η): input O(1), hidden ~ n, output ~ n^3/2 (its own step
            # gives n; the last hidden layer's change, aligned with the output weights through the
            # gradient they sent back, gives n · n^-1/2 summed coherently over n coordinates).
            exponents={"sgd": (-0.5, 0.5, 1.0), "adam": (0.0, 1.0, 1.5)},
        ),
        # Jacot, Gabriel & Hongler 2018, "Neural tangent kernel".
        "ntk": Parameterization(
            "unit-variance weights times σ_w/√fan_in in the forward pass, one learning rate",
            multiplier=lambda role, fan_in, m, s2: math.sqrt(s2 / fan_in),
            init_factor=lambda role, m: 1.0,
            lr=_SAME_LR,
            # SGD: the lazy regime, features move as n^-1/2 and the output O(1). Adam: steps η/√n per
            # effective entry, so hidden ~ n^1/2, and the output ~ n (as standard's: n^1/2 · n^1/2).
            exponents={"sgd": (-0.5, -0.5, 0.0), "adam": (0.0, 0.5, 1.0)},
            unit_weights=True,
            needs_law=True,
        ),
        # Yang & Hu 2021; Yang et al. 2022, Table 3, as the mup package implements it.
        "mup": Parameterization(
            "maximal update: every layer's activations move by O(1) whatever the width (relative to model.base_width)",
            multiplier=lambda role, fan_in, m, s2: 1.0 / m if role is Role.OUTPUT else 1.0,
            init_factor=lambda role, m: math.sqrt(m) if role is Role.OUTPUT else 1.0,
            lr={
                ParamClass.INPUT: ("m", "1"),
                ParamClass.HIDDEN: ("1", "1/m"),
                ParamClass.OUTPUT: ("m", "1"),
                ParamClass.VECTOR: ("m", "1"),
                ParamClass.FIXED: ("1", "1"),
            },
            exponents={"sgd": (0.0, 0.0, 0.0), "adam": (0.0, 0.0, 0.0)},
            needs_law=True,
            needs_base=True,
            uses=("model.base_width", "model.zero_readout"),
        ),
    },
)

ROLE_CLASS = {
    Role.INPUT: ParamClass.INPUT,
    Role.HIDDEN: ParamClass.HIDDEN,
    Role.BRANCH: ParamClass.HIDDEN,
    Role.OUTPUT: ParamClass.OUTPUT,
}


def get_parameterization(name: str, key: str = "model.parameterization") -> Parameterization:
    """The parameterization called ``name`` (ConfigError listing valid names otherwise)."""
    return PARAMETERIZATIONS.get(name, key)


def width_multiplier(width: int, base_width: int | None) -> float:
    """m = n/n₀ (1 without a base width)."""
    return 1.0 if base_width is None else width / base_width


def lr_factor(p: Parameterization, cls: ParamClass, m: float, adam_like: bool) -> float:
    """The factor on the learning rate of a parameter of class ``cls``."""
    return FACTORS[p.lr[cls][1 if adam_like else 0]](m)


def change_exponent(p: Parameterization, role: str, adam_like: bool) -> float:
    """The expected exponent of Δz with width after the first update: ``role`` input (layer 1),
    hidden (layers 2..depth) or output."""
    return p.exponents["adam" if adam_like else "sgd"][("input", "hidden", "output").index(role)]


def param_classes(params: MLPParams) -> MLPParams:
    """The ``ParamClass`` of every leaf of a parameter tree (the labels of ``optax.multi_transform``)."""

    def layer(layer: Layer, weight: ParamClass) -> Layer:
        return Layer(Dense(weight, ParamClass.VECTOR), {k: ParamClass.VECTOR for k in layer.norm})

    blocks = None if params.blocks is None else Blocks(ParamClass.FIXED, ParamClass.FIXED)
    return MLPParams(
        layer(params.inp, ParamClass.INPUT),
        layer(params.hidden, ParamClass.HIDDEN),
        Dense(ParamClass.OUTPUT, ParamClass.FIXED),
        blocks,
    )


def class_factors(p: Parameterization, width: int, base_width: int | None, adam_like: bool) -> dict[ParamClass, float]:
    """Each parameter class's learning-rate factor for a network of ``width``."""
    m = width_multiplier(width, base_width)
    return {cls: lr_factor(p, cls, m, adam_like) for cls in ParamClass}
