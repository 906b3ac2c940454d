"""Loss scaling (initlab.nn.loss_scale): every branch of the dynamic rule, none and constant, scaling and
unscaling, the skipped step under optax, jit, vmap and loop carries, and the config's errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from initlab.errors import ConfigError
from initlab.nn.loss_scale import (
    FLOAT32_MAX,
    KINDS,
    LossScaleState,
    LossScaling,
    all_finite,
    from_config,
    select,
    unscale,
)

INF, NAN = float("inf"), float("nan")


def run(ls: LossScaling, flags, state=None):
    """Feed ``ls.adjust`` one step per flag (True: finite gradient): (final state, applies)."""
    state = ls.initial() if state is None else state
    applied = []
    for f in flags:
        state, apply_it = ls.adjust(state, jnp.bool_(f))
        applied.append(bool(apply_it))
    return state, applied


def scalars(state: LossScaleState):
    return float(state.scale), int(state.good)


@pytest.mark.parametrize("bad", [INF, -INF, NAN])
def test_dynamic_halves_skips_and_resets_the_count_on_a_non_finite_gradient(bad):
    ls = from_config("dynamic", init=1024.0, period=5)
    state, _ = run(ls, [True, True])
    assert scalars(state) == (1024.0, 2)
    grads = {"w": jnp.asarray([1.0, bad], jnp.float16), "b": jnp.ones(2)}
    state, apply_it = ls.adjust(state, all_finite(grads))
    assert scalars(state) == (512.0, 0) and not bool(apply_it)


def test_dynamic_grows_by_factor_exactly_after_period_finite_steps():
    ls = from_config("dynamic", init=8.0, period=3)
    state, applied = run(ls, [True, True])
    assert scalars(state) == (8.0, 2)  # not before the period
    state, more = run(ls, [True], state)
    assert scalars(state) == (16.0, 0)  # on it, and the count restarts
    state, most = run(ls, [True, True, True], state)
    assert scalars(state) == (32.0, 0)
    assert all(applied + more + most)
    ls4 = LossScaling("dynamic", init=8.0, period=2, factor=4.0)
    assert scalars(run(ls4, [True, True])[0]) == (32.0, 0)
    assert scalars(run(ls4, [True, True, False])[0]) == (8.0, 0)


def test_a_non_finite_step_restarts_the_period():
    ls = from_config("dynamic", init=64.0, period=3)
    state, applied = run(ls, [True, True, False, True, True])
    assert scalars(state) == (32.0, 2) and applied == [True, True, False, True, True]
    assert scalars(run(ls, [True], state)[0]) == (64.0, 0)


def test_dynamic_floors_at_the_minimum_and_then_applies_the_step():
    ls = LossScaling("dynamic", init=4.0, period=100, minimum=1.0)
    state, applied = run(ls, [False, False])
    assert scalars(state) == (1.0, 0) and applied == [False, False]
    state, _ = run(ls, [True, True], state)
    state, applied = run(ls, [False, False], state)
    # at the floor a non-finite step is applied (the run diverges); S stays, the count restarts
    assert scalars(state) == (1.0, 0) and applied == [True, True]
    # a minimum that is not a power of the factor away: the last backoff stops on it
    odd = LossScaling("dynamic", init=8.0, period=100, minimum=3.0)
    state, applied = run(odd, [False, False, False])
    assert float(state.scale) == 3.0 and applied == [False, False, True]


def test_a_long_run_of_finite_steps_never_makes_the_scale_inf():
    ls = LossScaling("dynamic", init=2.0**120, period=1)
    loop = jax.jit(lambda s: jax.lax.fori_loop(0, 50, lambda i, st: ls.adjust(st, jnp.bool_(True))[0], s))
    state = loop(ls.initial())
    # stays on the largest power of two in float32, so S·g and g/S stay exact
    assert float(state.scale) == 2.0**127 and np.isfinite(float(state.scale)) and float(state.scale) < FLOAT32_MAX
    state, applied = ls.adjust(state, jnp.bool_(False))
    assert float(state.scale) == 2.0**126 and not bool(applied)


@pytest.mark.parametrize(
    "value,kind,scale",
    [("none", "none", 1.0), (128, "constant", 128.0), (0.5, "constant", 0.5), ("1e4", "constant", 1e4)],
)
def test_none_and_constant_never_change_state_and_always_apply(value, kind, scale):
    ls = from_config(value)
    assert ls.kind == kind and ls.active == (kind != "none")
    start = ls.initial()
    state, applied = run(ls, [True, False, True, False, False, True], start)
    assert scalars(state) == scalars(start) == (np.float32(scale), 0) and all(applied)


def test_every_kind_keeps_its_state_dtypes_under_x64_and_in_a_loop_carry():
    with jax.enable_x64(True):
        for kind in KINDS:
            ls = LossScaling(kind, init=8.0, period=2)
            flags = jnp.asarray([True, False, True, True, False])

            def body(i, st, ls=ls):
                return ls.adjust(st, flags[i])[0]

            state = jax.jit(lambda s: jax.lax.fori_loop(0, 5, body, s))(ls.initial())
            assert isinstance(state, LossScaleState)
            assert (state.scale.dtype, state.good.dtype) == (jnp.float32, jnp.int32), kind
            wide = ls.unscale(state, {"h": jnp.ones(2, jnp.float16), "d": jnp.ones(2, jnp.float64)})
            assert (wide["h"].dtype, wide["d"].dtype) == (jnp.float32, jnp.float64)  # float32 or wider


def test_unscale_divides_in_float32_and_returns_float32_for_float16():
    ls = from_config("dynamic", init=2.0**10)
    g16 = jnp.asarray([2.0**-14, 3.0, 65504.0, -7.5], jnp.float16)
    g32 = jnp.asarray([1e-30, 5.0], jnp.float32)
    out = ls.unscale(ls.initial(), {"a": g16, "b": g32, "i": jnp.arange(3)})
    assert (out["a"].dtype, out["b"].dtype) == (jnp.float32, jnp.float32)
    assert out["i"].dtype == jnp.arange(3).dtype and np.array_equal(out["i"], np.arange(3))
    np.testing.assert_array_equal(np.asarray(out["a"]), np.asarray(g16, np.float32) / np.float32(2.0**10))
    np.testing.assert_array_equal(np.asarray(out["b"]), np.asarray(g32) / np.float32(2.0**10))
    # any other S: XLA turns g/S into g·(1/S), within one float32 rounding of the quotient
    three = from_config(3.0)
    got = np.asarray(three.unscale(three.initial(), g16))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.asarray(g16, np.float64) / 3.0, rtol=2.0**-23, atol=0)
    # what float16 could not hold: 2^-14 / 2^12 is below its smallest subnormal 2^-24; float32 keeps it
    big = from_config("dynamic", init=2.0**12)
    assert float(big.unscale(big.initial(), g16[:1])[0]) == 2.0**-26
    assert float((g16[:1] / jnp.float16(2.0**12))[0]) == 0.0  # what dividing in float16 would give


def test_module_unscale_rounds_once_back_to_each_leafs_dtype():
    g16 = jnp.asarray([3.0, 65504.0, 6.0], jnp.float16)
    out = unscale({"a": g16, "b": jnp.asarray([5.0], jnp.float32), "i": jnp.arange(2)}, jnp.float32(3.0))
    assert (out["a"].dtype, out["b"].dtype, out["i"].dtype) == (jnp.float16, jnp.float32, jnp.arange(2).dtype)
    expected = (np.asarray(g16, np.float64) / 3.0).astype(np.float32).astype(np.float16)
    np.testing.assert_array_equal(np.asarray(out["a"]), expected)  # one float16 rounding of the float32 quotient


def test_scale_loss_multiplies_in_the_losss_dtype():
    ls = from_config(64.0)
    scaled = ls.scale_loss(ls.initial(), jnp.asarray(0.5, jnp.float32))
    assert scaled.dtype == jnp.float32 and float(scaled) == 32.0
    big = from_config("dynamic", init=2.0**20)
    assert float(big.scale_loss(big.initial(), jnp.float32(0.25))) == 2.0**18  # beyond float16's range
    none = from_config("none")
    assert float(none.scale_loss(none.initial(), jnp.float32(0.3))) == np.float32(0.3)


def test_a_skipped_step_leaves_parameters_and_optimizer_state_untouched():
    params = {"w": jnp.asarray([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.asarray([0.1, 0.2])}
    opt = optax.adam(1e-3)
    ls = from_config("dynamic", init=2.0**10, period=10)

    @jax.jit
    def step(params, opt_state, ls_state, grads):
        ls_state, apply_it = ls.adjust(ls_state, all_finite(grads))
        updates, new_opt = opt.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(apply_it, n, o), new, old)  # noqa: E731
        return keep(new_params, params), keep(new_opt, opt_state), ls_state, apply_it

    good = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    # a first finite step, so the optimizer state is not its initial zeros
    params, opt_state, ls_state, applied = step(params, opt.init(params), ls.initial(), good)
    assert bool(applied)
    bad = {"w": jnp.asarray([[1.0, INF], [0.0, 0.0]]), "b": jnp.asarray([NAN, 0.0])}
    p2, o2, s2, applied = step(params, opt_state, ls_state, bad)
    assert not bool(applied) and float(s2.scale) == 2.0**9
    old, new = jax.tree.leaves((params, opt_state)), jax.tree.leaves((p2, o2))
    assert len(old) == len(new) and all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(old, new))
    # a finite step from the same state changes both (and the adam count)
    p3, o3, _, applied = step(params, opt_state, ls_state, good)
    assert bool(applied)
    assert not np.array_equal(np.asarray(p3["w"]), np.asarray(params["w"]))
    assert int(o3[0].count) == int(opt_state[0].count) + 1
    # select is the same expression
    kept = select(jnp.bool_(False), p3, params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(params)))


def test_under_jit_and_vmap_only_the_run_that_overflowed_halves():
    ls = from_config("dynamic", init=256.0, period=2)
    states = jax.tree.map(lambda v: jnp.stack([v] * 3), ls.initial())
    assert states.scale.shape == (3,) and states.scale.dtype == jnp.float32
    grads = {"w": jnp.asarray([[1.0, 2.0], [INF, 1.0], [3.0, 4.0]]), "n": jnp.zeros((3, 1), jnp.int32)}
    adjust = jax.jit(jax.vmap(lambda s, g: ls.adjust(s, all_finite(g))))
    new, applied = adjust(states, grads)
    np.testing.assert_array_equal(np.asarray(new.scale), [256.0, 128.0, 256.0])
    np.testing.assert_array_equal(np.asarray(new.good), [1, 0, 1])
    np.testing.assert_array_equal(np.asarray(applied), [True, False, True])
    new, applied = adjust(new, jax.tree.map(jnp.ones_like, grads))
    np.testing.assert_array_equal(np.asarray(new.scale), [512.0, 128.0, 512.0])  # the others reach the period
    np.testing.assert_array_equal(np.asarray(new.good), [0, 1, 0])
    unscaled = jax.vmap(ls.unscale)(new, {"w": jnp.full((3, 2), 1024.0, jnp.float16)})
    np.testing.assert_array_equal(np.asarray(unscaled["w"]), [[2.0, 2.0], [8.0, 8.0], [2.0, 2.0]])


def test_all_finite():
    assert bool(all_finite({"a": jnp.ones(3), "n": jnp.arange(2)}))
    assert bool(all_finite({})) and bool(all_finite({"n": jnp.arange(2)}))
    assert not bool(all_finite({"a": jnp.ones(3), "b": jnp.asarray([NAN])}))
    assert not bool(all_finite([jnp.asarray([1.0, -INF], jnp.float16)]))
    assert not bool(jax.jit(all_finite)({"w": jnp.asarray([[0.0, INF]], jnp.bfloat16)}))


def test_from_config_maps_each_value_to_its_kind():
    dyn = from_config("dynamic", 1024.0, 7)
    assert (dyn.kind, dyn.init, dyn.period, dyn.active) == ("dynamic", 1024.0, 7, True)
    assert scalars(dyn.initial()) == (1024.0, 0)
    assert from_config("none", 1024.0, 7).initial().scale == 1.0 and not from_config("none").active
    assert float(LossScaling("none", init=8.0).initial().scale) == 1.0  # none ignores init
    assert from_config(2**15) == LossScaling("constant", init=32768.0)
    assert hash(dyn) == hash(from_config("dynamic", 1024.0, 7))  # usable as a static argument


@pytest.mark.parametrize("value", ["banana", "constant", "None", "", 0, -2.0, INF, NAN, "inf", 1e39, True, None, [1]])
def test_bad_values_are_config_errors_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"^train\.loss_scale: .* is not none, dynamic or a positive number"):
        from_config(value)


@pytest.mark.parametrize(
    "init,period,key",
    [
        (0.0, 10, "train.loss_scale_init"),
        (INF, 10, "train.loss_scale_init"),
        (8.0, 0, "train.loss_scale_period"),
        (8.0, 2.5, "train.loss_scale_period"),
    ],
)
def test_bad_dynamic_settings_are_config_errors(init, period, key):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        from_config("dynamic", init, period)


def test_an_unknown_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="train.loss_scale: 'banana' is not one of none, constant, dynamic"):
        LossScaling("banana")
