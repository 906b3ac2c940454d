"""Config files: YAML read within limits (size, nesting, alias expansion), ``--set`` overrides typed
like their field, a file loaded into a validated ``RunConfig``, and a config written back as YAML."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from initlab.config.checks import from_dict
from initlab.config.schema import RunConfig, field_type, to_dict
from initlab.errors import ConfigError


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
        tp = field_type(key)
        set_value(out, key, raw if tp is str else parse_scalar(raw, key))
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
            raise ConfigError(
                f"aliases expand to more than {MAX_YAML_NODES:,} values{self._where()} (a YAML alias bomb?)"
            )

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
                        raise ConfigError(
                            f"{key!r} is given twice in one mapping (lines {lines[key]} and {line}); keep one"
                        )
                    lines[key] = line
                except TypeError:
                    continue  # an unhashable key: refused when the mapping is built
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """YAML text as data, within ``_Loader``'s limits (ConfigError past them, yaml.YAMLError if malformed)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_scalar(raw: str, key: str) -> Any:
    """A ``--set`` value as YAML (None for an empty one); a ConfigError naming ``key`` if it cannot be parsed."""
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
        raise ConfigError(
            f"{path}: empty, so every default would apply (one epoch of a small MLP on MNIST); "
            "write the keys to set (`initlab config keys` lists them), e.g. `name: baseline`"
        )
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
        raise ConfigError(
            f"{p}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); a config is a YAML file"
        ) from None
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


def to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML, sections in declaration order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
