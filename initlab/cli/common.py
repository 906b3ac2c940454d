"""What every `initlab` command shares: the typer app and its groups (``data``, ``config``), usage
errors as one line, ``guarded`` (library errors, Ctrl-C and SIGTERM as one line and an exit code),
the options more than one command takes, and the ``--version`` callback."""

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
