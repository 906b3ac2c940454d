"""Mean-field theory against the literature's numbers and against measured networks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from initlab.activations import ACTIVATIONS
from initlab.cli import app
from initlab.config import from_dict
from initlab.errors import InitlabError
from initlab.build import init_params, model_spec
from initlab.initializers import BIAS_INITIALIZERS, INITIALIZERS, Role, resolve_args
from initlab.optimizers import LOSSES
from initlab.step import make_layer_stats
from initlab.theory import (CLOSED_FORMS, MeanField, _e1, _functions, critical_sigma_w2, effective_sigmas,
                            phase_table, predict_config, predict_layers)

runner = CliRunner()


@pytest.mark.parametrize("q", [0.1, 1.0, 3.7])
def test_relu_q_map_matches_the_closed_form_and_the_quadrature(q):
    m = MeanField("relu", 2.0, 0.1)
    assert m.q_map(q) == pytest.approx(2.0 * q / 2 + 0.1, rel=1e-12)
    phi, dphi, _ = _functions("relu")
    assert _e1(lambda x: phi(x) ** 2, q) == pytest.approx(CLOSED_FORMS["relu"][0](q), rel=1e-6)
    assert _e1(lambda x: dphi(x) ** 2, q) == pytest.approx(0.5, rel=1e-6)


def test_relu_with_he_is_critical_and_xavier_halves():
    assert MeanField("relu", 2.0, 0.0).phase == "critical"
    pred = predict_layers("relu", 10, 1.0, 1.0, 1.0, 0.0)
    np.testing.assert_allclose(pred.q, [1.0 / 2**k for k in range(10)], rtol=1e-12)
    assert predict_layers("relu", 10, 1.0, 2.0, 2.0, 0.0).q == [2.0] * 10


def test_tanh_critical_points():
    assert critical_sigma_w2("tanh", 0.05) == pytest.approx(1.76, abs=0.01)
    assert critical_sigma_w2("tanh", 0.0) == pytest.approx(1.00, abs=0.01)
    assert MeanField("tanh", 1.76, 0.05).q_star == pytest.approx(0.57, abs=0.01)  # REFERENCE: q* ≈ 0.57


def test_selu_fixed_point_is_mean_zero_variance_one():
    m = MeanField("selu", 1.0, 0.0)
    assert m.q_star == pytest.approx(1.0, abs=1e-3)
    assert m.chi1 == pytest.approx(1.07, abs=0.005)
    lam, alpha = 1.0507009873554805, 1.6732632423543772
    exact = lam**2 / 2 + lam**2 * alpha**2 * math.e**2 * 0.5 * math.erfc(2 / math.sqrt(2))
    assert m.chi1 == pytest.approx(exact, rel=1e-6)


def test_phases_and_depth_scales():
    ordered, chaotic = MeanField("tanh", 1.0, 0.05), MeanField("tanh", 3.0, 0.05)
    assert ordered.phase == "ordered" and chaotic.phase == "chaotic"
    assert ordered.c_fixed_point() == 1.0 and 0 < chaotic.c_fixed_point() < 1
    assert ordered.xi_c == pytest.approx(-1 / math.log(ordered.chi1), rel=1e-9)  # ordered: ξ_c = −1/ln χ₁
    assert math.isinf(MeanField("tanh", critical_sigma_w2("tanh", 0.05), 0.05).xi_c)
    xs = [MeanField("tanh", s, 0.05).xi_c for s in (1.0, 1.5, 1.7)]
    assert xs == sorted(xs)  # ξ_c grows toward criticality
    table = phase_table("tanh", 0.05, [1.0, 3.0])
    assert [r["phase"] for r in table["rows"]] == ["ordered", "chaotic"]
    assert table["rows"][0]["max_trainable_depth"] == pytest.approx(6 * xs[0])


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_has_finite_maps(name):
    m = MeanField(name, 1.0, 0.05)
    assert math.isfinite(m.q_map(1.0)) and math.isfinite(m.chi(1.0)) and m.phase in ("ordered", "chaotic", "critical",
                                                                                    "unbounded")


@pytest.mark.parametrize("name", [n for n in INITIALIZERS if INITIALIZERS[n].sigma_w2 is not None])
def test_effective_sigma_w2_is_fan_in_times_variance(name):
    entry = INITIALIZERS[name]
    args = resolve_args(entry, None, "x")
    w = np.asarray(entry.sampler(args, Role.HIDDEN, 600)(jax.random.PRNGKey(0), (600, 400), jnp.float32))
    assert 600 * w.var() == pytest.approx(entry.sigma_w2(600, 400, args), rel=0.03, abs=1e-6)


@pytest.mark.parametrize("bias_init, args", [(n, {}) for n in BIAS_INITIALIZERS] + [
    ("normal", {"std": 0.3}), ("uniform", {"limit": 0.2}), ("constant", {"value": 0.5})])
def test_effective_sigma_b2_is_the_bias_entry_s_variance(bias_init, args):
    cfg = from_dict({"model": {"width": 64, "bias_init": bias_init, "bias_init_args": args}})
    entry = BIAS_INITIALIZERS[bias_init]
    expected = entry.sigma_b2(64, cfg.model.bias_init_args)  # the hidden layers' fan-in is the width
    sig = effective_sigmas(cfg.model, 784)
    if expected is None:
        assert isinstance(sig, str) and "constant non-zero bias" in sig
    else:
        assert sig == (2.0, 2.0, expected)


def test_effective_sigma_b2_values():
    def b2(**model):
        return effective_sigmas(from_dict({"model": {"width": 50, **model}}).model, 784)[2]

    assert b2(bias_init="standard") == pytest.approx(1 / 150)
    assert b2(bias_init="normal", bias_init_args={"std": 0.1}) == pytest.approx(0.01)
    assert b2(init="mean_field", init_args={"sigma_b": 0.2}) == pytest.approx(0.04)  # the init's own biases
    assert b2(bias_init="constant") == 0.0


def test_theory_does_not_apply_says_why():
    assert "renormalises" in effective_sigmas(from_dict({"model": {"norm": "batchnorm"}}).model, 784)
    assert "no fixed weight variance" in effective_sigmas(from_dict({"model": {"init": "constant"}}).model, 784)
    cfg = from_dict({"model": {"bias_init": "constant", "bias_init_args": {"value": 0.1}}})
    assert "constant non-zero bias" in predict_config(cfg.model, 784, 1.0)["reason"]
    with pytest.raises(InitlabError):
        MeanField("rellu", 1.0, 0.0)


@pytest.mark.parametrize("activation, init, args", [
    ("relu", "he_normal", {}), ("relu", "mean_field", {"sigma_w": 1.2, "sigma_b": 0.1}),
    ("tanh", "mean_field", {"sigma_w": 1.0, "sigma_b": 0.2236}), ("tanh", "mean_field", {"sigma_w": 1.8, "sigma_b": 0.2236}),
    ("selu", "lecun_normal", {}), ("selu", "mean_field", {"sigma_w": 1.2, "sigma_b": 0.0}),
])
def test_predicted_per_layer_variance_matches_measurement(activation, init, args):
    """Width 1024, Gaussian inputs, 3 seeds: measured pre-activation variance of every hidden layer
    within 10% of the prediction, and the gradient ratio to the last hidden layer within 20%."""
    depth, width, d_in, batch = 8, 1024, 256, 256
    cfg = from_dict({"model": {"depth": depth, "width": width, "activation": activation, "init": init,
                               "init_args": args}})
    spec = model_spec(cfg.model, d_in, 10)
    stats_fn = make_layer_stats(spec, LOSSES["cross_entropy"])
    pre, grad = [], []
    for seed in range(3):
        params, state = init_params(spec, cfg.model, jax.random.PRNGKey(seed))
        x = jax.random.normal(jax.random.PRNGKey(100 + seed), (batch, d_in))
        st = stats_fn(params, state, params, x, jnp.arange(batch) % 10)
        pre.append(np.asarray(st["pre_var"][:depth]))
        g = np.asarray(st["grad_var"][:depth])
        grad.append(g / g[-1])
    q0 = 1.0
    pred = predict_config(cfg.model, d_in, q0)
    np.testing.assert_allclose(np.mean(pre, axis=0), pred["q"], rtol=0.10)
    np.testing.assert_allclose(np.mean(grad, axis=0), pred["grad_ratio"], rtol=0.20)


def test_cli_theory_phase_diagram_and_config(tmp_path):
    result = runner.invoke(app, ["theory", "--activation", "tanh", "--sigma-b2", "0.05", "--sigma-w2", "1.0",
                                 "--sigma-w2", "3.0", "--plot", str(tmp_path / "phase.png")])
    assert result.exit_code == 0, result.output
    assert "critical σ_w² = 1.761" in result.output and "ordered" in result.output and "chaotic" in result.output
    assert (tmp_path / "phase.png").read_bytes()[:4] == b"\x89PNG"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {dataset: gaussian, input_dim: 16, train_size: 256, test_size: 32, probe_size: 64}\n"
                   "model: {depth: 5, width: 64, activation: tanh, init: mean_field, "
                   "init_args: {sigma_w: 1.2, sigma_b: 0.2236}}\n")
    out = runner.invoke(app, ["theory", str(cfg)])
    assert out.exit_code == 0, out.output
    assert "ordered phase" in out.output and "6ξ_c" in out.output
    bn = runner.invoke(app, ["theory", str(cfg), "--set", "model.norm=batchnorm"])
    assert bn.exit_code == 0 and "does not apply" in bn.output
    neither = runner.invoke(app, ["theory"])
    assert neither.exit_code == 1 and "give a CONFIG" in neither.output
