"""What is in a run folder and a sweep folder: every file's name and every CSV's columns, stated
once. The writer (``runfolder.storage``), the reports (``report``) and the Python API read these
names; nothing else spells them.

A run folder ``<log.out>/<name>-<config hash>/`` holds:

- ``config.yaml``: the resolved config;
- ``summary.json``: status, final figures, profiles, theory (its schema, read side: ``runfolder.summary``);
- ``metrics.csv``: one row per logged step and epoch end (``metric_columns``);
- ``layers.csv``: one row per (logged step, layer), a column per scalar statistic;
- ``<statistic>.csv``: a tidy file per shaped statistic (``SHAPED_COLUMNS``);
- ``histograms.csv``: the per-layer histograms, one row per non-empty bin (``HISTOGRAM_COLUMNS``);
- ``jacobian.csv``: the input-output Jacobian's singular values (``JACOBIAN_COLUMNS``);
- ``checkpoint.pkl``: while a run can be resumed;
- ``params/step_<step>.npz``: the parameters ``log.save_params`` keeps;
- the initializer's trace (LSUV, pre-training), named by its ``nn.initializers.Trace``.

A sweep folder holds ``sweep.yaml`` and ``index.json`` beside its run folders; an output folder
keeps its runs' locks in ``.locks/`` and a sweep's group checkpoints in ``.checkpoints/``.
"""

from __future__ import annotations

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
LAYERS_FILE = "layers.csv"
HISTOGRAM_FILE = "histograms.csv"
JACOBIAN_FILE = "jacobian.csv"
CHECKPOINT_FILE = "checkpoint.pkl"
PARAMS_DIR = "params"

# Any of these makes a folder a run folder (a report lists one without a summary as skipped).
RUN_MARKERS = (SUMMARY_FILE, CONFIG_FILE, METRICS_FILE)

SWEEP_FILE = "sweep.yaml"
INDEX_FILE = "index.json"
LOCKS_DIR = ".locks"
CHECKPOINTS_DIR = ".checkpoints"

METRIC_COLUMNS = ("step", "epoch", "train_loss", "test_loss", "test_acc", "wall_time")
# metrics.csv's further columns with loss scaling (train.loss_scale): the scale in effect after the
# row's step, and the steps skipped (non-finite gradient) since the previous row.
LOSS_SCALE_COLUMNS = ("loss_scale", "skipped_steps")
# layers.csv: these, then a column per scalar statistic the run computes.
LAYER_KEY_COLUMNS = ("step", "layer", "kind")
# A statistic of k > 1 values per layer goes to <name>.csv, one row per (step, layer, index).
SHAPED_COLUMNS = ("step", "layer", "kind", "index", "value")
# histograms.csv: one row per non-empty bin of each (step, layer, quantity); an empty bin has no row.
HISTOGRAM_COLUMNS = ("step", "layer", "kind", "quantity", "lo", "hi", "count")
# jacobian.csv: the singular values of each probe example's input-output Jacobian, largest first.
JACOBIAN_COLUMNS = ("step", "example", "index", "singular_value")


def shaped_file(statistic: str) -> str:
    """The tidy file of a shaped statistic: ``<statistic>.csv``."""
    return f"{statistic}.csv"


def params_name(step: int) -> str:
    """The file (in ``PARAMS_DIR``) of the parameters of ``step``: ``step_<step, 6 digits>.npz``."""
    return f"step_{step:06d}.npz"


def params_step(stem: str) -> int | None:
    """The step a parameter file's stem (``step_000100``) names, or None for another file."""
    return int(stem[5:]) if stem.startswith("step_") and stem[5:].isdigit() else None
