"""The checks across fields, run once a config's fields each passed their own (``from_dict``):
canonical registry names, arguments resolved against their entries, choices that conflict or need
another field, the defaults that depend on other fields, and fields set where the configured choice
ignores them (``only_for``). Each failure is one ConfigError line naming the dotted key.

The sections and their fields are ``initlab.config.schema``; the registries are read here, when a
config is validated, as there (the lazy bridge that pyproject.toml's import contract names).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from initlab.config.schema import (
    MIN_HISTOGRAM_BINS,
    ModelConfig,
    RunConfig,
    TrainConfig,
    _default,
    _formats,
    _narrow,
    _registries,
    _stat_names,
    _words,
    only_for,
)
from initlab.config.validation import build, check_name
from initlab.errors import ConfigError


def _resolve(cfg: RunConfig) -> RunConfig:
    """Cross-field checks and defaults that depend on other fields; canonical registry names."""
    # Imported here, not at the top, for the reason given in initlab.config.schema._registries.
    from initlab.nn.activations import ACTIVATIONS
    from initlab.nn.initializers import BIAS_INITIALIZERS, INITIALIZERS, resolve_args
    from initlab.nn.normalizations import NORMALIZATIONS

    m, t = cfg.model, cfg.train
    check_name(cfg.name, "name")
    init = INITIALIZERS.canonical(m.init)
    init_args = resolve_args(INITIALIZERS[init], m.init_args, "model.init_args", f"model.init {init!r}")
    bias_args = resolve_args(
        BIAS_INITIALIZERS[m.bias_init], m.bias_init_args, "model.bias_init_args", f"model.bias_init {m.bias_init!r}"
    )
    if INITIALIZERS[init].bias is not None and m.bias_init != "zeros":
        how = " (set them through model.init_args)" if "sigma_b" in init_args else ""
        raise ConfigError(
            f"model.bias_init: {m.bias_init!r} conflicts with init {init!r}, which sets its own biases{how}"
        )
    if m.dropout_kind != "standard" and m.dropout == 0:
        raise ConfigError(
            f"model.dropout_kind: {m.dropout_kind!r} has no effect with model.dropout: 0 (set model.dropout to a rate)"
        )
    if m.residual and m.depth % 2 == 0:
        raise ConfigError(
            f"model.depth: {m.depth} with model.residual: true must be odd (1 input layer + 2 layers "
            f"per block); use {m.depth - 1} or {m.depth + 1}"
        )
    needs = INITIALIZERS[init].residual
    if needs is not None and needs != m.residual:
        raise ConfigError(
            f"model.init: {init!r} {'needs' if needs else 'does not support'} a residual network "
            f"(model.residual: {str(needs).lower()})"
        )
    if t.epochs is not None and t.steps is not None:
        raise ConfigError(f"train.steps: {t.steps!r} given together with train.epochs: {t.epochs!r} (set one of them)")
    norm_args = resolve_args(NORMALIZATIONS[m.norm], m.norm_args, "model.norm_args", f"model.norm {m.norm!r}")
    model = dataclasses.replace(
        m,
        init=init,
        init_args=init_args,
        bias_init_args=bias_args,
        norm_args=norm_args,
        activation=ACTIVATIONS.canonical(m.activation),
        shaping_args=_check_shaping(m),
    )
    train = t if (t.epochs is not None or t.steps is not None) else dataclasses.replace(t, epochs=1)
    # The signal statistics are always computed (the divergence check reads them); registry order.
    chosen = set(cfg.log.stats) | set(_stat_names("signal_names"))
    log = dataclasses.replace(cfg.log, stats=tuple(n for n in _stat_names("names") if n in chosen))
    train = _resolve_loss_scale(model, train)
    _check_parameterization(model, train)
    _check_reparam(model)
    _check_shaping_weights(model)
    _check_range(cfg.data.range, "data.range")
    if train.target_range is not None:
        _check_range(train.target_range, "train.target_range")
        if train.target_scale is not None:
            raise ConfigError(
                f"train.target_range: {list(train.target_range)} given together with train.target_scale: "
                f"{train.target_scale!r} (set one of them: a scale s is the range [-s, s])"
            )
    if "pre_delta_abs_mean" in log.stats and log.stats_on != "probe":
        raise ConfigError(
            "log.stats: pre_delta_abs_mean compares the probe's pre-activations with their values at "
            f"step 0, so it needs log.stats_on: probe (not {log.stats_on!r})"
        )
    if 0 < log.histograms < MIN_HISTOGRAM_BINS:
        raise ConfigError(
            f"log.histograms: {log.histograms} bins are too few to tell the activation's saturated edges "
            f"from the rest; use 0 (off) or at least {MIN_HISTOGRAM_BINS} (e.g. 64)"
        )
    if log.jacobian > cfg.data.probe_size:
        raise ConfigError(
            f"log.jacobian: {log.jacobian} examples, but the probe batch has data.probe_size: {cfg.data.probe_size}"
        )
    return dataclasses.replace(cfg, model=model, train=train, log=log)


def _check_shaping(m: ModelConfig) -> dict[str, float]:
    """``model.shaping_args`` resolved; the shaping solved once (cached), so that an unreachable
    target is an error when the config loads. Shaping is defined for plain MLPs."""
    from initlab.nn.initializers import resolve_args
    from initlab.theory.shaping import SHAPINGS, shape_for

    args = resolve_args(SHAPINGS[m.shaping], m.shaping_args, "model.shaping_args", f"model.shaping {m.shaping!r}")
    if m.shaping == "none":
        return args
    for key, value, plain in (("model.residual", m.residual, False), ("model.norm", m.norm, "none")):
        if value != plain:
            raise ConfigError(
                f"{key}: {value!r} with model.shaping: {m.shaping!r}; kernel shaping makes a plain MLP "
                "trainable without normalization or skip connections, and its C map is that of a "
                f"plain net (set {key}: {str(plain).lower()} or model.shaping: none)"
            )
    shape_for(m.activation, m.shaping, args, m.depth)
    return args


def _check_shaping_weights(m: ModelConfig) -> None:
    """Kernel shaping is derived for weights of σ_w² = 1 (``initlab.theory.shaping.check_weights``)."""
    from initlab.theory.shaping import check_weights

    check_weights(m.shaping, m.init, m.init_args, m.width)


def _check_reparam(m: ModelConfig) -> None:
    """What a weight reparameterization can represent and what its data-dependent init needs."""
    if m.init == "weightnorm_data" and m.reparam != "weightnorm":
        raise ConfigError(
            f"model.init: 'weightnorm_data' sets weight norm's lengths g from data; it needs "
            f"model.reparam: weightnorm (not {m.reparam!r})"
        )
    if m.reparam == "none":
        return
    if m.parameterization != "standard":
        raise ConfigError(
            f"model.reparam: {m.reparam!r} fixes each unit's weight norm itself, so parameterization "
            f"{m.parameterization!r}'s width-dependent init has no effect; use parameterization: "
            "standard"
        )
    if m.init == "fixup":
        raise ConfigError(
            f"model.init: 'fixup' sets weights to zero, which model.reparam: {m.reparam!r} cannot "
            "represent (a zero direction has no norm); use another init or model.reparam: none"
        )
    if m.reparam == "scaled_ws" and m.shaping != "none":
        raise ConfigError(
            f"model.reparam: 'scaled_ws' with model.shaping: {m.shaping!r}: both set the activation's "
            "scale (the gain γ and the shaping's transformation); use one of them"
        )
    if m.init == "weightnorm_data" and m.norm != "none":
        raise ConfigError(
            f"model.norm: {m.norm!r} with model.init: 'weightnorm_data': the data-dependent init sets "
            "every pre-activation to mean 0, variance 1, which the normalization then redoes; use "
            "model.norm: none or model.init: another initializer"
        )


def _check_range(r: tuple[float, ...], key: str) -> None:
    """A [low, high] pair with low < high."""
    if len(r) != 2 or not r[0] < r[1]:
        raise ConfigError(f"{key}: {list(r)!r} is not a range [low, high] with low < high")


def _check_parameterization(m: ModelConfig, t: TrainConfig) -> None:
    """ntk and mup rescale a fan-in law (``Initializer.law``) and need nothing that reads the stored
    weights as the forward pass uses them; mup needs its base width."""
    from initlab.nn.initializers import INITIALIZERS
    from initlab.nn.parameterizations import PARAMETERIZATIONS

    p = PARAMETERIZATIONS[m.parameterization]
    if p.needs_law and INITIALIZERS[m.init].law is None:
        laws = ", ".join(n for n, e in INITIALIZERS.items() if e.law is not None)
        raise ConfigError(
            f"model.init: {m.init!r} does not apply under parameterization {m.parameterization!r}, which "
            f"sets each layer's variance itself and takes the shape of a fan-in initializer ({laws})"
        )
    if p.needs_base and m.base_width is None:
        raise ConfigError(
            f"model.base_width: parameterization {m.parameterization!r} needs the width at which it "
            f"equals standard (e.g. model.base_width: {min(m.width, 128)})"
        )
    if m.parameterization != "standard" and t.max_norm is not None:
        raise ConfigError(
            f"train.max_norm: bounds the stored weights, which parameterization {m.parameterization!r} "
            "multiplies in the forward pass; use parameterization: standard, or remove it"
        )


# optax's default eps of the optimizers that divide by a second moment (adam, adamw, rmsprop)
SECOND_MOMENT_EPS = 1e-8


def _resolve_loss_scale(m: ModelConfig, t: TrainConfig) -> TrainConfig:
    """``train.loss_scale`` checked against the format: a number or a word, and only in a format
    narrower than float32 (``initlab.nn.formats.Format.narrow``: float16's range, or bfloat16's
    precision, which the user studies). Pure precision keeps the optimizer state in the format: a
    format that rounds ``SECOND_MOMENT_EPS`` to 0 cannot hold a second moment."""
    pkg = _registries()
    scaling = pkg.nn.loss_scale.from_config(t.loss_scale, t.loss_scale_init, t.loss_scale_period)  # ConfigError
    fmt, narrow = _formats()[m.dtype], _narrow()
    if scaling.active and not fmt.narrow:
        raise ConfigError(
            f"train.loss_scale: {t.loss_scale!r} does nothing with model.dtype: {m.dtype!r} (loss "
            "scaling keeps small gradients above float16's smallest normal number); use model.dtype: "
            f"{_words(narrow)}, or remove it"
        )
    second_moment = pkg.nn.optimizers.SECOND_MOMENT
    if m.precision == "pure" and not fmt.holds(SECOND_MOMENT_EPS) and t.optimizer in second_moment:
        holds = [n for n in narrow if _formats()[n].holds(SECOND_MOMENT_EPS)]
        others = [n for n in pkg.nn.optimizers.OPTIMIZERS if n not in second_moment]
        eps = f"{SECOND_MOMENT_EPS:.0e}".replace("e-0", "e-")
        raise ConfigError(
            f"model.precision: 'pure' with model.dtype: {m.dtype!r} and train.optimizer: "
            f"{t.optimizer!r}: its second-moment state and eps ({eps}) are 0 in "
            f"{m.dtype}, so its first update is 0/0; use precision: mixed, {', '.join(holds)}, or "
            f"{'/'.join(others)}"
        )
    return t if isinstance(t.loss_scale, str) else dataclasses.replace(t, loss_scale=float(t.loss_scale))


def _check_used(cfg: RunConfig, data: Any) -> None:
    """Reject a field set away from its default where the configured choice ignores it."""
    for key, (owner, users) in only_for().items():
        section, leaf = key.split(".")
        value = getattr(getattr(cfg, section), leaf)
        default = next(_default(f) for f in dataclasses.fields(getattr(cfg, section)) if f.name == leaf)
        choice = getattr(getattr(cfg, owner.split(".")[0]), owner.split(".")[1])
        # A saved config.yaml holds every field at its default; only a value set on purpose counts.
        if value != default and choice not in users:
            raise ConfigError(
                f"{key}: {value!r} has no effect with {owner}: {choice!r} "
                f"(used by {', '.join(map(str, users))}); remove it or change {owner}"
            )


def from_dict(data: Any) -> RunConfig:
    """A validated, resolved RunConfig from a plain mapping (as parsed from YAML)."""
    cfg = build(RunConfig, data, "")
    _check_used(cfg, data)
    return _resolve(cfg)
