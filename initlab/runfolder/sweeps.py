"""Sweeps: a grid of runs from one YAML file, trained many at a time, resumable and failure-isolated.

A sweep file is a run config plus three optional top-level blocks::

    sweep: {model.depth: [5, 10, 20], model.init: [glorot_normal, he_normal]}   # full product
    zip: [{model.init_args.sigma_w: [1.0, 1.5], model.init_args.sigma_b: [0.0, 0.05]}]  # paired
    seeds: 3                                                                   # or a list

Runs that differ only in seed, initializer, init arguments or learning rate are trained together
as one vmapped group (``train.group.batch_key``). Each run gets the folder `initlab run` would write,
under ``<log.out>/<name>/``, written whole and renamed into place, so a folder is either a complete
run or absent. A run is claimed with an ``flock`` on ``.locks/<hash>.lock`` while it trains: the OS
drops the lock when its process dies (even by ``kill -9``), so another or a later sweep can take it
over, and two sweeps on one folder never train the same run at once.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from initlab.config import (
    SWEEP_KEYS,
    RunConfig,
    apply_overrides,
    check_name,
    config_digest,
    config_hash,
    from_dict,
    read_yaml,
    set_value,
    to_dict,
)
from initlab.config import field_type as _field_type
from initlab.config import parse_scalar as _parse_scalar
from initlab.errors import ConfigError, InitlabError, describe_os_error

# The executors, re-exported: ``initlab.runfolder.sweeps.PoolExecutor`` etc. keep working.
from initlab.runfolder.executors import (  # noqa: F401
    Executor,
    InlineExecutor,
    PoolExecutor,
    RayExecutor,
    check_executor,
    make_executor,
)
from initlab.runfolder.files import INDEX_FILE, SWEEP_FILE
from initlab.runfolder.checkpoint import FileCheckpointer, group_checkpoint_path
from initlab.runfolder.storage import (
    RunRecord,
    atomic_write,
    check_same_config,
    run_dir_for,
    run_status,
    try_lock,
    unlock,
    write_run_dir,
)

DONE = ("completed", "diverged")  # a diverged run is a result: it is not redone


@dataclass(frozen=True)
class SweepSpec:
    """A base config and the values to vary over it."""

    base: dict[str, Any]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    zips: list[dict[str, list[Any]]] = field(default_factory=list)
    seeds: list[int] | None = None

    @property
    def name(self) -> str:
        return str(self.base.get("name", "sweep"))

    def to_dict(self) -> dict[str, Any]:
        return {**self.base, "sweep": self.grid, "zip": self.zips, "seeds": self.seeds}


@dataclass(frozen=True)
class SweepRun:
    """One expanded run: its validated config, the values that vary across the sweep, its folder."""

    cfg: RunConfig
    varied: dict[str, Any]

    @property
    def path(self) -> Path:
        return run_dir_for(self.cfg)

    @property
    def hash(self) -> str:
        return config_hash(self.cfg)


def _values(raw: Any, key: str) -> list[Any]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"sweep.{key}: {raw!r} is not a non-empty list of values")
    return raw


def _seeds(raw: Any) -> list[int] | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        return list(range(raw))
    if isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw):
        return list(dict.fromkeys(raw))
    raise ConfigError(f"seeds: {raw!r} is not a count (>= 1) or a list of seeds (integers >= 0)")


def parse_values(key: str, text: str) -> list[Any]:
    """``5,10,20`` → [5, 10, 20], each value typed like the field ``key`` (as ``--set`` does)."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ConfigError(f"--grid {key}={text!r}: expected comma-separated values, e.g. {key}=5,10,20")
    tp = _field_type(key)
    return [p if tp is str else _parse_scalar(p, key) for p in parts]


def _assignment(item: str, flag: str) -> tuple[str, str]:
    key, sep, values = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{flag} {item!r}: expected KEY=V1,V2,..., e.g. {flag} model.depth=5,10,20")
    return key.strip(), values


def load_spec(
    path: str | Path,
    *,
    grid: Iterable[str] = (),
    zips: Iterable[str] = (),
    seeds: str | None = None,
    overrides: Iterable[str] = (),
) -> SweepSpec:
    """A sweep from a YAML file, with command-line ``--grid``/``--zip``/``--seeds``/``--set`` laid
    over it (a ``--grid`` key replaces the file's values for that key)."""
    data = read_yaml(path)
    blocks = {k: data.pop(k, None) for k in SWEEP_KEYS}
    base = apply_overrides(data, overrides)
    file_grid = blocks["sweep"] or {}
    if not isinstance(file_grid, dict):
        raise ConfigError(f"sweep: {file_grid!r} is not a mapping of dotted keys to lists of values")
    spec_grid = {str(k): _values(v, str(k)) for k, v in file_grid.items()}
    for item in grid:
        key, text = _assignment(item, "--grid")
        spec_grid[key] = parse_values(key, text)
    file_zips = blocks["zip"] or []
    if isinstance(file_zips, dict):
        file_zips = [file_zips]
    if not isinstance(file_zips, list) or not all(isinstance(z, dict) for z in file_zips):
        raise ConfigError("zip: expected a list of groups, each a mapping of dotted keys to equally long lists")
    spec_zips = [{str(k): _values(v, str(k)) for k, v in z.items()} for z in file_zips]
    for item in zips:
        group = {}
        for part in item.split():
            key, text = _assignment(part, "--zip")
            group[key] = parse_values(key, text)
        spec_zips.append(group)
    seed_list = _seeds(blocks["seeds"])
    if seeds is not None:
        text = seeds.strip()
        seed_list = _seeds(int(text) if text.isdigit() else parse_values("seed", text))
    spec = SweepSpec(base, spec_grid, spec_zips, seed_list)
    _check_keys(spec)
    sweep_dir(spec)  # the sweep's name is checked before anything is expanded or written
    return spec


def _check_keys(spec: SweepSpec) -> None:
    seen: dict[str, str] = {}
    for where, keys in [("sweep", spec.grid)] + [(f"zip[{i}]", z) for i, z in enumerate(spec.zips)]:
        for key in keys:
            if key in seen:
                raise ConfigError(f"{where}.{key}: already varied in {seen[key]}")
            if key in ("log", "log.out"):  # every run's folder is <log.out>/<sweep name>/<run name>-<hash>
                raise ConfigError(
                    f"{where}.{key}: log.out cannot vary per run (a sweep's runs all go in its folder; "
                    "set log.out once, or use --out)"
                )
            seen[key] = where
    if spec.seeds is not None and "seed" in seen:
        raise ConfigError(f"{seen['seed']}.seed: vary seeds with `seeds:` or --seeds, not both")
    for i, z in enumerate(spec.zips):
        lengths = {k: len(v) for k, v in z.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"zip[{i}]: lists of different lengths {lengths} (zipped values go in pairs)")


def expand(spec: SweepSpec) -> list[SweepRun]:
    """Every run of the sweep, validated: grid product × zip groups × seeds (seeds vary fastest).

    Raises ConfigError naming the run's varied values, the key and the value if any run is invalid.
    """
    axes: list[list[dict[str, Any]]] = [[{k: v} for v in vals] for k, vals in spec.grid.items()]
    for z in spec.zips:
        keys = list(z)
        axes.append([dict(zip(keys, combo)) for combo in zip(*z.values())])
    if spec.seeds is not None:
        axes.append([{"seed": s} for s in spec.seeds])
    out_dir = sweep_dir(spec)
    runs, seen = [], {}
    for combo in itertools.product(*axes):
        varied = {k: v for part in combo for k, v in part.items()}
        data = copy.deepcopy(spec.base)
        set_value(data, "log.out", str(out_dir))
        for k, v in varied.items():
            set_value(data, k, v)
        try:
            cfg = from_dict(data)
        except ConfigError as e:
            label = ", ".join(f"{k}={v}" for k, v in varied.items())
            raise ConfigError(f"run ({label}): {e}") from None
        run, digest = SweepRun(cfg, varied), config_digest(cfg)
        if run.hash in seen:
            if seen[run.hash] != digest:
                raise InitlabError(
                    f"runs {run.varied} and another of this sweep share the hash {run.hash} "
                    "(a hash collision); change a run's name"
                )
            continue  # a value listed twice adds nothing
        seen[run.hash] = digest
        runs.append(run)
    return runs


def sweep_dir(spec: SweepSpec) -> Path:
    """``<log.out>/<sweep name>``; a ConfigError if the name is not one plain folder name (a run's
    folder name, ``<name>-<hash>``, is checked by the run's own config)."""
    log = spec.base.get("log") or {}
    if not isinstance(log, dict):
        raise ConfigError(f"log: {log!r} is not a mapping")
    return Path(str(log.get("out", "runs"))) / check_name(spec.base.get("name", "sweep"), "name", "sweep name")


def check_same_sweep(directory: Path, runs: Sequence[SweepRun], replace: bool = False) -> None:
    """A sweep folder belongs to one sweep: the runs its ``index.json`` lists. This sweep may
    extend it (more seeds, more values of a key: every run it lists is still in this one); one
    that leaves some of its runs out (a different base, grid or seeds) is an InitlabError unless
    ``replace``, which makes it the folder's sweep (sweep.yaml and index.json; run folders are kept
    and reused where configs match). The comparison is of run hashes, so respelling a file changes
    nothing."""
    index = directory / INDEX_FILE
    if replace or not index.exists():
        return
    try:
        old = {str(e["hash"]) for e in json.loads(index.read_text())["runs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return  # an unreadable index is rewritten from the folders on disk
    digits = min((len(h) for h in old), default=0)  # an index written with 8-digit hashes
    new = {r.hash[:digits] for r in runs}
    dropped = len(old - new)
    if dropped:
        raise InitlabError(
            f"{directory} holds a different sweep named {directory.name!r} ({dropped} of its runs are "
            "not in this one; adding seeds or values is fine); choose another name, or pass --replace "
            "to make this its sweep (its run folders are kept)"
        )


def plan_groups(runs: Sequence[SweepRun], max_group: int) -> list[list[SweepRun]]:
    """Runs grouped by what they share (``batch_key``), in sweep order, at most ``max_group`` each."""
    from initlab.train.group import batch_key

    by_key: dict[str, list[SweepRun]] = {}
    for run in runs:
        by_key.setdefault(batch_key(run.cfg), []).append(run)
    groups = []
    for members in by_key.values():
        groups += [members[i : i + max_group] for i in range(0, len(members), max_group)]
    return groups


def needs_work(run: SweepRun, retry_failed: bool, *, locked: bool = False) -> bool:
    """Whether a run still has to be trained: not done, not being trained by another process, and
    failed only with ``retry_failed``. A folder that holds another config (a hash collision) is an
    InitlabError. ``locked``: this process holds the run's lock."""
    if run.path.exists():
        check_same_config(run.path, run.cfg)
    status = run_status(run.path, locked=locked)
    return status not in DONE and status != "running" and (retry_failed or status != "failed")


@dataclass
class SweepReport:
    """What a sweep did: every run's final status, and what this invocation trained."""

    directory: Path
    statuses: dict[str, str]  # hash -> status on disk at the end
    trained: int = 0
    skipped_done: int = 0
    busy: int = 0  # held by another sweep process
    groups: int = 0  # groups this invocation trained
    stopped_early: bool = False
    unwritten: dict[str, str] = field(default_factory=dict)  # hash -> why its folder could not be written

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s == status)

    @property
    def failed(self) -> int:
        return self.count("failed")


def write_index(directory: Path, spec: SweepSpec, runs: Sequence[SweepRun]) -> dict[str, str]:
    """Rewrite ``index.json`` from the folders on disk; returns hash → status."""
    entries, statuses = [], {}
    for run in runs:
        status = run_status(run.path)
        statuses[run.hash] = status
        entries.append({"hash": run.hash, "run_dir": run.path.name, "varied": run.varied, "status": status})
    atomic_write(directory / INDEX_FILE, json.dumps({"sweep": spec.name, "runs": entries}, indent=2) + "\n")
    return statuses


Event = Callable[[str, dict[str, Any]], None]


def run_sweep(
    spec: SweepSpec,
    *,
    data_dir: str | Path | None = None,
    workers: int = 1,
    executor: str = "local",
    address: str | None = None,
    retry_failed: bool = False,
    fail_fast: bool = False,
    max_group: int = 32,
    on_event: Event | None = None,
    replace: bool = False,
) -> SweepReport:
    """Train every run of ``spec`` that is not done yet; returns the final statuses.

    ``on_event(kind, info)`` hears ``start`` (total, todo, groups), ``group`` (index, size, label),
    ``step`` (the group's training step and total, from an in-process group) and ``done`` (runs
    finished so far) for a progress display. ``replace``: see ``check_same_sweep``.
    """
    emit = on_event or (lambda kind, info: None)
    check_executor(executor, address)
    runs = expand(spec)
    directory = sweep_dir(spec)
    check_same_sweep(directory, runs, replace)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / SWEEP_FILE, yaml.safe_dump(spec.to_dict(), sort_keys=False))
    _clean_stale_temps(directory)
    todo = [r for r in runs if needs_work(r, retry_failed)]
    groups = plan_groups(todo, max_group)
    report = SweepReport(directory, {}, skipped_done=len(runs) - len(todo))
    emit("start", {"total": len(runs), "todo": len(todo), "groups": len(groups)})
    pool = (
        make_executor(executor, workers, address, lambda step, total: emit("step", {"step": step, "total": total}))
        if groups
        else None
    )
    data = str(data_dir) if data_dir is not None else None
    in_flight: dict[Future, tuple[list[SweepRun], list[int]]] = {}
    pending: Iterator[list[SweepRun]] = iter(groups)
    slots = max(1, workers)
    aborted = True
    try:
        with ExitStack() as stack:
            stack.callback(lambda: [unlock(fd) for _, fds in in_flight.values() for fd in fds])
            while True:
                while len(in_flight) < slots and not report.stopped_early:
                    group = next(pending, None)
                    if group is None:
                        break
                    claimed, fds = _claim(group, retry_failed)
                    report.busy += len(group) - len(claimed)
                    if not claimed:
                        continue
                    report.groups += 1
                    emit("group", {"size": len(claimed), "label": _group_label(claimed)})
                    in_flight[pool.submit([to_dict(r.cfg) for r in claimed], data)] = (claimed, fds)
                if not in_flight:
                    break
                finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for fut in finished:
                    claimed, fds = in_flight.pop(fut)
                    try:
                        records = fut.result()
                    except Exception as e:  # noqa: BLE001 - a crashed worker fails its group only
                        from initlab.runfolder.experiment import failed_summary

                        records = [
                            RunRecord(failed_summary(r.cfg, f"worker failed: {type(e).__name__}: {e}")) for r in claimed
                        ]
                    written = True
                    for run, rec in zip(claimed, records):
                        try:
                            write_run_dir(run.path, run.cfg, rec)
                        except OSError as e:  # a full disk fails this run (absent: retrained next time), not the sweep
                            report.unwritten[run.hash] = describe_os_error(e)
                            written = False
                    if written:  # the group's checkpoint has served (else its runs resume from it next time)
                        FileCheckpointer(group_checkpoint_path([r.cfg for r in claimed])).discard()
                    for fd in fds:
                        unlock(fd)
                    report.trained += len(claimed)
                    report.statuses = _index_or_keep(directory, spec, runs, report)
                    emit("done", {"runs": len(claimed), "statuses": [rec.summary["status"] for rec in records]})
                    if fail_fast and any(rec.summary["status"] == "failed" for rec in records):
                        report.stopped_early = True
        aborted = False
    finally:
        if pool is not None:
            pool.shutdown(abort=aborted)
    report.statuses = _index_or_keep(directory, spec, runs, report)
    return report


def _index_or_keep(directory: Path, spec: SweepSpec, runs: Sequence[SweepRun], report: SweepReport) -> dict[str, str]:
    """``write_index``; on a full disk the previous index stays whole (written atomically) and the
    statuses come from the folders alone."""
    try:
        return write_index(directory, spec, runs)
    except OSError as e:
        report.unwritten[INDEX_FILE] = describe_os_error(e)
        return {r.hash: run_status(r.path) for r in runs}


def _claim(group: Sequence[SweepRun], retry_failed: bool) -> tuple[list[SweepRun], list[int]]:
    """Lock the runs of ``group`` that still need work and no other process holds."""
    claimed, fds = [], []
    for run in group:
        fd = try_lock(run.path)
        if fd is None:
            continue
        if needs_work(run, retry_failed, locked=True):  # it may have finished while we waited
            claimed.append(run)
            fds.append(fd)
        else:
            unlock(fd)
    return claimed, fds


def _group_label(group: Sequence[SweepRun]) -> str:
    c = group[0].cfg
    return f"depth {c.model.depth}, width {c.model.width}, {c.model.activation}, norm {c.model.norm}: {len(group)} runs"


def _clean_stale_temps(directory: Path) -> None:
    """Remove half-written run folders left by processes that no longer exist."""
    import shutil

    for tmp in list(directory.glob(".tmp-*")) + list(directory.glob(".old-*")):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dry_run_rows(
    spec: SweepSpec, max_group: int, retry_failed: bool, replace: bool = False, data_dir: str | Path | None = None
) -> tuple[list[SweepRun], list[list[SweepRun]], str | None]:
    """The expanded runs, the groups they would train in (only runs that need work are grouped)
    and a note (or None), after the checks the sweep itself makes before training: the folder's
    sweep (``check_same_sweep``) and each group's memory estimate (``memory.check``). The memory
    check needs the data; a dry run never downloads it, so where it is not there yet the note says
    the check was left for the sweep."""
    from initlab.data.datasets import load_dataset
    from initlab.train import memory
    from initlab.train.loop import memory_estimate

    runs = expand(spec)
    check_same_sweep(sweep_dir(spec), runs, replace)
    groups = plan_groups([r for r in runs if needs_work(r, retry_failed)], max_group)
    loaded: dict[str, Any] = {}
    for group in groups:
        cfgs = [r.cfg for r in group]
        key = repr(cfgs[0].data)
        if key not in loaded:
            try:
                loaded[key] = load_dataset(cfgs[0].data, data_dir, progress=False, download=False)
            except InitlabError as e:
                return runs, groups, f"memory not checked: the data is not here yet ({e})"
        memory.check(memory_estimate(cfgs, loaded[key]))
    return runs, groups, None
