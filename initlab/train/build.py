"""From a model config to a network: the one place that resolves ``ModelConfig`` into the model's
static spec, each layer role's samplers and the whole-network scheme, and draws the parameters.

It sits above the model and the schemes (``initlab.nn.network_init``) and below training, so the
registries and the model never import the configuration.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from initlab.config import ModelConfig
from initlab.nn.formats import cast
from initlab.nn.initializers import Role, Trace, get_bias_initializer, get_initializer, unit_sampler
from initlab.nn.model import LayerSamplers, ModelSpec, init_layers
from initlab.nn.network_init import SCHEMES, RefineContext
from initlab.nn.normalizations import NormSettings
from initlab.nn.parameterizations import get_parameterization, width_multiplier
from initlab.nn.params import MLPParams, NormState
from initlab.nn.reparams import get_reparam
from initlab.train.theory_inputs import shape_of_model

# fold_in index of the schemes' key (LSUV's batch, pre-training's samples).
REFINE_STREAM = 2**31 - 1


def model_spec(m: ModelConfig, input_dim: int, num_classes: int) -> ModelSpec:
    """The static spec of the network ``m`` describes, for inputs of ``input_dim`` and
    ``num_classes`` classes."""
    norm = NormSettings(eps=m.norm_eps, momentum=m.bn_momentum, args=tuple(m.norm_args.items()))
    return ModelSpec(
        input_dim,
        num_classes,
        m.depth,
        m.width,
        m.activation,
        m.norm,
        m.norm_position,
        norm,
        m.residual,
        m.dropout,
        m.dropout_kind,
        m.dtype,
        m.precision,
        multipliers(m, input_dim),
        shape_of_model(m),
        m.reparam,
    )


def _sigma_w2(m: ModelConfig) -> float:
    """σ_w² of a fan-in law (the constant of Var(W) = σ_w²/fan_in); 1 for any other initializer
    (which only the standard parameterization takes, and which has no multipliers)."""
    init = get_initializer(m.init)
    return 1.0 if init.law is None else float(init.sigma_w2(1, 1, m.init_args))


def multipliers(m: ModelConfig, input_dim: int) -> tuple[float, float, float]:
    """The factors on the input, hidden and output layers' matrix products: the parameterization's,
    and on the hidden layers the reparameterization's activation gain (scaled WS's γ)."""
    p = get_parameterization(m.parameterization)
    mult, s2 = width_multiplier(m.width, m.base_width), _sigma_w2(m)
    gain = get_reparam(m.reparam).hidden_gain(m.activation, shape_of_model(m))
    return (
        p.multiplier(Role.INPUT, input_dim, mult, s2),
        p.multiplier(Role.HIDDEN, m.width, mult, s2) * gain,
        p.multiplier(Role.OUTPUT, m.width, mult, s2),
    )


def layer_samplers(m: ModelConfig) -> LayerSamplers:
    """(role, fan_in) -> (weight sampler, bias sampler): ``m.init`` with ``m.init_args`` for the
    weights, as the parameterization draws them (ntk: the law's shape at unit variance; mup: the
    output layer's draw times √m, or zeros with ``zero_readout``); for the biases, the initializer's
    own bias law where it prescribes one (mean-field, Fixup), else ``m.bias_init`` with
    ``m.bias_init_args``."""
    init = get_initializer(m.init)
    p = get_parameterization(m.parameterization)
    mult = width_multiplier(m.width, m.base_width)
    if init.bias is not None:
        bias, bias_args = init.bias, m.init_args
    else:
        bias, bias_args = get_bias_initializer(m.bias_init).sampler, m.bias_init_args

    def weights(role: Role, fan_in: int):
        if p.unit_weights:
            return unit_sampler(init.law)
        if role is Role.OUTPUT and m.zero_readout:
            return lambda key, shape, dtype: jnp.zeros(shape, dtype)
        draw, factor = init.sampler(m.init_args, role, fan_in), p.init_factor(role, mult)
        return draw if factor == 1.0 else lambda key, shape, dtype: draw(key, shape, dtype) * factor

    def samplers(role: Role, fan_in: int):
        return weights(role, fan_in), bias(bias_args, role, fan_in)

    return samplers


def init_params_traced(
    spec: ModelSpec, m: ModelConfig, key: jax.Array, x_train: jax.Array | None = None
) -> tuple[MLPParams, NormState, Trace | None]:
    """Parameters, normalization state and the scheme's trace (None for per-layer samplers).

    Every layer is drawn with ``layer_samplers(m)`` (``initlab.nn.model.init_layers``, in float32); a
    whole-network scheme (Fixup, LSUV, layer-wise pre-training) then refines the whole tree,
    data-dependent ones on ``x_train`` (ValueError without it); the result is kept in the spec's
    parameter dtype (``initlab.nn.formats``: float32 master copies under mixed precision).
    """
    init = get_initializer(m.init)
    # A stream of its own (fold_in(key, i) equals split(key, n)[i] for small i, so 1 would reuse a
    # layer's key), leaving the per-layer draws as they were before refinement existed.
    refine_key = jax.random.fold_in(key, REFINE_STREAM)
    params, state = init_layers(spec, layer_samplers(m), key)
    if params.blocks is not None and m.branch_scale_init != 1.0:  # ReZero / SkipInit: 0
        params = params._replace(
            blocks=params.blocks._replace(mult=jnp.full_like(params.blocks.mult, m.branch_scale_init))
        )
    if init.scheme is None:
        return cast(params, spec.param_dtype), state, None
    if init.needs_data and x_train is None:
        raise ValueError(f"initializer {m.init!r} needs the training inputs")
    scheme = SCHEMES.get(init.scheme, "model.init")
    params, trace = scheme(RefineContext(spec, params, state, m.init_args, refine_key, x_train))
    return cast(params, spec.param_dtype), state, trace


def init_params(
    spec: ModelSpec, m: ModelConfig, key: jax.Array, x_train: jax.Array | None = None
) -> tuple[MLPParams, NormState]:
    """``init_params_traced`` without the trace."""
    params, state, _ = init_params_traced(spec, m, key, x_train)
    return params, state
