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
