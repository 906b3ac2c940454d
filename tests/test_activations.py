"""Tests for initlab.activations: the registry, exact values from the papers, max_slope."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from initlab.activations import ACTIVATIONS, derivative, get_activation, max_slope
from initlab.errors import ConfigError

ALL_NAMES = ACTIVATIONS.all_names()  # canonical names and aliases: everything a config may say

# REFERENCE.md, Activations (written out here, independently of the module's constants).
LAMBDA = 1.0507009873554804934
ALPHA = 1.6732632423543772848

GRID = np.linspace(-50.0, 50.0, 1001, dtype=np.float32)


def apply(name: str, x) -> np.ndarray:
    return np.asarray(ACTIVATIONS[name](jnp.asarray(x, jnp.float32)))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_finite_shape_preserved_and_elementwise(name):
    flat = apply(name, GRID)
    y = apply(name, GRID.reshape(7, 143))  # (batch, width)
    assert y.shape == (7, 143)
    assert y.dtype == np.float32
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y.ravel(), flat)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_derivative_finite_and_bounded_by_max_slope(name):
    d = np.asarray(derivative(ACTIVATIONS[name], jnp.asarray(GRID)))
    assert d.shape == GRID.shape
    assert np.all(np.isfinite(d))
    s = max_slope(name)
    assert math.isfinite(s) and s > 0
    assert np.abs(d[np.abs(GRID) <= 20]).max() <= s * (1 + 1e-4)  # max_slope scans [-20, 20]


def _erf(x):
    return np.vectorize(math.erf)(x)


# Independent float64 references for the exact-value checks.
REFERENCE_FNS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": lambda x: LAMBDA * np.where(x > 0, x, ALPHA * np.expm1(np.minimum(x, 0))),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "scaled_tanh": lambda x: 1.7159 * np.tanh(2 * x / 3),
    "softsign": lambda x: x / (1 + np.abs(x)),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_FNS))
def test_matches_reference_formula(name):
    x = np.linspace(-6, 6, GRID.size)  # same length as GRID: no new compilation
    np.testing.assert_allclose(apply(name, x), REFERENCE_FNS[name](x), rtol=2e-6, atol=2e-6)


def test_relu_exact():
    np.testing.assert_array_equal(apply("relu", [-2.0, -0.5, 0.0, 0.5, 3.0]), [0.0, 0.0, 0.0, 0.5, 3.0])


def test_leaky_relu_slope_is_001():
    np.testing.assert_allclose(apply("leaky_relu", [-2.0, -100.0, 0.0, 4.0]), [-0.02, -1.0, 0.0, 4.0], rtol=1e-6)


def test_scaled_tanh_maps_plus_minus_one_to_itself():
    np.testing.assert_allclose(apply("scaled_tanh", [-1.0, 1.0]), [-1.0, 1.0], atol=1e-4)
    np.testing.assert_allclose(apply("scaled_tanh", [0.3]), [1.7159 * math.tanh(0.2)], rtol=1e-6)


def test_selu_constants():
    y = apply("selu", [1.0, 0.0, -60.0, 2.0])
    np.testing.assert_allclose(y[0], LAMBDA, rtol=1e-7)
    assert y[1] == 0.0
    np.testing.assert_allclose(y[2], -LAMBDA * ALPHA, rtol=1e-6)  # the negative saturation value ≈ -1.7581
    np.testing.assert_allclose(y[3], 2 * LAMBDA, rtol=1e-7)
    np.testing.assert_allclose(apply("selu", [-1.0]), [LAMBDA * ALPHA * (math.exp(-1) - 1)], rtol=1e-6)


def test_softsign_exact():
    np.testing.assert_allclose(apply("softsign", [-3.0, 0.0, 1.0]), [-0.75, 0.0, 0.5], rtol=1e-7)


def test_gelu_is_the_exact_erf_form_not_the_tanh_approximation():
    x = np.array([-2.0, -1.0, 0.5, 1.5, 3.0])
    exact = 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    tanh_approx = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert np.abs(exact - tanh_approx).max() > 1e-4  # the check below can tell them apart
    np.testing.assert_allclose(apply("gelu", x), exact, rtol=1e-6, atol=1e-6)


def test_silu_is_an_alias_of_swish():
    assert ACTIVATIONS.canonical("silu") == "swish"
    assert "silu" not in list(ACTIVATIONS)  # aliases are not iterated as separate entries
    x = np.linspace(-5, 5, 11)
    np.testing.assert_array_equal(apply("silu", x), apply("swish", x))
    np.testing.assert_allclose(apply("swish", [1.0]), [1 / (1 + math.exp(-1))], rtol=1e-6)


@pytest.mark.parametrize(
    "name, slope",
    [
        ("sigmoid", 0.25),
        ("tanh", 1.0),
        ("relu", 1.0),
        ("leaky_relu", 1.0),
        ("linear", 1.0),
        ("selu", LAMBDA * ALPHA),  # ≈ 1.7581, the slope just left of 0
        ("scaled_tanh", 1.7159 * 2 / 3),
        ("softsign", 1.0),
        ("elu", 1.0),
    ],
)
def test_max_slope_values(name, slope):
    assert max_slope(name) == pytest.approx(slope, rel=1e-3)


def test_get_activation_returns_registry_entry():
    assert get_activation("tanh") is ACTIVATIONS["tanh"]
    assert get_activation("silu") is ACTIVATIONS["swish"]


def test_unknown_activation_message():
    with pytest.raises(ConfigError) as info:
        get_activation("rellu")
    msg = str(info.value)
    assert "model.activation" in msg
    assert "'rellu'" in msg
    for name in ALL_NAMES:
        assert name in msg
    assert info.value.exit_code == 2
