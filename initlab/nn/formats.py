"""Number formats: the dtype a network's forward and backward pass compute in (``model.dtype``).

A format is an experimental variable: a gradient that is small in exact arithmetic is zero in a
narrow format, and "things that seem to be mathematically feasible are in fact impossible with
floating point numbers" (LeCun, Bottou, Orr & Müller 1998, Efficient BackProp). The formats:

- ``float32``: IEEE 754 single precision (8 exponent bits, 23 mantissa bits), the default;
- ``bfloat16``: Google Brain's brain float (Kalamkar et al. 2019): float32's 8 exponent bits, so
  float32's range, with 7 mantissa bits (about 2-3 significant decimal digits);
- ``float16``: IEEE 754 half precision (5 exponent bits, 10 mantissa bits): smallest normal number
  2^-14 ≈ 6.1e-5, smallest subnormal 2^-24 ≈ 6.0e-8, largest finite 65504;
- ``float64``: IEEE 754 double precision, through JAX's x64 mode, switched on for that run only
  (``context``).

Mixed precision (Micikevicius et al. 2018, "Mixed precision training"), the default
(``model.precision: mixed``): the parameters and the optimizer state are float32 master copies,
cast to the compute format for each forward/backward pass; the gradient comes back to float32
before the update. ``pure`` keeps the parameters (and so the optimizer state) in the compute
format itself. In both, the normalizations' statistics and the loss are computed in ``wide``
(float32, or float64 for float64 runs), the recipe's rule for reductions. Parameters are always
drawn in float32 (the same initial values in every format), then cast.

This module imports the registry and nothing above it.

References: docs/references.md [lecun1998efficient], [kalamkar2019], [micikevicius2018].
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from initlab.registry import Registry

PRECISIONS = ("mixed", "pure")


@dataclass(frozen=True)
class Format:
    """One number format: its doc, the jnp dtype's name and whether it needs JAX's x64 mode. What
    else the program needs to know of it follows from its dtype: whether it is ``narrow`` (loss
    scaling applies, the Jacobian's spectrum is taken in ``wide``), whether it ``holds`` a number,
    and how numpy stores its arrays (``storable``)."""

    doc: str
    dtype: str
    x64: bool = False

    @property
    def finfo(self) -> Any:
        with context_for(self):
            return jnp.finfo(jnp.dtype(self.dtype))

    @property
    def smallest_normal(self) -> float:
        return float(self.finfo.smallest_normal)

    @property
    def smallest_subnormal(self) -> float:
        return float(self.finfo.smallest_subnormal)

    @property
    def largest(self) -> float:
        return float(self.finfo.max)

    @property
    def narrow(self) -> bool:
        """Whether the format is narrower than float32 (float16's range, bfloat16's precision): loss
        scaling applies, and statistics that are properties of the weights, not of the format's
        rounding (the Jacobian's spectrum), are taken in ``wide``."""
        return wide(jnp.dtype(self.dtype)) != jnp.dtype(self.dtype)

    @property
    def wide_name(self) -> str:
        """The name of ``wide`` of the format: float32 for a narrow one, the format itself otherwise."""
        return jnp.dtype(wide(jnp.dtype(self.dtype))).name

    def holds(self, x: float) -> bool:
        """Whether the positive number ``x`` is not rounded to zero in the format."""
        return x > self.smallest_subnormal / 2

    @property
    def mantissa_bits(self) -> int:
        """Explicitly stored fraction bits (the significand has one more)."""
        return int(self.finfo.nmant)


FORMATS: Registry[Format] = Registry(
    "number format",
    {
        "float32": Format("IEEE 754 single precision: 8 exponent bits, 23 mantissa bits (the default)", "float32"),
        "bfloat16": Format("bfloat16: float32's 8 exponent bits (its range), 7 mantissa bits", "bfloat16"),
        "float16": Format(
            "IEEE 754 half precision: 5 exponent bits (smallest normal 6.1e-5, largest 65504), 10 mantissa bits",
            "float16",
        ),
        "float64": Format(
            "IEEE 754 double precision: 11 exponent bits, 52 mantissa bits (JAX's x64 mode, for that run only)",
            "float64",
            x64=True,
        ),
    },
)


def narrow_names() -> list[str]:
    """The narrow formats (``Format.narrow``), narrowest range first: where loss scaling applies."""
    return sorted((n for n, f in FORMATS.items() if f.narrow), key=lambda n: FORMATS[n].largest)


def get_format(name: str, key: str = "model.dtype") -> Format:
    """The format called ``name`` (ConfigError listing the valid names otherwise)."""
    return FORMATS.get(name, key)


def context_for(fmt: Format) -> contextlib.AbstractContextManager:
    """JAX's x64 mode for a float64 format, switched on for the block only; nothing otherwise."""
    return jax.enable_x64(True) if fmt.x64 else contextlib.nullcontext()


def context(name: str) -> contextlib.AbstractContextManager:
    """``context_for`` the format called ``name``: everything a run of it traces, compiles and
    runs must happen inside (a function traced under x64 runs only under x64)."""
    return context_for(get_format(name))


def compute_dtype(name: str) -> jnp.dtype:
    """The dtype the forward and backward pass compute in."""
    return jnp.dtype(get_format(name).dtype)


def wide(dtype: Any) -> jnp.dtype:
    """The dtype of reductions that the mixed-precision recipe keeps wide (normalization
    statistics, the loss): float32, or the compute dtype where it is wider."""
    return jnp.promote_types(dtype, jnp.float32)


def param_dtype(name: str, precision: str) -> jnp.dtype:
    """The dtype parameters and optimizer state are kept in: ``wide`` master copies under mixed
    precision, the compute dtype itself under pure."""
    compute = compute_dtype(name)
    return compute if precision == "pure" else wide(compute)


def storable(x: Any) -> Any:
    """``x`` as numpy stores it: a format numpy has no type of its own for (bfloat16, ml_dtypes'
    formats: a void type to numpy) widened to float32, which is exact; anything else unchanged."""
    return x.astype("float32") if x.dtype.kind == "V" else x


def cast(tree: Any, dtype: Any) -> Any:
    """``tree`` with its floating-point leaves in ``dtype`` (integer leaves untouched)."""

    def one(v):
        return v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v

    return jax.tree.map(one, tree)


def underflow(x: jax.Array) -> jax.Array:
    """The fraction of ``x``'s entries that are zero or subnormal in its own dtype (|x| below
    the dtype's smallest normal number; NaN is not counted). Exact whether or not the backend
    flushes subnormals to zero: a flushed value is zero, and counts the same."""
    return jnp.mean((jnp.abs(x) < jnp.finfo(x.dtype).smallest_normal).astype(jnp.float32))


def overflow(x: jax.Array) -> jax.Array:
    """The fraction of ``x``'s entries that are ±inf."""
    return jnp.mean(jnp.isinf(x).astype(jnp.float32))
