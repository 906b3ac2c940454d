"""Step arithmetic of a run, and the plan of its training chunks: plain Python, no JAX.

Training runs on the device in *chunks* of steps; the host returns to Python only between chunks.
A chunk ends at an epoch end (the test set is evaluated), at the last step, after
``PROGRESS_CHUNK`` steps (so the progress display stays live) or when its buffer would hold more
than ``LOG_BUFFER`` statistics tables. ``Schedule.chunks`` lists them with what each one measures.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from initlab.errors import ConfigError

# Longest stretch of steps between returns to Python, so the progress display stays live.
PROGRESS_CHUNK = 200
# Most statistics tables a chunk keeps on the device before it returns them (bounds its memory).
LOG_BUFFER = 32


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk: steps ``start`` .. ``stop - 1`` on the device, then the host's work at ``stop``."""

    start: int
    stop: int
    measure_end: bool  # the chunk also measures the state it ends in (the run's last step)
    logs: tuple[int, ...]  # the steps whose statistics the chunk's buffer holds, in slot order
    log_at_stop: bool  # ``stop`` is a logged step: it gets a metrics row
    evaluate_at_stop: bool  # ``stop`` is an epoch end or the last step: the test set is evaluated

    @property
    def n_steps(self) -> int:
        """The steps the chunk trains."""
        return self.stop - self.start


@dataclass(frozen=True)
class Schedule:
    """Step arithmetic of a run: its length, epochs and logging interval."""

    total_steps: int
    steps_per_epoch: int
    log_every: int
    checkpoint_every: int = 0  # log.checkpoint_every: its multiples are stops too (0: none)

    def next_stop(self, step: int) -> int:
        """The next step at which the host must look: an epoch end, the end, a tick, or the step
        after which a chunk from ``step`` would hold more than ``LOG_BUFFER`` statistics tables."""
        candidates = (
            (step // self.steps_per_epoch + 1) * self.steps_per_epoch,
            self.total_steps,
            step + PROGRESS_CHUNK,
            self.first_log(step) + LOG_BUFFER * self.log_every,
        )
        if self.checkpoint_every:
            candidates += ((step // self.checkpoint_every + 1) * self.checkpoint_every,)
        return min(candidates)

    def first_log(self, step: int) -> int:
        """The first multiple of ``log_every`` at or after ``step``."""
        return -(-step // self.log_every) * self.log_every

    def logs_between(self, start: int, stop: int) -> list[int]:
        """The multiples of ``log_every`` in [start, stop): the logged steps a chunk from
        ``start`` to ``stop`` measures in order."""
        return list(range(self.first_log(start), stop, self.log_every))

    def is_log(self, step: int) -> bool:
        """``step`` is a logged one: a multiple of ``log_every``, or the last."""
        return step % self.log_every == 0 or step == self.total_steps

    def is_checkpoint(self, step: int) -> bool:
        """``step`` (a chunk's stop before the end) is one at which the state is checkpointed."""
        return bool(self.checkpoint_every) and step % self.checkpoint_every == 0 and 0 < step < self.total_steps

    def is_eval(self, step: int) -> bool:
        """``step`` is an evaluated one: an epoch end, or the last."""
        return step % self.steps_per_epoch == 0 or step == self.total_steps

    def plan(self, start: int) -> ChunkPlan:
        """The chunk that starts at ``start`` (< total_steps)."""
        stop = self.next_stop(start)
        measure_end = stop == self.total_steps  # (the last step is always logged)
        logs = tuple(self.logs_between(start, stop)) + ((stop,) if measure_end else ())
        return ChunkPlan(start, stop, measure_end, logs, self.is_log(stop), self.is_eval(stop))

    def chunks(self, start: int = 0) -> Iterator[ChunkPlan]:
        """Every chunk of the run from step ``start`` (0, or a step a chunk stopped at: where a
        resumed run continues), in order (none for a run of no steps)."""
        step = start
        while step < self.total_steps:
            chunk = self.plan(step)
            yield chunk
            step = chunk.stop


def make_schedule(cfg, n_train: int) -> Schedule:
    """A run config's (``initlab.config.RunConfig``) schedule on ``n_train`` training examples:
    steps per epoch (the last partial batch is dropped) and the total number of steps
    (``train.steps``, else ``train.epochs`` passes)."""
    b = cfg.train.batch_size
    if b > n_train:
        raise ConfigError(f"train.batch_size: {b} is more than the {n_train} training examples")
    spe = n_train // b
    total = cfg.train.steps if cfg.train.steps is not None else cfg.train.epochs * spe
    return Schedule(total, spe, cfg.log.every, cfg.log.checkpoint_every)
