"""The one exception type library code raises; the CLI turns it into a one-line error."""

from __future__ import annotations


class InitlabError(Exception):
    """A failure the user can act on (missing data, an existing run folder, a diverged setup).

    The message is a single actionable line. The CLI prints it in red and exits with ``exit_code``.
    """

    exit_code = 1
    # A message longer than this (a huge value echoed back) keeps its start (the key, the value's
    # beginning) and its end (what is allowed), and says how much was cut.
    max_length = 1000

    def __init__(self, message: str = ""):
        message = str(message)
        if len(message) > self.max_length:
            head, tail = message[:700], message[-200:]
            message = f"{head} … ({len(message) - 900} characters cut) … {tail}"
        super().__init__(message)


def describe_os_error(e: OSError) -> str:
    """One line for a filesystem failure: the file, what went wrong and what to do."""
    import errno

    hints = {
        errno.ENOSPC: "the disk is full; free space and run again, finished runs are kept",
        errno.EDQUOT: "over the disk quota; free space and run again, finished runs are kept",
        errno.EACCES: "no permission; choose a folder you can write (--out)",
        errno.EPERM: "not permitted; choose a folder you can write (--out)",
        errno.EROFS: "a read-only filesystem; choose another folder (--out)",
        errno.ENOTDIR: "a file is in the way where a folder belongs",
        errno.EISDIR: "a folder is in the way where a file belongs",
    }
    where = f"{e.filename}: " if e.filename else ""
    what = e.strerror or type(e).__name__
    hint = hints.get(e.errno)
    return f"{where}{what}" + (f" ({hint})" if hint else "")


class ConfigError(InitlabError):
    """Bad input in a configuration: names the dotted key, the value given and what is allowed."""

    exit_code = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread (``initlab.cli``) so that a terminated run or sweep ends
    the way Ctrl-C ends it: partial results written, status ``interrupted``."""

    def __init__(self, signum: int = 15):
        super().__init__("terminated by a signal (SIGTERM)")
        self.signum = signum


# An exception raised by a signal handler can land where Python swallows it (a garbage-collector
# callback such as JAX's prints "Exception ignored in ... KeyboardInterrupt"). So every handler of
# initlab's also notes the signal, and the program checks the note at each point where it can
# stop cleanly (``check_interrupted``): before the data load, before the folder is claimed, when
# training starts and wherever training looks in on the host.
_noted: list[int] = []


def note_interrupt(signum: int) -> None:
    """Remember that SIGINT or SIGTERM (``signum``) arrived, should its exception be swallowed."""
    _noted.append(signum)


def clear_interrupts() -> None:
    """The interruption reached its handler (or the command ended): nothing is pending any more."""
    _noted.clear()


def interrupt_for(signum: int) -> KeyboardInterrupt:
    """The exception a signal raises: ``Terminated`` for SIGTERM, ``KeyboardInterrupt`` otherwise."""
    import signal

    return Terminated(signum) if signum == signal.SIGTERM else KeyboardInterrupt()


def check_interrupted() -> None:
    """Raise the interruption whose exception was swallowed, if any (once)."""
    if _noted:
        signum = _noted[-1]
        _noted.clear()
        raise interrupt_for(signum)


def importing(frame) -> bool:
    """Whether ``frame`` runs inside an import. An exception raised there by a signal can leave a
    native extension half-initialized (JAX's MLIR libraries crashed with SIGSEGV or SIGABRT when
    Ctrl-C landed in their module setup), so handlers only note a signal during an import and the
    next ``check_interrupted`` raises it."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def noting_handler(signum: int, frame) -> None:
    """SIGINT and SIGTERM while a command runs: note it, then raise it (KeyboardInterrupt or
    ``Terminated``) so that the command ends as Ctrl-C ends it; inside an import it is only noted
    (``importing``)."""
    note_interrupt(signum)
    if not importing(frame):
        raise interrupt_for(signum)


def deferring_handler(signum: int, frame) -> None:
    """SIGINT and SIGTERM while the program starts (imports, option parsing): only note it; the
    command raises it as soon as it begins (``check_interrupted``), where it can end cleanly."""
    note_interrupt(signum)


class InterruptGate:
    """Ctrl-C and SIGTERM during a training loop: raised at once while the device trains a chunk
    (inside ``opened()``), held back while the host books the chunk's results and raised at the
    next ``check()``. So an interruption never lands half-way through the books, and the last
    chunk stop stays a consistent point to checkpoint from. Only signals whose handler already
    raises in Python are taken over (Ctrl-C's ``KeyboardInterrupt``, the CLI's SIGTERM handler; not
    an ignored SIGINT nor SIGTERM's default kill), and only in the main thread."""

    def __init__(self) -> None:
        self.pending: BaseException | None = None
        self.open = False
        self.previous: dict = {}

    def __enter__(self) -> "InterruptGate":
        import signal
        import threading

        check_interrupted()  # one that arrived while the run was set up (its raise swallowed) ends it here
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                if callable(signal.getsignal(signum)):
                    self.previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        import signal

        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            clear_interrupts()  # it was delivered: a later run in this process must not see it again

    def _handler(self, signum: int, frame) -> None:
        exc = interrupt_for(signum)
        if not self.open or importing(frame):
            self.pending = self.pending or exc
            return
        note_interrupt(signum)  # should this raise be swallowed, training's next look-in raises it
        raise exc

    def check(self) -> None:
        """Raise the interruption held back since the last check, or one whose raise was swallowed."""
        check_interrupted()
        if self.pending is not None:
            exc, self.pending = self.pending, None
            raise exc

    def opened(self) -> "_Opened":
        """While the device trains: an interruption raises at once (one held back raises first)."""
        return _Opened(self)


class _Opened:
    def __init__(self, gate: InterruptGate):
        self.gate = gate

    def __enter__(self) -> None:
        self.gate.check()
        self.gate.open = True

    def __exit__(self, exc_type, exc, tb) -> None:
        self.gate.open = False
        if exc_type is None:
            check_interrupted()  # a signal whose raise was swallowed (a GC callback) raises here, still consistent
