"""Dropout (standard and alpha) and the max-norm constraint: their defining properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initlab.nn.activations import SELU_ALPHA, SELU_LAMBDA, selu
from initlab.nn.params import Blocks, Dense, Layer, MLPParams, effective_weights
from initlab.nn.regularizers import DROPOUTS, alpha_dropout, alpha_dropout_affine, max_norm, standard_dropout

N = 400_000


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.2])
def test_alpha_dropout_keeps_selu_activations_at_mean_zero_variance_one(rate):
    """Klambauer et al. 2017: SELU activations of N(0, 1) inputs have mean 0 and variance 1, and
    alpha-dropout keeps both, where standard dropout inflates the variance by 1/(1 - rate)."""
    a = selu(jax.random.normal(jax.random.PRNGKey(0), (N,)))
    assert float(a.mean()) == pytest.approx(0.0, abs=0.01) and float(a.var()) == pytest.approx(1.0, abs=0.01)
    dropped = alpha_dropout(jax.random.PRNGKey(1), a, rate)
    assert float(dropped.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(dropped.var()) == pytest.approx(1.0, abs=0.01)
    inflated = standard_dropout(jax.random.PRNGKey(1), a, rate)
    assert float(inflated.var()) == pytest.approx(1.0 / (1.0 - rate), rel=0.03)


def test_alpha_dropout_sets_dropped_units_to_the_affine_image_of_minus_lambda_alpha():
    rate = 0.25
    a_prime, scale, shift = alpha_dropout_affine(rate)
    assert a_prime == pytest.approx(-SELU_LAMBDA * SELU_ALPHA) and a_prime == pytest.approx(-1.7581, abs=1e-4)
    q = 1 - rate
    assert scale == pytest.approx((q + a_prime**2 * q * (1 - q)) ** -0.5)
    assert shift == pytest.approx(-scale * (1 - q) * a_prime)
    x = jnp.full((10_000,), 0.3)
    y = np.asarray(alpha_dropout(jax.random.PRNGKey(2), x, rate))
    values = np.unique(np.round(y, 5))
    np.testing.assert_allclose(
        sorted(values), sorted([round(scale * a_prime + shift, 5), round(scale * 0.3 + shift, 5)]), atol=1e-5
    )
    assert np.mean(np.isclose(y, scale * a_prime + shift, atol=1e-5)) == pytest.approx(rate, abs=0.02)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_standard_dropout_zeroes_the_rate_and_keeps_the_expectation(rate):
    x = jnp.ones((N,))
    y = np.asarray(standard_dropout(jax.random.PRNGKey(3), x, rate))
    assert np.mean(y == 0) == pytest.approx(rate, abs=0.01)
    np.testing.assert_allclose(y[y != 0], 1 / (1 - rate), rtol=1e-6)
    assert y.mean() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("name", list(DROPOUTS))
def test_every_dropout_is_deterministic_per_key(name):
    x = jax.random.normal(jax.random.PRNGKey(4), (32, 8))
    fn = DROPOUTS[name]

    def draw(seed):
        return np.asarray(fn(jax.random.PRNGKey(seed), x, 0.3))

    np.testing.assert_array_equal(draw(5), draw(5))
    assert not np.array_equal(draw(5), draw(6))


def test_max_norm_bounds_every_units_incoming_weights_and_leaves_the_rest():
    """Srebro & Shraibman 2005 / Srivastava et al. 2014: each column (a unit's incoming weights) of
    every Dense layer, found by type in the typed tree, is projected onto the ball of radius c;
    columns already inside, biases, normalization parameters and the blocks' scalars stay."""
    key = jax.random.PRNGKey(7)
    w = jax.random.normal(key, (50, 6)) * jnp.array([0.01, 0.1, 0.2, 1.0, 2.0, 5.0])  # column norms ~0.07 .. 35
    stacked = jax.random.normal(jax.random.PRNGKey(8), (3, 50, 6))
    w_out = 4.0 * jax.random.normal(jax.random.PRNGKey(9), (6, 2))
    scale = jnp.full((3, 6), 50.0)  # a normalization's gain, much larger than c: not a weight
    params = MLPParams(
        inp=Layer(Dense(w, jnp.full((6,), 100.0)), {}),
        hidden=Layer(Dense(stacked, jnp.zeros((3, 6))), {"scale": scale}),
        out=Dense(w_out, jnp.zeros(2)),
        blocks=Blocks(jnp.full((2, 2), 100.0), jnp.ones(2)),
    )
    c = 3.0
    out = max_norm(params, c)
    assert jax.tree.structure(out) == jax.tree.structure(params)
    for before, after in zip(effective_weights(params), effective_weights(out)):
        n_before = np.linalg.norm(np.asarray(before), axis=-2)
        n_after = np.linalg.norm(np.asarray(after), axis=-2)
        assert np.all(n_after <= c * (1 + 1e-6))
        inside = n_before <= c
        np.testing.assert_allclose(n_after[inside], n_before[inside], rtol=1e-6)
        np.testing.assert_allclose(n_after[~inside], c, rtol=1e-5)
        assert (~inside).any()
        # direction kept: projected columns are positive multiples of the originals
        cos = np.sum(np.asarray(before) * np.asarray(after), axis=-2) / (n_before * n_after)
        np.testing.assert_allclose(cos, 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.inp.dense.b), np.asarray(params.inp.dense.b))
    np.testing.assert_array_equal(np.asarray(out.hidden.norm["scale"]), np.asarray(scale))
    np.testing.assert_array_equal(np.asarray(out.blocks.bias), np.asarray(params.blocks.bias))
    np.testing.assert_array_equal(np.asarray(out.blocks.mult), np.ones(2))


def test_max_norm_on_a_drawn_network_touches_only_weights():
    from initlab.train.build import init_params, model_spec

    from conftest import tiny

    cfg = tiny(
        model={
            "depth": 5,
            "width": 16,
            "residual": True,
            "norm": "layernorm",
            "init": "normal",
            "init_args": {"std": 2.0},
            "bias_init": "normal",
            "bias_init_args": {"std": 5.0},
        }
    )
    params, _ = init_params(model_spec(cfg.model, 8, 3), cfg.model, jax.random.PRNGKey(0))
    out = max_norm(params, 1.0)
    for w in effective_weights(out):
        assert np.all(np.linalg.norm(np.asarray(w), axis=-2) <= 1.0 + 1e-5)
    for part in (
        lambda p: p.inp.dense.b,
        lambda p: p.hidden.dense.b,
        lambda p: p.out.b,
        lambda p: p.hidden.norm,
        lambda p: p.blocks,
    ):
        for a, b in zip(jax.tree.leaves(part(out)), jax.tree.leaves(part(params))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
