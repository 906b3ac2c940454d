"""Configuration: YAML → validated, frozen dataclasses. No JAX: importing this package loads only
the standard library, PyYAML and ``initlab.errors`` (the CLI sets JAX's options before JAX loads).
The registries' facts are read when a config is validated, through the one lazy bridge that
``pyproject.toml``'s import contract names (``initlab.config.schema._registries``, and the
registry imports of the checks across fields, ``initlab.config.checks``).

- ``schema``: the sections as frozen dataclasses, each field's help and constraints, ``only_for``;
- ``checks``: the checks across fields (``from_dict``);
- ``validation``: the generic checks (``spec``, types, bounds, choices, unknown keys);
- ``files``: YAML read within limits, ``--set`` overrides, ``load``, ``to_yaml``;
- ``migrations``: ``SCHEMA_VERSION``, the ordered ``MIGRATIONS`` that old configs and run folders
  survive, ``migrate`` and the config hash.

Their public names are re-exported here, so ``from initlab.config import RunConfig, load`` and
``from initlab import config as C; C.load(...)`` read as before."""

from initlab.config.checks import from_dict
from initlab.config.files import (
    EXCLUSIVE,
    MAX_CONFIG_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    SWEEP_KEYS,
    apply_overrides,
    load,
    parse_scalar,
    parse_yaml,
    read_yaml,
    set_value,
    to_yaml,
)
from initlab.config.migrations import (
    HASH_DIGITS,
    LEGACY_HASH_DIGITS,
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    config_digest,
    config_hash,
    is_default_stats,
    migrate,
)
from initlab.config.schema import (
    MAX_SEED,
    MIN_HISTOGRAM_BINS,
    DataConfig,
    LogConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    allowed_text,
    describe_fields,
    field_type,
    only_for,
    to_dict,
)
from initlab.config.validation import check_name, spec
from initlab.errors import ConfigError

__all__ = [
    "EXCLUSIVE",
    "HASH_DIGITS",
    "LEGACY_HASH_DIGITS",
    "MAX_CONFIG_BYTES",
    "MAX_SEED",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "MIGRATIONS",
    "MIN_HISTOGRAM_BINS",
    "SCHEMA_VERSION",
    "SWEEP_KEYS",
    "ConfigError",
    "DataConfig",
    "LogConfig",
    "Migration",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "allowed_text",
    "apply_overrides",
    "check_name",
    "config_digest",
    "config_hash",
    "describe_fields",
    "field_type",
    "from_dict",
    "is_default_stats",
    "load",
    "migrate",
    "only_for",
    "parse_scalar",
    "parse_yaml",
    "read_yaml",
    "set_value",
    "spec",
    "to_dict",
    "to_yaml",
]
