"""Fixed histogram bins for the per-layer histograms (``Statistic.histogram``): ``LinearBins`` over a
range, ``Log2Bins`` one per binary exponent of float32, and ``make_bins``, which picks a histogram's
bins (``pre``, ``act`` or ``log2``). ``counts`` bins an array's values on the device.

This module reads arrays only: it imports the activation registry and nothing above it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from initlab.nn.activations import Shape, image

PRE_RANGE = (-5.0, 5.0)  # linear bins of the pre-activation z (the same for every activation)
ACT_CAP = 5.0  # where the linear bins of an activation unbounded on a side stop (outside: over/underflow)
# Float32's binary exponents: subnormals start at 2^-149, the largest finite value is below 2^128.
E_MIN, E_MAX = -149, 127


def _order_key(x: jax.Array) -> jax.Array:
    """int32 keys ordered as the float32 values x (not NaN) are, subnormals included; -0 = +0."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    return jnp.where(bits >= 0, bits, -(bits & jnp.int32(0x7FFFFFFF)))


class LinearBins:
    """``n`` equal bins over [lo, hi] (the last closed on the right), then an underflow bin (x < lo),
    an overflow bin (x > hi, +inf included) and a NaN bin: counts[0] underflow, counts[1..n] the
    bins, counts[n+1] overflow, counts[n+2] NaN. Fixed edges, so histograms of different layers,
    steps and runs can be compared and added."""

    def __init__(self, lo: float, hi: float, n: int):
        self.lo, self.hi, self.n = float(lo), float(hi), int(n)
        self.size = self.n + 3
        # The edges values are compared with: numpy.histogram's for float32 values (float64
        # linspace rounded to float32), so a value is in bin i exactly when numpy puts it there.
        self.edges32 = np.linspace(self.lo, self.hi, self.n + 1).astype(np.float32)

    def index(self, x: jax.Array) -> jax.Array:
        """Each value's count index: bin i (1..n) where edges32[i−1] ≤ x < edges32[i] (the last
        bin also takes x = hi), as ``numpy.histogram`` bins the same float32 values. The scaled
        position is a guess within one bin of the truth (its rounding puts −1e-8 at 0's edge, not
        below it); comparing with the edges either side settles it."""
        x = x.astype(jnp.float32)
        nan = jnp.isnan(x)
        # compared as ordered integers: XLA on CPU flushes subnormals to zero in float comparisons
        k, e = _order_key(jnp.where(nan, 0.0, x)), _order_key(jnp.asarray(self.edges32))  # e: (n + 1,)
        t = jnp.floor((jnp.where(nan, self.lo, x) - self.lo) * (self.n / (self.hi - self.lo)))
        i = jnp.clip(t, 0, self.n - 1).astype(jnp.int32)
        i = jnp.where((k < e[i]) & (i > 0), i - 1, i)
        i = jnp.where((k >= e[i + 1]) & (i < self.n - 1), i + 1, i)
        i = jnp.where(k < e[0], 0, jnp.where(k > e[-1], self.n + 1, i + 1))
        return jnp.where(nan, self.n + 2, i)

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Each bin's nominal (lo, hi) in count order (NaN for the NaN bin): histograms.csv's
        edges; ``index`` compares with them rounded to float32 (``edges32``)."""
        e = self.lo + (self.hi - self.lo) * np.arange(self.n + 1) / self.n
        lo = np.concatenate([[-np.inf], e[:-1], [self.hi, np.nan]])
        hi = np.concatenate([[self.lo], e[1:], [np.inf, np.nan]])
        return lo, hi


class Log2Bins:
    """Sign-symmetric bins, one per binary exponent of float32 (as TensorBoard's exponential
    buckets, with exact edges): -inf; -[2^e, 2^(e+1)) for e from 127 down to -149 (subnormals
    included); exact zeros; +[2^e, 2^(e+1)) for e from -149 to 127; +inf; NaN. Every float32 lands
    in exactly one bin, read off its bits (no rounding, and not flushed to zero with the
    subnormals), so a histogram also gives, for any number format, the share of values below its
    smallest normal or subnormal number."""

    n_exp = E_MAX - E_MIN + 1
    size = 2 * n_exp + 4
    zero = n_exp + 1

    def index(self, x: jax.Array) -> jax.Array:
        bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
        mag = bits & jnp.uint32(0x7FFFFFFF)
        biased = (mag >> 23).astype(jnp.int32)
        mant = mag & jnp.uint32(0x7FFFFF)
        top = 31 - jax.lax.clz(mant).astype(jnp.int32)  # highest set bit of a subnormal's mantissa
        e = jnp.where(biased > 0, biased - 127, top + E_MIN)
        neg = (bits >> 31) == 1
        i = jnp.where(neg, 1 + (E_MAX - e), self.zero + 1 + (e - E_MIN))
        i = jnp.where(mag == 0, self.zero, i)
        inf = (biased == 255) & (mant == 0)
        i = jnp.where(inf, jnp.where(neg, 0, self.size - 2), i)
        return jnp.where((biased == 255) & (mant != 0), self.size - 1, i)

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        e = np.arange(E_MIN, E_MAX + 1, dtype=np.float64)
        pos_lo, pos_hi = np.exp2(e), np.exp2(e + 1)
        lo = np.concatenate([[-np.inf], -pos_hi[::-1], [0.0], pos_lo, [np.inf, np.nan]])
        hi = np.concatenate([[-np.inf], -pos_lo[::-1], [0.0], pos_hi, [np.inf, np.nan]])
        return lo, hi


Bins = LinearBins | Log2Bins


def counts(bins: Bins, x: jax.Array) -> jax.Array:
    """How many of ``x``'s values fall in each bin: (bins.size,) float32 (exact up to 2^24 values)."""
    idx = bins.index(jnp.reshape(x, (-1,)))
    return jnp.zeros((bins.size,), jnp.int32).at[idx].add(1, mode="promise_in_bounds").astype(jnp.float32)


def activation_range(activation: str, shape: Shape | None = None) -> tuple[float, float]:
    """The activation's image (shaped by ``shape``), capped at ±``ACT_CAP`` where it is unbounded:
    the range of its linear bins."""
    lo, hi = image(activation, shape)
    return max(lo, -ACT_CAP), min(hi, ACT_CAP)


def make_bins(kind: str, activation: str, n: int, shape: Shape | None = None) -> Bins:
    """The bins of a histogram: ``pre`` (linear over ``PRE_RANGE``), ``act`` (linear over the
    activation's image, shaped by ``shape``) or ``log2``."""
    if kind == "log2":
        return Log2Bins()
    lo, hi = PRE_RANGE if kind == "pre" else activation_range(activation, shape)
    return LinearBins(lo, hi, n)
