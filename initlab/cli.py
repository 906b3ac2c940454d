"""The `initlab` command. Thin: each command parses options, calls one library function and
renders what it returns. Library errors become one red line and an exit code (2: bad config,
1: runtime failure)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from initlab import __version__
from initlab.errors import InitlabError

app = typer.Typer(help="A laboratory for initialization, normalization and signal propagation in deep MLPs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Download and verify the MNIST files.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Folder holding the MNIST files (default: $INITLAB_DATA_DIR, then the user cache).",
    file_okay=False)]


def guarded(fn):
    """Turn library errors into a one-line message and an exit code; no traceback reaches users
    (set INITLAB_DEBUG=1 to see one)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from initlab.display import err_console

        try:
            return fn(*args, **kwargs)
        except InitlabError as e:
            err_console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[red]interrupted[/]: partial results were kept", highlight=False)
            raise typer.Exit(130) from None
        except Exception as e:
            if os.environ.get("INITLAB_DEBUG"):
                raise
            err_console.print(f"[red]internal error:[/] {type(e).__name__}: {e} (set INITLAB_DEBUG=1 for the "
                              "traceback)", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"initlab {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    """initlab: train JAX MLPs on MNIST and watch signals flow forward and gradients flow back."""


@app.command()
@guarded
def run(
    config: Annotated[Path, typer.Argument(help="YAML run config (see configs/).", dir_okay=False)],
    set_: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE",
                                            help="Override a config value, e.g. --set model.depth=50 (repeatable).")] = [],  # noqa: B006
    data_dir: DataDir = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Folder for run folders (overrides log.out).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo a run whose folder already exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or layer table.")] = False,
) -> None:
    """Train one configuration and log per-layer statistics from initialization to the end."""
    from initlab import config as cfgmod
    from initlab import experiment
    from initlab.display import console, layer_table, run_summary_lines, training_progress

    overrides = list(set_) + ([f"log.out={out}"] if out is not None else [])
    cfg = cfgmod.load(config, overrides)
    with training_progress(cfg.name, enabled=not quiet) as progress:
        summary = experiment.run(cfg, data_dir=data_dir, force=force, on_progress=progress,
                                 download_progress=not quiet)
    if not quiet:
        console.print(layer_table(summary))
    for line in run_summary_lines(summary):
        console.print(line, highlight=False, soft_wrap=True)


@data_app.command("fetch")
@guarded
def data_fetch(data_dir: DataDir = None) -> None:
    """Download MNIST from the public mirrors (if not already present) and verify it."""
    from initlab import mnist
    from initlab.display import console

    where = mnist.fetch(data_dir, progress=True)
    console.print(f"MNIST ready and verified in {where}", highlight=False, soft_wrap=True)


@data_app.command("check")
@guarded
def data_check(
    directory: Annotated[Optional[Path], typer.Argument(
        help="Folder to check (default: where initlab would look).", file_okay=False)] = None,
) -> None:
    """Verify the four MNIST files (size and SHA-256 of the decompressed bytes)."""
    from rich.table import Table

    from initlab import mnist
    from initlab.display import console

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
        raise InitlabError(f"{len(bad)} of {len(statuses)} MNIST files are missing or corrupt; "
                           "run `initlab data fetch` (delete corrupt files first)")
