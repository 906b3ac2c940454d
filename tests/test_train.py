"""Training: it learns, it is deterministic, it compiles once, it stops cleanly on divergence."""

import math

import jax
import jax.monitoring
import numpy as np
import pytest

from initlab.data.datasets import load_dataset
from initlab.errors import ConfigError
from initlab.nn.normalizations import NORMALIZATIONS
from initlab.train.loop import train
from initlab.train.schedule import LOG_BUFFER, PROGRESS_CHUNK, Schedule, make_schedule

import yaml
from typer.testing import CliRunner

from initlab import config as C
from initlab.cli import app
from initlab.runfolder.storage import RunRecorder, run_dir_for
from initlab.train.loop import train_group

from conftest import tiny
from conftest import small_run


class Recorder:
    """A Sink keeping everything in memory."""

    def __init__(self):
        self.rows, self.layer_steps, self.ticks, self.checkpoints, self.trace = [], [], [], 0, None

    def metrics(self, row):
        self.rows.append(row)

    def layers(self, step, stats):
        self.layer_steps.append(step)

    def checkpoint(self):
        self.checkpoints += 1

    def init_trace(self, trace):
        self.trace = trace

    def jacobian(self, step, singular_values):
        pass

    def parameters(self, step, arrays):
        pass

    def progress(self, step, total, info):
        self.ticks.append(step)


def fit(cfg, sink=None):
    sink = sink or Recorder()
    return train(cfg, load_dataset(cfg.data), sink), sink


@pytest.mark.slow
def test_tiny_run_learns_the_teacher():
    cfg = tiny(train={"steps": 150, "batch_size": 32, "lr": 0.003}, log={"every": 50})
    result, rec = fit(cfg)
    assert result.status == "completed" and result.steps == 150
    assert rec.rows[0]["test_acc"] < 0.5
    assert result.final["test_acc"] > 0.7
    assert rec.rows[-1]["train_loss"] < rec.rows[1]["train_loss"]


@pytest.mark.slow
def test_same_seed_same_numbers_other_seed_other_numbers():
    cfg = tiny()
    a, ra = fit(cfg)
    b, rb = fit(cfg)
    c, rc = fit(tiny(seed=1))
    assert [r["train_loss"] for r in ra.rows[1:]] == [r["train_loss"] for r in rb.rows[1:]]
    assert a.final == b.final
    assert ra.rows[-1]["train_loss"] != rc.rows[-1]["train_loss"]


STATS_ON = pytest.mark.parametrize("stats_on", ["probe", "train_batch"])


@pytest.mark.slow
@STATS_ON
def test_logging_and_evaluation_schedule(stats_on):
    # 512 examples / batch 32 = 16 steps per epoch; 40 steps, statistics every 10.
    cfg = tiny(train={"steps": 40}, log={"every": 10, "stats_on": stats_on})
    result, rec = fit(cfg)
    assert rec.layer_steps == [0, 10, 20, 30, 40]
    assert [r["step"] for r in rec.rows] == [0, 10, 16, 20, 30, 32, 40]
    evaluated = [r["step"] for r in rec.rows if not math.isnan(r["test_acc"])]
    assert evaluated == [0, 16, 32, 40]
    assert rec.checkpoints == 3
    assert result.steps_per_epoch == 16
    # the logs stay on the device: the host looks in at epoch ends (and tells the bar the final evaluation)
    assert rec.ticks == [16, 32, 40, 40]


def test_epochs_set_the_length():
    result, _ = fit(tiny(train={"steps": None, "epochs": 2}))
    assert result.total_steps == result.steps == 32


@STATS_ON
def test_zero_steps_logs_the_initialization_only(stats_on):
    result, rec = fit(tiny(train={"steps": 0}, log={"stats_on": stats_on}))
    assert result.steps == 0 and rec.layer_steps == [0] and len(rec.rows) == 1


def stops_of(sched):
    stops, step = [], 0
    while step < sched.total_steps:
        step = sched.next_stop(step)
        stops.append(step)
    return stops


def test_chunks_end_at_ticks_epochs_and_the_end_not_at_logs():
    """Logged steps stay inside a chunk (their statistics are buffered on the device)."""
    stops = stops_of(Schedule(total_steps=1000, steps_per_epoch=700, log_every=500))
    assert stops == [200, 400, 600, 700, 900, 1000]
    assert all(b - a <= PROGRESS_CHUNK for a, b in zip([0, *stops], stops))


def test_a_chunk_holds_at_most_log_buffer_statistics_tables():
    sched = Schedule(total_steps=100, steps_per_epoch=1000, log_every=1)
    stops = stops_of(sched)
    assert stops == [LOG_BUFFER, 2 * LOG_BUFFER, 3 * LOG_BUFFER, 100]
    assert all(len(sched.logs_between(a, b)) <= LOG_BUFFER for a, b in zip([0, *stops], stops))
    # every 3 steps from step 5: logs at 6, 9, ...; the chunk ends where the 33rd would be
    assert Schedule(1000, 1000, 3).next_stop(5) == 6 + LOG_BUFFER * 3
    assert Schedule(1000, 1000, 3).logs_between(5, 13) == [6, 9, 12]


def test_batch_larger_than_training_set_is_a_config_error():
    with pytest.raises(ConfigError, match="train.batch_size: 1024"):
        make_schedule(tiny(train={"batch_size": 1024}), 512)


@pytest.mark.slow
@STATS_ON
def test_training_compiles_once(stats_on):
    """After the first chunk, no step, log or evaluation compiles anything new."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    class CountingRecorder(Recorder):
        def progress(self, step, total, info):
            super().progress(step, total, info)
            self.compiles_at.append(len(compiles))

    rec = CountingRecorder()
    rec.compiles_at = []
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        fit(tiny(train={"steps": 120, "batch_size": 32}, log={"every": 5, "stats_on": stats_on}), rec)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(rec.compiles_at) >= 7 and len(rec.layer_steps) == 25
    assert rec.compiles_at[0] == rec.compiles_at[-1]


@pytest.mark.slow
@STATS_ON
def test_divergence_stops_cleanly_and_says_where(stats_on):
    cfg = tiny(model={"depth": 6}, train={"optimizer": "sgd", "lr": 1e6, "steps": 50}, log={"stats_on": stats_on})
    result, rec = fit(cfg)
    assert result.status == "diverged"
    d = result.divergence
    assert 0 <= d["step"] < 50 and result.steps == d["step"]
    assert d["direction"] in ("forward", "backward") and 1 <= d["layer"] <= 7
    assert "non-finite" in d["reason"]
    assert rec.layer_steps[-1] == d["step"]


@pytest.mark.slow
@pytest.mark.parametrize("norm", list(NORMALIZATIONS))
@pytest.mark.parametrize("position", ["pre", "post"])
def test_every_normalization_trains(norm, position):
    result, _ = fit(tiny(model={"norm": norm, "norm_position": position}, train={"steps": 60}))
    assert result.status == "completed"
    assert result.final["test_acc"] > 0.4
    assert np.isfinite(result.last_stats["act_var"]).all()


@pytest.mark.slow
@STATS_ON
def test_batched_group_equals_runs_trained_alone(stats_on):
    """Runs differing in seed, initializer, init arguments and learning rate train together in one
    vmapped group and give the numbers each gives alone (to float tolerance)."""
    from initlab.train.loop import train_group

    log = {"log": {"every": 10, "stats_on": stats_on}}
    cfgs = [
        tiny(seed=0, **log),
        tiny(seed=1, model={"init": "orthogonal", "init_args": {"gain": 1.3}}, **log),
        tiny(seed=2, train={"lr": 0.01}, **log),
        tiny(seed=0, model={"init": "glorot_uniform"}, train={"lr": 0.001}, **log),
    ]
    data = load_dataset(cfgs[0].data)
    sinks = [Recorder() for _ in cfgs]
    grouped = train_group(cfgs, data, sinks)
    for cfg, res, rec in zip(cfgs, grouped, sinks):
        alone, alone_rec = fit(cfg)
        assert res.group_size == 4 and alone.group_size == 1
        assert res.steps == alone.steps
        np.testing.assert_allclose(
            [r["train_loss"] for r in rec.rows[1:]], [r["train_loss"] for r in alone_rec.rows[1:]], rtol=2e-4
        )
        assert res.final["test_acc"] == pytest.approx(alone.final["test_acc"], abs=1 / 256 + 1e-9)
        for key in ("pre_var", "grad_var", "w_norm"):
            np.testing.assert_allclose(res.last_stats[key], alone.last_stats[key], rtol=2e-3)


@pytest.mark.slow
@STATS_ON
def test_a_diverging_run_does_not_disturb_its_group(stats_on):
    from initlab.train.loop import train_group

    log = {"log": {"every": 10, "stats_on": stats_on}}
    cfgs = [
        tiny(seed=0, train={"optimizer": "sgd", "lr": 0.05}, **log),
        tiny(seed=0, train={"optimizer": "sgd", "lr": 1e6}, **log),
        tiny(seed=1, train={"optimizer": "sgd", "lr": 0.05}, **log),
    ]
    data = load_dataset(cfgs[0].data)
    sinks = [Recorder() for _ in cfgs]
    healthy0, exploded, healthy1 = train_group(cfgs, data, sinks)
    assert exploded.status == "diverged" and exploded.steps < 40
    assert healthy0.status == healthy1.status == "completed" and healthy0.steps == 40
    alone, _ = fit(cfgs[0])
    assert healthy0.final["train_loss"] == pytest.approx(alone.final["train_loss"], rel=2e-4)
    assert sinks[1].layer_steps[-1] == exploded.divergence["step"]
    assert sinks[0].layer_steps == [0, 10, 20, 30, 40]


@pytest.mark.slow
def test_max_norm_holds_after_every_update():
    """Srebro & Shraibman 2005: no unit's incoming weight norm exceeds the bound during training."""
    bound = 0.9
    cfg = tiny(model={"init": "he_normal"}, train={"steps": 30, "lr": 0.05, "max_norm": bound}, log={"every": 1})
    norms = []

    class Sink(Recorder):
        def layers(self, step, stats):
            super().layers(step, stats)
            norms.append(stats["w_norm"])

    result, _ = fit(cfg, Sink())
    assert result.status == "completed"
    from initlab.train.build import model_spec
    from initlab.train.device import init_state, make_train_fns

    data = load_dataset(cfg.data)
    spec = model_spec(cfg.model, data.input_dim, data.num_classes)
    fns = make_train_fns(cfg, spec, make_schedule(cfg, 512), 512)
    state, _ = init_state(cfg, spec, fns, jax.device_put(data.x_train))
    drawn = [np.linalg.norm(np.asarray(w), axis=0).max() for w in (state.params.inp.dense.w, state.params.out.w)]
    assert max(drawn) > bound  # the constraint has work to do from the first update on
    # Each unit's norm ≤ bound ⇒ the layer's Frobenius norm ≤ bound · sqrt(fan_out).
    fan_out = [32, 32, 32, 4]
    for step_norms in norms[1:]:
        assert np.all(np.asarray(step_norms) <= bound * np.sqrt(fan_out) * (1 + 1e-5))


@pytest.mark.slow
def test_dropout_training_is_reproducible_and_changes_the_result():
    base = {"model": {"activation": "tanh"}, "train": {"steps": 30}}
    a, _ = fit(tiny(model={"activation": "tanh", "dropout": 0.3}, train={"steps": 30}))
    b, _ = fit(tiny(model={"activation": "tanh", "dropout": 0.3}, train={"steps": 30}))
    plain, _ = fit(tiny(**base))
    assert a.final == b.final
    assert a.final["train_loss"] != plain.final["train_loss"]
    assert a.final["train_loss"] > plain.final["train_loss"]  # dropout noise raises the training loss


@pytest.mark.slow
def test_data_dependent_init_reports_its_trace_to_the_sink():
    result, sink = fit(tiny(model={"init": "lsuv", "depth": 4}, train={"steps": 10}))
    assert result.status == "completed" and result.init_time_s > 0
    assert sink.trace.file == "lsuv_trace.csv" and {r["layer"] for r in sink.trace.rows} == {1, 2, 3, 4, 5}
    _, plain = fit(tiny(train={"steps": 10}))
    assert plain.trace is None


@pytest.mark.slow
def test_a_blow_up_in_a_group_leaves_the_other_runs_as_they_would_be_otherwise():
    """The chunk that a run blew up in is replayed step by step; runs that were fine keep the fast
    result, bit for bit, so their numbers do not depend on whether a partner diverged."""
    import dataclasses

    from initlab.train.loop import train_group

    good = tiny(train={"steps": 30, "lr": 0.003}, log={"every": 10})
    calm = dataclasses.replace(good, seed=1)
    wild = dataclasses.replace(calm, train=dataclasses.replace(good.train, lr=1e6))
    data = load_dataset(good.data)
    reference = train_group([good, calm], data, [Recorder(), Recorder()])
    together = train_group([good, wild], data, [Recorder(), Recorder()])
    assert together[1].status == "diverged" and together[1].steps < 30
    assert together[0].status == "completed" and together[0].steps == 30
    assert together[0].final == reference[0].final


class StatsRecorder(Recorder):
    """Keeps every statistics row, by step."""

    def __init__(self):
        super().__init__()
        self.stats = {}

    def layers(self, step, stats):
        super().layers(step, stats)
        self.stats[step] = stats


@pytest.mark.slow
def test_train_batch_statistics_are_those_of_the_logged_steps_own_mini_batch():
    """log.stats_on: train_batch measures the state at a logged step on the mini-batch that step
    trains on: at step 0, the first batch of epoch 0's shuffle, through the probe's own function."""
    from initlab.train.build import model_spec
    from initlab.train.device import init_state, make_train_fns
    from conftest import make_layer_stats

    cfg = tiny(
        model={"activation": "tanh", "norm": "batchnorm"},
        train={"steps": 20},
        log={"every": 10, "stats_on": "train_batch"},
    )
    result, rec = fit(cfg, StatsRecorder())
    assert sorted(rec.stats) == [0, 10, 20] and result.status == "completed"

    data = load_dataset(cfg.data)
    spec = model_spec(cfg.model, data.input_dim, data.num_classes)
    fns = make_train_fns(cfg, spec, make_schedule(cfg, 512), 512)
    state, _ = init_state(cfg, spec, fns, jax.device_put(data.x_train))
    idx = np.asarray(state.order[:32])  # step 0's mini-batch
    want = make_layer_stats(spec, fns_loss(cfg))(
        state.params, state.norm_state, state.params, data.x_train[idx], data.y_train[idx]
    )
    for column in ("pre_var", "act_var", "grad_var", "wgrad_norm", "unit_p50", "saturated_frac"):
        np.testing.assert_allclose(rec.stats[0][column], np.asarray(want[column]), rtol=1e-5, err_msg=column)
    # ...and not the probe's numbers
    probe = make_layer_stats(spec, fns_loss(cfg))(
        state.params, state.norm_state, state.params, data.x_train[:128], data.y_train[:128]
    )
    assert not np.allclose(rec.stats[0]["grad_var"], np.asarray(probe["grad_var"]), rtol=1e-3)


@pytest.mark.slow
@STATS_ON
def test_a_log_inside_a_chunk_records_what_a_chunk_end_measures(stats_on):
    """Step 40's statistics as a logged step inside a chunk (a 48-step run: the chunk from 32)
    equal those of a 40-step run, where step 40 is the last chunk's end measurement; step 0's of
    a run with no steps (a chunk of no steps) equal those a training run takes."""
    columns = ("pre_var", "act_var", "grad_var", "wgrad_norm", "w_norm", "update_ratio", "unit_p50", "symmetry")
    log = {"every": 10, "stats_on": stats_on}
    _, ended = fit(tiny(train={"steps": 40}, log=log), StatsRecorder())
    _, inside = fit(tiny(train={"steps": 48}, log=log), StatsRecorder())
    _, untrained = fit(tiny(train={"steps": 0}, log=log), StatsRecorder())
    assert sorted(inside.stats) == [0, 10, 20, 30, 40, 48]
    for c in columns:
        np.testing.assert_allclose(inside.stats[40][c], ended.stats[40][c], rtol=1e-5, err_msg=c)
        np.testing.assert_allclose(untrained.stats[0][c], ended.stats[0][c], rtol=1e-5, err_msg=c)
    assert np.all(inside.stats[40]["update_ratio"] > 0)


@STATS_ON
def test_update_ratios_are_against_the_weights_of_the_previous_log(stats_on):
    """The update ratio logged at step 20 (every 10) is ‖W₂₀ − W₁₀‖ / ‖W₁₀‖ per layer (at 10,
    against W₀), and at the last step, 25, ‖W₂₅ − W₂₀‖ / ‖W₂₀‖: the weights the run had at those
    steps (steps are deterministic, so a chunk of 10, 20 or 25 steps from the start reaches them)."""
    from initlab.nn.params import effective_weights
    from initlab.train.build import model_spec
    from initlab.train.chunk import ChunkIn
    from initlab.train.device import init_state, make_train_fns
    from initlab.train.group import stack

    cfg = tiny(train={"steps": 25}, log={"every": 10, "stats_on": stats_on})
    _, rec = fit(cfg, StatsRecorder())
    assert sorted(rec.stats) == [0, 10, 20, 25]

    data = load_dataset(cfg.data)
    spec = model_spec(cfg.model, data.input_dim, data.num_classes)
    fns = make_train_fns(cfg, spec, make_schedule(cfg, 512), 512)
    x, y = jax.device_put(data.x_train), jax.device_put(data.y_train)
    start = stack([init_state(cfg, spec, fns, x)[0]])

    def weights_at(step):
        out = fns.chunk(ChunkIn(start, start.params, np.int32(0), np.int32(step), np.ones(1, bool), np.False_), x, y)
        return jax.tree.map(lambda a: a[0], out.state.params)

    def update_ratios(w, w_prev):  # per layer, in float64
        return np.concatenate(
            [
                np.linalg.norm((np.asarray(a, np.float64) - np.asarray(b, np.float64)).reshape(len(a), -1), axis=1)
                / np.linalg.norm(np.asarray(b, np.float64).reshape(len(b), -1), axis=1)
                for a, b in zip(effective_weights(w), effective_weights(w_prev))
            ]
        )

    w0, w10, w20, w25 = (jax.tree.map(lambda a: a[0], start.params), weights_at(10), weights_at(20), weights_at(25))
    np.testing.assert_allclose(rec.stats[10]["update_ratio"], update_ratios(w10, w0), rtol=1e-4)
    np.testing.assert_allclose(rec.stats[20]["update_ratio"], update_ratios(w20, w10), rtol=1e-4)
    np.testing.assert_allclose(rec.stats[25]["update_ratio"], update_ratios(w25, w20), rtol=1e-4)
    assert not np.allclose(rec.stats[25]["update_ratio"], update_ratios(w25, w10), rtol=1e-2)


@pytest.mark.slow
def test_warmup_cosine_trains_alone_and_in_a_group_batched_by_lr():
    """The learning rate reaches the schedule as a traced value (per run, so groups can differ in
    it): warm-up + cosine must accept that, alone and batched."""
    from initlab.train.loop import train_group

    cfgs = [tiny(train={"steps": 20, "lr": lr, "schedule": "warmup_cosine", "warmup_steps": 5}) for lr in (0.003, 0.01)]
    alone, _ = fit(cfgs[0])
    grouped = train_group(cfgs, load_dataset(cfgs[0].data), [Recorder(), Recorder()])
    assert alone.status == "completed" and [r.status for r in grouped] == ["completed", "completed"]
    assert grouped[0].final["train_loss"] == pytest.approx(alone.final["train_loss"], rel=1e-4)
    assert grouped[0].final["train_loss"] != grouped[1].final["train_loss"]


def fns_loss(cfg):
    from initlab.nn.optimizers import make_loss

    return make_loss(cfg.train.loss, cfg.train.target_scale)


@pytest.mark.parametrize(
    "model, rtol", [({}, 0), ({"dropout": 0.2, "activation": "tanh"}, 0), ({"norm": "batchnorm"}, 1e-6)]
)
@pytest.mark.slow
def test_logging_on_the_training_batch_does_not_change_training(model, rtol):
    """A logged step updates as an unlogged one: logging every step on the training batch trains
    the same weights as logging every 10 on the probe, bit for bit (batch norm: XLA fuses its
    reductions with the statistics' and the last bit may differ)."""
    every_step, rec_a = fit(
        tiny(model=model, train={"steps": 30}, log={"every": 1, "stats_on": "train_batch"}), StatsRecorder()
    )
    probe, rec_b = fit(tiny(model=model, train={"steps": 30}, log={"every": 10}), StatsRecorder())
    assert len(rec_a.stats) == 31
    # (train_loss is averaged since the previous log, so it differs)
    assert every_step.final["test_loss"] == pytest.approx(probe.final["test_loss"], rel=rtol, abs=0)
    np.testing.assert_allclose(rec_a.stats[30]["w_norm"], rec_b.stats[30]["w_norm"], rtol=rtol, atol=0)


@pytest.mark.slow
def test_train_batch_statistics_see_the_dropout_masks():
    """Hooks in a training step see dropped units: standard dropout (rate p) on tanh units of mean
    ~0 scales the kept ones by 1/(1-p), inflating the first layer's act_var about 1/(1-p) times
    while its input z is untouched; the probe pass runs without dropout."""
    cfg = dict(model={"activation": "tanh", "dropout": 0.5, "width": 256}, train={"steps": 1, "batch_size": 128})
    _, on_batch = fit(tiny(**cfg, log={"stats_on": "train_batch"}), StatsRecorder())
    _, on_probe = fit(tiny(**cfg, log={"stats_on": "probe"}), StatsRecorder())
    ratio = on_batch.stats[0]["act_var"][0] / on_probe.stats[0]["act_var"][0]
    assert ratio == pytest.approx(2.0, rel=0.15)
    assert on_batch.stats[0]["pre_var"][0] / on_probe.stats[0]["pre_var"][0] == pytest.approx(1.0, rel=0.15)


@pytest.mark.slow
@STATS_ON
def test_non_finite_statistics_stop_the_run_where_they_show(stats_on):
    """Activations that overflow float32 at initialization (orthogonal gain 100 over 12 layers,
    z ~ 100¹²) leave the loss finite but the statistics not: the run stops at step 0, untrained."""
    result, rec = fit(
        tiny(
            model={"depth": 12, "init": "orthogonal", "init_args": {"gain": 100.0}},
            train={"steps": 40, "optimizer": "adam"},
            log={"every": 10, "stats_on": stats_on},
        )
    )
    assert result.status == "diverged" and result.steps == 0
    assert result.divergence["step"] == 0 and "statistics" in result.divergence["reason"]
    assert result.divergence["direction"] == "forward"
    assert rec.layer_steps == [0] and [r["step"] for r in rec.rows] == [0]


@pytest.mark.slow
@STATS_ON
def test_statistics_going_non_finite_later_stop_the_run_at_that_log(stats_on, monkeypatch):
    """Statistics at step 20 that the chunk's check (on the device) and the host both see as
    non-finite end the run at step 20 in both modes: the steps after it in that chunk are undone.
    Step 20's table is recognised by its first-layer weight norm, taken from an unpatched run."""
    import jax.numpy as jnp

    import initlab.train.book as T
    from initlab.stats.statistics import Layout

    cfg = tiny(train={"steps": 40}, log={"every": 10, "stats_on": stats_on})
    _, ref = fit(cfg, StatsRecorder())
    marker = float(ref.stats[20]["w_norm"][0])
    tol = min(abs(float(ref.stats[s]["w_norm"][0]) - marker) for s in (0, 10, 30, 40)) / 2
    w_norm = Layout(cfg.log.stats).slices["w_norm"].start
    device_check, host_check = Layout.signal_finite, T.first_nonfinite_layer
    monkeypatch.setattr(
        Layout,
        "signal_finite",
        lambda self, table: device_check(self, table) & (jnp.abs(table[..., w_norm, 0] - marker) > tol),
    )
    monkeypatch.setattr(
        T,
        "first_nonfinite_layer",
        lambda stats, *directions: (
            (2, "backward") if abs(float(stats["w_norm"][0]) - marker) <= tol else host_check(stats, *directions)
        ),
    )
    result, rec = fit(cfg)
    assert result.status == "diverged" and result.steps == 20 and result.divergence["step"] == 20
    assert "statistics" in result.divergence["reason"]
    assert rec.layer_steps == [0, 10, 20] and [r["step"] for r in rec.rows] == [0, 10, 16, 20]


@pytest.mark.slow
@STATS_ON
def test_a_blow_up_on_a_logged_step_is_recorded_once(stats_on):
    result, rec = fit(
        tiny(
            model={"depth": 6},
            train={"optimizer": "sgd", "lr": 1e6, "steps": 50},
            log={"every": 1, "stats_on": stats_on},
        )
    )
    assert result.status == "diverged"
    steps = [r["step"] for r in rec.rows]
    assert rec.layer_steps == sorted(set(rec.layer_steps)) and steps == sorted(set(steps))
    assert rec.layer_steps[-1] == result.divergence["step"] == result.steps


runner = CliRunner()


def test_metrics_wall_time_is_when_each_step_ran(tmp_path):
    import pandas as pd

    data = {**small_run("wall"), "train": {"steps": 40, "batch_size": 32}, "log": {"every": 5, "out": str(tmp_path)}}
    config = tmp_path / "wall.yaml"
    config.write_text(yaml.safe_dump(data))
    assert runner.invoke(app, ["run", str(config), "-q"]).exit_code == 0
    m = pd.read_csv(run_dir_for(C.from_dict(data)) / "metrics.csv")
    logged = m[m.step > 0].drop_duplicates("step").wall_time.to_numpy()
    assert (logged[1:] > logged[:-1]).all()  # logs inside one chunk no longer share the chunk's end time


def test_the_progress_bar_hears_the_last_evaluation(tmp_path):
    from initlab.data.datasets import load_dataset
    from initlab.runfolder.storage import RunRecorder
    from initlab.train.loop import train

    heard = []
    cfg = C.from_dict({**small_run("bar"), "train": {"steps": 20, "batch_size": 32}})
    result = train(cfg, load_dataset(cfg.data, None, progress=False), RunRecorder(lambda s, t, i: heard.append((s, i))))
    last_acc = [i["test_acc"] for s, i in heard if "test_acc" in i][-1]
    assert last_acc == result.final["test_acc"] and heard[-1][0] == 20


@pytest.mark.slow
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
