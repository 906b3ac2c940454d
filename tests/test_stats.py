"""Per-layer statistics: the signal-propagation facts of the literature, and exact tiny cases."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from initlab.nn.activations import ACTIVATIONS
from initlab.nn.optimizers import LOSSES
from initlab.stats.statistics import Layout, default_names, first_nonfinite_layer
from initlab.train.build import init_params, model_spec
from initlab.train.step import make_layer_stats

from conftest import tiny

CE = LOSSES["cross_entropy"]


def layer_stats(depth, width, input_dim=None, batch=256, seed=0, **model):
    input_dim = input_dim or width
    cfg = tiny(model={"depth": depth, "width": width, **model})
    spec = model_spec(cfg.model, input_dim, 10)
    params, state = init_params(spec, cfg.model, jax.random.PRNGKey(seed))
    x = jax.random.normal(jax.random.PRNGKey(seed + 1), (batch, input_dim))
    y = jnp.arange(batch) % 10
    stats = make_layer_stats(spec, CE)(params, state, params, x, y)
    return {k: np.asarray(v) for k, v in stats.items()}, (spec, params, state, x, y)


def per_layer_ratio(values):
    """Geometric-mean ratio between consecutive layers (slope of log values over depth)."""
    return float(np.exp(np.polyfit(np.arange(len(values)), np.log(values), 1)[0]))


def test_he_keeps_relu_preactivation_variance_flat_over_50_layers():
    stats, _ = layer_stats(50, 512, init="he_normal", activation="relu")
    hidden = stats["pre_var"][:50]
    assert per_layer_ratio(hidden[1:]) == pytest.approx(1.0, abs=0.03)
    assert 0.5 < hidden[-1] / hidden[1] < 2.0


def test_xavier_halves_relu_preactivation_variance_per_layer():
    # Square layers: Glorot's Var(W) = 2/(n+n) = 1/n, so sigma_w² = 1 and q^l = q^{l-1} / 2.
    stats, _ = layer_stats(20, 512, init="glorot_normal", activation="relu")
    assert per_layer_ratio(stats["pre_var"][1:20]) == pytest.approx(0.5, abs=0.03)
    # ...and the back-propagated gradient shrinks toward the input the same way.
    assert per_layer_ratio(stats["grad_var"][1:20]) == pytest.approx(2.0, rel=0.06)


def test_zeros_init_makes_every_layer_dead_and_its_symmetry_undefined():
    """All-zero weights under tanh: every activation is 0, so the share of a variance of 0 that
    units have in common is 0/0: undefined (NaN, an empty cell), never a made-up 1."""
    stats, _ = layer_stats(4, 32, init="zeros", activation="tanh")
    np.testing.assert_array_equal(stats["act_var"][:4], 0.0)
    assert np.isnan(stats["symmetry"]).all()
    random, _ = layer_stats(4, 32, init="glorot_normal", activation="tanh")
    assert (random["symmetry"][:4] < 0.2).all()


def test_constant_init_units_are_identical():
    stats, _ = layer_stats(3, 16, init="constant", init_args={"value": 0.05}, activation="tanh")
    np.testing.assert_allclose(stats["symmetry"][:3], 1.0, atol=1e-5)


def test_exact_values_on_a_one_layer_network():
    stats, (spec, params, state, x, y) = layer_stats(1, 6, input_dim=4, batch=8, activation="tanh",
                                                     init="glorot_uniform", bias_init="uniform")
    w1, b1, w2, b2 = (np.asarray(v, np.float64) for v in (params.inp.dense.w, params.inp.dense.b, params.out.w,
                                                          params.out.b))
    xs, ys = np.asarray(x, np.float64), np.asarray(y)
    z = xs @ w1 + b1
    a = np.tanh(z)
    logits = a @ w2 + b2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d_logits = p - np.eye(10)[ys]  # ∂ℓ_i/∂logits_i for each example
    d_z = (d_logits @ w2.T) * (1 - a**2)
    for key, value in {"pre_mean": z.mean(), "pre_var": z.var(), "act_mean": a.mean(), "act_var": a.var(),
                       "grad_var": d_z.var(), "w_var": w1.var(), "w_norm": np.linalg.norm(w1),
                       "wgrad_norm": np.linalg.norm(xs.T @ d_z / len(xs))}.items():
        assert stats[key][0] == pytest.approx(value, rel=2e-4), key
    assert stats["grad_var"][1] == pytest.approx(d_logits.var(), rel=2e-4)
    assert stats["pre_var"][1] == pytest.approx(logits.var(), rel=2e-4)
    assert np.isnan(stats["saturated_frac"][1]) and np.isnan(stats["dead_frac"][1])


def test_dead_relu_units_are_detected():
    _, (spec, params, state, x, y) = layer_stats(2, 16, activation="relu")
    dense = params.inp.dense._replace(b=params.inp.dense.b.at[:8].set(-1e3))  # half the first layer can never fire
    params = params._replace(inp=params.inp._replace(dense=dense))
    stats = make_layer_stats(spec, CE)(params, state, params, x, y)
    assert float(stats["dead_frac"][0]) == pytest.approx(0.5)
    assert float(stats["saturated_frac"][0]) > 0.5


def test_large_weights_saturate_sigmoid_units():
    big, _ = layer_stats(3, 64, activation="sigmoid", init="normal", init_args={"std": 3.0})
    small, _ = layer_stats(3, 64, activation="sigmoid", init="glorot_normal")
    assert (big["saturated_frac"][1:3] > 0.5).all()
    assert (small["saturated_frac"][:3] < 0.05).all()


def test_update_ratio_against_previous_weights():
    _, (spec, params, state, x, y) = layer_stats(3, 16)
    fn = make_layer_stats(spec, CE)
    np.testing.assert_allclose(np.asarray(fn(params, state, params, x, y)["update_ratio"]), 0.0)
    half = jax.tree.map(lambda p: p / 2, params)
    np.testing.assert_allclose(np.asarray(fn(params, state, half, x, y)["update_ratio"]), 1.0, rtol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS.all_names())
def test_every_activation_gives_finite_statistics_in_range(activation):
    stats, _ = layer_stats(3, 16, batch=32, activation=activation, init="lecun_normal")
    assert set(stats) == set(default_names())
    for key in ("pre_var", "act_var", "grad_var", "w_norm", "wgrad_norm", "symmetry"):
        assert np.isfinite(stats[key]).all(), key
    assert ((stats["saturated_frac"][:3] >= 0) & (stats["saturated_frac"][:3] <= 1)).all()
    assert ((stats["symmetry"] >= 0) & (stats["symmetry"] <= 1 + 1e-6)).all()


def test_first_nonfinite_layer_forward_then_backward():
    finite = {"pre_var": np.ones(4), "act_var": np.ones(4), "grad_var": np.ones(4)}
    assert first_nonfinite_layer(finite) is None
    forward = {**finite, "act_var": np.array([1.0, 1.0, np.inf, np.nan])}
    assert first_nonfinite_layer(forward) == (3, "forward")
    backward = {**finite, "grad_var": np.array([np.nan, np.inf, 1.0, 1.0])}
    assert first_nonfinite_layer(backward) == (2, "backward")


def test_statistics_agree_with_optax_loss_gradient():
    """The weight gradient reported is that of the mean probe loss, as the optimizer sees it."""
    stats, (spec, params, state, x, y) = layer_stats(2, 8, input_dim=5, batch=16)
    from initlab.nn.model import apply

    def mean_loss(p):
        logits, _, _ = apply(spec, p, state, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    g = jax.grad(mean_loss)(params)
    assert stats["wgrad_norm"][-1] == pytest.approx(float(jnp.linalg.norm(g.out.w)), rel=1e-4)


def test_unit_percentiles_are_those_of_the_first_units_input():
    """Ioffe & Szegedy 2015, Fig. 1: 15th/50th/85th percentiles of one unit's input over the batch."""
    stats, (spec, params, state, x, y) = layer_stats(2, 16, input_dim=8, batch=512, activation="sigmoid")
    z1 = np.asarray(x @ params.inp.dense.w + params.inp.dense.b)[:, 0]  # layer 1, unit 0
    np.testing.assert_allclose([stats["unit_p15"][0], stats["unit_p50"][0], stats["unit_p85"][0]],
                               np.percentile(z1, [15, 50, 85]), rtol=1e-5, atol=1e-6)
    assert np.all(stats["unit_p15"] <= stats["unit_p50"]) and np.all(stats["unit_p50"] <= stats["unit_p85"])


def test_the_device_check_of_the_signal_agrees_with_the_host_one():
    """The training chunk stops a run on ``Layout.signal_finite``; the host names the layer with
    ``first_nonfinite_layer``: both look at exactly the signal statistics."""
    from initlab.stats.statistics import signal_names

    layout = Layout.default()
    base = np.random.default_rng(0).standard_normal((layout.rows, 5)).astype(np.float32)
    assert bool(layout.signal_finite(jnp.asarray(base))) and first_nonfinite_layer(layout.split(base)) is None
    assert set(signal_names()) == {"pre_var", "act_var", "grad_var"}
    for column in layout.names:
        for bad in (np.nan, np.inf, -np.inf):
            table = base.copy()
            table[layout.slices[column].start, 3] = bad
            host_ok = first_nonfinite_layer(layout.split(table)) is None
            assert bool(layout.signal_finite(jnp.asarray(table))) == host_ok == (column not in signal_names()), column


def test_grad_var_keeps_its_precision_when_the_mean_dominates():
    """Tiny weights and a bias of 1000 under mse: every output gradient is about 2·1000/C with a
    spread of ~1e-3 of that. A one-pass E[g²] − E[g]² in float32 lost ~70% of the output layer's
    grad_var; the two-pass variance matches a float64 reference."""
    stats, (spec, params, state, x, y) = layer_stats(
        2, 16, input_dim=8, batch=64, init="normal", init_args={"std": 1e-6}, bias_init="constant",
        bias_init_args={"value": 1000.0})
    mse = LOSSES["mse"]
    stats = make_layer_stats(spec, mse)(params, state, params, x, y)
    from initlab.nn.model import apply

    logits = np.asarray(apply(spec, params, state, x, train=True)[0], np.float64)
    targets = np.eye(10)[np.asarray(y)]
    want = np.var(jax.grad(lambda z: jnp.sum(mse(z, jnp.asarray(y), 10)))(jnp.asarray(logits, jnp.float32)))
    d_out = 2 * (logits - targets) / 10  # ∂ℓ_i/∂logits_i of the mean squared error over classes
    assert np.var(d_out) / np.mean(d_out) ** 2 < 1e-5  # |mean| ≫ std: where one pass fails
    assert stats["grad_var"][-1] == pytest.approx(np.var(d_out), rel=1e-3)
    assert float(want) == pytest.approx(np.var(d_out), rel=1e-2)


def test_batch_norm_grad_var_is_that_of_n_times_the_mean_losss_gradient():
    """With batch norm every example's loss depends on every example's z through the batch
    statistics above it. grad_var is the variance of n·∂L/∂z (L: the mean loss), the gradient
    back-propagation carries and the update sees, cross-example terms included; it is not the
    variance of ∂ℓ_i/∂z_i. Both computed here by hand for layer 1 of a 2-layer batch-norm net."""
    from initlab.nn.normalizations import NormSettings, batchnorm_apply

    stats, (spec, p, state, x, y) = layer_stats(2, 16, input_dim=8, batch=32, norm="batchnorm", activation="tanh")
    settings = NormSettings()

    def from_z1(z1):  # the network above layer 1's pre-activation z1 (after its batch norm)
        h = jnp.tanh(z1)
        hidden = jax.tree.map(lambda v: v[0], p.hidden)
        z2, _ = batchnorm_apply(hidden.norm, jax.tree.map(lambda v: v[0], state.hidden), h @ hidden.dense.w
                                + hidden.dense.b, True, settings)
        logits = jnp.tanh(z2) @ p.out.w + p.out.b
        return CE(logits, y, 10)  # (batch,) per-example losses

    z1, _ = batchnorm_apply(p.inp.norm, state.inp, x @ p.inp.dense.w + p.inp.dense.b, True, settings)
    n = x.shape[0]
    total = np.asarray(jax.grad(lambda z: jnp.mean(from_z1(z)))(z1)) * n  # n·∂L/∂z
    jac = np.asarray(jax.jacrev(from_z1)(z1))  # (batch, batch, width): ∂ℓ_i/∂z_j
    own = jac[np.arange(n), np.arange(n)]  # ∂ℓ_i/∂z_i
    assert stats["grad_var"][0] == pytest.approx(np.var(total), rel=1e-4)
    assert abs(np.var(own) / np.var(total) - 1) > 1e-3  # the two differ: the cross terms are real


def test_a_statistic_is_declared_once_and_selected_by_log_stats(monkeypatch):
    """The registry is the only place to touch: a trivial statistic added to it (the largest
    |a| of each layer, forward) is computed, split out of the table and selectable; a shaped one
    (k values per layer) takes k rows."""
    import initlab.stats.statistics as S
    from initlab.registry import Registry

    extra = {
        "act_absmax": S.Statistic("largest |a| of the layer", "forward", lambda f: jnp.max(jnp.abs(f.a)),
                                  default=False),
        "act_quartiles": S.Statistic("quartiles of a", "forward",
                                     lambda f: jnp.percentile(f.a, jnp.asarray([25.0, 50.0, 75.0])), size=3,
                                     default=False),
    }
    monkeypatch.setattr(S, "STATISTICS", Registry("statistic", {**S.STATISTICS, **extra}))
    layout = Layout(["w_norm", "act_absmax", "act_quartiles"])
    assert layout.names == ("pre_var", "act_var", "grad_var", "w_norm", "act_absmax", "act_quartiles")
    assert layout.rows == 8 and layout.scalars == layout.names[:5] and layout.shaped == ("act_quartiles",)
    stats, (spec, params, state, x, y) = layer_stats(2, 16, input_dim=8, batch=64, activation="tanh")
    sel = make_layer_stats(spec, CE, layout)(params, state, params, x, y)
    assert set(sel) == set(layout.names)
    np.testing.assert_allclose(np.asarray(sel["pre_var"]), stats["pre_var"], rtol=1e-6)
    a1 = np.tanh(np.asarray(x @ params.inp.dense.w + params.inp.dense.b))
    assert float(sel["act_absmax"][0]) == pytest.approx(np.abs(a1).max(), rel=1e-5)
    assert sel["act_quartiles"].shape == (3, 3)  # (layers, k)
    np.testing.assert_allclose(np.asarray(sel["act_quartiles"][0]), np.percentile(a1, [25, 50, 75]), rtol=1e-4,
                               atol=1e-6)
