"""Tests for initlab.nn.optimizers: every optimizer descends, schedules' shapes, exact losses, weight decay."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from initlab.errors import ConfigError
from initlab.nn.optimizers import LOSSES, OPTIMIZERS, SCHEDULES, OptimizerSettings, ScheduleSettings, build_optimizer

# A badly conditioned quadratic 0.5 Σ a_i (p_i − t_i)², minimum 0 at t.
CURV = jnp.array([1.0, 4.0, 0.5, 2.0])
TARGET = jnp.array([1.0, -2.0, 0.5, 3.0])


def quadratic(params):
    return 0.5 * jnp.sum(CURV * (params["w"] - TARGET) ** 2)


def descend(opt: optax.GradientTransformation, steps: int = 50) -> tuple[float, float]:
    """(initial, final) loss after ``steps`` full-gradient steps from zero."""

    def step(carry, _):
        params, state = carry
        grads = jax.grad(quadratic)(params)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    params = {"w": jnp.zeros(4)}
    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return float(quadratic({"w": jnp.zeros(4)})), float(quadratic(params))


@pytest.mark.parametrize("name", OPTIMIZERS.all_names())
def test_every_optimizer_reduces_a_quadratic(name):
    opt = OPTIMIZERS[name](OptimizerSettings(optax.constant_schedule(0.05), momentum=0.9, weight_decay=0.0))
    initial, final = descend(opt)
    assert math.isfinite(final)
    assert final < 0.1 * initial


@pytest.mark.parametrize("name", OPTIMIZERS.all_names())
def test_every_optimizer_through_build_optimizer_with_decay(name):
    opt = build_optimizer(name, "constant", lr=0.05, total_steps=50, warmup_steps=0, momentum=0.9, weight_decay=1e-3)
    initial, final = descend(opt)
    assert math.isfinite(final)
    assert final < 0.1 * initial


def test_sgd_is_plain_gradient_descent():
    opt = build_optimizer("sgd", "constant", lr=0.1, total_steps=10, warmup_steps=0, momentum=0.9, weight_decay=0.0)
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.5, 3.0])}
    updates, _ = opt.update(grads, opt.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), [-0.05, -0.3], rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov"])
def test_weight_decay_acts_as_l2_on_the_gradient(name):
    """Coupled decay: the update equals the one without decay on the gradient g + wd·p."""
    wd, lr = 0.1, 0.5
    params = {"w": jnp.array([1.0, -2.0, 4.0])}
    grads = [{"w": jnp.array([0.5, 3.0, -1.0])}, {"w": jnp.array([-0.2, 1.0, 0.3])}]
    decayed = build_optimizer(name, "constant", lr, 10, 0, momentum=0.9, weight_decay=wd)
    plain = build_optimizer(name, "constant", lr, 10, 0, momentum=0.9, weight_decay=0.0)
    s_d, s_p = decayed.init(params), plain.init(params)
    p_d = p_p = params
    for g in grads:  # two steps, so momentum's memory of the decay term is checked too
        u_d, s_d = decayed.update(g, s_d, p_d)
        u_p, s_p = plain.update(jax.tree.map(lambda gi, pi: gi + wd * pi, g, p_p), s_p, p_p)
        np.testing.assert_allclose(np.asarray(u_d["w"]), np.asarray(u_p["w"]), rtol=1e-6)
        assert not np.allclose(np.asarray(u_d["w"]), np.asarray(plain.update(g, s_p, p_p)[0]["w"]))
        p_d = p_p = optax.apply_updates(p_d, u_d)


def test_sgd_weight_decay_exact_first_step():
    opt = build_optimizer("sgd", "constant", 0.5, 10, 0, momentum=0.0, weight_decay=0.1)
    params = {"w": jnp.array([1.0, -2.0])}
    updates, _ = opt.update({"w": jnp.array([0.5, 3.0])}, opt.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), [-0.5 * (0.5 + 0.1), -0.5 * (3.0 - 0.2)], rtol=1e-6)


def test_adamw_weight_decay_is_decoupled():
    lr, wd = 0.1, 0.5
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.5, 3.0])}
    with_wd = build_optimizer("adamw", "constant", lr, 10, 0, 0.9, wd)
    without = build_optimizer("adamw", "constant", lr, 10, 0, 0.9, 0.0)
    u_wd, _ = with_wd.update(grads, with_wd.init(params), params)
    u_0, _ = without.update(grads, without.init(params), params)
    # first Adam step is -lr·sign(g); decoupled decay adds -lr·wd·p on top
    np.testing.assert_allclose(np.asarray(u_0["w"]), [-0.1, -0.1], rtol=1e-4)
    np.testing.assert_allclose(np.asarray(u_wd["w"] - u_0["w"]), [-lr * wd * 1.0, lr * wd * 2.0], rtol=1e-4)


def test_build_optimizer_uses_the_schedule():
    opt = build_optimizer(
        "sgd", "warmup_cosine", lr=1.0, total_steps=10, warmup_steps=4, momentum=0.0, weight_decay=0.0
    )
    params = {"w": jnp.array([1.0])}
    state = opt.init(params)
    updates, state = opt.update({"w": jnp.array([1.0])}, state, params)
    assert float(updates["w"][0]) == 0.0  # warm-up starts at lr 0
    for _ in range(3):
        updates, state = opt.update({"w": jnp.array([1.0])}, state, params)
    assert float(updates["w"][0]) == pytest.approx(-0.75)  # step 3 of 4: lr 3/4


def test_unknown_optimizer_and_schedule_messages():
    with pytest.raises(ConfigError) as info:
        build_optimizer("adamm", "constant", 0.1, 10, 0, 0.9, 0.0)
    msg = str(info.value)
    assert "train.optimizer" in msg and "'adamm'" in msg
    assert all(name in msg for name in OPTIMIZERS.all_names())
    with pytest.raises(ConfigError) as info:
        build_optimizer("sgd", "step", 0.1, 10, 0, 0.9, 0.0)
    msg = str(info.value)
    assert "train.schedule" in msg and "'step'" in msg
    assert all(name in msg for name in SCHEDULES.all_names())


# ----------------------------------------------------------------------------------------------
# Schedules

LR, TOTAL, WARMUP = 0.2, 100, 10


def values(name: str, total: int = TOTAL, warmup: int = WARMUP) -> np.ndarray:
    sched = SCHEDULES[name](ScheduleSettings(lr=LR, total_steps=total, warmup_steps=warmup))
    return np.array([float(sched(step)) for step in range(total + 1)])


@pytest.mark.parametrize("name", SCHEDULES.all_names())
def test_every_schedule_is_bounded_by_the_peak_and_reaches_it(name):
    v = values(name)
    assert np.all(np.isfinite(v))
    assert np.all(v >= 0) and np.all(v <= LR * (1 + 1e-6))
    assert v.max() == pytest.approx(LR, rel=1e-6)


@pytest.mark.parametrize("name", SCHEDULES.all_names())
def test_every_schedule_accepts_zero_total_steps(name):
    sched = SCHEDULES[name](ScheduleSettings(lr=LR, total_steps=0, warmup_steps=0))
    assert math.isfinite(float(sched(0)))


@pytest.mark.parametrize("name", SCHEDULES.all_names())
def test_every_schedule_takes_a_traced_learning_rate(name):
    """A batched sweep passes each run's lr as a traced value: the schedule must not branch on it in
    Python, and gives the values a float lr gives."""

    def at(lr, step):
        return SCHEDULES[name](ScheduleSettings(lr=lr, total_steps=TOTAL, warmup_steps=WARMUP))(step)

    at = jax.jit(at)
    got = np.array([float(at(jnp.float32(LR), step)) for step in range(0, TOTAL + 1, 7)])
    np.testing.assert_allclose(got, values(name)[::7], rtol=1e-5, atol=1e-9)  # float32 under jit


def test_constant_stays_constant():
    np.testing.assert_allclose(values("constant"), LR, rtol=1e-7)


def test_cosine_from_lr_to_zero():
    v = values("cosine")
    assert v[0] == pytest.approx(LR, rel=1e-6)
    assert v[TOTAL // 2] == pytest.approx(LR / 2, rel=1e-5)
    assert v[TOTAL] == pytest.approx(0.0, abs=1e-7)
    assert np.all(np.diff(v) <= 1e-7)  # never increases
    assert v[25] == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi * 25 / TOTAL)), rel=1e-5)


def test_warmup_cosine_shape():
    v = values("warmup_cosine")
    assert v[0] == 0.0
    assert v[WARMUP // 2] == pytest.approx(LR / 2, rel=1e-5)  # linear warm-up
    assert v[WARMUP] == pytest.approx(LR, rel=1e-6)
    assert int(np.argmax(v)) == WARMUP
    assert np.all(np.diff(v[: WARMUP + 1]) > 0)
    assert np.all(np.diff(v[WARMUP:]) <= 1e-7)
    assert v[TOTAL] == pytest.approx(0.0, abs=1e-7)
    mid = (WARMUP + TOTAL) // 2
    assert v[mid] == pytest.approx(LR / 2, rel=1e-5)  # the cosine spans the steps after warm-up


# ----------------------------------------------------------------------------------------------
# Losses


@pytest.mark.parametrize("name", LOSSES.all_names())
def test_every_loss_is_per_example_and_prefers_the_right_class(name):
    labels = jnp.array([0, 2, 1])
    right = jax.nn.one_hot(labels, 4)
    wrong = jax.nn.one_hot((labels + 1) % 4, 4)
    uniform = jnp.zeros((3, 4))
    l_right, l_uniform, l_wrong = (np.asarray(LOSSES[name](z, labels, 4)) for z in (right, uniform, wrong))
    for value in (l_right, l_uniform, l_wrong):
        assert value.shape == (3,)
        assert np.all(np.isfinite(value)) and np.all(value >= 0)
    assert np.all(l_right < l_uniform) and np.all(l_uniform < l_wrong)


@pytest.mark.parametrize("num_classes", [2, 10])
def test_cross_entropy_uniform_logits_is_log_num_classes(num_classes):
    loss = LOSSES["cross_entropy"](jnp.zeros((3, num_classes)), jnp.array([0, 1, 1]), num_classes)
    np.testing.assert_allclose(np.asarray(loss), math.log(num_classes), rtol=1e-6)


def test_cross_entropy_exact():
    logits = jnp.array([[2.0, 0.0, 0.0], [1.0, 3.0, -1.0]])
    loss = np.asarray(LOSSES["cross_entropy"](logits, jnp.array([0, 2]), 3))
    expected = [
        -math.log(math.exp(2) / (math.exp(2) + 2)),
        -(-1.0 - math.log(math.exp(1) + math.exp(3) + math.exp(-1))),
    ]
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_mse_on_one_hot_exact():
    mse = LOSSES["mse"]
    np.testing.assert_allclose(np.asarray(mse(jnp.array([[0.0, 1.0, 0.0]]), jnp.array([1]), 3)), [0.0], atol=0)
    np.testing.assert_allclose(np.asarray(mse(jnp.zeros((2, 4)), jnp.array([0, 3]), 4)), [0.25, 0.25], rtol=1e-7)
    logits = jnp.array([[0.5, 0.5, 0.0], [2.0, 0.0, 1.0]])
    expected = [(0.25 + 0.25 + 0.0) / 3, (4.0 + 0.0 + 0.0) / 3]  # targets [0,1,0] and [0,0,1]
    np.testing.assert_allclose(np.asarray(mse(logits, jnp.array([1, 2]), 3)), expected, rtol=1e-6)


def test_unknown_loss_message():
    with pytest.raises(ConfigError) as info:
        LOSSES.get("hinge", "train.loss")
    msg = str(info.value)
    assert "train.loss" in msg and "'hinge'" in msg and "cross_entropy" in msg and "mse" in msg


def test_mse_with_target_scale_uses_plus_minus_s_targets():
    """LeCun et al. 1989 / Efficient BackProp §4.5: targets ±s inside the sigmoid's range."""
    from initlab.nn.optimizers import make_loss

    loss = make_loss("mse", 1.0)
    np.testing.assert_allclose(np.asarray(loss(jnp.zeros((2, 4)), jnp.array([0, 3]), 4)), [1.0, 1.0], rtol=1e-7)
    exact = jnp.array([[-1.0, 1.0, -1.0]])
    np.testing.assert_allclose(np.asarray(loss(exact, jnp.array([1]), 3)), [0.0], atol=0)
    half = make_loss("mse", 0.5)
    np.testing.assert_allclose(np.asarray(half(jnp.array([[0.5, 0.5, 0.5]]), jnp.array([2]), 3)), [2 / 3], rtol=1e-6)
    # Without a scale: the one-hot targets of the plain registry entry.
    np.testing.assert_allclose(np.asarray(make_loss("mse")(jnp.zeros((1, 4)), jnp.array([0]), 4)), [0.25], rtol=1e-7)


def test_target_scale_only_with_mse():
    from initlab.config import from_dict

    with pytest.raises(ConfigError, match="train.target_scale: 1.0 has no effect with train.loss: 'cross_entropy'"):
        from_dict({"train": {"target_scale": 1.0}})
    assert from_dict({"train": {"loss": "mse", "target_scale": 1.0}}).train.target_scale == 1.0


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_updates_the_typed_mlp_params(name):
    """The model's parameters are NamedTuples with an empty (None) ``blocks`` for a plain MLP:
    every optimizer, with weight decay, keeps that structure, the shapes and the dtype."""
    from initlab.train.build import init_params, model_spec

    from conftest import tiny

    for residual in (False, True):
        cfg = tiny(model={"depth": 3, "width": 8, "residual": residual, "norm": "layernorm"})
        params, _ = init_params(model_spec(cfg.model, 5, 3), cfg.model, jax.random.PRNGKey(0))
        opt = build_optimizer(name, "constant", 0.1, 10, 0, 0.9, 0.01)
        grads = jax.tree.map(jnp.ones_like, params)
        updates, _ = opt.update(grads, opt.init(params), params)
        new = optax.apply_updates(params, updates)
        assert jax.tree.structure(new) == jax.tree.structure(params)
        for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params)):
            assert a.shape == b.shape and a.dtype == b.dtype and not np.array_equal(np.asarray(a), np.asarray(b))


def test_mse_with_a_target_range_uses_low_and_high_targets():
    from initlab.nn.optimizers import make_loss

    loss = make_loss("mse", (0.1, 0.9))
    logits = jnp.array([[0.9, 0.1, 0.1], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(
        np.asarray(loss(logits, jnp.array([0, 0]), 3)), [0.0, (0.81 + 0.01 + 0.01) / 3], atol=1e-7, rtol=1e-6
    )


def test_target_range_is_checked():
    from initlab.config import from_dict

    assert from_dict({"train": {"loss": "mse", "target_range": [0.1, 0.9]}}).train.target_range == (0.1, 0.9)
    with pytest.raises(ConfigError, match="train.target_range: .*has no effect with train.loss: 'cross_entropy'"):
        from_dict({"train": {"target_range": [0.1, 0.9]}})
    with pytest.raises(ConfigError, match=r"train.target_range: \[0.9, 0.1\] is not a range"):
        from_dict({"train": {"loss": "mse", "target_range": [0.9, 0.1]}})
    with pytest.raises(ConfigError, match="given together with train.target_scale"):
        from_dict({"train": {"loss": "mse", "target_range": [0.1, 0.9], "target_scale": 1.0}})
