"""initlab: a laboratory for initialization, normalization and signal propagation in deep MLPs.

The Python API (``initlab.api``) is available from the package itself: ``initlab.load_config``,
``initlab.run``, ``initlab.sweep``, ``initlab.open_run``, ``initlab.open_runs`` and the ``Run`` and
``Runs`` they return. They are imported on first use, so that ``import initlab`` stays light (the
CLI sets JAX's options before JAX loads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = ("Run", "Runs", "load_config", "open_run", "open_runs", "run", "sweep")
__all__ = [
    "Run",
    "Runs",
    "load_config",
    "open_run",
    "open_runs",
    "run",
    "sweep",
    "InitlabError",
    "ConfigError",
    "__version__",
]

if TYPE_CHECKING:
    from initlab.api import Run, Runs, load_config, open_run, open_runs, run, sweep  # noqa: F401
    from initlab.errors import ConfigError, InitlabError  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _API:
        from initlab import api

        return getattr(api, name)
    if name in ("InitlabError", "ConfigError"):
        from initlab import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'initlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names and the API it loads on first use, so ``dir(initlab)`` and tab
    completion show ``run``, ``open_runs``, ...; nothing is imported to list them."""
    return sorted({*globals(), *__all__})
