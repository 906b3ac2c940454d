"""The host loop: a group's training from its configs to its results, chunk by chunk.

A group is one or more runs that share every shape and static choice and differ only in seed,
initializer, init arguments or learning rate (``initlab.train.group.batch_key``). Their parameters
are initialized one by one, stacked, and trained together as one ``jax.vmap``-ed computation: a
grid of inits × seeds for one architecture compiles once and trains in one pass. A single
`initlab run` is a group of one, through the same code, so a run trained alone and inside a sweep
give the same numbers.

The parts, in the order a run meets them:

- ``initlab.train.schedule`` plans the chunks (plain Python): steps between returns to Python, the
  logged steps each one measures, evaluations.
- ``initlab.train.program`` is one run's training step, ``initlab.train.chunk`` strings
  ``PROGRESS_CHUNK`` of them into one device loop with the statistics of its logged steps under a
  step policy (``FAST``: unchecked, one check at the chunk's end; ``GUARDED``: a run frozen at its
  first non-finite step), and ``initlab.train.device`` compiles them for the group.
- ``ChunkRunner`` (here) runs the fast chunk and, when a run went non-finite in it, replays the
  chunk guarded from the same start (compiled on first need); runs that passed keep the fast result.
- ``initlab.train.book.RunBook`` keeps one run's host-side record (alive, rows written, losses since
  the last metrics row, divergence) and talks to its sink; ``initlab.train.checkpoint`` puts a
  group's state into a checkpoint and takes it back out.
- ``train_group`` (here) ties them together: ``GroupTraining`` holds a group between chunks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initlab.config import RunConfig
from initlab.data.datasets import Dataset
from initlab.errors import InterruptGate
from initlab.nn.formats import context
from initlab.nn.model import ModelSpec, Params
from initlab.nn.params import named_arrays
from initlab.train import checkpoint, memory
from initlab.train.book import RunBook, Sink
from initlab.train.build import model_spec
from initlab.train.checkpoint import Checkpointer
from initlab.train.chunk import ChunkIn, ChunkOut
from initlab.train.device import TrainFns, init_state, make_train_fns
from initlab.train.group import BATCHABLE, batch_key, pick, stack
from initlab.train.program import TrainState, make_program
from initlab.train.schedule import ChunkPlan, Schedule, make_schedule


@dataclass
class TrainResult:
    """What a finished (or diverged) training run produced, beyond what it sent to its sink."""

    status: str  # completed | diverged
    steps: int
    total_steps: int
    steps_per_epoch: int
    compile_time_s: float
    train_time_s: float  # training steps and per-layer statistics, after compilation
    wall_time_s: float
    group_size: int = 1
    init_time_s: float = 0.0  # drawing (and, for LSUV or pre-training, fitting) the initial parameters
    init_trace_file: str | None = None  # the initializer's trace in the run folder, if it keeps one
    input_dim: int = 0
    probe_q0: float = float("nan")  # mean squared input of the probe batch: mean-field theory's q⁰
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    divergence: dict[str, Any] | None = None
    history: dict[str, list[float]] = field(default_factory=lambda: {"step": [], "test_acc": [], "test_loss": []})
    init_stats: dict[str, np.ndarray] = field(default_factory=dict)
    last_stats: dict[str, np.ndarray] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    spectra: dict[int, np.ndarray] = field(default_factory=dict)  # step -> Jacobian singular values (examples, k)
    jacobian_time_s: float = 0.0  # taking the spectra (compilation included), not counted as training time
    loss_scale: dict[str, Any] | None = None  # with loss scaling: skipped steps and the last scale


def device_info() -> dict[str, Any]:
    """The device JAX trains on (platform, kind, count)."""
    d = jax.devices()[0]
    return {"platform": d.platform, "kind": d.device_kind, "count": jax.device_count()}


def save_parameters(cfgs: Sequence[RunConfig], books: Sequence[RunBook], state: TrainState, when: str) -> None:
    """Send each run that asks for it in ``log.save_params`` its parameters and normalization state
    at ``when`` (``init``: step 0; ``end``: its last step) as named host arrays
    (``params.named_arrays``)."""
    wanted = [r for r, c in enumerate(cfgs) if when in c.log.save_params]
    if not wanted:
        return
    params, norm_state = jax.device_get((state.params, state.norm_state))
    for r in wanted:
        run = jax.tree.map(lambda a: np.asarray(a[r]), (params, norm_state))
        books[r].sink.parameters(
            0 if when == "init" else books[r].result.steps,
            {**named_arrays(run[0], "params"), **named_arrays(run[1], "state")},
        )


# ChunkOut's fields that come to the host after each chunk, in one transfer.
HOST_FIELDS = ("ok", "losses", "done", "tables", "scales")


def _host(out: ChunkOut) -> dict[str, Any]:
    """``out``'s host fields as numpy arrays (None stays None)."""
    values = jax.device_get([getattr(out, f) for f in HOST_FIELDS])
    return {f: None if v is None else np.asarray(v) for f, v in zip(HOST_FIELDS, values)}


class ChunkRunner:
    """Runs a group's chunks: the fast chunk, and where a live run failed its end check, a guarded
    replay of the same chunk (compiled on first need, its compile time counted as compile time,
    not training time). Runs that passed the fast check keep the fast result, so a run's numbers
    never depend on whether another run of its group blew up."""

    def __init__(self, fns: TrainFns, x: jax.Array, y: jax.Array, state: TrainState):
        self.fns, self.x, self.y = fns, x, y
        n_runs = len(state.lr)
        self.fast = fns.chunk.lower(
            self._inputs(state, state.params, 0, 1, np.ones(n_runs, bool), True), x, y
        ).compile()
        self.guarded = None
        self.compile_time_s = 0.0  # of the guarded replay, when it was needed

    @staticmethod
    def _inputs(state, prev_params, step0: int, n_steps: int, alive: np.ndarray, measure_end: bool) -> ChunkIn:
        return ChunkIn(state, prev_params, np.int32(step0), np.int32(n_steps), alive.copy(), np.bool_(measure_end))

    def measure(self, state: TrainState, prev_params: Params, at: int) -> np.ndarray:
        """The statistics tables (runs, rows, depth + 1) of ``state`` at step ``at``, without
        training: a chunk of no steps that measures its end (one transfer)."""
        out = self.fast(self._inputs(state, prev_params, at, 0, np.ones(len(state.lr), bool), True), self.x, self.y)
        return np.asarray(jax.device_get(out.tables))[:, 0]

    def run(self, state: TrainState, prev_params: Params, plan: ChunkPlan, alive: np.ndarray) -> ChunkOut:
        """The chunk ``plan`` from ``state``: device state, host (numpy) ok, losses, done and tables."""
        inp = self._inputs(state, prev_params, plan.start, plan.n_steps, alive, plan.measure_end)
        out = self.fast(inp, self.x, self.y)
        out = out._replace(**_host(out))  # one transfer
        if not (alive & ~out.ok).any():
            return out
        if self.guarded is None:
            t_c = time.perf_counter()
            self.guarded = self.fns.guarded_chunk.lower(inp, self.x, self.y).compile()
            self.compile_time_s += time.perf_counter() - t_c
        replay = self.guarded(inp, self.x, self.y)
        host = _host(replay)
        ok = out.ok

        def per_run(a, b):
            return None if a is None else np.where(ok.reshape(-1, *(1,) * (a.ndim - 1)), a, b)

        return ChunkOut(
            pick(ok, out.state, replay.state),
            pick(ok, out.prev_params, replay.prev_params),
            ok | host["ok"],
            *(per_run(getattr(out, f), host[f]) for f in HOST_FIELDS[1:]),
        )


def _start_runs(
    cfgs: Sequence[RunConfig],
    sinks: Sequence[Sink],
    spec: ModelSpec,
    fns: TrainFns,
    schedule: Schedule,
    data: Dataset,
    x: jax.Array,
    start: float,
) -> tuple[TrainState, list[RunBook]]:
    """Each run's initial state, stacked over the group, and its book; initializers' traces go to
    the sinks."""
    probe_q0 = float(jnp.mean(jnp.square(x[: cfgs[0].data.probe_size])))
    states, books = [], []
    for c, sink in zip(cfgs, sinks):
        t_init = time.perf_counter()
        st, trace = init_state(c, spec, fns, x)
        result = TrainResult(
            "completed",
            0,
            schedule.total_steps,
            schedule.steps_per_epoch,
            0.0,
            0.0,
            0.0,
            group_size=len(cfgs),
            init_time_s=time.perf_counter() - t_init,
            init_trace_file=None if trace is None else trace.file,
            input_dim=data.input_dim,
            probe_q0=probe_q0,
            device=device_info(),
            loss_scale=None
            if st.loss_scale is None
            else {"skipped_steps": 0, "final_scale": float(st.loss_scale.scale)},
        )
        if trace is not None:
            sink.init_trace(trace)
        states.append(st)
        books.append(RunBook(sink, result, fns.layout, schedule, start))
    return stack(states), books


def memory_estimate(cfgs: Sequence[RunConfig], data: Dataset) -> memory.Estimate:
    """``initlab.train.memory.estimate`` for a batchable group, from its configs alone (nothing allocated),
    in the group's number format (so float64 parameters count 8 bytes, as they will in training)."""
    cfg = cfgs[0]
    with context(cfg.model.dtype):
        spec = model_spec(cfg.model, data.input_dim, data.num_classes)
        program = make_program(cfg, spec, make_schedule(cfg, len(data.y_train)), len(data.y_train))
        return memory.estimate(cfgs, spec, program.optimizer, data)


def train(cfg: RunConfig, data: Dataset, sink: Sink, checkpointer: Checkpointer | None = None) -> TrainResult:
    """Train one configuration (a group of one); see ``train_group``."""
    return train_group([cfg], data, [sink], checkpointer)[0]


def train_group(
    cfgs: Sequence[RunConfig], data: Dataset, sinks: Sequence[Sink], checkpointer: Checkpointer | None = None
) -> list[TrainResult]:
    """``_train_group`` in the group's number format (float64 runs switch JAX's x64 mode on for
    their own training only)."""
    with context(cfgs[0].model.dtype):
        return _train_group(cfgs, data, sinks, checkpointer)


@dataclass
class GroupTraining:
    """A group in training, as the host loop holds it between chunks: the device state at the last
    chunk stop (and the weights of the previous log), each run's book, the compiled programs, and
    the host work done at a chunk's stop."""

    cfgs: Sequence[RunConfig]
    books: list[RunBook]
    fns: TrainFns
    runner: ChunkRunner
    evaluate: Callable  # the compiled evaluation: (params, norm_state, x_test, y_test) -> (loss, accuracy)
    x: jax.Array  # the training set's inputs (the probe is its first examples)
    test: tuple[jax.Array, jax.Array]  # the test set's inputs and labels, on the device
    state: TrainState
    prev_params: Params  # weights at the previous log: the reference of update statistics

    def live(self) -> list[RunBook]:
        """The books of the runs still training."""
        return [b for b in self.books if b.alive]

    def measure(self, members: Sequence[int], at: int) -> None:
        """Statistics of ``members`` at ``at`` without training; their time counts as training's."""
        t_stats = time.perf_counter()
        tables = self.runner.measure(self.state, self.prev_params, at)
        for r in members:
            self.books[r].emit(at, tables[r])
        for r in members:
            self.books[r].result.train_time_s += time.perf_counter() - t_stats

    def evaluation(self, step: int, members: Sequence[RunBook]) -> None:
        """The test set's loss and accuracy at ``step``, into the books of ``members``."""
        loss, acc = (
            np.asarray(a, np.float64)
            for a in jax.device_get(self.evaluate(self.state.params, self.state.norm_state, *self.test))
        )
        for r, b in enumerate(self.books):
            if b in members:
                b.evaluated(step, float(loss[r]), float(acc[r]))

    def spectrum(self, at: Sequence[int]) -> None:
        """Each run's Jacobian spectrum on the first ``log.jacobian`` probe examples, at its step ``at[r]``."""
        if self.fns.jacobian is None:
            return
        t_j = time.perf_counter()
        sv = np.asarray(
            jax.device_get(
                self.fns.jacobian(self.state.params, self.state.norm_state, self.x[: self.cfgs[0].log.jacobian])
            )
        )
        seconds = time.perf_counter() - t_j
        for b, step, values in zip(self.books, at, sv):
            b.spectrum(step, values, seconds)

    def payload(self, at: int) -> dict[str, Any]:
        """The checkpoint of the group at its chunk stop ``at`` (``initlab.train.checkpoint.payload``)."""
        return checkpoint.payload(
            self.cfgs, self.books, self.state, self.prev_params, at, time.perf_counter() - self.books[0].start
        )

    def take(self, plan: ChunkPlan, out: ChunkOut, members: Sequence[int], t1: float, replay_compile: float) -> None:
        """The chunk ``plan``, run from ``t1`` (``replay_compile`` of it compiling a guarded replay),
        into the group: its device state, and each member's book; a run that went non-finite ends
        at the step it blew up at, with the statistics of its last finite parameters."""
        self.state, self.prev_params = out.state, out.prev_params
        t2 = time.perf_counter()
        elapsed = t2 - t1 - replay_compile  # the replay's compilation is not training time
        for b in self.books:
            b.result.compile_time_s += replay_compile
        for r in members:
            b = self.books[r]
            b.result.train_time_s += elapsed
            stop = b.take_chunk(
                plan,
                out.losses[r],
                int(out.done[r]),
                out.tables[r],
                None if out.scales is None else out.scales[r],
                span=(t2 - elapsed, t2),
            )
            if not out.ok[r]:  # its statistics, loss or update went non-finite at `stop`: it ends there
                first = b.result.divergence is None  # (non-finite statistics have said so already)
                if first and b.logged_at != stop:
                    self.measure([r], stop)  # the statistics of its last finite parameters
                b.diverge(stop, "non-finite loss or gradient", record=first)
                if b.row_at != stop:
                    b.metrics_row(stop)

    def at_stop(self, plan: ChunkPlan) -> None:
        """The live runs' evaluation (and the sinks' checkpoint) or metrics row at the chunk's stop."""
        if plan.evaluate_at_stop:
            self.evaluation(plan.stop, self.live())
            for b in self.live():
                b.sink.checkpoint()
        elif plan.log_at_stop:
            for b in self.live():
                b.metrics_row(plan.stop)


def _start_group(
    cfgs: Sequence[RunConfig],
    data: Dataset,
    sinks: Sequence[Sink],
    schedule: Schedule,
    checkpointer: Checkpointer | None,
    start: float,
) -> tuple[GroupTraining, dict[str, Any] | None, int]:
    """The group ready to train: its programs compiled, its runs' states drawn or put back from
    the checkpoint; returns it, the checkpoint (None: a new start) and the step it resumes at."""
    cfg, n_train = cfgs[0], len(data.y_train)
    spec = model_spec(cfg.model, data.input_dim, data.num_classes)
    fns = make_train_fns(cfg, spec, schedule, n_train, len(cfgs))
    x, y = jax.device_put(data.x_train), jax.device_put(data.y_train)
    x_test, y_test = jax.device_put(data.x_test), jax.device_put(data.y_test)

    state, books = _start_runs(cfgs, sinks, spec, fns, schedule, data, x, start)
    prev_params = state.params  # weights at the previous log: the reference of update statistics
    payload = None if checkpointer is None else checkpointer.load()
    resumed_at = 0
    if payload is not None:
        state, prev_params, resumed_at = checkpoint.restore(payload, cfgs, books, state, prev_params)
    else:
        save_parameters(cfgs, books, state, "init")

    t0 = time.perf_counter()
    runner = ChunkRunner(fns, x, y, state)
    evaluate = fns.evaluate.lower(state.params, state.norm_state, x_test, y_test).compile()
    compile_time = time.perf_counter() - t0
    for b in books:
        b.result.compile_time_s = compile_time
    group = GroupTraining(cfgs, books, fns, runner, evaluate, x, (x_test, y_test), state, prev_params)
    return group, payload, resumed_at


def _train_chunks(
    group: GroupTraining,
    schedule: Schedule,
    checkpointer: Checkpointer | None,
    payload: dict[str, Any] | None,
    resumed_at: int,
) -> None:
    """The schedule's chunks from ``resumed_at`` until every run has ended or the last is done,
    with a checkpoint at each of the schedule's checkpoint stops and, on an interruption, of the
    last chunk stop whose host work is done."""
    books, runner = group.books, group.runner
    # The last chunk stop whose host work is done: a consistent point to checkpoint from. Ctrl-C or
    # SIGTERM (errors.Terminated) raises at once while the device trains a chunk and waits for the
    # chunk's books otherwise (errors.InterruptGate); either way the checkpoint is of `stopped_at`
    # (at step 0 too: step 0's evaluation is done, its statistics come with the first chunk).
    stopped_at, booking = resumed_at, False
    with InterruptGate() as gate:
        try:
            for plan in schedule.chunks(resumed_at):
                members = [r for r, b in enumerate(books) if b.alive]
                if not members:
                    break
                t1 = time.perf_counter()
                compiled_before = runner.compile_time_s
                with gate.opened():  # Ctrl-C here leaves the group's state as it was at `stopped_at`
                    out = runner.run(group.state, group.prev_params, plan, np.array([b.alive for b in books]))
                booking = True
                group.take(plan, out, members, t1, runner.compile_time_s - compiled_before)
                if not group.live():
                    break
                group.at_stop(plan)
                stopped_at, booking = plan.stop, False
                if checkpointer is not None and schedule.is_checkpoint(plan.stop):
                    checkpointer.save(group.payload(plan.stop))
                gate.check()
        except KeyboardInterrupt:
            if checkpointer is not None and not booking and (payload is None or stopped_at > resumed_at):
                checkpointer.save(group.payload(stopped_at))
            raise


def _train_group(
    cfgs: Sequence[RunConfig], data: Dataset, sinks: Sequence[Sink], checkpointer: Checkpointer | None = None
) -> list[TrainResult]:
    """Train runs that share a ``batch_key`` together on ``data``; each run reports to its sink.

    Per-layer statistics are taken at step 0, every ``log.every`` steps and at the last step, on
    the probe batch (the first ``data.probe_size`` training examples) or, with ``log.stats_on:
    train_batch``, inside the logged step's own forward/backward pass; a metrics row (training
    loss since the previous row) is written at each of those steps and at each epoch end, where
    the test set is evaluated (and at step 0). A run that diverges stops there and is reported as
    diverged; the rest of the group trains on.

    With a ``checkpointer``, the group starts from its last checkpoint if it has one (the chunks
    from there are those the uninterrupted run trains, so the files come out the same), saves one
    at every multiple of ``log.checkpoint_every`` and, when Ctrl-C or SIGTERM interrupts a chunk,
    one at the last chunk's stop before the interruption goes on up.
    """
    start = time.perf_counter()
    if len({batch_key(c) for c in cfgs}) != 1:
        raise ValueError("train_group needs runs that differ only in " + ", ".join(BATCHABLE))
    schedule = make_schedule(cfgs[0], len(data.y_train))
    group, payload, resumed_at = _start_group(cfgs, data, sinks, schedule, checkpointer, start)
    books = group.books
    if payload is None:
        group.spectrum([0] * len(books))
        if schedule.total_steps == 0:  # otherwise step 0's statistics come out of the first chunk
            group.measure(range(len(books)), 0)
        group.evaluation(0, books)
    _train_chunks(group, schedule, checkpointer, payload, resumed_at)
    if schedule.total_steps > 0:
        group.spectrum([b.result.steps for b in books])
    save_parameters(cfgs, books, group.state, "end")
    wall = time.perf_counter() - start
    for b in books:
        b.result.wall_time_s = wall
    return [b.result for b in books]
