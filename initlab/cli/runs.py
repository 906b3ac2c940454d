"""The commands that train: ``run`` (one configuration) and ``sweep`` (a grid of runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from initlab.cli.common import DataDir, NoMemoryCheck, _memory_check, _on_interrupt, app, guarded
from initlab.errors import InitlabError


@app.command()
@guarded
def run(
    config: Annotated[Path, typer.Argument(help="YAML run config (see configs/).", dir_okay=False)],
    set_: Annotated[
        list[str],
        typer.Option(
            "--set", metavar="KEY=VALUE", help="Override a config value, e.g. --set model.depth=50 (repeatable)."
        ),
    ] = [],  # noqa: B006
    data_dir: DataDir = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Folder for run folders (overrides log.out).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo a run whose folder already exists.")] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an unfinished run of this config (killed, "
            "Ctrl-C, SIGTERM) from its checkpoint.pkl; see "
            "log.checkpoint_every.",
        ),
    ] = False,
    auto_resume: Annotated[
        bool,
        typer.Option(
            "--auto-resume",
            help="Continue from the checkpoint if there is one, "
            "start if there is nothing to continue, exit 0 at once if the run has "
            "finished: the one command a requeue script (SLURM --requeue, "
            "preemptible machines) repeats.",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or layer table.")] = False,
    no_memory_check: NoMemoryCheck = False,
) -> None:
    """Train one configuration and log per-layer statistics from initialization to the end."""
    from initlab import config as cfgmod
    from initlab.report.display import console, interrupted_run_steps, layer_table, run_summary_lines, training_progress
    from initlab.runfolder import experiment

    _memory_check(not no_memory_check)
    overrides = list(set_) + ([f"log.out={out}"] if out is not None else [])
    cfg = cfgmod.load(config, overrides)
    again = [
        "initlab",
        "run",
        str(config),
        *(a for s in set_ for a in ("--set", s)),
        *(["--out", out] if out is not None else []),
        *(["--data-dir", str(data_dir)] if data_dir else []),
    ]
    with (
        training_progress(cfg.name, enabled=not quiet) as progress,
        _on_interrupt(lambda: interrupted_run_steps(cfg, again)),
    ):
        summary = experiment.run(
            cfg,
            data_dir=data_dir,
            force=force,
            resume=resume,
            auto_resume=auto_resume,
            on_progress=progress,
            download_progress=not quiet,
        )
    if not quiet:
        console.print(layer_table(summary))
    for line in run_summary_lines(summary):
        console.print(line, highlight=False, soft_wrap=True)


@app.command()
@guarded
def sweep(
    config: Annotated[
        Path, typer.Argument(help="YAML sweep file: a run config plus sweep/zip/seeds blocks.", dir_okay=False)
    ],
    grid: Annotated[
        list[str],
        typer.Option(
            "--grid",
            metavar="KEY=V1,V2",
            help="Vary a key over values (repeatable; replaces the file's list "
            "for that key), e.g. --grid model.depth=5,10,20.",
        ),
    ] = [],  # noqa: B006
    zip_: Annotated[
        list[str],
        typer.Option(
            "--zip", metavar="'K1=A,B K2=C,D'", help="Keys whose values go in pairs, not in a product (repeatable)."
        ),
    ] = [],  # noqa: B006
    seeds: Annotated[
        Optional[str], typer.Option("--seeds", help="A count (3 → seeds 0,1,2) or a list (0,5,7).")
    ] = None,
    set_: Annotated[
        list[str], typer.Option("--set", metavar="KEY=VALUE", help="Override a value of the base config (repeatable).")
    ] = [],  # noqa: B006
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs and their groups; train nothing.")] = False,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Groups trained in parallel (processes, or Ray tasks).")
    ] = 1,
    executor: Annotated[str, typer.Option("--executor", help="local (this machine) or ray (a Ray cluster).")] = "local",
    address: Annotated[
        Optional[str],
        typer.Option("--address", help="Ray cluster address (with --executor ray), e.g. ray://head:10001 or auto."),
    ] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Train failed runs again.")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed group.")] = False,
    max_group: Annotated[int, typer.Option("--max-group", min=1, help="Most runs trained together in one group.")] = 32,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Let this sweep take over the folder of a different "
            "sweep with the same name (its run folders are kept).",
        ),
    ] = False,
    data_dir: DataDir = None,
    out: Annotated[
        Optional[str], typer.Option("--out", help="Folder that holds the sweep folder (overrides log.out).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    no_memory_check: NoMemoryCheck = False,
) -> None:
    """Train a grid of runs (depth × activation × init × norm × seeds), many at once; resumable."""
    from initlab.report.display import console, dry_run_table, sweep_next_steps, sweep_progress
    from initlab.runfolder import sweeps as sweepmod

    _memory_check(not no_memory_check)
    overrides = list(set_) + ([f"log.out={out}"] if out is not None else [])
    spec = sweepmod.load_spec(config, grid=grid, zips=zip_, seeds=seeds, overrides=overrides)
    if dry_run:
        runs, groups, note = sweepmod.dry_run_rows(spec, max_group, retry_failed, replace, data_dir)
        console.print(dry_run_table(runs, groups))
        if note:
            console.print(note, markup=False, highlight=False, soft_wrap=True)
        return
    with (
        sweep_progress(spec.name, enabled=not quiet) as on_event,
        _on_interrupt(lambda: sweep_next_steps(sweepmod.sweep_dir(spec), interrupted=True)),
    ):
        report = sweepmod.run_sweep(
            spec,
            data_dir=data_dir,
            workers=workers,
            executor=executor,
            address=address,
            retry_failed=retry_failed,
            fail_fast=fail_fast,
            max_group=max_group,
            on_event=on_event,
            replace=replace,
        )
    _sweep_outcome(report)


def _sweep_outcome(report) -> None:
    """Print a finished sweep's table, its counts and what to run next; raise if results could not
    be written or runs failed."""
    from initlab.report.display import console, sweep_next_steps, sweep_table

    console.print(sweep_table(report))
    console.print(
        f"{report.directory}: trained {report.trained} runs in {report.groups} groups; "
        f"{report.skipped_done} already done"
        + (f"; {report.busy} held by another sweep" if report.busy else "")
        + (" (stopped at the first failure)" if report.stopped_early else ""),
        highlight=False,
        soft_wrap=True,
    )
    console.print(sweep_next_steps(report.directory), markup=False, highlight=False, soft_wrap=True)
    if report.unwritten:
        first = next(iter(report.unwritten.values()))
        raise InitlabError(
            f"{len(report.unwritten)} results could not be written ({first}); the runs missing on "
            "disk are trained again when the sweep is run again"
        )
    if report.failed:
        raise InitlabError(
            f"{report.failed} runs failed (see summary.json in their folders; rerun with --retry-failed)"
        )
