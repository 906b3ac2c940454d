"""Per-layer statistics of activations, gradients and weights: one registry, each statistic
declared once.

A ``Statistic`` says what it measures (its doc, shared by the README and layers.csv), what it reads
and how many numbers it gives per layer:

- ``forward``: one layer's pre-activation z and output a (batch, units), inside the layer scan;
- ``backward``: the back-propagated gradient of each example's own loss, ∂ℓ_i/∂z (batch, units),
  inside the backward pass (``initlab.nn.model.grad_tap``), so no (depth × batch × width) gradient is
  ever stored;
- ``weights``: each layer's weight matrix W and the gradient ∂L/∂W of the mean loss, flattened;
- ``update``: W and the weights W_prev of the previous logged step;
- ``reference``: one layer's pre-activation z on the probe and z₀, its value at step 0 (kept on the
  device from the start of training: probe_size × (depth × width + classes) float32 numbers per run),
  from a forward pass of the probe of its own.

A histogram (``Statistic.histogram``) is a statistic whose function gives the values to bin (z,
a, each example's ∂ℓ/∂z, W's entries) and whose numbers are the counts of fixed bins
(``LinearBins`` or ``Log2Bins``, in ``initlab.stats.bins``): its size follows from the bins, not from the entry.

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

from initlab.nn.activations import Shape, activation_fn, derivative, max_slope
from initlab.nn.formats import overflow, underflow
from initlab.registry import Registry

# The histogram bins, re-exported: ``initlab.stats.statistics.make_bins`` etc. keep working.
from initlab.stats.bins import (  # noqa: F401
    ACT_CAP,
    E_MAX,
    E_MIN,
    PRE_RANGE,
    Bins,
    LinearBins,
    Log2Bins,
    activation_range,
    counts,
    make_bins,
)

READS = ("forward", "backward", "weights", "update", "reference")
HISTOGRAMS = ("pre", "act", "log2")  # the binnings: linear over z's range, over the activation's image, log2
# Percentiles of one unit's input over the batch (Ioffe & Szegedy 2015, Fig. 1b-c).
PERCENTILES = (15.0, 50.0, 85.0)


class Forward(NamedTuple):
    """What a forward statistic sees of one layer (float32 copies): z, a, and the quantities that
    several statistics share, computed once (XLA drops any that no selected statistic reads). A
    ``raw`` statistic gets z and a as the run's number format holds them instead."""

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
    ``default``: computed unless ``log.stats`` says otherwise; ``default_since``: the era in which it
    joined the defaults (0: the statistics every run computed before ``log.stats`` existed; a
    statistic added to the defaults later takes the next number), so that a config selecting any
    era's defaults keeps its hash (``initlab.config.migrations``). ``histogram`` (one of
    ``HISTOGRAMS``): ``fn`` gives the values and the statistic is their counts in fixed bins,
    selected by ``log.histograms`` (the bin count) rather than ``log.stats``. ``raw``: ``fn``
    sees the values in the run's compute format, as the pass holds them, instead of float32
    copies of the loss's own scale: forward z and a; backward the pass's own cotangent ∂L/∂z of
    the mean loss (times the loss scale); weights W and ∂L/∂W (times the loss scale) cast to the
    compute format (exactly the values the pass made)."""

    doc: str
    reads: str
    fn: Callable[..., jax.Array]
    size: int = 1
    signal: str | None = None
    hidden_only: bool = False
    default: bool = True
    default_since: int = 0
    histogram: str | None = None
    raw: bool = False

    def __post_init__(self):
        if self.reads not in READS:
            raise ValueError(f"Statistic.reads: {self.reads!r} is not one of {', '.join(READS)}")
        if self.histogram not in (None, *HISTOGRAMS):
            raise ValueError(f"Statistic.histogram: {self.histogram!r} is not one of {', '.join(HISTOGRAMS)}")


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
STATISTICS: Registry[Statistic] = Registry(
    "statistic",
    {
        "pre_mean": Statistic(
            "mean of the pre-activation z (input of the nonlinearity) over examples and units",
            "forward",
            lambda f: jnp.mean(f.z),
        ),
        "pre_var": Statistic(
            "variance of z over examples and units", "forward", lambda f: jnp.var(f.z), signal="forward"
        ),
        "act_mean": Statistic("mean of the layer's output a", "forward", lambda f: jnp.mean(f.a)),
        "act_var": Statistic("variance of a", "forward", lambda f: jnp.var(f.a), signal="forward"),
        # The coordinate check (Yang et al. 2022; the mup package's coord_check): the size of a typical
        # coordinate, and of its change since initialization, against width.
        "act_abs_mean": Statistic(
            "mean of |a| over examples and units (the l1 coordinate size of the coordinate "
            "check; the output layer: of the logits)",
            "forward",
            lambda f: jnp.mean(jnp.abs(f.a)),
            default=False,
        ),
        "pre_delta_abs_mean": Statistic(
            "mean of |z − z₀| over the probe's examples and units, z₀ the pre-activations at step 0 (the coordinate "
            "check's change since initialization; the output layer: of the logits; needs log.stats_on: probe)",
            "reference",
            lambda z, z0: jnp.mean(jnp.abs(z - z0)),
            default=False,
        ),
        "grad_var": Statistic(
            "variance of the back-propagated gradient ∂ℓ/∂z of each example's loss (with batch norm: n·∂L/∂z, "
            "which includes the other examples' terms through the batch statistics)",
            "backward",
            jnp.var,
            signal="backward",
        ),
        "wgrad_var": Statistic(
            "variance of the entries of ∂L/∂W (L: mean loss over the batch)",
            "weights",
            lambda w, gw: jnp.var(gw, axis=1),
        ),
        "wgrad_norm": Statistic("Frobenius norm of ∂L/∂W", "weights", lambda w, gw: _frobenius(gw)),
        "w_var": Statistic("variance of the entries of W", "weights", lambda w, gw: jnp.var(w, axis=1)),
        "w_norm": Statistic("Frobenius norm of W", "weights", lambda w, gw: _frobenius(w)),
        "update_ratio": Statistic(
            "‖W − W_prev‖ / ‖W_prev‖ since the previous logged step (empty at step 0)", "update", _update_ratio
        ),
        "saturated_frac": Statistic(
            "fraction of (example, unit) pairs where the slope φ'(z) is below 1% of its largest magnitude",
            "forward",
            lambda f: jnp.mean(f.saturated),
            hidden_only=True,
        ),
        "dead_frac": Statistic(
            "fraction of units saturated on every example",
            "forward",
            lambda f: jnp.mean(jnp.all(f.saturated, axis=0)),
            hidden_only=True,
        ),
        "symmetry": Statistic(
            "share of the activation variance common to all units (1: all units identical; "
            "empty for a dead layer, whose activations do not vary)",
            "forward",
            _symmetry,
        ),
        "unit_p15": Statistic(
            "15th percentile of the first unit's pre-activation z over the examples", "forward", _unit_percentile(0)
        ),
        "unit_p50": Statistic(
            "median of the first unit's pre-activation z over the examples", "forward", _unit_percentile(1)
        ),
        "unit_p85": Statistic(
            "85th percentile of the first unit's pre-activation z over the examples", "forward", _unit_percentile(2)
        ),
        # Histograms (Glorot & Bengio 2010, Figs. 6-7): counts in fixed bins, selected by log.histograms.
        "hist_pre": Statistic(
            "histogram of z: linear bins over [-5, 5], with under/overflow and NaN counts",
            "forward",
            lambda f: f.z,
            histogram="pre",
        ),
        "hist_act": Statistic(
            "histogram of a: linear bins over the activation's image (capped at ±5), with "
            "under/overflow and NaN counts (hidden layers: the output layer has no nonlinearity)",
            "forward",
            lambda f: f.a,
            histogram="act",
            hidden_only=True,
        ),
        "hist_grad": Statistic(
            "histogram of each example's ∂ℓ/∂z: sign-symmetric bins per binary exponent, exact zeros, ±inf and NaN",
            "backward",
            lambda g: g,
            histogram="log2",
        ),
        "hist_weight": Statistic(
            "histogram of W's entries: bins per binary exponent, as hist_grad",
            "weights",
            lambda w, gw: w,
            histogram="log2",
        ),
        # Number-format statistics (model.dtype), in the run's compute format; zeros count as underflow.
        "grad_underflow": Statistic(
            "fraction of the backward pass's ∂L/∂z entries (per example, times the loss scale) that are zero or "
            "subnormal in the run's number format (a ReLU's inactive units give exact zeros in every format)",
            "backward",
            underflow,
            raw=True,
            default_since=1,
        ),
        "wgrad_underflow": Statistic(
            "fraction of ∂L/∂W's entries (times the loss scale) that are zero or subnormal in the run's number format",
            "weights",
            lambda w, gw: _rows(underflow, gw),
            raw=True,
            default_since=1,
        ),
        "act_underflow": Statistic(
            "fraction of the activations a that are zero or subnormal in the run's number "
            "format (a ReLU's exact zeros included)",
            "forward",
            lambda f: underflow(f.a),
            raw=True,
            default_since=1,
        ),
        "pre_overflow": Statistic(
            "fraction of the pre-activations z that are ±inf in the run's number format",
            "forward",
            lambda f: overflow(f.z),
            raw=True,
            default_since=1,
        ),
    },
)


def _rows(fn: Callable[[jax.Array], jax.Array], blocks: jax.Array) -> jax.Array:
    """``fn`` of each row of (layers, n) blocks: (layers,)."""
    return jax.vmap(fn)(blocks)


def names() -> tuple[str, ...]:
    """Every registered statistic that ``log.stats`` selects (histograms aside), in registry order
    (the order of layers.csv's columns)."""
    return tuple(name for name, s in STATISTICS.items() if s.histogram is None)


def default_names() -> tuple[str, ...]:
    """The statistics a run computes when ``log.stats`` is not set."""
    return tuple(name for name in names() if STATISTICS[name].default)


def default_eras() -> tuple[tuple[str, ...], ...]:
    """The default statistics of each era (``Statistic.default_since``), oldest first, today's
    (``default_names()``) last: every one of them is a run's default selection."""
    today = default_names()
    eras = sorted({STATISTICS[n].default_since for n in today})
    return tuple(tuple(n for n in today if STATISTICS[n].default_since <= era) for era in eras)


def histogram_names() -> tuple[str, ...]:
    """The histograms: every run with ``log.histograms`` > 0 computes them all."""
    return tuple(name for name, s in STATISTICS.items() if s.histogram is not None)


def signal_names() -> tuple[str, ...]:
    """The statistics every run computes: the divergence check reads them."""
    return tuple(name for name, s in STATISTICS.items() if s.signal)


# Every scalar statistic with its doc: the per-layer columns layers.csv can have (README's table).
COLUMNS: dict[str, str] = {name: s.doc for name, s in STATISTICS.items() if s.size == 1 and s.histogram is None}
# The quantity each histogram is of, as histograms.csv names it.
QUANTITIES: dict[str, str] = {"hist_pre": "pre", "hist_act": "act", "hist_grad": "grad", "hist_weight": "weight"}


class Layout:
    """The statistics one run computes, in registry order, and where each sits in the per-layer
    table (rows: the statistics' values, a statistic of size k taking k rows; columns: layers)."""

    def __init__(
        self,
        names: Iterable[str] = (),
        histogram_bins: int = 0,
        dtype: str = "float32",
        signal: Sequence[str] = ("forward", "backward"),
    ):
        wanted = set(names) | set(signal_names()) | (set(histogram_names()) if histogram_bins > 0 else set())
        self.names: tuple[str, ...] = tuple(n for n in STATISTICS if n in wanted)
        unknown = wanted - set(self.names)
        if unknown:
            raise ValueError(f"unknown statistics {sorted(unknown)}")  # config validation names them first
        self.histogram_bins = int(histogram_bins)
        self.dtype = dtype  # the run's number format (model.dtype): what raw statistics see
        self.signal = tuple(signal)  # the directions whose non-finite signal means divergence
        self.entries = {n: STATISTICS[n] for n in self.names}
        self.sizes = {
            n: s.size if s.histogram is None else self.bins(n, "linear").size for n, s in self.entries.items()
        }
        self.slices: dict[str, slice] = {}
        row = 0
        for n, k in self.sizes.items():
            self.slices[n] = slice(row, row + k)
            row += k
        self.rows = row

    def bins(self, name: str, activation: str, shape: Shape | None = None) -> Bins:
        """The bins of histogram ``name`` in a network of ``activation`` (shaped by ``shape``; their
        count does not depend on it, their edges may)."""
        return make_bins(self.entries[name].histogram, activation, self.histogram_bins, shape)

    @classmethod
    def default(cls) -> Layout:
        return cls(default_names())

    def reading(self, reads: str) -> list[str]:
        return [n for n, s in self.entries.items() if s.reads == reads]

    @property
    def scalars(self) -> tuple[str, ...]:
        """The statistics written as layers.csv columns."""
        return tuple(n for n, s in self.entries.items() if self.sizes[n] == 1 and s.histogram is None)

    @property
    def shaped(self) -> tuple[str, ...]:
        """The statistics of k > 1 values per layer (histograms aside), each written to a tidy file of its own."""
        return tuple(n for n, s in self.entries.items() if self.sizes[n] > 1 and s.histogram is None)

    @property
    def histograms(self) -> tuple[str, ...]:
        """The histograms the run computes (all written to histograms.csv)."""
        return tuple(n for n, s in self.entries.items() if s.histogram is not None)

    def _fn(self, name: str, activation: str, shape: Shape | None = None) -> Callable[..., jax.Array]:
        """A statistic's function; for a histogram, the counts of its values in its bins (per layer
        for weight statistics, whose values come as (layers, n) blocks)."""
        s = self.entries[name]
        if s.histogram is None:
            return s.fn
        bins = self.bins(name, activation, shape)
        if s.reads == "weights":  # layer by layer: a batched scatter costs 4x as much per value on the CPU
            return lambda *a: jax.lax.map(lambda v: counts(bins, v), s.fn(*a))
        return lambda *a: counts(bins, s.fn(*a))

    # -- inside the jitted pass ------------------------------------------------------------------
    def forward_collector(
        self, activation: str, shape: Shape | None = None
    ) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """``collect(z, a) -> (k_forward,)``: the forward statistics of one layer, concatenated
        (``shape``: the activation's kernel-shaping transformation, if any)."""
        names = self.reading("forward")
        fns = [self._fn(n, activation, shape) for n in names]
        raw = [self.entries[n].raw for n in names]
        act = activation_fn(activation, shape)
        threshold = 0.01 * max_slope(activation, shape)

        def collect(z, a):  # z, a: (batch, units), in the run's compute format
            z32, a32 = z.astype(jnp.float32), a.astype(jnp.float32)
            f = Forward(
                z32, a32, jnp.abs(derivative(act, z32)) < threshold, jnp.percentile(z32[:, 0], jnp.asarray(PERCENTILES))
            )
            f_raw = f._replace(z=z, a=a)
            return _concat([fn(f_raw if r else f) for fn, r in zip(fns, raw)])

        return collect

    @property
    def needs_reference(self) -> bool:
        """Whether the run keeps the probe's step-0 pre-activations for ``reference`` statistics."""
        return bool(self.reading("reference"))

    def reference_values(self, z: tuple[jax.Array, jax.Array], z0: tuple[jax.Array, jax.Array]) -> jax.Array:
        """The reference statistics (layers, k_reference) of every layer's pre-activations ``z`` against
        ``z0`` (each ``initlab.nn.model.pre_activations``' pair: hidden (depth, batch, width), output
        (batch, classes))."""
        fns = [self._fn(n, "linear") for n in self.reading("reference")]
        hidden = jax.vmap(lambda a, b: _concat([fn(a, b) for fn in fns]))(z[0], z0[0])
        return jnp.concatenate([hidden, _concat([fn(z[1], z0[1]) for fn in fns])[None]], axis=0)

    def backward_reduce(self) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """``reduce(g, factor) -> (k_backward,)`` of one layer's cotangent g = ∂L/∂z as the
        backward pass holds it: the backward statistics of ``factor``·g in float32, and the raw ones
        of g itself. With L the mean loss over n examples (times a loss scale S), factor n/S gives
        each example's own gradient ∂ℓ_i/∂z_i, scaled before any squaring so that it does not
        underflow."""
        names = self.reading("backward")
        fns = [self._fn(n, "linear") for n in names]
        raw = [self.entries[n].raw for n in names]

        def reduce(g, factor):
            g32 = g.astype(jnp.float32) * factor.astype(jnp.float32)
            return _concat([fn(g if r else g32) for fn, r in zip(fns, raw)])

        return reduce

    @property
    def backward_size(self) -> int:
        return sum(self.sizes[n] for n in self.reading("backward"))

    def update_values(self, weights: Sequence[jax.Array], prev_weights: Sequence[jax.Array]) -> jax.Array:
        """The update statistics (layers, k_update) of each layer's effective weights against
        those of the previous logged step (blocks with a leading layer axis, see
        ``initlab.nn.model.effective_weights``)."""
        return self._per_layer("update", weights, prev_weights)

    def summarize(
        self,
        forward: jax.Array,
        backward: jax.Array,
        update: jax.Array,
        weights: Sequence[jax.Array],
        wgrads: Sequence[jax.Array],
        raw_wgrads: Sequence[jax.Array] | None = None,
        reference: jax.Array | None = None,
    ) -> jax.Array:
        """The per-layer table (rows, layers) of one pass: its ``forward`` (layers, k_forward) and
        ``backward`` (layers, k_backward) gatherings, its ``update_values``, and each layer's
        effective weights and their gradient (blocks with a leading layer axis): ``wgrads`` that of
        the mean loss, ``raw_wgrads`` as the pass made it (times the loss scale; default
        ``wgrads``), which raw statistics see in the compute format; ``reference`` the
        ``reference_values`` (NaN without them: a pass on another batch than the probe)."""
        parts: dict[str, jax.Array] = {}
        raw = raw_wgrads if raw_wgrads is not None else wgrads
        if reference is None:
            k = sum(self.sizes[n] for n in self.reading("reference"))
            reference = jnp.full((forward.shape[0], k), jnp.nan, jnp.float32)
        gathered = {
            "forward": forward,
            "backward": backward,
            "update": update,
            "weights": self._per_layer("weights", weights, wgrads, raw),
            "reference": reference,
        }
        for reads, values in gathered.items():
            col = 0
            for n in self.reading(reads):
                k = self.sizes[n]
                parts[n] = values[:, col : col + k].astype(jnp.float32)  # (layers, k)
                col += k
        for n, s in self.entries.items():
            if s.hidden_only:
                parts[n] = parts[n].at[-1].set(jnp.nan)
        return jnp.concatenate([parts[n].T for n in self.names], axis=0)  # (rows, layers)

    def _per_layer(
        self,
        reads: str,
        first: Sequence[jax.Array],
        second: Sequence[jax.Array],
        raw_second: Sequence[jax.Array] | None = None,
    ) -> jax.Array:
        """The ``reads`` statistics (weights or update) of per-layer matrix pairs: (layers, k). Raw
        statistics see ``first`` and ``raw_second`` (default ``second``) in the compute format."""
        names = self.reading(reads)
        n_layers = sum(b.shape[0] for b in first)
        if not names:
            return jnp.zeros((n_layers, 0), jnp.float32)
        raw_second = second if raw_second is None else raw_second
        compute = jnp.dtype(self.dtype)

        def block(a, b, b_raw):
            cols = []
            for n in names:
                if self.entries[n].raw:
                    v = self._fn(n, "linear")(_flatten(a, compute), _flatten(b_raw, compute))
                else:
                    v = self._fn(n, "linear")(_flatten(a), _flatten(b))
                cols.append(_layers(v.astype(jnp.float32), self.sizes[n]))
            return jnp.concatenate(cols, axis=1)

        return jnp.concatenate([block(a, b, c) for a, b, c in zip(first, second, raw_second)], axis=0)

    def signal_finite(self, table: jax.Array) -> jax.Array:
        """Whether every signal statistic of a table (last two axes: rows, layers) is finite: the
        device-side test of ``first_nonfinite_layer(...) is None``."""
        rows = jnp.asarray([self.slices[n].start for n in signal_names() if STATISTICS[n].signal in self.signal])
        return jnp.all(jnp.isfinite(jnp.take(table, rows, axis=-2)))

    def split(self, table: Any) -> dict[str, Any]:
        """A table's statistics by name (numpy on the host, or jax inside jit): a scalar statistic
        (..., layers), one of size k (..., layers, k)."""
        out = {}
        for n, s in self.entries.items():
            part = table[..., self.slices[n], :]
            out[n] = part[..., 0, :] if self.sizes[n] == 1 else part.swapaxes(-1, -2)
        return out


def _concat(values: list[jax.Array]) -> jax.Array:
    return jnp.concatenate([jnp.reshape(v, (-1,)) for v in values]) if values else jnp.zeros((0,), jnp.float32)


def _flatten(b: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
    # explicit size: the hidden block of a depth-1 net is empty and -1 cannot be inferred
    return b.reshape(b.shape[0], math.prod(b.shape[1:])).astype(dtype)


def _layers(v: jax.Array, size: int) -> jax.Array:
    """A statistic's per-layer values as (layers, size) (explicit: a block may have no layers)."""
    return v.reshape(v.shape[0], size)


def first_nonfinite_layer(
    stats: Mapping[str, Any], directions: Sequence[str] = ("forward", "backward")
) -> tuple[int, str] | None:
    """Where a blow-up shows first: ``(layer, "forward")`` for the lowest layer (1-based; depth + 1
    is the output layer) whose forward signal statistics are not finite, else ``(layer,
    "backward")`` for the highest layer whose backward ones are not finite, else None. Only the
    signal of ``directions`` counts (under dynamic loss scaling an overflowing gradient is a
    skipped step, not a blow-up)."""

    def bad(direction):
        names = [n for n in signal_names() if STATISTICS[n].signal == direction]
        return ~np.all(np.isfinite(np.stack([np.asarray(stats[n], np.float64) for n in names])), axis=0)

    fwd_bad = bad("forward")
    if "forward" in directions and fwd_bad.any():
        return int(np.argmax(fwd_bad)) + 1, "forward"
    bwd_bad = bad("backward")
    if "backward" in directions and bwd_bad.any():
        return len(bwd_bad) - int(np.argmax(bwd_bad[::-1])), "backward"
    return None
