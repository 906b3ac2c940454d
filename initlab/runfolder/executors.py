"""Sweep executors: where a sweep's groups train (``execute_group`` tasks), chosen by ``--executor``:
this process one group after another, a process pool on this machine (whose workers end with the
sweep), or a Ray cluster. ``make_executor`` is the registry; ``check_executor`` rejects a bad
``--executor``/``--address`` before anything is written. Re-exported by ``initlab.runfolder.sweeps``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor

from initlab.errors import ConfigError, InitlabError


class Executor:
    """Runs ``execute_group`` tasks: inline, in a process pool, or on a Ray cluster."""

    def submit(self, cfg_dicts: list[dict], data_dir: str | None) -> Future: ...
    def shutdown(self, abort: bool = False) -> None: ...  # abort: stop work in flight (interrupt)


class InlineExecutor(Executor):
    """This process, one group after another; ``on_step(step, total)`` hears the group's training
    steps (for a progress display: the only executor whose steps this process can see)."""

    def __init__(self, on_step: Callable[[int, int], None] | None = None):
        self.on_step = on_step

    def submit(self, cfg_dicts, data_dir):
        from initlab.runfolder.experiment import execute_group

        fut: Future = Future()
        try:
            fut.set_result(execute_group(cfg_dicts, data_dir, on_step=self.on_step))
        except BaseException as e:  # noqa: BLE001 - delivered to the caller through the future
            fut.set_exception(e)
        return fut

    def shutdown(self, abort=False):
        pass


def _die_with_parent(parent: int, interval_s: float = 0.5) -> None:
    """A pool worker's initializer: a daemon thread that ends this process as soon as its parent
    is gone (kill -9 or SIGTERM of the sweep), so no orphaned worker holds its memory. Polling
    ``getppid`` rather than ``prctl(PR_SET_PDEATHSIG)``: that signal fires when the parent *thread*
    that spawned the worker ends, and the pool spawns from more than one thread."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="initlab-die-with-parent", daemon=True).start()


class PoolExecutor(Executor):
    """``workers`` processes on this machine (spawned: JAX does not survive a fork)."""

    def __init__(self, workers: int):
        import multiprocessing

        self.workers, self.context = workers, multiprocessing.get_context("spawn")
        self.pool = self._pool()

    def _pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers, mp_context=self.context, initializer=_die_with_parent, initargs=(os.getpid(),)
        )

    def submit(self, cfg_dicts, data_dir):
        from concurrent.futures.process import BrokenProcessPool

        from initlab.runfolder.experiment import execute_group

        try:
            return self.pool.submit(execute_group, cfg_dicts, data_dir)
        except BrokenProcessPool:  # a worker died (its groups are recorded as failed): start afresh
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._pool()
            return self.pool.submit(execute_group, cfg_dicts, data_dir)

    def shutdown(self, abort=False):
        if abort:  # an interrupt: the groups in flight are lost anyway, do not wait for them
            for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
                proc.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor(Executor):
    """Groups as tasks on a Ray cluster (each group one task, the same ``execute_group``); results
    come back to this process, which writes the run folders."""

    def __init__(self, address: str | None, workers: int):
        try:
            import ray
        except ImportError:
            raise InitlabError(
                '--executor ray needs Ray: pip install -e ".[ray]" (or pip install "ray>=2.9")'
            ) from None
        from initlab.runfolder.experiment import execute_group

        self.ray = ray
        if not ray.is_initialized():
            try:
                ray.init(
                    address=address,
                    ignore_reinit_error=True,
                    log_to_driver=False,
                    **({} if address else {"num_cpus": workers}),
                )
            except Exception as e:  # noqa: BLE001 - connection problems become one line
                where = address or "a new local instance"
                raise InitlabError(f"cannot connect to the Ray cluster at {where}: {e}") from None
        self.task = ray.remote(execute_group)

    def submit(self, cfg_dicts, data_dir):
        return self.task.remote(cfg_dicts, data_dir).future()

    def shutdown(self, abort=False):
        pass


def check_executor(kind: str, address: str | None) -> None:
    """Reject a bad --executor/--address before anything is written."""
    if kind not in ("local", "ray"):
        raise ConfigError(f"--executor: {kind!r} is not one of local, ray")
    if address and kind != "ray":
        raise ConfigError("--address: only meaningful with --executor ray")


def make_executor(
    kind: str, workers: int, address: str | None, on_step: Callable[[int, int], None] | None = None
) -> Executor:
    """The executor registry: ``local`` (inline for one worker, a process pool for more) or ``ray``."""
    check_executor(kind, address)
    if kind == "ray":
        return RayExecutor(address, workers)
    return InlineExecutor(on_step) if workers <= 1 else PoolExecutor(workers)
