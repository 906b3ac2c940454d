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
