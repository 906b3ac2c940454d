"""Tests for initlab.nn.normalizations: batch norm (train/eval, running statistics), layer norm, none."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initlab.errors import ConfigError
from initlab.nn.normalizations import NORMALIZATIONS, NormSettings, get_normalization

from conftest import assert_lists_names

SETTINGS = NormSettings(eps=1e-5, momentum=0.9)
WIDTH = 5
X = np.asarray(3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(0), (64, WIDTH)), np.float32)  # (batch, width)

# A tiny batch worked by hand: m = 4 examples of 2 units.
TINY = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0], [7.0, 2.0]], np.float32)
TINY_MEAN = np.array([4.0, 5.0])
TINY_BIASED_VAR = np.array([5.0, 11.0])  # (9+1+1+9)/4, (9+1+25+9)/4
TINY_UNBIASED_VAR = np.array([20 / 3, 44 / 3])  # m/(m-1) · σ²_B


def run(name, x, train, params=None, state=None, settings=SETTINGS):
    norm = NORMALIZATIONS[name]
    width = x.shape[1]
    params = norm.init_params(width) if params is None else params
    state = norm.init_state(width) if state is None else state
    y, new_state = norm.apply(params, state, jnp.asarray(x), train, settings)
    return np.asarray(y), jax.tree.map(np.asarray, new_state)


@pytest.mark.parametrize("name", NORMALIZATIONS.all_names())
@pytest.mark.parametrize("train", [True, False])
def test_shape_finite_and_state_structure(name, train):
    norm = NORMALIZATIONS[name]
    state0 = norm.init_state(WIDTH)
    y, state = run(name, X, train)
    assert y.shape == X.shape and y.dtype == np.float32
    assert np.all(np.isfinite(y))
    assert jax.tree.structure(state) == jax.tree.structure(state0)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(state0), strict=True):
        assert a.shape == b.shape
        assert np.all(np.isfinite(a))


@pytest.mark.parametrize("name", NORMALIZATIONS.all_names())
def test_params_are_scale_one_shift_zero_or_empty(name):
    params = NORMALIZATIONS[name].init_params(WIDTH)
    for key, leaf in params.items():
        assert leaf.shape == (WIDTH,)
        np.testing.assert_array_equal(leaf, 1.0 if key == "scale" else 0.0)


@pytest.mark.parametrize("name", NORMALIZATIONS.all_names())
def test_works_under_jit(name):
    norm = NORMALIZATIONS[name]
    f = jax.jit(lambda p, s, x: norm.apply(p, s, x, True, SETTINGS))
    y, _ = f(norm.init_params(WIDTH), norm.init_state(WIDTH), jnp.asarray(X))
    np.testing.assert_allclose(np.asarray(y), run(name, X, True)[0], rtol=1e-5, atol=1e-5)


def test_none_is_identity():
    for train in (True, False):
        y, state = run("none", X, train)
        np.testing.assert_array_equal(y, X)
        assert state == {}


def test_batchnorm_train_normalises_each_unit():
    y, _ = run("batchnorm", X, True)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=0), 1.0, atol=1e-4)


def test_batchnorm_train_exact_on_tiny_batch():
    y, state = run("batchnorm", TINY, True)
    expected = (TINY - TINY_MEAN) / np.sqrt(TINY_BIASED_VAR + 1e-5)  # biased variance normalises
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    # running = momentum · running + (1 − momentum) · batch; init mean 0, var 1
    np.testing.assert_allclose(state["mean"], 0.1 * TINY_MEAN, rtol=1e-6)
    np.testing.assert_allclose(state["var"], 0.9 * 1.0 + 0.1 * TINY_UNBIASED_VAR, rtol=1e-6)
    np.testing.assert_allclose(state["var"], [1.5666667, 2.3666667], rtol=1e-6)


def test_batchnorm_running_stats_use_the_given_momentum_and_state():
    state0 = {"mean": jnp.array([1.0, -1.0]), "var": jnp.array([2.0, 3.0])}
    _, state = run("batchnorm", TINY, True, state=state0, settings=NormSettings(eps=1e-5, momentum=0.5))
    np.testing.assert_allclose(state["mean"], 0.5 * np.array([1.0, -1.0]) + 0.5 * TINY_MEAN, rtol=1e-6)
    np.testing.assert_allclose(state["var"], 0.5 * np.array([2.0, 3.0]) + 0.5 * TINY_UNBIASED_VAR, rtol=1e-6)


def test_batchnorm_running_stats_converge_to_population_statistics():
    norm = NORMALIZATIONS["batchnorm"]
    params, state = norm.init_params(2), norm.init_state(2)
    for _ in range(200):
        _, state = norm.apply(params, state, jnp.asarray(TINY), True, SETTINGS)
    np.testing.assert_allclose(np.asarray(state["mean"]), TINY_MEAN, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(state["var"]), TINY_UNBIASED_VAR, rtol=1e-4)


def test_batchnorm_scale_and_shift():
    params = {"scale": jnp.array([2.0, -1.0]), "shift": jnp.array([3.0, 0.5])}
    y, _ = run("batchnorm", TINY, True, params=params)
    x_hat = (TINY - TINY_MEAN) / np.sqrt(TINY_BIASED_VAR + 1e-5)
    np.testing.assert_allclose(y, x_hat * [2.0, -1.0] + [3.0, 0.5], rtol=1e-5, atol=1e-6)


def test_batchnorm_eval_uses_running_stats_and_keeps_them():
    state0 = {"mean": jnp.array([1.0, 2.0]), "var": jnp.array([4.0, 9.0])}
    params = {"scale": jnp.array([1.0, 2.0]), "shift": jnp.array([0.0, 1.0])}
    y, state = run("batchnorm", TINY, False, params=params, state=state0)
    expected = (TINY - [1.0, 2.0]) / np.sqrt(np.array([4.0, 9.0]) + 1e-5) * [1.0, 2.0] + [0.0, 1.0]
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    np.testing.assert_array_equal(state["mean"], [1.0, 2.0])
    np.testing.assert_array_equal(state["var"], [4.0, 9.0])


def test_batchnorm_eval_is_per_example():
    """In evaluation an example's output does not depend on the rest of the batch."""
    state0 = {"mean": jnp.array([1.0, 2.0]), "var": jnp.array([4.0, 9.0])}
    full, _ = run("batchnorm", TINY, False, state=state0)
    one, _ = run("batchnorm", TINY[:1], False, state=state0)
    np.testing.assert_allclose(one, full[:1], rtol=1e-6)


def test_batchnorm_eps_is_used():
    y, _ = run("batchnorm", TINY, True, settings=NormSettings(eps=5.0, momentum=0.9))
    np.testing.assert_allclose(y, (TINY - TINY_MEAN) / np.sqrt(TINY_BIASED_VAR + 5.0), rtol=1e-5, atol=1e-6)


def test_layernorm_normalises_each_example():
    y, _ = run("layernorm", X, True)
    np.testing.assert_allclose(y.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=1), 1.0, atol=1e-3)


def test_layernorm_exact_and_same_in_train_and_eval():
    expected = (TINY - TINY.mean(axis=1, keepdims=True)) / np.sqrt(TINY.var(axis=1, keepdims=True) + 1e-5)
    y_train, s_train = run("layernorm", TINY, True)
    y_eval, s_eval = run("layernorm", TINY, False)
    np.testing.assert_allclose(y_train, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y_train, y_eval)
    assert s_train == {} and s_eval == {}


def test_layernorm_scale_and_shift():
    params = {"scale": jnp.array([2.0, 3.0]), "shift": jnp.array([1.0, -1.0])}
    y, _ = run("layernorm", TINY, False, params=params)
    x_hat = (TINY - TINY.mean(axis=1, keepdims=True)) / np.sqrt(TINY.var(axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, x_hat * [2.0, 3.0] + [1.0, -1.0], rtol=1e-5, atol=1e-6)


def test_unknown_normalization_message():
    with pytest.raises(ConfigError) as info:
        get_normalization("groupnorm")
    msg = str(info.value)
    assert "model.norm" in msg and "'groupnorm'" in msg
    assert_lists_names(msg, NORMALIZATIONS)


def test_rmsnorm_divides_each_example_by_its_root_mean_square_without_centring():
    """Zhang & Sennrich 2019: y = g · x / sqrt(mean(x²) + eps); unlike layer norm the mean stays."""
    y_train, s_train = run("rmsnorm", TINY, True)
    y_eval, _ = run("rmsnorm", TINY, False)
    expected = TINY / np.sqrt(np.mean(TINY**2, axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y_train, expected, rtol=1e-5)
    np.testing.assert_array_equal(y_train, y_eval)
    assert s_train == {}
    y, _ = run("rmsnorm", X, True)
    np.testing.assert_allclose(np.mean(y**2, axis=1), 1.0, atol=1e-4)
    assert np.all(y.mean(axis=1) > 0.5)  # X has mean 3: no re-centring
    scaled, _ = run("rmsnorm", 7.0 * X, True)
    np.testing.assert_allclose(scaled, y, rtol=1e-4)  # re-scaling invariance
    gained, _ = run("rmsnorm", TINY, True, params={"scale": jnp.array([2.0, -1.0])})
    np.testing.assert_allclose(gained, expected * [2.0, -1.0], rtol=1e-5)
