"""The MLP: ``depth`` hidden layers of ``width`` units, then a linear output layer.

Parameters are a pytree of dicts. The first hidden layer (input_dim → width) stands alone; hidden
layers 2..depth share one shape, so their weights are stacked along a leading axis and run under
``jax.lax.scan``: compiling a 500-layer network costs about what a 5-layer one does.

Each hidden layer computes ``z = norm?(h W + b)``, ``a = norm?(φ(z))`` (normalization before or
after the nonlinearity, by ``norm_position``); ``z``, the input of the nonlinearity, is what the
statistics call the pre-activation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from initlab.activations import get_activation
from initlab.config import ModelConfig
from initlab.initializers import get_bias_initializer, get_initializer
from initlab.normalizations import NormSettings, get_normalization

Params = dict[str, Any]
NormState = dict[str, Any]


@dataclass(frozen=True)
class ModelSpec:
    """The static shape and choices of a network: hashable, closed over by jitted functions."""

    input_dim: int
    num_classes: int
    depth: int
    width: int
    activation: str
    norm: str
    norm_position: str
    norm_settings: NormSettings

    @classmethod
    def from_config(cls, m: ModelConfig, input_dim: int, num_classes: int) -> ModelSpec:
        return cls(input_dim, num_classes, m.depth, m.width, m.activation, m.norm, m.norm_position,
                   NormSettings(eps=m.norm_eps, momentum=m.bn_momentum))

    @property
    def num_layers(self) -> int:
        """Layers that get statistics: the hidden layers and the output layer."""
        return self.depth + 1


def init_params(spec: ModelSpec, m: ModelConfig, key: jax.Array) -> tuple[Params, NormState]:
    """Parameters and normalization state drawn with ``m.init`` / ``m.bias_init``.

    Returns ``(params, norm_state)``; ``params["hidden"]`` leaves carry a leading axis of
    ``depth - 1`` (possibly 0).
    """
    init = get_initializer(m.init)
    bias_entry = get_bias_initializer(m.bias_init)
    bias_fn, bias_args = (init.bias, m.init_args) if init.bias is not None else (bias_entry.weight, m.bias_init_args)
    norm = get_normalization(m.norm)
    w_in, w_hid, w_out, b_in, b_hid, b_out = jax.random.split(key, 6)
    d, W, L = spec.input_dim, spec.width, spec.depth

    def layer(kw, kb, shape):
        return {"w": init.weight(kw, shape, m.init_args), "b": bias_fn(kb, shape, bias_args)}

    hidden = jax.vmap(lambda kw, kb: layer(kw, kb, (W, W)))(jax.random.split(w_hid, L - 1), jax.random.split(b_hid, L - 1))
    params = {
        "inp": {**layer(w_in, b_in, (d, W)), "norm": norm.init_params(W)},
        "hidden": {**hidden, "norm": jax.tree.map(lambda p: jnp.broadcast_to(p, (L - 1, *p.shape)), norm.init_params(W))},
        "out": layer(w_out, b_out, (W, spec.num_classes)),
    }
    state = {
        "inp": norm.init_state(W),
        "hidden": jax.tree.map(lambda s: jnp.broadcast_to(s, (L - 1, *s.shape)), norm.init_state(W)),
    }
    return params, state


@jax.custom_vjp
def grad_tap(z: jax.Array, probe: jax.Array) -> jax.Array:
    """Identity on ``z``. Differentiating with respect to ``probe`` (shape (2,)) yields
    [mean(g), mean(g²)] of the cotangent g = dL/dz: per-layer gradient statistics without
    materialising every layer's (batch, width) gradient."""
    return z


def _tap_fwd(z, probe):
    return z, None


def _tap_bwd(_, g):
    g32 = g.astype(jnp.float32)
    return g, jnp.stack([jnp.mean(g32), jnp.mean(jnp.square(g32))])


grad_tap.defvjp(_tap_fwd, _tap_bwd)

# Forward statistics hook: (z, a) of one layer → a vector of numbers.
Collector = Callable[[jax.Array, jax.Array], jax.Array]


def _hidden_layer(spec: ModelSpec, lp: Params, ls: NormState, h: jax.Array, train: bool, tap: jax.Array | None):
    """One hidden layer: returns (activation (batch, width), new norm state, z (batch, width))."""
    act = get_activation(spec.activation)
    norm = get_normalization(spec.norm)
    z = h @ lp["w"] + lp["b"]  # (batch, width)
    if spec.norm_position == "pre":
        z, ls = norm.apply(lp["norm"], ls, z, train, spec.norm_settings)
    if tap is not None:
        z = grad_tap(z, tap)
    a = act(z)
    if spec.norm_position == "post":
        a, ls = norm.apply(lp["norm"], ls, a, train, spec.norm_settings)
    return a, ls, z


def apply(spec: ModelSpec, params: Params, state: NormState, x: jax.Array, *, train: bool,
          taps: jax.Array | None = None, collect: Collector | None = None):
    """Run the network on ``x`` (batch, input_dim).

    ``train`` selects batch statistics (and updates the running ones) for batch norm. ``taps``,
    shape (depth + 1, 2), are gradient probes (see ``grad_tap``); ``collect`` maps each layer's
    (z, a) to a statistics vector. Returns ``(logits (batch, classes), new_state, stats)`` where
    ``stats`` is ``(depth + 1, k)`` (hidden layers then the output layer) or None.
    """
    tap = (lambda i: None) if taps is None else (lambda i: taps[i])
    h, s_in, z = _hidden_layer(spec, params["inp"], state["inp"], x, train, tap(0))
    first = None if collect is None else collect(z, h)

    def body(h, xs):
        lp, ls, t = xs
        a, ls, z = _hidden_layer(spec, lp, ls, h, train, t)
        return a, (ls, None if collect is None else collect(z, a))

    hidden_taps = None if taps is None else taps[1:spec.depth]
    h, (s_hid, hid_stats) = jax.lax.scan(body, h, (params["hidden"], state["hidden"], hidden_taps))
    logits = h @ params["out"]["w"] + params["out"]["b"]  # (batch, classes)
    if taps is not None:
        logits = grad_tap(logits, taps[spec.depth])
    stats = None
    if collect is not None:
        stats = jnp.concatenate([first[None], hid_stats, collect(logits, logits)[None]], axis=0)
    return logits, {"inp": s_in, "hidden": s_hid}, stats


def layer_weights(params: Params) -> list[jax.Array]:
    """Weights of every layer, as three blocks with a leading layer axis: (1, d, W), (L-1, W, W),
    (1, W, C). Per-layer reductions over each block, concatenated, give depth + 1 values."""
    return [params["inp"]["w"][None], params["hidden"]["w"], params["out"]["w"][None]]
