"""Kernel shaping (TAT, DKS): the solved transformations against DeepMind's dks package, their
defining conditions on the local maps, what a shaped net does at init, and the config's errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initlab.activations import Shape, activation_fn, image, max_slope
from initlab.config import ConfigError, from_dict
from initlab.shaping import SHAPINGS, leaky_relu_c, local_c, local_maps, shape_for, shape_of_flat

# What dks 0.1.2 (DeepMind, 2023) gives for a plain MLP of D nonlinear layers, computed once with
# dks.base.activation_transform._get_activations_params(..., subnet_max_func=D-fold composition)
# for TAT and max_slope_func=lambda s: s ** D for DKS.
DKS_TAT = {  # (D, eta): (negative_slope, output_scale)
    (10, 0.5): (0.4500500559806824, 1.2896276020582813),
    (50, 0.9): (0.43052294850349426, 1.2989477863184222),
    (100, 0.9): (0.5704395323991776, 1.2284042441106242),
}
DKS_DKS = {  # (activation, D): (input_scale, input_shift, output_shift, output_scale), zeta 1.5
    ("tanh", 10): (0.29665009875041387, 0.6528036088092668, -0.5424961621452083, 4.964600167211177),
    ("tanh", 100): (0.09043794488904179, 0.5601066908545849, -0.5050043766915963, 14.902525812823376),
    ("softplus", 10): (0.8102795425328679, 0.41900040827049195, -0.9981736048424656, 2.046517222038866),
    ("softplus", 100): (0.22802376124278004, 0.4075095828100825, -0.9237196070682057, 7.30325308045571),
}


@pytest.mark.parametrize("depth, eta", list(DKS_TAT))
def test_tat_matches_the_dks_package_and_meets_its_condition(depth, eta):
    shape = shape_for("leaky_relu", "tat", {"eta": eta}, depth)
    slope, scale = DKS_TAT[(depth, eta)]
    # dks stops its bisection at |C_f(0) - eta| < 1e-8; ours runs to machine precision
    assert shape.negative_slope == pytest.approx(slope, abs=1e-7)
    assert shape.output_scale == pytest.approx(scale, abs=1e-7)
    maps = local_maps("leaky_relu", shape, depth)
    assert maps.net_c_0 == pytest.approx(eta, abs=1e-9)
    assert maps.q_1 == pytest.approx(1.0, abs=1e-9)  # Q(1) = 1 (and Q(q) = q: the leaky ReLU is homogeneous)


@pytest.mark.parametrize("name, depth", list(DKS_DKS))
def test_dks_matches_the_dks_package_and_meets_its_four_conditions(name, depth):
    shape = shape_for(name, "dks", {"zeta": 1.5}, depth)
    got = (shape.input_scale, shape.input_shift, shape.output_shift, shape.output_scale)
    np.testing.assert_allclose(got, DKS_DKS[(name, depth)], rtol=2e-7, atol=1e-8)
    maps = local_maps(name, shape, depth)
    assert maps.q_1 == pytest.approx(1.0, abs=1e-9)
    assert maps.q_slope == pytest.approx(1.0, abs=1e-8)
    assert maps.c_0 == pytest.approx(0.0, abs=1e-12)
    assert maps.net_c_slope == pytest.approx(1.5, abs=1e-7)


def test_the_leaky_relu_c_map_closed_form_is_a_sampled_one():
    shape = Shape("check", negative_slope=0.3, output_scale=1.7)
    f = activation_fn("relu", shape)
    for c in (0.0, 0.4, 0.9):
        rng = np.random.default_rng(0)
        u = rng.standard_normal(400_000)
        v = c * u + math.sqrt(1 - c * c) * rng.standard_normal(400_000)
        fu, fv = np.asarray(f(jnp.asarray(u))), np.asarray(f(jnp.asarray(v)))
        assert np.mean(fu * fv) / np.mean(fu * fu) == pytest.approx(leaky_relu_c(c, 0.3), abs=5e-3)


@pytest.mark.parametrize("activation, shaping", [("leaky_relu", "tat"), ("tanh", "dks")])
def test_a_shaped_deep_net_keeps_variance_and_correlation_as_its_maps_say(activation, shaping):
    """At init, with orthogonal weights and q = 1 inputs, every layer's pre-activation second moment
    stays 1 and two inputs' correlation after the last layer is the whole net's C map of theirs."""
    depth, width = 10, 1024  # the kernel's finite-width error grows like depth/width
    args = {"eta": 0.5} if shaping == "tat" else {"zeta": 1.5}
    shape = shape_for(activation, shaping, args, depth)
    f = activation_fn(activation, shape)
    k = jax.random.split(jax.random.PRNGKey(0), depth + 1)
    ortho = jax.nn.initializers.orthogonal()
    x = jax.random.normal(k[0], (2, width))
    x = x / jnp.sqrt(jnp.mean(x**2, axis=1, keepdims=True))  # q = 1 each
    c0 = float(jnp.dot(x[0], x[1]) / width)
    q, c = [], c0
    h = x
    for layer in range(depth):
        z = h @ ortho(k[layer + 1], (width, width))
        q.append(float(jnp.mean(z**2)))
        h = f(z)
        c = local_c(activation, shape, c)
    measured = float(jnp.dot(h[0], h[1]) / jnp.sqrt(jnp.dot(h[0], h[0]) * jnp.dot(h[1], h[1])))
    assert max(abs(v - 1) for v in q) < 0.15
    assert measured == pytest.approx(c, abs=0.05)


def test_shaped_activation_reference_values_follow_the_transformation():
    shape = shape_for("tanh", "dks", {"zeta": 1.5}, 100)
    lo, hi = image("tanh", shape)
    assert lo == pytest.approx(shape.output_scale * (-1 + shape.output_shift), abs=1e-3)
    assert hi == pytest.approx(shape.output_scale * (1 + shape.output_shift), abs=1e-3)
    assert max_slope("tanh", shape) == pytest.approx(shape.output_scale * shape.input_scale, rel=1e-4)


def _cfg(**model):
    return from_dict({"model": {"depth": 20, "width": 16, **model}, "train": {"steps": 1}})


@pytest.mark.parametrize("model, message", [
    ({"activation": "tanh", "shaping": "tat"}, "model.shaping: 'tat' does not take model.activation 'tanh'"),
    ({"activation": "relu", "shaping": "dks"}, "model.shaping: 'dks' does not take model.activation 'relu'"),
    ({"activation": "leaky_relu", "shaping": "tat", "shaping_args": {"eta": 1.0}}, "model.shaping_args.eta: 1 is not allowed"),
    ({"activation": "tanh", "shaping": "dks", "shaping_args": {"zeta": 0.9}}, "model.shaping_args.zeta: 0.9 is not allowed"),
    ({"activation": "tanh", "shaping": "dks", "shaping_args": {"eta": 0.9}}, "model.shaping_args.eta: not an argument"),
    ({"activation": "leaky_relu", "shaping": "tat", "depth": 3}, "model.shaping_args.eta: 0.9 cannot be reached by a 3-layer"),
    ({"activation": "tanh", "shaping": "dks", "norm": "batchnorm"}, "model.norm: 'batchnorm' with model.shaping: 'dks'"),
    ({"activation": "tanh", "shaping": "dks", "residual": True, "depth": 21}, "model.residual: True with model.shaping"),
    ({"activation": "tanh", "shaping_args": {"zeta": 2.0}}, "model.shaping_args: {'zeta': 2.0} has no effect"),
])
def test_bad_shaping_configs_are_one_line_errors_naming_the_key(model, message):
    with pytest.raises(ConfigError) as e:
        _cfg(**model)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_every_shaping_entry_builds_a_config_and_a_stored_run_reads_its_shape():
    from initlab.build import model_spec
    from initlab.report import flatten
    from initlab.config import to_dict

    for name, act in (("none", "tanh"), ("tat", "leaky_relu"), ("dks", "tanh")):
        assert name in SHAPINGS
        cfg = _cfg(activation=act, shaping=name)
        spec = model_spec(cfg.model, 784, 10)
        assert (spec.shape is None) == (name == "none")
        assert shape_of_flat(flatten(to_dict(cfg))) == spec.shape


def test_theory_of_a_shaped_net_uses_the_transformed_activation():
    from initlab.theory import predict_config

    cfg = _cfg(activation="leaky_relu", shaping="tat", init="orthogonal", depth=50, width=64)
    pred = predict_config(cfg.model, 784, 1.0)
    assert pred["applies"] and pred["shaping"]["maps"]["C_f(0)"] == pytest.approx(0.9, abs=1e-9)
    # Q(q) = q with σ_w² = 1: the predicted second moment stays at the input's, and gradients are flat
    np.testing.assert_allclose(pred["q"], 1.0, rtol=1e-9)
    np.testing.assert_allclose(pred["grad_ratio"], 1.0, rtol=1e-9)
    assert "tat" in pred["shaping"]["method"] and "negative slope 0.43052" in pred["shaping"]["transformation"]
