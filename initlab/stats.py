"""Per-layer statistics of activations, gradients and weights: one registry, each statistic
declared once.

A ``Statistic`` says what it measures (its doc, shared by the README and layers.csv), what it reads
and how many numbers it gives per layer:

- ``forward``: one layer's pre-activation z and output a (batch, units), inside the layer scan;
- ``backward``: the back-propagated gradient of each example's own loss, ∂ℓ_i/∂z (batch, units),
  inside the backward pass (``initlab.model.grad_tap``), so no (depth × batch × width) gradient is
  ever stored;
- ``weights``: each layer's weight matrix W and the gradient ∂L/∂W of the mean loss, flattened;
- ``update``: W and the weights W_prev of the previous logged step.

A ``Layout`` is the selection a run computes (``log.stats``, plus the signal statistics that the
divergence check reads, ``signal_names()``, always): the rows of the per-layer table that a logged step brings to
the host in one transfer, and the columns of ``layers.csv``. A statistic of ``size`` k > 1 (a
histogram, say) takes k rows of the table and is written to a tidy file of its own rather than to
columns. What the statistics are, from the literature: pre-activation and activation moments
(Glorot & Bengio 2010, Figs. 3-4; He et al. 2015), the variance of the back-propagated gradient
(Glorot & Bengio 2010, Fig. 7), weight and weight-gradient magnitudes, the update-to-weight ratio,
saturated and dead units, unit symmetry, and the 15th/50th/85th percentiles of one unit's input
(Ioffe & Szegedy 2015, Fig. 1).

This module reads arrays only: it imports the activation registry and nothing above it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from initlab.activations import derivative, get_activation, max_slope
from initlab.registry import Registry

READS = ("forward", "backward", "weights", "update")
# Percentiles of one unit's input over the batch (Ioffe & Szegedy 2015, Fig. 1b-c).
PERCENTILES = (15.0, 50.0, 85.0)


class Forward(NamedTuple):
    """What a forward statistic sees of one layer (float32 copies): z, a, and the quantities that
    several statistics share, computed once (XLA drops any that no selected statistic reads)."""

    z: jax.Array  # (batch, units): the pre-activation, the nonlinearity's input
    a: jax.Array  # (batch, units): the layer's output
    saturated: jax.Array  # (batch, units) bool: |φ'(z)| below 1% of the activation's largest slope
    unit_percentiles: jax.Array  # (len(PERCENTILES),): of the first unit's z over the batch


@dataclass(frozen=True)
class Statistic:
    """One per-layer statistic.

    ``fn`` by ``reads``: forward ``fn(Forward) -> () or (size,)``; backward ``fn(g) -> () or
    (size,)`` with g (batch, units) each example's gradient ∂ℓ_i/∂z; weights ``fn(w, gw)`` and
    update ``fn(w, w_prev)`` with (layers, fan_in · fan_out) blocks of flattened matrices ->
    (layers,) or (layers, size). ``signal``: "forward" or "backward" for the statistics whose
    finiteness says whether the signal survived (a run with one non-finite has diverged).
    ``hidden_only``: undefined (NaN) on the output layer, which has no nonlinearity.
    ``default``: computed unless ``log.stats`` says otherwise."""

    doc: str
    reads: str
    fn: Callable[..., jax.Array]
    size: int = 1
    signal: str | None = None
    hidden_only: bool = False
    default: bool = True

    def __post_init__(self):
        if self.reads not in READS:
            raise ValueError(f"Statistic.reads: {self.reads!r} is not one of {', '.join(READS)}")


def _frobenius(b: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(b), axis=1))


def _symmetry(f: Forward) -> jax.Array:
    """The share of the activation variance common to all units: the variance over examples of
    the mean over units, over the total variance. Undefined (NaN) for a dead layer (variance 0)."""
    total = jnp.var(f.a)
    shared = jnp.var(jnp.mean(f.a, axis=1))
    return jnp.where(total > 0, shared / jnp.where(total > 0, total, 1.0), jnp.nan)


def _unit_percentile(i: int) -> Callable[[Forward], jax.Array]:
    """The ``PERCENTILES[i]`` percentile of the first unit's z (the three share one sort)."""
    return lambda f: f.unit_percentiles[i]


def _update_ratio(w: jax.Array, w_prev: jax.Array) -> jax.Array:
    prev_norm = _frobenius(w_prev)
    delta = _frobenius(w - w_prev)
    return jnp.where(prev_norm > 0, delta / jnp.where(prev_norm > 0, prev_norm, 1.0), jnp.nan)


# Every variance is two-pass (jnp.var: the mean first, then the mean squared deviation), so it keeps
# its precision when |mean| ≫ std.
STATISTICS: Registry[Statistic] = Registry("statistic", {
    "pre_mean": Statistic("mean of the pre-activation z (input of the nonlinearity) over examples and units",
                          "forward", lambda f: jnp.mean(f.z)),
    "pre_var": Statistic("variance of z over examples and units", "forward", lambda f: jnp.var(f.z),
                         signal="forward"),
    "act_mean": Statistic("mean of the layer's output a", "forward", lambda f: jnp.mean(f.a)),
    "act_var": Statistic("variance of a", "forward", lambda f: jnp.var(f.a), signal="forward"),
    "grad_var": Statistic(
        "variance of the back-propagated gradient ∂ℓ/∂z of each example's loss (with batch norm: n·∂L/∂z, "
        "which includes the other examples' terms through the batch statistics)",
        "backward", jnp.var, signal="backward"),
    "wgrad_var": Statistic("variance of the entries of ∂L/∂W (L: mean loss over the batch)", "weights",
                           lambda w, gw: jnp.var(gw, axis=1)),
    "wgrad_norm": Statistic("Frobenius norm of ∂L/∂W", "weights", lambda w, gw: _frobenius(gw)),
    "w_var": Statistic("variance of the entries of W", "weights", lambda w, gw: jnp.var(w, axis=1)),
    "w_norm": Statistic("Frobenius norm of W", "weights", lambda w, gw: _frobenius(w)),
    "update_ratio": Statistic("‖W − W_prev‖ / ‖W_prev‖ since the previous logged step (empty at step 0)",
                              "update", _update_ratio),
    "saturated_frac": Statistic(
        "fraction of (example, unit) pairs where the slope φ'(z) is below 1% of its largest magnitude",
        "forward", lambda f: jnp.mean(f.saturated), hidden_only=True),
    "dead_frac": Statistic("fraction of units saturated on every example", "forward",
                           lambda f: jnp.mean(jnp.all(f.saturated, axis=0)), hidden_only=True),
    "symmetry": Statistic("share of the activation variance common to all units (1: all units identical; "
                          "empty for a dead layer, whose activations do not vary)", "forward", _symmetry),
    "unit_p15": Statistic("15th percentile of the first unit's pre-activation z over the examples", "forward",
                          _unit_percentile(0)),
    "unit_p50": Statistic("median of the first unit's pre-activation z over the examples", "forward",
                          _unit_percentile(1)),
    "unit_p85": Statistic("85th percentile of the first unit's pre-activation z over the examples", "forward",
                          _unit_percentile(2)),
})


def names() -> tuple[str, ...]:
    """Every registered statistic, in registry order (the order of layers.csv's columns)."""
    return tuple(STATISTICS)


def default_names() -> tuple[str, ...]:
    """The statistics a run computes when ``log.stats`` is not set."""
    return tuple(name for name, s in STATISTICS.items() if s.default)


def signal_names() -> tuple[str, ...]:
    """The statistics every run computes: the divergence check reads them."""
    return tuple(name for name, s in STATISTICS.items() if s.signal)


# Every scalar statistic with its doc: the per-layer columns layers.csv can have (README's table).
COLUMNS: dict[str, str] = {name: s.doc for name, s in STATISTICS.items() if s.size == 1}


class Layout:
    """The statistics one run computes, in registry order, and where each sits in the per-layer
    table (rows: the statistics' values, a statistic of size k taking k rows; columns: layers)."""

    def __init__(self, names: Iterable[str] = ()):
        wanted = set(names) | set(signal_names())
        self.names: tuple[str, ...] = tuple(n for n in STATISTICS if n in wanted)
        unknown = wanted - set(self.names)
        if unknown:
            raise ValueError(f"unknown statistics {sorted(unknown)}")  # config validation names them first
        self.entries = {n: STATISTICS[n] for n in self.names}
        self.slices: dict[str, slice] = {}
        row = 0
        for n, s in self.entries.items():
            self.slices[n] = slice(row, row + s.size)
            row += s.size
        self.rows = row

    @classmethod
    def default(cls) -> Layout:
        return cls(default_names())

    def reading(self, reads: str) -> list[str]:
        return [n for n, s in self.entries.items() if s.reads == reads]

    @property
    def scalars(self) -> tuple[str, ...]:
        """The statistics written as layers.csv columns."""
        return tuple(n for n, s in self.entries.items() if s.size == 1)

    @property
    def shaped(self) -> tuple[str, ...]:
        """The statistics of k > 1 values per layer, each written to a tidy file of its own."""
        return tuple(n for n, s in self.entries.items() if s.size > 1)

    # -- inside the jitted pass ------------------------------------------------------------------
    def forward_collector(self, activation: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """``collect(z, a) -> (k_forward,)``: the forward statistics of one layer, concatenated."""
        fns = [self.entries[n].fn for n in self.reading("forward")]
        act = get_activation(activation)
        threshold = 0.01 * max_slope(activation)

        def collect(z, a):  # z, a: (batch, units)
            z32, a32 = z.astype(jnp.float32), a.astype(jnp.float32)
            f = Forward(z32, a32, jnp.abs(derivative(act, z32)) < threshold,
                        jnp.percentile(z32[:, 0], jnp.asarray(PERCENTILES)))
            return _concat([fn(f) for fn in fns])

        return collect

    def backward_reduce(self, scale: float) -> Callable[[jax.Array], jax.Array]:
        """``reduce(g) -> (k_backward,)`` of one layer's cotangent g = ∂L/∂z: the backward
        statistics of ``scale``·g. With L the mean loss over n examples, scale n gives each
        example's own gradient ∂ℓ_i/∂z_i, scaled before any squaring so that it does not underflow."""
        fns = [self.entries[n].fn for n in self.reading("backward")]

        def reduce(g):
            g32 = g.astype(jnp.float32) * scale
            return _concat([fn(g32) for fn in fns])

        return reduce

    @property
    def backward_size(self) -> int:
        return sum(self.entries[n].size for n in self.reading("backward"))

    def update_values(self, weights: Sequence[jax.Array], prev_weights: Sequence[jax.Array]) -> jax.Array:
        """The update statistics (layers, k_update) of each layer's effective weights against
        those of the previous logged step (blocks with a leading layer axis, see
        ``initlab.model.effective_weights``)."""
        return self._per_layer("update", weights, prev_weights)

    def summarize(self, forward: jax.Array, backward: jax.Array, update: jax.Array,
                  weights: Sequence[jax.Array], wgrads: Sequence[jax.Array]) -> jax.Array:
        """The per-layer table (rows, layers) of one pass: its ``forward`` (layers, k_forward) and
        ``backward`` (layers, k_backward) gatherings, its ``update_values``, and each layer's
        effective weights and their gradient (blocks with a leading layer axis)."""
        parts: dict[str, jax.Array] = {}
        gathered = {"forward": forward, "backward": backward, "update": update,
                    "weights": self._per_layer("weights", weights, wgrads)}
        for reads, values in gathered.items():
            col = 0
            for n in self.reading(reads):
                k = self.entries[n].size
                parts[n] = values[:, col:col + k]  # (layers, k)
                col += k
        for n, s in self.entries.items():
            if s.hidden_only:
                parts[n] = parts[n].at[-1].set(jnp.nan)
        return jnp.concatenate([parts[n].T for n in self.names], axis=0)  # (rows, layers)

    def _per_layer(self, reads: str, first: Sequence[jax.Array], second: Sequence[jax.Array]) -> jax.Array:
        """The ``reads`` statistics (weights or update) of per-layer matrix pairs: (layers, k)."""
        names = self.reading(reads)
        n_layers = sum(b.shape[0] for b in first)
        if not names:
            return jnp.zeros((n_layers, 0), jnp.float32)
        blocks = [jnp.concatenate([_layers(self.entries[n].fn(a, b), self.entries[n].size) for n in names], axis=1)
                  for a, b in zip(map(_flatten, first), map(_flatten, second))]
        return jnp.concatenate(blocks, axis=0)

    def signal_finite(self, table: jax.Array) -> jax.Array:
        """Whether every signal statistic of a table (last two axes: rows, layers) is finite: the
        device-side test of ``first_nonfinite_layer(...) is None``."""
        rows = jnp.asarray([self.slices[n].start for n in signal_names()])
        return jnp.all(jnp.isfinite(jnp.take(table, rows, axis=-2)))

    def split(self, table: Any) -> dict[str, Any]:
        """A table's statistics by name (numpy on the host, or jax inside jit): a scalar statistic
        (..., layers), one of size k (..., layers, k)."""
        out = {}
        for n, s in self.entries.items():
            part = table[..., self.slices[n], :]
            out[n] = part[..., 0, :] if s.size == 1 else part.swapaxes(-1, -2)
        return out


def _concat(values: list[jax.Array]) -> jax.Array:
    return jnp.concatenate([jnp.reshape(v, (-1,)) for v in values]) if values else jnp.zeros((0,), jnp.float32)


def _flatten(b: jax.Array) -> jax.Array:
    # explicit size: the hidden block of a depth-1 net is empty and -1 cannot be inferred
    return b.reshape(b.shape[0], math.prod(b.shape[1:])).astype(jnp.float32)


def _layers(v: jax.Array, size: int) -> jax.Array:
    """A statistic's per-layer values as (layers, size) (explicit: a block may have no layers)."""
    return v.reshape(v.shape[0], size)


def first_nonfinite_layer(stats: Mapping[str, Any]) -> tuple[int, str] | None:
    """Where a blow-up shows first: ``(layer, "forward")`` for the lowest layer (1-based; depth + 1
    is the output layer) whose forward signal statistics are not finite, else ``(layer,
    "backward")`` for the highest layer whose backward ones are not finite, else None."""
    def bad(direction):
        names = [n for n in signal_names() if STATISTICS[n].signal == direction]
        return ~np.all(np.isfinite(np.stack([np.asarray(stats[n], np.float64) for n in names])), axis=0)

    fwd_bad = bad("forward")
    if fwd_bad.any():
        return int(np.argmax(fwd_bad)) + 1, "forward"
    bwd_bad = bad("backward")
    if bwd_bad.any():
        return len(bwd_bad) - int(np.argmax(bwd_bad[::-1])), "backward"
    return None
