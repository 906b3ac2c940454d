"""Initializers defined on the whole network rather than one weight matrix at a time: Fixup
(structure), LSUV, weight normalization's data-dependent init and greedy layer-wise autoencoder
pre-training (data).

Each is a scheme of ``SCHEMES``, named by an entry of ``initlab.nn.initializers.INITIALIZERS``
(``scheme``; the entry also declares the arguments, checked when the config loads): it receives
the parameters drawn layer by layer with the entry's sampler and returns the refined parameters
and, for the data-dependent methods, a ``Trace`` that the run folder keeps. Weights are read
through ``Dense.weight()`` and rescaled through ``Dense.scaled``, so a reparameterized weight is
handled in one place (``initlab.nn.params``).

References: docs/references.md [zhang2019fixup], [mishkin2016], [saxe2014], [salimans2016],
[bengio2007], [hinton2006], [vincent2008].
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from initlab.nn.initializers import Trace
from initlab.nn.model import ModelSpec, _hidden_layer, apply
from initlab.nn.params import Dense, Layer, MLPParams, NormState
from initlab.registry import Registry


@dataclass(frozen=True)
class RefineContext:
    """What a scheme sees after every layer has been drawn with its initializer's sampler: the
    model's static spec, the drawn parameters and normalization state, the initializer's arguments,
    a fresh key, and the training inputs (on the device) for data-dependent schemes."""

    spec: ModelSpec
    params: MLPParams
    norm_state: NormState
    args: Mapping[str, float]
    key: jax.Array
    x_train: jax.Array | None


# ctx -> (params, trace or None)
Scheme = Callable[[RefineContext], tuple[MLPParams, Trace | None]]


def fixup(ctx: RefineContext) -> tuple[MLPParams, None]:
    """Fixup (Zhang, Dauphin & Ma 2019, "Fixup initialization: residual learning without
    normalization"), rules 1-3 for a residual MLP of L blocks with m = 2 layers per branch:
    the output (classification) layer and the last layer of every residual branch start at zero;
    the other branch layer keeps its He-normal draw scaled by L^(-1/(2m-2)) = L^(-1/2); biases (the
    entry's own bias sampler) start at zero, the blocks' scalar multipliers at 1 (the model). At
    initialization every residual branch outputs zero, so each block passes its input on unchanged
    and the network's output is 0 whatever its depth."""
    spec, p = ctx.spec, ctx.params
    blocks = spec.num_blocks
    scale = blocks ** (-1.0 / (2 * 2 - 2)) if blocks else 1.0
    first_of_block = (jnp.arange(spec.depth - 1) % 2 == 0)[:, None, None]  # hidden layers alternate 1st, 2nd
    hidden = p.hidden.dense
    # Fixup writes the stored w (a reparameterized weight would need its own parameters set).
    hidden = hidden._replace(w=jnp.where(first_of_block, scale * hidden.weight(), 0.0))
    out = p.out._replace(w=jnp.zeros_like(p.out.w))
    return p._replace(hidden=p.hidden._replace(dense=hidden), out=out), None


def scale_layers(params: MLPParams, scales: jax.Array) -> MLPParams:
    """``params`` with layer k's weight matrix multiplied by ``scales[k]`` ((depth + 1,): the hidden
    layers, then the output layer)."""
    inp, hidden = params.inp, params.hidden
    n_hidden = hidden.dense.w.shape[0]
    return params._replace(
        inp=inp._replace(dense=inp.dense.scaled(scales[0])),
        hidden=hidden._replace(dense=hidden.dense.scaled(scales[1 : 1 + n_hidden, None, None])),
        out=params.out.scaled(scales[-1]),
    )


@functools.partial(jax.jit, static_argnums=(0, 5))
def _lsuv_scales(spec: ModelSpec, params: MLPParams, state: NormState, x: jax.Array, tol, max_iters: int):
    """LSUV's loop: for each layer in order, measure its output variance on ``x`` and divide its
    weights by the standard deviation until |Var − 1| < tol or ``max_iters`` rescalings. Returns
    the per-layer multipliers and the traces (layers, max_iters + 1) of variance and multiplier
    (NaN where the loop had stopped)."""
    n_layers = spec.depth + 1

    def variances(scales):
        collect = lambda z, a: jnp.var(z.astype(jnp.float32))[None]  # noqa: E731 - the layer's output z
        _, _, v = apply(spec, scale_layers(params, scales), state, x, train=True, collect=collect)
        return v[:, 0]  # (depth + 1,)

    def layer(k, carry):
        scales, var_trace, scale_trace = carry
        var = variances(scales)[k]
        var_trace, scale_trace = var_trace.at[k, 0].set(var), scale_trace.at[k, 0].set(scales[k])

        def going(c):
            _, it, v, _, _ = c
            return (it < max_iters) & (jnp.abs(v - 1.0) >= tol) & (v > 0) & jnp.isfinite(v)

        def rescale(c):
            s, it, v, vt, st = c
            s = s.at[k].multiply(jax.lax.rsqrt(v))
            v = variances(s)[k]
            return s, it + 1, v, vt.at[k, it + 1].set(v), st.at[k, it + 1].set(s[k])

        scales, _, _, var_trace, scale_trace = jax.lax.while_loop(
            going, rescale, (scales, jnp.int32(0), var, var_trace, scale_trace)
        )
        return scales, var_trace, scale_trace

    blank = jnp.full((n_layers, max_iters + 1), jnp.nan, jnp.float32)
    return jax.lax.fori_loop(0, n_layers, layer, (jnp.ones((n_layers,), jnp.float32), blank, blank))


def lsuv(ctx: RefineContext) -> tuple[MLPParams, Trace]:
    """Layer-sequential unit-variance init (Mishkin & Matas 2016, "All you need is a good init",
    Algorithm 1): start from orthogonal weights (Saxe et al. 2014), then for each layer in order,
    on a batch of ``batch_size`` training examples, divide the layer's weights by sqrt(Var(output))
    until |Var − 1| < ``tol`` (at most ``max_iters`` times). A layer's output is its pre-activation
    z (for a residual block's second layer, the block's sum h + v); the output layer is included.
    The trace holds every measured variance and the multiplier applied at that point."""
    a = ctx.args
    n = min(int(a["batch_size"]), ctx.x_train.shape[0])
    max_iters = int(a["max_iters"])
    idx = jax.random.choice(ctx.key, ctx.x_train.shape[0], (n,), replace=False)
    scales, var_trace, scale_trace = _lsuv_scales(
        ctx.spec, ctx.params, ctx.norm_state, ctx.x_train[idx], jnp.float32(a["tol"]), max_iters
    )
    var_trace, scale_trace = np.asarray(var_trace), np.asarray(scale_trace)
    rows = [
        {"layer": k + 1, "iteration": it, "variance": float(var_trace[k, it]), "scale": float(scale_trace[k, it])}
        for k in range(var_trace.shape[0])
        for it in range(max_iters + 1)
        if not np.isnan(var_trace[k, it])
    ]
    return scale_layers(ctx.params, scales), Trace("lsuv_trace.csv", ("layer", "iteration", "variance", "scale"), rows)


@functools.partial(jax.jit, static_argnums=0)
def _weightnorm_fit(spec: ModelSpec, params: MLPParams, state: NormState, x: jax.Array):
    """Weight norm's data-dependent init on the batch ``x``: returns the refitted parameters and,
    per layer (depth + 1,), the mean over units of the unit direction's pre-activation mean and
    standard deviation before the fit."""
    m_in, m_hidden, m_out = spec.multipliers

    def fit(dense, h, mult):
        t = (h @ dense._replace(g=jnp.ones_like(dense.g)).weight()) * mult  # (batch, units): v·h/‖v‖
        mu, sd = jnp.mean(t, axis=0), jnp.std(t, axis=0)
        fitted = dense._replace(g=(1.0 / sd).astype(dense.g.dtype), b=(-mu / sd).astype(dense.b.dtype))
        return fitted, jnp.stack([jnp.mean(mu), jnp.mean(sd)])

    def layer(h, xs):
        lp, ls, mult = xs
        dense, before = fit(lp.dense, h, mult)
        lp = lp._replace(dense=dense)
        return _hidden_layer(spec, lp, ls, h, True, None, None, weight_mult=mult)[0], (lp, before)

    h, (inp, first) = layer(x, (params.inp, state.inp, m_in))
    h, (hidden, rest) = jax.lax.scan(lambda h, xs: layer(h, (*xs, m_hidden)), h, (params.hidden, state.hidden))
    out, last = fit(params.out, h, m_out)
    return params._replace(inp=inp, hidden=hidden, out=out), jnp.concatenate([first[None], rest, last[None]])


def weightnorm_data(ctx: RefineContext) -> tuple[MLPParams, Trace]:
    """Weight normalization's data-dependent initialization (Salimans & Kingma 2016, §3): on a
    batch of ``batch_size`` training examples, for each layer in order (the output layer included),
    the pre-activation of each unit's direction alone, t = v·h/‖v‖, has mean μ and standard
    deviation σ over the batch; setting g = 1/σ and b = −μ/σ makes the unit's pre-activation
    z = g·t + b exactly mean 0 and variance 1 on that batch, and the next layer is fitted on the
    activations that follow. The trace holds each layer's μ and σ before the fit, averaged over units."""
    n = min(int(ctx.args["batch_size"]), ctx.x_train.shape[0])
    idx = jax.random.choice(ctx.key, ctx.x_train.shape[0], (n,), replace=False)
    params, before = _weightnorm_fit(ctx.spec, ctx.params, ctx.norm_state, ctx.x_train[idx])
    before = np.asarray(before, np.float64)
    rows = [{"layer": k + 1, "mean": float(mu), "std": float(sd)} for k, (mu, sd) in enumerate(before)]
    return params, Trace("weightnorm_init.csv", ("layer", "mean", "std"), rows)


def _encoder_decoder_loss(spec, enc, dec, ls, h_in, h_target, tied):
    """Mean squared reconstruction error of one layer's autoencoder: the layer (with its norm and
    nonlinearity) encodes, a linear decoder (or the transposed encoder weights, ``tied``) decodes."""
    code, _, _ = _hidden_layer(spec, enc, ls, h_in, True, None, None)
    w_dec = enc.dense.weight().T if tied else dec.weight()
    recon = code @ w_dec + dec.b  # (batch, fan_in)
    return jnp.mean(jnp.square(recon - h_target))


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7))
def _train_autoencoder(
    spec: ModelSpec, enc: Layer, ls: dict, h: jax.Array, key: jax.Array, steps: int, batch: int, tied: bool, lr, noise
):
    """Adam on one layer's autoencoder for ``steps`` mini-batches drawn from ``h`` (n, fan_in);
    masking noise (Vincent et al. 2008) zeroes a ``noise`` fraction of the encoder's inputs.
    Returns the trained encoder (the layer) and the per-step losses (steps,)."""
    fan_in = h.shape[1]
    k_dec, k_steps = jax.random.split(key)
    limit = jnp.sqrt(6.0 / (fan_in + spec.width))
    dtype = enc.dense.w.dtype
    dec = Dense(jax.random.uniform(k_dec, (spec.width, fan_in), dtype, -limit, limit), jnp.zeros((fan_in,), dtype))
    opt = optax.adam(lr)
    trainable = (enc, dec)

    def step(carry, k):
        (enc, dec), opt_state = carry
        k_idx, k_noise = jax.random.split(k)
        hb = h[jax.random.randint(k_idx, (batch,), 0, h.shape[0])]  # (batch, fan_in)
        kept = jax.random.bernoulli(k_noise, 1.0 - noise, hb.shape)
        loss, grads = jax.value_and_grad(
            lambda t: _encoder_decoder_loss(spec, t[0], t[1], ls, jnp.where(kept, hb, 0.0), hb, tied)
        )((enc, dec))
        updates, opt_state = opt.update(grads, opt_state, (enc, dec))
        return (optax.apply_updates((enc, dec), updates), opt_state), loss

    ((enc, _), _), losses = jax.lax.scan(step, (trainable, opt.init(trainable)), jax.random.split(k_steps, steps))
    return enc, losses


@functools.partial(jax.jit, static_argnums=0)
def _encode(spec: ModelSpec, lp: Layer, ls: dict, h: jax.Array) -> jax.Array:
    """One layer's output on ``h``: the next layer's training inputs."""
    return _hidden_layer(spec, lp, ls, h, True, None, None)[0]


def layerwise_autoencoder(ctx: RefineContext) -> tuple[MLPParams, Trace]:
    """Greedy layer-wise pre-training with autoencoders (Bengio, Lamblin, Popovici & Larochelle
    2007, "Greedy layer-wise training of deep networks"; with RBMs, Hinton, Osindero & Teh 2006):
    hidden layer 1 is trained as the encoder of an autoencoder on ``examples`` training inputs for
    ``steps`` Adam steps, its decoder is dropped, the inputs are encoded, and layer 2 is trained on
    those codes, and so on up the stack; the output layer keeps its draw. The layer's own width is
    the code size; what stops an over-complete code from copying its input is the denoising
    corruption ``noise`` (Vincent et al. 2008) and ``tied`` decoder weights (Wᵀ). The trace holds
    each layer's reconstruction loss, averaged over every ``log_every`` steps."""
    a, spec = ctx.args, ctx.spec
    steps, batch, every = int(a["steps"]), int(a["batch_size"]), max(int(a["log_every"]), 1)
    k_sub, k_layers = jax.random.split(ctx.key)
    n = min(int(a["examples"]), ctx.x_train.shape[0])
    h = ctx.x_train[jax.random.permutation(k_sub, ctx.x_train.shape[0])[:n]]  # (n, input_dim)
    params, rows = ctx.params, []
    for k, key in enumerate(jax.random.split(k_layers, spec.depth)):
        lp = params.inp if k == 0 else jax.tree.map(lambda v: v[k - 1], params.hidden)
        ls = ctx.norm_state.inp if k == 0 else jax.tree.map(lambda v: v[k - 1], ctx.norm_state.hidden)
        lp, losses = _train_autoencoder(
            spec, lp, ls, h, key, steps, batch, bool(a["tied"]), jnp.float32(a["lr"]), jnp.float32(a["noise"])
        )
        losses = np.asarray(losses, np.float64)
        rows.append({"layer": k + 1, "step": 0, "loss": float(losses[0])})
        rows += [
            {"layer": k + 1, "step": min(s + every, steps), "loss": float(losses[s : s + every].mean())}
            for s in range(0, steps, every)
        ]
        h = _encode(spec, lp, ls, h)
        if k == 0:
            params = params._replace(inp=lp)
        else:
            params = params._replace(hidden=jax.tree.map(lambda full, new: full.at[k - 1].set(new), params.hidden, lp))
    return params, Trace("pretrain_losses.csv", ("layer", "step", "loss"), rows)


SCHEMES: Registry[Scheme] = Registry(
    "initialization scheme",
    {"fixup": fixup, "lsuv": lsuv, "weightnorm_data": weightnorm_data, "layerwise_autoencoder": layerwise_autoencoder},
)
