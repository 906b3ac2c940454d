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

from initlab.stats.statistics import LinearBins, Log2Bins, counts, make_bins

from conftest import tiny
from conftest import make_layer_stats

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


@pytest.mark.slow
def test_zeros_init_makes_every_layer_dead_and_its_symmetry_undefined():
    """All-zero weights under tanh: every activation is 0, so the share of a variance of 0 that
    units have in common is 0/0: undefined (NaN, an empty cell), never a made-up 1."""
    stats, _ = layer_stats(4, 32, init="zeros", activation="tanh")
    np.testing.assert_array_equal(stats["act_var"][:4], 0.0)
    assert np.isnan(stats["symmetry"]).all()
    random, _ = layer_stats(4, 32, init="glorot_normal", activation="tanh")
    assert (random["symmetry"][:4] < 0.2).all()


@pytest.mark.slow
def test_constant_init_units_are_identical():
    stats, _ = layer_stats(3, 16, init="constant", init_args={"value": 0.05}, activation="tanh")
    np.testing.assert_allclose(stats["symmetry"][:3], 1.0, atol=1e-5)


@pytest.mark.slow
def test_exact_values_on_a_one_layer_network():
    stats, (spec, params, state, x, y) = layer_stats(
        1, 6, input_dim=4, batch=8, activation="tanh", init="glorot_uniform", bias_init="uniform"
    )
    w1, b1, w2, b2 = (
        np.asarray(v, np.float64) for v in (params.inp.dense.w, params.inp.dense.b, params.out.w, params.out.b)
    )
    xs, ys = np.asarray(x, np.float64), np.asarray(y)
    z = xs @ w1 + b1
    a = np.tanh(z)
    logits = a @ w2 + b2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d_logits = p - np.eye(10)[ys]  # ∂ℓ_i/∂logits_i for each example
    d_z = (d_logits @ w2.T) * (1 - a**2)
    for key, value in {
        "pre_mean": z.mean(),
        "pre_var": z.var(),
        "act_mean": a.mean(),
        "act_var": a.var(),
        "grad_var": d_z.var(),
        "w_var": w1.var(),
        "w_norm": np.linalg.norm(w1),
        "wgrad_norm": np.linalg.norm(xs.T @ d_z / len(xs)),
    }.items():
        assert stats[key][0] == pytest.approx(value, rel=2e-4), key
    assert stats["grad_var"][1] == pytest.approx(d_logits.var(), rel=2e-4)
    assert stats["pre_var"][1] == pytest.approx(logits.var(), rel=2e-4)
    assert np.isnan(stats["saturated_frac"][1]) and np.isnan(stats["dead_frac"][1])


@pytest.mark.slow
def test_dead_relu_units_are_detected():
    _, (spec, params, state, x, y) = layer_stats(2, 16, activation="relu")
    dense = params.inp.dense._replace(b=params.inp.dense.b.at[:8].set(-1e3))  # half the first layer can never fire
    params = params._replace(inp=params.inp._replace(dense=dense))
    stats = make_layer_stats(spec, CE)(params, state, params, x, y)
    assert float(stats["dead_frac"][0]) == pytest.approx(0.5)
    assert float(stats["saturated_frac"][0]) > 0.5


@pytest.mark.slow
def test_large_weights_saturate_sigmoid_units():
    big, _ = layer_stats(3, 64, activation="sigmoid", init="normal", init_args={"std": 3.0})
    small, _ = layer_stats(3, 64, activation="sigmoid", init="glorot_normal")
    assert (big["saturated_frac"][1:3] > 0.5).all()
    assert (small["saturated_frac"][:3] < 0.05).all()


@pytest.mark.slow
def test_update_ratio_against_previous_weights():
    _, (spec, params, state, x, y) = layer_stats(3, 16)
    fn = make_layer_stats(spec, CE)
    np.testing.assert_allclose(np.asarray(fn(params, state, params, x, y)["update_ratio"]), 0.0)
    half = jax.tree.map(lambda p: p / 2, params)
    np.testing.assert_allclose(np.asarray(fn(params, state, half, x, y)["update_ratio"]), 1.0, rtol=1e-5)


@pytest.mark.slow
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


@pytest.mark.slow
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
    np.testing.assert_allclose(
        [stats["unit_p15"][0], stats["unit_p50"][0], stats["unit_p85"][0]],
        np.percentile(z1, [15, 50, 85]),
        rtol=1e-5,
        atol=1e-6,
    )
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


@pytest.mark.slow
def test_grad_var_keeps_its_precision_when_the_mean_dominates():
    """Tiny weights and a bias of 1000 under mse: every output gradient is about 2·1000/C with a
    spread of ~1e-3 of that. A one-pass E[g²] − E[g]² in float32 lost ~70% of the output layer's
    grad_var; the two-pass variance matches a float64 reference."""
    stats, (spec, params, state, x, y) = layer_stats(
        2,
        16,
        input_dim=8,
        batch=64,
        init="normal",
        init_args={"std": 1e-6},
        bias_init="constant",
        bias_init_args={"value": 1000.0},
    )
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


@pytest.mark.slow
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
        z2, _ = batchnorm_apply(
            hidden.norm, jax.tree.map(lambda v: v[0], state.hidden), h @ hidden.dense.w + hidden.dense.b, True, settings
        )
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
        "act_absmax": S.Statistic(
            "largest |a| of the layer", "forward", lambda f: jnp.max(jnp.abs(f.a)), default=False
        ),
        "act_quartiles": S.Statistic(
            "quartiles of a",
            "forward",
            lambda f: jnp.percentile(f.a, jnp.asarray([25.0, 50.0, 75.0])),
            size=3,
            default=False,
        ),
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
    np.testing.assert_allclose(
        np.asarray(sel["act_quartiles"][0]), np.percentile(a1, [25, 50, 75]), rtol=1e-4, atol=1e-6
    )


# -- histograms: bins --------------------------------------------------------------------------------


def hist_stats(depth, width, input_dim=8, batch=64, bins=16, seed=0, **model):
    cfg = tiny(model={"depth": depth, "width": width, **model})
    spec = model_spec(cfg.model, input_dim, 3)
    params, state = init_params(spec, cfg.model, jax.random.PRNGKey(seed))
    x = jax.random.normal(jax.random.PRNGKey(seed + 1), (batch, input_dim))
    y = jnp.arange(batch) % 3
    layout = Layout(cfg.log.stats, bins)
    stats = make_layer_stats(spec, CE, layout)(params, state, params, x, y)
    return {k: np.asarray(v) for k, v in stats.items()}, layout, (spec, params, x)


@pytest.mark.parametrize("bins", [LinearBins(-1.0, 1.0, 8), Log2Bins()], ids=["linear", "log2"])
def test_counts_sum_to_the_number_of_values_whatever_they_are(bins):
    x = jnp.concatenate(
        [
            jax.random.normal(jax.random.PRNGKey(0), (997,))
            * 10.0 ** jnp.arange(-4, 5)[:, None].repeat(111, 1).ravel()[:997],
            jnp.asarray([0.0, -0.0, jnp.inf, -jnp.inf, jnp.nan, 1e-45, -3e38]),
        ]
    )
    c = np.asarray(counts(bins, x))
    assert c.shape == (bins.size,) and c.sum() == x.size and (c >= 0).all()


@pytest.mark.parametrize("value", [0.0, 0.3, -2.5, 7e-42, 1e30])
@pytest.mark.parametrize("bins", [LinearBins(-5.0, 5.0, 64), Log2Bins()], ids=["linear", "log2"])
def test_a_constant_tensor_lands_in_one_bin(bins, value):
    c = np.asarray(counts(bins, jnp.full((50, 7), value, jnp.float32)))
    assert np.count_nonzero(c) == 1 and c.max() == 350
    lo, hi = bins.edges()
    j = int(np.argmax(c))
    v = float(np.float32(value))
    assert (lo[j] <= v <= hi[j]) if np.isfinite(hi[j]) else lo[j] <= v


def test_linear_bins_count_underflow_overflow_and_nan_apart():
    b = LinearBins(-1.0, 1.0, 4)  # counts: [under, 4 bins, over, nan]
    c = np.asarray(counts(b, jnp.asarray([-3.0, -jnp.inf, -1.0, -0.5, 0.0, 0.99, 1.0, 1.01, jnp.inf, jnp.nan])))
    np.testing.assert_array_equal(c, [2, 1, 1, 1, 2, 2, 1])
    lo, hi = b.edges()
    np.testing.assert_array_equal(lo[:6], [-np.inf, -1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(hi[:6], [-1.0, -0.5, 0.0, 0.5, 1.0, np.inf])
    assert np.isnan(lo[6]) and np.isnan(hi[6])


def _numpy_bin(v: np.float32, lo: float, hi: float, n: int) -> int:
    """The count index numpy.histogram gives one float32 value (0 underflow, n + 1 overflow)."""
    c = np.histogram(np.array([v], np.float32), bins=n, range=(lo, hi))[0]
    if c.sum():
        return int(np.argmax(c)) + 1
    return n + 2 if np.isnan(v) else 0 if v < np.float32(lo) else n + 1


@pytest.mark.parametrize(
    "lo, hi, n", [(-5.0, 5.0, 16), (-5.0, 5.0, 64), (-1.7581, 5.0, 64), (0.0, 1.0, 10), (-2.6929, 3.1, 33)]
)
@pytest.mark.slow
def test_linear_bins_agree_with_numpy_histogram_on_every_edge(lo, hi, n):
    """Issue 35: a value one float32 step below a negative edge, or −1e-8, landed in the bin above.
    Every edge, the float32 values either side of it, tiny values of both signs (subnormals too) and
    the extremes: each in the bin numpy.histogram puts the same float32 value in."""
    e = np.linspace(lo, hi, n + 1).astype(np.float32)
    values = np.concatenate(
        [
            e,
            np.nextafter(e, np.float32(-np.inf)),
            np.nextafter(e, np.float32(np.inf)),
            np.float32(
                [-1e-8, 1e-8, -1e-30, -1e-40, 1e-40, -1e-45, 1e-45, 0.0, -0.0, np.inf, -np.inf, 3e38, -3e38, np.nan]
            ),
        ]
    ).astype(np.float32)
    got = np.asarray(LinearBins(lo, hi, n).index(jnp.asarray(values)))
    want = [_numpy_bin(v, lo, hi, n) for v in values]
    np.testing.assert_array_equal(got, want)
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (200_000,))) * 2  # and in bulk
    c = np.asarray(counts(LinearBins(lo, hi, n), jnp.asarray(z)))
    np.testing.assert_array_equal(c[1 : n + 1], np.histogram(z, bins=n, range=(lo, hi))[0])


def test_log2_bins_are_exact_binary_exponents_subnormals_included():
    b = Log2Bins()
    values = np.array(
        [1.0, 1.9999999, 2.0, 0.75, -1.0, -1.5, 2.0**-149, 2.0**-127, 2.0**-126, float(np.finfo(np.float32).max), 0.0],
        np.float32,
    )
    idx = np.asarray(b.index(jnp.asarray(values)))
    lo, hi = b.edges()
    for v, j in zip(values.astype(np.float64), idx):
        if v > 0:
            assert lo[j] <= v < hi[j] and hi[j] == 2 * lo[j], v
        elif v < 0:
            assert lo[j] < v <= hi[j] and lo[j] == 2 * hi[j], v
        else:
            assert lo[j] == hi[j] == 0.0
    assert len(set(idx[:3].tolist())) == 2  # 1 and 1.9999999 share [1, 2); 2 starts the next bin
    # float16's smallest normal number is 2^-14: the share of values below it is a sum of bins
    x = jnp.asarray([2.0**-15, 2.0**-14, 2.0**-20, 1.0, -(2.0**-16)])
    c = np.asarray(counts(b, x))
    below = (np.abs(np.where(np.isfinite(hi), hi, np.inf)) <= 2.0**-14) & (np.abs(lo) < 2.0**-14)
    assert c[below].sum() == 3


def test_activation_bins_cover_the_activations_image():
    assert (make_bins("act", "tanh", 10).lo, make_bins("act", "tanh", 10).hi) == (-1.0, 1.0)
    assert (make_bins("act", "sigmoid", 10).lo, make_bins("act", "sigmoid", 10).hi) == (0.0, 1.0)
    assert (make_bins("act", "relu", 10).lo, make_bins("act", "relu", 10).hi) == (0.0, 5.0)
    assert (make_bins("act", "linear", 10).lo, make_bins("act", "linear", 10).hi) == (-5.0, 5.0)
    assert (make_bins("pre", "tanh", 10).lo, make_bins("pre", "tanh", 10).hi) == (-5.0, 5.0)


# -- histograms of a network -------------------------------------------------------------------------


def test_network_histograms_count_every_value_of_every_layer():
    stats, layout, (spec, params, x) = hist_stats(3, 16, bins=16)
    batch, width, d = x.shape[0], 16, x.shape[1]
    assert layout.histograms == ("hist_pre", "hist_act", "hist_grad", "hist_weight")
    per_layer = [batch * width] * 3 + [batch * 3]
    np.testing.assert_array_equal(stats["hist_pre"].sum(axis=1), per_layer)
    np.testing.assert_array_equal(stats["hist_grad"].sum(axis=1), per_layer)
    np.testing.assert_array_equal(stats["hist_act"][:3].sum(axis=1), per_layer[:3])
    assert np.isnan(stats["hist_act"][3]).all()  # the output layer has no nonlinearity
    np.testing.assert_array_equal(
        stats["hist_weight"].sum(axis=1), [d * width, width * width, width * width, width * 3]
    )
    # exact on the first layer: the counts of z = x W + b in numpy
    z = np.asarray(x @ params.inp.dense.w + params.inp.dense.b)
    expected = np.histogram(z, bins=16, range=(-5, 5))[0]
    np.testing.assert_array_equal(stats["hist_pre"][0][1:17], expected)


@pytest.mark.slow
def test_a_tanh_net_with_huge_weights_piles_its_activations_in_the_outermost_bins():
    big, _, _ = hist_stats(4, 64, bins=32, activation="tanh", init="normal", init_args={"std": 3.0})
    xavier, _, _ = hist_stats(4, 64, bins=32, activation="tanh", init="glorot_normal")
    edge = lambda h: (h[:, 1] + h[:, 32]) / h.sum(axis=1)  # noqa: E731 - the bins at -1 and at +1
    assert (edge(big["hist_act"][1:4]) > 0.9).all()
    assert (edge(xavier["hist_act"][:4]) < 0.1).all()
