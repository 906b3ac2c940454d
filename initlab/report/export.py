"""Run folders exported to other tools' formats (``initlab export FORMAT RUNS --out DIR``).

``EXPORTERS`` is the registry of formats. ``tensorboard`` writes each run's ``metrics.csv``,
``layers.csv``, ``histograms.csv`` and ``jacobian.csv`` as TensorBoard event files (through
tensorboardX, the ``tensorboard`` extra), one folder per run, so that TensorBoard's scalar,
histogram and text dashboards show what ``initlab report`` and ``initlab plot`` do:

- scalars ``metrics/<column>`` (``train_loss``, ``test_loss``, ``test_acc``, ``loss_scale``, ...)
  at each row's step, and ``layers/<statistic>/layer_<NNN>`` (every numeric ``layers.csv`` column,
  layer numbers as ``layers.csv`` has them, the output layer last);
- histograms ``histograms/<quantity>/layer_<NNN>`` (``pre``, ``act``, ``grad``, ``weight``) from
  the binned counts, each bin's right edge as TensorBoard's bucket limit (NaN counts are left out:
  TensorBoard has no bin for them; a histogram's sum and sum of squares, which TensorBoard shows
  only in its tooltips, come from the bins' midpoints), and ``jacobian/singular_values`` from the
  exact singular values of every probe example at step 0 and at the end;
- the text ``config`` (the run's ``config.yaml``) and ``summary`` (its status and final figures).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from initlab.errors import InitlabError
from initlab.registry import Registry
from initlab.runfolder.files import CONFIG_FILE, HISTOGRAM_FILE, JACOBIAN_FILE, LAYERS_FILE, METRICS_FILE
from initlab.runfolder.reader import load_summary, read_rows

LAYERS_KEYS = ("step", "layer", "kind")
METRICS_KEYS = ("step", "epoch", "wall_time")


@dataclass(frozen=True)
class Exporter:
    """One export format: ``write(run folder, destination folder) -> tags written`` and the pip
    extra it needs."""

    doc: str
    write: Callable[[Path, Path], int]
    extra: str


def _rows(path: Path) -> list[dict[str, str]]:
    return read_rows(path) if path.is_file() else []


def _number(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _bucket(lo: float, hi: float) -> float:
    """TensorBoard's bucket limit (the right edge) for a bin, finite: the largest float64 for +inf
    and the bin's own edge where the other one is infinite."""
    edge = hi if math.isfinite(hi) else lo if math.isfinite(lo) else 0.0
    return float(np.finfo(np.float64).max) if hi == math.inf else edge


def _histograms(rows: list[dict[str, str]]):
    """``(tag, step, min, max, count, sum, sum of squares, bucket limits, bucket counts)`` per
    (step, layer, quantity) of ``histograms.csv``'s rows, bins in increasing order."""
    groups: dict[tuple[int, int, str], list[tuple[float, float, int]]] = {}
    for r in rows:
        lo, hi = _number(r["lo"]), _number(r["hi"])
        if lo is None or hi is None:  # the NaN bin
            continue
        groups.setdefault((int(r["step"]), int(r["layer"]), r["quantity"]), []).append((lo, hi, int(r["count"])))
    for (step, layer, quantity), bins in sorted(groups.items()):
        bins.sort(key=lambda b: (b[0], b[1]))
        mids = np.array(
            [
                (lo + hi) / 2
                if math.isfinite(lo) and math.isfinite(hi)
                else (hi if math.isfinite(hi) else lo if math.isfinite(lo) else 0.0)
                for lo, hi, _ in bins
            ]
        )
        counts = np.array([c for _, _, c in bins], dtype=np.float64)
        lo0, hi0 = bins[0][0], bins[-1][1]
        yield (
            f"histograms/{quantity}/layer_{layer:03d}",
            step,
            float(lo0 if math.isfinite(lo0) else mids[0]),
            float(hi0 if math.isfinite(hi0) else mids[-1]),
            float(counts.sum()),
            float(counts @ mids),
            float(counts @ (mids * mids)),
            [_bucket(lo, hi) for lo, hi, _ in bins],
            counts.tolist(),
        )


def _tensorboard_writer():
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise InitlabError('initlab export tensorboard needs tensorboardX: pip install -e ".[tensorboard]"') from None
    return SummaryWriter


def write_tensorboard(run: Path, dest: Path) -> int:
    """Write run folder ``run``'s files as TensorBoard event files in ``dest``; returns how many
    values (scalars, histograms, texts) were written."""
    writer_cls = _tensorboard_writer()
    written = 0
    with writer_cls(logdir=str(dest), flush_secs=3600) as w:
        for r in _rows(run / METRICS_FILE):
            step = int(r["step"])
            for column, text in r.items():
                value = _number(text)
                if column not in METRICS_KEYS and value is not None:
                    w.add_scalar(f"metrics/{column}", value, step)
                    written += 1
        for r in _rows(run / LAYERS_FILE):
            step, layer = int(r["step"]), int(r["layer"])
            for column, text in r.items():
                value = _number(text)
                if column not in LAYERS_KEYS and value is not None:
                    w.add_scalar(f"layers/{column}/layer_{layer:03d}", value, step)
                    written += 1
        for tag, step, lo, hi, num, total, squares, limits, counts in _histograms(_rows(run / HISTOGRAM_FILE)):
            w.add_histogram_raw(tag, lo, hi, num, total, squares, limits, counts, global_step=step)
            written += 1
        spectra: dict[int, list[float]] = {}
        for r in _rows(run / JACOBIAN_FILE):
            spectra.setdefault(int(r["step"]), []).append(float(r["singular_value"]))
        for step, values in sorted(spectra.items()):
            w.add_histogram("jacobian/singular_values", np.asarray(values), step, bins="auto")
            written += 1
        config = run / CONFIG_FILE
        if config.is_file():
            w.add_text("config", "```\n" + config.read_text() + "```", 0)
            written += 1
        try:
            summary = load_summary(run)
        except (OSError, ValueError):
            summary = None
        if summary is not None:
            head = {k: summary.get(k) for k in ("status", "steps", "final", "best", "divergence") if k in summary}
            w.add_text("summary", "```\n" + json.dumps(head, indent=2) + "\n```", int(summary.get("steps") or 0))
            written += 1
    return written


EXPORTERS: Registry[Exporter] = Registry(
    "export format",
    {
        "tensorboard": Exporter(
            "TensorBoard event files (tensorboardX), one folder per run", write_tensorboard, "tensorboard"
        ),
    },
)


def plan_export(fmt: str, paths: Iterable[str | Path], out: str | Path) -> tuple[Exporter, list[tuple[Path, Path]]]:
    """The exporter of ``fmt`` and ``(run folder, destination)`` for every run folder under
    ``paths`` (as ``initlab report`` finds them), destinations ``out/<run folder name>``; checked
    before anything is written: an unknown format, no runs, two runs of one name, or a destination
    that already holds files (TensorBoard would show both) is an error."""
    from initlab.report.results import discover

    exporter = EXPORTERS.get(fmt, "FORMAT")
    paths = list(paths)
    runs, _ = discover(paths)
    if not runs:
        raise InitlabError(f"no run folders under {', '.join(map(str, paths))}")
    names = [r.path.name for r in runs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InitlabError(f"two run folders are named {dup}: export them separately")
    targets = [Path(out) / n for n in names]
    for t in targets:
        if t.is_dir() and any(t.iterdir()):
            raise InitlabError(f"{t} already holds files: choose another --out, or delete it")
    return exporter, [(r.path, t) for r, t in zip(runs, targets)]


def export(
    fmt: str, paths: Iterable[str | Path], out: str | Path, on_run: Callable[[int, int, Path], None] | None = None
) -> list[tuple[Path, Path, int]]:
    """Export every run folder under ``paths`` in format ``fmt`` into ``out/<run folder name>``
    (``plan_export``); ``on_run(i, n, run)`` reports progress. Returns ``(run folder,
    destination, values written)`` per run."""
    exporter, plan = plan_export(fmt, paths, out)
    done = []
    for i, (run, target) in enumerate(plan):
        if on_run is not None:
            on_run(i, len(plan), run)
        target.mkdir(parents=True, exist_ok=True)
        done.append((run, target, exporter.write(run, target)))
    return done
