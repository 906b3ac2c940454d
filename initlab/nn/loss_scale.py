"""Loss scaling for narrow number formats (``train.loss_scale``).

Micikevicius et al. 2018, "Mixed precision training": in float16 a gradient entry below 2^-24 is
zero and one below 2^-14 has lost bits, so the backward pass is run on S·L instead of L (every
gradient S times larger) and the gradient is divided by S in float32 before the update. Dynamic
scaling (their Sec. 3.2) finds S as training goes: start high, multiply S by ``factor`` after
``period`` consecutive steps with a finite gradient, and on a non-finite gradient divide it by
``factor`` and skip the step. A run whose gradient is still non-finite at the smallest scale is
not helped by skipping: that step is applied, and the run diverges like any other.

The kinds are a registry (``KINDS``): ``none`` (S = 1; ``LossScaling.active`` is False, so the
training step traces no scaling code at all), ``constant`` (a fixed S; a non-finite gradient is
applied, and diverges) and ``dynamic``. Everything here is pure and jit/vmap friendly: the state
is a NamedTuple of two scalars whose dtypes (float32, int32) never change, x64 mode or not, so it
can ride in a ``lax.scan``/``while_loop`` carry with a leading runs axis.

Why not a library (checked with jax 0.10.2). DeepMind's ``jmp`` 0.0.4 (its last release, 2023)
installs and, jitted and vmapped, its ``DynamicLossScale`` halved on an inf or a nan and doubled
after its period; the breakage reported as its issue #47 did not reproduce. But its pytree drops
``min_loss_scale`` (``tree_flatten`` keeps only the scale and counter; the fix, PR #44, was
closed unmerged), so after one pass through ``jax.jit`` a floor of 16 is back to 1; it leaves
skipping to the caller, who with ``select_tree(finite, new, old)`` also skips at the floor, where
initlab applies the step; and it is unmaintained. ``mpx`` (PyPI ``mixed-precision-for-jax``
0.1.8) is built on equinox (its ``DynamicLossScaling`` is an ``eqx.Module``) and requires
equinox, jaxtyping and wadler_lindig, none of which initlab uses; it clips the scale at float16's
largest value 65504 and scales the loss in float16, and has no constant or no-op scaler. The
algorithm is the few lines below, each branch tested in ``tests/test_loss_scale.py``.

References: docs/references.md [micikevicius2018].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from initlab.errors import ConfigError
from initlab.registry import Registry

FLOAT32_MAX = float(jnp.finfo(jnp.float32).max)
INT32_MAX = int(jnp.iinfo(jnp.int32).max)


class LossScaleState(NamedTuple):
    """A run's loss scale (a pytree; under ``jax.vmap`` each field gains a leading runs axis)."""

    scale: jax.Array  # () float32: S, the factor the loss is multiplied by
    good: jax.Array  # () int32: consecutive finite steps since S last changed


def _state(scale, good) -> LossScaleState:
    """A LossScaleState with its fixed dtypes, whatever JAX's default dtypes are (x64 mode)."""
    return LossScaleState(jnp.asarray(scale, jnp.float32), jnp.asarray(good, jnp.int32))


@dataclass(frozen=True)
class LossScaling:
    """How a run scales its loss (Micikevicius et al. 2018): ``kind`` (a ``KINDS`` name), the
    scale ``init`` (the constant for ``constant``, the starting scale for ``dynamic``; ``none``
    ignores it), the ``period`` of consecutive finite steps after which a dynamic scale grows by
    ``factor``, and the ``minimum`` it never shrinks below.

    Hashable and free of arrays, so a jitted function may close over it or take it as a static
    argument; every method is pure.
    """

    kind: str  # none | constant | dynamic
    init: float = 32768.0  # 2^15, train.loss_scale_init's default
    period: int = 2000  # train.loss_scale_period's default
    factor: float = 2.0  # growth and backoff factor; a power of two keeps S·g and g/S exact
    minimum: float = 1.0  # the smallest dynamic scale

    def __post_init__(self):
        KINDS.get(self.kind, "train.loss_scale")
        if not (self.factor > 1 and math.isfinite(self.factor)):
            raise ValueError(f"LossScaling.factor must be a finite number > 1, not {self.factor!r}")
        if not (0 < self.minimum <= FLOAT32_MAX):
            raise ValueError(f"LossScaling.minimum must be a positive float32 number, not {self.minimum!r}")
        if not (isinstance(self.period, int) and 1 <= self.period <= INT32_MAX):
            raise ValueError(f"LossScaling.period must be an int in [1, 2^31 - 1], not {self.period!r}")

    @property
    def active(self) -> bool:
        """Whether the training step scales at all (False for ``none``: no scaling code is traced)."""
        return KINDS[self.kind].active

    def initial(self) -> LossScaleState:
        """The state a run starts in: scale 1 (``none``), the constant, or ``init`` (``dynamic``)."""
        return _state(KINDS[self.kind].start(self), 0)

    def scale_loss(self, state: LossScaleState, loss: jax.Array) -> jax.Array:
        """``loss`` · S, in the loss's dtype (a float32 loss is expected: S·L may exceed float16)."""
        return loss * state.scale.astype(loss.dtype)

    def unscale(self, state: LossScaleState, grads: Any) -> Any:
        """The gradient of S·L divided by S: each floating leaf in float32 or wider
        (``promote_types(leaf.dtype, float32)``: a float16 gradient comes back float32, the
        master-copy update of Micikevicius et al. 2018); other leaves unchanged."""
        return _divide(grads, state.scale)

    def adjust(self, state: LossScaleState, finite: jax.Array) -> tuple[LossScaleState, jax.Array]:
        """``(new state, apply)`` after a step whose gradient was ``finite`` (a bool scalar, e.g.
        ``all_finite(grads)``). ``apply`` False means skip the step: the caller keeps its
        parameters and optimizer state (``select(apply, new, old)``)."""
        new, apply_it = KINDS[self.kind].adjust(self, state, jnp.asarray(finite, jnp.bool_))
        return _state(*new), jnp.asarray(apply_it, jnp.bool_)


def _keep(ls: LossScaling, state: LossScaleState, finite: jax.Array) -> tuple[LossScaleState, jax.Array]:
    """``none`` and ``constant``: S never changes and every step is applied."""
    return state, jnp.bool_(True)


def _dynamic(ls: LossScaling, state: LossScaleState, finite: jax.Array) -> tuple[LossScaleState, jax.Array]:
    """Dynamic loss scaling (Micikevicius et al. 2018, Sec. 3.2). Finite: count the step, and on
    the ``period``-th multiply S by ``factor`` (unless that leaves float32's range: S stays a
    finite power of two) and restart the count; apply. Non-finite above ``minimum``: divide S by
    ``factor`` (not below ``minimum``), restart the count, skip. Non-finite at ``minimum``: S
    stays, the count restarts, and the step is applied (the run diverges)."""
    good = state.good + 1
    grown = state.scale * jnp.float32(ls.factor)
    grow = good >= ls.period
    up = _state(jnp.where(grow & jnp.isfinite(grown), grown, state.scale), jnp.where(grow, 0, good))
    at_floor = state.scale <= ls.minimum
    down = _state(
        jnp.where(at_floor, state.scale, jnp.maximum(state.scale / jnp.float32(ls.factor), jnp.float32(ls.minimum))), 0
    )
    return select(finite, up, down), finite | at_floor


@dataclass(frozen=True)
class Kind:
    """A loss-scaling kind: its doc, whether it scales, its starting scale, its update rule and the
    config keys it reads beyond ``train.loss_scale`` (``uses``; ``initlab.registry``)."""

    doc: str
    active: bool
    start: Callable[[LossScaling], float]
    adjust: Callable[[LossScaling, LossScaleState, jax.Array], tuple[LossScaleState, jax.Array]]
    uses: tuple[str, ...] = ()


KINDS: Registry[Kind] = Registry(
    "loss scaling",
    {
        "none": Kind("no loss scaling (S = 1)", False, lambda ls: 1.0, _keep),
        "constant": Kind(
            "a fixed scale S; a non-finite gradient is applied (and the run diverges)", True, lambda ls: ls.init, _keep
        ),
        "dynamic": Kind(
            "grow ×factor after period finite steps; shrink and skip the step on a non-finite gradient "
            "(Micikevicius et al. 2018)",
            True,
            lambda ls: ls.init,
            _dynamic,
            uses=("train.loss_scale_init", "train.loss_scale_period"),
        ),
    },
)


def _divide(grads: Any, scale: jax.Array) -> Any:
    """Each floating leaf of ``grads`` divided by ``scale``, in ``promote_types(leaf, float32)``."""

    def one(g):
        g = jnp.asarray(g)
        if not jnp.issubdtype(g.dtype, jnp.inexact):
            return g
        wide = jnp.promote_types(g.dtype, jnp.float32)
        # XLA computes g/S as g·(1/S): exact for a power-of-two S (every dynamic scale from 2^k)
        return g.astype(wide) / jnp.asarray(scale).astype(wide)

    return jax.tree.map(one, grads)


def unscale(grads: Any, scale: jax.Array) -> Any:
    """``grads`` (the gradient of S·L) divided by S = ``scale`` in float32 or wider, then rounded
    once back to each leaf's own dtype (Micikevicius et al. 2018): for a training step whose
    parameters and optimizer state are in the format itself. ``LossScaling.unscale`` keeps the
    wide result instead."""
    return jax.tree.map(lambda w, g: w.astype(jnp.asarray(g).dtype), _divide(grads, scale), grads)


def all_finite(tree: Any) -> jax.Array:
    """Whether every entry of every floating leaf of ``tree`` is finite (a bool scalar; True for
    a tree without floating leaves)."""
    leaves = [
        jnp.all(jnp.isfinite(v))
        for v in map(jnp.asarray, jax.tree.leaves(tree))
        if jnp.issubdtype(v.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def select(apply: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``apply`` (a bool scalar), else ``old``, leaf by leaf: how a skipped step keeps
    its parameters and optimizer state."""
    return jax.tree.map(lambda n, o: jnp.where(apply, n, o), new, old)


def _bad(value: Any, key: str, allowed: str) -> ConfigError:
    return ConfigError(f"{key}: {value!r} is not {allowed}")


def _positive(value: Any, key: str, allowed: str) -> float:
    """``value`` as a positive float32-representable number, else a ConfigError naming ``key``."""
    if isinstance(value, bool):
        raise _bad(value, key, allowed)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _bad(value, key, allowed) from None
    if not (math.isfinite(number) and 0 < number <= FLOAT32_MAX):
        raise _bad(value, key, allowed)
    return number


def from_config(loss_scale: str | float, init: float = 32768.0, period: int = 2000) -> LossScaling:
    """The LossScaling of ``train.loss_scale``: ``"none"``, ``"dynamic"`` (starting at ``init``,
    ``train.loss_scale_init``, growing after ``period`` finite steps, ``train.loss_scale_period``)
    or a positive number, a constant scale (a numeric string such as YAML's ``1e4`` counts). A
    ConfigError naming the key for anything else (another word, 0, a negative number, inf, nan,
    a number beyond float32's range)."""
    allowed = "none, dynamic or a positive number (a constant scale)"
    if loss_scale in ("none", "dynamic"):
        if loss_scale == "none":
            return LossScaling("none", init=1.0)
        init = _positive(init, "train.loss_scale_init", "a positive number within float32's range")
        if isinstance(period, bool) or not isinstance(period, int) or not 1 <= period <= INT32_MAX:
            raise _bad(period, "train.loss_scale_period", "a whole number of steps, at least 1")
        return LossScaling("dynamic", init=init, period=period)
    return LossScaling("constant", init=_positive(loss_scale, "train.loss_scale", allowed))
