"""The one exception type library code raises; the CLI turns it into a one-line error."""

from __future__ import annotations


class InitlabError(Exception):
    """A failure the user can act on (missing data, an existing run folder, a diverged setup).

    The message is a single actionable line. The CLI prints it in red and exits with ``exit_code``.
    """

    exit_code = 1


class ConfigError(InitlabError):
    """Bad input in a configuration: names the dotted key, the value given and what is allowed."""

    exit_code = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread (``initlab.cli``) so that a terminated run or sweep ends
    the way Ctrl-C ends it: partial results written, status ``interrupted``."""

    def __init__(self, signum: int = 15):
        super().__init__("terminated by a signal (SIGTERM)")
        self.signum = signum
