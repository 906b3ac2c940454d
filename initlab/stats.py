"""Per-layer statistics of activations, gradients and weights, computed on a fixed probe batch.

One jitted function returns, for every hidden layer and the output layer, the numbers that the
signal-propagation literature plots: pre-activation and activation moments (Glorot & Bengio 2010,
Fig. 3–4; He et al. 2015), the variance of the back-propagated gradient dL/dz (Glorot & Bengio
2010, Fig. 7), weight and weight-gradient magnitudes, the update-to-weight ratio, saturated and dead
units, unit symmetry (identical units under a constant initialization), and the 15th/50th/85th
percentiles of one unit's input over the probe batch (Ioffe & Szegedy 2015, Fig. 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from initlab.activations import derivative, get_activation, max_slope
from initlab.model import ModelSpec, NormState, Params, apply, layer_weights

# Column order of the forward statistics gathered inside the layer scan.
FORWARD = ("pre_mean", "pre_var", "act_mean", "act_var", "saturated_frac", "dead_frac", "symmetry",
           "unit_p15", "unit_p50", "unit_p85")
# Percentiles of one unit's input over the probe batch (Ioffe & Szegedy 2015, Fig. 1b-c).
PERCENTILES = (15.0, 50.0, 85.0)

# Every per-layer column, with what it measures (README and layers.csv share this text).
COLUMNS: dict[str, str] = {
    "pre_mean": "mean of the pre-activation z (input of the nonlinearity) over probe examples and units",
    "pre_var": "variance of z over probe examples and units",
    "act_mean": "mean of the layer's output a",
    "act_var": "variance of a",
    "grad_var": "variance of the back-propagated gradient ∂ℓ/∂z of each example's loss",
    "wgrad_var": "variance of the entries of ∂L/∂W (L: mean loss over the probe batch)",
    "wgrad_norm": "Frobenius norm of ∂L/∂W",
    "w_var": "variance of the entries of W",
    "w_norm": "Frobenius norm of W",
    "update_ratio": "‖W − W_prev‖ / ‖W_prev‖ since the previous logged step (empty at step 0)",
    "saturated_frac": "fraction of (example, unit) pairs where the slope φ'(z) is below 1% of its largest magnitude",
    "dead_frac": "fraction of units saturated on every probe example",
    "symmetry": "share of the activation variance common to all units (1: all units identical)",
    "unit_p15": "15th percentile of the first unit's pre-activation z over the probe examples",
    "unit_p50": "median of the first unit's pre-activation z over the probe examples",
    "unit_p85": "85th percentile of the first unit's pre-activation z over the probe examples",
}
# Forward signals blow up going up the network, gradients going down: where each first shows.
FORWARD_SIGNAL = ("pre_var", "act_var")
# The columns whose finiteness says whether the signal survived: a run with any of them non-finite
# has diverged (``first_nonfinite_layer`` on the host, ``signal_finite`` on the device).
SIGNAL = (*FORWARD_SIGNAL, "grad_var")


def _forward_collector(spec: ModelSpec) -> Callable[[jax.Array, jax.Array], jax.Array]:
    act = get_activation(spec.activation)
    threshold = 0.01 * max_slope(spec.activation)

    def collect(z, a):  # z, a: (batch, units)
        z32, a32 = z.astype(jnp.float32), a.astype(jnp.float32)
        saturated = jnp.abs(derivative(act, z32)) < threshold  # (batch, units)
        total = jnp.var(a32)
        shared = jnp.var(jnp.mean(a32, axis=1))  # variance of the per-example mean over units
        symmetry = jnp.where(total > 0, shared / jnp.where(total > 0, total, 1.0), 1.0)
        return jnp.concatenate([jnp.stack([
            jnp.mean(z32), jnp.var(z32), jnp.mean(a32), total,
            jnp.mean(saturated), jnp.mean(jnp.all(saturated, axis=0)), symmetry,
        ]), jnp.percentile(z32[:, 0], jnp.asarray(PERCENTILES))])

    return collect


class Raw(NamedTuple):
    """What one forward/backward pass gathers inside the layer scan, per layer (depth + 1 rows)."""

    forward: jax.Array  # (depth + 1, len(FORWARD)): the forward statistics, in FORWARD's order
    taps: jax.Array  # (depth + 1, 2): [mean(g), mean(g²)] of each example's gradient g = ∂ℓ_i/∂z


def loss_and_grads(spec: ModelSpec, loss_fn: Callable, params: Params, state: NormState, x: jax.Array,
                   y: jax.Array, *, key: jax.Array | None = None, collect: bool = False):
    """The training step's forward and backward pass on the batch ``x``, ``y``: returns
    ``(mean loss, new norm state, gradient of the mean loss, Raw | None)``.

    With ``collect`` the same pass also gathers the per-layer statistics (``Raw``, for
    ``summarize``); the taps are identities, so the parameter gradient is the same either way (bit
    for bit in tests, up to the last bit with batch norm, whose reductions XLA then fuses
    differently). ``key`` turns dropout on.
    """
    n = x.shape[0]
    collector = _forward_collector(spec) if collect else None

    def mean_loss(p, taps):
        # tap_scale n: the taps see each example's own gradient ∂ℓ_i/∂z_i, not the mean's 1/n of it.
        logits, new_state, fwd = apply(spec, p, state, x, train=True, taps=taps, collect=collector, key=key,
                                       tap_scale=float(n))
        return jnp.mean(loss_fn(logits, y, spec.num_classes)), (new_state, fwd)

    if not collect:
        (loss, (new_state, _)), grads = jax.value_and_grad(mean_loss, has_aux=True)(params, None)
        return loss, new_state, grads, None
    taps = jnp.zeros((spec.num_layers, 2), jnp.float32)
    (loss, (new_state, fwd)), (grads, gtaps) = jax.value_and_grad(mean_loss, argnums=(0, 1), has_aux=True)(params, taps)
    return loss, new_state, grads, Raw(fwd, gtaps)


def _per_layer(blocks, fn) -> jax.Array:
    """``fn`` of each layer's flattened weights: blocks [(1, ...), (L-1, ...), (1, ...)] → (depth + 1,)."""
    # explicit size: the hidden block of a depth-1 net is empty and -1 cannot be inferred
    return jnp.concatenate([fn(b.reshape(b.shape[0], math.prod(b.shape[1:]))) for b in blocks])


def _norm(b: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(b), axis=1))


def update_ratios(params: Params, prev_params: Params) -> jax.Array:
    """Each layer's relative weight change since the previous logged step, ‖W − W_prev‖ / ‖W_prev‖
    ((depth + 1,); NaN where W_prev is zero): the column ``update_ratio``."""
    w, w_prev = layer_weights(params), layer_weights(prev_params)
    prev_norm = _per_layer(w_prev, _norm)
    delta = _per_layer([a - b for a, b in zip(w, w_prev)], _norm)
    return jnp.where(prev_norm > 0, delta / jnp.where(prev_norm > 0, prev_norm, 1.0), jnp.nan)


def summarize(params: Params, update_ratio: jax.Array, grads: Params, raw: Raw) -> dict[str, jax.Array]:
    """Every column of ``COLUMNS`` (each (depth + 1,)) from a pass's ``Raw`` statistics, its
    gradient ``grads`` of the mean loss, the weights and their ``update_ratios`` since the previous
    logged step. The output layer's row has no nonlinearity: its saturation figures are NaN."""
    out = {name: raw.forward[:, i] for i, name in enumerate(FORWARD)}
    out["saturated_frac"] = out["saturated_frac"].at[-1].set(jnp.nan)
    out["dead_frac"] = out["dead_frac"].at[-1].set(jnp.nan)
    out["grad_var"] = raw.taps[:, 1] - jnp.square(raw.taps[:, 0])
    w, gw = layer_weights(params), layer_weights(grads)
    out["w_var"] = _per_layer(w, lambda b: jnp.var(b, axis=1))
    out["w_norm"] = _per_layer(w, _norm)
    out["wgrad_var"] = _per_layer(gw, lambda b: jnp.var(b, axis=1))
    out["wgrad_norm"] = _per_layer(gw, _norm)
    out["update_ratio"] = update_ratio
    return {name: out[name] for name in COLUMNS}


def make_layer_stats(spec: ModelSpec, loss_fn: Callable) -> Callable:
    """``layer_stats_fn`` compiled for one network."""
    return jax.jit(layer_stats_fn(spec, loss_fn))


def layer_stats_fn(spec: ModelSpec, loss_fn: Callable) -> Callable:
    """``stats(params, state, prev_params, x, y) -> dict[column, (depth + 1,)]`` (pure, unjitted):
    the statistics of a training step's forward/backward pass on ``x``, ``y`` (the probe batch),
    without the update. Batch norm uses the batch's own statistics (training mode) without touching
    the running averages; dropout is off."""

    def stats(params: Params, state: NormState, prev_params: Params, x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
        _, _, grads, raw = loss_and_grads(spec, loss_fn, params, state, x, y, collect=True)
        return summarize(params, update_ratios(params, prev_params), grads, raw)

    return stats


def to_table(stats: dict[str, jax.Array]) -> jax.Array:
    """The columns of ``stats`` stacked in ``COLUMNS`` order: (len(COLUMNS), depth + 1), so that a
    logged step brings its statistics to the host in one transfer."""
    return jnp.stack([stats[name] for name in COLUMNS])


def from_table(table: "np.typing.ArrayLike") -> dict[str, "np.ndarray"]:
    """``to_table``'s inverse on the host; ``table``'s last two axes are (column, layer)."""
    import numpy as np

    table = np.asarray(table)
    return {name: table[..., i, :] for i, name in enumerate(COLUMNS)}


def signal_finite(table: jax.Array) -> jax.Array:
    """Whether every ``SIGNAL`` column of a ``to_table`` table (last two axes: column, layer) is
    finite: the device-side test of ``first_nonfinite_layer(...) is None``."""
    rows = jnp.asarray([list(COLUMNS).index(c) for c in SIGNAL])
    return jnp.all(jnp.isfinite(jnp.take(table, rows, axis=-2)))


def first_nonfinite_layer(stats: dict[str, "jax.typing.ArrayLike"]) -> tuple[int, str] | None:
    """Where a blow-up shows first: ``(layer, "forward")`` for the lowest layer (1-based; depth + 1
    is the output layer) whose activation statistics are not finite, else ``(layer, "backward")``
    for the highest layer whose back-propagated gradient variance is not finite, else None."""
    import numpy as np

    fwd_bad = ~np.all(np.isfinite(np.stack([np.asarray(stats[c]) for c in FORWARD_SIGNAL])), axis=0)
    if fwd_bad.any():
        return int(np.argmax(fwd_bad)) + 1, "forward"
    bwd_bad = ~np.isfinite(np.asarray(stats["grad_var"]))
    if bwd_bad.any():
        return len(bwd_bad) - int(np.argmax(bwd_bad[::-1])), "backward"
    return None
