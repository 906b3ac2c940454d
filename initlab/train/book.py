"""A run's host-side record through training (``RunBook``): whether it still trains, its
statistics and metrics rows, the training losses since the last row, its divergence, and what the
run produced (``initlab.train.loop.TrainResult``); and the ``Sink`` it reports to. The host loop
(``initlab.train.loop``) hands each book its chunks and evaluations."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from initlab.nn.initializers import Trace
from initlab.stats.statistics import Layout, first_nonfinite_layer
from initlab.train.schedule import ChunkPlan, Schedule

if TYPE_CHECKING:  # the host loop makes each run's result (its module is in checkpoints' pickles)
    from initlab.train.loop import TrainResult


class Sink(Protocol):
    """Where a training run reports: storage and display implement these."""

    def metrics(self, row: dict[str, Any]) -> None: ...
    def layers(self, step: int, stats: dict[str, np.ndarray]) -> None: ...
    def checkpoint(self) -> None: ...
    def progress(self, step: int, total: int, info: dict[str, float]) -> None: ...
    def init_trace(self, trace: Trace) -> None: ...
    def jacobian(self, step: int, singular_values: np.ndarray) -> None: ...
    def parameters(self, step: int, arrays: dict[str, np.ndarray]) -> None: ...
    def snapshot(self) -> dict[str, Any]: ...  # what it holds, for a checkpoint (plain data)
    def restore(self, snapshot: dict[str, Any]) -> None: ...  # back to a checkpoint's ``snapshot()``


def divergence_record(step: int, cause: str, stats: dict[str, np.ndarray]) -> dict[str, Any]:
    """The divergence record: step, first non-finite layer and direction, and a readable reason."""
    where = first_nonfinite_layer(stats)
    layer, direction = where if where else (None, None)
    detail = (
        f"; {'activations' if direction == 'forward' else 'gradients'} first non-finite at layer {layer}"
        if where
        else ""
    )
    return {"step": step, "layer": layer, "direction": direction, "reason": cause + detail}


class RunBook:
    """One run's host-side record through training: whether it is still training, the last steps
    with a statistics row and a metrics row, the training losses since that row, and its result."""

    def __init__(self, sink: Sink, result: TrainResult, layout: Layout, schedule: Schedule, start: float):
        self.sink, self.result, self.layout, self.schedule, self.start = sink, result, layout, schedule, start
        self.alive = True
        self.logged_at = self.row_at = -1
        self.loss_sum, self.loss_count = 0.0, 0
        self.skipped = 0  # loss scaling: steps skipped since the last metrics row

    BOOKED = ("alive", "logged_at", "row_at", "loss_sum", "loss_count", "skipped", "result")

    def snapshot(self) -> dict[str, Any]:
        """The book's state (and its result so far) as plain data, for a checkpoint."""
        return {name: getattr(self, name) for name in self.BOOKED}

    def restore(self, snapshot: dict[str, Any], elapsed: float) -> None:
        """Back to ``snapshot()``; ``wall_time`` goes on from ``elapsed`` seconds."""
        for name in self.BOOKED:
            setattr(self, name, snapshot[name])
        self.start = time.perf_counter() - elapsed

    def add_scales(self, scales: np.ndarray | None) -> None:
        """Loss scaling: steps' (2, k) scales after each step and skipped flags, in order."""
        if scales is None or scales.shape[1] == 0:
            return
        skipped = int(scales[1].sum())
        self.skipped += skipped
        self.result.loss_scale["skipped_steps"] += skipped
        self.result.loss_scale["final_scale"] = float(scales[0, -1])

    def add_losses(self, losses: np.ndarray) -> None:
        """Count the training losses of steps taken (since the last metrics row)."""
        self.loss_sum += losses.sum(dtype=np.float64)
        self.loss_count += len(losses)

    def emit(self, at: int, table: np.ndarray) -> None:
        """Send the statistics table (rows, depth + 1) at step ``at`` to the sink; a run whose
        statistics are not finite is marked diverged there and stops."""
        res = self.result
        res.last_stats = self.layout.split(table)
        if at == 0:  # nothing to compare the weights with yet
            for name in self.layout.reading("update"):
                res.last_stats[name] = np.full_like(res.last_stats[name], np.nan)
            res.init_stats = res.last_stats
        self.sink.layers(at, res.last_stats)
        self.logged_at = at
        if res.status != "diverged" and first_nonfinite_layer(res.last_stats, self.layout.signal) is not None:
            self.diverge(at, "non-finite per-layer statistics", record=res.divergence is None)

    def diverge(self, at: int, cause: str, record: bool = True) -> None:
        """The run ends at ``at``; with ``record``, ``cause`` (and where its last statistics
        show the blow-up) is its divergence record."""
        res = self.result
        res.status = "diverged"
        if record:
            res.divergence = divergence_record(at, cause, res.last_stats)
        self.alive = False

    def spectrum(self, step: int, singular_values: np.ndarray, seconds: float) -> None:
        """The Jacobian's singular values (examples, k) at ``step``, taken in ``seconds``."""
        self.result.spectra[step] = singular_values
        self.result.jacobian_time_s += seconds
        self.sink.jacobian(step, singular_values)

    def metrics_row(
        self, step: int, test_loss: float = float("nan"), test_acc: float = float("nan"), at_time: float | None = None
    ) -> None:
        """The metrics row at ``step``: the mean training loss since the previous row; its
        ``wall_time`` is when the step ran (``at_time``, a perf_counter reading), by default now."""
        train_loss = float(self.loss_sum / self.loss_count) if self.loss_count else float("nan")
        self.loss_sum, self.loss_count = 0.0, 0
        self.row_at = step
        self.result.final["train_loss"] = train_loss
        row = {
            "step": step,
            "epoch": step / self.schedule.steps_per_epoch,
            "train_loss": train_loss,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "wall_time": (time.perf_counter() if at_time is None else at_time) - self.start,
        }
        if self.result.loss_scale is not None:  # the scale now in effect, and the steps skipped since the last row
            row.update(loss_scale=self.result.loss_scale["final_scale"], skipped_steps=self.skipped)
            self.skipped = 0
        self.sink.metrics(row)

    def evaluated(self, step: int, test_loss: float, test_acc: float) -> None:
        """The test set's loss and accuracy at ``step``: its metrics row and the test curve."""
        res = self.result
        self.metrics_row(step, test_loss, test_acc)
        res.final.update(test_loss=test_loss, test_acc=test_acc)
        res.history["step"].append(step)
        res.history["test_loss"].append(test_loss)
        res.history["test_acc"].append(test_acc)
        if step == 0 or test_acc > res.best["test_acc"]:
            res.best = {"test_acc": test_acc, "step": step}
        if step and step == self.schedule.total_steps:  # the last evaluation is the result: the bar shows it
            self.sink.progress(step, step, {"test_acc": test_acc})

    def take_chunk(
        self,
        plan: ChunkPlan,
        losses: np.ndarray,
        done: int,
        tables: np.ndarray,
        scales: np.ndarray | None = None,
        span: tuple[float, float] | None = None,
    ) -> int:
        """Record a chunk: the statistics of each logged step it reached (a logged step inside the
        chunk gets its metrics row here), its losses and, with loss scaling, its steps' scales.
        ``span``: the chunk's start and end (perf_counter); the device reports no per-step times,
        so a logged step inside the chunk is timed by its place in the chunk (steps of one chunk
        take equal time). Returns the step the run is now at."""
        stop = plan.start + done  # plan.stop, or the step it blew up at
        cursor = 0  # losses of the chunk's steps [start, start + cursor) are counted
        for slot, at in enumerate(plan.logs):
            if at > stop:
                break
            if plan.start < at < plan.stop:
                self.add_losses(losses[cursor : at - plan.start])
                self.add_scales(None if scales is None else scales[:, cursor : at - plan.start])
                cursor = at - plan.start
                when = (
                    None
                    if span is None
                    else span[0] + (span[1] - span[0]) * (at - plan.start) / (plan.stop - plan.start)
                )
                self.metrics_row(at, at_time=when)
            self.emit(at, tables[slot])
        self.add_losses(losses[cursor:done])
        self.add_scales(None if scales is None else scales[:, cursor:done])
        self.result.steps = stop
        chunk_loss = float(np.mean(losses[:done])) if done else float("nan")
        self.sink.progress(
            stop,
            self.schedule.total_steps,
            {
                "loss": chunk_loss,
                "test_acc": self.result.final["test_acc"],
                "steps_per_s": stop / max(self.result.train_time_s, 1e-9),
            },
        )
        return stop
