"""Run configuration: the sections as frozen dataclasses, and the registry facts their fields read.

Every field carries its help text and its allowed values. Validation happens at load time, before
anything compiles: unknown keys, wrong types, out-of-range values and unknown registry names each
raise a one-line ConfigError naming the dotted key, the value given and what is allowed. The
registries' facts (their names, the config keys an entry reads, its arguments, a number format's
width) are read from the registries when a config is validated, through the one lazy bridge
(``_registries``); help texts that list registry facts are generated from them.

Reading files is ``initlab.config.files``, the generic checks ``initlab.config.validation``, the
checks across fields (``from_dict``) ``initlab.config.checks``, old configs and the config hash
``initlab.config.migrations``.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from initlab.config.validation import field_help, range_text, spec

# JAX's PRNGKey(seed) keeps a seed's low 32 bits: a larger seed would silently be another one's run.
MAX_SEED = 2**32 - 1


def _registries() -> types.ModuleType:
    """The ``initlab`` package with every registry module loaded, imported when a config is validated
    rather than when this module loads: the registries import jax, which loading a config must not
    (the CLI sets JAX's cache options before jax loads), and they sit beside or above
    ``initlab.config`` (this is the lazy bridge that pyproject.toml's import contract names)."""
    import initlab.data.datasets
    import initlab.nn.activations
    import initlab.nn.formats
    import initlab.nn.initializers
    import initlab.nn.loss_scale
    import initlab.nn.normalizations
    import initlab.nn.optimizers
    import initlab.nn.parameterizations
    import initlab.nn.regularizers
    import initlab.nn.reparams
    import initlab.stats.statistics
    import initlab.theory.shaping

    return initlab


def _stat_names(fn: str) -> list[str]:
    """Names from the statistics registry (``default_names``, ``signal_names`` or ``names``: all)."""
    return list(getattr(_registries().stats.statistics, fn)())


def default_stat_eras() -> tuple[tuple[str, ...], ...]:
    """Each era's default statistics, oldest first, today's last (``initlab.stats.statistics.default_eras``)."""
    return _registries().stats.statistics.default_eras()


def _registry_names(pick: Callable[[types.ModuleType], Any]) -> Callable[[], list[str]]:
    """The names (canonical, then aliases) of the registry ``pick(initlab)`` returns, e.g.
    ``lambda pkg: pkg.nn.initializers.INITIALIZERS``, read when a config is validated."""
    return lambda: pick(_registries()).all_names()


def _words(names: list[str], last: str = "or") -> str:
    """``a, b, or c`` (``a or b`` for two)."""
    return f" {last} ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])}, {last} {names[-1]}"


def _args_help(pick: Callable[[types.ModuleType], Any], what: str) -> Callable[[], str]:
    """A help text naming the arguments the entries of a registry declare (``Entry.args``)."""

    def text() -> str:
        entries = pick(_registries())
        per_entry = "; ".join(
            f"{name}: {', '.join(f'{k}, default {v:g}' for k, v in e.args.items())}"
            for name, e in entries.items()
            if getattr(e, "args", None)
        )
        return f"arguments of the {what} ({per_entry or 'none takes any'})"

    return text


def _arg_names_help(pick: Callable[[types.ModuleType], Any], what: str) -> Callable[[], str]:
    """A help text listing every argument name the entries of a registry declare, in registry order."""

    def text() -> str:
        names: list[str] = []
        for e in pick(_registries()).values():
            names += [k for k in e.args if k not in names]
        return f"arguments of the {what} ({', '.join(names)})"

    return text


def _formats() -> Any:
    """The number-format registry (``initlab.nn.formats.FORMATS``)."""
    return _registries().nn.formats.FORMATS


def _narrow() -> list[str]:
    """The formats narrower than float32, where loss scaling applies (``initlab.nn.formats.narrow_names``)."""
    return _registries().nn.formats.narrow_names()


def _fan_in_help(text: str) -> Callable[[], str]:
    """``text``, then which parameterizations take only fan-in initializers, and those initializers."""

    def help_text() -> str:
        pkg = _registries()
        needs = [n for n, p in pkg.nn.parameterizations.PARAMETERIZATIONS.items() if p.needs_law]
        laws = [n for n, e in pkg.nn.initializers.INITIALIZERS.items() if e.law is not None]
        return f"{text}{' and '.join(needs)} take the fan-in initializers: {', '.join(laws)}"

    return help_text


def _only_help(key: str, text: str) -> Callable[[], str]:
    """``text`` after the choices that read ``key`` (``mup only: ...``), from ``only_for``."""
    return lambda: f"{' or '.join(map(str, only_for()[key][1]))} only: {text}"


@dataclass(frozen=True)
class DataConfig:
    """Where inputs come from and how they are preprocessed."""

    dataset: str = spec(
        "mnist",
        "dataset: mnist, or gaussian (N(0,1) inputs, labels from a fixed random teacher)",
        choices=_registry_names(lambda pkg: pkg.data.datasets.DATASETS),
    )
    preprocess: str = spec(
        "standardize",
        "none (pixels/255), center (zero mean per input), standardize (zero mean "
        "per input, unit variance on average; Efficient BackProp), whiten (ZCA: decorrelated "
        "inputs), minmax (each input mapped linearly from its training range onto data.range)",
        choices=_registry_names(lambda pkg: pkg.data.datasets.PREPROCESSORS),
    )
    range: tuple[float, ...] = spec(
        help="minmax only: the [low, high] each input is mapped onto (Efficient BackProp "
        "§4.3: inputs inside the nonlinearity's quasilinear range; [-0.5, 0.5] for tanh); "
        "an input constant on the training set goes to the middle",
        factory=lambda: (-0.5, 0.5),
    )
    whiten_eps: float = spec(
        0.1,
        "whiten only: epsilon added to the covariance eigenvalues before the inverse square "
        "root (damps the near-constant pixel directions)",
        gt=0,
    )
    input_scale: float = spec(
        1.0,
        "multiply the preprocessed inputs by this, e.g. to start a network at its "
        "mean-field fixed point (q⁰ = q*: 0.214 ≈ √0.0457 for tanh at σ_w² 1.086, σ_b² 1e-4)",
        gt=0,
    )
    train_size: int | None = spec(None, "use only the first N training examples (default: all; gaussian: 10000)", ge=1)
    test_size: int | None = spec(None, "use only the first N test examples (default: all; gaussian: 2000)", ge=1)
    probe_size: int = spec(
        512,
        "size of the fixed training batch (the probe) the per-layer statistics are computed on "
        "with log.stats_on: probe, and theory's input variance q⁰ is measured on",
        ge=2,
    )
    input_dim: int = spec(784, "gaussian only: input dimension", ge=1)
    num_classes: int = spec(10, "gaussian only: number of classes of the teacher", ge=2)
    teacher_seed: int = spec(0, "gaussian only: seed of the inputs and the teacher network", ge=0, le=MAX_SEED)


@dataclass(frozen=True)
class ModelConfig:
    """The MLP: depth × width hidden layers, then a linear output layer."""

    depth: int = spec(3, "number of hidden layers", ge=1, le=1000)
    width: int = spec(256, "units per hidden layer", ge=1, le=65536)
    activation: str = spec(
        "relu", "nonlinearity of the hidden layers", choices=_registry_names(lambda pkg: pkg.nn.activations.ACTIVATIONS)
    )
    init: str = spec(
        "he_normal",
        "weight initializer of every layer",
        choices=_registry_names(lambda pkg: pkg.nn.initializers.INITIALIZERS),
    )
    init_args: dict[str, float] = spec(
        help=_arg_names_help(lambda pkg: pkg.nn.initializers.INITIALIZERS, "initializer"), factory=dict
    )
    bias_init: str = spec(
        "zeros",
        "bias initializer (mean_field draws its own biases)",
        choices=_registry_names(lambda pkg: pkg.nn.initializers.BIAS_INITIALIZERS),
    )
    bias_init_args: dict[str, float] = spec(
        help=_arg_names_help(lambda pkg: pkg.nn.initializers.BIAS_INITIALIZERS, "bias initializer"), factory=dict
    )
    norm: str = spec(
        "none",
        "normalization of every hidden layer",
        choices=_registry_names(lambda pkg: pkg.nn.normalizations.NORMALIZATIONS),
    )
    # Written to config.yaml only when set: the files of runs from before it keep their bytes.
    norm_args: dict[str, float] = spec(
        help=_args_help(lambda pkg: pkg.nn.normalizations.NORMALIZATIONS, "normalization"),
        factory=dict,
        omit_default=True,
    )
    norm_position: str = spec(
        "pre",
        "pre: normalise the pre-activation, before the nonlinearity (Ioffe & Szegedy); post: normalise the activation",
        choices=("pre", "post"),
    )
    norm_eps: float = spec(1e-5, "epsilon added to the variance in normalization", gt=0)
    bn_momentum: float = spec(0.9, "batch norm running-average momentum", ge=0, lt=1)
    residual: bool = spec(
        False,
        "residual MLP: after the first hidden layer, blocks of two layers with a skip "
        "connection around them (depth must then be odd: 1 + 2 × blocks)",
    )
    branch_scale_init: float = spec(
        1.0,
        "residual only: the initial value of each residual branch's learned scalar "
        "multiplier m (h' = φ(h + m·branch)); 0 is ReZero (Bachlechner et al. 2020) and "
        "SkipInit (De & Smith 2020): every block the identity at init",
        ge=0,
    )
    dropout: float = spec(0.0, "dropout rate of every hidden layer's output during training (0: off)", ge=0, lt=1)
    dropout_kind: str = spec(
        "standard",
        "standard (inverted dropout; Srivastava et al. 2014) or alpha "
        "(alpha-dropout for SELU nets; Klambauer et al. 2017)",
        choices=_registry_names(lambda pkg: pkg.nn.regularizers.DROPOUTS),
    )
    dtype: str = spec(
        "float32",
        lambda: (
            "number format of the forward and backward pass: "
            + _words([n + (" (JAX's x64 mode, for that run only)" if f.x64 else "") for n, f in _formats().items()])
            + ". Normalization statistics and the loss are computed in float32 (float64 for float64)"
        ),
        choices=_registry_names(lambda pkg: pkg.nn.formats.FORMATS),
    )
    precision: str = spec(
        "mixed",
        "mixed: float32 master parameters and optimizer state, cast to model.dtype for "
        "each pass (Micikevicius et al. 2018); pure: parameters and optimizer state in model.dtype "
        "itself",
        choices=("mixed", "pure"),
    )
    parameterization: str = spec(
        "standard",
        _fan_in_help(
            "how init variance, forward multiplier and learning rate of each layer scale with width: standard; ntk "
            "(unit-variance weights times σ_w/√fan_in in the forward pass; Jacot et al. 2018); mup (maximal update, "
            "Yang et al. 2022: every layer's activations move by O(1) whatever the width, so the best learning rate "
            "found at model.base_width transfers). "
        ),
        choices=_registry_names(lambda pkg: pkg.nn.parameterizations.PARAMETERIZATIONS),
    )
    base_width: int | None = spec(
        None,
        _only_help(
            "model.base_width",
            "the width n₀ at which mup equals the standard "
            "parameterization (its learning rates and init are relative to m = "
            "width / base_width)",
        ),
        ge=1,
        le=65536,
    )
    zero_readout: bool = spec(
        False,
        _only_help(
            "model.zero_readout",
            "the output layer's weights start at zero, as "
            "Yang et al. 2022 recommend (default: the initializer's draw, rescaled "
            "as mup does)",
        ),
    )
    shaping: str = spec(
        "none",
        "kernel shaping of model.activation for a deep plain MLP (no normalization, no skip "
        "connections): tat (Zhang et al. 2022: leaky ReLU whose negative slope makes the whole net's "
        "C map C_f(0) = eta) or dks (Martens et al. 2021: a smooth activation φ̂(x) = γ(φ(αx+β)+δ) "
        "with the whole net's C_f'(1) = zeta); pair with init orthogonal",
        choices=_registry_names(lambda pkg: pkg.theory.shaping.SHAPINGS),
    )
    shaping_args: dict[str, float] = spec(
        help=_args_help(lambda pkg: pkg.theory.shaping.SHAPINGS, "kernel shaping"), factory=dict
    )
    reparam: str = spec(
        "none",
        "how each layer's weight matrix is formed from the parameters training updates: none; "
        "weightnorm (Salimans & Kingma 2016: w = g·v/‖v‖ per unit, every layer; g starts at ‖v‖, so "
        "the net starts as model.init drew it, or is set from data with init: weightnorm_data); "
        "scaled_ws (Brock et al. 2021: each hidden unit's weights standardized to mean 0 and norm g, "
        "g = 1 at init, times the activation's gain γ = 1/√Var φ(z))",
        choices=_registry_names(lambda pkg: pkg.nn.reparams.REPARAMS),
    )


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer, schedule, loss and length of training."""

    optimizer: str = spec("adam", "optax optimizer", choices=_registry_names(lambda pkg: pkg.nn.optimizers.OPTIMIZERS))
    lr: float = spec(1e-3, "peak learning rate", gt=0)
    momentum: float = spec(0.9, "momentum of momentum, nesterov and rmsprop", ge=0, lt=1)
    schedule: str = spec(
        "constant", "learning-rate schedule", choices=_registry_names(lambda pkg: pkg.nn.optimizers.SCHEDULES)
    )
    warmup_steps: int = spec(0, "warm-up steps of the warmup_cosine schedule", ge=0)
    batch_size: int = spec(128, "examples per training step", ge=1)
    epochs: int | None = spec(None, "passes over the training set (default 1 when steps is not set)", ge=1)
    steps: int | None = spec(None, "training steps, instead of epochs (0: statistics at initialization only)", ge=0)
    weight_decay: float = spec(0.0, "weight decay (decoupled for adamw, added to the gradient otherwise)", ge=0)
    loss: str = spec(
        "cross_entropy",
        "cross_entropy, or mse on one-hot targets",
        choices=_registry_names(lambda pkg: pkg.nn.optimizers.LOSSES),
    )
    target_scale: float | None = spec(
        None,
        "mse only: targets +s for the true class and -s for the others, inside "
        "the activation's quasilinear range (LeCun et al. 1989: ±1 with scaled tanh); "
        "default one-hot 0/1",
        gt=0,
    )
    target_range: tuple[float, ...] | None = spec(
        None,
        "mse only: targets [low, high]: high for the true class, low for the others (e.g. [0.1, 0.9] for "
        "sigmoid outputs, which never reach 0 and 1; LeCun et al. 1998, Efficient BackProp §4.5); instead of "
        "train.target_scale",
    )
    max_norm: float | None = spec(
        None,
        "after every update, rescale each unit's incoming weight vector to norm at "
        "most this (Srebro & Shraibman 2005; Srivastava et al. 2014 use 3-4); default off",
        gt=0,
    )
    loss_scale: float | str = spec(
        "none",
        lambda: (
            f"loss scaling for narrow formats ({', '.join(_narrow())}): none, "
            "a constant scale (a number), or dynamic (grow ×2 after train.loss_scale_period "
            "finite steps, halve and skip the step on a non-finite gradient; Micikevicius et "
            "al. 2018)"
        ),
    )
    loss_scale_init: float = spec(32768.0, "dynamic loss scaling: the starting scale (2^15)", ge=1)
    loss_scale_period: int = spec(2000, "dynamic loss scaling: consecutive finite steps before the scale doubles", ge=1)

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
    stats_on: str = spec(
        "probe",
        "batch the per-layer statistics are taken on. probe: the fixed batch of "
        "data.probe_size training examples, in a forward/backward pass of its own (same "
        "examples at every log, dropout off). train_batch: the logged step's own mini-batch, "
        "gathered in that training step's forward/backward pass (nearly free; dropout masks "
        "included)",
        choices=("probe", "train_batch"),
    )
    stats: tuple[str, ...] = spec(
        help="per-layer statistics to compute (names from the statistics registry, initlab.stats.statistics; default: "
        "every default statistic). pre_var, act_var and grad_var are always computed: the divergence "
        "check reads them",
        factory=lambda: _stat_names("default_names"),
        choices=lambda: _stat_names("names"),
    )
    histograms: int = spec(
        0,
        "per-layer histograms of z, a, ∂ℓ/∂z and W, logged with the other statistics to "
        "histograms.csv: the number of linear bins of z and a (e.g. 64, at least "
        f"{MIN_HISTOGRAM_BINS}; gradients and weights get one bin per binary exponent). Default 0: "
        "off (they cost 4-5% of throughput "
        "with statistics every 10 steps)",
        ge=0,
        le=4096,
    )
    jacobian: int = spec(
        4,
        "probe examples whose input-output Jacobian ∂(last hidden layer)/∂(input) has its "
        "singular values taken at step 0 and at the end (jacobian.csv, summary.json); 0 turns it "
        "off. Not defined with batch norm, whose output mixes the examples",
        ge=0,
        le=256,
    )
    out: str = spec("runs", "folder the run directory is created in")
    checkpoint_every: int = spec(
        0,
        "steps between checkpoints of the whole training state (parameters, optimizer state, data order, the "
        "statistics so far) in the run folder's checkpoint.pkl, from which initlab run --resume continues a run "
        "that was killed; 0: none, except the one an interrupted run (Ctrl-C, SIGTERM) writes as it stops. "
        "Deleted when the run ends. Not part of the config hash",
        ge=0,
    )
    save_params: tuple[str, ...] = spec(
        ("init", "end"),
        "when to save the parameters (and batch norm's running statistics) into the run folder's "
        "params/ as .npz (names in the README): init (step 0, after any data-dependent init), end (the last "
        "step: the net summary.json's test accuracy is of); [] saves none. Not part of the config hash",
        choices=("init", "end"),
    )


@dataclass(frozen=True)
class RunConfig:
    """A whole run: what `initlab run` reads from YAML."""

    name: str = spec("run", "run name; the run folder is <log.out>/<name>-<config hash>")
    seed: int = spec(
        0,
        "seed of initialization, data order and everything random in training (0 to 2³² − 1: "
        "JAX's PRNGKey keeps 32 bits)",
        ge=0,
        le=MAX_SEED,
    )
    data: DataConfig = spec(help="data section", factory=DataConfig)
    model: ModelConfig = spec(help="model section", factory=ModelConfig)
    train: TrainConfig = spec(help="train section", factory=TrainConfig)
    log: LogConfig = spec(help="log section", factory=LogConfig)


def allowed_text(key: str) -> str:
    """What a config key accepts: its registry's names, its range, or its type."""
    section, _, name = key.rpartition(".")
    cls = RunConfig if not section else typing.get_type_hints(RunConfig)[section]
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    choices = f.metadata.get("choices")
    if choices is not None:
        return ", ".join(choices() if callable(choices) else choices)
    rng = range_text(f.metadata)
    tp = field_type(key)
    kinds = {int: "integer", float: "number", bool: "true/false", str: "text", type(None): "null"}
    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    kind = " or ".join(
        kinds.get(
            a,
            "mapping"
            if typing.get_origin(a) in (dict, Mapping)
            else "list"
            if typing.get_origin(a) in (tuple, list)
            else str(a),
        )
        for a in members
    )
    return kind + (f", {rng}" if rng else "")


# Fields that only some choices read, for choices whose registries do not declare it: the key → (the
# choice, the values of it that read the key). Setting one for another choice would silently do nothing.
_ONLY_FOR = {
    "train.momentum": ("train.optimizer", ("momentum", "nesterov", "rmsprop")),
    "train.warmup_steps": ("train.schedule", ("warmup_cosine",)),
    "train.target_scale": ("train.loss", ("mse",)),
    "train.target_range": ("train.loss", ("mse",)),
    "data.range": ("data.preprocess", ("minmax",)),
    "model.branch_scale_init": ("model.residual", (True,)),
    "data.whiten_eps": ("data.preprocess", ("whiten",)),
}

# Choices whose registry entries declare the config keys they read: ``Entry.uses`` (``Registry.using``),
# and the choice's ``<key>_args`` mapping for an entry with ``args``.
_DECLARING = {
    "train.loss_scale": lambda pkg: pkg.nn.loss_scale.KINDS,
    "model.parameterization": lambda pkg: pkg.nn.parameterizations.PARAMETERIZATIONS,
    "model.shaping": lambda pkg: pkg.theory.shaping.SHAPINGS,
    "model.norm": lambda pkg: pkg.nn.normalizations.NORMALIZATIONS,
}


def only_for() -> dict[str, tuple[str, tuple[Any, ...]]]:
    """Every field that only some choices read: the key → (the choice's key, the values that read it),
    from ``_ONLY_FOR`` and the registries' declarations (``_DECLARING``)."""
    table = dict(_ONLY_FOR)
    pkg = _registries()
    for owner, pick in _DECLARING.items():
        registry, args_key = pick(pkg), owner + "_args"
        keys = [k for e in registry.values() for k in getattr(e, "uses", ())]
        keys += [args_key] if any(getattr(e, "args", None) for e in registry.values()) else []
        for key in dict.fromkeys(keys):
            users = registry.using(key) if key != args_key else tuple(n for n, e in registry.items() if e.args)
            table[key] = (owner, users)
    return table


def field_type(dotted: str) -> Any:
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


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config (or a section) as plain data (what config.yaml holds): a field declared with
    ``spec(omit_default=True)`` is left out at its default, so the files of runs from before it
    keep their bytes."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif not (f.metadata.get("omit_default") and value == _default(f)):
            out[f.name] = copy.deepcopy(value)
    return out


def _default(f: dataclasses.Field) -> Any:
    """A field's default value."""
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def describe_fields(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted key, help, default) for every field: the reference table in the README and --help."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(describe_fields(hints[f.name], key + "."))
        else:
            rows.append((key, field_help(f), _default(f)))
    return rows
