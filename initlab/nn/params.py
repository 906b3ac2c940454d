"""The parameter pytrees of the MLP: typed NamedTuples whose fields say which layer is which.

``MLPParams`` holds the first hidden layer (``inp``: input_dim → width), hidden layers 2..depth
stacked along a leading axis (``hidden``, run under ``lax.scan``), the output layer (``out``) and
the residual blocks' Fixup scalars (``blocks``; None for a plain MLP). Code that needs a layer's
weight matrix reads it through ``Dense.weight()`` or ``effective_weights`` and finds weights by type
(``AFFINE``), never by a dict key, so that a reparameterization is seen by the forward pass, the
weight statistics, max-norm, LSUV and pre-training through one method here. Three affine types
share that interface (``weight()``, ``scaled``, ``plain``): ``Dense`` (the stored matrix itself),
``WeightNormDense`` (weight normalization, w = g·v/‖v‖) and ``StandardizedDense`` (scaled weight
standardization); ``initlab.nn.reparams`` says which layers get which. The gradient statistics read
the gradient of the effective weight: ``to_plain`` maps a tree to plain ``Dense`` layers, and
``initlab.train.step`` differentiates through it.

References: docs/references.md [salimans2016], [brock2021], [qiao2019], [zhang2019fixup].
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


def _column_scale(scale: jax.Array | float) -> jax.Array | float:
    """A ``scaled`` factor (a scalar, or broadcastable to the weight with size 1 on the fan-in
    axis: (layers, 1, 1) for a stack, (..., 1, fan_out) per unit) as a factor on the per-unit
    gains g (..., fan_out)."""
    s = jnp.asarray(scale)
    return s if s.ndim < 2 else s[..., 0, :]


class Dense(NamedTuple):
    """An affine map ``x @ weight() + b``. In a stack both carry a leading layer axis."""

    w: jax.Array  # (..., fan_in, fan_out)
    b: jax.Array  # (..., fan_out)

    def weight(self) -> jax.Array:
        """The weight matrix as the forward pass uses it: the stored ``w`` itself."""
        return self.w

    def scaled(self, scale: jax.Array | float) -> Dense:
        """This layer with its weight matrix multiplied by ``scale`` (a scalar, (layers, 1, 1) for
        a stack, or (..., 1, fan_out) per unit); the bias is unchanged."""
        return self._replace(w=(scale * self.w).astype(self.w.dtype))

    def plain(self) -> Dense:
        return self


class WeightNormDense(NamedTuple):
    """Weight normalization (Salimans & Kingma 2016, "Weight normalization: a simple
    reparameterization to accelerate training of deep neural networks"): each unit's incoming
    weight vector is w = g · v/‖v‖, its direction ``v`` (stored as ``w``) and its length ``g``
    learned separately. ∂L/∂g = ∇_w L · v/‖v‖ and ∂L/∂v = (g/‖v‖)(I − w wᵀ/‖w‖²) ∇_w L (the
    paper's eq. 3), by automatic differentiation through ``weight()``."""

    w: jax.Array  # v: (..., fan_in, fan_out), the directions
    b: jax.Array  # (..., fan_out)
    g: jax.Array  # (..., fan_out): each unit's weight norm

    def weight(self) -> jax.Array:
        v = self.w.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=-2, keepdims=True))  # (..., 1, fan_out)
        return (v * (self.g.astype(jnp.float32)[..., None, :] / norm)).astype(self.w.dtype)

    def scaled(self, scale: jax.Array | float) -> WeightNormDense:
        """The weight multiplied by ``scale`` (as ``Dense.scaled``): its lengths g are."""
        return self._replace(g=(_column_scale(scale) * self.g).astype(self.g.dtype))

    def plain(self) -> Dense:
        return Dense(self.weight(), self.b)


# Brock et al. 2021's floor on fan_in · Var(v) (their eps), so a constant column is not divided by 0.
WS_EPS = 1e-4


class StandardizedDense(NamedTuple):
    """Scaled weight standardization (Brock, De & Smith 2021, "Characterizing signal propagation
    to close the performance gap in unnormalized ResNets"; Qiao et al. 2019 without the scale):
    each unit's incoming weights are standardized in the forward pass,
    Ŵ = g · (v − mean(v)) / √(fan_in · Var(v)), so every column has mean 0 and norm |g| whatever
    ``v`` (stored as ``w``) is; the activation's gain γ multiplies the matrix product
    (``ModelSpec.multipliers``), not this weight."""

    w: jax.Array  # v: (..., fan_in, fan_out)
    b: jax.Array  # (..., fan_out)
    g: jax.Array  # (..., fan_out): each unit's learned gain, 1 at init

    def weight(self) -> jax.Array:
        v = self.w.astype(jnp.float32)
        fan_in = v.shape[-2]
        mean = jnp.mean(v, axis=-2, keepdims=True)
        var = jnp.var(v, axis=-2, keepdims=True)
        scale = jax.lax.rsqrt(jnp.maximum(var * fan_in, WS_EPS)) * self.g.astype(jnp.float32)[..., None, :]
        return ((v - mean) * scale).astype(self.w.dtype)

    def scaled(self, scale: jax.Array | float) -> StandardizedDense:
        """The weight multiplied by ``scale`` (as ``Dense.scaled``): its gains g are."""
        return self._replace(g=(_column_scale(scale) * self.g).astype(self.g.dtype))

    def plain(self) -> Dense:
        return Dense(self.weight(), self.b)


# Every affine type: what code that looks for layers by type (max-norm, ``to_plain``) matches.
AFFINE = (Dense, WeightNormDense, StandardizedDense)
Affine = Dense | WeightNormDense | StandardizedDense


def is_affine(node: Any) -> bool:
    return isinstance(node, AFFINE)


class Layer(NamedTuple):
    """A hidden layer: its affine map and its normalization's learned parameters (a dict from
    ``initlab.nn.normalizations``; empty without normalization)."""

    dense: Affine
    norm: dict[str, jax.Array]


class Blocks(NamedTuple):
    """The residual blocks' Fixup scalars (Zhang et al. 2019), one row per block."""

    bias: jax.Array  # (blocks, 2): added to each of the block's two layer inputs
    mult: jax.Array  # (blocks,): multiplies the residual branch


class MLPParams(NamedTuple):
    """All parameters of the MLP (see the module docstring)."""

    inp: Layer
    hidden: Layer  # every leaf with a leading (depth - 1) axis
    out: Affine
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


def to_plain(tree: Any) -> Any:
    """``tree`` with every affine layer replaced by the plain ``Dense`` of its effective weight
    (the identity on a tree of plain layers): what the forward pass computes with, and what the
    gradient statistics differentiate against."""
    return jax.tree.map(lambda n: n.plain() if is_affine(n) else n, tree, is_leaf=is_affine)


def _key_name(entry: Any) -> str:
    """One step of a pytree path as a name: a field (``dense``), a dict key (``scale``) or an index."""
    for attr in ("name", "key", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def named_arrays(tree: Any, prefix: str) -> dict[str, Any]:
    """Every leaf of ``tree`` under its dotted path, e.g. ``params.inp.dense.w``,
    ``params.hidden.dense.w`` (stacked: (depth − 1, width, width)), ``params.out.b``,
    ``params.inp.norm.scale``, ``state.hidden.mean``: the names of a saved parameters file."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {".".join([prefix, *(_key_name(k) for k in path)]): leaf for path, leaf in leaves}


def from_named(template: Any, arrays: Any, prefix: str) -> Any:
    """``template``'s pytree (e.g. from ``jax.eval_shape``) filled from ``arrays`` by
    ``named_arrays``' names, each cast to the template leaf's dtype. KeyError names a missing array;
    ValueError a shape that differs."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, leaf in paths:
        name = ".".join([prefix, *(_key_name(k) for k in path)])
        value = jnp.asarray(arrays[name])
        if value.shape != leaf.shape:
            raise ValueError(f"{name}: shape {value.shape}, expected {leaf.shape}")
        leaves.append(value.astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)
