"""initlab's Python API: what the CLI does, as functions for notebooks and scripts, and run folders
read back as pandas DataFrames.

>>> cfg = initlab.load_config("configs/quickstart.yaml", ["train.steps=100"])
>>> run = initlab.run(cfg)                      # trains, writes the run folder, returns a Run
>>> run.layers.query("step == 0")[["layer", "pre_var", "grad_var"]]
>>> initlab.open_runs("runs/").table()          # the table ``initlab report --format csv`` prints

Every error is an ``initlab.errors.InitlabError`` (``ConfigError`` for a bad config), as on the
command line. The CLI's commands call the same functions (``initlab.runfolder.experiment``,
``initlab.sweep``, ``initlab.report.tables``); this module adds reading a run folder whole.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from initlab import config as _config
from initlab.errors import InitlabError
from initlab.runfolder.files import CONFIG_FILE, HISTOGRAM_FILE, JACOBIAN_FILE, LAYERS_FILE, METRICS_FILE, SUMMARY_FILE

if TYPE_CHECKING:  # pandas is imported when a table is asked for
    import pandas as pd

    from initlab.nn.params import MLPParams, NormState

__all__ = ["Run", "Runs", "load_config", "open_run", "open_runs", "run", "sweep"]


def _pandas():
    try:
        import pandas
    except ImportError:  # pragma: no cover - pandas comes with the api and dev extras
        raise InitlabError('the Python API\'s tables need pandas: pip install -e ".[api]"') from None
    return pandas


def _strings(values: str | Iterable[str], name: str) -> list[str]:
    """``values`` as a list of strings: one string is one item (``"model.depth=5"``), not its characters."""
    if isinstance(values, str):
        return [values]
    items = list(values)
    bad = [v for v in items if not isinstance(v, str)]
    if bad:
        raise InitlabError(
            f'{name}: {bad[0]!r} is not a string such as "model.depth=5" (give a string or a list of them)'
        )
    return items


# The CLI's options that library messages name, as the Python API spells them: a message raised
# under ``run`` says what to pass here, not on a command line.
PYTHON_ARGUMENTS = {
    "--force": "force=True",
    "--resume": "resume=True",
    "--auto-resume": "auto_resume=True",
    "--retry-failed": "retry_failed=True",
    "--replace": "replace=True",
}
_OPTION = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, PYTHON_ARGUMENTS)) + r")(?![\w-])")


def _in_python_terms(e: InitlabError) -> InitlabError:
    """``e`` with the CLI options it names written as this API's arguments (``pass force=True``);
    a quoted shell command (between backticks) is left as it is."""
    parts = str(e).split("`")
    parts[::2] = [_OPTION.sub(lambda m: PYTHON_ARGUMENTS[m.group(1)], p) for p in parts[::2]]
    e.args = ("`".join(parts), *e.args[1:])
    return e


def load_config(path: str | Path, overrides: str | Iterable[str] = ()) -> _config.RunConfig:
    """A validated run config from a YAML file, with ``overrides`` (``"model.depth=50"``, as
    ``--set``, or a list of them) applied; ``ConfigError`` names the key of anything wrong."""
    return _config.load(path, _strings(overrides, "overrides"))


# What ``run(..., exist_ok=True)`` returns instead of training: a run that ended, whatever its
# result (an interrupted one is trained, or resumed, as without exist_ok).
ENDED = ("completed", "diverged", "failed")


def run(
    config: _config.RunConfig | str | Path,
    *,
    overrides: str | Iterable[str] = (),
    data_dir: str | Path | None = None,
    force: bool = False,
    resume: bool = False,
    auto_resume: bool = False,
    exist_ok: bool = False,
) -> Run:
    """Train ``config`` (a ``RunConfig`` or a YAML path, with ``overrides``) as ``initlab run``
    does, write its run folder under ``log.out`` and return it opened. A folder that already
    holds this config is an error unless ``exist_ok`` (return that run, if it ended: completed,
    diverged or failed), ``force`` (start again) or ``resume`` (continue an unfinished one from
    its checkpoint); ``auto_resume`` continues from the checkpoint if there is one, starts if there
    is nothing to continue and returns a finished run as it is (``initlab run --auto-resume``); a
    failed run raises ``InitlabError`` after writing what it had."""
    from initlab.runfolder import experiment
    from initlab.runfolder import storage

    overrides = _strings(overrides, "overrides")
    cfg = config if isinstance(config, _config.RunConfig) else load_config(config, overrides)
    if isinstance(config, _config.RunConfig) and overrides:
        cfg = _config.from_dict(_config.apply_overrides(_config.to_dict(cfg), overrides))
    if exist_ok and force:
        raise InitlabError("exist_ok=True returns the stored run and force=True trains it again: give one of them")
    try:
        path = storage.run_dir_for(cfg)
        if exist_ok and storage.run_status(path) in ENDED:
            storage.check_same_config(path, cfg)
            return open_run(path)
        summary = experiment.run(
            cfg, data_dir=data_dir, force=force, resume=resume, auto_resume=auto_resume, download_progress=False
        )
    except InitlabError as e:
        raise _in_python_terms(e) from None
    return open_run(summary["run_dir"])


def sweep(
    path: str | Path,
    *,
    grid: str | Iterable[str] = (),
    zips: str | Iterable[str] = (),
    seeds: str | None = None,
    overrides: str | Iterable[str] = (),
    data_dir: str | Path | None = None,
    workers: int = 1,
    executor: str = "local",
    retry_failed: bool = False,
    replace: bool = False,
) -> Runs:
    """Train the sweep file ``path`` as ``initlab sweep`` does (``grid`` as ``--grid
    "model.depth=5,10"``, ``zips`` as ``--zip``, ``seeds`` as ``--seeds``, ``overrides`` as
    ``--set``; runs already done are kept) and return its folder's runs."""
    from initlab.runfolder import sweeps as _sweep

    spec = _sweep.load_spec(
        path,
        grid=_strings(grid, "grid"),
        zips=_strings(zips, "zips"),
        seeds=seeds,
        overrides=_strings(overrides, "overrides"),
    )
    try:
        report = _sweep.run_sweep(
            spec, data_dir=data_dir, workers=workers, executor=executor, retry_failed=retry_failed, replace=replace
        )
    except InitlabError as e:
        raise _in_python_terms(e) from None
    return open_runs(report.directory)


def open_run(path: str | Path) -> Run:
    """The run folder ``path`` (one written by ``run``, ``initlab run`` or a sweep)."""
    p = Path(path)
    if not (p / SUMMARY_FILE).is_file() or not (p / CONFIG_FILE).is_file():
        raise InitlabError(f"{p}: not a run folder (it needs config.yaml and summary.json)")
    return Run(p)


def open_runs(*paths: str | Path) -> Runs:
    """Every run folder under ``paths`` (folders of runs, sweep folders or run folders), as
    ``initlab report`` finds them."""
    from initlab.report.results import discover

    if not paths:
        raise InitlabError("open_runs needs at least one folder")
    found, _ = discover(paths)
    return Runs([Run(r.path) for r in found], [Path(p) for p in paths])


class Run:
    """One run folder: its config, summary, metrics and per-layer statistics (DataFrames read on
    first use), and the parameters saved by ``log.save_params``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r})"

    @property
    def config(self) -> _config.RunConfig:
        """The run's resolved config (its ``config.yaml``)."""
        if "config" not in self._cache:
            self._cache["config"] = _config.from_dict(_config.read_yaml(self.path / CONFIG_FILE))
        return self._cache["config"]

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json``: status, final and best figures, the signal profiles, the theory."""
        from initlab.runfolder.reader import load_summary

        try:
            return load_summary(self.path)
        except (OSError, ValueError) as e:
            raise InitlabError(f"{self.path / 'summary.json'}: cannot be read ({e})") from None

    @property
    def status(self) -> str:
        """completed, diverged, failed, interrupted or running (``initlab.runfolder.storage.run_status``)."""
        from initlab.runfolder.storage import run_status

        return run_status(self.path)

    def _csv(self, name: str, required: bool = True) -> pd.DataFrame | None:
        """The run's CSV ``name`` as a DataFrame (columns typed as ``runfolder.reader.read_table``
        reads them); a missing one is an error if ``required``, else None."""
        from initlab.runfolder.reader import read_table

        pd = _pandas()
        f = self.path / name
        if not f.is_file():
            if required:
                raise InitlabError(f"{f}: missing")
            return None
        return pd.DataFrame(read_table(f))

    @property
    def metrics(self) -> pd.DataFrame:
        """``metrics.csv``: one row per logged step and epoch end (train loss, test loss and accuracy)."""
        return self._csv(METRICS_FILE)

    @property
    def layers(self) -> pd.DataFrame:
        """``layers.csv``: one row per (logged step, layer) with every scalar statistic."""
        return self._csv(LAYERS_FILE)

    @property
    def histograms(self) -> pd.DataFrame | None:
        """``histograms.csv`` (``log.histograms`` > 0), else None."""
        return self._csv(HISTOGRAM_FILE, required=False)

    @property
    def jacobian(self) -> pd.DataFrame | None:
        """``jacobian.csv``: the input-output Jacobian's singular values (``log.jacobian`` > 0), else None."""
        return self._csv(JACOBIAN_FILE, required=False)

    @property
    def param_steps(self) -> list[int]:
        """The steps whose parameters the folder holds (``log.save_params``)."""
        from initlab.runfolder.storage import saved_param_steps

        return saved_param_steps(self.path)

    def _step(self, step: int | str) -> int:
        steps = self.param_steps
        named = {"init": 0, "end": int(self.summary.get("steps", -1))}
        chosen = named.get(step, step) if isinstance(step, str) else step
        if chosen not in steps:
            held = ", ".join(map(str, steps)) or "none (log.save_params: [])"
            raise InitlabError(f"{self.path}: no parameters saved at step {step!r} (saved: {held})")
        return int(chosen)

    def _spec(self):
        from initlab.data.datasets import load_dataset
        from initlab.train.build import model_spec

        if "spec" not in self._cache:
            cfg = self.config
            data = load_dataset(cfg.data, self._cache.get("data_dir"), progress=False)
            self._cache["data"] = data
            self._cache["spec"] = model_spec(cfg.model, data.input_dim, data.num_classes)
        return self._cache["spec"]

    def params(self, step: int | str = "end", *, data_dir: str | Path | None = None) -> tuple[MLPParams, NormState]:
        """The parameters (``initlab.nn.params.MLPParams``, in the model's parameter dtype) and the
        normalization state saved at ``step`` (a step number, ``"init"`` or ``"end"``)."""
        import jax
        import numpy as np

        from initlab.nn.formats import cast, context
        from initlab.nn.model import init_layers
        from initlab.nn.params import from_named
        from initlab.runfolder.storage import params_file
        from initlab.train.build import layer_samplers

        chosen = self._step(step)
        if data_dir is not None:
            self._cache["data_dir"] = data_dir
        spec, cfg = self._spec(), self.config
        with context(cfg.model.dtype):
            template = jax.eval_shape(
                lambda: (lambda p, s: (cast(p, spec.param_dtype), s))(
                    *init_layers(spec, layer_samplers(cfg.model), jax.random.PRNGKey(0))
                )
            )
            with np.load(params_file(self.path, chosen)) as arrays:
                try:
                    return from_named(template[0], arrays, "params"), from_named(template[1], arrays, "state")
                except (KeyError, ValueError) as e:
                    raise InitlabError(
                        f"{params_file(self.path, chosen)}: does not hold this config's network ({e})"
                    ) from None

    def evaluate(self, step: int | str = "end", *, data_dir: str | Path | None = None) -> dict[str, float]:
        """Test loss and accuracy of the parameters saved at ``step``, computed by the training's own
        evaluation on the run's test set (the end's equal ``summary["final"]``'s)."""
        from initlab.train.evaluate import evaluate_params

        params, state = self.params(step, data_dir=data_dir)
        cfg, spec, data = self.config, self._spec(), self._cache["data"]
        return evaluate_params(cfg, spec, params, state, data.x_test, data.y_test)


class Runs(Sequence[Run]):
    """The runs under some folders, and their report table. Indexing gives a ``Run``; slicing, a
    ``Runs`` of those runs (whose table is theirs alone)."""

    def __init__(self, runs: list[Run], paths: list[Path]):
        self._runs, self.paths = runs, paths

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return Runs(self._runs[i], self.paths)
        return self._runs[i]

    def __len__(self) -> int:
        return len(self._runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(self._runs)

    def __repr__(self) -> str:
        return f"Runs({len(self)} runs under {', '.join(map(str, self.paths))})"

    def table(
        self,
        *,
        filters: Sequence[str] = (),
        group_by: Sequence[str] = (),
        sort: str | None = None,
        columns: Sequence[str] | None = None,
        top: int | None = None,
        target: float = 0.9,
        per_run: bool = False,
    ) -> pd.DataFrame:
        """``initlab report``'s table of these runs (options as its ``--filter``, ``--group-by``,
        ``--sort``, ``--columns``, ``--top``, ``--target``): one row per configuration, seeds
        aggregated, with the same numbers as ``--format csv`` (means, and ``_std`` columns over
        seeds). ``per_run``: one row per run folder instead, with its ``seed`` and its folder
        (``run``, for ``open_run``), each configuration's runs in its row's place (so ``sort`` and
        ``top`` order and choose configurations), by seed."""
        import dataclasses
        import json as _json

        from initlab.report.tables import aggregate, build_report, to_csv

        report = build_report(
            [r.path for r in self._runs],
            filters=filters,
            group_by=group_by,
            sort=sort,
            columns=columns,
            top=top,
            target=target,
        )
        if per_run:

            def config_of(values) -> str:  # as report.aggregate tells configurations apart
                return _json.dumps(list(values), sort_keys=True, default=str)

            members: dict[str, list] = {}
            for r in report.runs:
                members.setdefault(config_of(r.flat.get(k) for k in report.keys), []).append(r)
            keys = [*report.keys, "seed"]
            runs = [
                r
                for row in report.rows
                for r in sorted(
                    members[config_of(row[k] for k in report.keys)], key=lambda r: (r.flat.get("seed", 0), str(r.path))
                )
            ]
            report = dataclasses.replace(report, keys=keys, rows=[aggregate([r], keys, target)[0] for r in runs])
        frame = _pandas().read_csv(io.StringIO(to_csv(report)))
        if per_run:
            frame.insert(len(report.keys), "run", [str(r.path) for r in runs])
        return frame
