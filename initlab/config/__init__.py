"""Configuration: YAML → validated, frozen dataclasses (``schema``). No JAX: importing this package
loads only the standard library, PyYAML and ``initlab.errors`` (the CLI sets JAX's options before
JAX loads). The registries' names are read when a config is validated, through the one lazy bridge
that ``pyproject.toml``'s import contract names.

The public names of ``initlab.config.schema`` are re-exported here, so ``from initlab.config import
RunConfig, load`` and ``from initlab import config as C; C.load(...)`` read as before."""

from initlab.config.schema import (ADDED_LATER, EXCLUSIVE, HASH_DIGITS, LEGACY_HASH_DIGITS, MAX_CONFIG_BYTES, MAX_SEED,
                                   MAX_YAML_DEPTH, MAX_YAML_NODES, MIN_HISTOGRAM_BINS, ONLY_FOR, STATS_BEFORE_LOG_STATS,
                                   SWEEP_KEYS, ConfigError, DataConfig, LogConfig, ModelConfig, RunConfig, TrainConfig,
                                   allowed_text, apply_overrides, check_name, config_digest, config_hash,
                                   describe_fields, from_dict, is_default_stats, load, parse_yaml, read_yaml, set_value,
                                   spec, to_dict, to_yaml)

__all__ = ["ADDED_LATER", "EXCLUSIVE", "HASH_DIGITS", "LEGACY_HASH_DIGITS", "MAX_CONFIG_BYTES", "MAX_SEED",
           "MAX_YAML_DEPTH", "MAX_YAML_NODES", "MIN_HISTOGRAM_BINS", "ONLY_FOR", "STATS_BEFORE_LOG_STATS",
           "SWEEP_KEYS", "ConfigError", "DataConfig", "LogConfig", "ModelConfig", "RunConfig", "TrainConfig",
           "allowed_text", "apply_overrides", "check_name", "config_digest", "config_hash", "describe_fields",
           "from_dict", "is_default_stats", "load", "parse_yaml", "read_yaml", "set_value", "spec", "to_dict",
           "to_yaml"]
