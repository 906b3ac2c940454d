"""Mean-field signal propagation (Poole et al. 2016, "Exponential expressivity in deep neural
networks through transient chaos"; Schoenholz et al. 2017, "Deep information propagation").

For a deep, wide MLP with W ~ N(0, σ_w²/N) and b ~ N(0, σ_b²), pre-activations are Gaussian and
their second moment follows the variance map

    q^l = σ_w² ∫Dz φ(√q^{l-1} z)² + σ_b²,

with fixed point q*. Back-propagated gradients (∂ℓ/∂z) scale by χ = σ_w² ∫Dz φ'(√q z)² per layer
going toward the input: χ₁ = χ(q*) < 1 is the ordered phase (gradients vanish), > 1 the chaotic
phase (they explode), = 1 criticality. The correlation map of two inputs has fixed point c*, and
its stability sets the depth scale ξ_c = −1/ln(σ_w² ∫Dz₁Dz₂ φ'(u₁)φ'(u₂)); networks deeper than
about 6ξ_c do not train (Schoenholz et al. 2017). Only χ₁ = 1 exactly is critical (ξ_c = ∞); within
``CRITICAL_TOL`` of 1 the phase is "near-critical" and ξ_c, large but finite, is printed.

Integrals use Gauss–Legendre quadrature split at 0 and at the activation's non-smooth points
(``initlab.theory.quadrature``: ``activations.kinks``, moved by a shaping's transformation and
scaled by √q), in float64, for any registry activation, and the registry entry's closed forms where
they exist (``Activation.kernel``: ReLU, linear: the arc-cosine kernel of Cho & Saul 2009; erf: the
arcsine kernel of Williams 1997).

The same backward recursion, started from the loss's own gradient at the logits, predicts the
absolute scale of each layer's ∂ℓ/∂z at initialization, and so the layer below which a number
format's smallest normal number swallows the gradient (``gradient_rms``, ``format_crossings``).

References: docs/references.md [poole2016], [schoenholz2017], [pennington2017], [cho2009],
[williams1997], [micikevicius2018].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from initlab.errors import InitlabError
from initlab.nn.activations import ACTIVATIONS, Kernel, Shape, kinks, numeric
from initlab.nn.formats import FORMATS
from initlab.nn.optimizers import LOSSES
from initlab.theory.quadrature import bisect, expect, expect2

CRITICAL_TOL = 1e-3  # 0 < |χ₁ − 1| below this is "near-critical" (ξ_c above about 1000 layers)
_Q_GRID = np.logspace(-12, 12, 241)  # where fixed points of the variance map are looked for
LOGIT_SAMPLES = 8192  # fixed-seed Gaussian logit vectors that the loss's output gradient is averaged over


# Where q* is infinite, χ₁ is χ at this q (its limit: exact for ReLU and linear, whose χ is constant).
LARGE_Q = 1e8


@dataclass(frozen=True)
class MeanField:
    """One activation with σ_w², σ_b²: the maps and their fixed points."""

    activation: str
    sigma_w2: float
    sigma_b2: float
    shape: Shape | None = None  # a kernel-shaped activation (TAT, DKS; ``initlab.theory.shaping``)
    # columns of mean 0 (scaled weight standardization; ``initlab.nn.reparams``): each layer sees its
    # input minus its mean over units, so the maps are those of the centred φ − E φ
    centred: bool = False

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise InitlabError(f"activation {self.activation!r} is not one of {', '.join(ACTIVATIONS.all_names())}")
        if not (self.sigma_w2 > 0 and self.sigma_b2 >= 0 and math.isfinite(self.sigma_w2 + self.sigma_b2)):
            raise InitlabError(
                f"σ_w² must be > 0 and σ_b² >= 0, both finite (got σ_w² = {self.sigma_w2}, σ_b² = "
                f"{self.sigma_b2}; with σ_w² = 0 no signal passes from layer to layer)"
            )

    @property
    def name(self) -> str:
        return ACTIVATIONS.canonical(self.activation)

    @property
    def closed(self) -> Kernel | None:
        """The registry entry's closed forms (ReLU, linear, erf) of an untransformed activation, else None."""
        return ACTIVATIONS[self.name].kernel if self.shape is None else None

    @property
    def kinks(self) -> tuple[float, ...]:
        """Where φ is not smooth (the quadratures split there)."""
        return kinks(self.name, self.shape)

    def _numeric(self, order: int) -> Callable:
        return numeric(self.name, self.shape)[order]

    def second_moment(self, q: float) -> float:
        """∫Dz φ(√q z)²."""
        if self.closed:
            return self.closed.second_moment(q)
        phi = self._numeric(0)
        return expect(lambda x: phi(x) ** 2, self.kinks, q)

    def slope_moment(self, q: float) -> float:
        """∫Dz φ'(√q z)²."""
        if self.closed:
            return self.closed.slope_moment(q)
        dphi = self._numeric(1)
        return expect(lambda x: dphi(x) ** 2, self.kinks, q)

    def mean(self, q: float) -> float:
        """∫Dz φ(√q z): the mean activation (0 for odd φ)."""
        if self.closed:
            return self.closed.mean(q)
        return expect(self._numeric(0), self.kinks, q)

    def act_var(self, q: float) -> float:
        """Variance of φ(z) for z ~ N(0, q)."""
        return self.second_moment(q) - self.mean(q) ** 2

    def q_map(self, q: float) -> float:
        """The variance map: next layer's pre-activation second moment (from the variance of φ
        rather than its second moment for centred columns)."""
        return self.sigma_w2 * (self.act_var(q) if self.centred else self.second_moment(q)) + self.sigma_b2

    def chi(self, q: float) -> float:
        """Per-layer factor of the back-propagated gradient variance at pre-activation moment q."""
        return self.sigma_w2 * self.slope_moment(q)

    def fixed_point(self, q0: float = 1.0) -> float:
        """The q* that iterating the variance map from ``q0`` reaches: 0 or ``inf`` where it
        runs off. Found as a root of V(q) − q (scanned on a log grid in the direction the
        iteration moves, then bisected), which is exact even where iteration crawls, as toward
        q* = 0 at σ_b² = 0."""
        g = lambda q: self.q_map(q) - q  # noqa: E731
        g0 = g(q0)
        if abs(g0) <= 1e-12 * max(1.0, q0):
            return q0
        down = g0 < 0
        grid = _Q_GRID[_Q_GRID < q0][::-1] if down else _Q_GRID[_Q_GRID > q0]
        prev = q0
        for q in grid:
            gq = g(q)
            if not math.isfinite(gq):
                return math.inf
            if (gq >= 0) if down else (gq <= 0):
                lo, hi = (q, prev) if down else (prev, q)
                lo_negative = g(lo) < 0
                return bisect(lambda x: (g(x) < 0) == lo_negative, lo, hi, steps=80, geometric=True)
            prev = q
        return 0.0 if down else math.inf

    @functools.cached_property
    def q_star(self) -> float:
        """The fixed point reached from q = 1."""
        return self.fixed_point()

    @property
    def chi1(self) -> float:
        """χ₁ = σ_w² ∫Dz φ'(√q* z)²; where q* is infinite, its limit as q grows (for ReLU and
        linear nets, whose χ does not depend on q, exactly σ_w²/2 and σ_w²)."""
        return self.chi(self.q_star if math.isfinite(self.q_star) else LARGE_Q)

    def _cross(self, q: float, c: float, derivative_order: int) -> float:
        """∫Dz₁Dz₂ g(u₁)g(u₂) with g = φ (order 0) or φ' (order 1), u₂ correlated c with u₁."""
        if self.closed:
            return (self.closed.cross, self.closed.slope_cross)[derivative_order](q, c)
        return expect2(self._numeric(derivative_order), c, self.kinks, q)

    def c_map(self, c: float, q: float | None = None) -> float:
        """The correlation map at the variance fixed point (of the covariance of φ for centred
        columns)."""
        q = self.q_star if q is None else q
        cross = self._cross(q, c, 0) - (self.mean(q) ** 2 if self.centred else 0.0)
        return (self.sigma_w2 * cross + self.sigma_b2) / q

    def c_fixed_point(self) -> float:
        """c*: 1 in the ordered phase and at criticality (χ₁ ≤ 1); in the chaotic phase the stable
        fixed point below 1, found as the first sign change of c_map(c) − c on [0, 1) and bisected.
        The grid runs on to 1 − 10⁻¹⁰ in geometric steps: near criticality c* is that close to 1."""
        q = self.q_star
        if not math.isfinite(q) or q == 0:
            return math.nan
        if self.chi1 <= 1:
            return 1.0
        h = lambda c: self.c_map(c, q) - c  # noqa: E731
        grid = np.unique(np.concatenate([np.linspace(0.0, 1.0, 41)[:-1], 1 - np.logspace(-1.5, -10, 35)]))
        prev = 0.0
        if h(prev) <= 0:
            return 0.0
        for c in grid[1:]:
            if h(c) <= 0:
                return bisect(lambda x: h(x) > 0, prev, c, steps=40)
            prev = c
        return 1.0

    @property
    def xi_c(self) -> float:
        """Depth scale of correlations: −1/ln χ_c at c* (−1/ln χ₁ in the ordered phase); ∞ at
        criticality."""
        q = self.q_star
        if not math.isfinite(q):
            return math.nan
        if q == 0:  # σ_b² = 0 and the signal dies out: correlations follow χ₁ at q = 0
            chi = self.chi(0.0)
            return math.inf if chi == 1 else (-1.0 / math.log(chi) if chi < 1 else math.nan)
        c_star = self.c_fixed_point()
        chi_c = self.chi1 if c_star >= 1.0 else self.sigma_w2 * self._cross(q, c_star, 1)
        if chi_c == 1:
            return math.inf
        return -1.0 / math.log(chi_c) if chi_c > 0 else 0.0

    @property
    def xi_q(self) -> float:
        """Depth scale of the variance's approach to q*: −1/ln of the variance map's slope at q*,
        σ_w² d/dq ∫Dz φ(√q z)² = χ₁ + σ_w² ∫Dz φ''(√q* z) φ(√q* z); ∞ only where it is exactly 1."""
        q = self.q_star
        if not math.isfinite(q):
            return math.nan
        if self.centred:  # d/dq of σ_w² Var φ: the mean's term has no closed form for every φ
            step = 1e-4 * q
            factor = (self.q_map(q + step) - self.q_map(q - step)) / (2 * step)
        elif self.closed:
            factor = self.sigma_w2 * self.closed.second_moment_slope(q)
        elif q > 0:  # d/dq E[φ(√q z)²] = E[φ(x)φ'(x)x]/q with x = √q z: no φ'', whose jumps at kinks are deltas
            phi, dphi, _ = numeric(self.name, self.shape)
            factor = self.sigma_w2 * expect(lambda x: phi(x) * dphi(x) * x, self.kinks, q) / q
        else:
            phi, _, ddphi = numeric(self.name, self.shape)
            factor = self.chi1 + self.sigma_w2 * float(ddphi(np.zeros(1))[0] * phi(np.zeros(1))[0])
        if factor <= 0:
            return 0.0
        return math.inf if factor == 1 else -1.0 / math.log(factor)

    @property
    def phase(self) -> str:
        """ "ordered" (χ₁ < 1), "chaotic" (χ₁ > 1), "critical" (χ₁ = 1 exactly, as ReLU with σ_w² = 2),
        "near-critical ordered" or "near-critical chaotic" (0 < |χ₁ − 1| < ``CRITICAL_TOL``: ξ_c is
        finite but above about 1000 layers), or "unbounded" (q* = ∞)."""
        c = self.chi1
        if not math.isfinite(self.q_star) or not math.isfinite(c):
            return "unbounded"
        if c == 1:
            return "critical"
        side = "ordered" if c < 1 else "chaotic"
        return f"near-critical {side}" if abs(c - 1) < CRITICAL_TOL else side

    @property
    def max_trainable_depth(self) -> float:
        """6 ξ_c: Schoenholz et al. 2017's estimate of the deepest trainable network."""
        return 6 * self.xi_c

    @property
    def depth_scale_caveat(self) -> str | None:
        """Why 6ξ_c is not a trainable depth here, or None where it is meaningful. Schoenholz et
        al. 2017 derive ξ_c for correlations around a finite, nonzero variance fixed point q*; when
        the variance itself vanishes (q* = 0: ReLU below σ_w² = 2 with σ_b² = 0) or grows without
        bound, ξ_c measures correlations in a dying or exploding signal, and nets well past 6ξ_c
        can still train (the variance scale is then what matters: ``initlab report``'s ratios)."""
        q = self.q_star
        if q == 0:
            return "q* = 0: the signal's variance itself vanishes with depth, so 6ξ_c is not a trainability bound"
        if not math.isfinite(q):
            return "q* = ∞: the signal's variance grows without bound, so ξ_c is not defined"
        return None


def critical_sigma_w2(activation: str, sigma_b2: float, lo: float = 0.05, hi: float = 20.0) -> float:
    """The σ_w² at which χ₁ = 1 for this σ_b² (bisection; χ₁ grows with σ_w²)."""
    f = lambda s: MeanField(activation, s, sigma_b2).chi1 - 1  # noqa: E731
    flo, fhi = f(lo), f(hi)
    if flo > 0 or fhi < 0:
        raise InitlabError(f"no critical σ_w² in [{lo}, {hi}] for {activation} with σ_b² = {sigma_b2}")
    return bisect(lambda s: f(s) < 0, lo, hi, steps=60)


@dataclass
class LayerPrediction:
    """Predicted per-layer statistics of one network's hidden layers 1..depth."""

    q: list[float]  # pre-activation second moment q^l
    act_var: list[float]  # Var φ(z^l)
    grad_ratio: list[float]  # Var(∂ℓ/∂z^l) / Var(∂ℓ/∂z^depth)
    # Mean squared singular value of the input-output Jacobian ∂h^depth/∂x, tr(JJᵀ)/width: the
    # product of every layer's χ = σ_w² E[φ'(z^l)²] (Pennington et al. 2017; χ₁^depth at q*).
    jacobian_mean_sq: float = math.nan


def predict_layers(
    activation: str,
    depth: int,
    q0: float,
    sigma_w2_first: float,
    sigma_w2: float,
    sigma_b2: float,
    shape: Shape | None = None,
    centred: bool = False,
) -> LayerPrediction:
    """q^l layer by layer from the input's second moment q0 (the first layer has its own σ_w²,
    as its fan-in differs; for ``centred`` columns q0 is the inputs' variance across features),
    and the gradient variance of each hidden layer relative to the last."""
    hidden = MeanField(activation, sigma_w2, sigma_b2, shape, centred)
    q = [sigma_w2_first * q0 + sigma_b2]
    for _ in range(depth - 1):
        q.append(hidden.q_map(q[-1]))
    ratios = [1.0]
    for ql in reversed(q[:-1]):  # going down: layer l's gradient = χ(q^l) × layer l+1's
        ratios.append(ratios[-1] * hidden.chi(ql))
    # the first layer's χ has its own σ_w²; each layer maps input directions by D_l W_l
    jac = sigma_w2_first * hidden.slope_moment(q[0]) * math.prod(hidden.chi(ql) for ql in q[1:])
    return LayerPrediction(q, [hidden.act_var(x) for x in q], list(reversed(ratios)), jac)


def prediction(
    activation: str,
    depth: int,
    q0: float,
    sigma_w2_first: float,
    sigma_w2: float,
    sigma_b2: float,
    shape: Shape | None = None,
    centred: bool = False,
) -> dict:
    """The theory's account of a plain MLP of ``depth`` hidden layers fed inputs of second moment
    ``q0`` (``predict_layers``'s arguments): the σ's, q⁰, q*, χ₁, phase, ξ_c, ξ_q, 6ξ_c and its
    caveat, and the per-layer q, Var φ, gradient ratio and the Jacobian's mean squared singular value."""
    mf = MeanField(activation, sigma_w2, sigma_b2, shape, centred)
    layers = predict_layers(activation, depth, q0, sigma_w2_first, sigma_w2, sigma_b2, shape, centred)
    return {
        "sigma_w2_first": sigma_w2_first,
        "sigma_w2": sigma_w2,
        "sigma_b2": sigma_b2,
        "q0": q0,
        "q_star": mf.q_star,
        "chi1": mf.chi1,
        "phase": mf.phase,
        "xi_c": mf.xi_c,
        "xi_q": mf.xi_q,
        "max_trainable_depth": mf.max_trainable_depth,
        "depth_scale_caveat": mf.depth_scale_caveat,
        "q": layers.q,
        "act_var": layers.act_var,
        "grad_ratio": layers.grad_ratio,
        "jacobian_mean_sq": layers.jacobian_mean_sq,
    }


def output_grad_ms(loss: str, num_classes: int, q_out: float, target_scale: float | None = None) -> float:
    """E[(∂ℓ/∂z_k)²]: the mean square of one logit's entry of each example's own loss gradient at
    initialization, for the registry loss ``loss`` (``initlab.nn.optimizers.LOSSES``, differentiated
    as defined there, ``target_scale`` included).

    At init the logits of one example are i.i.d. N(0, q_out) over the classes (a zero-mean weight
    matrix times that example's last hidden layer) and independent of its label, so the average is
    over LOGIT_SAMPLES fixed-seed Gaussian logit vectors with labels cycling through the classes:
    deterministic, and exact wherever the gradient is a polynomial in the logits. Closed forms it
    reproduces: cross-entropy's p − y has E[Σ_k p_k²] − 2/C + 1 over C classes, so (C−1)/C² per
    logit for the near-uniform softmax of small logits, (C−1)/C² (1 + q_out/C) to first order in
    q_out, and up to twice (C−1)/C² for large logits (a softmax concentrated on one class); mse,
    mean over classes of (z − t)², has (2/C)(z − t) and so (4/C²)(q_out + E[t²]) with E[t²] = 1/C
    for one-hot targets and s² for targets ±s."""
    fn = LOSSES.get(loss, "train.loss")
    z = np.random.default_rng(0).standard_normal((LOGIT_SAMPLES, num_classes)) * math.sqrt(max(q_out, 0.0))
    labels = np.arange(LOGIT_SAMPLES) % num_classes
    with jax.enable_x64(True):
        # the sum's gradient is each example's own: examples do not interact in the loss
        g = jax.grad(lambda v: jnp.sum(fn(v, jnp.asarray(labels), num_classes, target_scale)))(
            jnp.asarray(z, jnp.float64)
        )  # (samples, classes)
        return float(jnp.mean(g**2))


def gradient_rms(
    activation: str,
    layers: LayerPrediction,
    width: int,
    sigma_w2: float,
    sigma_w2_out: float,
    sigma_b2: float,
    num_classes: int,
    loss: str,
    target_scale: float | None = None,
    shape: Shape | None = None,
) -> list[float]:
    """Predicted rms of one entry of each example's own gradient ∂ℓ/∂z at initialization, for the
    hidden layers 1..depth and then the output layer (the logits): depth + 1 numbers.

    The logits' second moment is q_out = σ_w,out² E[φ(z^L)²] + σ_b² (``sigma_w2_out`` = width ·
    Var(W_out), the output layer's own, e.g. 2·width/(width + C) for Glorot), the loss's output
    gradient has mean square ``output_grad_ms`` there; through W_out (C classes, entries of variance
    σ_w,out²/width) and φ' the last hidden layer's is E[φ'(z^L)²] · C σ_w,out²/width times it; each
    layer below multiplies the variance by χ(q^l) = σ_w² E[φ'(z^l)²] (Schoenholz et al. 2017's
    backward recursion, under its assumption that the backward weights are independent of the
    forward ones), which ``layers.grad_ratio`` already holds."""
    mf = MeanField(activation, sigma_w2, sigma_b2, shape)
    q_last = layers.q[-1]
    q_out = sigma_w2_out * mf.second_moment(q_last) + sigma_b2
    ms_out = output_grad_ms(loss, num_classes, q_out, target_scale)
    ms_last = mf.slope_moment(q_last) * num_classes * sigma_w2_out / width * ms_out
    return [math.sqrt(r * ms_last) for r in layers.grad_ratio] + [math.sqrt(ms_out)]


def underflow_layer(held_rms: list[float], smallest_normal: float) -> int | None:
    """The highest layer k (1-based; the last entry is the output layer) such that the rms of every
    layer 1..k is below ``smallest_normal``: "gradients from layer k down are subnormal or zero";
    None when layer 1 is not below it."""
    k = 0
    while k < len(held_rms) and held_rms[k] < smallest_normal:
        k += 1
    return k or None


def format_crossings(grad_rms: list[float], batch_size: int, loss_scale: float = 1.0, dtype: str = "float32") -> dict:
    """Where each number format's smallest normal number cuts the predicted gradient.

    What the backward pass holds in the format is the cotangent ∂L/∂z of the *mean* loss over the
    batch, times the loss scale S: each example's own ∂ℓ_i/∂z (``grad_rms``, per layer, the output
    layer last) divided by the batch size n, so its rms is S · rms / n. The run's format ``dtype``
    gets the run's S, every other format S = 1 (the loss scale is the run's answer to its own
    format). Per format: ``crossing`` (``underflow_layer``), the layers whose rms is below the
    smallest normal (``below``, in case they are not the lowest ones, as in the chaotic phase), and
    the lowest rms and its layer.

    These are the rms of a typical entry: entries spread around it (the activations' slopes and the
    weights differ from unit to unit), so a fraction of them is subnormal or zero layers before the
    rms is. The crossing is a lower bound on where trouble starts, not a point where all is lost.
    Micikevicius et al. 2018 ("Mixed precision training") shows such histograms of activation
    gradients falling below float16's range.

    Returns ``{"format_crossing": {name: layer or None}, "formats": {name: {...}}}``."""
    run = FORMATS.canonical(dtype)
    crossing, detail = {}, {}
    for name, fmt in FORMATS.items():
        scale = loss_scale if name == run else 1.0
        held = [scale * r / batch_size for r in grad_rms]
        tiny = fmt.smallest_normal
        low = int(np.argmin(held))
        crossing[name] = underflow_layer(held, tiny)
        detail[name] = {
            "smallest_normal": tiny,
            "loss_scale": scale,
            "run": name == run,
            "crossing": crossing[name],
            "below": [i + 1 for i, h in enumerate(held) if h < tiny],
            "min_rms": held[low],
            "min_layer": low + 1,
        }
    return {"format_crossing": crossing, "formats": detail}


def phase_table(activation: str, sigma_b2: float, sigma_w2s: list[float] | None = None) -> dict:
    """The order-to-chaos picture for one activation and σ_b²: the critical σ_w² and, for each
    σ_w², q*, χ₁, phase, c*, ξ_c and 6ξ_c (default grid: 0.25 to 4 in steps of 0.25)."""
    try:
        critical = critical_sigma_w2(activation, sigma_b2)
    except InitlabError:
        critical = math.nan
    values = sigma_w2s or [round(0.25 * k, 2) for k in range(1, 17)]
    rows = []
    for s in values:
        mf = MeanField(activation, s, sigma_b2)
        rows.append(
            {
                "sigma_w2": s,
                "q_star": mf.q_star,
                "chi1": mf.chi1,
                "phase": mf.phase,
                "c_star": mf.c_fixed_point(),
                "xi_c": mf.xi_c,
                "max_trainable_depth": mf.max_trainable_depth,
                "caveat": mf.depth_scale_caveat,
            }
        )
    return {"activation": activation, "sigma_b2": sigma_b2, "critical_sigma_w2": critical, "rows": rows}
