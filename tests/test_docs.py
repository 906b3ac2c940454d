"""The README stays true to the code: every config key and every registry name is documented."""

import fnmatch
import re

import pytest

from initlab.activations import ACTIVATIONS
from initlab.config import describe_fields
from initlab.data import DATASETS, PREPROCESSORS
from initlab.formats import FORMATS
from initlab.initializers import BIAS_INITIALIZERS, INITIALIZERS
from initlab.normalizations import NORMALIZATIONS
from initlab.optimizers import LOSSES, OPTIMIZERS, SCHEDULES
from initlab.stats import COLUMNS

from conftest import ROOT

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("key", [k for k, _, _ in describe_fields()])
def test_every_config_key_is_documented(key):
    assert f"`{key}`" in README


def registry_list(label: str) -> tuple[list[str], list[str]]:
    """The names and bracketed alias patterns the README's "Registries" list gives after ``label:``
    (``- initializers: `zeros constant(value) ... [xavier_*]` ``), arguments in parentheses dropped."""
    found = re.findall(rf"(?:^-|;|^)\s*{re.escape(label)}: `([^`]*)`", README, flags=re.MULTILINE)
    assert len(found) == 1, f"README lists {label} {len(found)} times in backticks"
    text = re.sub(r"\([^)]*\)", "", found[0])
    return re.sub(r"\[[^\]]*\]", " ", text).split(), re.findall(r"\[([^\]]*)\]", text)


REGISTRIES = [("activations", ACTIVATIONS), ("initializers", INITIALIZERS), ("bias initializers", BIAS_INITIALIZERS),
              ("normalizations", NORMALIZATIONS), ("optimizers", OPTIMIZERS), ("schedules", SCHEDULES),
              ("losses", LOSSES), ("datasets", DATASETS), ("preprocessing", PREPROCESSORS),
              ("number formats", FORMATS)]


@pytest.mark.parametrize("label, registry", REGISTRIES, ids=[label for label, _ in REGISTRIES])
def test_every_registry_name_is_documented(label, registry):
    # Whole names in the registry's own list: `relu` is not documented by `leaky_relu`, nor by prose.
    names, aliases = registry_list(label)
    assert sorted(names) == sorted(registry), f"README lists {label} {names}, the registry has {list(registry)}"
    for alias in registry.all_names():
        assert alias in registry or any(fnmatch.fnmatchcase(alias, a) for a in aliases), f"alias {alias} not listed"


def test_the_statistics_table_is_the_registrys():
    """README's per-layer statistics table lists every scalar statistic of the registry, in its
    order, with the registry's own text (the text layers.csv's users read)."""
    start = README.index("| column | meaning |")
    rows = README[start:README.index("\n\n", start)].splitlines()[2:]
    table = dict(re.fullmatch(r"\| `([a-z0-9_]+)` \| (.*) \|", row).groups() for row in rows)
    assert list(table) == list(COLUMNS)
    for name, doc in COLUMNS.items():
        assert table[name] == doc, name


def _command_paths():
    import typer

    from initlab.cli import app

    def walk(group, prefix=()):
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                yield from walk(cmd, (*prefix, name))
            else:
                yield " ".join((*prefix, name))

    return list(walk(typer.main.get_command(app)))


@pytest.mark.parametrize("command", _command_paths())
def test_every_command_has_a_readme_example(command):
    assert f"initlab {command} " in README, f"no example of `initlab {command}` in the README"
