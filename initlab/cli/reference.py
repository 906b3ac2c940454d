"""The command groups around the experiments: ``data`` (fetch and check MNIST) and ``config`` (the
configuration reference)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from initlab.cli.common import DataDir, config_app, data_app, guarded
from initlab.errors import InitlabError


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
