"""The house's shape: the import contract in pyproject.toml (packages in layers, the one lazy bridge
from config to the registries' names, reports that never import training, no cycles), checked on
every import including those inside functions; and what only a fresh interpreter can see."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# import-linter's own command, in a fresh interpreter: run in-process, its console keeps the
# stream pytest captured and closes, which breaks the next test's output.
LINT = """
import sys
from importlinter.cli import lint_imports
sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))
"""


@pytest.mark.slow
def test_the_import_contract_is_kept():
    done = subprocess.run(
        [sys.executable, "-c", LINT, str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


# What `import initlab` and `import initlab.config` load, in a fresh interpreter: the CLI sets JAX's
# options before JAX loads, so neither may load it.
PROBE = """
import sys
import initlab
first = sorted(m for m in sys.modules if m.startswith(("initlab", "jax")))
import initlab.config
print(" ".join(first))
print(" ".join(sorted(m for m in sys.modules if m.startswith(("initlab", "jax")))))
"""


@pytest.mark.slow
def test_importing_initlab_loads_nothing_and_its_config_no_jax():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    package, config = (set(line.split()) for line in out.stdout.splitlines())
    assert package == {"initlab"}
    assert config == {
        "initlab",
        "initlab.config",
        "initlab.config.checks",
        "initlab.config.files",
        "initlab.config.migrations",
        "initlab.config.schema",
        "initlab.config.validation",
        "initlab.errors",
    }


MAX_FUNCTION_LINES, MAX_MODULE_LINES = 100, 600  # issue #36: a module a newcomer can read


def test_no_function_over_100_lines_and_no_module_over_600():
    import ast

    too_long = []
    for path in sorted((Path(__file__).resolve().parents[1] / "initlab").rglob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.name}: {node.name} is {lines} lines")
    assert not too_long, too_long
