"""Network-level initializers (the schemes of initlab.nn.network_init): Fixup's zero branches and
L^(-1/2) scaling, LSUV's unit variances, and greedy layer-wise autoencoder pre-training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initlab.errors import ConfigError
from initlab.nn.initializers import INITIALIZERS
from initlab.nn.model import apply, pre_activations
from initlab.nn.network_init import SCHEMES
from initlab.train.build import REFINE_STREAM, init_params, init_params_traced, model_spec

from conftest import tiny

X = jax.random.normal(jax.random.PRNGKey(11), (1024, 16))  # (examples, input_dim)


def build(x=X, **model):
    cfg = tiny(model=model)
    spec = model_spec(cfg.model, x.shape[1], 4)
    params, state, trace = init_params_traced(spec, cfg.model, jax.random.PRNGKey(0), x)
    return spec, params, state, trace, cfg


def pre_vars(spec, params, state, x):
    _, _, v = apply(spec, params, state, x, train=True, collect=lambda z, a: jnp.stack([jnp.var(z), jnp.var(a)]))
    return np.asarray(v)


# --- Fixup -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("depth", [3, 9, 21])
def test_fixup_branches_output_zero_and_network_outputs_zero(depth):
    """Zhang et al. 2019: each residual branch's last layer and the output layer start at zero, so
    every block is the identity at initialization (ReLU of a non-negative input is itself)."""
    spec, params, state, trace, _ = build(depth=depth, width=32, residual=True, init="fixup")
    assert trace is None
    w = np.asarray(params.hidden.dense.w)
    assert np.all(w[1::2] == 0) and np.all(w[0::2] != 0)  # branch layer 2 zero, layer 1 drawn
    assert np.all(np.asarray(params.out.w) == 0)
    logits, _, v = apply(spec, params, state, X, train=True, collect=lambda z, a: jnp.stack([jnp.var(a), jnp.mean(a)]))
    assert np.all(np.asarray(logits) == 0)
    block_outputs = np.asarray(v)[0:depth:2]  # layer 1, then the output of each block
    np.testing.assert_allclose(block_outputs, np.broadcast_to(block_outputs[0], block_outputs.shape), rtol=1e-6)


def test_fixup_scales_first_branch_layers_by_blocks_to_the_minus_half():
    depth, width = 33, 256  # 16 blocks: scale 16^(-1/2) = 1/4 of He's std sqrt(2/width)
    spec, params, _, _, _ = build(depth=depth, width=width, residual=True, init="fixup")
    first = np.asarray(params.hidden.dense.w)[0::2]
    expected_std = np.sqrt(2 / width) / 4
    assert first.std() == pytest.approx(expected_std, rel=0.02)
    assert spec.num_blocks == 16
    np.testing.assert_array_equal(np.asarray(params.blocks.mult), np.ones(16))
    np.testing.assert_array_equal(np.asarray(params.blocks.bias), np.zeros((16, 2)))


@pytest.mark.slow
def test_fixup_trains_a_deep_residual_net_without_normalization():
    from initlab.data.datasets import load_dataset
    from initlab.train.loop import train
    from test_train import Recorder

    cfg = tiny(model={"depth": 21, "width": 32, "residual": True, "init": "fixup"}, train={"steps": 80, "lr": 0.003})
    result = train(cfg, load_dataset(cfg.data), Recorder())
    assert result.status == "completed"
    assert result.final["test_acc"] > 0.6  # 4 classes: chance is 0.25


@pytest.mark.parametrize(
    "data, message",
    [
        ({"model": {"init": "fixup"}}, "model.init: 'fixup' needs a residual network"),
        (
            {"model": {"init": "layerwise_autoencoder", "residual": True}},
            "model.init: 'layerwise_autoencoder' does not support a residual network",
        ),
        ({"model": {"residual": True, "depth": 4}}, "model.depth: 4 with model.residual: true must be odd"),
        ({"model": {"init": "fixup", "residual": True, "bias_init": "normal"}}, "conflicts with init 'fixup'"),
        (
            {"model": {"init": "lsuv", "init_args": {"tol": 0}}},
            "model.init_args.tol: 0 is not allowed (expected a number > 0)",
        ),
        ({"model": {"init": "lsuv", "init_args": {"max_iters": 2.5}}}, "model.init_args.max_iters: 2.5 is not allowed"),
        (
            {"model": {"init": "layerwise_autoencoder", "init_args": {"noise": 1}}},
            "model.init_args.noise: 1 is not allowed",
        ),
        ({"model": {"init": "layerwise_autoencoder", "init_args": {"tied": 2}}}, "expected 0 or 1"),
    ],
)
def test_structural_and_argument_errors(data, message):
    from initlab.config import from_dict

    with pytest.raises(ConfigError) as info:
        from_dict(data)
    assert message in str(info.value)


# --- LSUV --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "tanh", "selu"])
@pytest.mark.parametrize("bias_std", [0.0, 0.5])
def test_lsuv_brings_every_layer_within_tol_of_unit_variance(activation, bias_std):
    """Mishkin & Matas 2016: after LSUV each layer's output variance on the batch is within tol of 1."""
    tol, n = 0.05, 256
    spec, params, state, trace, cfg = build(
        depth=8,
        width=64,
        activation=activation,
        init="lsuv",
        init_args={"tol": tol, "batch_size": n},
        bias_init="normal",
        bias_init_args={"std": bias_std},
    )
    rows = trace.rows
    assert trace.file == "lsuv_trace.csv" and trace.columns == ("layer", "iteration", "variance", "scale")
    last = {}
    for r in rows:
        last[r["layer"]] = r
    assert sorted(last) == list(range(1, spec.depth + 2))  # every hidden layer and the output layer
    for layer, r in last.items():
        assert abs(r["variance"] - 1) < tol, (layer, r)
    # Measured independently on the LSUV batch with the final parameters.
    idx = jax.random.choice(jax.random.fold_in(jax.random.PRNGKey(0), REFINE_STREAM), X.shape[0], (n,), replace=False)
    v = pre_vars(spec, params, state, X[idx])[:, 0]
    np.testing.assert_allclose(v, 1.0, atol=tol)
    # On other data from the same distribution it holds up to sampling error.
    np.testing.assert_allclose(pre_vars(spec, params, state, X[-256:])[:, 0], 1.0, atol=0.25)


def test_lsuv_starts_from_orthogonal_and_zero_iterations_leave_it():
    spec, params, state, trace, cfg = build(depth=4, width=32, init="lsuv", init_args={"max_iters": 0})
    ortho, _ = init_params(
        spec, tiny(model={"depth": 4, "width": 32, "init": "orthogonal"}).model, jax.random.PRNGKey(0)
    )
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(ortho)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert all(r["iteration"] == 0 for r in trace.rows)


def test_lsuv_needs_more_than_one_iteration_with_biases():
    """Without biases one rescaling is exact; biases make the loop iterate, as the algorithm allows."""
    _, _, _, plain, _ = build(depth=6, width=32, activation="tanh", init="lsuv", init_args={"tol": 0.01})
    _, _, _, biased, _ = build(
        depth=6,
        width=32,
        activation="tanh",
        init="lsuv",
        init_args={"tol": 0.01},
        bias_init="normal",
        bias_init_args={"std": 0.8},
    )
    assert max(r["iteration"] for r in plain.rows) == 1
    assert max(r["iteration"] for r in biased.rows) >= 2


def test_data_dependent_init_without_data_is_an_error():
    cfg = tiny(model={"init": "lsuv"})
    spec = model_spec(cfg.model, 16, 4)
    with pytest.raises(ValueError, match="needs the training inputs"):
        init_params(spec, cfg.model, jax.random.PRNGKey(0))


# --- Greedy layer-wise autoencoder pre-training --------------------------------------------------


@pytest.mark.slow
def test_layerwise_autoencoder_lowers_each_layers_reconstruction_loss():
    args = {"steps": 60, "lr": 0.01, "batch_size": 64, "examples": 512, "log_every": 20}
    spec, params, state, trace, cfg = build(
        depth=3, width=24, activation="tanh", init="layerwise_autoencoder", init_args=args
    )
    assert trace.file == "pretrain_losses.csv" and trace.columns == ("layer", "step", "loss")
    for layer in (1, 2, 3):
        rows = [r for r in trace.rows if r["layer"] == layer]
        assert [r["step"] for r in rows] == [0, 20, 40, 60]
        assert rows[-1]["loss"] < 0.7 * rows[0]["loss"], rows
    # Every hidden layer moved away from its draw; the output layer kept it.
    base, _ = init_params(
        spec,
        tiny(model={"depth": 3, "width": 24, "activation": "tanh", "init": "standard"}).model,
        jax.random.PRNGKey(0),
    )
    assert not np.allclose(np.asarray(params.inp.dense.w), np.asarray(base.inp.dense.w))
    assert not np.allclose(np.asarray(params.hidden.dense.w), np.asarray(base.hidden.dense.w))
    np.testing.assert_array_equal(np.asarray(params.out.w), np.asarray(base.out.w))


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{"tied": 1}, {"noise": 0.3}])
def test_layerwise_autoencoder_tied_and_denoising_variants_train(extra):
    args = {"steps": 40, "lr": 0.01, "batch_size": 64, "examples": 256, "log_every": 40, **extra}
    _, params, _, trace, _ = build(depth=2, width=16, init="layerwise_autoencoder", init_args=args)
    assert all(np.isfinite(r["loss"]) for r in trace.rows)
    for layer in (1, 2):
        first, last = [r["loss"] for r in trace.rows if r["layer"] == layer]
        assert last < first


def test_theory_does_not_apply_to_network_level_inits_or_residual_nets():
    from initlab.train.theory_inputs import predict_config

    for model in (
        {"init": "lsuv"},
        {"init": "layerwise_autoencoder"},
        {"init": "fixup", "residual": True},
        {"residual": True},
    ):
        out = predict_config(tiny(model=model).model, 16, 1.0)
        assert out["applies"] is False, model
    assert "fitted to data" in predict_config(tiny(model={"init": "lsuv"}).model, 16, 1.0)["reason"]
    assert "skip connections" in predict_config(tiny(model={"residual": True}).model, 16, 1.0)["reason"]


def test_every_network_level_initializer_is_covered_here():
    assert {n for n, e in INITIALIZERS.items() if e.scheme is not None} == {
        "fixup",
        "lsuv",
        "weightnorm_data",
        "layerwise_autoencoder",
    }


def test_every_scheme_is_named_by_exactly_one_initializer():
    named = [e.scheme for e in INITIALIZERS.values() if e.scheme is not None]
    assert sorted(named) == sorted(SCHEMES) and len(set(named)) == len(named)


@pytest.mark.slow
@pytest.mark.parametrize("precision, dtype", [("mixed", jnp.float32), ("pure", jnp.bfloat16)])
def test_schemes_keep_the_spec_parameter_dtype(precision, dtype):
    import dataclasses

    for model in (
        {"init": "fixup", "residual": True, "depth": 5},
        {"init": "lsuv", "depth": 3},
        {
            "init": "layerwise_autoencoder",
            "depth": 2,
            "init_args": {"steps": 3, "examples": 64, "batch_size": 16, "log_every": 3},
        },
    ):
        cfg = tiny(model={"width": 16, **model})
        spec = dataclasses.replace(model_spec(cfg.model, 16, 4), dtype="bfloat16", precision=precision)
        params, _, _ = init_params_traced(spec, cfg.model, jax.random.PRNGKey(0), X)
        assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(dtype)}, model
        assert all(np.isfinite(np.asarray(leaf, np.float32)).all() for leaf in jax.tree.leaves(params)), model


# --- ReZero / SkipInit -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("init", ["he_normal", "glorot_uniform"])  # SkipInit's He, ReZero's Xavier
def test_zero_branch_scalars_make_every_block_the_identity_and_still_learn(init):
    """ReZero (Bachlechner et al. 2020) and SkipInit (De & Smith 2020): each residual branch's
    learned scalar starts at 0, so every block passes its input on (ReLU of a non-negative input is
    itself) while its branch layers keep their draws, and the scalar's gradient at step 0 is not 0."""
    from initlab.nn.optimizers import make_loss

    depth = 9
    spec, params, state, _, _ = build(depth=depth, width=32, residual=True, init=init, branch_scale_init=0.0)
    np.testing.assert_array_equal(np.asarray(params.blocks.mult), np.zeros(spec.num_blocks))
    assert np.all(np.asarray(params.hidden.dense.w) != 0)  # unlike Fixup, no layer is zeroed
    z, _ = pre_activations(spec, params, state, X)
    for layer in range(3, depth + 1, 2):  # each block's second layer: z = h + 0·branch, its input h
        np.testing.assert_array_equal(np.asarray(z[layer - 1]), np.maximum(np.asarray(z[0]), 0))
    loss = make_loss("cross_entropy")
    y = jnp.arange(X.shape[0]) % 4

    def mean_loss(mult):
        p = params._replace(blocks=params.blocks._replace(mult=mult))
        return jnp.mean(loss(apply(spec, p, state, X, train=True)[0], y, 4))

    g = np.asarray(jax.grad(mean_loss)(params.blocks.mult))
    assert np.all(g != 0) and np.all(np.isfinite(g))


def test_branch_scale_init_needs_a_residual_network():
    with pytest.raises(ConfigError, match="model.branch_scale_init: 0.0 has no effect with model.residual: False"):
        tiny(model={"branch_scale_init": 0.0})
