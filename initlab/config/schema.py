"""Run configuration: YAML → validated, frozen dataclasses.

Every field carries its help text and its allowed values. Validation happens at load time, before
anything compiles: unknown keys, wrong types, out-of-range values and unknown registry names each
raise a one-line ConfigError naming the dotted key, the value given and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from initlab.errors import ConfigError


def _bound(x: float) -> str:
    """A range bound as written: an integral bound exactly (4294967295, not 4.29497e+09)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def spec(default: Any = dataclasses.MISSING, help: str = "", *, ge: float | None = None,
         le: float | None = None, gt: float | None = None, lt: float | None = None,
         choices: Callable[[], Iterable[str]] | Iterable[str] | None = None,
         factory: Callable[[], Any] | None = None):
    """A dataclass field with its help text and constraints, read by the validator."""
    meta = {"help": help, "ge": ge, "le": le, "gt": gt, "lt": lt, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# JAX's PRNGKey(seed) keeps a seed's low 32 bits: a larger seed would silently be another one's run.
MAX_SEED = 2 ** 32 - 1

# Keys added after runs were first made, with the default that keeps those runs' hashes: a config at
# this value hashes as if the key did not exist, and a stored config without the key reads as it.
ADDED_LATER = {"data.input_scale": 1.0, "log.histograms": 0, "log.jacobian": 4, "model.dtype": "float32",
               "model.precision": "mixed", "train.loss_scale": "none", "train.loss_scale_init": 32768.0,
               "train.loss_scale_period": 2000, "model.parameterization": "standard", "model.base_width": None,
               "model.zero_readout": False, "data.range": (-0.5, 0.5), "train.target_range": None,
               "model.branch_scale_init": 1.0, "model.shaping": "none", "model.shaping_args": {},
               "model.reparam": "none"}

# The per-layer statistics every run computed before ``log.stats`` existed: a run folder or summary
# without the key computed these, and a config that selects exactly these keeps the hash it had then.
STATS_BEFORE_LOG_STATS = ("pre_mean", "pre_var", "act_mean", "act_var", "grad_var", "wgrad_var", "wgrad_norm",
                          "w_var", "w_norm", "update_ratio", "saturated_frac", "dead_frac", "symmetry", "unit_p15",
                          "unit_p50", "unit_p85")


def _stat_names(fn: str) -> list[str]:
    """Names from the statistics registry (``default_names``, ``signal_names`` or ``names``: all)."""
    from initlab.stats import statistics as stats

    return list(getattr(stats, fn)())


def _registry_names(pick: Callable[[types.ModuleType], Any]) -> Callable[[], list[str]]:
    """The names (canonical, then aliases) of the registry ``pick(initlab)`` returns, e.g.
    ``lambda pkg: pkg.nn.initializers.INITIALIZERS``, read when a config is validated rather than when
    this module loads: the registries import jax, which loading a config must not (the CLI sets JAX's
    cache options before jax loads), and they sit beside or above ``initlab.config`` (this is the lazy
    bridge that pyproject.toml's import contract names)."""

    def names() -> list[str]:
        import initlab.data.datasets
        import initlab.nn.activations
        import initlab.nn.formats
        import initlab.nn.initializers
        import initlab.nn.normalizations
        import initlab.nn.optimizers
        import initlab.nn.parameterizations
        import initlab.nn.regularizers
        import initlab.nn.reparams
        import initlab.theory.shaping

        return pick(initlab).all_names()

    return names


@dataclass(frozen=True)
class DataConfig:
    """Where inputs come from and how they are preprocessed."""

    dataset: str = spec("mnist", "dataset: mnist, or gaussian (N(0,1) inputs, labels from a fixed random teacher)",
                        choices=_registry_names(lambda pkg: pkg.data.datasets.DATASETS))
    preprocess: str = spec("standardize", "none (pixels/255), center (zero mean per input), standardize (zero mean "
                           "per input, unit variance on average; Efficient BackProp), whiten (ZCA: decorrelated "
                           "inputs), minmax (each input mapped linearly from its training range onto data.range)",
                           choices=_registry_names(lambda pkg: pkg.data.datasets.PREPROCESSORS))
    range: tuple[float, ...] = spec(help="minmax only: the [low, high] each input is mapped onto (Efficient BackProp "
                                    "§4.3: inputs inside the nonlinearity's quasilinear range; [-0.5, 0.5] for tanh); "
                                    "an input constant on the training set goes to the middle",
                                    factory=lambda: (-0.5, 0.5))
    whiten_eps: float = spec(0.1, "whiten only: epsilon added to the covariance eigenvalues before the inverse square "
                             "root (damps the near-constant pixel directions)", gt=0)
    input_scale: float = spec(1.0, "multiply the preprocessed inputs by this, e.g. to start a network at its "
                              "mean-field fixed point (q⁰ = q*: 0.214 ≈ √0.0457 for tanh at σ_w² 1.086, σ_b² 1e-4)",
                              gt=0)
    train_size: int | None = spec(None, "use only the first N training examples (default: all; gaussian: 10000)", ge=1)
    test_size: int | None = spec(None, "use only the first N test examples (default: all; gaussian: 2000)", ge=1)
    probe_size: int = spec(512, "size of the fixed training batch (the probe) the per-layer statistics are computed on "
                           "with log.stats_on: probe, and theory's input variance q⁰ is measured on", ge=2)
    input_dim: int = spec(784, "gaussian only: input dimension", ge=1)
    num_classes: int = spec(10, "gaussian only: number of classes of the teacher", ge=2)
    teacher_seed: int = spec(0, "gaussian only: seed of the inputs and the teacher network", ge=0, le=MAX_SEED)


@dataclass(frozen=True)
class ModelConfig:
    """The MLP: depth × width hidden layers, then a linear output layer."""

    depth: int = spec(3, "number of hidden layers", ge=1, le=1000)
    width: int = spec(256, "units per hidden layer", ge=1, le=65536)
    activation: str = spec("relu", "nonlinearity of the hidden layers",
                           choices=_registry_names(lambda pkg: pkg.nn.activations.ACTIVATIONS))
    init: str = spec("he_normal", "weight initializer of every layer",
                     choices=_registry_names(lambda pkg: pkg.nn.initializers.INITIALIZERS))
    init_args: dict[str, float] = spec(help="arguments of the initializer (gain, std, limit, value, sigma_w, sigma_b)",
                                       factory=dict)
    bias_init: str = spec("zeros", "bias initializer (mean_field draws its own biases)",
                          choices=_registry_names(lambda pkg: pkg.nn.initializers.BIAS_INITIALIZERS))
    bias_init_args: dict[str, float] = spec(help="arguments of the bias initializer (value, std, limit)", factory=dict)
    norm: str = spec("none", "normalization of every hidden layer",
                     choices=_registry_names(lambda pkg: pkg.nn.normalizations.NORMALIZATIONS))
    norm_position: str = spec("pre", "pre: normalise the pre-activation, before the nonlinearity (Ioffe & Szegedy); "
                              "post: normalise the activation", choices=("pre", "post"))
    norm_eps: float = spec(1e-5, "epsilon added to the variance in normalization", gt=0)
    bn_momentum: float = spec(0.9, "batch norm running-average momentum", ge=0, lt=1)
    residual: bool = spec(False, "residual MLP: after the first hidden layer, blocks of two layers with a skip "
                          "connection around them (depth must then be odd: 1 + 2 × blocks)")
    branch_scale_init: float = spec(1.0, "residual only: the initial value of each residual branch's learned scalar "
                                    "multiplier m (h' = φ(h + m·branch)); 0 is ReZero (Bachlechner et al. 2020) and "
                                    "SkipInit (De & Smith 2020): every block the identity at init", ge=0)
    dropout: float = spec(0.0, "dropout rate of every hidden layer's output during training (0: off)", ge=0, lt=1)
    dropout_kind: str = spec("standard", "standard (inverted dropout; Srivastava et al. 2014) or alpha "
                             "(alpha-dropout for SELU nets; Klambauer et al. 2017)",
                             choices=_registry_names(lambda pkg: pkg.nn.regularizers.DROPOUTS))
    dtype: str = spec("float32", "number format of the forward and backward pass: float32, bfloat16, float16, or "
                      "float64 (JAX's x64 mode, for that run only). Normalization statistics and the loss are "
                      "computed in float32 (float64 for float64)",
                      choices=_registry_names(lambda pkg: pkg.nn.formats.FORMATS))
    precision: str = spec("mixed", "mixed: float32 master parameters and optimizer state, cast to model.dtype for "
                          "each pass (Micikevicius et al. 2018); pure: parameters and optimizer state in model.dtype "
                          "itself", choices=("mixed", "pure"))
    parameterization: str = spec(
        "standard", "how init variance, forward multiplier and learning rate of each layer scale with width: "
        "standard; ntk (unit-variance weights times σ_w/√fan_in in the forward pass; Jacot et al. 2018); mup "
        "(maximal update, Yang et al. 2022: every layer's activations move by O(1) whatever the width, so the best "
        "learning rate found at model.base_width transfers). ntk and mup take the fan-in initializers: "
        "lecun_normal, lecun_uniform, he_normal, he_uniform, standard, mean_field",
        choices=_registry_names(lambda pkg: pkg.nn.parameterizations.PARAMETERIZATIONS))
    base_width: int | None = spec(None, "mup only: the width n₀ at which mup equals the standard parameterization "
                                  "(its learning rates and init are relative to m = width / base_width)", ge=1,
                                  le=65536)
    zero_readout: bool = spec(False, "mup only: the output layer's weights start at zero, as Yang et al. 2022 "
                              "recommend (default: the initializer's draw, rescaled as mup does)")
    shaping: str = spec("none", "kernel shaping of model.activation for a deep plain MLP (no normalization, no skip "
                        "connections): tat (Zhang et al. 2022: leaky ReLU whose negative slope makes the whole net's "
                        "C map C_f(0) = eta) or dks (Martens et al. 2021: a smooth activation φ̂(x) = γ(φ(αx+β)+δ) "
                        "with the whole net's C_f'(1) = zeta); pair with init orthogonal",
                        choices=_registry_names(lambda pkg: pkg.theory.shaping.SHAPINGS))
    shaping_args: dict[str, float] = spec(help="arguments of the kernel shaping (tat: eta, default 0.9; dks: zeta, "
                                          "default 1.5)", factory=dict)
    reparam: str = spec("none", "how each layer's weight matrix is formed from the parameters training updates: none; "
                        "weightnorm (Salimans & Kingma 2016: w = g·v/‖v‖ per unit, every layer; g starts at ‖v‖, so "
                        "the net starts as model.init drew it, or is set from data with init: weightnorm_data); "
                        "scaled_ws (Brock et al. 2021: each hidden unit's weights standardized to mean 0 and norm g, "
                        "g = 1 at init, times the activation's gain γ = 1/√Var φ(z))",
                        choices=_registry_names(lambda pkg: pkg.nn.reparams.REPARAMS))


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer, schedule, loss and length of training."""

    optimizer: str = spec("adam", "optax optimizer", choices=_registry_names(lambda pkg: pkg.nn.optimizers.OPTIMIZERS))
    lr: float = spec(1e-3, "peak learning rate", gt=0)
    momentum: float = spec(0.9, "momentum of momentum, nesterov and rmsprop", ge=0, lt=1)
    schedule: str = spec("constant", "learning-rate schedule",
                         choices=_registry_names(lambda pkg: pkg.nn.optimizers.SCHEDULES))
    warmup_steps: int = spec(0, "warm-up steps of the warmup_cosine schedule", ge=0)
    batch_size: int = spec(128, "examples per training step", ge=1)
    epochs: int | None = spec(None, "passes over the training set (default 1 when steps is not set)", ge=1)
    steps: int | None = spec(None, "training steps, instead of epochs (0: statistics at initialization only)", ge=0)
    weight_decay: float = spec(0.0, "weight decay (decoupled for adamw, added to the gradient otherwise)", ge=0)
    loss: str = spec("cross_entropy", "cross_entropy, or mse on one-hot targets",
                     choices=_registry_names(lambda pkg: pkg.nn.optimizers.LOSSES))
    target_scale: float | None = spec(None, "mse only: targets +s for the true class and -s for the others, inside "
                                      "the activation's quasilinear range (LeCun et al. 1989: ±1 with scaled tanh); "
                                      "default one-hot 0/1", gt=0)
    target_range: tuple[float, ...] | None = spec(
        None, "mse only: targets [low, high]: high for the true class, low for the others (e.g. [0.1, 0.9] for "
        "sigmoid outputs, which never reach 0 and 1; LeCun et al. 1998, Efficient BackProp §4.5); instead of "
        "train.target_scale")
    max_norm: float | None = spec(None, "after every update, rescale each unit's incoming weight vector to norm at "
                                  "most this (Srebro & Shraibman 2005; Srivastava et al. 2014 use 3-4); default off",
                                  gt=0)
    loss_scale: float | str = spec("none", "loss scaling for narrow formats (float16, bfloat16): none, a constant "
                                   "scale (a number), or dynamic (grow ×2 after train.loss_scale_period finite steps, "
                                   "halve and skip the step on a non-finite gradient; Micikevicius et al. 2018)")
    loss_scale_init: float = spec(32768.0, "dynamic loss scaling: the starting scale (2^15)", ge=1)
    loss_scale_period: int = spec(2000, "dynamic loss scaling: consecutive finite steps before the scale doubles",
                                  ge=1)

    @property
    def targets(self) -> float | tuple[float, ...] | None:
        """The mse targets as the loss takes them: ``target_range``, else ``target_scale`` (±s), else None."""
        return self.target_range or self.target_scale


# The fewest linear bins log.histograms may ask for: the report's hist_saturated counts the outermost
# bin at each bounded end of the activation's image, which with fewer bins is no longer its edge (with
# one bin every activation would count as saturated).
MIN_HISTOGRAM_BINS = 8


@dataclass(frozen=True)
class LogConfig:
    """How often statistics are logged and where runs are written."""

    every: int = spec(100, "steps between per-layer statistics (step 0, the initialization, is always logged)", ge=1)
    stats_on: str = spec("probe", "batch the per-layer statistics are taken on. probe: the fixed batch of "
                         "data.probe_size training examples, in a forward/backward pass of its own (same "
                         "examples at every log, dropout off). train_batch: the logged step's own mini-batch, "
                         "gathered in that training step's forward/backward pass (nearly free; dropout masks "
                         "included)", choices=("probe", "train_batch"))
    stats: tuple[str, ...] = spec(
        help="per-layer statistics to compute (names from the statistics registry, initlab.stats.statistics; default: "
        "every default statistic). pre_var, act_var and grad_var are always computed: the divergence "
        "check reads them", factory=lambda: _stat_names("default_names"),
        choices=lambda: _stat_names("names"))
    histograms: int = spec(0, "per-layer histograms of z, a, ∂ℓ/∂z and W, logged with the other statistics to "
                           "histograms.csv: the number of linear bins of z and a (e.g. 64, at least "
                           f"{MIN_HISTOGRAM_BINS}; gradients and weights get one bin per binary exponent). Default 0: "
                           "off (they cost 4-5% of throughput "
                           "with statistics every 10 steps)", ge=0, le=4096)
    jacobian: int = spec(4, "probe examples whose input-output Jacobian ∂(last hidden layer)/∂(input) has its "
                         "singular values taken at step 0 and at the end (jacobian.csv, summary.json); 0 turns it "
                         "off. Not defined with batch norm, whose output mixes the examples", ge=0, le=256)
    out: str = spec("runs", "folder the run directory is created in")
    checkpoint_every: int = spec(
        0, "steps between checkpoints of the whole training state (parameters, optimizer state, data order, the "
        "statistics so far) in the run folder's checkpoint.pkl, from which initlab run --resume continues a run "
        "that was killed; 0: none, except the one an interrupted run (Ctrl-C, SIGTERM) writes as it stops. "
        "Deleted when the run ends. Not part of the config hash", ge=0)
    save_params: tuple[str, ...] = spec(
        ("init", "end"), "when to save the parameters (and batch norm's running statistics) into the run folder's "
        "params/ as .npz (names in the README): init (step 0, after any data-dependent init), end (the last "
        "step: the net summary.json's test accuracy is of); [] saves none. Not part of the config hash",
        choices=("init", "end"))


@dataclass(frozen=True)
class RunConfig:
    """A whole run: what `initlab run` reads from YAML."""

    name: str = spec("run", "run name; the run folder is <log.out>/<name>-<config hash>")
    seed: int = spec(0, "seed of initialization, data order and everything random in training (0 to 2³² − 1: "
                     "JAX's PRNGKey keeps 32 bits)", ge=0, le=MAX_SEED)
    data: DataConfig = spec(help="data section", factory=DataConfig)
    model: ModelConfig = spec(help="model section", factory=ModelConfig)
    train: TrainConfig = spec(help="train section", factory=TrainConfig)
    log: LogConfig = spec(help="log section", factory=LogConfig)


# --------------------------------------------------------------------------------------------
# Validation


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp``, or a ConfigError. ints are accepted where floats are wanted."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(value, args[0], key)
        for a in args:  # e.g. float | str: a number, else a word
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not a {' or a '.join(a.__name__ for a in args)}")
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: {value!r} is not a mapping (write it as {{name: value, ...}})")
        return {str(k): v for k, v in value.items()}  # entries are checked by the registry entry
    if origin is tuple:  # tuple[str, ...]: a YAML list, or one comma-separated string (--set)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: {value!r} is not a list (write it as [a, b, ...])")
        items = tuple(_coerce(v, typing.get_args(tp)[0], key) for v in value)
        if typing.get_args(tp)[0] is str and len(set(items)) != len(items):
            raise ConfigError(f"{key}: {list(items)!r} names an entry twice")
        return items
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: {value!r} is not an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{key}: {value!r} is not a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: {value!r} is not a string")
        return value
    raise TypeError(f"unsupported config type {tp}")  # a bug in this module, not user input


def _check_bounds(value: Any, meta: Mapping[str, Any], key: str) -> None:
    if value is None or isinstance(value, dict):
        return
    choices = meta.get("choices")
    if choices is not None:
        names = list(choices() if callable(choices) else choices)
        for v in value if isinstance(value, tuple) else (value,):
            if v not in names:
                raise ConfigError(f"{key}: {v!r} is not one of {', '.join(names)}")
    if isinstance(value, tuple):
        return
    lo, hi = meta.get("ge"), meta.get("le")
    glo, lhi = meta.get("gt"), meta.get("lt")
    bad = (lo is not None and value < lo) or (hi is not None and value > hi) \
        or (glo is not None and value <= glo) or (lhi is not None and value >= lhi)
    if bad:
        raise ConfigError(f"{key}: {value!r} is out of range (allowed: {_range_text(meta)})")


def _range_text(meta: Mapping[str, Any]) -> str:
    """A field's bounds as text (``>= 1 and <= 1000``), empty without bounds."""
    parts = [f"{op} {_bound(meta[k])}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
             if meta.get(k) is not None]
    return " and ".join(parts)


def allowed_text(key: str) -> str:
    """What a config key accepts: its registry's names, its range, or its type."""
    section, _, name = key.rpartition(".")
    cls = RunConfig if not section else typing.get_type_hints(RunConfig)[section]
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    choices = f.metadata.get("choices")
    if choices is not None:
        return ", ".join(choices() if callable(choices) else choices)
    rng = _range_text(f.metadata)
    tp = _field_type(key)
    kinds = {int: "integer", float: "number", bool: "true/false", str: "text", type(None): "null"}
    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    kind = " or ".join(kinds.get(a, "mapping" if typing.get_origin(a) in (dict, Mapping) else
                                 "list" if typing.get_origin(a) in (tuple, list) else str(a)) for a in members)
    return kind + (f", {rng}" if rng else "")


def _build(cls: type, data: Any, path: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys, types and bounds recursively."""
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            key = f"{path}.{k}" if path else str(k)
            close = difflib.get_close_matches(str(k), fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{key}: unknown key (allowed: {', '.join(fields)}){hint}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data.get(name), key)
        elif name in data:
            value = _coerce(data[name], tp, key)
            _check_bounds(value, f.metadata, key)
            kwargs[name] = value
    return cls(**kwargs)


def check_name(value: Any, key: str, what: str = "run name") -> str:
    """``value`` if it can name one folder (letters, digits, '.', '_', '-'; no leading dot or dash, so
    never ``..`` or a path); else a ConfigError naming ``key``."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise ConfigError(f"{key}: {value!r} is not a valid {what} (letters, digits, '.', '_', '-'; "
                          "it names a folder)")
    return value


def _resolve(cfg: RunConfig) -> RunConfig:
    """Cross-field checks and defaults that depend on other fields; canonical registry names."""
    # Imported here, not at the top, for the reason given in _registry_names.
    from initlab.nn.activations import ACTIVATIONS
    from initlab.nn.initializers import BIAS_INITIALIZERS, INITIALIZERS, resolve_args

    m, t = cfg.model, cfg.train
    check_name(cfg.name, "name")
    init = INITIALIZERS.canonical(m.init)
    init_args = resolve_args(INITIALIZERS[init], m.init_args, "model.init_args", f"model.init {init!r}")
    bias_args = resolve_args(BIAS_INITIALIZERS[m.bias_init], m.bias_init_args, "model.bias_init_args",
                             f"model.bias_init {m.bias_init!r}")
    if INITIALIZERS[init].bias is not None and m.bias_init != "zeros":
        how = " (set them through model.init_args)" if "sigma_b" in init_args else ""
        raise ConfigError(f"model.bias_init: {m.bias_init!r} conflicts with init {init!r}, which sets its own "
                          f"biases{how}")
    if m.dropout_kind != "standard" and m.dropout == 0:
        raise ConfigError(f"model.dropout_kind: {m.dropout_kind!r} has no effect with model.dropout: 0 "
                          "(set model.dropout to a rate)")
    if m.residual and m.depth % 2 == 0:
        raise ConfigError(f"model.depth: {m.depth} with model.residual: true must be odd (1 input layer + 2 layers "
                          f"per block); use {m.depth - 1} or {m.depth + 1}")
    needs = INITIALIZERS[init].residual
    if needs is not None and needs != m.residual:
        raise ConfigError(f"model.init: {init!r} {'needs' if needs else 'does not support'} a residual network "
                          f"(model.residual: {str(needs).lower()})")
    if t.epochs is not None and t.steps is not None:
        raise ConfigError(f"train.steps: {t.steps!r} given together with train.epochs: {t.epochs!r} (set one of them)")
    model = dataclasses.replace(m, init=init, init_args=init_args, bias_init_args=bias_args,
                                activation=ACTIVATIONS.canonical(m.activation), shaping_args=_check_shaping(m))
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
            raise ConfigError(f"train.target_range: {list(train.target_range)} given together with train.target_scale: "
                              f"{train.target_scale!r} (set one of them: a scale s is the range [-s, s])")
    if "pre_delta_abs_mean" in log.stats and log.stats_on != "probe":
        raise ConfigError("log.stats: pre_delta_abs_mean compares the probe's pre-activations with their values at "
                          f"step 0, so it needs log.stats_on: probe (not {log.stats_on!r})")
    if 0 < log.histograms < MIN_HISTOGRAM_BINS:
        raise ConfigError(f"log.histograms: {log.histograms} bins are too few to tell the activation's saturated edges "
                          f"from the rest; use 0 (off) or at least {MIN_HISTOGRAM_BINS} (e.g. 64)")
    if log.jacobian > cfg.data.probe_size:
        raise ConfigError(f"log.jacobian: {log.jacobian} examples, but the probe batch has data.probe_size: "
                          f"{cfg.data.probe_size}")
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
            raise ConfigError(f"{key}: {value!r} with model.shaping: {m.shaping!r}; kernel shaping makes a plain MLP "
                              "trainable without normalization or skip connections, and its C map is that of a "
                              f"plain net (set {key}: {str(plain).lower()} or model.shaping: none)")
    shape_for(m.activation, m.shaping, args, m.depth)
    return args


def _check_shaping_weights(m: ModelConfig) -> None:
    """Kernel shaping is derived for weights of σ_w² = 1 (``initlab.theory.shaping.check_weights``)."""
    from initlab.theory.shaping import check_weights

    check_weights(m.shaping, m.init, m.init_args, m.width)


def _check_reparam(m: ModelConfig) -> None:
    """What a weight reparameterization can represent and what its data-dependent init needs."""
    if m.init == "weightnorm_data" and m.reparam != "weightnorm":
        raise ConfigError(f"model.init: 'weightnorm_data' sets weight norm's lengths g from data; it needs "
                          f"model.reparam: weightnorm (not {m.reparam!r})")
    if m.reparam == "none":
        return
    if m.parameterization != "standard":
        raise ConfigError(f"model.reparam: {m.reparam!r} fixes each unit's weight norm itself, so parameterization "
                          f"{m.parameterization!r}'s width-dependent init has no effect; use parameterization: "
                          "standard")
    if m.init == "fixup":
        raise ConfigError(f"model.init: 'fixup' sets weights to zero, which model.reparam: {m.reparam!r} cannot "
                          "represent (a zero direction has no norm); use another init or model.reparam: none")
    if m.reparam == "scaled_ws" and m.shaping != "none":
        raise ConfigError(f"model.reparam: 'scaled_ws' with model.shaping: {m.shaping!r}: both set the activation's "
                          "scale (the gain γ and the shaping's transformation); use one of them")
    if m.init == "weightnorm_data" and m.norm != "none":
        raise ConfigError(f"model.norm: {m.norm!r} with model.init: 'weightnorm_data': the data-dependent init sets "
                          "every pre-activation to mean 0, variance 1, which the normalization then redoes; use "
                          "model.norm: none or model.init: another initializer")


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
        raise ConfigError(f"model.init: {m.init!r} does not apply under parameterization {m.parameterization!r}, which "
                          f"sets each layer's variance itself and takes the shape of a fan-in initializer ({laws})")
    if p.needs_base and m.base_width is None:
        raise ConfigError(f"model.base_width: parameterization {m.parameterization!r} needs the width at which it "
                          f"equals standard (e.g. model.base_width: {min(m.width, 128)})")
    if m.parameterization != "standard" and t.max_norm is not None:
        raise ConfigError(f"train.max_norm: bounds the stored weights, which parameterization {m.parameterization!r} "
                          "multiplies in the forward pass; use parameterization: standard, or remove it")


def _resolve_loss_scale(m: ModelConfig, t: TrainConfig) -> TrainConfig:
    """``train.loss_scale`` checked against the format: a number or a word, and only where the
    format's range is narrower than float32's or equal to it but the user studies it (bfloat16)."""
    from initlab.nn.loss_scale import from_config

    scaling = from_config(t.loss_scale, t.loss_scale_init, t.loss_scale_period)  # ConfigError on a bad value
    if scaling.active and m.dtype in ("float32", "float64"):
        raise ConfigError(f"train.loss_scale: {t.loss_scale!r} does nothing with model.dtype: {m.dtype!r} (loss "
                          "scaling keeps small gradients above float16's smallest normal number); use model.dtype: "
                          "float16 or bfloat16, or remove it")
    from initlab.nn.optimizers import SECOND_MOMENT

    if m.precision == "pure" and m.dtype == "float16" and t.optimizer in SECOND_MOMENT:
        raise ConfigError(f"model.precision: 'pure' with model.dtype: 'float16' and train.optimizer: {t.optimizer!r}: "
                          "its second-moment state and eps (1e-8) are 0 in float16, so its first update is 0/0; "
                          "use precision: mixed, bfloat16, or sgd/momentum/nesterov")
    return t if isinstance(t.loss_scale, str) else dataclasses.replace(t, loss_scale=float(t.loss_scale))


# Fields that only some choices read: setting one for another choice would silently do nothing.
ONLY_FOR = {
    "train.momentum": ("train.optimizer", ("momentum", "nesterov", "rmsprop")),
    "train.warmup_steps": ("train.schedule", ("warmup_cosine",)),
    "train.target_scale": ("train.loss", ("mse",)),
    "train.target_range": ("train.loss", ("mse",)),
    "data.range": ("data.preprocess", ("minmax",)),
    "model.branch_scale_init": ("model.residual", (True,)),
    "data.whiten_eps": ("data.preprocess", ("whiten",)),
    "train.loss_scale_init": ("train.loss_scale", ("dynamic",)),
    "train.loss_scale_period": ("train.loss_scale", ("dynamic",)),
    "model.base_width": ("model.parameterization", ("mup",)),
    "model.zero_readout": ("model.parameterization", ("mup",)),
    "model.shaping_args": ("model.shaping", ("tat", "dks")),
}


def _check_used(cfg: RunConfig, data: Any) -> None:
    """Reject a field set away from its default where the configured choice ignores it."""
    for key, (owner, users) in ONLY_FOR.items():
        section, leaf = key.split(".")
        value = getattr(getattr(cfg, section), leaf)
        default = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                   for f in dataclasses.fields(type(getattr(cfg, section)))}[leaf]
        choice = getattr(getattr(cfg, owner.split(".")[0]), owner.split(".")[1])
        # A saved config.yaml holds every field at its default; only a value set on purpose counts.
        if value != default and choice not in users:
            raise ConfigError(f"{key}: {value!r} has no effect with {owner}: {choice!r} "
                              f"(used by {', '.join(map(str, users))}); remove it or change {owner}")


def from_dict(data: Any) -> RunConfig:
    """A validated, resolved RunConfig from a plain mapping (as parsed from YAML)."""
    cfg = _build(RunConfig, data, "")
    _check_used(cfg, data)
    return _resolve(cfg)


def _field_type(dotted: str) -> Any:
    """The declared type of a dotted key, or None where the key is not a declared field."""
    cls: Any = RunConfig
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        tp = hints[part]
        if dataclasses.is_dataclass(tp):
            cls = tp
            continue
        return tp if i == len(parts) - 1 else dict
    return None


# Keys of which a config sets at most one: an override of one clears the other.
EXCLUSIVE = (("train.epochs", "train.steps"),)


def set_value(data: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted ``key`` in nested plain ``data`` (creating sections). Setting one of a pair in
    EXCLUSIVE (``train.steps``) removes the other (``train.epochs``)."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value
    for pair in EXCLUSIVE:
        for other in pair:
            if key in pair and other != key:
                section, _, leaf = other.rpartition(".")
                parent = data.get(section) if section else data
                if isinstance(parent, dict):
                    parent.pop(leaf, None)


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``data`` with ``KEY=VALUE`` overrides applied (dotted keys, values typed like the
    field: a string field keeps the text as written, other fields parse it as YAML)."""
    out = copy.deepcopy(dict(data or {}))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.depth=50")
        tp = _field_type(key)
        set_value(out, key, raw if tp is str else _parse_scalar(raw, key))
    return out


# Limits on what a config file may make this process do: its size, how deep it nests and how many
# nodes it expands to once aliases are followed (a "billion laughs" file of nested aliases is a few
# hundred bytes and gigabytes once expanded).
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000


class _Loader(yaml.SafeLoader):
    """YAML with the YAML 1.2 float rule (PyYAML, YAML 1.1, reads ``1e-3`` as a string), nesting
    at most ``MAX_YAML_DEPTH`` deep and expanding (aliases followed) to at most ``MAX_YAML_NODES``
    nodes; past either, a ConfigError before anything is built."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth, self._nodes, self._sizes, self._open = 0, 0, {}, []

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            if anchor in self._open:
                raise ConfigError(f"the alias *{anchor} is inside the value it names{self._where()}")
            self._count(self._expanded_size(self.anchors[anchor]) if anchor in self.anchors else 1)
            return super().compose_node(parent, index)
        self._count(1)
        anchor = getattr(self.peek_event(), "anchor", None)
        self._depth += 1
        self._open.append(anchor)
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise ConfigError(f"nested deeper than {MAX_YAML_DEPTH} levels{self._where()}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.pop()

    def _count(self, n: int) -> None:
        self._nodes += n
        if self._nodes > MAX_YAML_NODES:
            raise ConfigError(f"aliases expand to more than {MAX_YAML_NODES:,} values{self._where()} "
                              "(a YAML alias bomb?)")

    def _expanded_size(self, node: yaml.Node) -> int:
        """Nodes in ``node`` with every alias inside it expanded (memoized)."""
        key = id(node)
        if key not in self._sizes:
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = node.value
            else:
                children = []
            self._sizes[key] = 1 + sum(self._expanded_size(c) for c in children)
        return self._sizes[key]

    def _where(self) -> str:
        mark = self.peek_event().start_mark if self.check_event() else None
        return f" at line {mark.line + 1}" if mark else ""

    def construct_mapping(self, node, deep=False):
        """A key given twice in one mapping is a ConfigError naming both lines (PyYAML lets the last win)."""
        if isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then an override is YAML's way
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    if key in lines:
                        raise ConfigError(f"{key!r} is given twice in one mapping (lines {lines[key]} and {line}); "
                                          "keep one")
                    lines[key] = line
                except TypeError:
                    continue  # an unhashable key: refused when the mapping is built
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """YAML text as data, within ``_Loader``'s limits (ConfigError past them, yaml.YAMLError if malformed)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _parse_scalar(raw: str, key: str) -> Any:
    try:
        return parse_yaml(raw) if raw.strip() else None
    except ConfigError as e:
        raise ConfigError(f"--set {key}: {e}") from None
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: could not parse {raw!r}") from None


# Top-level blocks that make a file a sweep (see initlab.runfolder.sweeps).
SWEEP_KEYS = ("sweep", "zip", "seeds")


def load(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read, override and validate a YAML run config; an empty file is a ConfigError (it would
    train every default without a word)."""
    data = read_yaml(path)
    if not data and not list(overrides):
        raise ConfigError(f"{path}: empty, so every default would apply (one epoch of a small MLP on MNIST); "
                          "write the keys to set (`initlab config keys` lists them), e.g. `name: baseline`")
    found = [k for k in SWEEP_KEYS if k in data]
    if found:
        raise ConfigError(f"{found[0]}: {path} describes a sweep; run it with `initlab sweep {path}`")
    return from_dict(apply_overrides(data, overrides))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in ``path``; ConfigError if it is missing, unreadable or not a mapping."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a folder, not a config file") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config ({e.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: larger than {MAX_CONFIG_BYTES >> 20} MiB; a config is a short YAML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                          "a config is a YAML file") from None
    try:
        data = parse_yaml(text)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{p}: {problem}{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections (name, seed, data, model, train, log)")
    return data


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain data (what config.yaml holds)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML, sections in declaration order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def is_default_stats(stats: Sequence[str] | None) -> bool:
    """Whether ``log.stats`` is the default selection: absent (a run from before the key existed),
    the statistics every run computed then, or today's defaults. The statistics added to the
    defaults since do not change a run's numbers, so all three are one configuration."""
    return stats is None or tuple(stats) in (STATS_BEFORE_LOG_STATS, tuple(_stat_names("default_names")))


# Run folders are named <name>-<first HASH_DIGITS hex digits of config_digest>. 8 digits (32 bits)
# collided within a 100 × 100 × 10 grid; 16 (64 bits) put a collision past 10⁹ configs, and a folder
# is still checked against its stored config before it counts as a config's run. Folders made with
# 8 digits keep their names (``storage.run_dir_for`` finds them by the same digest's prefix).
HASH_DIGITS = 16
LEGACY_HASH_DIGITS = 8


def config_digest(cfg: RunConfig) -> str:
    """The SHA-256 (64 hex digits) of everything that can change a run's numbers (not log.out)."""
    d = to_dict(cfg)
    d["log"].pop("out")
    d["log"].pop("save_params")  # what is kept of a run, not what it computes
    d["log"].pop("checkpoint_every")
    if is_default_stats(d["log"]["stats"]):
        # run folders keep the names they had before log.stats existed, and before the statistics
        # added since (which do not change a run's numbers) were among the defaults
        d["log"].pop("stats")
    for key, default in ADDED_LATER.items():
        section, name = key.split(".")
        if d[section].get(name) == default:
            d[section].pop(name)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def config_hash(cfg: RunConfig) -> str:
    """The run's identity in folder names, locks and indexes: ``config_digest``'s first 16 digits."""
    return config_digest(cfg)[:HASH_DIGITS]


def describe_fields(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted key, help, default) for every field: the reference table in the README and --help."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(describe_fields(hints[f.name], key + "."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((key, f.metadata.get("help", ""), default))
    return rows
