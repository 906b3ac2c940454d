"""Weight reparameterizations (weight norm, scaled weight standardization): their defining
properties at init, weight norm's gradient formula and data-dependent init, the gradient
statistics of the effective weights, the theory of scaled WS, and the config's errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initlab.config import ConfigError, from_dict
from initlab.nn.model import pre_activations
from initlab.nn.optimizers import LOSSES
from initlab.nn.params import StandardizedDense, WeightNormDense, effective_weights
from initlab.nn.regularizers import max_norm
from initlab.nn.reparams import REPARAMS, activation_gain
from initlab.stats.statistics import Layout
from initlab.train.build import init_params, init_params_traced, model_spec
from initlab.train.step import loss_and_grads


def _setup(depth=4, width=64, input_dim=32, **model):
    cfg = from_dict({"model": {"depth": depth, "width": width, **model}, "train": {"steps": 1}})
    return cfg, model_spec(cfg.model, input_dim, 10)


def _gaussian(n, d, seed=1):
    return jax.random.normal(jax.random.PRNGKey(seed), (n, d))


def test_every_reparam_builds_and_its_layers_have_the_entry_s_type():
    types = {"none": None, "weightnorm": WeightNormDense, "scaled_ws": StandardizedDense}
    assert set(types) == set(REPARAMS)
    for name, cls in types.items():
        cfg, spec = _setup(reparam=name)
        p, _ = init_params(spec, cfg.model, jax.random.PRNGKey(0))
        hidden = (p.inp.dense, p.hidden.dense)
        assert all(type(d).__name__ == ("Dense" if cls is None else cls.__name__) for d in hidden)
        # weight norm normalizes every layer, scaled WS leaves the classifier plain (NF-ResNets)
        assert type(p.out).__name__ == ("WeightNormDense" if name == "weightnorm" else "Dense")


def test_weight_norm_starts_as_the_initializer_drew_the_net():
    cfg, spec = _setup(reparam="weightnorm")
    plain_cfg, plain_spec = _setup()
    key, x = jax.random.PRNGKey(3), _gaussian(64, 32)
    p, s = init_params(spec, cfg.model, key)
    q, qs = init_params(plain_spec, plain_cfg.model, key)
    for a, b in zip(effective_weights(p), effective_weights(q)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        pre_activations(spec, p, s, x)[0], pre_activations(plain_spec, q, qs, x)[0], rtol=1e-5, atol=1e-6
    )


@pytest.mark.slow
def test_weight_norm_gradients_are_the_paper_s_formula_and_the_statistics_see_the_effective_weight():
    """Salimans & Kingma 2016, eq. 3: ∇_g L = ∇_w L · v/‖v‖ and ∇_v L = (g/‖v‖)(∇_w L − ∇_g L · v/‖v‖),
    with ∇_w L the gradient of the effective weight, which the statistics pass returns."""
    cfg, spec = _setup(reparam="weightnorm")
    p, s = init_params(spec, cfg.model, jax.random.PRNGKey(0))
    p = p._replace(inp=p.inp._replace(dense=p.inp.dense._replace(g=p.inp.dense.g * 1.7)))  # g ≠ ‖v‖
    x, y = _gaussian(48, 32), jnp.arange(48) % 10
    loss_fn = LOSSES["cross_entropy"]
    _, _, grads, raw = loss_and_grads(spec, loss_fn, p, s, x, y, layout=Layout.default())
    _, _, plain_pass, _ = loss_and_grads(spec, loss_fn, p, s, x, y)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(plain_pass)):  # one gradient either way
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    for layer, gw in ((p.inp.dense, raw.grads.inp.dense.w), (p.out, raw.grads.out.w)):
        v, g = np.asarray(layer.w, np.float64), np.asarray(layer.g, np.float64)
        gw = np.asarray(gw, np.float64)
        norm = np.linalg.norm(v, axis=0)
        grad_g = np.sum(gw * v / norm, axis=0)
        grad_v = g / norm * (gw - grad_g * v / norm)
        got = grads.inp.dense if layer is p.inp.dense else grads.out
        np.testing.assert_allclose(got.g, grad_g, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(got.w, grad_v, rtol=1e-4, atol=1e-7)
        # the gradient of w = g v/‖v‖ is orthogonal to v (the paper's M_w projection)
        np.testing.assert_allclose(np.sum(np.asarray(got.w) * v, axis=0), 0.0, atol=1e-6)


@pytest.mark.slow
def test_weight_norm_data_init_gives_every_unit_mean_0_variance_1_on_its_batch():
    n = 200
    cfg, spec = _setup(depth=5, reparam="weightnorm", init="weightnorm_data", init_args={"batch_size": 1000})
    x = _gaussian(n, 32)
    p, s, trace = init_params_traced(spec, cfg.model, jax.random.PRNGKey(0), x)
    zs, logits = pre_activations(spec, p, s, x)  # the batch the init saw: all n examples
    for z in [*zs, logits]:
        np.testing.assert_allclose(jnp.mean(z, axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(jnp.var(z, axis=0), 1.0, rtol=1e-3)
    assert trace.file == "weightnorm_init.csv" and [r["layer"] for r in trace.rows] == list(range(1, 7))
    # before the fit the first layer's directions, of norm 1, see the inputs' unit variance
    assert trace.rows[0]["std"] == pytest.approx(1.0, rel=0.1)


def test_activation_gains_are_brock_et_al_s():
    assert activation_gain("relu") == pytest.approx(math.sqrt(2 / (1 - 1 / math.pi)), rel=1e-9)
    assert activation_gain("linear") == pytest.approx(1.0, rel=1e-9)
    z = np.random.default_rng(0).standard_normal(2_000_000)
    gelu = np.asarray(jax.nn.gelu(jnp.asarray(z), approximate=False))
    assert activation_gain("gelu") == pytest.approx(1 / gelu.std(), rel=2e-3)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "gelu", "silu"])
def test_scaled_ws_preserves_pre_activation_variance_and_ignores_the_draw_s_scale(activation):
    """Brock et al. 2021: with standardized columns times γ = 1/√Var φ, an input of unit variance
    keeps unit pre-activation variance through the depth, whatever the initializer's scale."""
    cfg, spec = _setup(
        depth=10, width=512, input_dim=256, activation=activation, reparam="scaled_ws", init="lecun_normal"
    )
    big, big_spec = _setup(
        depth=10,
        width=512,
        input_dim=256,
        activation=activation,
        reparam="scaled_ws",
        init="mean_field",
        init_args={"sigma_w": 4.0},
    )
    x = _gaussian(256, 256)
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)  # each input: variance 1 across features
    key = jax.random.PRNGKey(0)
    p, s = init_params(spec, cfg.model, key)
    zs, _ = pre_activations(spec, p, s, x)
    var = np.asarray(jnp.var(zs, axis=(1, 2)))
    np.testing.assert_allclose(var, 1.0, atol=0.1)
    for w in effective_weights(p)[:2]:  # the standardized layers: columns of mean 0 and norm 1
        np.testing.assert_allclose(jnp.mean(w, axis=-2), 0.0, atol=1e-6)
        np.testing.assert_allclose(jnp.sum(w**2, axis=-2), 1.0, rtol=1e-4)
    q, qs = init_params(big_spec, big.model, key)
    np.testing.assert_allclose(pre_activations(big_spec, q, qs, x)[0], zs, rtol=1e-4, atol=1e-4)


def test_scaled_ws_theory_is_the_centred_activation_s_and_the_measured_gradients_follow_it():
    """A plain ReLU net with scaled WS keeps q = 1 but its gradient grows by χ₁ = γ²/2 ≈ 1.47 per
    layer toward the input (the centred ReLU's chaotic phase); measured at init, width 1024."""
    from initlab.train.theory_inputs import predict_config
    from conftest import layer_stats_fn

    depth, width = 8, 1024
    cfg, spec = _setup(depth=depth, width=width, input_dim=256, reparam="scaled_ws")
    pred = predict_config(cfg.model, 256, 1.0)
    gamma2 = 2 / (1 - 1 / math.pi)
    assert pred["applies"] and pred["sigma_w2"] == pytest.approx(gamma2, rel=1e-9)
    assert pred["chi1"] == pytest.approx(gamma2 / 2, rel=1e-6) and pred["phase"] == "chaotic"
    np.testing.assert_allclose(pred["q"], 1.0, rtol=1e-9)
    assert pred["reparam"]["gain"] == pytest.approx(math.sqrt(gamma2), rel=1e-9)
    x = _gaussian(256, 256)
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    p, s = init_params(spec, cfg.model, jax.random.PRNGKey(0))
    stats = jax.jit(layer_stats_fn(spec, LOSSES["cross_entropy"]))(p, s, p, x, jnp.arange(256) % 10)
    grad = np.asarray(stats["grad_var"])[:depth]
    measured = (grad[1] / grad[depth - 1]) ** (1 / (depth - 2))
    assert measured == pytest.approx(pred["chi1"], rel=0.1)
    np.testing.assert_allclose(np.asarray(stats["pre_var"])[:depth], 1.0, atol=0.1)


@pytest.mark.slow
def test_max_norm_and_lsuv_act_on_the_effective_weight():
    cfg, spec = _setup(reparam="weightnorm")
    p, _ = init_params(spec, cfg.model, jax.random.PRNGKey(0))
    bounded = max_norm(p, 0.5)
    for w in effective_weights(bounded):
        assert float(jnp.max(jnp.sqrt(jnp.sum(w**2, axis=-2)))) <= 0.5 + 1e-6
    for reparam in ("weightnorm", "scaled_ws"):
        cfg, spec = _setup(reparam=reparam, init="lsuv", init_args={"tol": 0.01})
        x = _gaussian(256, 32)
        p, s = init_params(spec, cfg.model, jax.random.PRNGKey(0), x)
        zs, logits = pre_activations(spec, p, s, x)
        np.testing.assert_allclose([*np.var(np.asarray(zs), axis=(1, 2)), np.var(np.asarray(logits))], 1.0, atol=0.011)


@pytest.mark.parametrize(
    "model, message",
    [
        ({"reparam": "batchnorm"}, "model.reparam: 'batchnorm' is not"),
        (
            {"init": "weightnorm_data"},
            "model.init: 'weightnorm_data' sets weight norm's lengths g from data; it needs model.reparam: weightnorm",
        ),
        (
            {"reparam": "weightnorm", "init": "weightnorm_data", "norm": "layernorm"},
            "model.norm: 'layernorm' with model.init",
        ),
        (
            {"reparam": "weightnorm", "init": "weightnorm_data", "init_args": {"std": 0}},
            "model.init_args.std: 0 is not allowed",
        ),
        (
            {"reparam": "weightnorm", "init": "weightnorm_data", "residual": True, "depth": 5},
            "model.init: 'weightnorm_data' does not support a residual network",
        ),
        (
            {"reparam": "scaled_ws", "parameterization": "mup", "base_width": 32},
            "model.reparam: 'scaled_ws' fixes each unit",
        ),
        (
            {"reparam": "weightnorm", "init": "fixup", "residual": True, "depth": 5},
            "model.init: 'fixup' sets weights to zero",
        ),
        (
            {"reparam": "scaled_ws", "activation": "leaky_relu", "shaping": "tat", "depth": 30},
            "model.reparam: 'scaled_ws' with model.shaping: 'tat'",
        ),
    ],
)
def test_bad_reparam_configs_are_one_line_errors_naming_the_key(model, message):
    with pytest.raises(ConfigError) as e:
        _setup(**model)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_theory_says_how_each_reparam_enters_the_maps(tmp_path):
    from typer.testing import CliRunner

    from initlab.cli import app

    runner = CliRunner()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data: {dataset: gaussian, input_dim: 16, train_size: 256, test_size: 32, probe_size: 64}\n"
        "model: {depth: 5, width: 64}\n"
    )
    ws = runner.invoke(app, ["theory", str(cfg), "--set", "model.reparam=scaled_ws"])
    text = " ".join(ws.output.split())
    assert ws.exit_code == 0 and "scaled_ws: γ = 1.71286, the maps of the centred activation" in text
    assert "σ_w² = 2.934 (first layer 1)" in text and "chaotic phase" in text
    wn = runner.invoke(app, ["theory", str(cfg), "--set", "model.reparam=weightnorm"])
    plain = runner.invoke(app, ["theory", str(cfg)])
    assert wn.exit_code == 0 and wn.output == plain.output  # it starts as the plain net its init drew
    data = runner.invoke(
        app, ["theory", str(cfg), "--set", "model.reparam=weightnorm", "--set", "model.init=weightnorm_data"]
    )
    assert data.exit_code == 0 and "weightnorm_data weights are fitted to data" in " ".join(data.output.split())
