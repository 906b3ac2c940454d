"""Tests for initlab.config: defaults, canonical names, the promised error messages, overrides,
loading YAML, hashing and round-tripping."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from initlab import config as C
from initlab.data.datasets import DATASETS, PREPROCESSORS
from initlab.errors import ConfigError, InitlabError
from initlab.nn.activations import ACTIVATIONS
from initlab.nn.initializers import BIAS_INITIALIZERS, INITIALIZERS
from initlab.nn.normalizations import NORMALIZATIONS
from initlab.nn.optimizers import LOSSES, OPTIMIZERS, SCHEDULES
from initlab.nn.regularizers import DROPOUTS
from initlab.nn.reparams import REPARAMS
from initlab.registry import Registry

import time

from typer.testing import CliRunner

from initlab.cli import app
from initlab.config import from_dict

from conftest import assert_lists_names
from conftest import small_run


def error(data) -> str:
    """The ConfigError message from_dict raises for ``data``."""
    with pytest.raises(ConfigError) as info:
        C.from_dict(data)
    msg = str(info.value)
    assert "\n" not in msg  # one line
    return msg


# ----------------------------------------------------------------------------------------------
# Defaults and resolution


def test_defaults():
    cfg = C.from_dict({})
    assert cfg == C.from_dict(None)
    assert cfg.name == "run" and cfg.seed == 0
    assert cfg.model == dataclasses.replace(C.ModelConfig(), init_args={}, bias_init_args={})
    assert cfg.model.depth == 3 and cfg.model.width == 256
    assert cfg.model.activation == "relu" and cfg.model.init == "he_normal"
    assert cfg.train.optimizer == "adam" and cfg.train.lr == 1e-3
    assert cfg.data.dataset == "mnist" and cfg.data.preprocess == "standardize"


def test_epochs_default_to_one_only_when_steps_unset():
    assert C.from_dict({}).train.epochs == 1
    assert C.from_dict({}).train.steps is None
    cfg = C.from_dict({"train": {"steps": 0}})
    assert cfg.train.steps == 0 and cfg.train.epochs is None
    assert C.from_dict({"train": {"epochs": 4}}).train.epochs == 4


def test_empty_sections_are_defaults():
    assert C.from_dict({"model": None, "train": {}}) == C.from_dict({})


def test_config_is_frozen():
    cfg = C.from_dict({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.depth = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("xavier_normal", "glorot_normal"),
        ("xavier_uniform", "glorot_uniform"),
        ("kaiming_normal", "he_normal"),
        ("kaiming_uniform", "he_uniform"),
    ],
)
def test_init_aliases_are_canonicalised(alias, canonical):
    assert C.from_dict({"model": {"init": alias}}).model.init == canonical


def test_activation_alias_is_canonicalised():
    assert C.from_dict({"model": {"activation": "silu"}}).model.activation == "swish"


def test_alias_and_canonical_name_give_the_same_config_and_hash():
    a = C.from_dict({"model": {"init": "xavier_normal", "activation": "silu"}})
    b = C.from_dict({"model": {"init": "glorot_normal", "activation": "swish"}})
    assert a == b and C.config_hash(a) == C.config_hash(b)


def test_init_args_defaults_filled_in():
    assert C.from_dict({"model": {"init": "orthogonal"}}).model.init_args == {"gain": 1.0}
    assert C.from_dict({"model": {"init": "mean_field", "init_args": {"sigma_w": 1.5}}}).model.init_args == {
        "sigma_w": 1.5,
        "sigma_b": 0.0,
    }
    assert C.from_dict({"model": {"bias_init": "normal"}}).model.bias_init_args == {"std": 0.01}
    # spelled out or left to the default: the same config
    spelled = C.from_dict({"model": {"init": "normal", "init_args": {"std": 0.01}}})
    assert spelled == C.from_dict({"model": {"init": "normal"}})


def test_int_accepted_where_float_wanted():
    cfg = C.from_dict({"train": {"lr": 1}, "model": {"init": "orthogonal", "init_args": {"gain": 2}}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.model.init_args == {"gain": 2.0} and isinstance(cfg.model.init_args["gain"], float)


def test_mean_field_with_zero_bias_init_is_fine():
    cfg = C.from_dict({"model": {"init": "mean_field", "init_args": {"sigma_b": 0.1}}})
    assert cfg.model.init_args["sigma_b"] == 0.1 and cfg.model.bias_init == "zeros"


def test_every_field_has_help():
    rows = C.describe_fields()
    assert len(rows) == len({key for key, _, _ in rows})
    assert {"model.depth", "train.lr", "data.probe_size", "log.out", "name"} <= {key for key, _, _ in rows}
    for key, help_text, _ in rows:
        assert help_text, key


# ----------------------------------------------------------------------------------------------
# Registry-backed fields: every name accepted, an unknown one rejected with the list.

REGISTRY_FIELDS = [
    ("model", "activation", ACTIVATIONS),
    ("model", "init", INITIALIZERS),
    ("model", "bias_init", BIAS_INITIALIZERS),
    ("model", "norm", NORMALIZATIONS),
    ("train", "optimizer", OPTIMIZERS),
    ("train", "schedule", SCHEDULES),
    ("train", "loss", LOSSES),
    ("data", "dataset", DATASETS),
    ("data", "preprocess", PREPROCESSORS),
    ("model", "dropout_kind", DROPOUTS),
    ("model", "reparam", REPARAMS),
]
ACCEPTED = [(s, k, reg, name) for s, k, reg in REGISTRY_FIELDS for name in reg.all_names()]
# Choices that only make sense together with another setting.
COMPANIONS = {
    ("model", "init", "fixup"): {"residual": True},
    ("model", "init", "weightnorm_data"): {"reparam": "weightnorm"},
    ("model", "dropout_kind", "alpha"): {"dropout": 0.1},
}


@pytest.mark.parametrize("section, key, registry, name", ACCEPTED, ids=[f"{s}.{k}={n}" for s, k, _, n in ACCEPTED])
def test_every_registry_name_is_accepted(section, key, registry, name):
    cfg = C.from_dict({section: {key: name, **COMPANIONS.get((section, key, name), {})}})
    got = getattr(getattr(cfg, section), key)
    assert registry.canonical(got) == registry.canonical(name)
    assert got in registry


@pytest.mark.parametrize("section, key, registry", REGISTRY_FIELDS, ids=[f"{s}.{k}" for s, k, _ in REGISTRY_FIELDS])
def test_unknown_registry_name(section, key, registry):
    msg = error({section: {key: "bogus_name"}})
    assert msg.startswith(f"{section}.{key}: ")
    assert "'bogus_name'" in msg
    assert_lists_names(msg, registry)


def test_unknown_activation_exact_message():
    names = ", ".join(ACTIVATIONS.all_names())
    assert error({"model": {"activation": "rellu"}}) == f"model.activation: 'rellu' is not one of {names}"


def test_stats_on_must_be_probe_or_train_batch():
    assert C.from_dict({}).log.stats_on == "probe"
    assert C.from_dict({"log": {"stats_on": "train_batch"}}).log.stats_on == "train_batch"
    assert error({"log": {"stats_on": "batch"}}) == "log.stats_on: 'batch' is not one of probe, train_batch"


def test_norm_position_must_be_pre_or_post():
    for ok in ("pre", "post"):
        assert C.from_dict({"model": {"norm_position": ok}}).model.norm_position == ok
    msg = error({"model": {"norm_position": "mid"}})
    assert "model.norm_position" in msg and "'mid'" in msg and "pre" in msg and "post" in msg


# ----------------------------------------------------------------------------------------------
# Keys, types and ranges


def test_unknown_top_level_key():
    msg = error({"modle": {}})
    assert msg.startswith("modle: unknown key")
    for allowed in ("name", "seed", "data", "model", "train", "log"):
        assert allowed in msg
    assert "did you mean 'model'" in msg


def test_unknown_nested_key_suggests_the_close_one():
    msg = error({"model": {"dpth": 10}})
    assert msg.startswith("model.dpth: unknown key")
    assert "depth" in msg and "width" in msg
    assert "did you mean 'depth'?" in msg


def test_unknown_key_without_close_match_has_no_suggestion():
    msg = error({"train": {"zzzzzz": 1}})
    assert "train.zzzzzz" in msg and "did you mean" not in msg


@pytest.mark.parametrize(
    "data, key, shown, expected",
    [
        ({"model": {"width": "abc"}}, "model.width", "'abc'", "integer"),
        ({"model": {"depth": True}}, "model.depth", "True", "integer"),
        ({"model": {"depth": 3.5}}, "model.depth", "3.5", "integer"),
        ({"train": {"lr": "fast"}}, "train.lr", "'fast'", "number"),
        ({"train": {"lr": False}}, "train.lr", "False", "number"),
        ({"name": 5}, "name", "5", "string"),
        ({"model": {"activation": 3}}, "model.activation", "3", "string"),
        ({"data": {"train_size": "all"}}, "data.train_size", "'all'", "integer"),
        ({"model": {"init_args": 3}}, "model.init_args", "3", "mapping"),
    ],
)
def test_wrong_type(data, key, shown, expected):
    msg = error(data)
    assert msg.startswith(f"{key}: ")
    assert shown in msg and expected in msg


@pytest.mark.parametrize(
    "data, key, shown, allowed",
    [
        ({"model": {"depth": 0}}, "model.depth", "0", ">= 1"),
        ({"model": {"depth": 1001}}, "model.depth", "1001", "<= 1000"),
        ({"model": {"width": 0}}, "model.width", "0", ">= 1"),
        ({"train": {"lr": 0}}, "train.lr", "0.0", "> 0"),
        ({"train": {"lr": -0.1}}, "train.lr", "-0.1", "> 0"),
        ({"train": {"momentum": 1.0}}, "train.momentum", "1.0", "< 1"),
        ({"model": {"bn_momentum": -0.1}}, "model.bn_momentum", "-0.1", ">= 0"),
        ({"model": {"norm_eps": 0}}, "model.norm_eps", "0.0", "> 0"),
        ({"data": {"probe_size": 1}}, "data.probe_size", "1", ">= 2"),
        ({"seed": -1}, "seed", "-1", ">= 0"),
        ({"seed": 2**32}, "seed", "4294967296", "<= 4294967295"),  # PRNGKey would keep the low 32 bits: seed 0
        ({"seed": 2**64}, "seed", "18446744073709551616", "<= 4294967295"),
        ({"data": {"dataset": "gaussian", "teacher_seed": 2**32}}, "data.teacher_seed", "4294967296", "<= 4294967295"),
        ({"train": {"steps": -1}}, "train.steps", "-1", ">= 0"),
        ({"train": {"epochs": 0}}, "train.epochs", "0", ">= 1"),
    ],
)
def test_out_of_range(data, key, shown, allowed):
    msg = error(data)
    assert msg.startswith(f"{key}: {shown} ")
    assert "out of range" in msg and allowed in msg


def test_the_largest_seed_is_accepted():
    assert C.from_dict({"seed": 2**32 - 1}).seed == 2**32 - 1


def test_depth_bounds_are_inclusive():
    assert C.from_dict({"model": {"depth": 1}}).model.depth == 1
    assert C.from_dict({"model": {"depth": 1000}}).model.depth == 1000


@pytest.mark.parametrize("data", [{"train": {"lr": float("nan")}}, {"model": {"norm_eps": float("nan")}}])
def test_nan_is_rejected(data):
    error(data)


@pytest.mark.parametrize("section", ["data", "model", "train", "log"])
def test_section_that_is_not_a_mapping(section):
    msg = error({section: [1, 2]})
    assert msg.startswith(f"{section}: ")
    assert "[1, 2]" in msg and "mapping" in msg


def test_top_level_not_a_mapping():
    msg = error([1, 2])
    assert "[1, 2]" in msg and "mapping" in msg


@pytest.mark.parametrize("name", ["a/b", "", ".hidden", "../up", "with space", "-dash"])
def test_invalid_run_name(name):
    msg = error({"name": name})
    assert msg.startswith("name: ")
    assert repr(name) in msg and "letters, digits" in msg


@pytest.mark.parametrize("name", ["run", "he-30", "sweep_1.v2", "123"])
def test_valid_run_names(name):
    assert C.from_dict({"name": name}).name == name


def test_init_args_unknown_argument():
    msg = error({"model": {"init": "orthogonal", "init_args": {"gian": 2.0}}})
    assert msg.startswith("model.init_args.gian: ")
    assert "gain" in msg


def test_init_args_for_initializer_without_arguments():
    msg = error({"model": {"init": "he_normal", "init_args": {"gain": 2.0}}})
    assert "model.init_args.gain" in msg and "none" in msg


def test_init_args_non_number():
    msg = error({"model": {"init": "orthogonal", "init_args": {"gain": "big"}}})
    assert "model.init_args.gain" in msg and "'big'" in msg and "number" in msg


def test_bias_init_args_unknown_argument():
    msg = error({"model": {"bias_init": "constant", "bias_init_args": {"std": 1.0}}})
    assert "model.bias_init_args.std" in msg and "value" in msg


@pytest.mark.parametrize("bias_init", [n for n in BIAS_INITIALIZERS if n != "zeros"])
def test_mean_field_conflicts_with_a_bias_init(bias_init):
    msg = error({"model": {"init": "mean_field", "bias_init": bias_init}})
    assert msg.startswith("model.bias_init: ")
    assert repr(bias_init) in msg and "mean_field" in msg and "model.init_args" in msg


def test_epochs_and_steps_both_set():
    msg = error({"train": {"epochs": 2, "steps": 5}})
    assert "train.steps" in msg and "train.epochs" in msg
    assert "5" in msg and "2" in msg and "one of them" in msg


def test_config_error_exit_code():
    assert ConfigError.exit_code == 2
    assert issubclass(ConfigError, InitlabError)
    with pytest.raises(ConfigError) as info:
        C.from_dict({"foo": 1})
    assert info.value.exit_code == 2


# ----------------------------------------------------------------------------------------------
# --set overrides


def test_override_int():
    out = C.apply_overrides({}, ["model.depth=50"])
    assert out == {"model": {"depth": 50}} and isinstance(out["model"]["depth"], int)
    assert C.from_dict(out).model.depth == 50


def test_override_string_field_keeps_text():
    out = C.apply_overrides({}, ["name=123", "model.activation=tanh"])
    assert out["name"] == "123" and out["model"]["activation"] == "tanh"
    assert C.from_dict(out).name == "123"


def test_override_float_with_dot():
    out = C.apply_overrides({}, ["train.lr=0.01"])
    assert out["train"]["lr"] == 0.01
    assert C.from_dict(out).train.lr == 0.01


def test_override_float_in_exponent_notation():
    out = C.apply_overrides({}, ["train.lr=1e-2"])
    assert out["train"]["lr"] == 0.01
    assert C.from_dict(out).train.lr == 0.01


def test_override_reaches_init_args_dict():
    out = C.apply_overrides({"model": {"init": "orthogonal"}}, ["model.init_args.gain=2"])
    assert out == {"model": {"init": "orthogonal", "init_args": {"gain": 2}}}
    assert C.from_dict(out).model.init_args == {"gain": 2.0}


def test_override_replaces_file_value_and_keeps_others():
    data = {"name": "x", "model": {"depth": 3, "width": 64}}
    out = C.apply_overrides(data, ["model.depth=10"])
    assert out == {"name": "x", "model": {"depth": 10, "width": 64}}
    assert data == {"name": "x", "model": {"depth": 3, "width": 64}}  # input not mutated


def test_override_null_clears_optional_field():
    out = C.apply_overrides({"data": {"train_size": 100}}, ["data.train_size=null"])
    assert out["data"]["train_size"] is None


@pytest.mark.parametrize("item", ["model.depth", "=5", ""])
def test_override_without_key_value_raises(item):
    with pytest.raises(ConfigError) as info:
        C.apply_overrides({}, [item])
    assert "KEY=VALUE" in str(info.value)


def test_override_into_a_scalar_raises():
    with pytest.raises(ConfigError) as info:
        C.apply_overrides({"model": {"depth": 3}}, ["model.depth.x=1"])
    assert "'depth'" in str(info.value) and "not a section" in str(info.value)


def test_override_steps_removes_file_epochs_and_vice_versa():
    out = C.apply_overrides({"train": {"epochs": 3, "lr": 0.1}}, ["train.steps=10"])
    assert out == {"train": {"steps": 10, "lr": 0.1}}
    cfg = C.from_dict(out)
    assert cfg.train.steps == 10 and cfg.train.epochs is None
    out = C.apply_overrides({"train": {"steps": 7}}, ["train.epochs=2"])
    assert out == {"train": {"epochs": 2}}


def test_override_of_unknown_key_is_caught_by_validation():
    out = C.apply_overrides({}, ["model.dpth=5"])
    with pytest.raises(ConfigError, match="did you mean 'depth'"):
        C.from_dict(out)


# ----------------------------------------------------------------------------------------------
# load()


def test_load_with_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: he\nmodel:\n  depth: 4\n  init: kaiming_normal\ntrain:\n  epochs: 2\n")
    cfg = C.load(path, ["train.steps=5", "model.width=32"])
    assert cfg.name == "he" and cfg.model.depth == 4 and cfg.model.width == 32
    assert cfg.model.init == "he_normal"
    assert cfg.train.steps == 5 and cfg.train.epochs is None


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        C.load(path)
    assert str(path) in str(info.value) and "no such" in str(info.value)


def test_load_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: run\nmodel:\n  depth: 3\n  width: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        C.load(path)
    msg = str(info.value)
    assert str(path) in msg
    assert re.search(r"line \d+", msg)


def test_load_invalid_yaml_line_number_is_right(tmp_path):
    path = tmp_path / "tab.yaml"
    path.write_text("name: run\nseed: 1\nmodel:\n\tdepth: 3\n")  # a tab on line 4
    with pytest.raises(ConfigError, match=r"line 4\b"):
        C.load(path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_load_non_mapping(tmp_path, text):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        C.load(path)
    assert str(path) in str(info.value) and "mapping" in str(info.value)


def test_load_a_directory(tmp_path):
    with pytest.raises(ConfigError):
        C.load(tmp_path)


def test_load_validates(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  activation: rellu\n")
    with pytest.raises(ConfigError, match="model.activation: 'rellu'"):
        C.load(path)


def test_load_exponent_notation_float(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 1e-3\n")
    assert C.load(path).train.lr == 1e-3


def test_load_date_value_is_a_config_error(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: 2024-01-01\n")
    with pytest.raises(ConfigError, match="name"):
        C.load(path)


# ----------------------------------------------------------------------------------------------
# Hash and YAML round trip


def test_config_hash_is_stable_and_short():
    h = C.config_hash(C.from_dict({}))
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    assert C.config_hash(C.from_dict({})) == h
    assert C.config_hash(C.from_dict({"model": {"depth": 3}})) == h  # default spelled out


BASE_MODEL = {"init": "normal", "bias_init": "constant", "dropout": 0.1}
MODEL_CHANGES = {
    "depth": 4,
    "width": 128,
    "activation": "tanh",
    "init": "uniform",
    "init_args": {"std": 0.5},
    "bias_init": "zeros",
    "bias_init_args": {"value": 0.1},
    "norm": "batchnorm",
    "norm_position": "post",
    "norm_eps": 1e-3,
    "bn_momentum": 0.99,
    "residual": True,
    "dropout": 0.2,
    "dropout_kind": "alpha",
    "dtype": "bfloat16",
    "precision": "pure",
    "parameterization": "ntk",
    "base_width": 128,
    "zero_readout": True,
    "branch_scale_init": 0.0,
    "shaping": "dks",
    "shaping_args": {"zeta": 2.0},
    "reparam": "weightnorm",
    "norm_args": {"gain": 2.0},
}
# Fields that only exist in the context of others (ntk and mup take a fan-in initializer; base_width
# and zero_readout are mup's).
MUP = {"init": "lecun_normal", "parameterization": "mup", "base_width": 64}
MODEL_CONTEXT = {
    "parameterization": {"init": "lecun_normal"},
    "base_width": MUP,
    "zero_readout": MUP,
    "branch_scale_init": {"residual": True, "depth": 5},
    "shaping": {"activation": "tanh", "depth": 10, "init": "orthogonal"},
    "shaping_args": {"activation": "tanh", "depth": 10, "shaping": "dks", "init": "orthogonal"},
    "norm_args": {"norm": "scalenorm"},
}  # a normalization with an argument (the fixture's)


def test_model_changes_cover_every_model_field():
    assert set(MODEL_CHANGES) == {f.name for f in dataclasses.fields(C.ModelConfig)}


@pytest.mark.parametrize("field", sorted(MODEL_CHANGES))
def test_config_hash_changes_with_every_model_field(field, scalenorm):
    base_model = {**BASE_MODEL, **MODEL_CONTEXT.get(field, {})}
    base = C.from_dict({"model": base_model})
    changed = C.from_dict({"model": {**base_model, field: MODEL_CHANGES[field]}})
    assert getattr(changed.model, field) != getattr(base.model, field)
    assert C.config_hash(changed) != C.config_hash(base)


@pytest.mark.parametrize(
    "data",
    [{"seed": 1}, {"name": "other"}, {"train": {"lr": 0.1}}, {"data": {"probe_size": 64}}, {"log": {"every": 10}}],
)
def test_config_hash_changes_with_other_fields(data):
    assert C.config_hash(C.from_dict(data)) != C.config_hash(C.from_dict({}))


def test_config_hash_ignores_log_out():
    assert C.config_hash(C.from_dict({"log": {"out": "elsewhere/runs"}})) == C.config_hash(C.from_dict({}))


@pytest.mark.parametrize(
    "data",
    [
        {},
        {
            "name": "123",
            "seed": 7,
            "model": {
                "init": "orthogonal",
                "init_args": {"gain": 1.5},
                "norm": "batchnorm",
                "activation": "silu",
                "norm_eps": 1e-7,
            },
        },
        {
            "model": {"init": "mean_field", "init_args": {"sigma_w": 1.76, "sigma_b": 0.05}, "bias_init": "zeros"},
            "train": {"steps": 0, "schedule": "warmup_cosine", "warmup_steps": 5, "lr": 3e-4},
        },
        {
            "data": {"dataset": "gaussian", "train_size": 100, "input_dim": 8},
            "model": {"bias_init": "constant", "bias_init_args": {"value": 0.1}},
        },
    ],
)
def test_to_yaml_round_trips(data):
    cfg = C.from_dict(data)
    text = C.to_yaml(cfg)
    again = C.from_dict(yaml.safe_load(text))
    assert again == cfg
    assert C.config_hash(again) == C.config_hash(cfg)
    assert list(yaml.safe_load(text)) == ["name", "seed", "data", "model", "train", "log"]


def test_to_dict_is_plain_data():
    d = C.to_dict(C.from_dict({}))
    assert d["model"]["depth"] == 3 and d["train"]["epochs"] == 1 and d["log"]["out"] == "runs"


@pytest.mark.parametrize(
    "train, message",
    [
        ({"optimizer": "sgd", "momentum": 0.5}, "train.momentum: 0.5 has no effect with train.optimizer: 'sgd'"),
        ({"optimizer": "adam", "momentum": 0.5}, "train.momentum: 0.5 has no effect"),
        ({"schedule": "cosine", "warmup_steps": 10}, "train.warmup_steps: 10 has no effect with train.schedule"),
        ({"lr": float("inf")}, "train.lr: inf is not a finite number"),
    ],
)
def test_settings_that_would_silently_do_nothing_are_rejected(train, message):
    with pytest.raises(ConfigError) as err:
        C.from_dict({"train": train})
    assert message in str(err.value)


def test_momentum_is_accepted_where_it_is_used():
    assert C.from_dict({"train": {"optimizer": "nesterov", "momentum": 0.5}}).train.momentum == 0.5
    assert C.from_dict({"train": {"schedule": "warmup_cosine", "warmup_steps": 5}}).train.warmup_steps == 5


def test_log_stats_from_the_command_line_and_its_hash():
    from initlab import config as C

    a = C.from_dict(C.apply_overrides({}, ["log.stats=w_norm,update_ratio"]))
    b = C.from_dict(C.apply_overrides({}, ["log.stats=[update_ratio, w_norm]"]))
    assert a.log.stats == b.log.stats == ("pre_var", "act_var", "grad_var", "w_norm", "update_ratio")
    # the default leaves run folders named as before log.stats existed; a selection is another run
    assert C.config_hash(C.from_dict({})) == "1f0be2badb0ba9be" != C.config_hash(a) == C.config_hash(b)


@pytest.mark.parametrize("model", [{"init": "lsuv"}, {"init": "layerwise_autoencoder"}, {"init": "mean_field"}])
def test_a_config_read_back_from_its_yaml_hashes_as_it_did(model):
    # default initializer arguments written as whole numbers (LSUV's batch_size 256) are floats once
    # resolved, as the same values read back from config.yaml are: a resumed sweep finds its runs
    cfg = C.from_dict({"model": model})
    again = C.from_dict(C.parse_yaml(C.to_yaml(cfg)))
    assert C.config_digest(again) == C.config_digest(cfg)
    assert all(isinstance(v, float) for v in cfg.model.init_args.values())


@pytest.mark.parametrize(
    "text, lines",
    [
        ("model: {depth: 2, depth: 3}\n", "lines 1 and 1"),
        ("model:\n  depth: 2\n  width: 8\n  depth: 3\n", "lines 2 and 4"),
        ("name: a\nmodel: {depth: 2}\nname: b\n", "lines 1 and 3"),
    ],
)
def test_a_key_given_twice_is_refused_with_its_lines(tmp_path, text, lines):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"is given twice in one mapping \\({lines}\\); keep one"):
        C.load(path)


def test_a_merge_key_may_still_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {depth: 2, width: 8}\nmodel:\n  <<: *b\n  depth: 4\n")
    assert C.read_yaml(path)["model"] == {"depth": 4, "width": 8}


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_config_is_refused_not_trained_with_every_default(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="empty, so every default would apply"):
        C.load(path)
    assert C.load(path, ["model.depth=2"]).model.depth == 2  # overrides say what to run


# -- hostile files: alias bombs, deep nesting, binary and huge files ---------------------------------


runner = CliRunner()
LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))
BOMB = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + LAUGHS


@pytest.mark.parametrize(
    "text, message",
    [
        (BOMB + "seed: *l8\n", "aliases expand to more than 100,000 values"),
        (BOMB + "name: *l8\n", "aliases expand to more than 100,000 values"),
        ("seed: &a [*a]\n", "the alias *a is inside the value it names"),  # PyYAML would build a cycle
        ("seed: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested deeper than 64 levels"),
    ],
)
def test_alias_bombs_and_deep_nesting_are_refused_at_load(tmp_path, text, message):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    start = time.monotonic()
    result = runner.invoke(app, ["run", str(path)])
    assert time.monotonic() - start < 5
    assert result.exit_code == 2 and message in result.output, result.output
    assert "internal error" not in result.output and len(result.output) < 400


def test_a_sweep_with_an_aliased_seed_list_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB.replace("lol", "1") + "name: s\nseeds: *l8\n")
    result = runner.invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 2 and "aliases expand" in result.output


def test_aliases_within_budget_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("model: &m {depth: 3, width: 16}\nname: ok\n")
    assert C.load(path).model.depth == 3


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe\x00binary", "not UTF-8 text (byte 0xff at offset 0)"),
        (b"seed: 1\n" + b"#" * (C.MAX_CONFIG_BYTES + 1), "larger than 1 MiB"),
    ],
)
def test_binary_and_huge_config_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and message in result.output and "internal error" not in result.output


def test_dev_zero_is_refused_without_reading_it_all():
    result = runner.invoke(app, ["run", "/dev/zero"])
    assert result.exit_code == 2 and "larger than 1 MiB" in result.output


def test_bad_histogram_and_jacobian_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="log.histograms"):
        from_dict({**small_run("h"), "log": {"histograms": -1}})
    with pytest.raises(ConfigError, match="log.jacobian: 100 examples, but the probe batch has data.probe_size: 64"):
        from_dict({**small_run("h"), "log": {"jacobian": 100}})


# ----------------------------------------------------------------------------------------------
# Adding one entry (docs/architecture.md, "How to add a registry entry"): each kind below is one
# registry entry, registered here for the test only; config validation, help texts, hashes, old
# configs and training follow from it with no other edit.


def scale_apply(params, state, x, train, settings):
    """Layer norm without centring times a fixed ``gain``: the trivial normalization with an argument."""
    import jax.numpy as jnp

    dtype, x = x.dtype, x.astype(jnp.promote_types(x.dtype, jnp.float32))
    y = x * jnp.reciprocal(jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + settings.eps))
    return (settings.arg("gain") * params["scale"] * y).astype(dtype), state


@pytest.fixture
def scalenorm(monkeypatch):
    """``model.norm: scalenorm`` with its argument ``gain`` (default 1, > 0), for this test only."""
    import initlab.nn.normalizations as N

    entry = N.Normalization(N._gain, N._nothing, scale_apply, args={"gain": 1.0}, rules={"gain": "positive"})
    monkeypatch.setattr(N, "NORMALIZATIONS", Registry("normalization", {**N.NORMALIZATIONS, "scalenorm": entry}))
    return entry


@pytest.mark.slow
def test_a_normalization_with_an_argument_is_one_entry(scalenorm):
    import numpy as np

    from initlab.data.datasets import load_dataset
    from initlab.runfolder.storage import RunRecorder
    from initlab.train.loop import train

    from conftest import tiny

    cfg = C.from_dict({"model": {"norm": "scalenorm"}})
    assert cfg.model.norm_args == {"gain": 1.0}  # resolved like model.init_args
    assert C.config_hash(C.from_dict({"model": {"norm": "scalenorm", "norm_args": {"gain": 2}}})) != C.config_hash(cfg)
    assert error({"model": {"norm": "scalenorm", "norm_args": {"gian": 2}}}) == (
        "model.norm_args.gian: not an argument of model.norm 'scalenorm' (its arguments: gain)"
    )
    assert error({"model": {"norm": "scalenorm", "norm_args": {"gain": -1}}}) == (
        "model.norm_args.gain: -1 is not allowed (expected a number > 0)"
    )
    assert error({"model": {"norm": "layernorm", "norm_args": {"gain": 2}}}).startswith(
        "model.norm_args: {'gain': 2} has no effect with model.norm: 'layernorm' (used by scalenorm)"
    )
    assert "scalenorm: gain, default 1" in dict((k, h) for k, h, _ in C.describe_fields())["model.norm_args"]
    assert "scalenorm" in C.allowed_text("model.norm")
    pre_var = {}
    for gain in (1.0, 3.0):
        run = tiny(model={"norm": "scalenorm", "norm_args": {"gain": gain}}, train={"steps": 2}, log={"every": 1})
        res = train(run, load_dataset(run.data), rec := RunRecorder())
        assert res.status == "completed" and np.isfinite(res.final["test_loss"])
        assert "norm_args" in C.to_dict(run)["model"]  # set, so written to config.yaml
        pre_var[gain] = rec.layer_rows[0]["pre_var"]  # step 0, layer 1
    assert pre_var[3.0] == pytest.approx(9 * pre_var[1.0], rel=1e-3)  # the argument reaches the layer


def test_a_config_without_norm_args_keeps_its_file_and_hash():
    cfg = C.from_dict({"model": {"norm": "layernorm"}})
    assert cfg.model.norm_args == {} and "norm_args" not in C.to_yaml(cfg)
    assert C.config_hash(C.from_dict(yaml.safe_load(C.to_yaml(cfg)))) == C.config_hash(cfg)


def test_a_parameterization_that_needs_base_width_is_one_entry(monkeypatch):
    import initlab.nn.parameterizations as P

    entry = dataclasses.replace(
        P.PARAMETERIZATIONS["standard"],
        doc="standard, relative to a base width",
        needs_base=True,
        uses=("model.base_width",),
    )
    monkeypatch.setattr(P, "PARAMETERIZATIONS", Registry("parameterization", {**P.PARAMETERIZATIONS, "based": entry}))
    assert error({"model": {"parameterization": "based"}}).startswith(
        "model.base_width: parameterization 'based' needs the width at which it equals standard"
    )
    cfg = C.from_dict({"model": {"parameterization": "based", "base_width": 64}})
    assert cfg.model.base_width == 64
    assert error({"model": {"parameterization": "based", "base_width": 64, "zero_readout": True}}).startswith(
        "model.zero_readout: True has no effect with model.parameterization: 'based' (used by mup)"
    )
    assert error({"model": {"base_width": 64}}).startswith(
        "model.base_width: 64 has no effect with model.parameterization: 'standard' (used by mup, based)"
    )
    helps = dict((k, h) for k, h, _ in C.describe_fields())
    assert helps["model.base_width"].startswith("mup or based only: ")


@pytest.mark.slow
def test_a_number_format_is_one_entry(monkeypatch):
    import numpy as np

    import initlab.nn.formats as F
    from initlab.data.datasets import load_dataset
    from initlab.runfolder.storage import RunRecorder
    from initlab.train.loop import train

    from conftest import tiny

    half = F.Format("IEEE 754 half precision under a name of its own", "float16")
    monkeypatch.setattr(F, "FORMATS", Registry("number format", {**F.FORMATS, "half": half}))
    assert half.narrow and half.wide_name == "float32" and F.narrow_names() == ["float16", "half", "bfloat16"]
    assert "half" in dict((k, h) for k, h, _ in C.describe_fields())["model.dtype"]
    assert C.from_dict({"model": {"dtype": "half"}, "train": {"loss_scale": "dynamic"}}).train.loss_scale == "dynamic"
    assert error({"train": {"loss_scale": 1024}}).endswith("use model.dtype: float16, half, or bfloat16, or remove it")
    assert error({"model": {"dtype": "half", "precision": "pure"}, "train": {"optimizer": "adam"}}).startswith(
        "model.precision: 'pure' with model.dtype: 'half' and train.optimizer: 'adam'"
    )
    cfg = tiny(model={"dtype": "half"}, train={"steps": 2, "loss_scale": "dynamic"}, log={"every": 1})
    res = train(cfg, load_dataset(cfg.data), rec := RunRecorder())  # the Jacobian's spectrum taken in float32
    assert res.status == "completed" and np.isfinite(res.final["test_loss"]) and rec.layer_rows


def test_a_default_statistic_is_one_entry_and_old_configs_keep_their_hash(monkeypatch):
    import jax.numpy as jnp

    import initlab.stats.statistics as S

    before = S.default_names()
    entry = S.Statistic("largest |a| of the layer", "forward", lambda f: jnp.max(jnp.abs(f.a)), default_since=2)
    monkeypatch.setattr(S, "STATISTICS", Registry("statistic", {**S.STATISTICS, "act_absmax": entry}))
    assert S.default_names() == (*before, "act_absmax") and S.default_eras()[-2] == before
    cfg = C.from_dict({})
    assert cfg.log.stats[-1] == "act_absmax"
    # every era's defaults are the default run: run folders keep their names
    for era in S.default_eras():
        assert C.config_hash(C.from_dict({"log": {"stats": list(era)}})) == C.config_hash(cfg) == "1f0be2badb0ba9be"
    assert C.migrate({"log.stats": list(before)})["log.stats"] == list(S.default_names())
    assert C.config_hash(C.from_dict({"log": {"stats": list(before[:-1])}})) != C.config_hash(cfg)


def test_migrations_are_ordered_fields_and_old_configs_keep_their_hash():
    assert [m.version for m in C.MIGRATIONS] == list(range(1, C.SCHEMA_VERSION + 1))
    keys = {k for k, _, _ in C.describe_fields()}
    assert all(m.key in keys for m in C.MIGRATIONS)
    cfg = C.from_dict({})
    stored = C.to_dict(cfg)
    for m in C.MIGRATIONS:  # a config written before every migration: none of the keys
        section, name = m.key.split(".")
        stored[section].pop(name, None)
    old = C.from_dict(stored)
    assert C.config_hash(old) == C.config_hash(cfg)
    flat = C.migrate({"model.depth": 3})
    assert all(k in flat for k in (m.key for m in C.MIGRATIONS)) and flat["model.norm_args"] == {}
