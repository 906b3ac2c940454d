"""The chunk planner: plain Python step arithmetic, testable (and importable) without JAX."""

import subprocess
import sys

from initlab.train.schedule import LOG_BUFFER, PROGRESS_CHUNK, ChunkPlan, Schedule


def test_the_planner_imports_no_jax():
    code = "import sys, initlab.train.schedule; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_chunks_cover_the_run_once_with_their_logs_and_evaluations():
    s = Schedule(total_steps=45, steps_per_epoch=20, log_every=10)
    plans = list(s.chunks())
    assert [(p.start, p.stop) for p in plans] == [(0, 20), (20, 40), (40, 45)]
    assert [p.logs for p in plans] == [(0, 10), (20, 30), (40, 45)]  # the last step is measured at the end
    assert [p.measure_end for p in plans] == [False, False, True]
    assert all(p.evaluate_at_stop for p in plans)  # epoch ends and the last step
    assert [p.log_at_stop for p in plans] == [True, True, True]
    assert plans[0] == ChunkPlan(0, 20, False, (0, 10), True, True) and plans[0].n_steps == 20


def test_a_chunk_ends_at_a_progress_tick_or_a_full_buffer_without_an_evaluation():
    long = list(Schedule(total_steps=500, steps_per_epoch=1000, log_every=7).chunks())
    assert all(p.n_steps <= PROGRESS_CHUNK for p in long)
    assert [p.evaluate_at_stop for p in long] == [False] * (len(long) - 1) + [True]
    every_step = list(Schedule(total_steps=100, steps_per_epoch=1000, log_every=1).chunks())
    assert [p.stop for p in every_step] == [LOG_BUFFER, 2 * LOG_BUFFER, 3 * LOG_BUFFER, 100]
    assert all(len(p.logs) <= LOG_BUFFER + 1 for p in every_step)
    assert all(p.log_at_stop for p in every_step)  # every step is a logged one


def test_a_run_of_no_steps_has_no_chunks():
    assert list(Schedule(total_steps=0, steps_per_epoch=10, log_every=5).chunks()) == []
