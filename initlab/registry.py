"""A named registry: one ``dict[str, T]`` read through ``get`` that lists the valid names on a miss.

An entry states its own facts, and everything else reads them: an entry that reads config keys beyond
its own choice declares them in ``uses`` (mup: ``model.base_width``; ``Registry.using`` lists the
entries that read a key, and ``initlab.config`` rejects the key set for any other choice), and an
entry with arguments declares them with their defaults in ``args`` (and their checks in ``rules``),
which the config validates in the choice's ``<key>_args`` mapping (``model.init_args``,
``model.norm_args``, ``model.shaping_args``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from initlab.errors import ConfigError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """An immutable name → entry table for activations, initializers, normalizations, ...

    ``aliases`` map alternative spellings (``xavier_normal``) onto canonical names; ``names()``
    lists canonical names only, so tests that iterate a registry test each method once.
    """

    def __init__(self, kind: str, entries: dict[str, T], aliases: dict[str, str] | None = None):
        self.kind = kind
        self._entries = dict(entries)
        self._aliases = dict(aliases or {})
        unknown = set(self._aliases.values()) - set(self._entries)
        if unknown:
            raise ValueError(f"{kind} aliases point at unknown entries: {sorted(unknown)}")

    def __getitem__(self, name: str) -> T:
        return self._entries[self._aliases.get(name, name)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def canonical(self, name: str) -> str:
        """The canonical name for ``name`` (resolving aliases)."""
        return self._aliases.get(name, name)

    def all_names(self) -> list[str]:
        """Canonical names followed by aliases: everything a config may say."""
        return list(self._entries) + list(self._aliases)

    def using(self, key: str) -> tuple[str, ...]:
        """The names of the entries that declare they read config ``key`` (their ``uses``), in order."""
        return tuple(name for name, entry in self._entries.items() if key in getattr(entry, "uses", ()))

    def get(self, name: str, key: str = "") -> T:  # type: ignore[override]
        """The entry called ``name``; a ConfigError listing the valid names if there is none."""
        if name not in self:
            where = f"{key}: " if key else ""
            raise ConfigError(f"{where}{name!r} is not one of {', '.join(self.all_names())} (unknown {self.kind})")
        return self[name]
