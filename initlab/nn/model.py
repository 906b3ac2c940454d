"""The MLP: ``depth`` hidden layers of ``width`` units, then a linear output layer.

Parameters are the typed pytree ``initlab.nn.params.MLPParams``. The first hidden layer (input_dim →
width) stands alone; hidden layers 2..depth share one shape, so their weights are stacked along a
leading axis and run under ``jax.lax.scan``: compiling a 500-layer network costs about what a
5-layer one does.

Each hidden layer computes ``z = norm?(h W + b)``, ``a = norm?(φ(z))`` (normalization before or
after the nonlinearity, by ``norm_position``); ``z``, the input of the nonlinearity, is what the
statistics call the pre-activation. During training ``a`` may then go through dropout.

A residual MLP (``residual``) groups hidden layers 2..depth in blocks of two around a skip
connection, in the post-activation form of He et al. 2016 that Fixup (Zhang et al. 2019) addresses:
``u = φ(norm?((h + c₁) W₁ + b₁))``, ``v = m · norm?((u + c₂) W₂ + b₂)``, ``h' = φ(h + v)``, with
Fixup's scalar biases c₁, c₂ (init 0) and scalar multiplier m (init 1) in ``params.blocks``. For
the block's second layer the pre-activation is the nonlinearity's input ``h + v``.

This module knows the registries only (activations, initializers' roles and samplers,
normalizations, dropout); turning a config into a spec and samplers, and the whole-network
schemes (Fixup, LSUV, pre-training), live above it in ``initlab.train.build`` and ``initlab.nn.network_init``.

References: docs/references.md [he2016], [zhang2019fixup], [yang2022].
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from initlab.nn.activations import Shape, activation_fn
from initlab.nn.formats import cast, compute_dtype, param_dtype, wide
from initlab.nn.initializers import Role, Sampler
from initlab.nn.normalizations import NormSettings, get_normalization
from initlab.nn.params import Affine, Blocks, Dense, Layer, MLPParams, NormState, effective_weights, to_plain
from initlab.nn.regularizers import get_dropout
from initlab.nn.reparams import get_reparam

Params = MLPParams
__all__ = [
    "Blocks",
    "Dense",
    "Layer",
    "MLPParams",
    "ModelSpec",
    "NormState",
    "Params",
    "apply",
    "effective_weights",
    "features",
    "grad_tap",
    "init_layers",
    "pre_activations",
]


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
    dtype: str = "float32"  # the number format of the forward and backward pass (initlab.nn.formats)
    precision: str = "mixed"  # mixed: wide master parameters cast for each pass; pure: parameters in dtype
    # the factor on each matrix product of the input, hidden and output layers (initlab.nn.parameterizations)
    multipliers: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # the kernel-shaping transformation of the activation (TAT, DKS; initlab.theory.shaping), None: as it is
    shape: Shape | None = None
    # how each layer's weight is formed from its parameters (weight norm, scaled WS; initlab.nn.reparams)
    reparam: str = "none"

    @property
    def act(self):
        """The hidden layers' elementwise nonlinearity: the registry activation, shaped."""
        return activation_fn(self.activation, self.shape)

    @property
    def compute(self):
        """The jnp dtype the pass computes in."""
        return compute_dtype(self.dtype)

    @property
    def param_dtype(self):
        """The jnp dtype parameters (and so the optimizer state) are kept in."""
        return param_dtype(self.dtype, self.precision)

    @property
    def state_dtype(self):
        """The jnp dtype of the normalizations' running statistics (wide, as their computation)."""
        return wide(self.compute)

    @property
    def num_layers(self) -> int:
        """Layers that get statistics: the hidden layers and the output layer."""
        return self.depth + 1

    @property
    def num_blocks(self) -> int:
        """Residual blocks (two layers each) after the first hidden layer; 0 for a plain MLP."""
        return (self.depth - 1) // 2 if self.residual else 0

    @property
    def hidden_role(self) -> Role:
        """The role of hidden layers 2..depth: residual branch layers or plain hidden layers."""
        return Role.BRANCH if self.residual else Role.HIDDEN


# (role, fan_in) -> (weight sampler, bias sampler) of that layer, in jax.nn.initializers' form.
LayerSamplers = Callable[[Role, int], tuple[Sampler, Sampler]]


def init_layers(spec: ModelSpec, samplers: LayerSamplers, key: jax.Array) -> tuple[MLPParams, NormState]:
    """Parameters drawn layer by layer, each with the samplers of its role, in float32 whatever the
    format (the same initial values in every format; ``initlab.train.build`` casts them to
    ``spec.param_dtype`` once whole-network schemes have refined them), and the normalizations'
    initial parameters and state (the state in ``spec.state_dtype``). Each drawn layer becomes the
    parameters of ``spec.reparam`` (``initlab.nn.reparams``: weight norm's direction and length, scaled
    WS's raw weights and gain; the plain layer otherwise). ``hidden`` leaves carry
    a leading axis of ``depth - 1`` (possibly 0); ``blocks`` holds the residual blocks' scalar
    biases (0) and multipliers (1), None for a plain MLP."""
    dtype = jnp.dtype(jnp.float32)
    norm = get_normalization(spec.norm)
    reparam = get_reparam(spec.reparam)
    w_in, w_hid, w_out, b_in, b_hid, b_out = jax.random.split(key, 6)
    d, W, L = spec.input_dim, spec.width, spec.depth

    def dense(role, kw, kb, shape):
        weight, bias = samplers(role, shape[0])
        return reparam.layer(Dense(weight(kw, shape, dtype), bias(kb, shape[1:], dtype)), role)

    # vmap draws exactly what a per-layer loop would (lax.map differs in the last bit, and deep nets
    # trained with momentum amplify that into different runs); its temporaries stay below training's peak.
    hidden = jax.vmap(lambda kw, kb: dense(spec.hidden_role, kw, kb, (W, W)))(
        jax.random.split(w_hid, L - 1), jax.random.split(b_hid, L - 1)
    )
    stacked = lambda tree: jax.tree.map(lambda v: jnp.broadcast_to(v, (L - 1, *v.shape)), tree)  # noqa: E731
    params = MLPParams(
        inp=Layer(dense(Role.INPUT, w_in, b_in, (d, W)), norm.init_params(W, dtype)),
        hidden=Layer(hidden, stacked(norm.init_params(W, dtype))),
        out=dense(Role.OUTPUT, w_out, b_out, (W, spec.num_classes)),
        blocks=Blocks(jnp.zeros((spec.num_blocks, 2), dtype), jnp.ones((spec.num_blocks,), dtype))
        if spec.residual
        else None,
    )
    state_dtype = spec.state_dtype
    return params, NormState(norm.init_state(W, state_dtype), stacked(norm.init_state(W, state_dtype)))


# Backward statistics hook: one layer's cotangent g = dL/dz (batch, units) and the factor that
# makes it each example's own gradient -> a vector of numbers.
TapReduce = Callable[[jax.Array, jax.Array], jax.Array]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def grad_tap(z: jax.Array, probe: jax.Array, reduce: TapReduce) -> jax.Array:
    """Identity on ``z``. Differentiating with respect to ``probe`` (shape (k,), every entry the
    same factor f) yields ``reduce(g, f)`` of the cotangent g = dL/dz: per-layer gradient
    statistics computed where the whole (batch, width) gradient exists, without materialising
    every layer's gradient. The statistics themselves are ``reduce``'s business
    (``initlab.stats.statistics``); f is the rescaling that turns g into each example's own gradient (the
    batch size over the loss scale), a value of the probe so that it may be traced."""
    return z


def _tap_fwd(z, probe, reduce):
    return z, probe[0]


def _tap_bwd(reduce, factor, g):
    return g, reduce(g, factor)


grad_tap.defvjp(_tap_fwd, _tap_bwd)

# Forward statistics hook: (z, a) of one layer → a vector of numbers.
Collector = Callable[[jax.Array, jax.Array], jax.Array]


def _affine(x: jax.Array, dense: Affine, multiplier: float) -> jax.Array:
    """``x @ W · multiplier + b``: the parameterization's multiplier on the matrix product (a
    static float; 1 leaves the product as it is)."""
    y = x @ dense.weight()
    return (y if multiplier == 1.0 else y * multiplier) + dense.b


def _hidden_layer(
    spec: ModelSpec,
    lp: Layer,
    ls: dict,
    h: jax.Array,
    train: bool,
    tap: jax.Array | None,
    key: jax.Array | None,
    skip: jax.Array | None = None,
    bias: jax.Array | float = 0.0,
    mult: jax.Array | float = 1.0,
    tap_reduce: TapReduce | None = None,
    weight_mult: float = 1.0,
):
    """One hidden layer: returns (activation (batch, width), new norm state, z (batch, width)).

    ``key`` drops units of the output (training only); ``skip``, ``bias`` and ``mult`` are a
    residual block's skip input, scalar input bias and branch multiplier; ``weight_mult`` the
    parameterization's multiplier on the layer's matrix product."""
    act = spec.act
    norm = get_normalization(spec.norm)
    z = _affine(h + bias, lp.dense, weight_mult)  # (batch, width)
    if spec.norm_position == "pre":
        z, ls = norm.apply(lp.norm, ls, z, train, spec.norm_settings)
    z = mult * z
    if skip is not None:
        z = skip + z
    if tap is not None:
        z = grad_tap(z, tap, tap_reduce)
    a = act(z)
    if spec.norm_position == "post":
        a, ls = norm.apply(lp.norm, ls, a, train, spec.norm_settings)
    if key is not None and spec.dropout > 0:
        a = get_dropout(spec.dropout_kind)(key, a, spec.dropout)
    return a, ls, z


def apply(
    spec: ModelSpec,
    params: Params,
    state: NormState,
    x: jax.Array,
    *,
    train: bool,
    taps: jax.Array | None = None,
    collect: Collector | None = None,
    key: jax.Array | None = None,
    tap_reduce: TapReduce | None = None,
):
    """Run the network on ``x`` (batch, input_dim).

    ``train`` selects batch statistics (and updates the running ones) for batch norm. ``taps``,
    shape (depth + 1, k), are gradient probes (see ``grad_tap``) reduced by ``tap_reduce``; ``collect``
    maps each layer's (z, a) to a statistics vector; ``key`` turns dropout on (training steps only). Returns
    ``(logits (batch, classes), new_state, stats)`` where ``stats`` is ``(depth + 1, k)`` (hidden
    layers then the output layer) or None. The pass computes in ``spec.compute``: parameters and
    inputs are cast to it (the gradient flows back through the cast to the stored parameters), and
    the logits come back in ``wide`` for the loss. A reparameterized weight is formed from the
    stored parameters first (``params.to_plain``, in their precision), then cast.
    """
    L = spec.depth
    params, x = cast(to_plain(params), spec.compute), x.astype(spec.compute)
    h, new_state, stats = _hidden_layers(
        spec, params, state, x, train=train, taps=taps, collect=collect, key=key, tap_reduce=tap_reduce
    )
    logits = _affine(h, params.out, spec.multipliers[2])  # (batch, classes)
    if taps is not None:
        logits = grad_tap(logits, taps[L], tap_reduce)
    if collect is not None:
        stats = jnp.concatenate([stats, collect(logits, logits)[None]], axis=0)
    return logits.astype(wide(logits.dtype)), new_state, stats


def features(spec: ModelSpec, params: Params, state: NormState, x: jax.Array) -> jax.Array:
    """The last hidden layer's activations (batch, width) of ``x`` in evaluation mode (dropout off,
    batch norm on its running statistics): the input of the output layer, in ``spec.compute``."""
    return _hidden_layers(spec, cast(to_plain(params), spec.compute), state, x.astype(spec.compute), train=False)[0]


def pre_activations(spec: ModelSpec, params: Params, state: NormState, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Every layer's pre-activation z on ``x`` as the statistics pass sees it (training mode: batch
    norm on the batch's statistics, its running ones untouched; dropout off), in float32: the hidden
    layers' (depth, batch, width) and the output layer's logits (batch, classes). The reference of
    the coordinate check's ``pre_delta_abs_mean`` (Yang et al. 2022)."""
    params, x = cast(to_plain(params), spec.compute), x.astype(spec.compute)
    h, _, zs = _hidden_layers(spec, params, state, x, train=True, collect=lambda z, a: z.astype(jnp.float32))
    return zs, _affine(h, params.out, spec.multipliers[2]).astype(jnp.float32)


def _hidden_layers(
    spec: ModelSpec,
    params: Params,
    state: NormState,
    x: jax.Array,
    *,
    train: bool,
    taps: jax.Array | None = None,
    collect: Collector | None = None,
    key: jax.Array | None = None,
    tap_reduce: TapReduce | None = None,
):
    """``apply`` up to the output layer: (last hidden activations, new state, the hidden layers'
    statistics (depth, k) or None)."""
    L = spec.depth
    taps_ = (None,) * (L + 1) if taps is None else taps
    keys = (None,) * L if key is None or spec.dropout == 0 else jax.random.split(key, L)
    m_in, m_hidden, _ = spec.multipliers
    layer = functools.partial(_hidden_layer, spec, train=train, tap_reduce=tap_reduce, weight_mult=m_hidden)
    h, s_in, z = layer(params.inp, state.inp, x, tap=taps_[0], key=keys[0], weight_mult=m_in)
    first = None if collect is None else collect(z, h)
    hidden_xs = (
        params.hidden,
        state.hidden,
        None if taps is None else taps[1:L],
        None if keys[0] is None else keys[1:],
    )

    def plain(h, xs):
        lp, ls, t, k = xs
        a, ls, z = layer(lp, ls, h, tap=t, key=k)
        return a, (ls, None if collect is None else collect(z, a))

    def block(h, xs):
        (lp, ls, t, k), bp = xs
        one, two = (jax.tree.map(lambda v: v[i], (lp, ls, t, k)) for i in (0, 1))
        u, ls1, z1 = layer(one[0], one[1], h, tap=one[2], key=one[3], bias=bp.bias[0])
        a, ls2, z2 = layer(two[0], two[1], u, tap=two[2], key=two[3], skip=h, bias=bp.bias[1], mult=bp.mult)
        new_ls = jax.tree.map(lambda p, q: jnp.stack([p, q]), ls1, ls2)
        return a, (new_ls, None if collect is None else jnp.stack([collect(z1, u), collect(z2, a)]))

    if spec.residual:
        # (L-1, ...) leaves → (blocks, 2, ...): one scan step per block
        pairs = jax.tree.map(lambda v: v.reshape(spec.num_blocks, 2, *v.shape[1:]), hidden_xs)
        h, (s_hid, hid_stats) = jax.lax.scan(block, h, (pairs, params.blocks))
        s_hid = jax.tree.map(lambda v: v.reshape(L - 1, *v.shape[2:]), s_hid)
        hid_stats = None if hid_stats is None else hid_stats.reshape(L - 1, *hid_stats.shape[2:])
    else:
        h, (s_hid, hid_stats) = jax.lax.scan(plain, h, hidden_xs)
    stats = None if collect is None else jnp.concatenate([first[None], hid_stats], axis=0)
    return h, NormState(s_in, s_hid), stats
