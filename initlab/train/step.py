"""A training step's forward and backward pass, with the per-layer statistics gathered in the same
pass: the one place where the model (``initlab.nn.model``) meets the statistics (``initlab.stats.statistics``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from initlab.nn.loss_scale import unscale
from initlab.nn.model import ModelSpec, NormState, Params, apply, effective_weights, pre_activations
from initlab.nn.params import to_plain
from initlab.stats.statistics import Layout


class Raw(NamedTuple):
    """What one forward/backward pass gathers inside the layer scan, per layer (depth + 1 rows),
    and the gradient of the effective weights (``params.to_plain``: with a reparameterization,
    ∂L/∂W of the matrices the forward pass uses, not of the stored direction and length)."""

    forward: jax.Array  # (depth + 1, k_forward): the layout's forward statistics, concatenated
    backward: jax.Array  # (depth + 1, k_backward): its backward statistics of each example's gradient
    scaled_grads: Params  # ∂(S·L)/∂W: the loss scale S still in (the gradient itself without scaling)
    grads: Params  # ∂L/∂W of the mean loss


def loss_and_grads(
    spec: ModelSpec,
    loss_fn: Callable,
    params: Params,
    state: NormState,
    x: jax.Array,
    y: jax.Array,
    *,
    key: jax.Array | None = None,
    layout: Layout | None = None,
    loss_scale: jax.Array | None = None,
    holds_batch: int | None = None,
):
    """The training step's forward and backward pass on the batch ``x``, ``y``: returns
    ``(mean loss, new norm state, gradient of the mean loss, Raw | None)``.

    Given a ``layout``, the same pass also gathers its per-layer statistics (``Raw``, for
    ``Layout.summarize``); the taps are identities, so the parameter gradient is the same either
    way (bit for bit in tests, up to the last bit with batch norm, whose reductions XLA then fuses
    differently). ``key`` turns dropout on. With a ``loss_scale`` S (Micikevicius et al. 2018),
    the backward pass is of S·L, so that small gradients stay representable in a narrow format;
    the gradient returned is divided by S in float32 (or wider) and kept in the parameters' dtype,
    and the statistics see each example's gradient without S (raw ones: the pass's own, with S).

    ``holds_batch``: for a statistics pass on another batch (the probe) in a narrow format, the
    training batch size B whose values the raw statistics must see: the pass is then of
    S·(n/B)·L, so each ∂L/∂z entry is S times its example's gradient divided by B, what the
    training step holds; the gradient returned is still that of the mean loss.
    """
    n = x.shape[0]
    if holds_batch is not None and holds_batch != n and jnp.dtype(spec.compute) != jnp.dtype(spec.state_dtype):
        ratio = jnp.float32(n / holds_batch)
        loss_scale = ratio if loss_scale is None else loss_scale.astype(jnp.float32) * ratio
    collect = None if layout is None else layout.forward_collector(spec.activation, spec.shape)
    reduce = None if layout is None else layout.backward_reduce()

    def mean_loss(p, taps):
        logits, new_state, fwd = apply(
            spec, p, state, x, train=True, taps=taps, collect=collect, key=key, tap_reduce=reduce
        )
        loss = jnp.mean(loss_fn(logits, y, spec.num_classes))
        scaled = loss if loss_scale is None else loss * loss_scale.astype(loss.dtype)
        return scaled, (loss, new_state, fwd)

    if layout is None:
        (_, (loss, new_state, _)), grads = jax.value_and_grad(mean_loss, has_aux=True)(params, None)
        return loss, new_state, _unscaled(grads, loss_scale), None
    # the taps' value: the factor n/S that makes the pass's ∂L/∂z each example's own gradient
    factor = float(n) if loss_scale is None else float(n) / loss_scale.astype(jnp.float32)
    taps = jnp.full((spec.num_layers, layout.backward_size), factor, jnp.float32)
    plain, pull_back = jax.vjp(to_plain, params)
    (_, (loss, new_state, fwd)), (plain_grads, gtaps) = jax.value_and_grad(mean_loss, argnums=(0, 1), has_aux=True)(
        plain, taps
    )
    (grads,) = pull_back(plain_grads)
    return (
        loss,
        new_state,
        _unscaled(grads, loss_scale),
        Raw(fwd, gtaps, plain_grads, _unscaled(plain_grads, loss_scale)),
    )


def _unscaled(grads: Params, loss_scale: jax.Array | None) -> Params:
    return grads if loss_scale is None else unscale(grads, loss_scale)


def table_of(
    layout: Layout, params: Params, raw: Raw, update: jax.Array, reference: jax.Array | None = None
) -> jax.Array:
    """The per-layer statistics table (rows, depth + 1) of a pass's ``Raw`` gatherings (with its
    gradients of the effective weights), the weights, the ``update`` values (``update_values``)
    against the previous logged step and the ``reference`` values (``reference_values``)."""
    return layout.summarize(
        raw.forward,
        raw.backward,
        update,
        effective_weights(params),
        effective_weights(raw.grads),
        effective_weights(raw.scaled_grads),
        reference,
    )


def reference_values(
    layout: Layout, spec: ModelSpec, params: Params, state: NormState, x: jax.Array, z0: tuple[jax.Array, jax.Array]
) -> jax.Array:
    """``layout``'s reference statistics (depth + 1, k_reference) of ``params``' pre-activations on
    the probe ``x`` against ``z0``, the step-0 ones (one more forward pass of the probe)."""
    return layout.reference_values(pre_activations(spec, params, state, x), z0)


def update_values(layout: Layout, params: Params, prev_params: Params) -> jax.Array:
    """``layout``'s update statistics (depth + 1, k_update) of ``params`` against ``prev_params``."""
    return layout.update_values(effective_weights(params), effective_weights(prev_params))
