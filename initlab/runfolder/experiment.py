"""One configuration end to end: data → model → training → run folder.

Whatever happens (a divergence, an exception, Ctrl-C), the run folder ends with a summary.json
whose status says so, beside the metrics and statistics gathered until then.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from initlab import __version__
from initlab.config import DataConfig, RunConfig, config_digest, config_hash, from_dict, to_dict
from initlab.data.datasets import Dataset, load_dataset
from initlab.errors import InitlabError, InterruptGate, check_interrupted, describe_os_error
from initlab.runfolder.checkpoint import FileCheckpointer, group_checkpoint_path
from initlab.runfolder.files import CHECKPOINT_FILE
from initlab.runfolder.storage import (
    RunRecord,
    RunRecorder,
    RunWriter,
    check_run_dir_free,
    check_same_config,
    claim_for_resume,
    claim_run_dir,
    histogram_edges,
    read_summary,
    run_dir_for,
    run_status,
    unlock,
)
from initlab.train import memory
from initlab.train.loop import TrainResult, memory_estimate, train, train_group
from initlab.train.schedule import make_schedule


def versions() -> dict[str, str]:
    """Versions of Python, initlab and the numerical stack."""
    out = {"python": platform.python_version(), "initlab": __version__}
    for pkg in ("jax", "jaxlib", "optax", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def signal_profile(stats: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Per-layer pre-activation, activation and gradient variances: what reports draw across depth."""
    return {k: [float(v) for v in stats[k]] for k in ("pre_var", "act_var", "grad_var")} if stats else {}


def failed_summary(cfg: RunConfig, reason: str, steps: int = 0) -> dict[str, Any]:
    """The summary.json of a run that raised instead of finishing."""
    return {
        "status": "failed",
        "name": cfg.name,
        "config_hash": config_hash(cfg),
        "config_digest": config_digest(cfg),
        "run_dir": str(run_dir_for(cfg)),
        "steps": steps,
        "error": reason,
        "versions": versions(),
        "config": to_dict(cfg),
    }


def summarize(cfg: RunConfig, path: Path, result: TrainResult) -> dict[str, Any]:
    """The summary.json of a finished (or diverged) run."""
    return {
        "status": result.status,
        "name": cfg.name,
        "config_hash": config_hash(cfg),
        "config_digest": config_digest(cfg),
        "run_dir": str(path),
        "steps": result.steps,
        "total_steps": result.total_steps,
        "epochs": result.steps / result.steps_per_epoch,
        "final": result.final,
        "best": result.best,
        "wall_time_s": result.wall_time_s,
        "compile_time_s": result.compile_time_s,
        "init_time_s": result.init_time_s,
        "init_trace_file": result.init_trace_file,
        "train_time_s": result.train_time_s,
        "steps_per_second": result.steps / result.train_time_s if result.train_time_s > 0 else None,
        "group_size": result.group_size,
        "device": result.device,
        "versions": versions(),
        "divergence": result.divergence,
        "error": None,
        "signal": {"init": signal_profile(result.init_stats), "final": signal_profile(result.last_stats)},
        "history": result.history,
        "theory": theory_prediction(cfg, result),
        "jacobian": jacobian_summary(cfg, result),
        "loss_scale": result.loss_scale,
        "config": to_dict(cfg),
    }


def jacobian_summary(cfg: RunConfig, result: TrainResult) -> dict[str, Any]:
    """The input-output Jacobian's singular values at step 0 (``init``) and at the end (``end``)
    on ``log.jacobian`` probe examples (``initlab.stats.spectrum.summarize``), or why there are none."""
    from initlab.stats.spectrum import summarize as spectrum_summary

    if cfg.log.jacobian == 0:
        return {"applies": False, "reason": "log.jacobian: 0"}
    if not result.spectra:
        return {
            "applies": False,
            "reason": f"{cfg.model.norm} normalizes each unit by batch statistics, so one "
            "example's Jacobian is not defined",
        }
    steps = sorted(result.spectra)
    out = {
        "applies": True,
        "examples": cfg.log.jacobian,
        "time_s": result.jacobian_time_s,
        "init": spectrum_summary(result.spectra[steps[0]], cfg.model.width, result.input_dim),
    }
    if len(steps) > 1:
        out["end"] = {
            "step": steps[-1],
            **spectrum_summary(result.spectra[steps[-1]], cfg.model.width, result.input_dim),
        }
    return out


def theory_prediction(cfg: RunConfig, result: TrainResult) -> dict[str, Any]:
    """Mean-field predictions at initialization for this run (Poole et al. 2016; Schoenholz et
    al. 2017), from the probe batch's input second moment; never fails the run."""
    from initlab.train.theory_inputs import predict_config

    try:
        return predict_config(cfg.model, result.input_dim, result.probe_q0)
    except (InitlabError, ValueError, ArithmeticError) as e:
        return {"applies": False, "reason": f"{type(e).__name__}: {e}"}


FINISHED = ("completed", "diverged")  # statuses of a run that has nothing left to train


def run(
    cfg: RunConfig,
    *,
    data_dir: str | Path | None = None,
    force: bool = False,
    resume: bool = False,
    auto_resume: bool = False,
    on_progress: Callable[[int, int, dict], None] | None = None,
    download_progress: bool = True,
) -> dict[str, Any]:
    """Train ``cfg`` and write its run folder; returns the summary (with ``run_dir``).

    Raises InitlabError if the folder holds a finished run (unless ``force``) or an interrupted
    run with a checkpoint (unless ``resume`` or ``force``: such a run is never restarted
    silently), or if the run fails; a failed or interrupted run still leaves its partial results
    and a summary saying what happened. With ``resume``, an unfinished run in the folder continues
    from its checkpoint (``checkpoint.pkl``, see ``log.checkpoint_every``); the checkpoint is
    deleted when the run ends. ``auto_resume`` is what a scheduler's requeue script repeats:
    continue from the checkpoint if there is one, start if there is nothing to continue, and
    return the stored summary at once (with ``"note"`` saying so) if the run has finished.
    """
    if force and (resume or auto_resume):
        raise InitlabError("--resume continues a run and --force starts it again: give one of them")
    path = run_dir_for(cfg)
    if auto_resume:
        if path.exists():
            check_same_config(path, cfg)
        status = run_status(path)
        if status in FINISHED:
            return {**read_summary(path), "note": f"{path} has already finished ({status}): nothing to train"}
        resume = status == "interrupted" and (path / CHECKPOINT_FILE).is_file()
    check_interrupted()  # a Ctrl-C whose raise was swallowed while the program started
    if not resume:
        check_run_dir_free(cfg, path, force)  # before the (slow) data load
    data = load_dataset(cfg.data, data_dir, progress=download_progress)
    make_schedule(cfg, len(data.y_train))  # config errors that need the data, before the folder exists
    memory.check(memory_estimate([cfg], data))  # and a run that cannot fit
    # From the claim until the folder's summary says `running`, Ctrl-C waits (InterruptGate, never
    # opened): a folder is absent or says what it holds, never left empty.
    with InterruptGate() as held:
        lock = claim_for_resume(cfg, path) if resume else claim_run_dir(cfg, path, force)
        try:
            writer, started = _open_run(cfg, path, on_progress)
        except BaseException:
            unlock(lock)
            raise
    try:
        return _train_into(cfg, data, path, writer, started, held)
    finally:
        unlock(lock)


def _open_run(cfg: RunConfig, path: Path, on_progress) -> tuple[RunWriter, float]:
    """The run's writer, once config.yaml and a `running` summary.json are in its folder."""
    writer = RunWriter(path, cfg, on_progress)
    writer.write_config()
    started = time.time()
    base = {
        "status": "running",
        "name": cfg.name,
        "config_hash": config_hash(cfg),
        "config_digest": config_digest(cfg),
        "run_dir": str(path),
        "versions": versions(),
        "started_at": started,
        "config": to_dict(cfg),
    }
    writer.write_summary(base)
    return writer, started


def _train_into(
    cfg: RunConfig, data: Dataset, path: Path, writer: RunWriter, started: float, held: InterruptGate
) -> dict[str, Any]:
    checkpointer = FileCheckpointer(path / CHECKPOINT_FILE)  # absent unless the run resumes
    try:
        held.check()  # a Ctrl-C held back while the folder was opened ends the run here, as interrupted
        result = train(cfg, data, writer, checkpointer)
    except BaseException as e:
        interrupted = isinstance(e, KeyboardInterrupt)
        reason = (str(e) or "interrupted by the user") if interrupted else f"{type(e).__name__}: {e}"
        last = writer.metric_rows[-1]["step"] if writer.metric_rows else 0
        writer.summary = {
            **failed_summary(cfg, reason, last),
            "status": "interrupted" if interrupted else "failed",
            "started_at": started,
            "wall_time_s": time.time() - started,
        }
        try:
            writer.flush()
        except OSError:
            pass  # a full disk: the folder keeps its last flush; its free lock reads it as interrupted
        if isinstance(e, OSError):
            raise InitlabError(f"run stopped: {describe_os_error(e)}; partial results in {path}") from e
        if isinstance(e, InitlabError | KeyboardInterrupt):
            raise
        raise InitlabError(f"run failed ({reason}); partial results in {path}") from e
    writer.summary = {**summarize(cfg, path, result), "started_at": started}
    writer.flush()
    checkpointer.discard()  # the run is whole: nothing to resume
    return writer.summary


_datasets: dict[str, Dataset] = {}


def dataset(cfg: DataConfig, data_dir: str | Path | None) -> Dataset:
    """Datasets are loaded once per process and shared by the groups it trains."""
    key = repr((cfg, str(data_dir)))  # frozen dataclass: its repr names every field
    if key not in _datasets:
        _datasets[key] = load_dataset(cfg, data_dir, progress=False)
    return _datasets[key]


def execute_group(
    cfg_dicts: list[dict[str, Any]], data_dir: str | None = None, on_step: Callable[[int, int], None] | None = None
) -> list[RunRecord]:
    """Train a group of batchable runs together and return each run's ``RunRecord`` (its rows,
    histograms and their edges, spectra, trace, parameters and summary). Plain data in and out, so
    the same function runs in this process, in a process pool or as a Ray task. An exception fails
    the whole group; it is recorded per run (with the rows gathered until then), never raised."""
    cfgs = [from_dict(d) for d in cfg_dicts]
    # the group's runs train in lockstep: the first one's progress is the group's
    recorders = [
        RunRecorder(None if on_step is None or i else lambda step, total, info: on_step(step, total))
        for i, _ in enumerate(cfgs)
    ]
    try:
        data = dataset(cfgs[0].data, data_dir)
        memory.check(memory_estimate(cfgs, data))  # a group that cannot fit fails as a group, before allocating
        # a sweep's group in flight checkpoints beside its runs' folders (they are written when it ends);
        # the sweep deletes the checkpoint once it has written them (sweeps.run_sweep)
        checkpointer = FileCheckpointer(
            group_checkpoint_path(cfgs), remedy="delete it and run the sweep again to train the group from the start"
        )
        results = train_group(cfgs, data, recorders, checkpointer)
        summaries = [summarize(c, run_dir_for(c), res) for c, res in zip(cfgs, results)]
    except Exception as e:  # noqa: BLE001 - isolation: one group's failure must not stop a sweep
        reason = f"{type(e).__name__}: {e}"
        summaries = [
            failed_summary(c, reason, rec.metric_rows[-1]["step"] if rec.metric_rows else 0)
            for c, rec in zip(cfgs, recorders)
        ]
    return [
        rec.record(summ, histogram_edges(c) if rec.histograms else None)
        for c, rec, summ in zip(cfgs, recorders, summaries)
    ]
