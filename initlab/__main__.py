"""Where the `initlab` command and `python -m initlab` start: Ctrl-C and SIGTERM are noted from
the first moment (``errors.deferring_handler``), so one that arrives while Python imports the
command line is not lost or shown as a traceback: the command raises it as soon as it begins, and
exits 130 (143 for SIGTERM) with a one-line message."""

import signal
import sys

from initlab.errors import Terminated, check_interrupted, deferring_handler


def main() -> None:
    """Run the command line with initlab's signal handling in place."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # an ignored SIGINT (nohup) stays ignored
            signal.signal(signum, deferring_handler)
    sys.unraisablehook = _noted_interrupts_are_not_news(sys.unraisablehook)
    code: int | str | None = 0
    try:
        from initlab.cli import app

        app(prog_name="initlab")
    except SystemExit as e:
        code = e.code
    except KeyboardInterrupt as e:
        code = _interrupted(e)
    try:
        check_interrupted()  # noted where no command was there to raise it (option parsing, --help)
    except KeyboardInterrupt as e:
        code = _interrupted(e)
    if code in (130, 143) and "ray" not in sys.modules:  # Ray's own exit hook stops a local cluster
        _leave_at_once(code)
    sys.exit(code)


def _leave_at_once(code: int) -> None:
    """End an interrupted command without the interpreter's clean-up. Everything the run keeps is
    written and closed before this point; what is left is tearing down JAX's runtime, and an
    interruption can land while XLA's threads are mid-work, which made the teardown crash with
    SIGSEGV once in about a thousand interrupted runs (CI, under load). Exit 130 or 143 is the
    answer the user asked for, so it is given directly."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _noted_interrupts_are_not_news(hook):
    """An interruption raised where Python cannot raise it (JAX's garbage-collector callback) would
    print "Exception ignored in ..."; it was noted, and the command raises it at its next check."""

    def quiet(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            hook(unraisable)

    return quiet


def _interrupted(e: KeyboardInterrupt) -> int:
    terminated = isinstance(e, Terminated)
    print("terminated" if terminated else "interrupted", file=sys.stderr)
    return 143 if terminated else 130


if __name__ == "__main__":
    main()
