"""Number formats as an experimental variable (model.dtype, model.precision, train.loss_scale): the
dtypes of parameters and activations, float64 against float32, the per-layer format statistics
(grad_underflow, wgrad_underflow, act_underflow, pre_overflow), loss scaling in training, sweeps
grouping by format, and the config's errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from initlab.config import ConfigError, config_hash, from_dict
from initlab.data.datasets import load_dataset
from initlab.nn.formats import FORMATS, context, overflow, underflow
from initlab.nn.model import apply, features
from initlab.runfolder.storage import RunRecorder, metric_columns
from initlab.stats.statistics import STATISTICS, Forward
from initlab.train.build import init_params, model_spec
from initlab.train.loop import batch_key, train

from conftest import tiny

FORMAT_NAMES = ("float32", "bfloat16", "float16", "float64")


# -- the format statistics on hand-made tensors ----------------------------------------------------


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_underflow_counts_zeros_and_subnormals_exactly_in_each_format(name):
    fmt = FORMATS[name]
    with context(name):
        tiny_n, sub = fmt.smallest_normal, fmt.smallest_subnormal
        # 2 zeros, 3 subnormals (smallest, mid, just below the smallest normal), 4 normals, 1 nan, 2 infs
        values = [0.0, -0.0, sub, -sub * 4, tiny_n * 0.5, tiny_n, -tiny_n * 2, 1.0, -3.0, np.nan, np.inf, -np.inf]
        x = jnp.asarray(np.array(values, dtype=np.float64)).astype(fmt.dtype)
        assert x.dtype == jnp.dtype(fmt.dtype)
        assert float(underflow(x)) == pytest.approx(5 / 12, abs=1e-7)
        assert float(overflow(x)) == pytest.approx(2 / 12, abs=1e-7)
        # the registry's entries give the same on each quantity
        f = Forward(x[None], x[None], jnp.zeros((1, 12), bool), jnp.zeros((3,)))
        assert float(STATISTICS["act_underflow"].fn(f)) == pytest.approx(5 / 12, abs=1e-7)
        assert float(STATISTICS["pre_overflow"].fn(f)) == pytest.approx(2 / 12, abs=1e-7)
        assert float(STATISTICS["grad_underflow"].fn(x[None])) == pytest.approx(5 / 12, abs=1e-7)
        rows = STATISTICS["wgrad_underflow"].fn(None, jnp.stack([x, jnp.ones_like(x)]))
        np.testing.assert_allclose(np.asarray(rows), [5 / 12, 0.0], atol=1e-7)


def test_a_value_normal_in_float32_is_subnormal_or_zero_in_float16():
    x = jnp.asarray([1e-3, 5e-5, 1e-6, 1e-9], jnp.float32)
    assert float(underflow(x)) == 0.0
    assert float(underflow(x.astype(jnp.float16))) == 0.75  # 5e-5, 1e-6 subnormal; 1e-9 flushes to 0
    assert float(underflow(x.astype(jnp.bfloat16))) == 0.0  # bfloat16 keeps float32's range


# -- dtypes of parameters, activations and training --------------------------------------------------


@pytest.mark.parametrize(
    "name,precision,param",
    [
        ("float32", "mixed", "float32"),
        ("bfloat16", "mixed", "float32"),
        ("float16", "mixed", "float32"),
        ("float64", "mixed", "float64"),
        ("bfloat16", "pure", "bfloat16"),
        ("float16", "pure", "float16"),
    ],
)
def test_parameters_and_activations_are_in_the_documented_dtypes(name, precision, param):
    cfg = tiny(model={"dtype": name, "precision": precision, "norm": "layernorm"}, train={"optimizer": "sgd"})
    with context(name):
        spec = model_spec(cfg.model, 16, 4)
        params, state = init_params(spec, cfg.model, jax.random.PRNGKey(0))
        assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(param)}
        assert {leaf.dtype for leaf in jax.tree.leaves(state)} <= {
            jnp.dtype("float64" if name == "float64" else "float32")
        }
        x = jnp.ones((5, 16), jnp.float32)
        h = jax.eval_shape(lambda: features(spec, params, state, x))
        logits = jax.eval_shape(lambda: apply(spec, params, state, x, train=True)[0])
    assert h.dtype == jnp.dtype(name)  # the pass computes in the format
    assert logits.dtype == jnp.dtype("float64" if name == "float64" else "float32")  # the loss is wide


def test_every_format_draws_the_same_initial_values():
    drawn = {}
    for name in FORMAT_NAMES:
        cfg = tiny(model={"dtype": name})
        with context(name):
            spec = model_spec(cfg.model, 16, 4)
            params, _ = init_params(spec, cfg.model, jax.random.PRNGKey(3))
            drawn[name] = np.asarray(params.hidden.dense.w, np.float64)
    for name in FORMAT_NAMES:
        np.testing.assert_array_equal(drawn[name], drawn["float32"])


@pytest.mark.slow
@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_each_format_trains_a_tiny_net(name):
    cfg = tiny(model={"dtype": name}, train={"steps": 30, "lr": 0.01})
    rec = RunRecorder()
    res = train(cfg, load_dataset(cfg.data), rec)
    assert res.status == "completed" and np.isfinite(res.final["test_loss"])
    losses = [r["train_loss"] for r in rec.metric_rows if np.isfinite(r["train_loss"])]
    assert losses[-1] < losses[0]  # it learns
    assert not jax.config.jax_enable_x64  # x64 was on for the float64 run only


@pytest.mark.slow
def test_float64_matches_float32_to_float32_precision():
    results = {}
    for name in ("float32", "float64"):
        cfg = tiny(
            model={"dtype": name, "depth": 2, "width": 16, "activation": "tanh", "init": "glorot_normal"},
            train={"optimizer": "sgd", "lr": 0.05, "steps": 20},
            log={"every": 5},
        )
        rec = RunRecorder()
        train(cfg, load_dataset(cfg.data), rec)
        results[name] = pd.DataFrame(rec.layer_rows)
    a, b = results["float32"], results["float64"]
    for col in ("pre_var", "act_var", "grad_var", "w_norm"):
        np.testing.assert_allclose(a[col], b[col], rtol=2e-5, err_msg=col)
    assert (b.loc[b.step == 0, "act_underflow"] == 0).all()


def sigmoid_profile(dtype, loss_scale="none", depth=10, **train_args):
    cfg = tiny(
        model={"dtype": dtype, "depth": depth, "width": 64, "activation": "sigmoid", "init": "standard"},
        train={"steps": 0, "loss_scale": loss_scale, "batch_size": 128, **train_args},
        data={"probe_size": 128},
    )
    rec = RunRecorder()
    train(cfg, load_dataset(cfg.data), rec)
    return pd.DataFrame(rec.layer_rows).set_index("layer")


@pytest.mark.slow
def test_a_deep_sigmoid_net_loses_its_lower_gradients_in_float16_and_loss_scaling_brings_them_back():
    f32, f16 = sigmoid_profile("float32"), sigmoid_profile("float16")
    assert f32.grad_underflow.max() == 0.0 and f32.wgrad_underflow.max() == 0.0
    assert f16.loc[1, "grad_underflow"] > 0.95  # the first layer's gradient is zero or subnormal
    assert f16.loc[1, "wgrad_underflow"] > 0.95
    assert f16.loc[11, "grad_underflow"] < 0.05  # the output layer's is not
    scaled = sigmoid_profile("float16", loss_scale=2.0**15)
    # S = 2^15 lifts the gradient by 15 binary orders, about 5 of this net's layers (theory's
    # 2·log2(S)/log2(1/χ)): layer 7 comes back whole, layer 1 stays lost
    assert f16.loc[7, "grad_underflow"] == 1.0 and scaled.loc[7, "grad_underflow"] == 0.0
    assert scaled.loc[1, "grad_underflow"] == 1.0
    assert (scaled.grad_underflow <= f16.grad_underflow).all()
    # grad_var is each example's own gradient, the scale divided out: where nothing underflows it matches float32's
    np.testing.assert_allclose(scaled.loc[8:, "grad_var"], f32.loc[8:, "grad_var"], rtol=0.05)
    assert f16.loc[1, "act_underflow"] == 0.0 and f16.pre_overflow.max() == 0.0


@pytest.mark.slow
def test_the_probe_pass_holds_what_the_training_batch_holds():
    """Statistics on a probe of 128 for a training batch of 32: the pass's ∂L/∂z entries are each
    example's gradient / 32 (times S), what the training step holds, so the format statistics are
    those of a batch-128 pass with a loss scale of 128/32 = 4; the other statistics are unchanged."""
    batch32 = sigmoid_profile("float16", batch_size=32)
    batch128, scaled4 = sigmoid_profile("float16"), sigmoid_profile("float16", loss_scale=4.0)
    for column in ("grad_underflow", "wgrad_underflow"):
        np.testing.assert_array_equal(batch32[column], scaled4[column])
    assert (batch32.grad_underflow <= batch128.grad_underflow).all()
    assert (batch32.grad_underflow < batch128.grad_underflow).any()
    np.testing.assert_allclose(batch32.loc[8:, "grad_var"], batch128.loc[8:, "grad_var"], rtol=0.05)


# -- loss scaling in training ------------------------------------------------------------------------


@pytest.mark.slow
def test_dynamic_loss_scaling_skips_overflowing_steps_and_logs_the_scale():
    cfg = tiny(
        model={"dtype": "float16"},
        train={"loss_scale": "dynamic", "loss_scale_init": 2.0**30, "loss_scale_period": 5, "steps": 40},
    )
    rec = RunRecorder()
    res = train(cfg, load_dataset(cfg.data), rec)
    assert res.status == "completed"  # skipped steps are not a divergence
    metrics = pd.DataFrame(rec.metric_rows)
    assert {"loss_scale", "skipped_steps"} <= set(metrics.columns)
    assert res.loss_scale["skipped_steps"] >= 1 and metrics.skipped_steps.sum() == res.loss_scale["skipped_steps"]
    assert metrics.loss_scale.iloc[0] == 2.0**30 and metrics.loss_scale.iloc[1] < 2.0**30
    assert res.loss_scale["final_scale"] == metrics.loss_scale.iloc[-1]
    assert metric_columns(cfg)[-2:] == ("loss_scale", "skipped_steps")


def test_a_skipped_step_leaves_the_parameters_untouched():
    # scale 2^40 overflows float16 at once: the first steps are all skipped and halve the scale
    base = {
        "model": {"dtype": "float16"},
        "train": {"loss_scale": "dynamic", "loss_scale_init": 2.0**40, "steps": 1},
        "log": {"every": 1},
    }
    rec0, rec1 = RunRecorder(), RunRecorder()
    cfg0 = tiny(**{**base, "train": {**base["train"], "steps": 0}})
    train(cfg0, load_dataset(cfg0.data), rec0)
    cfg1 = tiny(**base)
    res = train(cfg1, load_dataset(cfg1.data), rec1)
    assert res.loss_scale == {"skipped_steps": 1, "final_scale": 2.0**39}
    last = pd.DataFrame(rec1.layer_rows).query("step == 1").set_index("layer")
    first = pd.DataFrame(rec0.layer_rows).query("step == 0").set_index("layer")
    np.testing.assert_array_equal(last.w_norm, first.w_norm)
    assert (last.update_ratio == 0).all()


@pytest.mark.slow
def test_a_constant_scale_that_overflows_diverges():
    cfg = tiny(model={"dtype": "float16"}, train={"loss_scale": 2.0**40, "steps": 5})
    res = train(cfg, load_dataset(cfg.data), RunRecorder())
    assert res.status == "diverged"


# -- sweeps and configs -----------------------------------------------------------------------------


def test_runs_in_different_formats_train_in_different_groups():
    keys = {batch_key(tiny(model={"dtype": d})) for d in FORMAT_NAMES}
    assert len(keys) == 4
    assert batch_key(tiny(model={"dtype": "float16"}, seed=1)) == batch_key(tiny(model={"dtype": "float16"}))


def test_the_format_keys_at_their_defaults_keep_old_hashes():
    assert config_hash(tiny()) == config_hash(
        tiny(model={"dtype": "float32", "precision": "mixed"}, train={"loss_scale": "none"})
    )
    assert config_hash(tiny()) != config_hash(tiny(model={"dtype": "float16"}))


@pytest.mark.parametrize(
    "section,value,message",
    [
        (
            {"model": {"dtype": "float8"}},
            None,
            "model.dtype: 'float8' is not one of float32, bfloat16, float16, float64",
        ),
        (
            {"train": {"loss_scale": "dynamic"}},
            None,
            "train.loss_scale: 'dynamic' does nothing with model.dtype: 'float32'",
        ),
        (
            {"model": {"dtype": "float64"}, "train": {"loss_scale": 128}},
            None,
            "does nothing with model.dtype: 'float64'",
        ),
        ({"model": {"dtype": "float16"}, "train": {"loss_scale": "banana"}}, None, "train.loss_scale"),
        ({"model": {"dtype": "float16"}, "train": {"loss_scale": -2}}, None, "train.loss_scale"),
        (
            {"model": {"dtype": "float16"}, "train": {"loss_scale_period": 10}},
            None,
            "train.loss_scale_period: 10 has no effect with train.loss_scale: 'none'",
        ),
        ({"model": {"precision": "half"}}, None, "model.precision: 'half' is not one of mixed, pure"),
        (
            {"model": {"dtype": "float16", "precision": "pure"}, "train": {"optimizer": "adam"}},
            None,
            "model.precision: 'pure' with model.dtype: 'float16' and train.optimizer: 'adam'",
        ),
    ],
)
def test_bad_format_settings_are_one_line_errors(section, value, message):
    base = {"data": {"dataset": "gaussian"}}
    for k, v in section.items():
        base[k] = v
    with pytest.raises(ConfigError) as e:
        from_dict(base)
    assert message in str(e.value) and "\n" not in str(e.value)
