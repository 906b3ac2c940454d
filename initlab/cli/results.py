"""The commands that read run folders or predict, and render: ``report`` (tables), ``plot``
(figures), ``theory`` (mean-field predictions) and ``export`` (to another tool)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from initlab.cli.common import DataDir, app, guarded
from initlab.errors import InitlabError


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
    from initlab.errors import ConfigError  # bad option values: exit 2
    from initlab.report import tables as reportmod
    from initlab.report.display import report_tables, wide_console

    formats = ("table", "csv", "markdown", "json", "html")
    if fmt not in formats:
        raise ConfigError(f"--format {fmt!r}: not one of {', '.join(formats)}")
    if fmt == "html" and layers is not None:
        raise ConfigError("--format html is of a set of runs, not --layers (use table, csv, markdown or json)")
    if fmt == "table" and output is not None:
        raise ConfigError("--output writes csv, markdown, json or html: give --format too")
    if layers is not None:
        _layer_report(layers, fmt, output)
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


def _layer_report(layers: Path, fmt: str, output: Path | None) -> None:
    """``report --layers``: one run folder's per-layer table, on the screen or as ``fmt`` text."""
    import json as jsonmod

    from initlab.report import tables as reportmod
    from initlab.report.display import layer_tables, wide_console

    data = reportmod.layer_report(layers)
    if fmt == "table":
        out = wide_console()
        for t in layer_tables(data, out.width):
            out.print(t)
    elif fmt == "json":
        _emit(jsonmod.dumps(reportmod.jsonable_layers(data), indent=2) + "\n", output)
    else:
        _emit(reportmod.layers_text(data, fmt), output)


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
