"""Normalization layers, one registry.

Each entry works on one layer's activations ``x`` of shape ``(batch, width)``, with learned
``params`` (scale γ, shift β; Ioffe & Szegedy 2015 initialise them to 1 and 0) and, for batch
norm, a running ``state``. Their statistics are computed in float32 (``initlab.nn.formats.wide``)
whatever the pass's number format, as mixed-precision recipes do, and the output is cast back. In a
stack of layers both carry a leading depth axis and are sliced by ``lax.scan``.

References: docs/references.md [ioffe2015], [ba2016], [zhang2019rmsnorm].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp

from initlab.nn.formats import wide
from initlab.registry import Registry

Params = dict
State = dict


@dataclass(frozen=True)
class NormSettings:
    """Static settings of a normalization: epsilon, the running-average momentum and the entry's own
    arguments (``model.norm_args`` resolved against ``Normalization.args``, as name-value pairs so
    that the settings stay hashable)."""

    eps: float = 1e-5
    momentum: float = 0.9  # running = momentum * running + (1 - momentum) * batch
    args: tuple[tuple[str, float], ...] = ()

    def arg(self, name: str) -> float:
        """The value of the entry's argument ``name``."""
        return dict(self.args)[name]


@dataclass(frozen=True)
class Normalization:
    """init_params(width, dtype) -> params; init_state(width, dtype) -> state (dtype defaults to
    float32); apply(params, state, x, train, settings) -> (y, new_state). ``per_example``: each
    example is normalized by its own statistics (False: by the batch's, which couples the
    examples, so one example's input-output Jacobian is not defined). ``args``: its own arguments
    with their defaults, set in ``model.norm_args`` and read as ``settings.arg(name)``; ``rules``:
    what each may be (``initlab.nn.initializers.ARG_RULES``, checked when the config loads)."""

    init_params: Callable[..., Params]
    init_state: Callable[..., State]
    apply: Callable[[Params, State, jnp.ndarray, bool, NormSettings], tuple[jnp.ndarray, State]]
    per_example: bool = True
    args: Mapping[str, float] = field(default_factory=dict)
    rules: Mapping[str, str] = field(default_factory=dict)


def _affine(width: int, dtype: Any = jnp.float32) -> Params:
    return {"scale": jnp.ones((width,), dtype), "shift": jnp.zeros((width,), dtype)}


def _gain(width: int, dtype: Any = jnp.float32) -> Params:
    return {"scale": jnp.ones((width,), dtype)}


def _running_moments(width: int, dtype: Any = jnp.float32) -> State:
    return {"mean": jnp.zeros((width,), dtype), "var": jnp.ones((width,), dtype)}


def _nothing(width: int, dtype: Any = jnp.float32) -> dict:
    return {}


def _identity(params, state, x, train, settings):
    return x, state


def batchnorm_apply(params, state, x, train, settings):
    """Batch normalization (Ioffe & Szegedy 2015).

    Training: normalise each unit by the mini-batch mean and biased variance, and update the
    running averages, the variance with the unbiased estimate m/(m-1)·σ²_B. Evaluation: normalise
    by the running (population) statistics.
    """
    dtype, x = x.dtype, x.astype(wide(x.dtype))  # statistics in float32 (or wider), as mixed precision does
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
    return (params["scale"] * x_hat + params["shift"]).astype(dtype), state


def layernorm_apply(params, state, x, train, settings):
    """Layer normalization (Ba, Kiros & Hinton 2016): each example normalised over its units;
    the same computation in training and evaluation."""
    dtype, x = x.dtype, x.astype(wide(x.dtype))
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    x_hat = (x - mean) * jnp.reciprocal(jnp.sqrt(var + settings.eps))
    return (params["scale"] * x_hat + params["shift"]).astype(dtype), state


def rmsnorm_apply(params, state, x, train, settings):
    """RMSNorm (Zhang & Sennrich 2019): each example divided by the root mean square of its units,
    then a learned per-unit gain; no centring and no shift (re-scaling invariance without
    re-centring). The same computation in training and evaluation."""
    dtype, x = x.dtype, x.astype(wide(x.dtype))
    ms = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    return (params["scale"] * x * jnp.reciprocal(jnp.sqrt(ms + settings.eps))).astype(dtype), state


NORMALIZATIONS: Registry[Normalization] = Registry(
    "normalization",
    {
        "none": Normalization(_nothing, _nothing, _identity),
        "batchnorm": Normalization(_affine, _running_moments, batchnorm_apply, per_example=False),
        "layernorm": Normalization(_affine, _nothing, layernorm_apply),
        "rmsnorm": Normalization(_gain, _nothing, rmsnorm_apply),
    },
)


def get_normalization(name: str, key: str = "model.norm") -> Normalization:
    """The normalization called ``name`` (ConfigError listing valid names otherwise)."""
    return NORMALIZATIONS.get(name, key)
