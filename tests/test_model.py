"""The scanned MLP: shapes for every normalization, flat program size in depth, gradient taps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initlab.model import ModelSpec, apply, grad_tap, init_params
from initlab.normalizations import NORMALIZATIONS

from conftest import tiny


def build(depth=3, width=8, input_dim=5, classes=3, **model):
    cfg = tiny(model={"depth": depth, "width": width, **model})
    spec = ModelSpec.from_config(cfg.model, input_dim, classes)
    params, state = init_params(spec, cfg.model, jax.random.PRNGKey(0))
    return spec, params, state


@pytest.mark.parametrize("norm", list(NORMALIZATIONS))
@pytest.mark.parametrize("position", ["pre", "post"])
@pytest.mark.parametrize("depth", [1, 2, 5])
def test_shapes_for_every_normalization(norm, position, depth):
    spec, params, state = build(depth=depth, norm=norm, norm_position=position)
    assert params["hidden"]["w"].shape == (depth - 1, 8, 8)
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 5))
    logits, new_state, stats = apply(spec, params, state, x, train=True,
                                     collect=lambda z, a: jnp.stack([z.var(), a.var()]))
    assert logits.shape == (7, 3)
    assert stats.shape == (depth + 1, 2)
    assert np.isfinite(np.asarray(logits)).all()
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_program_size_does_not_grow_with_depth():
    """Hidden layers run under lax.scan: the traced program of a 50-layer net is the 5-layer one's."""
    sizes = []
    for depth in (5, 50):
        spec, params, state = build(depth=depth)
        jaxpr = jax.make_jaxpr(lambda p, s, x: apply(spec, p, s, x, train=True)[0])(params, state, jnp.ones((4, 5)))
        sizes.append(len(str(jaxpr).splitlines()))
    assert sizes[0] == sizes[1]


def test_batchnorm_train_updates_running_stats_and_eval_uses_them():
    spec, params, state = build(norm="batchnorm")
    x = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(2), (64, 5))
    _, trained, _ = apply(spec, params, state, x, train=True)
    assert not np.allclose(np.asarray(trained["inp"]["mean"]), 0.0)
    _, untouched, _ = apply(spec, params, trained, x, train=False)
    np.testing.assert_array_equal(np.asarray(untouched["inp"]["mean"]), np.asarray(trained["inp"]["mean"]))
    train_logits, _, _ = apply(spec, params, state, x, train=True)
    eval_logits, _, _ = apply(spec, params, state, x, train=False)  # running stats still at init
    assert not np.allclose(np.asarray(train_logits), np.asarray(eval_logits))


def test_grad_tap_is_identity_and_reports_cotangent_moments():
    z = jax.random.normal(jax.random.PRNGKey(3), (4, 6))
    target = jax.random.normal(jax.random.PRNGKey(4), (4, 6))

    def loss(z, probe):
        return jnp.sum(jnp.sin(grad_tap(z, probe)) * target)

    np.testing.assert_array_equal(np.asarray(grad_tap(z, jnp.zeros(2))), np.asarray(z))
    gz, gprobe = jax.grad(loss, argnums=(0, 1))(z, jnp.zeros(2))
    expected = np.cos(np.asarray(z)) * np.asarray(target)
    np.testing.assert_allclose(np.asarray(gz), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(gprobe), [expected.mean(), (expected**2).mean()], rtol=1e-5)


def test_init_is_deterministic_per_key():
    _, a, _ = build()
    _, b, _ = build()
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("norm", list(NORMALIZATIONS))
@pytest.mark.parametrize("init", ["he_normal", "orthogonal", "lecun_normal", "zeros"])
def test_residual_net_shapes_with_every_norm_and_plain_init(norm, init):
    spec, params, state = build(depth=5, residual=True, norm=norm, init=init)
    assert spec.num_blocks == 2 and params["blocks"]["mult"].shape == (2,) and params["blocks"]["bias"].shape == (2, 2)
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 5))
    logits, new_state, stats = apply(spec, params, state, x, train=True, collect=lambda z, a: jnp.stack([z.var(), a.var()]))
    assert logits.shape == (7, 3) and stats.shape == (6, 2)
    assert np.isfinite(np.asarray(logits)).all()
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_residual_block_adds_its_input_exactly():
    """h' = φ(h + m·v): with the branch's last layer zeroed, a linear block passes h through."""
    spec, params, state = build(depth=3, residual=True, activation="linear")
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 5))
    h1 = x @ params["inp"]["w"] + params["inp"]["b"]
    u = (h1 + 0.0) @ params["hidden"]["w"][0] + params["hidden"]["b"][0]
    v = u @ params["hidden"]["w"][1] + params["hidden"]["b"][1]
    expected = (h1 + 0.5 * v) @ params["out"]["w"] + params["out"]["b"]
    params = {**params, "blocks": {**params["blocks"], "mult": jnp.array([0.5])}}
    logits, _, _ = apply(spec, params, state, x, train=False)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_residual_program_size_does_not_grow_with_depth():
    sizes = []
    for depth in (5, 51):
        spec, params, state = build(depth=depth, residual=True)
        jaxpr = jax.make_jaxpr(lambda p, s, x: apply(spec, p, s, x, train=True)[0])(params, state, jnp.ones((4, 5)))
        sizes.append(len(str(jaxpr).splitlines()))
    assert sizes[0] == sizes[1]


def test_dropout_only_with_a_key_and_deterministic_per_key():
    spec, params, state = build(depth=3, width=64, dropout=0.5, activation="tanh")
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 5))
    plain, _, _ = apply(spec, params, state, x, train=False)
    again, _, _ = apply(spec, params, state, x, train=True)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(again))  # no key: no dropout
    a, _, _ = apply(spec, params, state, x, train=True, key=jax.random.PRNGKey(2))
    b, _, _ = apply(spec, params, state, x, train=True, key=jax.random.PRNGKey(2))
    c, _, _ = apply(spec, params, state, x, train=True, key=jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(plain)) and not np.allclose(np.asarray(a), np.asarray(c))
    _, _, stats = apply(spec, params, state, x, train=True, key=jax.random.PRNGKey(2),
                        collect=lambda z, a: jnp.mean(a == 0)[None])
    assert 0.3 < float(stats[0, 0]) < 0.7  # about half of layer 1's outputs dropped
