"""The README stays true to the code: every config key and every registry name is documented."""

import pytest

from initlab.activations import ACTIVATIONS
from initlab.config import describe_fields
from initlab.data import DATASETS, PREPROCESSORS
from initlab.initializers import BIAS_INITIALIZERS, INITIALIZERS
from initlab.normalizations import NORMALIZATIONS
from initlab.optimizers import LOSSES, OPTIMIZERS, SCHEDULES
from initlab.stats import COLUMNS

from conftest import ROOT

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("key", [k for k, _, _ in describe_fields()])
def test_every_config_key_is_documented(key):
    assert f"`{key}`" in README


@pytest.mark.parametrize("registry", [ACTIVATIONS, INITIALIZERS, BIAS_INITIALIZERS, NORMALIZATIONS, OPTIMIZERS,
                                      SCHEDULES, LOSSES, DATASETS, PREPROCESSORS], ids=lambda r: r.kind)
def test_every_registry_name_is_documented(registry):
    for name in registry:
        assert name in README, name


@pytest.mark.parametrize("column", list(COLUMNS))
def test_every_statistic_is_documented(column):
    assert f"`{column}`" in README


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
