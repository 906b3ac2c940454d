"""The singular values of the input-output Jacobian (initlab.stats.spectrum) and their summary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initlab.stats.spectrum import singular_values_fn, summarize
from initlab.train.build import init_params, model_spec

from conftest import tiny


def linear_net(depth, width, input_dim, init="normal", init_args=None, seed=0):
    cfg = tiny(
        model={
            "depth": depth,
            "width": width,
            "activation": "linear",
            "init": init,
            "init_args": init_args or {"std": 0.3},
            "bias_init": "zeros",
        }
    )
    spec = model_spec(cfg.model, input_dim, 3)
    params, state = init_params(spec, cfg.model, jax.random.PRNGKey(seed))
    return spec, params, state


@pytest.mark.slow
def test_the_jacobian_of_a_linear_net_is_its_weight_product():
    for width, d in ((6, 9), (9, 6)):  # reverse mode (width <= input) and forward mode
        spec, params, state = linear_net(3, width, d)
        x = jax.random.normal(jax.random.PRNGKey(5), (2, d))
        sv = np.asarray(singular_values_fn(spec)(params, state, x))
        W = np.asarray(params.inp.dense.w, np.float64)
        for w in np.asarray(params.hidden.dense.w, np.float64):
            W = W @ w  # h = x W1 W2 W3, so J = (W1 W2 W3)ᵀ
        expected = np.linalg.svd(W.T, compute_uv=False)
        assert sv.shape == (2, min(width, d))
        np.testing.assert_allclose(sv[0], expected, rtol=1e-5)
        np.testing.assert_allclose(sv[1], expected, rtol=1e-5)  # a linear net's Jacobian is the same everywhere


def test_an_orthogonal_linear_net_has_every_singular_value_one():
    spec, params, state = linear_net(20, 12, 12, init="orthogonal", init_args={"gain": 1.0})
    sv = np.asarray(singular_values_fn(spec)(params, state, jnp.ones((3, 12))))
    np.testing.assert_allclose(sv, 1.0, atol=1e-4)
    s = summarize(sv, 12, 12)
    assert s["frac_near_1"] == 1.0 and s["ratio"] == pytest.approx(1.0, abs=1e-3)
    assert s["mean_sq"] == pytest.approx(1.0, abs=1e-3)
