"""The singular values of the network's input-output Jacobian J = ∂h^L/∂x (h^L: the last hidden
layer's activations, x: one example's input), at initialization and after training.

Dynamical isometry (Saxe, McClelland & Ganguli 2014; Pennington, Schoenholz & Ganguli 2017,
"Resurrecting the sigmoid in deep learning through dynamical isometry"): a deep network trains fast
when all of J's singular values are near 1, not only their mean square. Orthogonal weights give that
for tanh near the edge of chaos; Gaussian weights, and ReLU with any weights, spread the spectrum
over decades as depth grows. Mean-field theory predicts the mean squared singular value
(``initlab.theory.mean_field``: the product of each layer's χ).

J is taken in evaluation mode (dropout off), one example at a time, by reverse-mode products (one
per output unit) when the layer is no wider than the input, else forward-mode (one per input
pixel), then an SVD. Not defined with batch norm: an example's output depends on the whole batch.
In a narrow number format (``initlab.nn.formats.Format.narrow``: model.dtype bfloat16 or float16) J is taken in
``wide`` (float32): the spectrum is
a property of the weights, not of the format's rounding (float64 runs take it in float64).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initlab.nn.formats import get_format
from initlab.nn.model import ModelSpec, NormState, Params, features
from initlab.nn.normalizations import get_normalization

# The band the summary counts singular values in: within a factor 2 of isometry.
NEAR_ONE = (0.5, 2.0)


def applies(spec: ModelSpec) -> str | None:
    """None if the Jacobian of one example is defined for ``spec``, else why not."""
    if not get_normalization(spec.norm).per_example:
        return f"{spec.norm} normalizes each unit by batch statistics, so one example's output depends on the others"
    return None


def singular_values_fn(spec: ModelSpec) -> Callable[[Params, NormState, jax.Array], jax.Array]:
    """``sv(params, state, x) -> (examples, min(width, input_dim))``: the singular values of each
    example's Jacobian ∂h^L/∂x (rows of ``x``), largest first (pure, unjitted)."""
    jac = jax.jacrev if spec.width <= spec.input_dim else jax.jacfwd
    fmt = get_format(spec.dtype)
    if fmt.narrow:  # a property of the weights, not of the format's rounding
        spec = dataclasses.replace(spec, dtype=fmt.wide_name)

    def one(params, state, xi):
        J = jac(lambda v: features(spec, params, state, v[None])[0])(xi)  # (width, input_dim)
        return jnp.linalg.svd(J.astype(jnp.promote_types(J.dtype, jnp.float32)), compute_uv=False).astype(jnp.float32)

    return jax.vmap(one, in_axes=(None, None, 0))


def resolution(sv_max: float, width: int, input_dim: int) -> float:
    """The smallest singular value float32 resolves beside the largest, ``sv_max``: numpy's rank
    tolerance σ_max · max(width, input_dim) · ε (float32 ε = 2^-23). J's entries carry float32
    rounding, so smaller singular values are numerically zero (their values are noise)."""
    return float(sv_max) * max(width, input_dim) * float(np.finfo(np.float32).eps)


def summarize(sv: np.ndarray, width: int, input_dim: int) -> dict[str, Any]:
    """Summary figures of singular values (examples, k): the mean squared singular value per
    output unit (tr JJᵀ / width: with a layer wider than the input, the width - input_dim zero
    singular values count), the largest, the float32 ``floor`` (``resolution`` of the largest),
    the fraction ``unresolved`` below it, the smallest above it (``min``), the ratio max/min (a
    lower bound on the condition number when some are unresolved), and the fraction within
    ``NEAR_ONE``."""
    sv = np.asarray(sv, np.float64)
    if sv.size == 0 or not np.all(np.isfinite(sv)):
        return {
            "mean_sq": None,
            "max": None,
            "min": None,
            "ratio": None,
            "floor": None,
            "unresolved": None,
            "frac_near_1": None,
        }
    lo, hi = NEAR_ONE
    smax = float(sv.max())
    floor = resolution(smax, width, input_dim)
    resolved = sv[sv > floor]
    smin = float(resolved.min()) if resolved.size else float("nan")
    return {
        "mean_sq": float(np.mean(np.sum(sv**2, axis=1) / width)),
        "max": smax,
        "min": smin,
        "ratio": smax / smin if resolved.size else float("nan"),
        "floor": floor,
        "unresolved": float(np.mean(sv <= floor)),
        "frac_near_1": float(np.mean((sv >= lo) & (sv <= hi))),
    }
