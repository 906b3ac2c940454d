"""Tests for initlab.nn.activations: the registry, exact values from the papers, max_slope."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from initlab.errors import ConfigError
from initlab.nn.activations import (
    ACTIVATIONS,
    Shape,
    correlated_nodes,
    derivative,
    gaussian_nodes,
    get_activation,
    kinks,
    max_slope,
)

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
    "erf": _erf,
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
        ("erf", 2 / math.sqrt(math.pi)),  # erf'(0)
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


def _second_derivative(name, x):
    f = ACTIVATIONS[name]
    return np.asarray(derivative(lambda y: derivative(f, y), jnp.asarray(x, jnp.float32)), np.float64)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_kinks_are_declared_exactly_where_the_activation_or_a_derivative_jumps(name):
    """A jump in φ, φ' or φ'' between x − ε and x + ε, on a grid over [−3, 3]: there and only there
    the registry declares a kink (the quadratures split at it)."""
    grid = np.linspace(-3.0, 3.0, 25)
    eps = 1e-4
    f = ACTIVATIONS[name]
    jumps = []
    for order in (0, 1, 2):
        g = {
            0: lambda x: np.asarray(f(jnp.asarray(x, jnp.float32)), np.float64),
            1: lambda x: np.asarray(derivative(f, jnp.asarray(x, jnp.float32)), np.float64),
            2: lambda x: _second_derivative(name, x),
        }[order]
        jumps.append(np.abs(g(grid + eps) - g(grid - eps)) > 0.01)
    assert set(grid[np.any(jumps, axis=0)].tolist()) == set(ACTIVATIONS[name].kinks)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_odd_is_declared_exactly_for_the_point_symmetric_activations(name):
    x = np.linspace(0.0, 6.0, 61)
    y0 = float(apply(name, [0.0])[0])
    symmetric = np.allclose(apply(name, x) + apply(name, -x), 2 * y0, atol=1e-5)
    assert ACTIVATIONS[name].odd == symmetric


def test_a_transformation_moves_the_kinks():
    assert kinks("selu") == (0.0,)
    assert kinks("selu", Shape("dks", input_scale=0.5, input_shift=0.2)) == pytest.approx((-0.4,))
    assert kinks("relu", Shape("tat", negative_slope=0.3)) == (0.0,)  # TAT's leaky ReLU
    assert kinks("tanh", Shape("dks", input_scale=0.5, input_shift=0.2)) == ()


def test_the_split_rule_integrates_a_kinked_function_exactly():
    """E[max(z − b, 0)] = pdf(b) − b·(1 − cdf(b)): exact to rounding with the rule split at b; the rule
    split only at 0 misses it by far more."""
    b = 0.7
    exact = math.exp(-b * b / 2) / math.sqrt(2 * math.pi) - b * 0.5 * math.erfc(b / math.sqrt(2))
    z, w = gaussian_nodes((b,))
    assert float(w @ np.maximum(z - b, 0.0)) == pytest.approx(exact, abs=1e-14)
    z0, w0 = gaussian_nodes()
    assert abs(float(w0 @ np.maximum(z0 - b, 0.0)) - exact) > 1e-8


def test_the_correlated_rule_splits_each_factor_at_its_kink():
    """P(u > b, v > b) for standard Gaussians of correlation c, a discontinuous integrand in both
    factors: against ∫_b^∞ pdf(z) Φ((cz − b)/√(1 − c²)) dz by scipy's adaptive quad."""
    from scipy.integrate import quad
    from scipy.special import ndtr

    b, c = 0.4, 0.6
    s = math.sqrt(1 - c * c)
    exact = quad(
        lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi) * ndtr((c * z - b) / s),
        b,
        12.0,
        epsabs=1e-15,
        epsrel=1e-13,
    )[0]
    u, v, w = correlated_nodes(c, (b,))
    assert float(np.sum(w * (u > b) * (v > b))) == pytest.approx(exact, abs=1e-12)
