"""The scanned MLP: typed parameters, roles and dtype where they are made, shapes for every
normalization, flat program size in depth, gradient taps."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initlab.nn.initializers import Role
from initlab.nn.model import Blocks, Dense, Layer, MLPParams, apply, effective_weights, features, grad_tap, init_layers
from initlab.nn.normalizations import NORMALIZATIONS
from initlab.train.build import init_params, model_spec

from conftest import tiny


def build(depth=3, width=8, input_dim=5, classes=3, **model):
    cfg = tiny(model={"depth": depth, "width": width, **model})
    spec = model_spec(cfg.model, input_dim, classes)
    params, state = init_params(spec, cfg.model, jax.random.PRNGKey(0))
    return spec, params, state


@pytest.mark.slow
@pytest.mark.parametrize("norm", list(NORMALIZATIONS))
@pytest.mark.parametrize("position", ["pre", "post"])
@pytest.mark.parametrize("depth", [1, 2, 5])
def test_shapes_for_every_normalization(norm, position, depth):
    spec, params, state = build(depth=depth, norm=norm, norm_position=position)
    assert params.hidden.dense.w.shape == (depth - 1, 8, 8)
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 5))
    logits, new_state, stats = apply(
        spec, params, state, x, train=True, collect=lambda z, a: jnp.stack([z.var(), a.var()])
    )
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
    assert not np.allclose(np.asarray(trained.inp["mean"]), 0.0)
    _, untouched, _ = apply(spec, params, trained, x, train=False)
    np.testing.assert_array_equal(np.asarray(untouched.inp["mean"]), np.asarray(trained.inp["mean"]))
    train_logits, _, _ = apply(spec, params, state, x, train=True)
    eval_logits, _, _ = apply(spec, params, state, x, train=False)  # running stats still at init
    assert not np.allclose(np.asarray(train_logits), np.asarray(eval_logits))


def test_grad_tap_is_identity_and_reports_its_reduction_of_the_cotangent():
    z = jax.random.normal(jax.random.PRNGKey(3), (4, 6))
    target = jax.random.normal(jax.random.PRNGKey(4), (4, 6))

    def moments(g, factor):  # the factor is the probe's value: it rescales g before reducing
        return jnp.stack([jnp.mean(g * factor), jnp.mean(jnp.square(g * factor))])

    def loss(z, probe):
        return jnp.sum(jnp.sin(grad_tap(z, probe, moments)) * target)

    probe = jnp.full((2,), 3.0)
    np.testing.assert_array_equal(np.asarray(grad_tap(z, probe, moments)), np.asarray(z))
    gz, gprobe = jax.grad(loss, argnums=(0, 1))(z, probe)
    expected = np.cos(np.asarray(z)) * np.asarray(target)
    np.testing.assert_allclose(np.asarray(gz), expected, rtol=1e-6)  # the tap leaves dL/dz alone
    np.testing.assert_allclose(np.asarray(gprobe), [3 * expected.mean(), 9 * (expected**2).mean()], rtol=1e-5)


def test_init_is_deterministic_per_key():
    cfg = tiny(model={"depth": 3, "width": 8})
    spec = model_spec(cfg.model, 5, 3)
    a, _ = init_params(spec, cfg.model, jax.random.PRNGKey(0))
    b, _ = init_params(spec, cfg.model, jax.random.PRNGKey(0))
    c, _ = init_params(spec, cfg.model, jax.random.PRNGKey(1))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert any(
        not np.array_equal(np.asarray(x), np.asarray(z))  # another key, other weights
        for x, z in zip(jax.tree.leaves(a), jax.tree.leaves(c))
    )


@pytest.mark.slow
@pytest.mark.parametrize("norm", list(NORMALIZATIONS))
@pytest.mark.parametrize("init", ["he_normal", "orthogonal", "lecun_normal", "zeros"])
def test_residual_net_shapes_with_every_norm_and_plain_init(norm, init):
    spec, params, state = build(depth=5, residual=True, norm=norm, init=init)
    assert spec.num_blocks == 2 and params.blocks.mult.shape == (2,) and params.blocks.bias.shape == (2, 2)
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 5))
    logits, new_state, stats = apply(
        spec, params, state, x, train=True, collect=lambda z, a: jnp.stack([z.var(), a.var()])
    )
    assert logits.shape == (7, 3) and stats.shape == (6, 2)
    assert np.isfinite(np.asarray(logits)).all()
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_residual_block_adds_its_input_exactly():
    """h' = φ(h + m·v): with the branch's last layer zeroed, a linear block passes h through."""
    spec, params, state = build(depth=3, residual=True, activation="linear")
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 5))
    inp, hidden, out = params.inp.dense, params.hidden.dense, params.out
    h1 = x @ inp.w + inp.b
    u = (h1 + 0.0) @ hidden.w[0] + hidden.b[0]
    v = u @ hidden.w[1] + hidden.b[1]
    expected = (h1 + 0.5 * v) @ out.w + out.b
    params = params._replace(blocks=params.blocks._replace(mult=jnp.array([0.5])))
    logits, _, _ = apply(spec, params, state, x, train=False)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_residual_program_size_does_not_grow_with_depth():
    sizes = []
    for depth in (5, 51):
        spec, params, state = build(depth=depth, residual=True)
        jaxpr = jax.make_jaxpr(lambda p, s, x: apply(spec, p, s, x, train=True)[0])(params, state, jnp.ones((4, 5)))
        sizes.append(len(str(jaxpr).splitlines()))
    assert sizes[0] == sizes[1]


@pytest.mark.slow
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
    _, _, stats = apply(
        spec, params, state, x, train=True, key=jax.random.PRNGKey(2), collect=lambda z, a: jnp.mean(a == 0)[None]
    )
    assert 0.3 < float(stats[0, 0]) < 0.7  # about half of layer 1's outputs dropped


# ----------------------------------------------------------------------------------------------
# Typed parameters, roles and dtype


def test_params_are_typed_by_layer():
    spec, params, state = build(depth=4, norm="layernorm")
    assert isinstance(params, MLPParams) and isinstance(params.inp, Layer) and isinstance(params.hidden, Layer)
    assert isinstance(params.out, Dense) and params.blocks is None  # a plain MLP has no blocks
    assert params.inp.dense.w.shape == (5, 8) and params.inp.dense.b.shape == (8,)
    assert params.hidden.dense.b.shape == (3, 8) and params.hidden.norm["scale"].shape == (3, 8)
    assert params.out.w.shape == (8, 3) and params.out.b.shape == (3,)
    _, res, _ = build(depth=5, residual=True)
    assert isinstance(res.blocks, Blocks)


@pytest.mark.parametrize("residual", [False, True])
def test_effective_weights_are_the_three_stacked_blocks(residual):
    spec, params, _ = build(depth=5, residual=residual)
    w = effective_weights(params)
    assert [a.shape for a in w] == [(1, 5, 8), (4, 8, 8), (1, 8, 3)]
    np.testing.assert_array_equal(np.asarray(w[0][0]), np.asarray(params.inp.dense.w))
    np.testing.assert_array_equal(np.asarray(w[2][0]), np.asarray(params.out.w))


@pytest.mark.parametrize("residual, hidden_role", [(False, Role.HIDDEN), (True, Role.BRANCH)])
def test_each_layer_is_drawn_with_its_role_fan_in_in_float32(residual, hidden_role):
    calls = []

    def samplers(role, fan_in):
        calls.append((role, fan_in))
        code = list(Role).index(role) + 1  # marks each parameter with the role it was drawn for

        def weight(key, shape, dtype):
            calls.append(("weight", shape, jnp.dtype(dtype)))
            return jnp.full(shape, code, dtype)

        def bias(key, shape, dtype):
            calls.append(("bias", shape, jnp.dtype(dtype)))
            return jnp.full(shape, -code, dtype)

        return weight, bias

    spec = dataclasses.replace(
        model_spec(tiny(model={"depth": 5, "width": 8, "residual": residual}).model, 5, 3), dtype="bfloat16"
    )
    params, _ = init_layers(spec, samplers, jax.random.PRNGKey(0))
    assert {c for c in calls if isinstance(c[0], Role)} == {(Role.INPUT, 5), (hidden_role, 8), (Role.OUTPUT, 8)}
    # drawn in float32 whatever the compute format: a bfloat16 run starts from the float32 run's values
    assert {c[2] for c in calls if c[0] in ("weight", "bias")} == {jnp.dtype(jnp.float32)}
    assert ("bias", (8,), jnp.dtype(jnp.float32)) in calls  # biases in jax's form: their own shape
    code = {role: list(Role).index(role) + 1 for role in Role}
    assert float(params.inp.dense.w[0, 0]) == code[Role.INPUT] and float(params.inp.dense.b[0]) == -code[Role.INPUT]
    assert np.all(np.asarray(params.hidden.dense.w, np.float32) == code[hidden_role])
    assert float(params.out.w[0, 0]) == code[Role.OUTPUT]


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
@pytest.mark.parametrize("init, residual", [("he_normal", False), ("orthogonal", False), ("fixup", True)])
@pytest.mark.parametrize("precision, param_dtype", [("mixed", jnp.float32), ("pure", jnp.bfloat16)])
def test_bfloat16_spec_keeps_parameters_by_precision_and_state_and_logits_wide(
    norm, init, residual, precision, param_dtype
):
    cfg = tiny(model={"depth": 3, "width": 8, "init": init, "residual": residual, "norm": norm})
    wide = model_spec(cfg.model, 5, 3)
    spec = dataclasses.replace(wide, dtype="bfloat16", precision=precision)
    params, state = init_params(spec, cfg.model, jax.random.PRNGKey(0))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(param_dtype)}
    assert {leaf.dtype for leaf in jax.tree.leaves(state)} <= {jnp.dtype(jnp.float32)}  # running stats wide
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 5))
    logits, _, _ = apply(spec, params, state, x, train=True)
    reference, _, _ = apply(wide, jax.tree.map(lambda p: p.astype(jnp.float32), params), state, x, train=True)
    assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
    np.testing.assert_allclose(np.asarray(logits), np.asarray(reference), rtol=0.1, atol=0.1)
    # the hidden layers compute in bfloat16 (8 significant bits): close to float32's, not equal to them
    h = features(spec, params, state, x)
    h32 = features(wide, jax.tree.map(lambda p: p.astype(jnp.float32), params), state, x)
    assert h.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(h, np.float32), np.asarray(h32), rtol=0.1, atol=0.1)
    assert not np.array_equal(np.asarray(h, np.float32), np.asarray(h32))


def test_float32_is_the_default_dtype():
    spec, params, state = build(norm="batchnorm")
    assert spec.dtype == "float32"
    assert {leaf.dtype for leaf in jax.tree.leaves((params, state))} == {jnp.dtype(jnp.float32)}
