"""From a run config to the theory's numbers: the σ's, the shaping, the loss scale and the data's
input moment that ``initlab.theory`` takes as plain numbers, and the predictions ``initlab theory``
and ``summary.json`` show (Poole et al. 2016; Schoenholz et al. 2017).

The theory itself (``initlab.theory.mean_field``, ``initlab.theory.shaping``) never reads a
config; this adapter reads one, asks the registries for the variances its initializers draw, and
loads the dataset where q⁰ is measured on the probe batch.
"""

from __future__ import annotations

import math

import numpy as np

from initlab.config import ModelConfig, RunConfig, TrainConfig
from initlab.errors import InitlabError
from initlab.nn.activations import Shape
from initlab.nn.initializers import BIAS_INITIALIZERS, INITIALIZERS, Role
from initlab.nn.parameterizations import get_parameterization, width_multiplier
from initlab.nn.reparams import REPARAMS
from initlab.theory.mean_field import LayerPrediction, critical_sigma_w2, format_crossings, gradient_rms, prediction
from initlab.theory.shaping import local_maps, shape_for


def shape_of_model(m: ModelConfig) -> Shape | None:
    """``initlab.theory.shaping.shape_for`` of a model config: its activation's transformation by
    its shaping over its depth; None without one."""
    return shape_for(m.activation, m.shaping, m.shaping_args, m.depth)


def is_centred(m: ModelConfig) -> bool:
    """Whether the model's columns have mean 0 (scaled WS), so the theory's maps are those of the
    centred activation and its input moment q⁰ is the inputs' variance across features."""
    return REPARAMS[m.reparam].centred


def effective_sigmas(m: ModelConfig, input_dim: int) -> tuple[float, float, float] | str:
    """(σ_w² of the first layer, σ_w² of the hidden layers, σ_b²) of a model config, or the reason
    mean-field theory does not describe it. σ_w² = fan_in · Var(W) and σ_b² = Var(b) are read from
    the initializers' registry entries (``sigma_w2``, ``sigma_b2``); σ_b² is the hidden layers' (fan-in
    ``width``)."""
    if m.norm != "none":
        return f"{m.norm} renormalises every layer; the mean-field maps describe un-normalised networks"
    if m.residual:
        return "skip connections add each block's input to its output; the mean-field maps describe plain MLPs"
    init = INITIALIZERS[m.init]
    if init.scheme is not None:
        what = "fitted to data" if init.needs_data else "set per layer by the network's structure"
        return f"{m.init} weights are {what}, not drawn i.i.d. with one variance; the theory does not apply"
    if init.sigma_w2 is None:
        return f"{m.init} has no fixed weight variance (fan_in · Var(W)) for the theory to use"
    reparam = REPARAMS[m.reparam]
    if reparam.centred:  # scaled WS: every column of norm 1, whatever the draw's scale; γ on the hidden ones
        w_first, w_hidden = 1.0, reparam.hidden_gain(m.activation, shape_of_model(m)) ** 2
    else:  # weight norm starts with g = ‖v‖: the draw itself
        w_first = init.sigma_w2(input_dim, m.width, m.init_args)
        w_hidden = init.sigma_w2(m.width, m.width, m.init_args)
    own = init.bias is not None  # the initializer's own bias law (mean-field)
    bias, bias_args = (init, m.init_args) if own else (BIAS_INITIALIZERS[m.bias_init], m.bias_init_args)
    b = bias.sigma_b2(m.width, bias_args) if bias.sigma_b2 is not None else None
    if b is None:
        return "a constant non-zero bias shifts every unit alike; the theory assumes random biases"
    return w_first, w_hidden, b


def shaping_report(m: ModelConfig, shape: Shape) -> dict:
    """What defines a shaped activation (TAT, DKS; ``initlab.theory.shaping``): its transformation and the
    local Q/C-map quantities at q = 1, with the whole net's C_f(0) and C_f'(1) over its depth."""
    return {
        "method": m.shaping,
        "args": dict(m.shaping_args),
        "transformation": shape.describe(),
        "maps": dict(local_maps(m.activation, shape, m.depth).rows()),
    }


def predict_config(m: ModelConfig, input_dim: int, q0: float) -> dict:
    """The theory's account of a model config fed inputs of second moment ``q0``
    (``initlab.theory.mean_field.prediction``: per-layer predictions, σ's, q*, χ₁, phase, ξ_c, ξ_q
    and 6ξ_c, with the shaping's and the reparameterization's account where the model has one); or
    ``{"applies": False, "reason": ...}``."""
    sig = effective_sigmas(m, input_dim)
    if isinstance(sig, str):
        return {"applies": False, "reason": sig}
    w_first, w_hidden, b = sig
    shape = shape_of_model(m)
    centred = is_centred(m)
    extra = {} if shape is None else {"shaping": shaping_report(m, shape)}
    if centred:
        extra["reparam"] = {
            "method": m.reparam,
            "gain": math.sqrt(w_hidden),
            "maps": "of the centred activation γ(φ(z) − E φ(z)): each column of mean 0 and norm γ",
        }
    return {"applies": True, **extra, **prediction(m.activation, m.depth, q0, w_first, w_hidden, b, shape, centred)}


def loss_scale_value(t: TrainConfig) -> float:
    """The loss scale S a run's backward pass starts with: 1 for ``train.loss_scale: none``, the
    number itself, or ``train.loss_scale_init`` for dynamic scaling."""
    scale = t.loss_scale
    if scale == "none" or scale is None:
        return 1.0
    if scale == "dynamic":
        return float(t.loss_scale_init)
    try:
        return float(scale)
    except (TypeError, ValueError):
        raise InitlabError(f"train.loss_scale: {scale!r} is not none, dynamic or a number") from None


def output_sigma_w2(m: ModelConfig, num_classes: int) -> float:
    """fan_in · Var of the output layer's effective weights (the stored ones times the
    parameterization's multiplier): the initializer's own under standard and ntk; under mup
    σ_w²·m·(1/m)² = σ_w²/m (``initlab.nn.parameterizations``), 0 with ``model.zero_readout``."""
    s2 = INITIALIZERS[m.init].sigma_w2(m.width, num_classes, m.init_args)
    p = get_parameterization(m.parameterization)
    if m.zero_readout:
        return 0.0
    if p.unit_weights:  # ntk: unit weights × √(σ_w²/n) is σ_w²/n per entry, the standard law
        return s2
    mult = width_multiplier(m.width, m.base_width)
    return s2 * p.init_factor(Role.OUTPUT, mult) ** 2 * p.multiplier(Role.OUTPUT, m.width, mult, s2) ** 2


def gradient_prediction(cfg: RunConfig, num_classes: int, pred: dict) -> dict:
    """The gradient-scale part of ``config_prediction`` for a run config whose ``predict_config``
    applies: ``grad_rms`` (each example's ∂ℓ/∂z per entry, hidden layers then the output layer;
    ``initlab.theory.mean_field.gradient_rms``), ``sigma_w2_out``, ``batch_size``, ``dtype``,
    ``loss_scale`` and ``format_crossings``'s keys."""
    m, t = cfg.model, cfg.train
    sigma_w2_out = output_sigma_w2(m, num_classes)
    layers = LayerPrediction(pred["q"], pred["act_var"], pred["grad_ratio"])
    rms = gradient_rms(
        m.activation,
        layers,
        m.width,
        pred["sigma_w2"],
        sigma_w2_out,
        pred["sigma_b2"],
        num_classes,
        t.loss,
        t.targets,
        shape_of_model(m),
    )
    scale = loss_scale_value(t)
    return {
        "grad_rms": rms,
        "sigma_w2_out": sigma_w2_out,
        "batch_size": t.batch_size,
        "dtype": m.dtype,
        "loss_scale": scale,
        **format_crossings(rms, t.batch_size, scale, m.dtype),
    }


def config_prediction(cfg: RunConfig, data_dir=None, q0: float | None = None) -> dict:
    """``predict_config`` for a run config, with q⁰ measured on its probe batch (loads the data)
    unless given, the critical σ_w², and ``gradient_prediction``'s gradient scale and number-format
    crossings."""
    from initlab.data.datasets import load_dataset

    data = load_dataset(cfg.data, data_dir, progress=False)
    if q0 is None:
        probe = np.asarray(data.x_train[: cfg.data.probe_size], np.float64)
        q0 = float(np.mean(np.var(probe, axis=1) if is_centred(cfg.model) else np.square(probe)))
    out = predict_config(cfg.model, data.input_dim, q0)
    if out.get("applies"):
        try:
            out["critical_sigma_w2"] = (
                math.nan
                if shape_of_model(cfg.model) is not None or is_centred(cfg.model)
                else critical_sigma_w2(cfg.model.activation, out["sigma_b2"])
            )
        except InitlabError:
            out["critical_sigma_w2"] = math.nan
        out.update(gradient_prediction(cfg, data.num_classes, out))
    return out
