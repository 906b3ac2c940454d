"""Old configs and run folders: the schema's version, the ordered migrations that brought it there,
and the config's identity (``config_digest``, ``config_hash``), which they keep.

A migration is a key added after runs were first made, with the value that reproduces what configs
from before it did. Two facts follow from each, and nothing else states them:

- a config whose key holds that value hashes as if the key did not exist, so a run folder made
  before the key keeps its name (``config_digest``);
- a stored config without the key reads as that value (``migrate``: the report's reading of old
  summaries and config.yaml files).

``log.stats`` is the one key whose old value is not one value: before it existed every run computed
the statistics that were the defaults then, and the statistics that joined the defaults since
(``initlab.stats.statistics.Statistic.default_since``) do not change a run's numbers, so every
era's default selection is one configuration (``is_default_stats``). A new default statistic
declares its era in its registry entry; nothing here changes.

A key added from now on is a field (``initlab.config.schema``) and one ``Migration`` at the end of
``MIGRATIONS``; a field that configs written before it must not show (``spec(omit_default=True)``)
also stays out of config.yaml at its default, so those files keep their bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from initlab.config.schema import RunConfig, default_stat_eras, to_dict


@dataclass(frozen=True)
class Migration:
    """One change of the schema: ``key`` was added at ``version``; configs before it behaved as
    ``old`` (a value, or for ``log.stats`` None: the defaults of their era). ``same(value)`` says
    whether a value is that old behaviour (and so hashes as the key's absence)."""

    version: int
    key: str
    old: Any
    same: Callable[[Any], bool] | None = None

    def is_old(self, value: Any) -> bool:
        """Whether ``value`` is what configs from before this migration did."""
        return self.same(value) if self.same is not None else value == self.old


def is_default_stats(stats: Sequence[str] | None) -> bool:
    """Whether ``log.stats`` is a default selection: absent (a run from before the key existed) or
    the defaults of any era (``initlab.stats.statistics.default_names(era)``), which compute the
    same numbers."""
    return stats is None or tuple(stats) in default_stat_eras()


MIGRATIONS: tuple[Migration, ...] = tuple(
    Migration(i, key, old, same)
    for i, (key, old, same) in enumerate(
        (
            ("log.stats", None, is_default_stats),
            ("data.input_scale", 1.0, None),
            ("log.histograms", 0, None),
            ("log.jacobian", 4, None),
            ("model.dtype", "float32", None),
            ("model.precision", "mixed", None),
            ("train.loss_scale", "none", None),
            ("train.loss_scale_init", 32768.0, None),
            ("train.loss_scale_period", 2000, None),
            ("model.parameterization", "standard", None),
            ("model.base_width", None, None),
            ("model.zero_readout", False, None),
            ("data.range", (-0.5, 0.5), None),
            ("train.target_range", None, None),
            ("model.branch_scale_init", 1.0, None),
            ("model.shaping", "none", None),
            ("model.shaping_args", {}, None),
            ("model.reparam", "none", None),
            ("model.norm_args", {}, None),
        ),
        start=1,
    )
)

# The schema a config of this version of initlab has: configs and run folders of every earlier one load.
SCHEMA_VERSION = MIGRATIONS[-1].version


def migrate(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config's flat ``{dotted key: value}`` read as today's schema: each key added since
    it was written set to the value that reproduces what it did, and a default ``log.stats``
    selection (absent, or any era's defaults) as today's defaults."""
    out = dict(flat)
    for m in MIGRATIONS:
        if m.key == "log.stats":
            if is_default_stats(out.get(m.key)):
                out[m.key] = list(default_stat_eras()[-1])
        else:
            out.setdefault(m.key, m.old)
    return out


# Run folders are named <name>-<first HASH_DIGITS hex digits of config_digest>. 8 digits (32 bits)
# collided within a 100 × 100 × 10 grid; 16 (64 bits) put a collision past 10⁹ configs, and a folder
# is still checked against its stored config before it counts as a config's run. Folders made with
# 8 digits keep their names (``storage.run_dir_for`` finds them by the same digest's prefix).
HASH_DIGITS = 16
LEGACY_HASH_DIGITS = 8


def config_digest(cfg: RunConfig) -> str:
    """The SHA-256 (64 hex digits) of everything that can change a run's numbers (not log.out, nor
    what is kept of a run): each migrated key holding its old value is left out, so run folders keep
    the names they had before the key existed."""
    d = to_dict(cfg)
    d["log"].pop("out")
    d["log"].pop("save_params")  # what is kept of a run, not what it computes
    d["log"].pop("checkpoint_every")
    for m in MIGRATIONS:
        section, name = m.key.split(".")
        if name in d[section] and m.is_old(d[section][name]):
            d[section].pop(name)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def config_hash(cfg: RunConfig) -> str:
    """The run's identity in folder names, locks and indexes: ``config_digest``'s first 16 digits."""
    return config_digest(cfg)[:HASH_DIGITS]
