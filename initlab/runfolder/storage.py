"""Run directories: ``<out>/<name>-<config hash>/`` with config.yaml, metrics.csv, layers.csv,
summary.json, a tidy ``<name>.csv`` per shaped statistic the run computes, histograms.csv (the
per-layer histograms), jacobian.csv (the input-output Jacobian's singular values) and, for LSUV and
layer-wise pre-training, the initializer's trace. Every file is written whole to a temporary name
and renamed into place, so a reader (or a crash) never sees half a file."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from initlab.config import (
    HASH_DIGITS,
    LEGACY_HASH_DIGITS,
    ConfigError,
    RunConfig,
    config_digest,
    from_dict,
    parse_yaml,
    to_yaml,
)
from initlab.errors import InitlabError, check_interrupted
from initlab.nn.formats import storable
from initlab.nn.initializers import Trace
from initlab.runfolder.checkpoint import CHECKPOINT_MAGIC, FileCheckpointer, group_checkpoint_path  # noqa: F401
from initlab.runfolder.files import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    HISTOGRAM_COLUMNS,
    HISTOGRAM_FILE,
    JACOBIAN_COLUMNS,
    JACOBIAN_FILE,
    LAYER_KEY_COLUMNS,
    LAYERS_FILE,
    LOCKS_DIR,
    LOSS_SCALE_COLUMNS,
    METRIC_COLUMNS,
    METRICS_FILE,
    PARAMS_DIR,
    SHAPED_COLUMNS,
    SUMMARY_FILE,
    params_name,
    params_step,
    shaped_file,
)
from initlab.runfolder.reader import load_summary, read_summary
from initlab.stats.statistics import QUANTITIES, Layout
from initlab.theory.shaping import shape_for


def metric_columns(cfg: RunConfig) -> tuple[str, ...]:
    """The columns of metrics.csv."""
    return METRIC_COLUMNS + (LOSS_SCALE_COLUMNS if cfg.train.loss_scale != "none" else ())


def layout_of(cfg: RunConfig) -> Layout:
    """The statistics ``cfg`` computes (``log.stats`` and, with ``log.histograms``, the histograms)."""
    return Layout(cfg.log.stats, cfg.log.histograms, cfg.model.dtype)


def layer_columns(cfg: RunConfig) -> tuple[str, ...]:
    """The columns of layers.csv: the scalar statistics the run computes (``log.stats``)."""
    return (*LAYER_KEY_COLUMNS, *layout_of(cfg).scalars)


def shaped_files(cfg: RunConfig) -> dict[str, str]:
    """Statistic name -> the tidy file (in the run folder) of each shaped statistic the run computes."""
    return {name: shaped_file(name) for name in layout_of(cfg).shaped}


def _edge_text(v: float) -> str:
    return "" if math.isnan(v) else repr(float(v))


Edges = Mapping[str, tuple[np.ndarray, np.ndarray]]  # histogram statistic -> its bins' (lower, upper) edges


def histogram_edges(cfg: RunConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The bin edges of each histogram ``cfg``'s run computes: the bins of its statistics layout for
    the activation as the run shaped it. Taken where the run trains, where its shaping is solved
    (``shape_for`` keeps it), and carried to the writer in the ``RunRecord``."""
    layout = layout_of(cfg)
    m = cfg.model
    shape = shape_for(m.activation, m.shaping, m.shaping_args, m.depth) if layout.histograms else None
    return {name: layout.bins(name, cfg.model.activation, shape).edges() for name in layout.histograms}


def histogram_text(edges: Edges, histograms: Sequence[tuple[int, Mapping[str, np.ndarray]]]) -> str:
    """histograms.csv from a run's logged steps, each ``(step, {histogram statistic: counts
    (layers, bins)})``, and its bins' ``edges`` (``histogram_edges``): a row per non-empty bin
    (NaN counts, a layer the histogram is undefined for, write nothing)."""
    texts = {name: ([_edge_text(v) for v in lo], [_edge_text(v) for v in hi]) for name, (lo, hi) in edges.items()}
    lines = [",".join(HISTOGRAM_COLUMNS)]
    for step, hists in histograms:
        for name, c in hists.items():
            lo, hi = texts[name]
            n_layers = c.shape[0]
            layer, b = np.nonzero(np.nan_to_num(c, nan=0.0) > 0)
            for i, j in zip(layer.tolist(), b.tolist()):
                kind = "output" if i == n_layers - 1 else "hidden"
                lines.append(f"{step},{i + 1},{kind},{QUANTITIES[name]},{lo[j]},{hi[j]},{int(c[i, j])}")
    return "\n".join(lines) + "\n"


def jacobian_text(spectra: Mapping[int, np.ndarray]) -> str:
    """jacobian.csv from ``{step: singular values (examples, k)}``."""
    lines = [",".join(JACOBIAN_COLUMNS)]
    for step, sv in sorted(spectra.items()):
        for e, row in enumerate(np.asarray(sv)):
            lines.extend(f"{step},{e},{i},{float(v)!r}" for i, v in enumerate(row))
    return "\n".join(lines) + "\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; results are for sharing, so give them the usual umask-based mode.
FILE_MODE = 0o666 & ~_umask()


def run_dir_for(cfg: RunConfig) -> Path:
    """Where ``cfg``'s results go: ``<log.out>/<name>-<hash>``, or the folder an earlier initlab
    named with the hash's first 8 digits when it holds this very config."""
    digest = config_digest(cfg)
    path = Path(cfg.log.out) / f"{cfg.name}-{digest[:HASH_DIGITS]}"  # config_hash(cfg), digested once
    legacy = path.with_name(f"{cfg.name}-{digest[:LEGACY_HASH_DIGITS]}")
    if not path.exists() and legacy.is_dir() and stored_digest(legacy) == digest:
        return legacy
    return path


def stored_digest(path: Path) -> str | None:
    """The ``config_digest`` of the run whose folder is ``path`` (from summary.json, else from the
    config stored there); None when neither can be read."""
    try:
        summary = load_summary(path)
        if isinstance(summary, dict) and isinstance(summary.get("config_digest"), str):
            return summary["config_digest"]
    except (OSError, ValueError):
        pass
    import yaml

    try:
        return config_digest(from_dict(parse_yaml((path / CONFIG_FILE).read_text())))
    except (OSError, ValueError, ConfigError, yaml.YAMLError):
        return None


def check_same_config(path: Path, cfg: RunConfig) -> None:
    """A folder at ``cfg``'s run path that holds another config is a hash collision: say so
    instead of treating that run as this one's."""
    found = stored_digest(path)
    if found is not None and found != config_digest(cfg):
        raise InitlabError(
            f"{path} holds a different config with the same hash (a hash collision); "
            f"move that folder or change this run's name"
        )


# -- locks ------------------------------------------------------------------------------------
# A run being trained holds an exclusive flock on <out>/.locks/<run folder name>.lock, from before
# its folder is claimed until its result is written (``initlab run`` and sweeps alike). The kernel
# drops the lock when the process dies however it dies, so a folder whose summary says ``running``
# while its lock is free is a run that was killed (kill -9, the OOM killer): ``run_status`` reads
# it as interrupted.


def lock_path(path: Path) -> Path:
    return path.parent / LOCKS_DIR / f"{path.name}.lock"


def try_lock(path: Path) -> int | None:
    """An exclusive, non-blocking flock on the run folder ``path``'s lock; the open descriptor
    (which holds the lock until ``unlock``), or None if another process holds it."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def lock_holder(path: Path) -> int | None:
    """The pid of the process training the run folder ``path`` (0 if unknown), or None when no
    process holds its lock. Reads only: works on a tree this process cannot write."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except OSError:
        return None  # no lock file: nothing ever trained here under a lock
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 32).decode(errors="replace").strip()
        return int(text) if text.isdigit() else 0
    finally:
        os.close(fd)  # closing drops the shared lock, if taken
    return None


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        return "" if math.isnan(float(v)) else repr(float(v))
    return str(v)


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """A CSV with a header; NaN and None become empty cells (pandas reads them back as NaN)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def jsonable(obj: Any) -> Any:
    """Plain JSON data: arrays to lists, NaN to null (JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


# The reason a killed run (``running`` on disk, its lock free) is read as interrupted with.
LOST = "lost: the process ended without recording a result (killed, out of memory or out of disk)"


def check_run_dir_free(cfg: RunConfig, path: Path, force: bool, *, locked: bool = False) -> None:
    """``path`` may receive ``cfg``'s run: absent, or a run of the same config that is not being
    trained and either did not finish (interrupted, or killed) or is to be redone (``force``).
    ``locked``: this process holds the folder's lock."""
    if not path.exists():
        return
    check_same_config(path, cfg)
    pid = None if locked else lock_holder(path)
    if pid is not None:
        who = f"process {pid}" if pid else "another process"
        raise InitlabError(f"{path} is being trained by {who}; wait for it or stop it first")
    status = run_status(path, locked=locked)
    if force:
        return
    if status != "interrupted":
        raise InitlabError(f"{path} already exists (same config, same hash); pass --force to run it again")
    if (path / CHECKPOINT_FILE).is_file():  # never restart silently what can be continued
        steps = read_summary(path).get("steps")
        at = f" at step {steps}" if isinstance(steps, int) else ""
        raise InitlabError(
            f"{path} was interrupted{at} and holds a checkpoint: --resume continues it, --force starts it again"
        )


def claim_run_dir(cfg: RunConfig, path: Path, force: bool) -> int:
    """Lock ``path`` for ``cfg``'s run and make it an empty folder (an unfinished or, with
    ``force``, any earlier run of the config there is moved aside and deleted); returns the lock's
    descriptor, which the caller holds until the run's result is written."""
    fd = try_lock(path)
    if fd is None:
        check_run_dir_free(cfg, path, force)  # names the process that holds it
        raise InitlabError(f"{path} is being trained by another process")
    try:
        check_run_dir_free(cfg, path, force, locked=True)
        if path.exists():
            trash = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        path.mkdir(parents=True)
    except BaseException:
        unlock(fd)
        raise
    return fd


def claim_for_resume(cfg: RunConfig, path: Path) -> int:
    """Lock the run folder ``path`` of ``cfg`` to continue it (``initlab run --resume``): it must
    hold this config, not be trained by another process, not have finished, and hold a
    checkpoint; its files are kept. Returns the lock's descriptor."""
    if not path.is_dir():
        raise InitlabError(f"{path}: no run folder to resume; run without --resume")
    check_same_config(path, cfg)
    fd = try_lock(path)
    if fd is None:
        pid = lock_holder(path)
        raise InitlabError(f"{path} is being trained by {f'process {pid}' if pid else 'another process'}")
    try:
        status = run_status(path, locked=True)
        if status in ("completed", "diverged"):
            raise InitlabError(f"{path} has finished ({status}); nothing to resume (--force runs it again)")
        if not (path / CHECKPOINT_FILE).is_file():
            raise InitlabError(
                f"{path} has no checkpoint to resume from (log.checkpoint_every was 0 and it was not "
                "stopped by Ctrl-C or SIGTERM); run without --resume to start again"
            )
        FileCheckpointer(path / CHECKPOINT_FILE).verify()  # a corrupted one is refused before anything changes
    except BaseException:
        unlock(fd)
        raise
    return fd


@dataclass
class RunRecord:
    """Everything a run leaves for its folder but its config: what ``runfolder.experiment.execute_group``
    returns per run and ``write_run_dir`` writes whole. Plain data (lists, dicts, numpy arrays), so
    it crosses process boundaries (a process pool, Ray)."""

    summary: dict[str, Any]  # summary.json
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv's rows
    layers: list[dict[str, Any]] = field(default_factory=list)  # layers.csv's rows
    shaped: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # shaped statistic -> its tidy rows
    histograms: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)  # (step, {name: counts})
    edges: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # histogram_edges
    spectra: dict[int, np.ndarray] = field(default_factory=dict)  # step -> Jacobian singular values
    trace: Trace | None = None  # the initializer's trace
    params: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # step -> named arrays


class RunRecorder:
    """Collects a run's metrics and per-layer rows in memory; implements the training ``Sink``."""

    def __init__(self, on_progress: Callable[[int, int, dict], None] | None = None):
        self.metric_rows: list[dict[str, Any]] = []
        self.layer_rows: list[dict[str, Any]] = []
        self.shaped_rows: dict[str, list[dict[str, Any]]] = {}  # shaped statistic -> its tidy rows
        self.histograms: list[tuple[int, dict[str, np.ndarray]]] = []  # (step, {histogram: counts (layers, bins)})
        self.spectra: dict[int, np.ndarray] = {}  # step -> Jacobian singular values (examples, k)
        self.trace: Trace | None = None
        self.saved_params: dict[int, dict[str, np.ndarray]] = {}  # step -> named arrays (log.save_params)
        self._on_progress = on_progress

    def metrics(self, row: dict[str, Any]) -> None:
        self.metric_rows.append(row)

    def layers(self, step: int, stats: dict[str, np.ndarray]) -> None:
        """One logged step's statistics: (layers,) arrays become layers.csv columns, histograms
        rows of histograms.csv, other (layers, k) arrays rows of their own tidy file."""
        hists = {name: np.asarray(v) for name, v in stats.items() if name in QUANTITIES}
        if hists:
            self.histograms.append((step, hists))
        stats = {name: v for name, v in stats.items() if name not in QUANTITIES}
        n = len(next(iter(stats.values())))
        kinds = ["output" if i == n - 1 else "hidden" for i in range(n)]
        scalars = {c: v for c, v in stats.items() if np.ndim(v) == 1}
        for i in range(n):
            self.layer_rows.append(
                {"step": step, "layer": i + 1, "kind": kinds[i], **{c: float(v[i]) for c, v in scalars.items()}}
            )
        for name, v in stats.items():
            if np.ndim(v) == 2:
                self.shaped_rows.setdefault(name, []).extend(
                    {"step": step, "layer": i + 1, "kind": kinds[i], "index": j, "value": float(v[i, j])}
                    for i in range(n)
                    for j in range(v.shape[1])
                )

    def jacobian(self, step: int, singular_values: np.ndarray) -> None:
        """The singular values (examples, k) of the input-output Jacobian at ``step``."""
        self.spectra[step] = np.asarray(singular_values)

    def parameters(self, step: int, arrays: dict[str, np.ndarray]) -> None:
        """The parameters and normalization state at ``step`` (``params.named_arrays``' names)."""
        self.saved_params[step] = arrays

    HELD = ("metric_rows", "layer_rows", "shaped_rows", "histograms", "spectra", "trace", "saved_params")

    def snapshot(self) -> dict[str, Any]:
        """Everything recorded so far (plain data), for a training checkpoint."""
        return {name: getattr(self, name) for name in self.HELD}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Back to what ``snapshot()`` held (a resumed run)."""
        for name in self.HELD:
            setattr(self, name, snapshot[name])

    def record(self, summary: dict[str, Any], edges: Edges | None = None) -> RunRecord:
        """What was recorded, with ``summary`` and the histograms' ``edges``, as the run's record."""
        return RunRecord(
            summary,
            self.metric_rows,
            self.layer_rows,
            self.shaped_rows,
            self.histograms,
            dict(edges or {}),
            self.spectra,
            self.trace,
            self.saved_params,
        )

    def checkpoint(self) -> None:
        pass

    def init_trace(self, trace: Trace) -> None:
        self.trace = trace

    def progress(self, step: int, total: int, info: dict[str, float]) -> None:
        check_interrupted()  # where training looks in on the host: a signal whose raise was lost ends it here
        if self._on_progress is not None:
            self._on_progress(step, total, info)


class RunWriter(RunRecorder):
    """A RunRecorder that also keeps the run folder up to date: at checkpoints (epoch ends, at most
    every ``min_interval_s``: each flush rewrites the CSVs whole, so unbounded flushing would cost
    quadratic time on long runs) and when the run ends."""

    def __init__(
        self,
        path: Path,
        cfg: RunConfig,
        on_progress: Callable[[int, int, dict], None] | None = None,
        min_interval_s: float = 30.0,
    ):
        super().__init__(on_progress)
        self.path = path
        self.cfg = cfg
        self.summary: dict[str, Any] = {}
        self.min_interval_s = min_interval_s
        self._last_flush = -math.inf
        self._edges: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def checkpoint(self) -> None:
        if time.monotonic() - self._last_flush >= self.min_interval_s:
            self.flush()

    # -- files ---------------------------------------------------------------------------------
    def write_config(self) -> None:
        atomic_write(self.path / CONFIG_FILE, to_yaml(self.cfg))

    def flush(self) -> None:
        """Write the CSVs and the summary as they stand."""
        self._last_flush = time.monotonic()
        if self._edges is None and self.histograms:
            self._edges = histogram_edges(self.cfg)  # once, in the process that trains (its shaping solved)
        write_results(self.path, self.cfg, self.record(self.summary, self._edges))

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.summary = summary
        atomic_write(self.path / SUMMARY_FILE, summary_text(summary))


def summary_text(summary: Mapping[str, Any]) -> str:
    """summary.json's text."""
    return json.dumps(jsonable(summary), indent=2) + "\n"


def params_file(path: Path, step: int) -> Path:
    """Where a run folder keeps its parameters of ``step``: ``params/step_<step, 6 digits>.npz``."""
    return path / PARAMS_DIR / params_name(step)


def saved_param_steps(path: Path) -> list[int]:
    """The steps whose parameters the run folder ``path`` holds, in order."""
    folder = path / PARAMS_DIR
    steps = (params_step(f.stem) for f in folder.glob("step_*.npz")) if folder.is_dir() else ()
    return sorted(s for s in steps if s is not None)


def write_params(path: Path, saved: Mapping[int, Mapping[str, np.ndarray]]) -> None:
    """Each step's named arrays as ``params_file(path, step)`` (through a temporary name and a
    rename; a file already there is the same step's and is kept). Formats numpy cannot store
    (bfloat16) are widened to float32, which is exact; loading casts back to the model's dtype."""
    for step, arrays in saved.items():
        target = params_file(path, step)
        if target.exists():
            continue
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
        plain = {k: storable(v) for k, v in arrays.items()}
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **plain)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def write_trace(path: Path, trace: Trace | None) -> None:
    """The initializer's trace (LSUV variances, pre-training losses) as ``<path>/<trace.file>``."""
    if trace is not None:
        atomic_write(path / trace.file, csv_text(trace.columns, trace.rows))


def write_results(path: Path, cfg: RunConfig, record: RunRecord) -> None:
    """Every file of ``record`` into the run folder ``path``: metrics.csv, layers.csv, the tidy file
    of every shaped statistic the run computes, histograms.csv (with ``log.histograms``),
    jacobian.csv (once a spectrum was taken), the initializer's trace, the saved parameters and
    summary.json (when there is one)."""
    atomic_write(path / METRICS_FILE, csv_text(metric_columns(cfg), record.metrics))
    atomic_write(path / LAYERS_FILE, csv_text(layer_columns(cfg), record.layers))
    for name, file in shaped_files(cfg).items():
        atomic_write(path / file, csv_text(SHAPED_COLUMNS, record.shaped.get(name, [])))
    if cfg.log.histograms > 0:
        atomic_write(path / HISTOGRAM_FILE, histogram_text(record.edges, record.histograms))
    if record.spectra:
        atomic_write(path / JACOBIAN_FILE, jacobian_text(record.spectra))
    write_trace(path, record.trace)
    write_params(path, record.params)
    if record.summary:
        atomic_write(path / SUMMARY_FILE, summary_text(record.summary))


def write_run_dir(path: Path, cfg: RunConfig, record: RunRecord) -> None:
    """Write a whole run folder at once: built under a temporary name beside ``path`` and renamed
    into place, so ``path`` either holds a complete run or does not exist. A folder already at
    ``path`` (a failed or unfinished earlier attempt) is replaced."""
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        atomic_write(tmp / CONFIG_FILE, to_yaml(cfg))
        write_results(tmp, cfg, record)
        if path.exists():
            old = path.with_name(f".old-{path.name}-{os.getpid()}")
            os.replace(path, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_status(path: Path, *, locked: bool = False) -> str:
    """The status in a run folder's summary.json: ``missing`` without a folder, ``corrupt`` when
    the summary is absent or unreadable, ``interrupted`` for a ``running`` run whose lock no
    process holds (``locked``: this process holds it, so no other can be training it)."""
    if not path.is_dir():
        return "missing"
    try:
        summary = load_summary(path)
        status = str(summary.get("status", "corrupt"))
    except (OSError, ValueError, AttributeError):
        return "corrupt"
    return live_status(status, path, locked=locked)


def live_status(status: str, path: Path, *, locked: bool = False) -> str:
    """A status read from the run folder ``path``'s summary, as it stands: ``running`` only while
    some process holds the run's lock, ``interrupted`` once none does (see the locks above)."""
    if status == "running" and (locked or lock_holder(path) is None):
        return "interrupted"
    return status
