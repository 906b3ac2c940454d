"""Distributions, not just moments: per-layer histograms (fixed linear and log2 bins, histograms.csv)
and the singular values of the input-output Jacobian (jacobian.csv, summary.json, theory)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from initlab.cli import app
from initlab.config import ConfigError, config_hash, from_dict
from initlab.data.datasets import load_dataset
from initlab.nn.optimizers import LOSSES
from initlab.runfolder.storage import RunRecorder
from initlab.stats.spectrum import singular_values_fn, summarize
from initlab.stats.statistics import Layout, LinearBins, Log2Bins, counts, make_bins
from initlab.train.theory_inputs import predict_config
from initlab.train.build import init_params, model_spec
from initlab.train.loop import train, train_group
from initlab.train.step import make_layer_stats

from conftest import SMALL_DATA, small_run, tiny

CE = LOSSES["cross_entropy"]
runner = CliRunner()


def hist_stats(depth, width, input_dim=8, batch=64, bins=16, seed=0, **model):
    cfg = tiny(model={"depth": depth, "width": width, **model})
    spec = model_spec(cfg.model, input_dim, 3)
    params, state = init_params(spec, cfg.model, jax.random.PRNGKey(seed))
    x = jax.random.normal(jax.random.PRNGKey(seed + 1), (batch, input_dim))
    y = jnp.arange(batch) % 3
    layout = Layout(cfg.log.stats, bins)
    stats = make_layer_stats(spec, CE, layout)(params, state, params, x, y)
    return {k: np.asarray(v) for k, v in stats.items()}, layout, (spec, params, x)


# -- bins -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bins", [LinearBins(-1.0, 1.0, 8), Log2Bins()], ids=["linear", "log2"])
def test_counts_sum_to_the_number_of_values_whatever_they_are(bins):
    x = jnp.concatenate([jax.random.normal(jax.random.PRNGKey(0), (997,)) * 10.0 ** jnp.arange(-4, 5)[:, None].repeat(
        111, 1).ravel()[:997], jnp.asarray([0.0, -0.0, jnp.inf, -jnp.inf, jnp.nan, 1e-45, -3e38])])
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


@pytest.mark.parametrize("lo, hi, n", [(-5.0, 5.0, 16), (-5.0, 5.0, 64), (-1.7581, 5.0, 64), (0.0, 1.0, 10),
                                       (-2.6929, 3.1, 33)])
def test_linear_bins_agree_with_numpy_histogram_on_every_edge(lo, hi, n):
    """Issue 35: a value one float32 step below a negative edge, or −1e-8, landed in the bin above.
    Every edge, the float32 values either side of it, tiny values of both signs (subnormals too) and
    the extremes: each in the bin numpy.histogram puts the same float32 value in."""
    e = np.linspace(lo, hi, n + 1).astype(np.float32)
    values = np.concatenate([e, np.nextafter(e, np.float32(-np.inf)), np.nextafter(e, np.float32(np.inf)),
                             np.float32([-1e-8, 1e-8, -1e-30, -1e-40, 1e-40, -1e-45, 1e-45, 0.0, -0.0, np.inf,
                                         -np.inf, 3e38, -3e38, np.nan])]).astype(np.float32)
    got = np.asarray(LinearBins(lo, hi, n).index(jnp.asarray(values)))
    want = [_numpy_bin(v, lo, hi, n) for v in values]
    np.testing.assert_array_equal(got, want)
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (200_000,))) * 2  # and in bulk
    c = np.asarray(counts(LinearBins(lo, hi, n), jnp.asarray(z)))
    np.testing.assert_array_equal(c[1:n + 1], np.histogram(z, bins=n, range=(lo, hi))[0])


def test_log2_bins_are_exact_binary_exponents_subnormals_included():
    b = Log2Bins()
    values = np.array([1.0, 1.9999999, 2.0, 0.75, -1.0, -1.5, 2.0 ** -149, 2.0 ** -127, 2.0 ** -126,
                       float(np.finfo(np.float32).max), 0.0], np.float32)
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
    x = jnp.asarray([2.0 ** -15, 2.0 ** -14, 2.0 ** -20, 1.0, -(2.0 ** -16)])
    c = np.asarray(counts(b, x))
    below = (np.abs(np.where(np.isfinite(hi), hi, np.inf)) <= 2.0 ** -14) & (np.abs(lo) < 2.0 ** -14)
    assert c[below].sum() == 3


def test_activation_bins_cover_the_activations_image():
    assert (make_bins("act", "tanh", 10).lo, make_bins("act", "tanh", 10).hi) == (-1.0, 1.0)
    assert (make_bins("act", "sigmoid", 10).lo, make_bins("act", "sigmoid", 10).hi) == (0.0, 1.0)
    assert (make_bins("act", "relu", 10).lo, make_bins("act", "relu", 10).hi) == (0.0, 5.0)
    assert (make_bins("act", "linear", 10).lo, make_bins("act", "linear", 10).hi) == (-5.0, 5.0)
    assert (make_bins("pre", "tanh", 10).lo, make_bins("pre", "tanh", 10).hi) == (-5.0, 5.0)


# -- histograms of a network ----------------------------------------------------------------------

def test_network_histograms_count_every_value_of_every_layer():
    stats, layout, (spec, params, x) = hist_stats(3, 16, bins=16)
    batch, width, d = x.shape[0], 16, x.shape[1]
    assert layout.histograms == ("hist_pre", "hist_act", "hist_grad", "hist_weight")
    per_layer = [batch * width] * 3 + [batch * 3]
    np.testing.assert_array_equal(stats["hist_pre"].sum(axis=1), per_layer)
    np.testing.assert_array_equal(stats["hist_grad"].sum(axis=1), per_layer)
    np.testing.assert_array_equal(stats["hist_act"][:3].sum(axis=1), per_layer[:3])
    assert np.isnan(stats["hist_act"][3]).all()  # the output layer has no nonlinearity
    np.testing.assert_array_equal(stats["hist_weight"].sum(axis=1),
                                  [d * width, width * width, width * width, width * 3])
    # exact on the first layer: the counts of z = x W + b in numpy
    z = np.asarray(x @ params.inp.dense.w + params.inp.dense.b)
    expected = np.histogram(z, bins=16, range=(-5, 5))[0]
    np.testing.assert_array_equal(stats["hist_pre"][0][1:17], expected)


def test_a_tanh_net_with_huge_weights_piles_its_activations_in_the_outermost_bins():
    big, _, _ = hist_stats(4, 64, bins=32, activation="tanh", init="normal", init_args={"std": 3.0})
    xavier, _, _ = hist_stats(4, 64, bins=32, activation="tanh", init="glorot_normal")
    edge = lambda h: (h[:, 1] + h[:, 32]) / h.sum(axis=1)  # noqa: E731 - the bins at -1 and at +1
    assert (edge(big["hist_act"][1:4]) > 0.9).all()
    assert (edge(xavier["hist_act"][:4]) < 0.1).all()


def run_with(tmp_path, **log):
    cfg = small_run("h")
    cfg["log"].update(out=str(tmp_path), **log)
    path = tmp_path / "h.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    return next(tmp_path.glob("h-*"))


def test_histograms_csv_round_trips_through_pandas(tmp_path):
    run = run_with(tmp_path, histograms=8)
    df = pd.read_csv(run / "histograms.csv")
    assert list(df.columns) == ["step", "layer", "kind", "quantity", "lo", "hi", "count"]
    assert sorted(df.step.unique()) == [0, 10, 20]
    assert set(df.quantity) == {"pre", "act", "grad", "weight"} and (df["count"] > 0).all()
    sums = df.groupby(["step", "layer", "quantity"])["count"].sum()
    probe, width, d, classes = SMALL_DATA["probe_size"], 16, SMALL_DATA["input_dim"], SMALL_DATA["num_classes"]
    assert (sums.xs("pre", level="quantity").xs(1, level="layer") == probe * width).all()
    assert (sums.xs("grad", level="quantity").xs(3, level="layer") == probe * classes).all()
    assert (sums.xs("weight", level="quantity").xs(1, level="layer") == d * width).all()
    assert set(df[df.quantity == "act"].layer) == {1, 2}  # hidden layers only
    assert set(df.kind[df.layer == 3]) == {"output"}
    lin = df[df.quantity == "pre"]
    inside = lin[np.isfinite(lin.lo) & np.isfinite(lin.hi)]
    assert ((inside.hi - inside.lo).round(9) == 1.25).all()  # 8 bins over [-5, 5]


def test_histograms_are_off_by_default_and_keep_old_hashes(tmp_path):
    run = run_with(tmp_path)
    assert not (run / "histograms.csv").exists()
    base = from_dict(small_run("h"))
    on = from_dict({**small_run("h"), "log": {"every": 10, "histograms": 64}})
    assert config_hash(base) != config_hash(on)
    assert config_hash(base) == config_hash(from_dict({**small_run("h"), "log": {"every": 10, "histograms": 0,
                                                                                   "jacobian": 4}}))


def test_a_vmapped_groups_histograms_equal_each_runs_solo_histograms():
    cfgs = [tiny(seed=s, log={"every": 10, "histograms": 16, "stats_on": "train_batch"}) for s in (0, 1)]
    data = load_dataset(cfgs[0].data)
    group = [RunRecorder() for _ in cfgs]
    train_group(cfgs, data, group)
    for cfg, rec in zip(cfgs, group):
        solo = RunRecorder()
        train(cfg, data, solo)
        (step_g, hg), (step_s, hs) = rec.histograms[0], solo.histograms[0]
        assert step_g == step_s == 0
        for name in hs:
            np.testing.assert_array_equal(np.nan_to_num(hg[name], nan=-1), np.nan_to_num(hs[name], nan=-1))
    assert not np.array_equal(group[0].histograms[0][1]["hist_weight"], group[1].histograms[0][1]["hist_weight"])


def test_bad_histogram_and_jacobian_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="log.histograms"):
        from_dict({**small_run("h"), "log": {"histograms": -1}})
    with pytest.raises(ConfigError, match="log.jacobian: 100 examples, but the probe batch has data.probe_size: 64"):
        from_dict({**small_run("h"), "log": {"jacobian": 100}})


# -- the Jacobian ---------------------------------------------------------------------------------

def linear_net(depth, width, input_dim, init="normal", init_args=None, seed=0):
    cfg = tiny(model={"depth": depth, "width": width, "activation": "linear", "init": init,
                      "init_args": init_args or {"std": 0.3}, "bias_init": "zeros"})
    spec = model_spec(cfg.model, input_dim, 3)
    params, state = init_params(spec, cfg.model, jax.random.PRNGKey(seed))
    return spec, params, state


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


def test_mean_field_predicts_the_mean_squared_singular_value():
    """tr(JJᵀ)/width is the product of the layers' χ (Pennington et al. 2017): within sampling error
    for wide tanh nets, ordered (σ_w² = 0.5: it shrinks), critical and chaotic (σ_w² = 2: grows)."""
    d, width, depth = 64, 256, 6
    x = jax.random.normal(jax.random.PRNGKey(9), (4, d))
    for sigma_w in (0.5 ** 0.5, 1.0, 2 ** 0.5):
        cfg = tiny(model={"depth": depth, "width": width, "activation": "tanh", "init": "mean_field",
                          "init_args": {"sigma_w": sigma_w, "sigma_b": 0.0}})
        spec = model_spec(cfg.model, d, 3)
        measured = []
        for seed in range(3):
            params, state = init_params(spec, cfg.model, jax.random.PRNGKey(seed))
            measured.append(summarize(np.asarray(singular_values_fn(spec)(params, state, x)), width, d)["mean_sq"])
        predicted = predict_config(cfg.model, d, float(jnp.mean(x ** 2)))["jacobian_mean_sq"]
        assert np.mean(measured) == pytest.approx(predicted, rel=0.15), sigma_w


def test_a_run_stores_its_spectrum_at_init_and_end(tmp_path):
    run = run_with(tmp_path, jacobian=3)
    df = pd.read_csv(run / "jacobian.csv")
    assert list(df.columns) == ["step", "example", "index", "singular_value"]
    assert sorted(df.step.unique()) == [0, 20] and sorted(df.example.unique()) == [0, 1, 2]
    assert len(df) == 2 * 3 * 8  # min(width 16, input 8) values per example
    for _, g in df.groupby(["step", "example"]):
        assert (np.diff(g.sort_values("index").singular_value.to_numpy()) <= 0).all()  # largest first
    summary = json.loads((run / "summary.json").read_text())
    jac = summary["jacobian"]
    assert jac["applies"] and jac["examples"] == 3 and jac["end"]["step"] == 20
    init = df[df.step == 0].singular_value
    assert jac["init"]["max"] == pytest.approx(init.max())
    floor = init.max() * 16 * np.finfo(np.float32).eps  # max(width 16, input 8) · ε
    assert jac["init"]["floor"] == pytest.approx(floor)
    assert jac["init"]["min"] == pytest.approx(init[init > floor].min())
    assert jac["init"]["unresolved"] == pytest.approx(np.mean(init <= floor))
    assert jac["init"]["mean_sq"] == pytest.approx((init ** 2).sum() / 3 / 16)
    assert summary["theory"]["jacobian_mean_sq"] > 0


def test_batch_norm_runs_say_why_they_have_no_spectrum(tmp_path):
    cfg = tiny(model={"norm": "batchnorm"}, log={"every": 10, "out": str(tmp_path)})
    res = train(cfg, load_dataset(cfg.data), RunRecorder())
    assert res.spectra == {}
    from initlab.runfolder.experiment import jacobian_summary

    out = jacobian_summary(cfg, res)
    assert out["applies"] is False and "batch statistics" in out["reason"]


# -- reports and theory -----------------------------------------------------------------------------

def test_the_layer_report_shows_the_saturated_bins_beside_saturated_frac(tmp_path):
    cfg = small_run("sat")
    cfg["model"].update(activation="tanh", init="normal", init_args={"std": 2.0})
    cfg["log"].update(out=str(tmp_path), histograms=8)
    import yaml

    (tmp_path / "sat.yaml").write_text(yaml.safe_dump(cfg))
    assert runner.invoke(app, ["run", str(tmp_path / "sat.yaml")]).exit_code == 0
    run = next(tmp_path.glob("sat-*"))
    from initlab.report.tables import layer_report

    view = layer_report(run)
    cols = view["columns"]
    assert cols[cols.index("saturated_frac") + 1] == "hist_saturated"
    h = pd.read_csv(run / "histograms.csv")
    act = h[(h.step == 0) & (h.quantity == "act")]
    for row in view["init"][:2]:  # tanh's outer bins: [-1, -0.75) and [0.75, 1]
        layer = act[act.layer == row["layer"]]
        edge = layer[(layer.lo == -1.0) | (layer.hi == 1.0)]["count"].sum() / layer["count"].sum()
        assert row["hist_saturated"] == pytest.approx(edge) and edge > 0.5
    assert np.isnan(view["init"][-1]["hist_saturated"])  # the output layer has no activation histogram
    assert "input-output Jacobian" in view["jacobian"] and "mean-field mean σ² at init" in view["jacobian"]
    out = runner.invoke(app, ["report", "--layers", str(run), "--format", "markdown"]).output
    assert "hist_saturated" in out and "input-output Jacobian ∂h^L/∂x on 4 probe examples" in out


def test_the_report_has_the_jacobians_ratio_at_init_and_its_mean_square_beside_theory(tmp_path):
    run = run_with(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    csv_out = runner.invoke(app, ["report", str(tmp_path), "--format", "csv", "--columns",
                                  "jac_ratio_init,jac_msq_init,jac_msq_theory"]).output
    row = pd.read_csv(__import__("io").StringIO(csv_out)).iloc[0]
    assert row.jac_ratio_init == pytest.approx(summary["jacobian"]["init"]["ratio"])
    assert row.jac_msq_init == pytest.approx(summary["jacobian"]["init"]["mean_sq"])
    assert row.jac_msq_theory == pytest.approx(summary["theory"]["jacobian_mean_sq"])
    table = runner.invoke(app, ["report", str(tmp_path), "--format", "markdown"]).output
    assert "jac max/min init" in table


def test_theory_prints_the_predicted_mean_squared_singular_value(tmp_path):
    import yaml

    cfg = small_run("th")
    (tmp_path / "th.yaml").write_text(yaml.safe_dump(cfg))
    out = runner.invoke(app, ["theory", str(tmp_path / "th.yaml")]).output
    assert "mean squared singular value tr(JJᵀ)/width" in out


def test_input_scale_multiplies_the_inputs():
    base = load_dataset(from_dict(small_run("s")).data)
    scaled = load_dataset(from_dict({**small_run("s"), "data": {**SMALL_DATA, "input_scale": 0.25}}).data)
    np.testing.assert_array_equal(scaled.x_train, base.x_train * np.float32(0.25))
    assert config_hash(from_dict(small_run("s"))) == config_hash(
        from_dict({**small_run("s"), "data": {**SMALL_DATA, "input_scale": 1.0}}))
