"""The `initlab` command. Thin: each command parses options, calls one library function and
renders what it returns. Library errors become one red line and an exit code (2: bad config,
1: runtime failure)."""

# Each submodule registers its commands on ``app`` as it loads: this order is the order ``--help`` lists them in.
# isort: off
from initlab.cli import runs  # noqa: F401  run, sweep
from initlab.cli import results  # noqa: F401  report, plot, theory, export
from initlab.cli import reference  # noqa: F401  data, config

# isort: on
from initlab.cli.common import app

__all__ = ["app"]
