"""Width as an axis: the standard, NTK and μP parameterizations (initlab.nn.parameterizations), the
coordinate-check statistics and the per-layer learning rates, checked against the README's table."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from initlab import config as C
from initlab.data.datasets import load_dataset
from initlab.errors import ConfigError
from initlab.nn.model import apply
from initlab.nn.parameterizations import PARAMETERIZATIONS, ParamClass, change_exponent, param_classes
from initlab.runfolder.storage import RunRecorder
from initlab.train.build import init_params, model_spec
from initlab.train.loop import batch_key, make_train_fns, train
from initlab.train.schedule import make_schedule

D, CLASSES = 24, 10


def cfg_of(model: dict, train_: dict | None = None, log: dict | None = None, data: dict | None = None):
    return C.from_dict(
        {
            "data": {
                "dataset": "gaussian",
                "input_dim": D,
                "num_classes": CLASSES,
                "train_size": 256,
                "test_size": 64,
                "probe_size": 64,
                **(data or {}),
            },
            "model": {"depth": 3, "width": 64, **model},
            "train": {"steps": 3, "batch_size": 64, **(train_ or {})},
            "log": {"every": 1, "jacobian": 0, **(log or {})},
        }
    )


def network(cfg, seed=0):
    spec = model_spec(cfg.model, D, CLASSES)
    params, state = init_params(spec, cfg.model, jax.random.PRNGKey(seed))
    return spec, params, state


def leaves_equal(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


# ----------------------------------------------------------------------------------------------
# μP equals the standard network at its base width; NTK equals it for the same variance


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mup_at_base_width_is_the_standard_network_and_update(optimizer):
    opt = {"optimizer": optimizer, "lr": 0.01, "steps": 1}
    sp = cfg_of({"init": "he_normal"}, opt)
    mup = cfg_of({"init": "he_normal", "parameterization": "mup", "base_width": 64}, opt)
    (spec_a, pa, _), (spec_b, pb, _) = network(sp), network(mup)
    assert spec_a == spec_b and leaves_equal(pa, pb)
    data = load_dataset(sp.data)
    after = []
    for cfg in (sp, mup):
        rec = RunRecorder()
        train(cfg, data, rec)
        after.append(pd.DataFrame([r for r in rec.layer_rows if r["step"] == 1]))
    pd.testing.assert_frame_equal(after[0], after[1], check_exact=True)  # every statistic after the update, bit for bit


@pytest.mark.parametrize(
    "init,args",
    [
        ("he_normal", {}),
        ("he_uniform", {}),
        ("lecun_normal", {}),
        ("standard", {}),
        ("mean_field", {"sigma_w": 1.5, "sigma_b": 0.1}),
    ],
)
@pytest.mark.slow
def test_ntk_forward_equals_standard_for_the_same_variance(init, args):
    x = jax.random.normal(jax.random.PRNGKey(3), (16, D))
    outs = []
    for p in ("standard", "ntk"):
        cfg = cfg_of({"init": init, "init_args": args, "parameterization": p})
        spec, params, state = network(cfg)
        outs.append(np.asarray(apply(spec, params, state, x, train=False)[0]))
        if p == "ntk":  # the stored weights have unit variance
            assert np.var(np.asarray(params.hidden.dense.w)) == pytest.approx(1.0, rel=0.05)
    np.testing.assert_allclose(outs[1], outs[0], rtol=2e-5, atol=2e-6)


def test_mup_output_layer_is_rescaled_and_zero_readout_zeroes_it():
    base = {"init": "he_normal", "parameterization": "mup", "base_width": 64}
    _, sp, _ = network(cfg_of({"init": "he_normal", "width": 256}))
    spec, mp, _ = network(cfg_of({**base, "width": 256}))
    assert spec.multipliers == (1.0, 1.0, 0.25)
    np.testing.assert_allclose(np.asarray(mp.out.w), 2.0 * np.asarray(sp.out.w), rtol=1e-6)  # √m = 2
    assert leaves_equal(mp.hidden, sp.hidden) and leaves_equal(mp.inp, sp.inp)
    _, zp, _ = network(cfg_of({**base, "width": 256, "zero_readout": True}))
    assert not np.any(np.asarray(zp.out.w))


# ----------------------------------------------------------------------------------------------
# The README's table: init variance, multiplier and learning rate of every parameter class


ROW = re.compile(r"^\| (standard|ntk|mup) \| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", re.M)
CLASS_OF = {
    "input weights": ParamClass.INPUT,
    "hidden weights": ParamClass.HIDDEN,
    "output weights": ParamClass.OUTPUT,
    "width-sized vectors": ParamClass.VECTOR,
    "output bias": ParamClass.FIXED,
}


def readme_table() -> dict[tuple[str, ParamClass], tuple[str, str, str, str]]:
    text = (ROOT / "README.md").read_text()
    rows = {}
    for p, what, var, mult, sgd, adam in ROW.findall(text):
        cls = next(c for prefix, c in CLASS_OF.items() if what.startswith(prefix))
        rows[(p, cls)] = (var.strip(), mult.strip(), sgd.strip(), adam.strip())
    return rows


def test_readme_table_has_every_parameterization_and_class():
    assert set(readme_table()) == {(p, c) for p in PARAMETERIZATIONS for c in ParamClass}


def lr_value(text: str, m: float) -> float:
    return {"η": 1.0, "η·m": m, "η/m": 1.0 / m}[text]


def applied_rates(cfg) -> dict[ParamClass, float]:
    """Each class's learning rate divided by η, read off one step of the run's own optimizer on a
    gradient that is 1 in one entry of every leaf (Adam's first step is then lr·g/(|g| + eps))."""
    spec, params, _ = network(cfg)
    fns = make_train_fns(cfg, spec, make_schedule(cfg, 256), 256)
    opt = fns.optimizer(jnp.float32(cfg.train.lr))
    one_hot = jax.tree.map(
        lambda v: jnp.zeros_like(v).reshape(-1).at[0].set(1.0).reshape(v.shape) if v.size else v, params
    )
    updates, _ = opt.update(one_hot, opt.init(params), params)
    rates = {}
    for cls, u in zip(jax.tree.leaves(param_classes(params)), jax.tree.leaves(updates), strict=True):
        if u.size:
            rates.setdefault(cls, []).append(-float(np.asarray(u).reshape(-1)[0]) / cfg.train.lr)
    return {c: v[0] for c, v in rates.items() if np.allclose(v, v[0])} | {
        c: math.nan for c, v in rates.items() if not np.allclose(v, v[0])
    }


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,column", [("sgd", 2), ("momentum", 2), ("adam", 3), ("rmsprop", 3)])
@pytest.mark.parametrize("param", ["standard", "ntk", "mup"])
def test_per_layer_learning_rates_are_the_readme_tables(optimizer, column, param):
    m = 4.0
    extra = {"base_width": 16} if param == "mup" else {}
    cfg = cfg_of(
        {"init": "lecun_normal", "parameterization": param, "norm": "layernorm", **extra},
        {"optimizer": optimizer, "lr": 0.01, **({"momentum": 0.0} if optimizer in ("momentum", "rmsprop") else {})},
    )
    table = readme_table()
    rates = applied_rates(cfg)
    assert set(rates) == set(ParamClass)  # FIXED: the output bias (no residual scalars in a plain MLP)
    factor = 1.0 if optimizer != "rmsprop" else 1.0 / math.sqrt(1 - 0.9)  # RMSprop's first step: g/√((1-β)g²)
    for cls, rate in rates.items():
        want = lr_value(table[(param, cls)][column], m if param == "mup" else 1.0) * factor
        assert rate == pytest.approx(want, rel=1e-5), (cls, table[(param, cls)])


def test_residual_scalars_and_the_output_bias_keep_the_base_rate():
    cfg = cfg_of(
        {"init": "lecun_normal", "parameterization": "mup", "base_width": 16, "residual": True},
        {"optimizer": "sgd", "lr": 0.01},
    )
    assert applied_rates(cfg)[ParamClass.FIXED] == pytest.approx(1.0)


def test_mup_weight_decay_is_divided_by_the_rate_factor():
    # SGD with coupled decay: the update of a weight w with zero gradient is lr·f · (wd/f) · w
    cfg = cfg_of(
        {"init": "lecun_normal", "parameterization": "mup", "base_width": 16},
        {"optimizer": "sgd", "lr": 0.01, "weight_decay": 0.1},
    )
    spec, params, _ = network(cfg)
    fns = make_train_fns(cfg, spec, make_schedule(cfg, 256), 256)
    opt = fns.optimizer(jnp.float32(0.01))
    updates, _ = opt.update(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
    np.testing.assert_allclose(np.asarray(updates.inp.dense.w), -0.01 * 0.1 * np.asarray(params.inp.dense.w), rtol=1e-5)


@pytest.mark.parametrize("param", ["standard", "ntk", "mup"])
def test_readme_init_variances_and_multipliers(param):
    n, m = 256, 4.0
    extra = {"base_width": 64} if param == "mup" else {}
    cfg = cfg_of({"init": "he_normal", "parameterization": param, "width": n, **extra})
    spec, params, _ = network(cfg)
    table = readme_table()
    s2 = 2.0
    values = {
        "σ_w²/d": s2 / D,
        "σ_w²/n": s2 / n,
        "1": 1.0,
        "σ_w/√d": math.sqrt(s2 / D),
        "σ_w/√n": math.sqrt(s2 / n),
        "1/m": 1 / m,
        "σ_w²·m/n": s2 * m / n,
    }
    weights = {
        ParamClass.INPUT: params.inp.dense.w,
        ParamClass.HIDDEN: params.hidden.dense.w,
        ParamClass.OUTPUT: params.out.w,
    }
    for i, (cls, w) in enumerate(weights.items()):
        var, mult = table[(param, cls)][:2]
        assert np.var(np.asarray(w)) == pytest.approx(values[var.split(" (")[0]], rel=0.1), (cls, var)
        assert spec.multipliers[i] == pytest.approx(values[mult]), (cls, mult)


# ----------------------------------------------------------------------------------------------
# The coordinate check


def coord_check(param: str, optimizer: str, lr: float, widths=(128, 2048), steps=3) -> dict[int, np.ndarray]:
    """Each width's pre_delta_abs_mean per layer after ``steps`` updates (Gaussian data, fixed seed)."""
    out = {}
    for w in widths:
        cfg = cfg_of(
            {
                "init": "he_normal",
                "width": w,
                "parameterization": param,
                **({"base_width": 128} if param == "mup" else {}),
            },
            {"optimizer": optimizer, "lr": lr, "steps": steps},
            {"stats": ["act_abs_mean", "pre_delta_abs_mean"]},
            {"input_dim": 32},
        )
        rec = RunRecorder()
        train(cfg, load_dataset(cfg.data), rec)
        out[w] = np.array([r["pre_delta_abs_mean"] for r in rec.layer_rows if r["step"] == steps])
        assert all(r["pre_delta_abs_mean"] == 0.0 for r in rec.layer_rows if r["step"] == 0)
    return out


@pytest.mark.slow
def test_coordinate_check_mup_with_adam_is_flat_and_standard_grows():
    mup = coord_check("mup", "adam", 0.01)
    ratio = mup[2048] / mup[128]
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio  # every layer, the output included
    sp = coord_check("standard", "adam", 0.01)
    assert sp[2048][-1] / sp[128][-1] > 4.0  # the output layer's change grows with width


@pytest.mark.slow
def test_first_update_slopes_match_the_theorys_exponents():
    # one update at a small learning rate: the fitted slope of log Δz against log width is the
    # theory's exponent (input layer, a hidden layer, output layer) within 0.2 (μP with SGD: 0.25)
    for param, optimizer, lr, tol in [
        ("standard", "sgd", 0.05, 0.2),
        ("standard", "adam", 0.001, 0.2),
        ("ntk", "sgd", 0.05, 0.2),
        ("ntk", "adam", 0.001, 0.2),
        ("mup", "adam", 0.001, 0.2),
        ("mup", "sgd", 0.05, 0.25),
    ]:
        widths = (128, 512, 2048)
        got = coord_check(param, optimizer, lr, widths, steps=1)
        logs = np.log(np.array([got[w] for w in widths]))
        slopes = np.polyfit(np.log(widths), logs, 1)[0]
        p = PARAMETERIZATIONS[param]
        want = [change_exponent(p, r, optimizer == "adam") for r in ("input", "hidden", "output")]
        np.testing.assert_allclose([slopes[0], slopes[2], slopes[-1]], want, atol=tol, err_msg=f"{param} {optimizer}")


def test_pre_delta_needs_the_probe():
    with pytest.raises(ConfigError, match="pre_delta_abs_mean .*log.stats_on: probe"):
        cfg_of({}, log={"stats": ["pre_delta_abs_mean"], "stats_on": "train_batch"})


# ----------------------------------------------------------------------------------------------
# Bad combinations, grouping


@pytest.mark.parametrize(
    "model,train_,message",
    [
        (
            {"parameterization": "ntk", "init": "orthogonal"},
            {},
            "'orthogonal' does not apply under parameterization 'ntk'",
        ),
        ({"parameterization": "mup", "base_width": 64, "init": "glorot_normal"}, {}, "fan-in initializer"),
        ({"parameterization": "mup", "init": "he_normal"}, {}, "model.base_width: parameterization 'mup' needs"),
        ({"parameterization": "mup", "base_width": 64, "init": "he_normal"}, {"max_norm": 3.0}, "train.max_norm"),
        ({"base_width": 64}, {}, "model.base_width: 64 has no effect with model.parameterization: 'standard'"),
        ({"parameterization": "ntk", "init": "he_normal", "zero_readout": True}, {}, "model.zero_readout"),
        ({"parameterization": "mu_p"}, {}, "not one of standard, ntk, mup"),
        ({"parameterization": "ntk", "init": "lsuv"}, {}, "does not apply"),
    ],
)
def test_bad_combinations_are_one_line_errors(model, train_, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        cfg_of(model, train_)
    assert "\n" not in str(e.value)


def test_runs_differing_in_lr_share_a_group_under_every_parameterization():
    for model in ({}, {"parameterization": "mup", "base_width": 32}, {"parameterization": "ntk"}):
        a, b = cfg_of(model, {"lr": 0.1}), cfg_of(model, {"lr": 0.01})
        assert batch_key(a) == batch_key(b)
    # under ntk the initializer's σ_w is a multiplier of the program
    assert batch_key(cfg_of({"parameterization": "ntk", "init": "he_normal"})) != batch_key(
        cfg_of({"parameterization": "ntk", "init": "lecun_normal"})
    )
    assert batch_key(cfg_of({"init": "he_normal"})) == batch_key(cfg_of({"init": "lecun_normal"}))


def test_readme_exponent_table_is_the_registrys():
    text = (ROOT / "README.md").read_text()
    rows = re.findall(
        r"^\| (standard|ntk|mup) \| (SGD|Adam)-like \| ([-0-9.]+) \| ([-0-9.]+) \| ([-0-9.]+) \|$", text, re.M
    )
    assert len(rows) == 2 * len(PARAMETERIZATIONS)
    for param, opt, *values in rows:
        p = PARAMETERIZATIONS[param]
        want = [change_exponent(p, r, opt == "Adam") for r in ("input", "hidden", "output")]
        assert [float(v) for v in values] == want, (param, opt)


def test_theory_sees_the_effective_output_variance():
    from initlab.train.theory_inputs import output_sigma_w2

    base = {"init": "he_normal", "width": 256}
    assert output_sigma_w2(cfg_of(base).model, CLASSES) == pytest.approx(2.0)
    assert output_sigma_w2(cfg_of({**base, "parameterization": "ntk"}).model, CLASSES) == pytest.approx(2.0)
    mup = {**base, "parameterization": "mup", "base_width": 64}
    assert output_sigma_w2(cfg_of(mup).model, CLASSES) == pytest.approx(2.0 / 4)  # σ_w²/m
    assert output_sigma_w2(cfg_of({**mup, "zero_readout": True}).model, CLASSES) == 0.0
    # and it is what the network holds: fan_in · Var(multiplier · stored weights)
    spec, params, _ = network(cfg_of(mup))
    assert 256 * np.var(spec.multipliers[2] * np.asarray(params.out.w)) == pytest.approx(0.5, rel=0.1)
