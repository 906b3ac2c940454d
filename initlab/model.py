"""The MLP: ``depth`` hidden layers of ``width`` units, then a linear output layer.

Parameters are a pytree of dicts. The first hidden layer (input_dim → width) stands alone; hidden
layers 2..depth share one shape, so their weights are stacked along a leading axis and run under
``jax.lax.scan``: compiling a 500-layer network costs about what a 5-layer one does.

Each hidden layer computes ``z = norm?(h W + b)``, ``a = norm?(φ(z))`` (normalization before or
after the nonlinearity, by ``norm_position``); ``z``, the input of the nonlinearity, is what the
statistics call the pre-activation. During training ``a`` may then go through dropout.

A residual MLP (``residual``) groups hidden layers 2..depth in blocks of two around a skip
connection, in the post-activation form of He et al. 2016 that Fixup (Zhang et al. 2019) addresses:
``u = φ(norm?((h + c₁) W₁ + b₁))``, ``v = m · norm?((u + c₂) W₂ + b₂)``, ``h' = φ(h + v)``, with
Fixup's scalar biases c₁, c₂ (init 0) and scalar multiplier m (init 1) in ``params["blocks"]``. For
the block's second layer the pre-activation is the nonlinearity's input ``h + v``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from initlab.activations import get_activation
from initlab.config import ModelConfig
from initlab.initializers import RefineContext, Trace, get_bias_initializer, get_initializer
from initlab.normalizations import NormSettings, get_normalization
from initlab.regularizers import get_dropout

Params = dict[str, Any]
NormState = dict[str, Any]
# fold_in index of the network-level initializers' key (LSUV's batch, pre-training's samples).
REFINE_STREAM = 2**31 - 1


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
    residual: bool = False
    dropout: float = 0.0
    dropout_kind: str = "standard"

    @classmethod
    def from_config(cls, m: ModelConfig, input_dim: int, num_classes: int) -> ModelSpec:
        return cls(input_dim, num_classes, m.depth, m.width, m.activation, m.norm, m.norm_position,
                   NormSettings(eps=m.norm_eps, momentum=m.bn_momentum), m.residual, m.dropout, m.dropout_kind)

    @property
    def num_layers(self) -> int:
        """Layers that get statistics: the hidden layers and the output layer."""
        return self.depth + 1

    @property
    def num_blocks(self) -> int:
        """Residual blocks (two layers each) after the first hidden layer; 0 for a plain MLP."""
        return (self.depth - 1) // 2 if self.residual else 0


def init_params(spec: ModelSpec, m: ModelConfig, key: jax.Array,
                x_train: jax.Array | None = None) -> tuple[Params, NormState]:
    """Parameters and normalization state drawn with ``m.init`` / ``m.bias_init`` (see
    ``init_params_traced``, which also returns the initializer's trace)."""
    params, state, _ = init_params_traced(spec, m, key, x_train)
    return params, state


def init_params_traced(spec: ModelSpec, m: ModelConfig, key: jax.Array,
                       x_train: jax.Array | None = None) -> tuple[Params, NormState, Trace | None]:
    """Parameters, normalization state and the initializer's trace (None for per-layer samplers).

    Every layer is drawn with the initializer's sampler; network-level methods (Fixup, LSUV,
    layer-wise pre-training) then refine the whole tree, data-dependent ones on ``x_train``
    (ValueError without it). ``params["hidden"]`` leaves carry a leading axis of ``depth - 1``
    (possibly 0); ``params["blocks"]`` holds the residual blocks' scalar biases and multipliers.
    """
    init = get_initializer(m.init)
    # A stream of its own (fold_in(key, i) equals split(key, n)[i] for small i, so 1 would reuse a
    # layer's key), leaving the per-layer draws as they were before refinement existed.
    refine_key = jax.random.fold_in(key, REFINE_STREAM)
    bias_entry = get_bias_initializer(m.bias_init)
    bias_fn, bias_args = (init.bias, m.init_args) if init.bias is not None else (bias_entry.weight, m.bias_init_args)
    norm = get_normalization(m.norm)
    w_in, w_hid, w_out, b_in, b_hid, b_out = jax.random.split(key, 6)
    d, W, L = spec.input_dim, spec.width, spec.depth

    def layer(kw, kb, shape):
        return {"w": init.weight(kw, shape, m.init_args), "b": bias_fn(kb, shape, bias_args)}

    # vmap draws exactly what a per-layer loop would (lax.map differs in the last bit, and deep nets
    # trained with momentum amplify that into different runs); its temporaries stay below training's peak.
    hidden = jax.vmap(lambda kw, kb: layer(kw, kb, (W, W)))(jax.random.split(w_hid, L - 1), jax.random.split(b_hid, L - 1))
    params = {
        "inp": {**layer(w_in, b_in, (d, W)), "norm": norm.init_params(W)},
        "hidden": {**hidden, "norm": jax.tree.map(lambda p: jnp.broadcast_to(p, (L - 1, *p.shape)), norm.init_params(W))},
        "out": layer(w_out, b_out, (W, spec.num_classes)),
        "blocks": {"bias": jnp.zeros((spec.num_blocks, 2), jnp.float32),
                   "mult": jnp.ones((spec.num_blocks,), jnp.float32)} if spec.residual else {},
    }
    state = {
        "inp": norm.init_state(W),
        "hidden": jax.tree.map(lambda s: jnp.broadcast_to(s, (L - 1, *s.shape)), norm.init_state(W)),
    }
    if init.refine is None:
        return params, state, None
    if init.needs_data and x_train is None:
        raise ValueError(f"initializer {m.init!r} needs the training inputs")
    params, trace = init.refine(RefineContext(spec, params, state, m.init_args, refine_key, x_train))
    return params, state, trace


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def grad_tap(z: jax.Array, probe: jax.Array, scale: float = 1.0) -> jax.Array:
    """Identity on ``z``. Differentiating with respect to ``probe`` (shape (2,)) yields
    [mean(s·g), mean((s·g)²)] of the cotangent g = dL/dz scaled by the static ``scale`` s:
    per-layer gradient statistics without materialising every layer's (batch, width) gradient.
    With L the mean loss over n examples, s = n gives each example's own gradient ∂ℓ_i/∂z_i,
    scaled before squaring so that small gradients do not underflow."""
    return z


def _tap_fwd(z, probe, scale=1.0):
    return z, None


def _tap_bwd(scale, _, g):
    g32 = g.astype(jnp.float32) * scale
    return g, jnp.stack([jnp.mean(g32), jnp.mean(jnp.square(g32))])


grad_tap.defvjp(_tap_fwd, _tap_bwd)

# Forward statistics hook: (z, a) of one layer → a vector of numbers.
Collector = Callable[[jax.Array, jax.Array], jax.Array]


def _hidden_layer(spec: ModelSpec, lp: Params, ls: NormState, h: jax.Array, train: bool, tap: jax.Array | None,
                  key: jax.Array | None, skip: jax.Array | None = None, bias: jax.Array | float = 0.0,
                  mult: jax.Array | float = 1.0, tap_scale: float = 1.0):
    """One hidden layer: returns (activation (batch, width), new norm state, z (batch, width)).

    ``key`` drops units of the output (training only); ``skip``, ``bias`` and ``mult`` are a
    residual block's skip input, scalar input bias and branch multiplier."""
    act = get_activation(spec.activation)
    norm = get_normalization(spec.norm)
    z = (h + bias) @ lp["w"] + lp["b"]  # (batch, width)
    if spec.norm_position == "pre":
        z, ls = norm.apply(lp["norm"], ls, z, train, spec.norm_settings)
    z = mult * z
    if skip is not None:
        z = skip + z
    if tap is not None:
        z = grad_tap(z, tap, tap_scale)
    a = act(z)
    if spec.norm_position == "post":
        a, ls = norm.apply(lp["norm"], ls, a, train, spec.norm_settings)
    if key is not None and spec.dropout > 0:
        a = get_dropout(spec.dropout_kind)(key, a, spec.dropout)
    return a, ls, z


def apply(spec: ModelSpec, params: Params, state: NormState, x: jax.Array, *, train: bool,
          taps: jax.Array | None = None, collect: Collector | None = None, key: jax.Array | None = None,
          tap_scale: float = 1.0):
    """Run the network on ``x`` (batch, input_dim).

    ``train`` selects batch statistics (and updates the running ones) for batch norm. ``taps``,
    shape (depth + 1, 2), are gradient probes (see ``grad_tap``, which ``tap_scale`` is passed to); ``collect`` maps each layer's
    (z, a) to a statistics vector; ``key`` turns dropout on (training steps only). Returns
    ``(logits (batch, classes), new_state, stats)`` where ``stats`` is ``(depth + 1, k)`` (hidden
    layers then the output layer) or None.
    """
    L = spec.depth
    taps_ = (None,) * (L + 1) if taps is None else taps
    keys = (None,) * L if key is None or spec.dropout == 0 else jax.random.split(key, L)
    layer = functools.partial(_hidden_layer, spec, train=train, tap_scale=tap_scale)
    h, s_in, z = layer(params["inp"], state["inp"], x, tap=taps_[0], key=keys[0])
    first = None if collect is None else collect(z, h)
    hidden_xs = (params["hidden"], state["hidden"], None if taps is None else taps[1:L],
                 None if keys[0] is None else keys[1:])

    def plain(h, xs):
        lp, ls, t, k = xs
        a, ls, z = layer(lp, ls, h, tap=t, key=k)
        return a, (ls, None if collect is None else collect(z, a))

    def block(h, xs):
        (lp, ls, t, k), bp = xs
        one, two = (jax.tree.map(lambda v: v[i], (lp, ls, t, k)) for i in (0, 1))
        u, ls1, z1 = layer(one[0], one[1], h, tap=one[2], key=one[3], bias=bp["bias"][0])
        a, ls2, z2 = layer(two[0], two[1], u, tap=two[2], key=two[3], skip=h, bias=bp["bias"][1], mult=bp["mult"])
        new_ls = jax.tree.map(lambda p, q: jnp.stack([p, q]), ls1, ls2)
        return a, (new_ls, None if collect is None else jnp.stack([collect(z1, u), collect(z2, a)]))

    if spec.residual:
        # (L-1, ...) leaves → (blocks, 2, ...): one scan step per block
        pairs = jax.tree.map(lambda v: v.reshape(spec.num_blocks, 2, *v.shape[1:]), hidden_xs)
        h, (s_hid, hid_stats) = jax.lax.scan(block, h, (pairs, params["blocks"]))
        s_hid = jax.tree.map(lambda v: v.reshape(L - 1, *v.shape[2:]), s_hid)
        hid_stats = None if hid_stats is None else hid_stats.reshape(L - 1, hid_stats.shape[-1])
    else:
        h, (s_hid, hid_stats) = jax.lax.scan(plain, h, hidden_xs)
    logits = h @ params["out"]["w"] + params["out"]["b"]  # (batch, classes)
    if taps is not None:
        logits = grad_tap(logits, taps[L], tap_scale)
    stats = None
    if collect is not None:
        stats = jnp.concatenate([first[None], hid_stats, collect(logits, logits)[None]], axis=0)
    return logits, {"inp": s_in, "hidden": s_hid}, stats


def layer_weights(params: Params) -> list[jax.Array]:
    """Weights of every layer, as three blocks with a leading layer axis: (1, d, W), (L-1, W, W),
    (1, W, C). Per-layer reductions over each block, concatenated, give depth + 1 values."""
    return [params["inp"]["w"][None], params["hidden"]["w"], params["out"]["w"][None]]
