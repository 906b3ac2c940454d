"""Kernel shaping: transform the activation so that a deep plain MLP's whole-depth kernel stays
well-behaved at initialization, without normalization layers or skip connections.

For unit-variance inputs (q = 1) and weights of σ_w² = 1 (orthogonal, as both papers use), one
layer maps the correlation c of two inputs by the *local C map* C(c) = E[φ̂(u)φ̂(v)] / Q(1),
(u, v) standard Gaussians of correlation c, and their second moment by the *local Q map*,
Q(q) = E[φ̂(√q z)²]. A plain MLP of D nonlinear layers composes them D times: the network's maps
C_f = C∘…∘C and Q_f. The shaping methods pick the activation's transformation φ̂ so that C_f is
neither the constant map (every input alike: the degenerate kernel of deep nets at init) nor the
identity (a linear net):

- **TAT** (Zhang, Botev & Martens 2022, "Deep learning without shortcuts: shaping the kernel with
  tailored rectifiers"): the leaky ReLU φ̂(x) = √(2/(1+α²)) · max(x, αx), whose output scale makes
  Q(q) = q, with its negative slope α chosen so that C_f(0) = η (default 0.9). Its local C map has
  a closed form (arc-cosine kernel):
  C(c) = [(1 − α)²/π · (√(1 − c²) + (π − arccos c) c) + 2αc] / (1 + α²).
  C_f(0) falls from the ReLU's value (α = 0) to 0 (α = 1, linear), so α is found by bisection;
  a net too shallow for η (C_f(0) < η even at α = 0) is an error.
- **DKS** (Martens, Ballard, Desjardins, Swirszcz, Dalibard, Sohl-Dickstein & Schoenholz 2021,
  "Rapid training of deep neural networks without skip connections or normalization layers using
  Deep Kernel Shaping"): for a smooth φ, φ̂(x) = γ (φ(αx + β) + δ) with the four conditions
  Q(1) = 1 (γ), C(0) = 0 (δ = −E[φ(αz + β)]), Q'(1) = 1 and C'(1) = ζ^(1/D) (α, β, found with
  scipy's ``root`` from the starting points DeepMind's ``dks`` package uses), so that the whole
  net's slope C_f'(1) = ζ (default 1.5) whatever its depth.

DeepMind's ``dks`` package (0.1.2, 2023) implements both; it needs autograd, absl and, for JAX,
dm-haiku, and its quadrature reaches into a private SciPy name, so initlab derives the same
transformations with its own Gauss–Legendre quadrature (``initlab.theory.quadrature``):
``tests/test_shaping.py`` compares them with the values ``dks`` 0.1.2 computes.

References: docs/references.md [martens2021], [zhang2022].
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from initlab.errors import ConfigError
from initlab.nn.activations import ACTIVATIONS, Shape, arc_cosine, kinks, numeric
from initlab.registry import Registry
from initlab.theory.quadrature import bisect, expect, expect2


@dataclass(frozen=True)
class LocalMaps:
    """The local maps' defining numbers of a transformed activation at q = 1, and the whole
    net's after ``depth`` layers."""

    q_1: float  # Q(1) = E[φ̂(z)²]
    q_slope: float  # Q'(1) = E[φ̂(z) φ̂'(z) z]
    c_0: float  # C(0) = E[φ̂(z)]² / Q(1)
    c_slope: float  # C'(1) = E[φ̂'(z)²] / Q(1)
    net_c_0: float  # C_f(0): C composed depth times, at 0
    net_c_slope: float  # C_f'(1) = C'(1)^depth

    def rows(self) -> list[tuple[str, float]]:
        return [
            ("Q(1)", self.q_1),
            ("Q'(1)", self.q_slope),
            ("C(0)", self.c_0),
            ("C'(1)", self.c_slope),
            ("C_f(0)", self.net_c_0),
            ("C_f'(1)", self.net_c_slope),
        ]


def local_c(name: str, shape: Shape | None, c: float) -> float:
    """C(c) of the transformed activation at q = 1 (a 2-D quadrature; the closed form for TAT)."""
    if shape is not None and shape.negative_slope is not None:
        return leaky_relu_c(c, shape.negative_slope)
    phi = numeric(name, shape)[0]
    at = kinks(name, shape)
    return expect2(phi, c, at) / expect(lambda x: phi(x) ** 2, at)


def local_maps(name: str, shape: Shape | None, depth: int) -> LocalMaps:
    """``LocalMaps`` of ``activation_fn(name, shape)`` in a plain net of ``depth`` nonlinear layers."""
    phi, dphi, _ = numeric(name, shape)
    at = kinks(name, shape)
    q1 = expect(lambda x: phi(x) ** 2, at)
    c = 0.0
    for _ in range(depth):
        c = local_c(name, shape, c)
    slope = expect(lambda x: dphi(x) ** 2, at) / q1
    return LocalMaps(q1, expect(lambda x: phi(x) * dphi(x) * x, at), expect(phi, at) ** 2 / q1, slope, c, slope**depth)


def leaky_relu_c(c: float, alpha: float) -> float:
    """The local C map of a leaky ReLU of negative slope α (any output scale; Zhang et al. 2022): the
    arc-cosine kernel's part (1 − α)² (``initlab.nn.activations.arc_cosine``) plus the linear part 2αc."""
    c = min(max(c, -1.0), 1.0)
    return ((1 - alpha) ** 2 * arc_cosine(c) / math.pi + 2 * alpha * c) / (1 + alpha**2)


def _net_c0(alpha: float, depth: int) -> float:
    c = 0.0
    for _ in range(depth):
        c = leaky_relu_c(c, alpha)
    return c


def solve_tat(name: str, args: Mapping[str, float], depth: int) -> Shape:
    """TAT's tailored leaky ReLU: the negative slope α with C_f(0) = η over ``depth`` layers."""
    eta = args["eta"]
    if _net_c0(0.0, depth) < eta:
        raise ConfigError(
            f"model.shaping_args.eta: {eta:g} cannot be reached by a {depth}-layer leaky-ReLU net (even "
            f"ReLU gives C_f(0) = {_net_c0(0.0, depth):.3f}); use a smaller eta or a deeper net"
        )
    # C_f(0) falls from the ReLU's value at α = 0 to 0 at α = 1
    alpha = bisect(lambda a: _net_c0(a, depth) > eta, 0.0, 1.0, steps=60)
    return Shape("tat", output_scale=math.sqrt(2.0 / (1.0 + alpha**2)), negative_slope=alpha)


def _dks_starts() -> tuple[tuple[float, float], ...]:
    """DeepMind's dks package's starting points (input scale, input shift), in its order: its
    ``_ALWAYS_TRY_VALUES`` (scale 1 or 0.1 × shift 0, 1, −1), then 44 drawn from numpy's legacy
    generator seeded 123 (its ``_RANDOM_SEED``), scale uniform on [0, 2] and shift on [−3, 3]
    (``_SAMPLE_RANGE_LOW``/``_HIGH``), 50 in all (``num_tries``)."""
    rng = np.random.RandomState(123)
    drawn = [(float(rng.uniform(0.0, 2.0)), float(rng.uniform(-3.0, 3.0))) for _ in range(44)]
    return tuple(itertools.product((1.0, 0.1), (0.0, 1.0, -1.0))) + tuple(drawn)


DKS_STARTS = _dks_starts()


def _dks_shape(name: str, scale: float, shift: float) -> Shape:
    """γ and δ for input scale α and shift β: C(0) = 0 and Q(1) = 1."""
    shape = Shape("dks", input_scale=scale, input_shift=shift)
    phi, at = numeric(name, shape)[0], kinks(name, shape)
    delta = -expect(phi, at)
    gamma = 1.0 / math.sqrt(expect(lambda x: (phi(x) + delta) ** 2, at))
    return Shape("dks", scale, shift, delta, gamma)


DKS_TOL = 1e-9  # |Q'(1) − 1| and |C'(1) − ζ^(1/D)| below this accept a root


def dks_residual(name: str, scale: float, shift: float, target: float) -> tuple[float, float]:
    """(Q'(1) − 1, C'(1) − target) of DKS's transformation with input scale α and shift β."""
    shape = _dks_shape(name, scale, shift)
    phi, dphi, _ = numeric(name, shape)
    at = kinks(name, shape)
    return expect(lambda x: phi(x) * dphi(x) * x, at) - 1.0, expect(lambda x: dphi(x) ** 2, at) - target


def solve_dks(name: str, args: Mapping[str, float], depth: int) -> Shape:
    """DKS's transformation (Martens et al. 2021): Q'(1) = 1 and C'(1) = ζ^(1/depth), with C(0) = 0
    and Q(1) = 1 from δ and γ.

    The conditions do not always determine (α, β): SELU with ζ = 1.5 over 50 layers is met both at
    α = 0.937, β = 1.434 and at α = 0.123. The one returned is the one DeepMind's ``dks`` 0.1.2
    returns, the first that scipy's ``root`` (hybr) reaches from its starting points
    (``DKS_STARTS``) in its order: the papers define the method by that search and name no
    criterion among the roots, so this keeps a net shaped here the net the papers' code builds
    (``tests/test_shaping.py`` compares ELU, SELU and softsign over depths 10 to 100). A root is
    accepted only where both conditions hold to ``DKS_TOL`` (``dks`` takes any point at which the
    solver stops). (α, β) and (−α, β) give the same maps (z and −z have the same law), so a
    negative α, which ``dks`` returns as found, is returned as |α|; for an odd φ (``Activation.odd``)
    β and −β give mirror images, x ↦ −φ̂(−x), with the same maps, and β ≥ 0 is returned (where
    the search starts at β = 0 which one it reaches is chance: ``dks`` reaches erf's β > 0, and
    that of every odd activation it was compared with)."""
    from scipy.optimize import root  # jax's own dependency; imported when a DKS net is built

    target = args["zeta"] ** (1.0 / depth)

    def residual(p):
        return np.asarray(dks_residual(name, float(p[0]), float(p[1]), target))

    for start in DKS_STARTS:
        sol = root(residual, np.asarray(start), method="hybr")
        if sol.success and sol.x[0] != 0 and np.max(np.abs(residual(sol.x))) < DKS_TOL:
            shift = abs(float(sol.x[1])) if ACTIVATIONS[name].odd else float(sol.x[1])
            return _dks_shape(name, abs(float(sol.x[0])), shift)
    raise ConfigError(
        f"model.shaping: dks found no transformation of {name!r} with C_f'(1) = {args['zeta']:g} over "
        f"{depth} layers (from the dks package's {len(DKS_STARTS)} starting points); try another zeta"
    )


@dataclass(frozen=True)
class Shaping:
    """A kernel-shaping method: ``solve(activation, args, depth) -> Shape`` (None: the activation
    untouched), its arguments with defaults and rules (``initlab.nn.initializers.ARG_RULES``, checked
    by ``resolve_args``), and the activations it takes (None: any but those in ``refuses``)."""

    solve: Callable[[str, Mapping[str, float], int], Shape] | None
    args: Mapping[str, float] = field(default_factory=dict)
    rules: Mapping[str, str] = field(default_factory=dict)
    takes: tuple[str, ...] | None = None
    refuses: tuple[str, ...] = ()
    why: str = ""


SHAPINGS: Registry[Shaping] = Registry(
    "kernel shaping",
    {
        "none": Shaping(None),
        "tat": Shaping(
            solve_tat,
            {"eta": 0.9},
            {"eta": "open_fraction"},
            takes=("relu", "leaky_relu"),
            why="TAT here is the tailored leaky ReLU (Zhang et al. 2022): use model.activation relu or "
            "leaky_relu, whose negative slope it sets",
        ),
        "dks": Shaping(
            solve_dks,
            {"zeta": 1.5},
            {"zeta": "above_one"},
            refuses=("linear", "relu", "leaky_relu"),
            why="DKS transforms a smooth activation (Martens et al. 2021); a linear net has no kernel to "
            "shape, and for rectifiers use model.shaping: tat",
        ),
    },
)


def check_weights(shaping: str, init: str, init_args: Mapping[str, float], width: int) -> None:
    """A ConfigError naming ``model.init`` when ``shaping`` (not none) meets weights it was not
    derived for. TAT and DKS solve for the activation's transformation at σ_w² = fan_in · Var(W) = 1
    (orthogonal weights in Martens et al. 2021 and Zhang et al. 2022, or any law of variance
    1/fan-in): with He's σ_w² = 2, a DKS-shaped softplus net's q doubles at every layer (8e7 at
    layer 20 by initlab's theory). Checked on the hidden layers (fan-in = fan-out = width), whose
    composition the shaping is solved for; ``init_args`` resolved."""
    from initlab.nn.initializers import INITIALIZERS  # the layer below (registries)

    if SHAPINGS[shaping].solve is None:
        return
    entry = INITIALIZERS[init]
    s2 = None if entry.scheme is not None or entry.sigma_w2 is None else entry.sigma_w2(width, width, init_args)
    if s2 is not None and math.isclose(s2, 1.0, rel_tol=1e-6):
        return
    what = "does not draw i.i.d. weights of one variance" if s2 is None else f"gives the hidden layers σ_w² = {s2:.4g}"
    raise ConfigError(
        f"model.init: {init!r} {what}, but model.shaping {shaping!r} is derived for weights of "
        "σ_w² = fan_in·Var(W) = 1; use model.init: orthogonal (as the papers do) or lecun_normal"
    )


def check(activation: str, shaping: str) -> None:
    """A ConfigError naming ``model.shaping`` when ``shaping`` does not take ``activation``."""
    s = SHAPINGS[shaping]
    name = ACTIVATIONS.canonical(activation)
    if (s.takes is not None and name not in s.takes) or name in s.refuses:
        raise ConfigError(f"model.shaping: {shaping!r} does not take model.activation {name!r}; {s.why}")


@functools.cache
def _solve(activation: str, shaping: str, args: tuple[tuple[str, float], ...], depth: int) -> Shape | None:
    s = SHAPINGS[shaping]
    return None if s.solve is None else s.solve(ACTIVATIONS.canonical(activation), dict(args), depth)


def shape_for(activation: str, shaping: str, args: Mapping[str, float], depth: int) -> Shape | None:
    """The transformation of ``activation`` that ``shaping`` gives a plain MLP of ``depth`` hidden
    layers (each followed by the activation), with ``args`` resolved; None for ``none``. Cached."""
    check(activation, shaping)
    return _solve(activation, shaping, tuple(sorted(args.items())), depth)


def shape_of_flat(flat: Mapping[str, object]) -> Shape | None:
    """The shaping of a stored run from its config's dotted keys (``model.activation``,
    ``model.shaping``, ``model.shaping_args.*``, ``model.depth``): None for a run without one (or a
    config this version cannot read)."""
    shaping = flat.get("model.shaping", "none")
    if shaping in (None, "none") or shaping not in SHAPINGS:
        return None
    args = {k.rsplit(".", 1)[1]: float(v) for k, v in flat.items() if k.startswith("model.shaping_args.")}
    try:
        return shape_for(
            str(flat["model.activation"]), str(shaping), {**SHAPINGS[shaping].args, **args}, int(flat["model.depth"])
        )
    except (ConfigError, KeyError, TypeError, ValueError):
        return None
