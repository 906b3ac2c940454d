"""The report table on the console (``initlab report``): the aggregated rows fitted to the terminal's
width (config keys as columns, folded, or as labels with a legend, before an outcome column is left
out), then the runs that did not complete, the extra tables and the skipped folders. Re-exported by
``initlab.report.display``.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


# The outcome of each configuration: a narrow terminal folds the config keys before it leaves
# any of these out.
OUTCOMES = ("status", "test_acc", "act_ratio_init", "grad_ratio_init", "verdict")
# Which further report columns a narrow terminal keeps first.
KEEP_FIRST = (
    *OUTCOMES,
    "seeds",
    "test_loss",
    "steps_to_target",
    "act_ratio_end",
    "grad_ratio_end",
    "theory_ratio",
    "jac_ratio_init",
    "jac_msq_init",
    "jac_msq_theory",
    "profile",
)
# How the config keys are shown, from the widest to the narrowest: a column per key; one
# ``configuration`` column of ``key=value`` words wrapped at spaces; a short label per row, with
# the labels' values in a table of their own.
KEY_LAYOUTS = ("columns", "folded", "labels")
CONFIG_HEADER, LABEL_HEADER = "configuration", "config"
FOLDED_LINES = 3  # the most lines a row's folded config keys take; where they need more, labels


def config_text(report: Any, row: dict[str, Any]) -> str:
    """A row's config keys as ``depth=10 init=he_normal`` (keys the row's runs do not set left out)."""
    from initlab.report.results import config_label
    from initlab.report.tables import _fmt_value

    return config_label(row, report.keys, fmt=_fmt_value, sep=" ")


def config_labels(report: Any) -> list[str]:
    """A short label per row (``c1``, ``c2``, ...) for the ``labels`` layout."""
    return [f"c{i + 1}" for i in range(len(report.rows))]


def _fits(table: Table, width: int) -> bool:
    """Whether rich lays ``table`` out in ``width`` columns without cutting a word or a number."""
    import io

    out = io.StringIO()
    Console(file=out, width=width, color_system=None, force_terminal=False).print(table, crop=False)
    text = out.getvalue()
    return "…" not in text and all(len(line) <= width for line in text.splitlines())


def fit_columns(report: Any, width: int) -> tuple[str, list[str], list[str]]:
    """How the report fits in ``width`` terminal columns: the layout of its config keys (the first
    of ``KEY_LAYOUTS`` in which the outcome columns, ``OUTCOMES``, fit beside them) and the columns
    shown, added in ``KEEP_FIRST`` order while the table, as rich lays it out at that width, cuts no
    header word, number or config value; and the columns left out."""

    def fits(layout: str, columns: list[str]) -> bool:
        return _fits(_main_table(report, columns, None, layout), width)

    ordered = sorted(report.columns, key=lambda c: KEEP_FIRST.index(c) if c in KEEP_FIRST else len(KEEP_FIRST))
    outcomes = [c for c in report.columns if c in OUTCOMES]
    layouts = KEY_LAYOUTS if report.keys else KEY_LAYOUTS[:1]
    layout = next((k for k in layouts if fits(k, outcomes)), layouts[-1])
    kept: list[str] = outcomes
    for c in ordered:
        trial = [x for x in report.columns if x in kept or x == c]
        if c not in kept and (not kept or fits(layout, trial)):
            kept = trial
    return layout, kept, [c for c in report.columns if c not in kept]


WRAPPING = ("status", "verdict", "steps_to_target")  # report columns whose cells may wrap at spaces


def _least(header: str, texts: list[str], wrap: bool) -> int:
    """No header word, no number and no config value is ever cut: the narrowest a column may be."""
    parts = [w for t in texts for w in t.split()] if wrap else texts
    return max([*map(len, header.split()), *map(len, parts)], default=1)


def _main_table(report: Any, columns: list[str], caption: str | None, layout: str = "columns") -> Table:
    from initlab.report.results import key_headers
    from initlab.report.tables import _fmt_cell, _fmt_value, _header

    colours = {"vanishing": "blue", "exploding": "red", "healthy": "green"}
    main = Table(
        title=f"{len(report.rows)} configurations",
        title_justify="left",
        caption=caption,
        caption_justify="left",
        show_lines=layout == "folded",
    )  # rows of several lines, told apart
    if layout == "columns":
        key_cells = [[_fmt_value(r.get(k)) for k in report.keys] for r in report.rows]
        for i, head in enumerate(key_headers(report.keys)):
            main.add_column(head, min_width=_least(head, [cells[i] for cells in key_cells], False))
    elif layout == "folded":
        key_cells = [[config_text(report, r)] for r in report.rows]
        texts = [c[0] for c in key_cells]
        # wide enough that a row's keys take at most FOLDED_LINES lines (the words' lengths + spaces)
        lines = max([math.ceil((len(t) + 1) / FOLDED_LINES) for t in texts], default=1)
        main.add_column(CONFIG_HEADER, min_width=max(_least(CONFIG_HEADER, texts, True), lines + 1))
    else:
        key_cells = [[label] for label in config_labels(report)]
        main.add_column(LABEL_HEADER, no_wrap=True)
    for c in columns:
        head = _header(c, report.target)
        main.add_column(
            head,
            justify="left" if c in ("status", "verdict", "profile") else "right",
            min_width=_least(head, [_fmt_cell(r, c) for r in report.rows], c in WRAPPING),
        )
    for row, keys in zip(report.rows, key_cells):
        cells = [escape(k) for k in keys]
        for c in columns:
            text = escape(_fmt_cell(row, c))
            # "healthy at init, diverged": the outcome's colour, not the signal's
            colour = "yellow" if " at init, " in text else colours.get(text)
            cells.append(f"[{colour}]{text}[/]" if c == "verdict" and colour else text)
        main.add_row(*cells)
    return main


def _labels_table(report: Any, width: int) -> Table:
    """The ``labels`` layout's legend: each label's config keys, a column each where they fit in
    ``width``, else as ``key=value`` words wrapped at spaces."""
    from initlab.report.results import key_headers
    from initlab.report.tables import _fmt_value

    labels = config_labels(report)
    t = Table(title="configurations", title_justify="left")
    t.add_column(LABEL_HEADER, no_wrap=True)
    for head in key_headers(report.keys):
        t.add_column(head, no_wrap=True)
    for label, row in zip(labels, report.rows):
        t.add_row(label, *(escape(_fmt_value(row.get(k))) for k in report.keys))
    if _fits(t, width):
        return t
    t = Table(title="configurations", title_justify="left")
    t.add_column(LABEL_HEADER, no_wrap=True)
    t.add_column("config keys that differ", overflow="fold")
    for label, row in zip(labels, report.rows):
        t.add_row(label, escape(config_text(report, row)))
    return t


def report_tables(report: Any, width: int | None = None) -> list[Table]:
    """The report as rich tables: the aggregated rows, then problem runs, then skipped folders.
    With ``width``, the outcome columns come first: the config keys are folded into one column, or
    shown as labels with a table of their values, before any of ``OUTCOMES`` is left out, and the
    other columns that do not fit are left out (and named in the caption) rather than squeezed
    until keys and numbers are unreadable."""
    from initlab.report.tables import EXPLODING, VANISHING, _fmt_value, extra_tables

    layout, columns, left_out = fit_columns(report, width) if width else ("columns", list(report.columns), [])
    caption = f"verdict at init: a variance ratio below {VANISHING:g} is vanishing, above {EXPLODING:g} exploding"
    if left_out:
        caption += (
            f"\nleft out at this width ({width} columns): {', '.join(left_out)}; choose with --columns, "
            "or widen the terminal"
        )
    tables = [_main_table(report, columns, caption, layout)]
    if layout == "labels":
        tables.append(_labels_table(report, width or 200))
    if report.problems:
        t = Table(title="runs that did not complete", title_justify="left")
        for c in ("run", "status", "step", "reason"):
            t.add_column(c, overflow="fold")  # a long path or reason wraps, never ends in "…"
        for p in report.problems:
            t.add_row(escape(p["run"]), p["status"], _fmt_value(p["step"]), escape(str(p["reason"])))
        tables.append(t)
    for title, head, rows in extra_tables(report):
        t = Table(title=title, title_justify="left")
        for i, c in enumerate(head):
            t.add_column(c, overflow="fold", justify="left" if i == 0 else "right")
        for row in rows:
            t.add_row(*(escape(c) for c in row))
        tables.append(t)
    if report.skipped:
        t = Table(title="skipped folders", title_justify="left")
        t.add_column("folder", overflow="fold")
        t.add_column("reason", overflow="fold")
        for s in report.skipped:
            t.add_row(escape(str(s.path)), escape(s.reason))
        tables.append(t)
    return tables
