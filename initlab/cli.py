"""The `initlab` command. Thin: each command parses options, calls one library function and
renders what it returns. Library errors become one red line and an exit code (2: bad config,
1: runtime failure)."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core

from initlab import __version__
from initlab.errors import (
    InitlabError,
    Terminated,
    check_interrupted,
    clear_interrupts,
    describe_os_error,
    noting_handler,
)


class OneLineUsageErrors(typer.core.TyperGroup):
    """Usage errors that typer finds before a command runs (an option value of the wrong type or
    out of range, a missing argument, an unknown option or command) as the one line library errors
    get, ``error: ...`` and exit code 2, instead of a boxed panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        import sys

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as e:  # click's ClickException (vendored by typer): UsageError, BadParameter
            if type(e).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
                from rich.markup import escape

                from initlab.report.display import err_console

                ctx = getattr(e, "ctx", None)
                hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
                err_console.print(
                    f"[red]error:[/] {escape(e.format_message() + hint)}", highlight=False, soft_wrap=True
                )
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)  # typer.Exit's code, or 0 when the command returned


app = typer.Typer(
    help="A laboratory for initialization, normalization and signal propagation in deep MLPs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineUsageErrors,
)
data_app = typer.Typer(help="Download and verify the MNIST files.", no_args_is_help=True)
app.add_typer(data_app, name="data")
config_app = typer.Typer(
    help="The configuration reference: every key, its default and what it accepts.", no_args_is_help=True
)
app.add_typer(config_app, name="config")

DataDir = Annotated[
    Optional[Path],
    typer.Option(
        "--data-dir",
        help="Folder holding the MNIST files, and only that folder (default: $INITLAB_DATA_DIR, then the user cache).",
        file_okay=False,
    ),
]


def guarded(fn):
    """Turn library errors into a one-line message and an exit code; no traceback reaches users
    (set INITLAB_DEBUG=1 to see one)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from rich.markup import escape

        from initlab.report.display import err_console

        try:
            with _signals_as_interrupts():
                return fn(*args, **kwargs)
        except InitlabError as e:
            err_console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt as e:
            how = "terminated" if isinstance(e, Terminated) else "interrupted"
            then = "".join(f"; {note}" for note in getattr(e, "__notes__", ()))  # what to run next (_on_interrupt)
            err_console.print(
                f"[red]{how}[/]: partial results were kept{escape(then)}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
        except OSError as e:  # a full disk, a read-only or missing folder: one line naming the file
            if os.environ.get("INITLAB_DEBUG"):
                raise
            err_console.print(f"[red]error:[/] {escape(describe_os_error(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as e:
            if os.environ.get("INITLAB_DEBUG"):
                raise
            err_console.print(
                f"[red]internal error:[/] {type(e).__name__}: {escape(str(e))} (set INITLAB_DEBUG=1 for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper


@contextlib.contextmanager
def _signals_as_interrupts():
    """While a command runs, Ctrl-C raises KeyboardInterrupt and SIGTERM (``kill``, a scheduler's
    timeout) raises ``Terminated`` in the main thread, so a run or sweep ends the same way, with its
    partial results kept. Each signal is also noted (``errors.noting_handler``), so one whose raise
    Python swallowed (in a garbage-collector callback) still ends the command at its next check:
    one that came while the program started is raised here at once, one that comes later at the
    next check in training or when the command returns. An ignored SIGINT (nohup, a background
    job) stays ignored."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, noting_handler)
    try:
        check_interrupted()  # one that came while the program started (errors.deferring_handler)
        yield
        check_interrupted()  # one whose raise was swallowed after training's last check
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        clear_interrupts()


@contextlib.contextmanager
def _on_interrupt(next_steps):
    """A Ctrl-C or SIGTERM inside the block leaves with ``next_steps()`` (what to run now) noted on
    the KeyboardInterrupt, for ``guarded``'s message."""
    try:
        yield
    except KeyboardInterrupt as e:
        note = next_steps()
        if note:
            e.add_note(note)
        raise


NoMemoryCheck = Annotated[
    bool,
    typer.Option(
        "--no-memory-check",
        help="Train even where the memory estimate (parameters, optimizer state, activations, "
        "data) exceeds the free memory; sets INITLAB_MEMORY_CHECK=0, which pool workers inherit.",
    ),
]


def _memory_check(on: bool) -> None:
    from initlab.train.memory import CHECK_ENV

    if not on:
        os.environ[CHECK_ENV] = "0"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"initlab {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """initlab: train JAX MLPs on MNIST and watch signals flow forward and gradients flow back."""
    from initlab.train.cache import enable_compilation_cache

    enable_compilation_cache()  # before anything compiles; INITLAB_NO_COMPILE_CACHE=1 turns it off


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
    from initlab.report.display import console, dry_run_table, sweep_next_steps, sweep_progress, sweep_table
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


@app.command()
@guarded
def report(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Run folders and/or folders holding them (searched recursively; default: runs)."),
    ] = None,  # type: ignore[assignment]
    filter_: Annotated[
        list[str],
        typer.Option(
            "--filter",
            metavar="KEY=VALUE",
            help="Keep runs whose config key (or status) has this value "
            "(repeatable), e.g. --filter model.init=he_normal.",
        ),
    ] = [],  # noqa: B006
    sort: Annotated[
        Optional[str],
        typer.Option("--sort", help="Sort by a column; prefix '-' for descending, e.g. --sort=-test_acc."),
    ] = None,
    group_by: Annotated[
        list[str],
        typer.Option("--group-by", metavar="KEY", help="Aggregate over everything but these config keys (repeatable)."),
    ] = [],  # noqa: B006
    columns: Annotated[
        Optional[str], typer.Option("--columns", help="Comma-separated columns to show, e.g. test_acc,verdict,profile.")
    ] = None,
    top: Annotated[Optional[int], typer.Option("--top", min=1, help="Show only the first N rows.")] = None,
    target: Annotated[
        float, typer.Option("--target", min=0.0, max=1.0, help="Test accuracy for the 'steps to' column.")
    ] = 0.9,
    layers: Annotated[
        Optional[Path],
        typer.Option(
            "--layers", help="Per-layer table of one run folder: every statistic at initialization and at the end."
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="table, csv, markdown, json, or html (one self-contained "
            "interactive page: sortable table, per-layer profiles with a step slider, "
            "training curves; needs the html extra).",
        ),
    ] = "table",
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            dir_okay=False,
            help="Write to this file instead of the screen (html: default report.html).",
        ),
    ] = None,
) -> None:
    """Tables of which setups keep signals healthy through depth and which train best."""
    import json as jsonmod

    from initlab.errors import ConfigError  # bad option values: exit 2
    from initlab.report import tables as reportmod
    from initlab.report.display import layer_tables, report_tables, wide_console

    formats = ("table", "csv", "markdown", "json", "html")
    if fmt not in formats:
        raise ConfigError(f"--format {fmt!r}: not one of {', '.join(formats)}")
    if fmt == "html" and layers is not None:
        raise ConfigError("--format html is of a set of runs, not --layers (use table, csv, markdown or json)")
    if fmt == "table" and output is not None:
        raise ConfigError("--output writes csv, markdown, json or html: give --format too")
    if layers is not None:
        data = reportmod.layer_report(layers)
        if fmt == "table":
            out = wide_console()
            for t in layer_tables(data, out.width):
                out.print(t)
        elif fmt == "json":
            _emit(jsonmod.dumps(reportmod.jsonable_layers(data), indent=2) + "\n", output)
        else:
            _emit(reportmod.layers_text(data, fmt), output)
        return
    rep = reportmod.build_report(
        paths or [Path("runs")],
        filters=filter_,
        group_by=group_by,
        sort=sort,
        columns=columns.split(",") if columns else None,
        top=top,
        target=target,
    )
    if fmt == "table":
        out = wide_console()
        for t in report_tables(rep, None if columns else out.width):  # --columns: exactly those
            out.print(t)
    elif fmt == "html":
        from rich.markup import escape

        from initlab.report import html_report
        from initlab.report.display import err_console

        path = html_report.write(rep, output or Path("report.html"))
        err_console.print(
            f"wrote {escape(str(path))} ({len(rep.rows)} rows, {len(rep.runs)} runs)", highlight=False, soft_wrap=True
        )
    else:
        _emit({"csv": reportmod.to_csv, "markdown": reportmod.to_markdown, "json": reportmod.to_json}[fmt](rep), output)


def _emit(text: str, output: Path | None) -> None:
    """A report's text on stdout, or into ``output`` (written atomically)."""
    if output is None:
        typer.echo(text, nl=False)
    else:
        from initlab.runfolder.storage import atomic_write

        atomic_write(output, text)


@app.command()
@guarded
def plot(
    paths: Annotated[
        list[Path], typer.Argument(help="Run folders and/or folders holding them (default: runs).")
    ] = None,  # type: ignore[assignment]
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="Comma-separated figures: profile (per-layer variance vs depth), "
            "curves (loss and accuracy vs step), heatmap (a metric over two config keys), "
            "histograms (per-layer distributions at one step; needs histograms.csv), "
            "colorful (per-layer histograms over training; needs histograms.csv), "
            "spectrum (Jacobian singular values vs isometry; needs jacobian.csv), "
            "underflow (zero or subnormal gradients per layer by number format), "
            "coordcheck (a coordinate-check statistic vs width, per layer and step; needs "
            "runs at several model.width with it in log.stats), transfer (test loss vs "
            "learning rate, one line per width).",
        ),
    ] = "profile,curves,heatmap",
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Folder for the PNGs (default: the first PATH).", file_okay=False)
    ] = None,
    steps: Annotated[
        str,
        typer.Option(
            "--steps",
            help="Steps drawn in the profile and spectrum (histograms: the "
            "first): init, end or step numbers, e.g. init,500,end.",
        ),
    ] = "init,end",
    x: Annotated[Optional[str], typer.Option("--x", help="Heatmap columns: a config key, e.g. model.depth.")] = None,
    y: Annotated[Optional[str], typer.Option("--y", help="Heatmap rows: a config key, e.g. model.init.")] = None,
    metric: Annotated[
        str,
        typer.Option(
            "--metric", help="Heatmap value: test_acc, test_loss, act_ratio_init, grad_ratio_init, steps_to_target, ..."
        ),
    ] = "test_acc",
    filter_: Annotated[
        list[str],
        typer.Option("--filter", metavar="KEY=VALUE", help="Keep runs whose config key has this value (repeatable)."),
    ] = [],  # noqa: B006
    quantity: Annotated[
        str,
        typer.Option(
            "--quantity",
            help="Histogrammed quantity of histograms and colorful: pre "
            "(pre-activation z), act (activation), grad (∂ℓ/∂z), weight.",
        ),
    ] = "act",
    stat: Annotated[
        str,
        typer.Option("--stat", help="Statistic of coordcheck: pre_delta_abs_mean (|z_t − z_0|) or act_abs_mean (|a|)."),
    ] = "pre_delta_abs_mean",
) -> None:
    """PNG figures: where signals vanish or explode across depth, training curves, heatmaps, distributions."""
    from initlab.report.display import console
    from initlab.report.plot import make_plots

    written = make_plots(
        paths or [Path("runs")],
        out=out,
        kinds=[k.strip() for k in kind.split(",") if k.strip()],
        steps=[s.strip() for s in steps.split(",") if s.strip()],
        x=x,
        y=y,
        metric=metric,
        filters=filter_,
        quantity=quantity,
        statistic=stat,
        on_skip=lambda k, why: console.print(f"skipped {k}: {why}", highlight=False, soft_wrap=True),
    )
    for path in written:
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)


@app.command()
@guarded
def theory(
    config: Annotated[
        Optional[Path], typer.Argument(help="Run config: predict its network layer by layer.", dir_okay=False)
    ] = None,
    set_: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE", help="Override a config value.")] = [],  # noqa: B006
    activation: Annotated[
        Optional[str],
        typer.Option("--activation", help="Without CONFIG: the activation of the phase diagram, e.g. tanh."),
    ] = None,
    sigma_b2: Annotated[float, typer.Option("--sigma-b2", min=0.0, help="Without CONFIG: bias variance σ_b².")] = 0.0,
    sigma_w2: Annotated[
        list[float],
        typer.Option("--sigma-w2", help="Without CONFIG: σ_w² values to tabulate (repeatable; default 0.25 to 4)."),
    ] = [],  # noqa: B006
    q0: Annotated[
        Optional[float],
        typer.Option(
            "--q0", min=0.0, help="With CONFIG: the input's second moment (default: measured on the probe batch)."
        ),
    ] = None,
    plot_path: Annotated[
        Optional[Path],
        typer.Option(
            "--plot",
            help="Without CONFIG: write the phase diagram (χ₁ and ξ_c against σ_w²) to this PNG.",
            dir_okay=False,
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Mean-field predictions (Poole et al. 2016; Schoenholz et al. 2017): per-layer variance and
    gradient ratio of a configured network, or the order-to-chaos phase diagram of an activation."""
    from initlab.report.display import console, phase_view, theory_config_view
    from initlab.theory import mean_field as th

    if config is not None:
        if activation is not None or sigma_w2 or plot_path is not None:
            raise InitlabError("give either CONFIG or --activation/--sigma-w2/--plot, not both")
        from initlab import config as cfgmod
        from initlab.train.theory_inputs import config_prediction

        cfg = cfgmod.load(config, set_)
        items = theory_config_view(config_prediction(cfg, data_dir, q0), cfg)
    elif activation is not None:
        from initlab.nn.activations import get_activation

        get_activation(activation, "--activation")
        if plot_path is not None:
            from initlab.report.plot import check_figure_path

            check_figure_path(plot_path)  # before the work
        table = th.phase_table(activation, sigma_b2, list(sigma_w2) or None)
        items = phase_view(table)
        if plot_path is not None:
            from initlab.report.plot import phase_figure, save

            save(phase_figure(table), plot_path)
            items.append(f"wrote {plot_path}")
    else:
        raise InitlabError("give a CONFIG, or --activation NAME [--sigma-b2 V] for a phase diagram")
    for item in items:
        console.print(item, highlight=False, soft_wrap=True)


@app.command()
@guarded
def export(
    fmt: Annotated[
        str,
        typer.Argument(
            metavar="FORMAT", help="Export format: tensorboard (TensorBoard event files; needs the tensorboard extra)."
        ),
    ],
    paths: Annotated[
        list[Path],
        typer.Argument(help="Run folders and/or folders holding them (searched recursively, as initlab report does)."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder to write into: one subfolder per run, named "
            "as the run folder (e.g. point tensorboard --logdir at it).",
        ),
    ],
) -> None:
    """Export run folders' metrics, per-layer statistics, histograms and Jacobian spectra to another tool."""
    from rich.progress import Progress

    from initlab.report import export as exportmod
    from initlab.report.display import console, err_console

    exporter, plan = exportmod.plan_export(fmt, paths, out)  # every error before anything is written
    done = []
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task(f"export {fmt}", total=len(plan))
        for run, target in plan:
            bar.update(task, description=f"export {fmt}: {run.name}")
            target.mkdir(parents=True, exist_ok=True)
            done.append(exporter.write(run, target))
            bar.advance(task)
    values = sum(done)
    console.print(f"exported {len(done)} runs ({values} values) as {fmt} into {out}", highlight=False, soft_wrap=True)


@data_app.command("fetch")
@guarded
def data_fetch(data_dir: DataDir = None) -> None:
    """Download MNIST from the public mirrors (if not already present) and verify it."""
    from initlab.data import mnist
    from initlab.report.display import console

    where = mnist.fetch(data_dir, progress=True)
    console.print(f"MNIST ready and verified in {where}", highlight=False, soft_wrap=True)


@data_app.command("check")
@guarded
def data_check(
    directory: Annotated[
        Optional[Path], typer.Argument(help="Folder to check (default: where initlab would look).", file_okay=False)
    ] = None,
) -> None:
    """Verify the four MNIST files (size and SHA-256 of the decompressed bytes)."""
    from rich.table import Table

    from initlab.data import mnist
    from initlab.report.display import console

    statuses = mnist.check(directory)
    table = Table(title=f"MNIST in {directory or mnist.resolve_dir(None)}", title_justify="left")
    for col in ("file", "status", "detail"):
        table.add_column(col)
    colours = {"ok": "green", "missing": "yellow", "corrupt": "red"}
    for s in statuses:
        table.add_row(s.name, f"[{colours[s.status]}]{s.status}[/]", s.detail)
    console.print(table)
    bad = [s for s in statuses if s.status != "ok"]
    if bad:
        raise InitlabError(
            f"{len(bad)} of {len(statuses)} MNIST files are missing or corrupt; "
            "run `initlab data fetch` (delete corrupt files first)"
        )


@config_app.command("keys")
@guarded
def config_keys(
    section: Annotated[
        Optional[str], typer.Option("--section", help="Only this section: data, model, train or log.")
    ] = None,
) -> None:
    """Every config key with its default, the values it accepts and its meaning; and each initializer's arguments."""
    from initlab.report.display import config_keys_view, console

    for item in config_keys_view(section):
        console.print(item)
