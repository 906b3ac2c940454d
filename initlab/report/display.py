"""What runs look like on screen: the training progress bar and the per-layer summary table (the
report table fitted to the terminal: ``initlab.report.report_view``, re-exported here)."""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# The report table fitted to the terminal, re-exported: ``initlab.report.display.report_tables`` keeps working.
from initlab.report.report_view import (  # noqa: F401
    CONFIG_HEADER,
    FOLDED_LINES,
    KEEP_FIRST,
    KEY_LAYOUTS,
    LABEL_HEADER,
    OUTCOMES,
    WRAPPING,
    config_labels,
    config_text,
    fit_columns,
    report_tables,
)

console = Console()
err_console = Console(stderr=True)


def wide_console() -> Console:
    """For tables: the terminal's width (or ``$COLUMNS`` where it is set), else 200 columns when
    writing to a pipe or file, so a redirected report is not squeezed to 80 columns."""
    import os

    columns = os.environ.get("COLUMNS") or ""
    if columns.isdigit():  # read now: the module's console fixed its width when it was made
        return Console(width=int(columns))
    return console if console.is_terminal else Console(width=200)


@contextmanager
def training_progress(name: str, enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar (step, loss, accuracy, steps/s); yields the callback training calls.
    Until training first reports, the run is loading its data and compiling: the bar says so."""
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("acc {task.fields[acc]}"),
        TextColumn("{task.fields[sps]} steps/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task(f"{escape(name)} [dim](compiling)[/]", total=None, loss="–", acc="–", sps="–")

        def update(step: int, total: int, info: dict[str, float]) -> None:
            fields = {
                "loss": lambda v: _fmt_loss(v),
                "acc": lambda v: _fmt(v, pct=True),
                "sps": lambda v: _fmt(v, digits=0),
            }
            names = {"loss": "loss", "acc": "test_acc", "sps": "steps_per_s"}
            # a field the caller did not send keeps its value
            bar.update(
                task,
                description=escape(name),
                completed=step,
                total=total,
                **{f: fmt(info[names[f]]) for f, fmt in fields.items() if names[f] in info},
            )

        yield update
        bar.update(task, description=escape(name))  # done, even where training never reported (0 steps)


def _fmt(v: float | None, pct: bool = False, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if pct:
        return f"{100 * v:.2f}%"
    return f"{v:.{digits}f}" if digits else f"{v:,.0f}"


def _fmt_loss(v: float | None) -> str:
    """A loss: 4 decimals, or 4 significant digits in scientific notation when it is huge or tiny
    (a diverging run's loss is not a 36-digit number)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if math.isinf(v) or abs(v) >= 1e4 or 0 < abs(v) < 1e-3:
        return f"{v:.4g}" if not math.isinf(v) else ("inf" if v > 0 else "-inf")
    return f"{v:.4f}"


def _sci(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3g}"


def _rows_to_show(n: int, limit: int) -> list[int]:
    """All layer indices, or for deep nets the first and last few with even steps between."""
    if n <= limit:
        return list(range(n))
    if n <= 3 * limit:  # one gap: the first and last layers
        return list(range(limit // 2)) + list(range(n - limit // 2, n))
    head, tail = 4, 4
    middle = limit - head - tail
    inner = [head + round(i * (n - head - tail - 1) / (middle - 1)) for i in range(middle)]
    return sorted(set(range(head)) | set(inner) | set(range(n - tail, n)))


def layer_table(summary: dict[str, Any], limit: int = 24) -> Table:
    """Per-layer pre-activation, activation and gradient variance at initialization and at the end."""
    signal = summary.get("signal", {})
    init, final = signal.get("init", {}), signal.get("final", {})
    n = len(init.get("act_var", []))
    table = Table(title=f"per-layer variance, step 0 → step {summary.get('steps', 0)}", title_justify="left")
    table.add_column("layer", justify="right")
    for label in ("pre-act var", "act var", "∂ℓ/∂z var"):
        table.add_column(f"{label} init", justify="right")
        table.add_column(f"{label} end", justify="right")
    shown = _rows_to_show(n, limit)
    for j, i in enumerate(shown):
        if j and i != shown[j - 1] + 1:
            table.add_row("⋮", *[""] * 6)
        name = "out" if i == n - 1 else str(i + 1)
        cells = []
        for key in ("pre_var", "act_var", "grad_var"):
            cells += [_sci(init.get(key, [None] * n)[i]), _sci(final.get(key, [None] * n)[i])]
        table.add_row(name, *cells)
    return table


def run_summary_lines(summary: dict[str, Any]) -> list[str]:
    """The closing lines of `initlab run`: status, accuracy, speed, where the files are."""
    final = summary.get("final", {})
    status = summary.get("status", "?")
    colour = {"completed": "green", "diverged": "yellow"}.get(status, "red")
    lines = [
        f"[{colour}]{status}[/]: {summary.get('steps')} steps, test accuracy "
        f"{_fmt(final.get('test_acc'), pct=True)}, test loss {_fmt_loss(final.get('test_loss'))}"
    ]
    if summary.get("divergence"):
        d = summary["divergence"]
        lines.append(escape(f"diverged at step {d['step']}: {d['reason']}"))
    sps = summary.get("steps_per_second")
    lines.append(
        f"{_fmt(sps, digits=0)} steps/s after {summary.get('compile_time_s', 0):.1f} s compile, "
        f"{summary.get('wall_time_s', 0):.1f} s in all on {summary.get('device', {}).get('platform', '?')}"
    )
    if summary.get("init_trace_file"):
        init = summary.get("config", {}).get("model", {}).get("init", "?")
        lines.append(
            escape(
                f"initialization ({init}): {summary.get('init_time_s', 0):.1f} s, trace in {summary['init_trace_file']}"
            )
        )
    lines.append(escape(f"run folder: {summary['run_dir']}"))
    if summary.get("note"):  # experiment.run's word on a run it did not train (--auto-resume, finished)
        lines.insert(0, escape(summary["note"]))
    return lines


@contextmanager
def sweep_progress(name: str, enabled: bool = True) -> Iterator[Any]:
    """A rich progress display for a sweep (runs done / total, current group, elapsed, remaining);
    yields the ``on_event`` callback ``run_sweep`` calls."""
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[group]}"),
    )
    with Progress(*columns, console=err_console) as bar:
        task = bar.add_task(name, total=None, group="")
        label = [""]

        def on_event(kind: str, info: dict[str, Any]) -> None:
            if kind == "start":
                done = info["total"] - info["todo"]
                bar.update(
                    task,
                    total=info["todo"],
                    group=f"{info['groups']} groups to train"
                    + (f", {done} runs already done" if info["total"] > info["todo"] else ""),
                )
            elif kind == "group":
                label[0] = info["label"]
                bar.update(task, group=info["label"])
            elif kind == "step":  # an in-process group's training steps, beside its label
                bar.update(task, group=f"{label[0]}: step {info['step']:,}/{info['total']:,}")
            elif kind == "done":
                bar.advance(task, info["runs"])

        yield on_event


def interrupted_run_steps(cfg: Any, command: list[str]) -> str:
    """What to run after ``initlab run`` (``command``, its words) was interrupted: the report of
    its run folder, and ``--resume`` where the folder holds a checkpoint ('' if it has no folder)."""
    from initlab.runfolder.files import CHECKPOINT_FILE
    from initlab.runfolder.storage import run_dir_for

    path = run_dir_for(cfg)
    if not path.is_dir():
        return ""
    steps = f"`initlab report {shlex.quote(str(path))}` shows what it logged"
    if (path / CHECKPOINT_FILE).is_file():
        steps += f"; `{shlex.join([*command, '--resume'])}` continues it from its checkpoint"
    return steps


def sweep_next_steps(directory: Any, interrupted: bool = False) -> str:
    """The last line of ``initlab sweep``, or what to run after it was interrupted."""
    report = f"`initlab report {shlex.quote(str(directory))}`"
    if not interrupted:
        return f"next: {report} for the table of results, `initlab plot {shlex.quote(str(directory))}` for figures"
    from initlab.runfolder.files import CHECKPOINTS_DIR

    resumes = any((directory / CHECKPOINTS_DIR).glob("*.pkl"))  # storage.group_checkpoint_path's folder
    return (
        f"{report} shows the runs that finished; the same `initlab sweep` command continues (finished runs "
        "are kept" + (", groups in flight resume from their checkpoints)" if resumes else ")")
    )


def sweep_table(report: Any) -> Table:
    """Counts of run statuses at the end of a sweep."""
    table = Table()
    for col in ("status", "runs"):
        table.add_column(col, justify="right" if col == "runs" else "left")
    colours = {"completed": "green", "diverged": "yellow", "failed": "red"}
    counts: dict[str, int] = {}
    for status in report.statuses.values():
        counts[status] = counts.get(status, 0) + 1
    for status, n in sorted(counts.items()):
        table.add_row(f"[{colours.get(status, 'white')}]{status}[/]", str(n))
    return table


def dry_run_table(runs: list[Any], groups: list[list[Any]]) -> Table:
    """The expanded runs of a sweep, their status and the group each would train in."""
    group_of = {run.hash: i + 1 for i, g in enumerate(groups) for run in g}
    keys = list(dict.fromkeys(k for run in runs for k in run.varied))
    table = Table(title=f"{len(runs)} runs, {len(group_of)} to train in {len(groups)} groups", title_justify="left")
    table.add_column("#", justify="right")
    for key in keys:
        table.add_column(key)
    table.add_column("folder")
    table.add_column("group", justify="right")
    from initlab.runfolder.storage import run_status

    for i, run in enumerate(runs):
        group = group_of.get(run.hash)
        table.add_row(
            str(i + 1),
            *[str(run.varied.get(k, "")) for k in keys],
            run.path.name,
            str(group) if group else f"({run_status(run.path)})",
        )
    return table


def layer_tables(layers: dict[str, Any], width: int = 200) -> list[Table]:
    """Every per-layer statistic at initialization and at the end of one run (a dead layer's undefined
    symmetry reads ``dead layer``). Columns that do not fit in ``width`` go on to further tables
    for the same step, each led by the layer column, so no number is cut short."""
    from initlab.report.tables import DEAD_LAYER, layer_cell

    tables = []
    for when, step in (("init", layers["steps"][0]), ("end", layers["steps"][1])):
        notes = [layers.get("theory"), layers.get("jacobian")] if when == "init" else []
        columns = [c for c in layers["columns"] if when == "init" or not c.endswith(("_theory", "grad_ratio"))]
        names = ["out" if row["kind"] == "output" else str(row["layer"]) for row in layers[when]]
        cells = {c: [layer_cell(row, c, _sci) for row in layers[when]] for c in columns}
        need = {c: max([len(c), *(len(v) for v in cells[c])]) + 3 for c in columns}  # cell, padding, rule
        if "symmetry" in need:
            need["symmetry"] = max(need["symmetry"], len(DEAD_LAYER) + 3)
        parts: list[list[str]] = [[]]
        used = max([len("layer"), *map(len, names)]) + 4
        for c in columns:
            if parts[-1] and sum(need[x] for x in parts[-1]) + need[c] + used > width:
                parts.append([])
            parts[-1].append(c)
        for i, part in enumerate(parts):
            more = f" ({i + 1}/{len(parts)})" if len(parts) > 1 else ""
            last = i == len(parts) - 1
            t = Table(
                title=f"{layers['run']}: step {step}{more}",
                title_justify="left",
                caption="\n".join(n for n in notes if n) or None if last else None,
                caption_justify="left",
            )
            t.add_column("layer", justify="right", no_wrap=True)
            for c in part:  # a dead layer's mark is kept on one line however narrow the table
                t.add_column(
                    c,
                    justify="right",
                    style="cyan" if c.endswith("_theory") else None,
                    no_wrap=True,
                    min_width=need[c] - 3,
                )
            for r, name in enumerate(names):
                t.add_row(name, *[cells[c][r] for c in part])
            tables.append(t)
    return tables


def theory_config_view(pred: dict[str, Any], cfg: Any, limit: int = 24) -> list[Any]:
    """Per-layer predictions for a configured network, and its phase figures."""
    if not pred.get("applies"):
        return [escape(f"mean-field theory does not apply to this configuration: {pred['reason']}")]
    t = Table(
        title=f"mean-field predictions at initialization: {cfg.model.activation}, {cfg.model.init}, "
        f"depth {cfg.model.depth}",
        title_justify="left",
    )
    for c in ("layer", "pre-act var q^l", "act var", "∂ℓ/∂z var / last layer's"):
        t.add_column(c, justify="right")
    n = len(pred["q"])
    shown = _rows_to_show(n, limit)
    for j, i in enumerate(shown):
        if j and i != shown[j - 1] + 1:
            t.add_row("⋮", "", "", "")
        t.add_row(str(i + 1), _sci(pred["q"][i]), _sci(pred["act_var"][i]), _sci(pred["grad_ratio"][i]))
    lines = [
        f"σ_w² = {pred['sigma_w2']:.4g} (first layer {pred['sigma_w2_first']:.4g}), σ_b² = {pred['sigma_b2']:.4g}, "
        f"input q⁰ = {pred['q0']:.4g}",
        f"q* = {_sci(pred['q_star'])}, χ₁ = {_sci(pred['chi1'])}: {pred['phase']} phase"
        + (
            f" (critical σ_w² at this σ_b²: {pred['critical_sigma_w2']:.4g})"
            if math.isfinite(pred.get("critical_sigma_w2", math.nan))
            else ""
        ),
        f"ξ_c = {_sci(pred['xi_c'])}, ξ_q = {_sci(pred['xi_q'])}; "
        + (
            f"6ξ_c = {_sci(pred['max_trainable_depth'])}, but {pred['depth_scale_caveat']} (Schoenholz et al. 2017 "
            "assume a finite, nonzero q*)"
            if pred.get("depth_scale_caveat")
            else f"trainable to depth ≈ 6ξ_c = {_sci(pred['max_trainable_depth'])} (Schoenholz et al. 2017)"
        ),
        f"input-output Jacobian ∂h^L/∂x: mean squared singular value tr(JJᵀ)/width = {_sci(pred['jacobian_mean_sq'])} "
        "(the product of the layers' χ; Pennington et al. 2017)",
        *_format_lines(pred),
        *_shaping_lines(pred),
        *_reparam_lines(pred),
    ]
    return [t, *lines]


def _reparam_lines(pred: dict[str, Any]) -> list[str]:
    """How a weight reparameterization enters the maps (scaled WS: the centred activation)."""
    r = pred.get("reparam")
    return [f"{r['method']}: γ = {r['gain']:.6g}, the maps {r['maps']}"] if r else []


def _shaping_lines(pred: dict[str, Any]) -> list[str]:
    """A kernel-shaped activation's transformation and the local Q/C-map numbers that define it."""
    s = pred.get("shaping")
    if not s:
        return []
    args = ", ".join(f"{k} = {v:g}" for k, v in s["args"].items())
    maps = ", ".join(f"{k} = {v:.6g}" for k, v in s["maps"].items())
    return [
        f"kernel shaping {s['method']} ({args}): φ̂ with {s['transformation']}",
        f"local maps at q = 1 and the whole net's over its depth: {maps}",
    ]


def _format_lines(pred: dict[str, Any]) -> list[str]:
    """The predicted gradient scale against each number format's smallest normal number: one line
    per format (``initlab.theory.mean_field.format_crossings``); none for predictions made before it existed."""
    if "formats" not in pred:
        return []
    rms, depth = pred["grad_rms"], len(pred["grad_rms"]) - 1
    name = lambda k: "the output layer" if k == depth + 1 else f"layer {k}"  # noqa: E731
    lines = [
        f"each example's ∂ℓ/∂z at init, rms per entry: {_sci(rms[-1])} at the logits, {_sci(rms[depth - 1])} at "
        f"layer {depth}, {_sci(rms[0])} at layer 1. A format holds loss scale × ∂L/∂z of the mean loss, so ÷ "
        f"batch {pred['batch_size']}; the rms is a typical entry, and some entries underflow layers sooner"
    ]
    for fmt, d in pred["formats"].items():
        head = f"{fmt} (the run's format)" if d["run"] else fmt
        what = f"rms per entry, batch {pred['batch_size']}, loss scale {d['loss_scale']:g}"
        tiny = f"{d['smallest_normal']:.2g}"
        if d["crossing"] is not None:
            lines.append(f"{head}: gradients ({what}) below the smallest normal {tiny} from {name(d['crossing'])} down")
        elif d["below"]:
            lines.append(
                f"{head}: gradients ({what}) below the smallest normal {tiny} at {len(d['below'])} "
                f"layers, {name(d['below'][0])} to {name(d['below'][-1])} (not at layer 1)"
            )
        else:
            lines.append(
                f"{head}: no layer below its smallest normal {tiny} (lowest rms {_sci(d['min_rms'])} at "
                f"{name(d['min_layer'])}; {what})"
            )
    return lines


def phase_view(table: dict[str, Any]) -> list[Any]:
    """The order-to-chaos table of one activation at one σ_b²."""
    crit = table["critical_sigma_w2"]
    head = (
        f"{table['activation']}, σ_b² = {table['sigma_b2']:g}: critical σ_w² = {crit:.4g}"
        if math.isfinite(crit)
        else f"{table['activation']}, σ_b² = {table['sigma_b2']:g}: no critical σ_w² found"
    )
    t = Table(title=head, title_justify="left")
    for c in ("σ_w²", "q*", "χ₁", "phase", "c*", "ξ_c", "6ξ_c"):
        t.add_column(c, justify="left" if c == "phase" else "right")
    caveats = []
    for r in table["rows"]:
        mark = ""
        if r.get("caveat"):
            caveats = list(dict.fromkeys([*caveats, r["caveat"]]))
            mark = "*" * (caveats.index(r["caveat"]) + 1)
        t.add_row(
            f"{r['sigma_w2']:g}",
            _sci(r["q_star"]),
            _sci(r["chi1"]),
            r["phase"],
            _sci(r["c_star"]),
            _sci(r["xi_c"]),
            _sci(r["max_trainable_depth"]) + mark,
        )
    notes = [
        escape(f"{'*' * (i + 1)} {c} (Schoenholz et al. 2017's depth scales assume a finite, nonzero q*)")
        for i, c in enumerate(caveats)
    ]
    return [t, *notes]


def config_keys_view(section: str | None = None) -> list[Any]:
    """Every config key (or one section's) with its default, what it accepts and its help; then
    each initializer's arguments (what ``model.init_args`` / ``model.bias_init_args`` take)."""
    from initlab.config import allowed_text, describe_fields
    from initlab.errors import InitlabError
    from initlab.nn.initializers import BIAS_INITIALIZERS, INITIALIZERS

    rows = [r for r in describe_fields() if section is None or r[0].startswith(section + ".") or r[0] == section]
    if not rows:
        sections = sorted({k.split(".")[0] for k, _, _ in describe_fields() if "." in k})
        raise InitlabError(f"--section {section!r}: not a config section (sections: {', '.join(sections)})")
    t = Table(title="config keys" + (f": {section}" if section else ""), title_justify="left", show_lines=False)
    t.add_column("key", no_wrap=True)
    for c in ("default", "allowed", "meaning"):
        t.add_column(c, overflow="fold")
    for key, help_text, default in rows:
        shown = (
            "null"
            if default is None
            else ", ".join(map(str, default))
            if isinstance(default, tuple | list)
            else str(default)
        )
        t.add_row(key, escape(shown), escape(allowed_text(key)), escape(help_text))
    items: list[Any] = [t]
    if section in (None, "model"):
        a = Table(title="initializer arguments (model.init_args, model.bias_init_args)", title_justify="left")
        for c in ("initializer", "arguments (default)"):
            a.add_column(c, overflow="fold")
        for label, registry in (("model.init", INITIALIZERS), ("model.bias_init", BIAS_INITIALIZERS)):
            for name, entry in registry.items():
                args = ", ".join(f"{k} ({v:g})" for k, v in entry.args.items()) or "none"
                a.add_row(escape(f"{label}: {name}"), escape(args))
        items.append(a)
    return items
