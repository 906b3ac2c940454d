"""The README stays true to the code: every config key and every registry name is documented."""

import fnmatch
import re

import pytest

from initlab.config import describe_fields
from initlab.data.datasets import DATASETS, PREPROCESSORS
from initlab.nn.activations import ACTIVATIONS
from initlab.nn.formats import FORMATS
from initlab.nn.initializers import BIAS_INITIALIZERS, INITIALIZERS
from initlab.nn.normalizations import NORMALIZATIONS
from initlab.nn.optimizers import LOSSES, OPTIMIZERS, SCHEDULES
from initlab.nn.parameterizations import PARAMETERIZATIONS
from initlab.nn.reparams import REPARAMS
from initlab.stats.statistics import COLUMNS
from initlab.theory.shaping import SHAPINGS

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


REGISTRIES = [
    ("activations", ACTIVATIONS),
    ("initializers", INITIALIZERS),
    ("bias initializers", BIAS_INITIALIZERS),
    ("normalizations", NORMALIZATIONS),
    ("optimizers", OPTIMIZERS),
    ("schedules", SCHEDULES),
    ("losses", LOSSES),
    ("datasets", DATASETS),
    ("preprocessing", PREPROCESSORS),
    ("number formats", FORMATS),
    ("parameterizations", PARAMETERIZATIONS),
    ("kernel shapings", SHAPINGS),
    ("weight reparameterizations", REPARAMS),
]


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
    rows = README[start : README.index("\n\n", start)].splitlines()[2:]
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


# -- every command the README shows runs ---------------------------------------------------------


def readme_commands() -> list[str]:
    """Each ``initlab ...`` line of the README's plain code blocks, without its comment or output redirection."""
    lines = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S):
        if not lang:
            lines += [
                re.sub(r"\s*>\s*\S+$", "", re.sub(r"\s+#.*$", "", ln))
                for ln in body.splitlines()
                if ln.startswith("initlab ")
            ]
    return lines


SHRINK = ["--set", "data.train_size=256", "--set", "data.test_size=64", "--set", "data.probe_size=64"]


@pytest.fixture(scope="module")
def readme_tree(tmp_path_factory):
    """A working folder where the README's commands find what they name: configs/, ../shared/data/mnist,
    ~/mnist, and small run folders under runs/ for report and plot (logged at step 300, histograms on)."""
    from conftest import SMALL_DATA, shared_mnist_dir
    from initlab.runfolder.sweeps import SweepSpec, run_sweep

    root = tmp_path_factory.mktemp("readme")
    work, home = root / "work", root / "home"
    work.mkdir()
    home.mkdir()
    (work / "configs").symlink_to(ROOT / "configs")
    (root / "shared" / "data").mkdir(parents=True)
    (root / "shared" / "data" / "mnist").symlink_to(shared_mnist_dir())
    (home / "mnist").symlink_to(shared_mnist_dir())
    base = {
        "data": SMALL_DATA,
        "model": {"width": 8},
        "train": {"steps": 300, "batch_size": 32},
        "log": {"every": 150, "histograms": 8, "out": str(work / "runs")},
    }
    run_sweep(
        SweepSpec(
            {**base, "name": "relu-depth-init"},
            {"model.depth": [2, 3], "model.init": ["glorot_normal", "he_normal"]},
            [],
            [0],
        )
    )
    run_sweep(
        SweepSpec(
            {**base, "name": "norm-depth", "model": {"width": 8, "activation": "tanh", "depth": 2}},
            {"model.norm": ["none", "batchnorm"], "train.lr": [0.01, 0.02]},
            [],
            [0],
        )
    )
    for name in ("init-demo", "glorot2010", "pennington2017", "formats"):
        (work / "runs" / name).symlink_to(work / "runs" / "relu-depth-init")
    width = {
        **base,
        "name": "yang2022-coordcheck",
        "train": {"steps": 2, "batch_size": 32},
        "log": {"every": 1, "stats": ["act_abs_mean", "pre_delta_abs_mean"], "out": str(work / "runs")},
    }
    run_sweep(
        SweepSpec(
            width,
            {"model.width": [8, 16], "train.lr": [0.01, 0.02]},
            [{"model.parameterization": ["standard", "mup"], "model.base_width": [None, 8]}],
            [0],
        )
    )
    (work / "runs" / "yang2022").symlink_to(work / "runs" / "yang2022-coordcheck")
    return work, home


@pytest.mark.slow
@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_runs(command, readme_tree, monkeypatch):
    import shlex

    from typer.testing import CliRunner

    from conftest import shared_mnist_dir
    from initlab.cli import app

    work, home = readme_tree
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("INITLAB_DATA_DIR", str(shared_mnist_dir()))
    if "<hash>" in command:
        run = next(p for p in sorted((work / "runs" / "relu-depth-init").iterdir()) if p.name.startswith("relu-"))
        command = command.replace("relu-depth-init-<hash>", run.name)
    args = shlex.split(command)[1:]
    if args[0] == "run":  # the same command, on a slice of MNIST and a few steps
        args += SHRINK + ([] if "train.steps=" in command else ["--set", "train.steps=2"])
        args += ["--out", str(work / "readme-runs"), "--force", "-q"]
    elif args[0] == "sweep":  # planned, with the sweep's own checks, into a folder of its own
        args += ["--dry-run", "--out", str(work / "dry-runs")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{command}\n{result.output}"


def test_the_readme_sweep_file_is_valid(tmp_path):
    from typer.testing import CliRunner

    from initlab.cli import app

    (body,) = [
        b for lang, b in re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S) if lang == "yaml" and "sweep:" in b
    ]
    path = tmp_path / "sweep.yaml"
    path.write_text(body)
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "32 runs, 32 to train" in result.output  # 4 depths × 2 inits × 2 (optimizer, lr) pairs × 2 seeds
