"""Mean-field theory against the literature's numbers and against measured networks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from initlab.cli import app
from initlab.config import from_dict
from initlab.errors import InitlabError
from initlab.nn.activations import ACTIVATIONS, Shape, numeric
from initlab.nn.formats import FORMATS
from initlab.nn.initializers import BIAS_INITIALIZERS, INITIALIZERS, Role, resolve_args
from initlab.nn.optimizers import LOSSES
from initlab.theory.mean_field import (
    MeanField,
    critical_sigma_w2,
    format_crossings,
    output_grad_ms,
    phase_table,
    predict_layers,
    underflow_layer,
)
from initlab.theory.quadrature import bisect, expect, expect2
from initlab.train.theory_inputs import effective_sigmas, gradient_prediction, loss_scale_value, predict_config
from initlab.train.build import init_params, model_spec

from initlab.stats.spectrum import singular_values_fn, summarize

from conftest import make_layer_stats, small_run, tiny

runner = CliRunner()
SIGMOID_30 = {"depth": 30, "width": 128, "activation": "sigmoid"}


@pytest.mark.parametrize("q", [0.1, 1.0, 3.7])
def test_relu_q_map_matches_the_closed_form_and_the_quadrature(q):
    m = MeanField("relu", 2.0, 0.1)
    assert m.q_map(q) == pytest.approx(2.0 * q / 2 + 0.1, rel=1e-12)
    phi, dphi, _ = numeric("relu")
    assert expect(lambda x: phi(x) ** 2, (), q) == pytest.approx(ACTIVATIONS["relu"].kernel[0](q), rel=1e-6)
    assert expect(lambda x: dphi(x) ** 2, (), q) == pytest.approx(0.5, rel=1e-6)


def test_the_quadratures_and_the_root_finder_meet_closed_forms():
    kernel = ACTIVATIONS["relu"].kernel
    for c in (-0.6, 0.0, 0.8):  # the 2-D rule split at ReLU's kink, against the arc-cosine kernel
        assert expect2(numeric("relu")[0], c, (0.0,), 2.5) == pytest.approx(kernel.cross(2.5, c), rel=1e-9)
    assert bisect(lambda x: x * x < 2, 0.0, 2.0, steps=60) == pytest.approx(math.sqrt(2), rel=1e-15)
    assert bisect(lambda x: x < 1e-7, 1e-12, 1.0, steps=80, geometric=True) == pytest.approx(1e-7, rel=1e-12)


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
    bisected = MeanField("tanh", critical_sigma_w2("tanh", 0.05), 0.05)  # χ₁ = 1 to rounding: finite ξ_c
    assert bisected.phase.startswith("near-critical") and bisected.xi_c > 1e6
    xs = [MeanField("tanh", s, 0.05).xi_c for s in (1.0, 1.5, 1.7)]
    assert xs == sorted(xs)  # ξ_c grows toward criticality
    table = phase_table("tanh", 0.05, [1.0, 3.0])
    assert [r["phase"] for r in table["rows"]] == ["ordered", "chaotic"]
    assert table["rows"][0]["max_trainable_depth"] == pytest.approx(6 * xs[0])


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_has_finite_maps(name):
    m = MeanField(name, 1.0, 0.05)
    assert (
        math.isfinite(m.q_map(1.0))
        and math.isfinite(m.chi(1.0))
        and m.phase in ("ordered", "chaotic", "critical", "near-critical ordered", "near-critical chaotic", "unbounded")
    )


@pytest.mark.parametrize("name", [n for n in INITIALIZERS if INITIALIZERS[n].sigma_w2 is not None])
def test_effective_sigma_w2_is_fan_in_times_variance(name):
    entry = INITIALIZERS[name]
    args = resolve_args(entry, None, "x")
    w = np.asarray(entry.sampler(args, Role.HIDDEN, 600)(jax.random.PRNGKey(0), (600, 400), jnp.float32))
    assert 600 * w.var() == pytest.approx(entry.sigma_w2(600, 400, args), rel=0.03, abs=1e-6)


@pytest.mark.parametrize(
    "bias_init, args",
    [(n, {}) for n in BIAS_INITIALIZERS]
    + [("normal", {"std": 0.3}), ("uniform", {"limit": 0.2}), ("constant", {"value": 0.5})],
)
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


@pytest.mark.parametrize(
    "activation, init, args",
    [
        ("relu", "he_normal", {}),
        ("relu", "mean_field", {"sigma_w": 1.2, "sigma_b": 0.1}),
        ("tanh", "mean_field", {"sigma_w": 1.0, "sigma_b": 0.2236}),
        ("tanh", "mean_field", {"sigma_w": 1.8, "sigma_b": 0.2236}),
        ("selu", "lecun_normal", {}),
        ("selu", "mean_field", {"sigma_w": 1.2, "sigma_b": 0.0}),
        ("erf", "mean_field", {"sigma_w": 1.5, "sigma_b": 0.2}),  # the closed-form arcsine kernel
    ],
)
@pytest.mark.slow
def test_predicted_per_layer_variance_matches_measurement(activation, init, args):
    """Width 1024, Gaussian inputs, 3 seeds: measured pre-activation variance of every hidden layer
    within 10% of the prediction, and the gradient ratio to the last hidden layer within 20%."""
    depth, width, d_in, batch = 8, 1024, 256, 256
    cfg = from_dict(
        {"model": {"depth": depth, "width": width, "activation": activation, "init": init, "init_args": args}}
    )
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


@pytest.mark.slow
def test_cli_theory_phase_diagram_and_config(tmp_path):
    result = runner.invoke(
        app,
        [
            "theory",
            "--activation",
            "tanh",
            "--sigma-b2",
            "0.05",
            "--sigma-w2",
            "1.0",
            "--sigma-w2",
            "3.0",
            "--plot",
            str(tmp_path / "phase.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "critical σ_w² = 1.761" in result.output and "ordered" in result.output and "chaotic" in result.output
    assert (tmp_path / "phase.png").read_bytes()[:4] == b"\x89PNG"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data: {dataset: gaussian, input_dim: 16, train_size: 256, test_size: 32, probe_size: 64}\n"
        "model: {depth: 5, width: 64, activation: tanh, init: mean_field, "
        "init_args: {sigma_w: 1.2, sigma_b: 0.2236}}\n"
    )
    out = runner.invoke(app, ["theory", str(cfg)])
    assert out.exit_code == 0, out.output
    assert "ordered phase" in out.output and "6ξ_c" in out.output
    bn = runner.invoke(app, ["theory", str(cfg), "--set", "model.norm=batchnorm"])
    assert bn.exit_code == 0 and "does not apply" in bn.output
    neither = runner.invoke(app, ["theory"])
    assert neither.exit_code == 1 and "give a CONFIG" in neither.output


# The output gradient's mean square per logit at logit variance q, in closed form: cross-entropy's
# p − y is (C−1)/C² for a uniform softmax, (C−1)/C² (1 + q/C) to first order in q; mse's (2/C)(z − t)
# is (4/C²)(q + E[t²]) exactly.
OUTPUT_GRAD_MS = {
    "cross_entropy": lambda q, c, s: (c - 1) / c**2 * (1 + q / c),
    "mse": lambda q, c, s: 4 / c**2 * (q + (1 / c if s is None else s**2)),
}


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("q, c, scale", [(1e-10, 10, None), (0.5, 10, None), (0.2, 3, 0.8)])
def test_output_gradient_mean_square_matches_the_closed_forms(loss, q, c, scale):
    got = output_grad_ms(loss, c, q, scale if loss == "mse" else None)
    want = OUTPUT_GRAD_MS[loss](q, c, scale if loss == "mse" else None)
    # exact for the uniform softmax, the first-order term to 1% at these q; mse's sample average within 2%
    assert got == pytest.approx(want, rel=1e-6 if q < 1e-6 else 0.01 if loss == "cross_entropy" else 0.02)
    if loss == "cross_entropy":  # large logits concentrate the softmax: more than the uniform value, at most twice
        assert 1.05 * want < output_grad_ms(loss, c, 9.0) < 2 * want


def _crossings(model, train=None, d_in=784, q0=0.1, c=10):
    cfg = from_dict({"model": model, "train": train or {}})
    return gradient_prediction(cfg, c, predict_config(cfg.model, d_in, q0))


def test_underflow_layer_is_the_top_of_the_run_from_layer_1():
    assert underflow_layer([1e-6, 1e-5, 1e-3, 1e-1], 1e-4) == 2
    assert underflow_layer([1e-3, 1e-5, 1e-6], 1e-4) is None  # below only higher up: not "from k down"
    assert underflow_layer([1e-9, 1e-9], 1e-4) == 2
    assert underflow_layer([], 1e-4) is None


@pytest.mark.parametrize("init", ["standard", "glorot_normal"])
def test_deep_sigmoid_net_loses_its_lower_layers_in_float16_only(init):
    """Glorot & Bengio 2010's sigmoid nets, 30 layers deep: χ = σ_w² E[σ'(z)²] ≤ σ_w²/16, so each layer
    down scales the gradient's rms by √χ, at most 1/7 (standard, σ_w² = 1/3) or 1/4 (Glorot). float16's smallest
    normal 6.1e-5 cuts it in the lower layers; float32's and bfloat16's 1.2e-38 are far below."""
    out = _crossings({**SIGMOID_30, "init": init}, {"batch_size": 128})
    k = out["format_crossing"]["float16"]
    assert k is not None and 1 < k < 30
    assert out["format_crossing"]["float32"] is None and out["format_crossing"]["bfloat16"] is None
    held = [r / 128 for r in out["grad_rms"]]  # loss scale 1 (the run is float32)
    tiny = FORMATS["float16"].smallest_normal
    assert max(held[:k]) < tiny <= held[k]  # layers 1..k under, k + 1 not
    assert all(b < a for a, b in zip(out["grad_rms"][1:], out["grad_rms"])), "gradients shrink going down"
    assert len(out["grad_rms"]) == 31 and out["formats"]["float32"]["run"] and out["loss_scale"] == 1.0


def test_he_relu_keeps_the_gradient_flat_and_above_float16():
    out = _crossings({"depth": 10, "width": 128, "activation": "relu", "init": "he_normal"})
    assert all(v is None for v in out["format_crossing"].values())
    hidden = out["grad_rms"][:10]
    np.testing.assert_allclose(hidden, hidden[0], rtol=1e-12)  # χ = 1 exactly: flat
    # through the output layer: E[φ'²] · C σ_w,out²/width = 0.5 · 10 · 2 / 128 of the logits' mean square
    assert hidden[-1] == pytest.approx(out["grad_rms"][-1] * math.sqrt(0.5 * 10 * 2 / 128), rel=1e-12)
    assert out["formats"]["float16"]["min_rms"] > FORMATS["float16"].smallest_normal


@pytest.mark.parametrize("scale", [2.0**10, 2.0**15])
def test_a_loss_scale_moves_the_float16_crossing_down(scale):
    """S multiplies every layer's held rms; the rms falls by √χ₁ per layer, so the crossing moves down
    by about log(S) / log(1/√χ₁) = 2 log2 S / log2(1/χ₁) layers (±1: whole layers, q^l not yet at q*)."""
    cfg = from_dict({"model": {**SIGMOID_30, "init": "glorot_normal"}})
    pred = predict_config(cfg.model, 784, 0.1)
    rms = gradient_prediction(cfg, 10, pred)["grad_rms"]
    before = format_crossings(rms, 128, 1.0, "float16")["format_crossing"]["float16"]
    after = format_crossings(rms, 128, scale, "float16")
    shift = 2 * math.log2(scale) / math.log2(1 / pred["chi1"])
    assert after["format_crossing"]["float16"] < before
    assert before - after["format_crossing"]["float16"] == pytest.approx(shift, abs=1.0)
    assert after["formats"]["float16"]["loss_scale"] == scale and after["formats"]["float32"]["loss_scale"] == 1.0
    assert after["format_crossing"]["float32"] is None  # the other formats are shown unscaled


def test_loss_scale_value_reads_the_config_with_defaults():
    from dataclasses import replace

    t = from_dict({}).train
    assert loss_scale_value(t) == 1.0  # a config without loss scaling
    assert loss_scale_value(replace(t, loss_scale="none")) == 1.0
    assert loss_scale_value(replace(t, loss_scale="dynamic")) == 32768.0
    assert loss_scale_value(replace(t, loss_scale="dynamic", loss_scale_init=256.0)) == 256.0
    assert loss_scale_value(replace(t, loss_scale=1024.0)) == 1024.0
    with pytest.raises(InitlabError, match="train.loss_scale"):
        loss_scale_value(replace(t, loss_scale="lots"))


def _direct_grad_rms(params, x, labels, activation, c):
    """Each example's ∂ℓ/∂z by hand in float64 numpy, for a plain MLP with cross-entropy: the rms
    per entry of every hidden layer, then the output layer."""
    phi = lambda v: np.asarray(ACTIVATIONS[activation](jnp.asarray(v)), np.float64)  # noqa: E731

    def dphi(v):
        return np.asarray(jax.vmap(jax.grad(ACTIVATIONS[activation]))(jnp.asarray(v).ravel()), np.float64).reshape(
            v.shape
        )

    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    ws = [f64(params.inp.dense.w), *f64(params.hidden.dense.w)]
    bs = [f64(params.inp.dense.b), *f64(params.hidden.dense.b)]
    h, zs = f64(x), []
    for w, b in zip(ws, bs):
        zs.append(h @ w + b)
        h = phi(zs[-1])
    logits = h @ f64(params.out.w) + f64(params.out.b)
    p = np.exp(logits - logits.max(1, keepdims=True))
    g = p / p.sum(1, keepdims=True) - np.eye(c)[labels]  # (batch, classes): ∂ℓ_i/∂logits
    rms = [np.sqrt(np.mean(g**2))]
    w_next = f64(params.out.w)
    for z, w in zip(reversed(zs), reversed(ws)):
        g = dphi(z) * (g @ w_next.T)  # (batch, width)
        rms.append(np.sqrt(np.mean(g**2)))
        w_next = w
    return list(reversed(rms[1:])) + rms[:1]  # layers 1..depth, then the logits


@pytest.mark.parametrize(
    "activation, init, args",
    [
        ("sigmoid", "glorot_normal", {}),
        ("relu", "he_normal", {}),
        ("tanh", "mean_field", {"sigma_w": 2.0, "sigma_b": 0.3}),  # large logits: a far-from-uniform softmax
    ],
)
@pytest.mark.slow
def test_predicted_gradient_rms_matches_a_direct_backward_pass(activation, init, args):
    """Width 512, Gaussian inputs of second moment 1, 3 seeds: each layer's per-example ∂ℓ/∂z rms,
    the logits' included, by hand within 5% of the prediction (measured: within 1.5%). The tanh
    case's logits have second moment ≈ 2.3, where the uniform softmax's (C−1)/C² puts the rms 10% low."""
    depth, width, d_in, batch, c = 4, 512, 128, 256, 10
    cfg = from_dict(
        {"model": {"depth": depth, "width": width, "activation": activation, "init": init, "init_args": args}}
    )
    spec = model_spec(cfg.model, d_in, c)
    measured = []
    for seed in range(3):
        params, _ = init_params(spec, cfg.model, jax.random.PRNGKey(seed))
        x = np.asarray(jax.random.normal(jax.random.PRNGKey(100 + seed), (batch, d_in)))
        measured.append(_direct_grad_rms(params, x, np.arange(batch) % c, activation, c))
    got = np.sqrt(np.mean(np.square(measured), axis=0))
    pred = gradient_prediction(cfg, c, predict_config(cfg.model, d_in, 1.0))["grad_rms"]
    np.testing.assert_allclose(got, pred, rtol=0.05)


def test_cli_theory_says_where_float16_loses_the_gradient(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data: {dataset: gaussian, input_dim: 32, train_size: 256, test_size: 32, probe_size: 64}\n"
        "model: {depth: 30, width: 64, activation: sigmoid, init: standard}\n"
    )
    out = runner.invoke(app, ["theory", str(cfg)])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())  # rich may wrap long lines
    assert "float32 (the run's format): no layer below its smallest normal 1.2e-38" in text
    assert (
        "float16: gradients (rms per entry, batch 128, loss scale 1) below the smallest normal 6.1e-05 from layer"
        in text
    )
    he = runner.invoke(
        app,
        [
            "theory",
            str(cfg),
            "--set",
            "model.activation=relu",
            "--set",
            "model.init=he_normal",
            "--set",
            "model.depth=10",
        ],
    )
    assert he.exit_code == 0 and "float16: no layer below its smallest normal 6.1e-05" in " ".join(he.output.split())


def test_cli_theory_uses_the_run_s_format_and_loss_scale(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data: {dataset: gaussian, input_dim: 32, train_size: 256, test_size: 32, probe_size: 64}\n"
        "model: {depth: 30, width: 64, activation: sigmoid, init: standard, dtype: float16}\n"
        "train: {batch_size: 64, loss_scale: 1024}\n"
    )
    out = runner.invoke(app, ["theory", str(cfg)])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "float16 (the run's format): gradients (rms per entry, batch 64, loss scale 1024) below" in text
    assert "float32: no layer below" in text


def _selu_slope_cross(q: float, c: float) -> float:
    """E[selu'(u₁) selu'(u₂)] for u ~ N(0, q) of correlation c, independently of initlab: the
    expectation over u₂ given u₁ in closed form (λ P(u₂ > 0) + λα E[e^u₂; u₂ < 0]), then scipy's
    adaptive quad over u₁ split at SELU's kink."""
    from scipy.integrate import quad
    from scipy.special import ndtr

    lam, alpha = 1.0507009873554805, 1.6732632423543772
    s2 = q * (1 - c * c)
    s = math.sqrt(s2)

    def integrand(z):
        m = math.sqrt(q) * c * z
        inner = lam * ndtr(m / s) + lam * alpha * math.exp(m + s2 / 2) * ndtr(-(m + s2) / s)
        outer = lam if z > 0 else lam * alpha * math.exp(math.sqrt(q) * z)
        return outer * inner * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    return sum(quad(integrand, a, b, epsabs=1e-15, epsrel=1e-13, limit=200)[0] for a, b in ((-12, 0), (0, 12)))


def test_selu_chaotic_depth_scale_matches_the_exact_bivariate_formula():
    """Issue 35: SELU's ξ_c in the chaotic phase (σ_w² = 1.5, σ_b² = 0) was 12.040 with the 2-D rule
    split only at 0 across the kink of φ'(u₂); the exact value is 12.052."""
    m = MeanField("selu", 1.5, 0.0)
    c, q = m.c_fixed_point(), m.q_star
    assert m.phase == "chaotic" and 0 < c < 1
    exact = -1 / math.log(1.5 * _selu_slope_cross(q, c))
    assert m.xi_c == pytest.approx(exact, rel=1e-8)
    assert m.xi_c == pytest.approx(12.0522, abs=1e-4)


@pytest.mark.slow
def test_near_critical_is_said_in_words_with_a_finite_depth_scale():
    """Issue 35: χ₁ within 1e-3 of 1 was printed "critical" with ξ_c = ∞. SELU with σ_w² = 0.5,
    σ_b² = 0 is chaotic by 3e-4: its c* is 0.99994 and ξ_c, by the exact formula, 6622."""
    m = MeanField("selu", 0.5, 0.0)
    assert 0 < m.chi1 - 1 < 1e-3 and m.phase == "near-critical chaotic"
    c = m.c_fixed_point()
    assert 0.999 < c < 1
    assert m.xi_c == pytest.approx(-1 / math.log(0.5 * _selu_slope_cross(m.q_star, c)), rel=1e-6)
    ordered = MeanField("selu", 0.5, 1e-6)
    assert ordered.phase == "near-critical ordered"
    assert ordered.xi_c == pytest.approx(-1 / math.log(ordered.chi1), rel=1e-9) and 1000 < ordered.xi_c < 1e4
    he = MeanField("relu", 2.0, 0.0)  # χ₁ = 1 exactly
    assert he.phase == "critical" and math.isinf(he.xi_c)
    row = phase_table("selu", 0.0, [0.5])["rows"][0]
    assert row["phase"] == "near-critical chaotic" and math.isfinite(row["xi_c"])


@pytest.mark.parametrize("q, c", [(0.1, 0.0), (1.0, 0.3), (3.0, -0.7), (2.0, 0.999)])
def test_erf_closed_forms_are_the_arcsine_kernel_and_agree_with_the_quadrature(q, c):
    """Williams 1997: E[erf(u₁)erf(u₂)] = (2/π) arcsin(2qc/(1 + 2q)) for u ~ N(0, q) of correlation c."""
    closed = MeanField("erf", 1.5, 0.05)
    assert closed.closed is not None
    assert closed._cross(q, c, 0) == pytest.approx(2 / math.pi * math.asin(2 * q * c / (1 + 2 * q)), abs=1e-15)
    quadrature = MeanField("erf", 1.5, 0.05, shape=Shape("identity"))  # a shape: numeric integrals
    assert quadrature.closed is None
    for fn in ("second_moment", "slope_moment", "mean"):
        assert getattr(closed, fn)(q) == pytest.approx(getattr(quadrature, fn)(q), abs=1e-12)
    for order in (0, 1):
        assert closed._cross(q, c, order) == pytest.approx(quadrature._cross(q, c, order), abs=1e-12)
    assert closed.xi_q == pytest.approx(quadrature.xi_q, rel=1e-9)
    assert closed.xi_c == pytest.approx(quadrature.xi_c, rel=1e-9)


def test_erf_network_correlation_follows_the_arcsine_map():
    """Pairs of inputs of correlation 0.5 through a wide erf net at init (σ_w² = 2): the mean
    correlation of their pre-activations after each layer is the arcsine C map iterated from 0.5
    (width 1024, 32 pairs: within 0.01)."""
    depth, width, pairs, c0 = 6, 1024, 32, 0.5
    m = MeanField("erf", 2.0, 0.0)
    keys = jax.random.split(jax.random.PRNGKey(0), depth + 2)
    a, b = jax.random.normal(keys[0], (2, pairs, width))
    x = jnp.concatenate([a, c0 * a + math.sqrt(1 - c0 * c0) * b])  # (2 · pairs, width), q ≈ 1
    c, q = c0, 2.0  # the first layer's z keep the inputs' correlation, at q = σ_w²
    z = x @ (jax.random.normal(keys[1], (width, width)) * math.sqrt(2.0 / width))
    for k in keys[2:]:
        z = ACTIVATIONS["erf"](z) @ (jax.random.normal(k, (width, width)) * math.sqrt(2.0 / width))
        c, q = m.c_map(c, q) * q / m.q_map(q), m.q_map(q)  # c_map divides by its own q
        u, v = z[:pairs], z[pairs:]
        measured = float(jnp.mean(jnp.sum(u * v, 1) / jnp.sqrt(jnp.sum(u * u, 1) * jnp.sum(v * v, 1))))
        assert measured == pytest.approx(c, abs=0.01)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--activation", "tanh", "--sigma-w2", "0"], "σ_w² must be > 0"),
        (["--activation", "tanh", "--plot", "x.txt"], "--plot x.txt: a figure is written as .png, .pdf, .svg"),
    ],
)
def test_theory_bad_input_is_one_line(args, message):
    result = runner.invoke(app, ["theory", *args])
    assert result.exit_code == 1 and message in result.output and "internal error" not in result.output


def test_relu_chi1_is_finite_where_its_variance_explodes_and_depth_scales_are_caveated():
    from initlab.theory.mean_field import MeanField

    exploding = MeanField("relu", 3.0, 0.1)
    assert math.isinf(exploding.q_star) and exploding.chi1 == pytest.approx(1.5) and exploding.phase == "unbounded"
    dying = MeanField("relu", 1.0, 0.0)  # Glorot on a square ReLU net: trains at depth 10, "6ξ_c = 8.7"
    assert dying.q_star == 0 and "not a trainability bound" in dying.depth_scale_caveat
    assert MeanField("tanh", 1.5, 0.05).depth_scale_caveat is None


@pytest.mark.slow
def test_mean_field_predicts_the_mean_squared_singular_value():
    """tr(JJᵀ)/width is the product of the layers' χ (Pennington et al. 2017): within sampling error
    for wide tanh nets, ordered (σ_w² = 0.5: it shrinks), critical and chaotic (σ_w² = 2: grows)."""
    d, width, depth = 64, 256, 6
    x = jax.random.normal(jax.random.PRNGKey(9), (4, d))
    for sigma_w in (0.5**0.5, 1.0, 2**0.5):
        cfg = tiny(
            model={
                "depth": depth,
                "width": width,
                "activation": "tanh",
                "init": "mean_field",
                "init_args": {"sigma_w": sigma_w, "sigma_b": 0.0},
            }
        )
        spec = model_spec(cfg.model, d, 3)
        measured = []
        for seed in range(3):
            params, state = init_params(spec, cfg.model, jax.random.PRNGKey(seed))
            measured.append(summarize(np.asarray(singular_values_fn(spec)(params, state, x)), width, d)["mean_sq"])
        predicted = predict_config(cfg.model, d, float(jnp.mean(x**2)))["jacobian_mean_sq"]
        assert np.mean(measured) == pytest.approx(predicted, rel=0.15), sigma_w


def test_theory_prints_the_predicted_mean_squared_singular_value(tmp_path):
    import yaml

    cfg = small_run("th")
    (tmp_path / "th.yaml").write_text(yaml.safe_dump(cfg))
    out = runner.invoke(app, ["theory", str(tmp_path / "th.yaml")]).output
    assert "mean squared singular value tr(JJᵀ)/width" in out
