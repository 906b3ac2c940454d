"""JAX's persistent compilation cache, on by default for initlab.

XLA compiles every jitted program of a run (the training chunk with its statistics, evaluation, and the
small eager programs of initialization) anew in each process: about 3 s for a depth-10 MNIST run on
a 2-core CPU, which is most of a short run's wall time. With the persistent cache a compiled
program is written to disk, keyed by the program, the JAX/jaxlib version, the device and the
compile options, and a later process that compiles the same program (same config shapes) loads it
instead. The AOT path in ``initlab.train.loop`` (``fns.chunk.lower(...).compile()``) goes through the
same cache, so a repeated config's ``compile_time_s`` drops to the time of a disk read.

Where: ``$XDG_CACHE_HOME/initlab/jax``, else ``~/.cache/initlab/jax``. Every program is cached,
whatever its compile time (``jax_persistent_cache_min_compile_time_secs = 0``; JAX's default of 1 s
would skip most of initlab's programs on a small net) and size. The folder is not size-limited
(JAX's LRU eviction needs the optional ``filelock`` package): delete it whenever you like, it is
refilled on demand.

Opt out with ``INITLAB_NO_COMPILE_CACHE=1``. A cache location chosen by the user
(``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is respected, not replaced, and so are the
thresholds set in JAX's environment variables.

The cache must be configured before the process compiles anything (JAX decides once per process
whether to use it), so the CLI calls ``enable_compilation_cache()`` first thing. When JAX is not
imported yet, the settings go into JAX's environment variables, which it reads at import: commands
that never touch JAX (``initlab report``) do not pay for importing it, and worker processes inherit
the setting. Security note from JAX's documentation: the cache is trusted code, so it lives in the
user's own cache directory, never in a shared one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

OPT_OUT_ENV = "INITLAB_NO_COMPILE_CACHE"

# jax.config option → value; JAX reads each also from the environment variable of its name in
# upper case (JAX_COMPILATION_CACHE_DIR, ...) when it is imported.
MIN_COMPILE_TIME_S = 0.0
MIN_ENTRY_SIZE_BYTES = -1  # no size threshold


def cache_dir() -> Path:
    """Where initlab keeps compiled programs: ``$XDG_CACHE_HOME/initlab/jax`` or ``~/.cache/initlab/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "initlab" / "jax"


def opted_out() -> bool:
    """True when ``INITLAB_NO_COMPILE_CACHE`` is set to anything but empty, 0, false or no."""
    return os.environ.get(OPT_OUT_ENV, "").strip().lower() not in ("", "0", "false", "no")


def enable_compilation_cache(path: str | Path | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache in ``path`` (default ``cache_dir()``).

    Returns the cache folder in use, or None when opted out. Call it before anything is compiled;
    a folder the user already gave JAX wins over ``path``.
    """
    if opted_out():
        return None
    settings = {
        "jax_persistent_cache_min_compile_time_secs": MIN_COMPILE_TIME_S,
        "jax_persistent_cache_min_entry_size_bytes": MIN_ENTRY_SIZE_BYTES,
    }
    if "jax" in sys.modules:
        import jax

        current = jax.config.jax_compilation_cache_dir
        target = Path(current) if current else Path(path) if path is not None else cache_dir()
        for name, value in {"jax_compilation_cache_dir": str(target), **settings}.items():
            jax.config.update(name, value)
        return target
    current = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    target = Path(current) if current else Path(path) if path is not None else cache_dir()
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(target)
    for name, value in settings.items():
        os.environ.setdefault(name.upper(), str(value))
    return target
