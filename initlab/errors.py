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


class ConfigError(InitlabError):
    """Bad input in a configuration: names the dotted key, the value given and what is allowed."""

    exit_code = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread (``initlab.cli``) so that a terminated run or sweep ends
    the way Ctrl-C ends it: partial results written, status ``interrupted``."""

    def __init__(self, signum: int = 15):
        super().__init__("terminated by a signal (SIGTERM)")
        self.signum = signum
