"""Gaussian expectations and root finding: the numerics every theory module shares.

``expect`` and ``expect2`` integrate against one standard Gaussian and against a correlated pair
with the Gauss–Legendre rules of ``initlab.nn.activations`` (``gaussian_nodes``,
``correlated_nodes``), split at 0 and at the integrand's non-smooth points: for an activation,
``activations.kinks(name, shape)`` (the registry entry's kinks, moved by a shaping's
transformation), which for φ(√q z) become points of z divided by √q. ``bisect`` is the one root
finder of the scalar conditions (fixed points, critical σ_w², TAT's negative slope): a fixed
number of halvings rather than scipy's ``brentq``, so that the numbers a run's ``summary.json``
holds (c*, ξ_c, TAT's α) stay the same bit for bit from one version to the next.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from initlab.nn.activations import correlated_nodes, gaussian_nodes


def _scaled(at: tuple[float, ...], q: float) -> tuple[float, ...]:
    """The non-smooth points ``at`` of f as points of z in f(√q z) (none where q ≤ 0)."""
    return tuple(k / math.sqrt(q) for k in at) if q > 0 else ()


def expect(fn: Callable[[np.ndarray], np.ndarray], at: tuple[float, ...] = (), q: float = 1.0) -> float:
    """∫Dz fn(√q z) = E[fn(u)] for u ~ N(0, q) (q = 1: a standard Gaussian), the rule split where
    √q z meets ``at`` (fn's non-smooth points)."""
    z, w = gaussian_nodes(_scaled(at, q))
    return float(np.dot(w, fn(math.sqrt(max(q, 0.0)) * z)))


def expect2(fn: Callable[[np.ndarray], np.ndarray], c: float, at: tuple[float, ...] = (), q: float = 1.0) -> float:
    """E[fn(u₁) fn(u₂)] for u₁, u₂ ~ N(0, q) of correlation ``c``, each factor's rule split where
    its argument meets ``at`` (``correlated_nodes``)."""
    u, v, w = correlated_nodes(c, _scaled(at, q))
    s = math.sqrt(max(q, 0.0))
    return float(np.sum(w * fn(s * u) * fn(s * v)))


def bisect(below: Callable[[float], bool], lo: float, hi: float, steps: int, geometric: bool = False) -> float:
    """The point in [lo, hi] where ``below`` turns from True to False: ``steps`` halvings of the
    bracket (in log x when ``geometric``, for a root that may lie decades from either end),
    moving ``lo`` up to each midpoint the root lies above; the last bracket's midpoint.

    ``below(x)`` is the caller's side test (e.g. f(x) < 0 for an increasing f), so the answer
    does not depend on a tolerance: the number of steps fixes it, bit for bit."""

    def middle(a: float, b: float) -> float:
        return math.sqrt(a * b) if geometric else (a + b) / 2

    for _ in range(steps):
        m = middle(lo, hi)
        if below(m):
            lo = m
        else:
            hi = m
    return middle(lo, hi)
