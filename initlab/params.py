"""The parameter pytrees of the MLP: typed NamedTuples whose fields say which layer is which.

``MLPParams`` holds the first hidden layer (``inp``: input_dim → width), hidden layers 2..depth
stacked along a leading axis (``hidden``, run under ``lax.scan``), the output layer (``out``) and
the residual blocks' Fixup scalars (``blocks``; None for a plain MLP). Code that needs a layer's
weight matrix reads it through ``Dense.weight()`` or ``effective_weights`` and finds weights by type
(``Dense``), never by a dict key, so that a reparameterization (weight norm: w = g·v/‖v‖) is seen
by the forward pass, the weight statistics, max-norm, LSUV and pre-training through one method
here. (The gradient statistics read ``effective_weights(grads)``, the gradient of the stored
parameters; with a reparameterization they will need the gradient of the effective weight.)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax


class Dense(NamedTuple):
    """An affine map ``x @ weight() + b``. In a stack both carry a leading layer axis."""

    w: jax.Array  # (..., fan_in, fan_out)
    b: jax.Array  # (..., fan_out)

    def weight(self) -> jax.Array:
        """The weight matrix as the forward pass uses it (the stored ``w`` itself: no
        reparameterization yet)."""
        return self.w

    def scaled(self, scale: jax.Array | float) -> Dense:
        """This layer with its weight matrix multiplied by ``scale`` (a scalar, or (layers, 1, 1)
        for a stack); the bias is unchanged."""
        return self._replace(w=(scale * self.w).astype(self.w.dtype))


class Layer(NamedTuple):
    """A hidden layer: its affine map and its normalization's learned parameters (a dict from
    ``initlab.normalizations``; empty without normalization)."""

    dense: Dense
    norm: dict[str, jax.Array]


class Blocks(NamedTuple):
    """The residual blocks' Fixup scalars (Zhang et al. 2019), one row per block."""

    bias: jax.Array  # (blocks, 2): added to each of the block's two layer inputs
    mult: jax.Array  # (blocks,): multiplies the residual branch


class MLPParams(NamedTuple):
    """All parameters of the MLP (see the module docstring)."""

    inp: Layer
    hidden: Layer  # every leaf with a leading (depth - 1) axis
    out: Dense
    blocks: Blocks | None  # None for a plain MLP


class NormState(NamedTuple):
    """Running statistics of the normalizations (batch norm's mean and variance; else empty dicts)."""

    inp: dict[str, Any]
    hidden: dict[str, Any]  # every leaf with a leading (depth - 1) axis


def effective_weights(params: MLPParams) -> list[jax.Array]:
    """The weight matrices of every layer as the forward pass uses them, in three blocks with a
    leading layer axis: (1, d, W), (L-1, W, W), (1, W, C). Per-layer reductions over each block,
    concatenated, give depth + 1 values (the hidden layers, then the output layer). Works on any
    tree of the same structure, e.g. gradients."""
    return [params.inp.dense.weight()[None], params.hidden.dense.weight(), params.out.weight()[None]]
