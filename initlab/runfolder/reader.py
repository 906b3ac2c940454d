"""Reading a run folder back: the one reader of the files ``runfolder.storage`` writes (names and
columns from ``runfolder.files``). Plain Python and numpy out: the reports draw and tabulate them,
the Python API (``initlab.api``) makes pandas DataFrames of them. Nothing here trains or writes."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from initlab.errors import InitlabError
from initlab.runfolder.files import HISTOGRAM_COLUMNS, JACOBIAN_COLUMNS, LAYERS_FILE, METRICS_FILE, SUMMARY_FILE


def load_summary(run_dir: str | Path) -> Any:
    """The run folder's summary.json as parsed JSON; ``OSError`` (missing, unreadable) and
    ``ValueError`` (not JSON) reach the caller, who says what a bad one means."""
    return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The run folder's summary.json as a mapping; empty when it is missing or unreadable."""
    try:
        summary = load_summary(run_dir)
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def iter_rows(path: str | Path) -> Iterator[dict[str, str]]:
    """A CSV's rows, one at a time, as {column: cell text}; a row cut short (a file being written,
    or killed mid-write) has None for its missing cells."""
    with open(path, newline="") as f:
        yield from csv.DictReader(f)


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """Every row of a CSV, as ``iter_rows`` reads them."""
    return list(iter_rows(path))


def read_metrics(run_dir: str | Path) -> list[dict[str, str]]:
    """metrics.csv's rows: one per logged step and epoch end."""
    return read_rows(Path(run_dir) / METRICS_FILE)


def read_layers(run_dir: str | Path) -> list[dict[str, str]]:
    """layers.csv's rows: one per (logged step, layer)."""
    return read_rows(Path(run_dir) / LAYERS_FILE)


def _column(cells: Sequence[str]) -> np.ndarray:
    """One CSV column typed as pandas' ``read_csv`` types it: int64 when every cell is an integer,
    bool when every cell is True or False, else float64 when every non-empty cell is a number
    (empty cells NaN), else object (strings, NaN for empty cells); object when the file has no rows."""
    if not cells:
        return np.array([], dtype=object)
    try:
        return np.array([int(c) for c in cells], dtype=np.int64)
    except (ValueError, OverflowError):
        pass
    if all(c in ("True", "False") for c in cells):
        return np.array([c == "True" for c in cells], dtype=bool)
    try:
        return np.array([float(c) if c else math.nan for c in cells], dtype=np.float64)
    except ValueError:
        return np.array([c if c else math.nan for c in cells], dtype=object)


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """A CSV as {column: typed values} in the file's column order (types as ``_column``; the
    missing cells of a row cut short are empty)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        rows = [row for row in reader if row]  # a blank line is no row (as csv.DictReader and pandas read it)
    return {name: _column([row[i] if i < len(row) else "" for row in rows]) for i, name in enumerate(header)}


def _cell(text: str) -> float:
    """A float cell: written with repr (``inf``, ``-inf``), NaN as an empty cell."""
    return float(text) if text else math.nan


def _check_header(path: Path, header: list[str] | None, columns: Sequence[str]) -> None:
    if header != list(columns):
        raise InitlabError(f"{path}: expected columns {','.join(columns)}, found {','.join(header or []) or 'none'}")


class HistogramRows(NamedTuple):
    """One quantity's rows of a histograms.csv (hidden layers), in file order: a non-empty bin each."""

    step: np.ndarray  # (rows,) int
    layer: np.ndarray  # (rows,) int, 1-based
    lo: np.ndarray  # (rows,) lower edges; -inf for underflow, NaN for the NaN bin
    hi: np.ndarray  # (rows,) upper edges; +inf for overflow, NaN for the NaN bin
    count: np.ndarray  # (rows,) values in each bin (float: 3.0 is read too)


def read_histograms(path: str | Path, quantity: str) -> HistogramRows:
    """The hidden layers' histogram rows of ``quantity`` (pre, act, grad or weight) in a
    histograms.csv, read in one pass that keeps only that quantity's rows; an InitlabError naming
    the file (and line) when it is not one."""
    path = Path(path)
    cols: tuple[list, ...] = ([], [], [], [], [])
    with open(path, newline="") as f:
        reader = csv.reader(f)
        _check_header(path, next(reader, None), HISTOGRAM_COLUMNS)
        try:
            for step, layer, kind, q, lo, hi, count in reader:
                if q == quantity and kind == "hidden":
                    for col, value in zip(cols, (int(step), int(layer), _cell(lo), _cell(hi), float(count))):
                        col.append(value)
        except ValueError as e:
            raise InitlabError(f"{path}, line {reader.line_num}: not a histograms.csv row ({e})") from None
    step, layer, lo, hi, count = cols
    return HistogramRows(
        np.array(step, dtype=int),
        np.array(layer, dtype=int),
        np.array(lo, dtype=float),
        np.array(hi, dtype=float),
        np.array(count, dtype=float),
    )


def read_jacobian(path: str | Path) -> dict[int, np.ndarray]:
    """A jacobian.csv as {step: the singular values of every probe example at that step, pooled}."""
    path = Path(path)
    by_step: dict[int, list[float]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        _check_header(path, next(reader, None), JACOBIAN_COLUMNS)
        try:
            for step, _example, _index, value in reader:
                by_step.setdefault(int(step), []).append(_cell(value))
        except ValueError as e:
            raise InitlabError(f"{path}, line {reader.line_num}: not a jacobian.csv row ({e})") from None
    return {s: np.array(v, dtype=float) for s, v in sorted(by_step.items())}
