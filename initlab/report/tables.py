"""Reports: the runs read back (``initlab.report.results``: single runs and sweeps, found recursively)
with their seeds aggregated, where signals vanish or explode and which setups train; the table's
text formats (CSV, JSON, Markdown) and the per-layer view of one run.

Signal verdicts (at initialization, on the hidden layers): the activation-variance ratio is last /
first hidden layer; the gradient-variance ratio is first / last hidden layer (the back-propagated
∂ℓ/∂z, Glorot & Bengio 2010). A ratio below ``VANISHING`` is *vanishing*, above ``EXPLODING`` is
*exploding*, anything between is *healthy*.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from initlab.errors import ConfigError, InitlabError
from initlab.report.results import (
    RunResult,
    Skipped,
    _is_run_folder,
    apply_filters,
    discover,
    geo_mean,
    key_headers,
    load_run,
    varied_keys,
)
from initlab.runfolder.files import HISTOGRAM_FILE, LAYERS_FILE
from initlab.runfolder.reader import iter_rows, read_layers

VANISHING = 1e-2
EXPLODING = 1e2
SPARK = "▁▂▃▄▅▆▇█"
# Sparkline scale: log10(variance / first layer's) from -SPARK_DECADES to +SPARK_DECADES.
SPARK_DECADES = 4.0
DEAD_LAYER = "dead layer"  # what the per-layer view shows for an undefined symmetry of a layer with act_var 0


def verdict(act_ratio: float, grad_ratio: float) -> str:
    """vanishing / exploding / healthy from the two ratios (see the module docstring)."""
    ratios = [r for r in (act_ratio, grad_ratio) if not math.isnan(r)]
    if not ratios:
        return "n/a"
    if any(r < VANISHING for r in ratios):
        return "vanishing"
    if any(r > EXPLODING or math.isinf(r) for r in ratios):
        return "exploding"
    return "healthy"


def outcome_verdict(signal: str, members: Sequence[RunResult]) -> str:
    """The signal verdict at initialization, with what training then did where the runs did not
    all complete: a run healthy at init that diverged at step 1 is not "healthy"."""
    bad = [r.status for r in members if r.status != "completed"]
    if not bad:
        return signal
    what = bad[0] if len(set(bad)) == 1 else "did not complete"
    return (
        f"{signal} at init, {what}"
        if len(bad) == len(members)
        else f"{signal} at init, {len(bad)}/{len(members)} {what}"
    )


def sparkline(profile: np.ndarray) -> str:
    """One character per layer: log10(variance / first layer's), clipped to ±SPARK_DECADES."""
    if len(profile) == 0 or not np.isfinite(profile[0]) or profile[0] <= 0:
        return ""
    with np.errstate(all="ignore"):
        rel = np.log10(profile / profile[0])
    chars = []
    for v in rel:
        if not np.isfinite(v):
            chars.append("×" if np.isnan(v) else ("█" if v > 0 else "▁"))
            continue
        pos = (np.clip(v, -SPARK_DECADES, SPARK_DECADES) + SPARK_DECADES) / (2 * SPARK_DECADES)
        chars.append(SPARK[min(int(pos * len(SPARK)), len(SPARK) - 1)])
    return "".join(chars)


def _downsample(s: str, width: int = 24) -> str:
    if len(s) <= width:
        return s
    idx = np.linspace(0, len(s) - 1, width).round().astype(int)
    return "".join(s[i] for i in idx)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.array([x for x in values if not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _status_text(runs: Sequence[RunResult]) -> str:
    """``ok`` when every seed completed, the status when they all share one (``running``,
    ``diverged``: how many is the ``n`` column), else the counts (``1 ok, 1 diverged``)."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    if len(counts) == 1:
        (status,) = counts
        return "ok" if status == "completed" else status
    order = sorted(counts.items(), key=lambda kv: (kv[0] != "completed", kv[0]))
    return ", ".join(f"{n} {'ok' if s == 'completed' else s}" for s, n in order)


METRICS = (
    "test_acc",
    "test_loss",
    "steps_to_target",
    "act_ratio_init",
    "act_ratio_end",
    "grad_ratio_init",
    "grad_ratio_end",
)
# The input-output Jacobian at init: max/min singular value, and its mean square measured and predicted.
JACOBIAN_COLUMNS = ("jac_ratio_init", "jac_msq_init", "jac_msq_theory")
COLUMNS = ("status", "seeds", *METRICS, "verdict", "theory_ratio", *JACOBIAN_COLUMNS, "profile")
DEFAULT_COLUMNS = tuple(c for c in COLUMNS if c not in ("jac_msq_init", "jac_msq_theory"))
HEADERS = {
    "seeds": "n",
    "test_acc": "test acc %",
    "test_loss": "test loss",
    "act_ratio_init": "act L/1 init",
    "act_ratio_end": "act L/1 end",
    "grad_ratio_init": "grad 1/L init",
    "grad_ratio_end": "grad 1/L end",
    "profile": "act var by layer (init)",
    "verdict": "signal verdict",
    "theory_ratio": "var L meas/theory",
    "jac_ratio_init": "jac max/min init",
    "jac_msq_init": "jac σ² init",
    "jac_msq_theory": "jac σ² theory",
}


@dataclass
class Report:
    """The aggregated table and what did not fit in it."""

    keys: list[str]  # the configuration columns (varied keys, or --group-by keys)
    rows: list[dict[str, Any]]
    problems: list[dict[str, Any]] = field(default_factory=list)  # diverged / failed / unfinished runs
    skipped: list[Skipped] = field(default_factory=list)
    target: float = 0.9
    columns: list[str] = field(default_factory=lambda: list(DEFAULT_COLUMNS))
    # a width sweep's coordinate-check slopes and best learning rates (initlab.report.width); empty otherwise
    width: list[dict[str, Any]] = field(default_factory=list)
    transfer: list[dict[str, Any]] = field(default_factory=list)
    runs: list[RunResult] = field(default_factory=list)  # the runs behind the rows (after the filters)


def aggregate(runs: Sequence[RunResult], keys: Sequence[str], target: float) -> list[dict[str, Any]]:
    """One row per distinct value of ``keys`` (seeds and everything else aggregated)."""
    groups: dict[str, list[RunResult]] = {}
    for run in runs:
        groups.setdefault(json.dumps([run.flat.get(k) for k in keys], sort_keys=True, default=str), []).append(run)
    rows = []
    for members in groups.values():
        row: dict[str, Any] = {k: members[0].flat.get(k) for k in keys}
        row["status"] = _status_text(members)
        row["seeds"] = len(members)
        for metric, values in (
            ("test_acc", [r.final("test_acc") for r in members]),
            ("test_loss", [r.final("test_loss") for r in members]),
            ("steps_to_target", [r.steps_to(target) for r in members]),
        ):
            row[metric], row[metric + "_std"] = _mean_std(values)
        for when, label in (("init", "init"), ("final", "end")):
            row[f"act_ratio_{label}"] = geo_mean([r.ratio(when, "act_var") for r in members])
            row[f"grad_ratio_{label}"] = geo_mean([r.ratio(when, "grad_var") for r in members])
        row["verdict"] = outcome_verdict(verdict(row["act_ratio_init"], row["grad_ratio_init"]), members)
        row["theory_ratio"] = geo_mean([r.theory_ratio() for r in members])
        row["jac_ratio_init"] = geo_mean([r.jacobian("ratio") for r in members])
        # with singular values below float32's resolution the ratio is a lower bound (≈ 1/(max(m, n)·ε))
        row["jac_ratio_init_bound"] = any(r.jacobian("unresolved") > 0 for r in members)
        row["jac_msq_init"] = geo_mean([r.jacobian("mean_sq") for r in members])
        row["jac_msq_theory"] = geo_mean([r.jacobian_theory() for r in members])
        depths = {len(r.profile("init", "act_var")) for r in members}
        if len(depths) == 1:
            with np.errstate(all="ignore"):
                logs = np.array([np.log10(r.profile("init", "act_var")) for r in members])
                row["profile"] = sparkline(10 ** np.nanmean(logs, axis=0)) if logs.size else ""
        else:
            row["profile"] = ""
        rows.append(row)
    return rows


def _sort_key(column: str):
    def key(row: dict[str, Any]):
        v = row.get(column)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return (1, 0, "")
        if isinstance(v, int | float) and not isinstance(v, bool):
            return (0, float(v), "")
        return (0, 0, str(v))

    return key


def build_report(
    paths: Sequence[str | Path],
    *,
    filters: Sequence[str] = (),
    group_by: Sequence[str] = (),
    sort: str | None = None,
    columns: Sequence[str] | None = None,
    top: int | None = None,
    target: float = 0.9,
) -> Report:
    """Read every run under ``paths`` and aggregate it into a Report (see the CLI for the options)."""
    runs, skipped = discover(paths)
    runs = apply_filters(runs, filters)
    keys = list(group_by) if group_by else varied_keys(runs)
    for k in group_by:
        if runs and all(k not in r.flat for r in runs):
            raise ConfigError(f"--group-by {k}: not a config key of these runs (e.g. model.depth, model.init)")
    rows = aggregate(runs, keys, target)
    all_columns = [*keys, *COLUMNS]
    if sort:
        descending = sort.startswith("-")
        column = sort.lstrip("-")
        if column not in all_columns:
            raise ConfigError(f"--sort {column}: not a column (one of {', '.join(all_columns)})")
        key = _sort_key(column)
        rows.sort(key=key)
        if descending:  # reverse the rows that have a value; rows without one stay last
            rows = [r for r in reversed(rows) if key(r)[0] == 0] + [r for r in rows if key(r)[0] == 1]
    else:
        for k in reversed(keys):
            rows.sort(key=_sort_key(k))
    if top is not None:
        rows = rows[:top]
    chosen = list(DEFAULT_COLUMNS)
    if columns:
        unknown = [c for c in columns if c not in all_columns]
        if unknown:
            raise ConfigError(f"--columns {unknown[0]}: not a column (one of {', '.join(all_columns)})")
        chosen = [c for c in columns if c not in keys]
    problems = []
    for r in runs:
        if r.status not in ("completed",):
            div = r.summary.get("divergence") or {}
            problems.append(
                {
                    "run": str(r.path),
                    "status": r.status,
                    "step": div.get("step", r.summary.get("steps")),
                    "reason": div.get("reason") or r.summary.get("error") or "",
                }
            )
    from initlab.report.width import best_learning_rates, width_slopes

    return Report(keys, rows, problems, skipped, target, chosen, width_slopes(runs), best_learning_rates(runs), runs)


# --------------------------------------------------------------------------------------------
# Rendering


def _fmt_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _fmt_cell(row: dict[str, Any], column: str) -> str:
    v = row.get(column)
    if column == "test_acc" and isinstance(v, float) and not math.isnan(v):
        return f"{100 * v:.2f}±{100 * row['test_acc_std']:.2f}"
    if column == "test_loss" and isinstance(v, float) and not math.isnan(v):
        return f"{v:.3f}±{row['test_loss_std']:.3f}"
    if column == "steps_to_target" and isinstance(v, float):
        return "not reached" if math.isnan(v) else f"{v:.0f}±{row['steps_to_target_std']:.0f}"
    if column.startswith(("act_ratio", "grad_ratio")) and isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.3g}"
    if column == "theory_ratio" and isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3f}"
    if column in JACOBIAN_COLUMNS and isinstance(v, float):
        bound = "≥ " if column == "jac_ratio_init" and row.get("jac_ratio_init_bound") else ""
        return "n/a" if math.isnan(v) else f"{bound}{v:.3g}"
    if column == "profile":
        return _downsample(str(v or ""))
    return _fmt_value(v)


def _header(column: str, target: float) -> str:
    if column == "steps_to_target":
        return f"steps to {100 * target:g}%"
    return HEADERS.get(column, column)


def flat_rows(report: Report) -> list[dict[str, Any]]:
    """Rows with numbers split into mean and std columns: for CSV and JSON."""
    out = []
    for row in report.rows:
        flat = {k: row.get(k) for k in report.keys}
        for c in report.columns:
            flat[c] = row.get(c)
            if c + "_std" in row:
                flat[c + "_std"] = row[c + "_std"]
        out.append(flat)
    return out


def to_csv(report: Report) -> str:
    rows = flat_rows(report)
    buf = io.StringIO()
    fieldnames = list(rows[0]) if rows else [*report.keys, *report.columns]
    w = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in row.items()})
    return buf.getvalue()


def to_json(report: Report) -> str:
    from initlab.runfolder.storage import jsonable

    return (
        json.dumps(
            jsonable(
                {
                    "keys": report.keys,
                    "target": report.target,
                    "rows": flat_rows(report),
                    "problems": report.problems,
                    "skipped": [{"path": str(s.path), "reason": s.reason} for s in report.skipped],
                    "thresholds": {"vanishing": VANISHING, "exploding": EXPLODING},
                    "width_slopes": report.width,
                    "best_learning_rates": report.transfer,
                }
            ),
            indent=2,
        )
        + "\n"
    )


def to_markdown(report: Report) -> str:
    headers = [*key_headers(report.keys), *(_header(c, report.target) for c in report.columns)]
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for row in report.rows:
        cells = [_fmt_value(row.get(k)) for k in report.keys] + [_fmt_cell(row, c) for c in report.columns]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if report.problems:
        lines += ["", "| run | status | step | reason |", "| --- | --- | --- | --- |"]
        lines += [f"| {p['run']} | {p['status']} | {_fmt_value(p['step'])} | {p['reason']} |" for p in report.problems]
    for title, head, cells in extra_tables(report):
        lines += ["", title, "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
    if report.skipped:
        lines += ["", "Skipped: " + "; ".join(f"{s.path} ({s.reason})" for s in report.skipped)]
    return "\n".join(lines) + "\n"


def _slope(measured: float, theory: float) -> str:
    m = "" if math.isnan(measured) else f"{measured:+.2f}"
    return m if math.isnan(theory) else f"{m} ({theory:+.2f})"


def extra_tables(report: Report) -> list[tuple[str, list[str], list[list[str]]]]:
    """The width sweep's tables as (title, headers, rows of cells): the coordinate check's slopes
    and the best learning rate per width."""
    out = []
    if report.width:
        out.append(
            (
                "Width scaling of the change |z_t − z_0| (pre_delta_abs_mean): fitted slope of log change against "
                "log width at the first logged step after 0 where every layer moved (theory's exponent for the "
                "first update in brackets, at step 1)",
                ["configuration", "step", "widths", "input layer", "hidden layers", "output layer"],
                [
                    [
                        r["configuration"],
                        str(r["step"]),
                        r["widths"],
                        _slope(r["input"], r["theory_input"]),
                        _slope(r["hidden"], r["theory_hidden"]),
                        _slope(r["output"], r["theory_output"]),
                    ]
                    for r in report.width
                ],
            )
        )
    if report.transfer:
        out.append(
            (
                "Best learning rate per width (lowest mean test loss over seeds; diverged runs count as worst)",
                ["configuration", "width", "best lr", "test loss", "lrs", "seeds"],
                [
                    [
                        r["configuration"],
                        str(r["width"]),
                        _fmt_value(r["best_lr"]),
                        _fmt_value(r["test_loss"]),
                        str(r["lrs"]),
                        str(r["seeds"]),
                    ]
                    for r in report.transfer
                ],
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Per-layer view of one run


def layer_report(path: str | Path) -> dict[str, Any]:
    """Every statistic of every layer at initialization and at the last logged step of one run:
    ``{"run", "steps": (first, last), "columns", "init": [rows], "end": [rows]}``."""
    from initlab.stats.statistics import COLUMNS as STAT_COLUMNS

    p = Path(path)
    if not (p / LAYERS_FILE).exists():
        hint = " (a sweep folder? pass one of its run folders)" if p.is_dir() and not _is_run_folder(p) else ""
        raise ConfigError(f"--layers {p}: not a run folder with layers.csv{hint}")
    rows = read_layers(p)
    if not rows:
        raise InitlabError(f"{p}/layers.csv has no rows")

    stat_columns = [c for c in STAT_COLUMNS if c in rows[0]]  # the statistics the run computed (log.stats)

    def parse(row: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {"layer": int(row["layer"]), "kind": row["kind"]}
        out.update({c: float(row[c]) if row.get(c) not in (None, "") else math.nan for c in stat_columns})
        return out

    steps = sorted({int(r["step"]) for r in rows})
    first, last = steps[0], steps[-1]
    init = [parse(r) for r in rows if int(r["step"]) == first]
    columns = list(stat_columns)
    theory_note = ""
    loaded = load_run(p)
    theory = loaded.summary.get("theory") if isinstance(loaded, RunResult) else None
    if first == 0 and theory:
        if theory.get("applies"):
            hidden = [r for r in init if r["kind"] == "hidden"]
            last_grad = hidden[-1]["grad_var"] if hidden else math.nan
            for r, q, act, ratio in zip(hidden, theory["q"], theory["act_var"], theory["grad_ratio"]):
                r["pre_var_theory"], r["act_var_theory"], r["grad_ratio_theory"] = q, act, ratio
                r["grad_ratio"] = r["grad_var"] / last_grad if last_grad else math.nan
            for r in init:
                for c in ("pre_var_theory", "act_var_theory", "grad_ratio", "grad_ratio_theory"):
                    r.setdefault(c, math.nan)
            columns = [*columns, "pre_var_theory", "act_var_theory", "grad_ratio", "grad_ratio_theory"]
            theory_note = (
                f"mean-field theory: {theory['phase']} phase, χ₁ = {theory['chi1']:.4g}, "
                f"ξ_c = {theory['xi_c']:.4g}, q⁰ = {theory['q0']:.4g}; grad_ratio is ∂ℓ/∂z variance "
                "relative to the last hidden layer"
            )
        else:
            theory_note = f"mean-field theory does not apply: {theory.get('reason')}"
    end = [parse(r) for r in rows if int(r["step"]) == last]
    for r in end:
        for c in columns[len(stat_columns) :]:
            r.setdefault(c, math.nan)
    config = loaded.flat if isinstance(loaded, RunResult) else {}
    if (p / HISTOGRAM_FILE).exists() and config.get("model.activation"):
        from initlab.theory.shaping import shape_of_flat

        edge = saturated_bins_fraction(
            p / HISTOGRAM_FILE,
            str(config["model.activation"]),
            int(config.get("log.histograms") or 0),
            (first, last),
            shape_of_flat(config),
        )
        for when, step in (("init", first), ("end", last)):
            for r in init if when == "init" else end:
                r["hist_saturated"] = edge.get((step, r["layer"]), math.nan)
        at = columns.index("saturated_frac") + 1 if "saturated_frac" in columns else len(stat_columns)
        columns.insert(at, "hist_saturated")
    return {
        "run": str(p),
        "steps": (first, last),
        "columns": columns,
        "init": init,
        "end": end,
        "theory": theory_note,
        "jacobian": jacobian_note(loaded.summary if isinstance(loaded, RunResult) else {}),
    }


def saturated_bins_fraction(
    path: Path, activation: str, bins: int, steps: Sequence[int], shape=None
) -> dict[tuple[int, int], float]:
    """(step, layer) -> the fraction of the layer's activations in the saturated bins of its
    histogram: the outermost linear bin at each end where the activation's image is bounded (tanh:
    the bins at -1 and +1; sigmoid: at 0 and 1; ReLU: the bin at 0). Layers of an activation
    unbounded on both sides get nothing (NaN in the view)."""
    from initlab.nn.activations import image
    from initlab.runfolder.storage import _edge_text
    from initlab.stats.statistics import make_bins

    lo_img, hi_img = image(activation, shape)
    b = make_bins("act", activation, bins, shape)
    lo, hi = b.edges()
    edge_lo = {_edge_text(lo[1])} if math.isfinite(lo_img) else set()  # counts[1]: the first bin
    edge_hi = {_edge_text(hi[b.n])} if math.isfinite(hi_img) else set()  # counts[n]: the last
    if not edge_lo and not edge_hi:
        return {}
    total: dict[tuple[int, int], int] = {}
    inside: dict[tuple[int, int], int] = {}
    wanted = {str(s) for s in steps}
    for row in iter_rows(path):
        if row["quantity"] != "act" or row["step"] not in wanted:
            continue
        key = (int(row["step"]), int(row["layer"]))
        n = int(row["count"])
        total[key] = total.get(key, 0) + n
        if row["lo"] in edge_lo or row["hi"] in edge_hi:
            inside[key] = inside.get(key, 0) + n
    return {k: inside.get(k, 0) / n for k, n in total.items() if n}


def jacobian_note(summary: dict[str, Any]) -> str:
    """One line on the input-output Jacobian's singular values at init and at the end, beside
    mean-field theory's prediction of their mean square."""
    jac = summary.get("jacobian") or {}
    if not jac:
        return ""
    if not jac.get("applies"):
        return f"input-output Jacobian: not taken ({jac.get('reason')})"

    def part(label: str, s: dict[str, Any]) -> str:
        if s.get("mean_sq") is None:
            return f"{label}: not finite"
        return (
            f"{label}: mean σ² {s['mean_sq']:.4g}, σ max/min {s['max']:.4g}/{s['min']:.4g}, "
            f"{100 * s['frac_near_1']:.0f}% of σ in [0.5, 2]"
        )

    parts = [part("init", jac["init"])]
    if "end" in jac:
        parts.append(part(f"step {jac['end']['step']}", jac["end"]))
    theory = summary.get("theory") or {}
    if theory.get("applies") and theory.get("jacobian_mean_sq") is not None:
        parts.append(f"mean-field mean σ² at init {theory['jacobian_mean_sq']:.4g}")
    return f"input-output Jacobian ∂h^L/∂x on {jac.get('examples')} probe examples: " + "; ".join(parts)


def is_dead(row: dict[str, Any]) -> bool:
    """Whether a per-layer row is a dead layer: activation variance 0, so its ``symmetry`` (a share of
    that variance) is undefined (0/0) and stored as an empty cell."""
    sym, act = row.get("symmetry"), row.get("act_var")
    return isinstance(sym, float) and math.isnan(sym) and act == 0


def layer_cell(row: dict[str, Any], column: str, fmt: Callable[[Any], str]) -> str:
    """One cell of the per-layer view, ``fmt``-formatted; ``dead layer`` for a dead layer's symmetry."""
    return DEAD_LAYER if column == "symmetry" and is_dead(row) else fmt(row[column])


def jsonable_layers(layers: dict[str, Any]) -> dict[str, Any]:
    from initlab.runfolder.storage import jsonable

    return jsonable(layers)


def layers_text(layers: dict[str, Any], fmt: str) -> str:
    """The per-layer view as CSV (long: one row per step and layer) or markdown (two tables). A dead
    layer's undefined symmetry is an empty CSV cell and reads ``dead layer`` in markdown."""
    cols = ["layer", "kind", *layers["columns"]]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["step", *cols])
        for when, step in (("init", layers["steps"][0]), ("end", layers["steps"][1])):
            for row in layers[when]:
                w.writerow([step, *("" if isinstance(row[c], float) and math.isnan(row[c]) else row[c] for c in cols)])
        return buf.getvalue()
    out = []
    for when, step in (("init", layers["steps"][0]), ("end", layers["steps"][1])):
        out += [f"**step {step}**", "", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
        out += ["| " + " | ".join(layer_cell(row, c, _fmt_value) for c in cols) + " |" for row in layers[when]]
        out.append("")
    out += [note + "\n" for note in (layers.get("theory"), layers.get("jacobian")) if note]
    return "\n".join(out)
