"""Normalization layers, one registry.

Each entry works on one layer's activations ``x`` of shape ``(batch, width)``, with learned
``params`` (scale γ, shift β; Ioffe & Szegedy 2015 initialise them to 1 and 0) and, for batch
norm, a running ``state``. In a stack of layers both carry a leading depth axis and are sliced by
``lax.scan``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp

from initlab.registry import Registry

Params = dict
State = dict


@dataclass(frozen=True)
class NormSettings:
    """Static settings of a normalization: epsilon and the running-average momentum."""

    eps: float = 1e-5
    momentum: float = 0.9  # running = momentum * running + (1 - momentum) * batch


@dataclass(frozen=True)
class Normalization:
    """init_params(width) -> params; init_state(width) -> state;
    apply(params, state, x, train, settings) -> (y, new_state)."""

    init_params: Callable[[int], Params]
    init_state: Callable[[int], State]
    apply: Callable[[Params, State, jnp.ndarray, bool, NormSettings], tuple[jnp.ndarray, State]]


def _affine(width: int) -> Params:
    return {"scale": jnp.ones((width,), jnp.float32), "shift": jnp.zeros((width,), jnp.float32)}


def _no_state(width: int) -> State:
    return {}


def _identity(params, state, x, train, settings):
    return x, state


def batchnorm_apply(params, state, x, train, settings):
    """Batch normalization (Ioffe & Szegedy 2015).

    Training: normalise each unit by the mini-batch mean and biased variance, and update the
    running averages, the variance with the unbiased estimate m/(m-1)·σ²_B. Evaluation: normalise
    by the running (population) statistics.
    """
    if train:
        mean = x.mean(axis=0)  # (width,)
        var = x.var(axis=0)  # biased, as in the paper's normalisation step
        m = x.shape[0]
        unbiased = var * (m / max(m - 1, 1))
        mom = settings.momentum
        state = {
            "mean": mom * state["mean"] + (1 - mom) * mean,
            "var": mom * state["var"] + (1 - mom) * unbiased,
        }
    else:
        mean, var = state["mean"], state["var"]
    x_hat = (x - mean) * jnp.reciprocal(jnp.sqrt(var + settings.eps))
    return params["scale"] * x_hat + params["shift"], state


def layernorm_apply(params, state, x, train, settings):
    """Layer normalization (Ba, Kiros & Hinton 2016): each example normalised over its units;
    the same computation in training and evaluation."""
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    x_hat = (x - mean) * jnp.reciprocal(jnp.sqrt(var + settings.eps))
    return params["scale"] * x_hat + params["shift"], state


def rmsnorm_apply(params, state, x, train, settings):
    """RMSNorm (Zhang & Sennrich 2019): each example divided by the root mean square of its units,
    then a learned per-unit gain; no centring and no shift (re-scaling invariance without
    re-centring). The same computation in training and evaluation."""
    ms = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    return params["scale"] * x * jnp.reciprocal(jnp.sqrt(ms + settings.eps)), state


NORMALIZATIONS: Registry[Normalization] = Registry(
    "normalization",
    {
        "none": Normalization(lambda width: {}, _no_state, _identity),
        "batchnorm": Normalization(
            _affine,
            lambda width: {"mean": jnp.zeros((width,), jnp.float32), "var": jnp.ones((width,), jnp.float32)},
            batchnorm_apply,
        ),
        "layernorm": Normalization(_affine, _no_state, layernorm_apply),
        "rmsnorm": Normalization(lambda width: {"scale": jnp.ones((width,), jnp.float32)}, _no_state, rmsnorm_apply),
    },
)


def get_normalization(name: str, key: str = "model.norm") -> Normalization:
    """The normalization called ``name`` (ConfigError listing valid names otherwise)."""
    return NORMALIZATIONS.get(name, key)
