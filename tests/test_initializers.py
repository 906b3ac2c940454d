"""Tests for initlab.nn.initializers: shapes, the variance laws of REFERENCE.md, bias draws, arguments."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initlab.errors import ConfigError
from initlab.nn.initializers import (
    BIAS_INITIALIZERS,
    INITIALIZERS,
    Role,
    get_bias_initializer,
    get_initializer,
    resolve_args,
)

from conftest import assert_lists_names

CANONICAL = list(INITIALIZERS)
ALIASES = [n for n in INITIALIZERS.all_names() if n not in CANONICAL]
WITH_SIGMA = [n for n in CANONICAL if INITIALIZERS[n].sigma_w2 is not None]
WITH_BIAS = [n for n in CANONICAL if INITIALIZERS[n].bias is not None]

SHAPE = (300, 200)  # (fan_in, fan_out): 60k draws, so variances are known to about 0.6%
WIDE = (200, 300)  # fan_in < fan_out
BIAS_DRAWS = 60_000  # biases drawn for the statistical bias checks
KEY = jax.random.PRNGKey(0)


def sample(name: str, shape=SHAPE, given=None, key=KEY) -> np.ndarray:
    entry = INITIALIZERS[name]
    draw = entry.sampler(resolve_args(entry, given, "model.init_args"), Role.HIDDEN, shape[0])
    return np.asarray(draw(key, shape, jnp.float32))


def bias_sample(entry, args, fan_in: int, fan_out: int, key=KEY) -> np.ndarray:
    """A bias of ``fan_out`` units of a layer with ``fan_in`` inputs, by a bias sampler factory."""
    return np.asarray(entry(args, Role.HIDDEN, fan_in)(key, (fan_out,), jnp.float32))


@functools.cache
def cached(name: str, shape=SHAPE) -> np.ndarray:
    """sample(name, shape) with the default key and arguments, drawn once per session and shared by
    the tests (orthogonal's QR is slow enough on CPU to be worth not repeating)."""
    w = sample(name, shape)
    w.setflags(write=False)
    return w


@pytest.fixture(scope="module")
def big_samples() -> dict[str, np.ndarray]:
    """One (300, 200) draw per canonical initializer, shared by the statistical tests."""
    return {name: cached(name) for name in CANONICAL}


# ----------------------------------------------------------------------------------------------
# Every entry


@pytest.mark.parametrize("name", INITIALIZERS.all_names())
def test_shape_dtype_finite(name):
    w = cached(name)
    assert w.shape == (300, 200)
    assert w.dtype == np.float32
    assert np.all(np.isfinite(w))


@pytest.mark.parametrize("name", CANONICAL)
def test_deterministic_for_a_key(name):
    np.testing.assert_array_equal(sample(name, key=jax.random.PRNGKey(0)), cached(name))
    other = sample(name, key=jax.random.PRNGKey(1))
    assert np.array_equal(other, cached(name)) == (name in DETERMINISTIC)  # only these ignore the key


DETERMINISTIC = ("zeros", "constant", "identity")  # identity: on the hidden layers this draws for


@pytest.mark.parametrize("name", [n for n in CANONICAL if n not in DETERMINISTIC])
def test_random_inits_depend_on_the_key(name):
    assert not np.array_equal(sample(name, key=jax.random.PRNGKey(1)), cached(name))


@pytest.mark.parametrize("name", WITH_SIGMA)
def test_empirical_fan_in_variance_matches_sigma_w2(name, big_samples):
    fan_in, fan_out = SHAPE
    entry = INITIALIZERS[name]
    expected = entry.sigma_w2(fan_in, fan_out, resolve_args(entry, None, "k"))
    w = big_samples[name]
    got = fan_in * w.var(dtype=np.float64)
    assert got == pytest.approx(expected, rel=0.03, abs=1e-12)
    assert abs(w.mean(dtype=np.float64)) <= 0.02 * math.sqrt(expected / fan_in)  # 5 standard errors


@pytest.mark.parametrize("name", WITH_SIGMA)
def test_sigma_w2_with_wide_layer(name):
    """fan_in < fan_out too (orthogonal's law depends on it)."""
    fan_in, fan_out = WIDE
    entry = INITIALIZERS[name]
    expected = entry.sigma_w2(fan_in, fan_out, resolve_args(entry, None, "k"))
    got = fan_in * cached(name, WIDE).var(dtype=np.float64)
    assert got == pytest.approx(expected, rel=0.03, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# REFERENCE.md, written out independently: Var(W) for each named law.

REFERENCE_VAR = {
    "he_normal": lambda fi, fo: 2 / fi,
    "kaiming_normal": lambda fi, fo: 2 / fi,
    "glorot_normal": lambda fi, fo: 2 / (fi + fo),
    "xavier_normal": lambda fi, fo: 2 / (fi + fo),
    "lecun_normal": lambda fi, fo: 1 / fi,
    "lecun1989": lambda fi, fo: (2.4 / fi) ** 2 / 3,
    "standard": lambda fi, fo: (1 / math.sqrt(fi)) ** 2 / 3,
    "lecun_uniform": lambda fi, fo: 1 / fi,
    "he_uniform": lambda fi, fo: 6 / fi / 3,
    "kaiming_uniform": lambda fi, fo: 6 / fi / 3,
    "glorot_uniform": lambda fi, fo: 6 / (fi + fo) / 3,
    "xavier_uniform": lambda fi, fo: 6 / (fi + fo) / 3,
    "normal": lambda fi, fo: 0.01**2,
    "uniform": lambda fi, fo: 0.05**2 / 3,
    "mean_field": lambda fi, fo: 1.0 / fi,
}

# Limits of the uniform laws.
REFERENCE_LIMIT = {
    "lecun1989": lambda fi, fo: 2.4 / fi,
    "standard": lambda fi, fo: 1 / math.sqrt(fi),
    "lecun_uniform": lambda fi, fo: math.sqrt(3 / fi),
    "he_uniform": lambda fi, fo: math.sqrt(6 / fi),
    "kaiming_uniform": lambda fi, fo: math.sqrt(6 / fi),
    "glorot_uniform": lambda fi, fo: math.sqrt(6 / (fi + fo)),
    "xavier_uniform": lambda fi, fo: math.sqrt(6 / (fi + fo)),
    "uniform": lambda fi, fo: 0.05,
}

NORMAL_LAWS = ["he_normal", "glorot_normal", "lecun_normal", "normal", "mean_field"]


@pytest.mark.parametrize("name", sorted(REFERENCE_VAR))
def test_variance_matches_reference_formula(name):
    fan_in, fan_out = SHAPE
    got = cached(INITIALIZERS.canonical(name)).var(dtype=np.float64)
    assert got == pytest.approx(REFERENCE_VAR[name](fan_in, fan_out), rel=0.03)


@pytest.mark.parametrize("name", sorted(REFERENCE_LIMIT))
def test_uniform_within_limit_and_reaches_it(name):
    fan_in, fan_out = SHAPE
    limit = REFERENCE_LIMIT[name](fan_in, fan_out)
    w = np.abs(cached(INITIALIZERS.canonical(name)))
    assert w.max() <= limit * (1 + 1e-6)
    assert w.max() >= 0.999 * limit  # 60k uniform draws come within 0.1% of the edge
    # Uniform, not bell-shaped: a quarter of the draws lie in the outer quarter of the range.
    assert np.mean(w > 0.75 * limit) == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("name", NORMAL_LAWS)
def test_normal_laws_are_not_truncated(name, big_samples):
    w = big_samples[name]
    std = w.std(dtype=np.float64)
    beyond = np.mean(np.abs(w) > 2 * std)
    assert beyond == pytest.approx(0.0455, abs=0.005)  # plain normal: P(|z| > 2) = 4.55%
    assert np.abs(w).max() > 3.5 * std


# A new gain recompiles jax's orthogonal sampler (about a second), so only one case uses gain 2.
@pytest.mark.parametrize("shape, gain", [(SHAPE, 1.0), (WIDE, 1.0), (SHAPE, 2.0)], ids=["tall", "wide", "tall-gain2"])
def test_orthogonal(shape, gain):
    fan_in, fan_out = shape
    w = cached("orthogonal", shape) if gain == 1.0 else sample("orthogonal", shape, {"gain": gain})
    w = w.astype(np.float64)
    if fan_in >= fan_out:
        np.testing.assert_allclose(w.T @ w, gain**2 * np.eye(fan_out), atol=3e-5 * gain**2)
    else:
        np.testing.assert_allclose(w @ w.T, gain**2 * np.eye(fan_in), atol=3e-5 * gain**2)


def test_orthogonal_sigma_w2():
    entry = INITIALIZERS["orthogonal"]
    assert entry.sigma_w2(300, 200, {"gain": 2.0}) == pytest.approx(4.0)
    assert entry.sigma_w2(200, 300, {"gain": 1.0}) == pytest.approx(2 / 3)


def test_zeros_all_zero():
    assert not np.any(cached("zeros"))


@pytest.mark.parametrize("value", [0.01, -0.3])
def test_constant_all_equal_value(value):
    given = None if value == 0.01 else {"value": value}
    w = sample("constant", SHAPE, given)
    np.testing.assert_array_equal(w, np.full(SHAPE, value, np.float32))


def test_normal_and_uniform_arguments_are_used():
    assert sample("normal", SHAPE, {"std": 0.5}).std() == pytest.approx(0.5, rel=0.01)
    assert np.abs(sample("uniform", SHAPE, {"limit": 0.2})).max() == pytest.approx(0.2, rel=0.001)


def test_mean_field_sigma_w_scales_the_weights():
    fan_in, _ = SHAPE
    w = sample("mean_field", SHAPE, {"sigma_w": 1.5})
    assert fan_in * w.var(dtype=np.float64) == pytest.approx(2.25, rel=0.03)


@pytest.mark.parametrize("alias", ALIASES)
def test_alias_gives_identical_arrays(alias):
    canonical = INITIALIZERS.canonical(alias)
    assert canonical != alias and canonical in CANONICAL
    assert INITIALIZERS[alias] is INITIALIZERS[canonical]
    k = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(sample(alias, key=k), sample(canonical, key=k))


def test_expected_aliases():
    assert INITIALIZERS.canonical("xavier_normal") == "glorot_normal"
    assert INITIALIZERS.canonical("xavier_uniform") == "glorot_uniform"
    assert INITIALIZERS.canonical("kaiming_normal") == "he_normal"
    assert INITIALIZERS.canonical("kaiming_uniform") == "he_uniform"


# ----------------------------------------------------------------------------------------------
# Biases prescribed by a weight initializer (mean-field)


@pytest.mark.parametrize("name", WITH_BIAS)
def test_prescribed_bias_has_shape_fan_out(name):
    entry = INITIALIZERS[name]
    b = bias_sample(entry.bias, resolve_args(entry, {"sigma_b": 0.5} if name == "mean_field" else None, "k"), *SHAPE)
    assert b.shape == (SHAPE[1],)


@pytest.mark.parametrize("sigma_b", [0.0, 0.3])
def test_mean_field_bias_is_normal_sigma_b(sigma_b):
    entry = INITIALIZERS["mean_field"]
    args = resolve_args(entry, {"sigma_b": sigma_b}, "model.init_args")
    b = bias_sample(entry.bias, args, 1, BIAS_DRAWS)
    assert np.all(np.isfinite(b))
    if sigma_b == 0:
        assert not np.any(b)
    else:
        assert b.mean() == pytest.approx(0.0, abs=0.005)
        assert b.std() == pytest.approx(sigma_b, rel=0.01)
        assert np.mean(np.abs(b) > 2 * sigma_b) == pytest.approx(0.0455, abs=0.003)


def test_mean_field_defaults():
    assert resolve_args(INITIALIZERS["mean_field"], None, "k") == {"sigma_w": 1.0, "sigma_b": 0.0}


# ----------------------------------------------------------------------------------------------
# Bias initializers


@pytest.mark.parametrize("name", BIAS_INITIALIZERS.all_names())
def test_bias_shape_dtype_finite(name):
    entry = BIAS_INITIALIZERS[name]
    b = bias_sample(entry.sampler, resolve_args(entry, None, "model.bias_init_args"), *SHAPE)
    assert b.shape == (SHAPE[1],)
    assert b.dtype == np.float32
    assert np.all(np.isfinite(b))


def test_bias_standard_within_one_over_sqrt_fan_in():
    fan_in = 400
    b = bias_sample(BIAS_INITIALIZERS["standard"].sampler, {}, fan_in, BIAS_DRAWS)
    limit = 1 / math.sqrt(fan_in)
    assert np.abs(b).max() <= limit * (1 + 1e-6)
    assert np.abs(b).max() >= 0.999 * limit
    assert b.var() == pytest.approx(limit**2 / 3, rel=0.02)


def test_bias_zeros_constant_normal_uniform():
    def draw(name, args):
        return bias_sample(BIAS_INITIALIZERS[name].sampler, args, 10, BIAS_DRAWS)

    assert not np.any(draw("zeros", {}))
    np.testing.assert_array_equal(draw("constant", {"value": 0.25}), np.full(BIAS_DRAWS, 0.25, np.float32))
    assert resolve_args(BIAS_INITIALIZERS["constant"], None, "k") == {"value": 0.0}
    assert draw("normal", {"std": 0.2}).std() == pytest.approx(0.2, rel=0.02)
    uniform = np.abs(draw("uniform", {"limit": 0.1}))
    assert 0.0999 <= uniform.max() <= 0.1 * (1 + 1e-6)


# Bias variances given as metadata (sigma_b2 = Var(b), what initlab.theory.mean_field reads): checked against
# a large draw, non-default arguments included so that an argument the formula ignores shows up.
BIAS_CASES = [(name, None) for name in BIAS_INITIALIZERS] + [
    ("constant", {"value": 0.0}),
    ("normal", {"std": 0.3}),
    ("uniform", {"limit": 0.2}),
]


@pytest.mark.parametrize("name, given", BIAS_CASES, ids=[f"{n}-{g}" for n, g in BIAS_CASES])
@pytest.mark.parametrize("fan_in", [10, 400])
def test_bias_variance_metadata_matches_a_large_draw(name, given, fan_in):
    entry = BIAS_INITIALIZERS[name]
    args = resolve_args(entry, given, "model.bias_init_args")
    b = bias_sample(entry.sampler, args, fan_in, BIAS_DRAWS)
    expected = entry.sigma_b2(fan_in, args)
    if expected is None:  # the theory does not apply: a constant, non-zero bias
        assert name == "constant" and args["value"] != 0 and np.all(b == args["value"])
    else:
        assert b.var(dtype=np.float64) == pytest.approx(expected, rel=0.03, abs=1e-12)


def test_constant_bias_has_no_variance_for_the_theory_unless_zero():
    entry = BIAS_INITIALIZERS["constant"]
    assert entry.sigma_b2(10, {"value": 0.0}) == 0.0 and entry.sigma_b2(10, {"value": 0.5}) is None


@pytest.mark.parametrize("sigma_b", [0.0, 0.3])
def test_prescribed_bias_variance_metadata_matches_a_large_draw(sigma_b):
    entry = INITIALIZERS["mean_field"]
    args = resolve_args(entry, {"sigma_b": sigma_b}, "model.init_args")
    b = bias_sample(entry.bias, args, 50, BIAS_DRAWS)
    assert b.var(dtype=np.float64) == pytest.approx(entry.sigma_b2(50, args), rel=0.03, abs=1e-12)


def test_every_entry_with_its_own_bias_gives_its_variance():
    assert all(INITIALIZERS[n].sigma_b2 is not None for n in WITH_BIAS)
    assert all(entry.sigma_b2 is not None for entry in BIAS_INITIALIZERS.values())


@pytest.mark.parametrize("name", CANONICAL)
@pytest.mark.parametrize("role", list(Role))
def test_weight_samplers_take_the_role_and_draw_in_the_dtype_asked_for(name, role):
    entry = INITIALIZERS[name]
    draw = entry.sampler(resolve_args(entry, None, "k"), role, 12)
    w = draw(KEY, (12, 6), jnp.bfloat16)
    assert w.shape == (12, 6) and w.dtype == jnp.bfloat16 and np.isfinite(np.asarray(w, np.float32)).all()


@pytest.mark.parametrize("name", list(BIAS_INITIALIZERS))
def test_bias_samplers_draw_in_the_dtype_asked_for(name):
    entry = BIAS_INITIALIZERS[name]
    b = entry.sampler(resolve_args(entry, None, "k"), Role.OUTPUT, 12)(KEY, (6,), jnp.bfloat16)
    assert b.shape == (6,) and b.dtype == jnp.bfloat16


# ----------------------------------------------------------------------------------------------
# Arguments and lookups


def test_resolve_args_fills_defaults_and_overrides():
    entry = INITIALIZERS["orthogonal"]
    assert resolve_args(entry, None, "model.init_args") == {"gain": 1.0}
    got = resolve_args(entry, {"gain": 2}, "model.init_args")
    assert got == {"gain": 2.0} and isinstance(got["gain"], float)


def test_resolve_args_does_not_mutate_defaults():
    entry = INITIALIZERS["orthogonal"]
    resolve_args(entry, {"gain": 3.0}, "k")
    assert dict(entry.args) == {"gain": 1.0}


def test_resolve_args_rejects_unknown_argument():
    with pytest.raises(ConfigError) as info:
        resolve_args(INITIALIZERS["mean_field"], {"sigma_x": 1.0}, "model.init_args")
    msg = str(info.value)
    assert "model.init_args.sigma_x" in msg
    assert "sigma_w" in msg and "sigma_b" in msg


def test_resolve_args_entry_without_arguments():
    with pytest.raises(ConfigError) as info:
        resolve_args(INITIALIZERS["he_normal"], {"gain": 2.0}, "model.init_args")
    msg = str(info.value)
    assert "model.init_args.gain" in msg and "none" in msg


@pytest.mark.parametrize("bad", ["big", True, None, [1.0]])
def test_resolve_args_rejects_non_numbers(bad):
    with pytest.raises(ConfigError) as info:
        resolve_args(INITIALIZERS["orthogonal"], {"gain": bad}, "model.init_args")
    msg = str(info.value)
    assert "model.init_args.gain" in msg and repr(bad) in msg and "not a number" in msg


def test_bias_resolve_args_rejects_unknown_argument():
    with pytest.raises(ConfigError) as info:
        resolve_args(BIAS_INITIALIZERS["normal"], {"mean": 1.0}, "model.bias_init_args")
    msg = str(info.value)
    assert "model.bias_init_args.mean" in msg and "std" in msg


def test_get_initializer_errors_list_names():
    with pytest.raises(ConfigError) as info:
        get_initializer("he_norml")
    msg = str(info.value)
    assert "model.init" in msg and "'he_norml'" in msg
    assert_lists_names(msg, INITIALIZERS)
    with pytest.raises(ConfigError) as info:
        get_bias_initializer("ones")
    msg = str(info.value)
    assert "model.bias_init" in msg and "'ones'" in msg
    assert_lists_names(msg, BIAS_INITIALIZERS)
    assert get_initializer("kaiming_normal") is INITIALIZERS["he_normal"]


@pytest.mark.parametrize("scale", [0.9, 1.1])
def test_identity_init_scales_a_linear_net_by_exactly_scale_per_layer(scale):
    """deeplearning.ai's demo: hidden weights (1 ± ε)·I; with a linear activation layer l's
    activations are layer 1's times scale^(l-1), so their variance follows scale^(2(l-1))."""
    from initlab.config import from_dict
    from initlab.nn.model import pre_activations
    from initlab.train.build import init_params, model_spec

    cfg = from_dict(
        {"model": {"depth": 9, "width": 32, "activation": "linear", "init": "identity", "init_args": {"scale": scale}}}
    )
    spec = model_spec(cfg.model, 20, 10)
    params, state = init_params(spec, cfg.model, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(params.hidden.dense.w[3]), scale * np.eye(32, dtype=np.float32))
    assert np.var(np.asarray(params.inp.dense.w)) == pytest.approx(1 / 20, rel=0.2)  # LeCun-normal first layer
    z, _ = pre_activations(spec, params, state, jax.random.normal(jax.random.PRNGKey(1), (64, 20)))
    var = np.var(np.asarray(z), axis=(1, 2))
    np.testing.assert_allclose(var / var[0], scale ** (2.0 * np.arange(9)), rtol=1e-5)


def test_identity_scale_must_be_positive():
    from initlab.config import from_dict

    with pytest.raises(ConfigError, match=r"model.init_args.scale: -1 is not allowed \(expected a number > 0\)"):
        from_dict({"model": {"init": "identity", "init_args": {"scale": -1}}})
