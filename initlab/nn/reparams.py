"""Weight reparameterizations, one registry: how each layer's weight matrix is formed from the
parameters that training updates (``model.reparam``).

- ``none``: the stored matrix itself.
- ``weightnorm`` (Salimans & Kingma 2016, "Weight normalization: a simple reparameterization to
  accelerate training of deep neural networks"): every layer, the output layer included, learns
  each unit's direction v and length g separately, w = g·v/‖v‖ (``params.WeightNormDense``). The
  direction is ``model.init``'s draw and g = ‖v‖, so at initialization the net is exactly the
  plain net of that initializer (and the mean-field theory of it); ``model.init: weightnorm_data``
  instead sets g and b from a batch, the paper's data-dependent initialization
  (``initlab.nn.network_init.weightnorm_data``).
- ``scaled_ws`` (Brock, De & Smith 2021, "Characterizing signal propagation to close the
  performance gap in unnormalized ResNets", the NF-ResNets' layers): every hidden layer's
  incoming weights standardized in the forward pass to mean 0 and norm g (1 at init;
  ``params.StandardizedDense``), and the product of a hidden layer, whose input is an activation,
  multiplied by the activation's gain γ = 1/√Var(φ(z)), z ~ N(0, 1) (ReLU: √(2/(1 − 1/π)) ≈ 1.712),
  so that an input of unit variance gives pre-activations of unit variance. The output layer
  stays a plain linear map, as the NF-ResNets' classifier. In the wide limit the centred columns
  turn the mean-field maps into those of the centred activation γ(φ(z) − E φ(z)) at σ_w² = 1
  (``initlab.theory.mean_field``): the variance map preserves q = 1 for any φ and every q for ReLU, while the
  gradient's per-layer factor is χ = γ² E[φ'(z)²] (ReLU: 1.47, chaotic for a plain net).

References: docs/references.md [salimans2016], [brock2021].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp

from initlab.nn.activations import Shape, gaussian_nodes, numeric
from initlab.nn.initializers import Role
from initlab.nn.params import Dense, StandardizedDense, WeightNormDense
from initlab.registry import Registry

# A drawn plain layer -> the reparameterized layer (in the same dtype).
Wrap = Callable[[Dense], object]


def _weight_norm(d: Dense) -> WeightNormDense:
    """v = the draw, g = ‖v‖ per unit: the weight equals the draw."""
    g = jnp.sqrt(jnp.sum(jnp.square(d.w.astype(jnp.float32)), axis=-2)).astype(d.w.dtype)
    return WeightNormDense(d.w, d.b, g)


def _standardized(d: Dense) -> StandardizedDense:
    return StandardizedDense(d.w, d.b, jnp.ones(d.w.shape[:-2] + d.w.shape[-1:], d.w.dtype))


@functools.cache
def activation_gain(activation: str, shape: Shape | None = None) -> float:
    """γ = 1/√Var(φ(z)) for z ~ N(0, 1), by quadrature (Brock et al. 2021's gains: ReLU
    √(2/(1 − 1/π)))."""
    phi = numeric(activation, shape)[0]
    z, w = gaussian_nodes()
    mean = float(w @ phi(z))
    var = float(w @ (phi(z) - mean) ** 2)
    return 1.0 / math.sqrt(var) if var > 0 else math.inf


@dataclass(frozen=True)
class Reparam:
    """One reparameterization: ``wrap`` turns a drawn plain layer into its parameters (None: the
    plain layer), ``output`` whether the output layer is reparameterized too, ``gained`` whether
    the hidden layers' products take the activation's gain γ (``activation_gain``), and
    ``centred`` whether its columns have mean 0 (the theory's centred activation)."""

    doc: str
    wrap: Wrap | None = None
    output: bool = False
    gained: bool = False
    centred: bool = False

    def layer(self, d: Dense, role: Role):
        """The parameters of a layer of ``role`` drawn as ``d``."""
        if self.wrap is None or (role is Role.OUTPUT and not self.output):
            return d
        return self.wrap(d)

    def hidden_gain(self, activation: str, shape: Shape | None = None) -> float:
        """The factor on the matrix product of a layer whose input is an activation."""
        return activation_gain(activation, shape) if self.gained else 1.0


REPARAMS: Registry[Reparam] = Registry(
    "weight reparameterization",
    {
        "none": Reparam("the stored weight matrix itself"),
        "weightnorm": Reparam(
            "weight normalization (Salimans & Kingma 2016): w = g·v/‖v‖ per unit, every layer",
            _weight_norm,
            output=True,
        ),
        "scaled_ws": Reparam(
            "scaled weight standardization (Brock et al. 2021): each hidden unit's weights "
            "standardized, times the activation's gain",
            _standardized,
            gained=True,
            centred=True,
        ),
    },
)


def get_reparam(name: str, key: str = "model.reparam") -> Reparam:
    """The reparameterization called ``name`` (ConfigError listing valid names otherwise)."""
    return REPARAMS.get(name, key)
