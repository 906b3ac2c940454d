"""``initlab report --format html``: the report as one self-contained, interactive page.

The page holds the report table (click a header to sort), per-layer profiles of the activation and
gradient variances with a slider over the logged steps, the distributions of ``histograms.csv``
(``log.histograms``; issue "distributions") for a chosen run, quantity and layer at the slider's
step, and the training curves, drawn by plotly
with its JavaScript embedded in the file: it opens offline, from a USB stick or an e-mail, with no
CDN. Reads the same run folders as the other formats (``tables.build_report``); plotly is imported
only here (the ``html`` extra).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from initlab.errors import InitlabError
from initlab.report.plot import QUANTITIES, read_histograms
from initlab.report.results import RunResult, config_label, key_headers
from initlab.report.tables import Report, _fmt_cell, _fmt_value, _header
from initlab.runfolder.files import HISTOGRAM_FILE, LAYERS_FILE, METRICS_FILE
from initlab.runfolder.reader import iter_rows

# The per-layer statistics the profile views show (hidden layers; a dropdown is one figure each).
PROFILE_STATS = {
    "act_var": "activation variance Var[a]",
    "grad_var": "gradient variance Var[∂ℓ/∂z]",
    "pre_var": "pre-activation variance Var[z]",
}
MAX_PROFILE_RUNS = 24  # traces per profile: beyond that the legend is unreadable (the table has them all)
MAX_HIST_STEPS = 32  # logged steps of histograms.csv per run in the page (a long run's file is megabytes)


def _float(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _read_csv(path: Path) -> list[dict[str, str]]:
    """A CSV's rows, without a partial one (a run being written, or killed mid-write, can end in a
    row cut short: its missing cells would read as None)."""
    if not path.is_file():
        return []
    return [row for row in iter_rows(path) if None not in row.values()]


def run_label(run: RunResult, keys: list[str]) -> str:
    """The run's varied config values (and seed), or its folder name where nothing varies."""
    shown = [k for k in keys if k != "seed"] + ["seed"]
    label = config_label(
        run.flat, shown, headers=[k.rsplit(".", 1)[-1] for k in shown], fmt=_fmt_value, skip_none=False
    )
    return label if sum(k in run.flat for k in shown) > 1 or "seed" in keys else run.path.name


def profiles(run: RunResult) -> dict[str, Any]:
    """A run's hidden-layer statistics per logged step: ``{"steps": [...], stat: [[per layer] per step]}``."""
    by_step: dict[int, dict[str, list]] = {}
    for row in _read_csv(run.path / LAYERS_FILE):
        if row.get("kind") != "hidden":
            continue
        cell = by_step.setdefault(int(row["step"]), {s: [] for s in PROFILE_STATS})
        for s in PROFILE_STATS:
            cell[s].append(_float(row.get(s, "")))
    steps = sorted(by_step)
    return {"steps": steps, **{s: [by_step[t][s] for t in steps] for s in PROFILE_STATS}}


def _edge(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def histograms(run: RunResult, max_steps: int = MAX_HIST_STEPS) -> dict[str, dict[str, dict[str, list]]] | None:
    """A run's histograms.csv (``log.histograms``, read by ``plot.read_histograms``) as
    ``{quantity: {step: {layer: [[lo, hi, count], ...]}}}`` (hidden layers), or None where it has none.
    The open-ended outer bins and the NaN bin keep ``None`` for their edges that are not finite. At most
    ``max_steps`` (≥ 2) logged steps are kept, evenly spread, the first and the last among them, so that a
    long run's page stays small."""
    path = run.path / HISTOGRAM_FILE
    if not path.is_file():
        return None
    out: dict[str, dict[str, dict[str, list]]] = {}
    for name in QUANTITIES:
        h = read_histograms(path, name)
        logged = h.steps()
        if len(logged) > max_steps:
            logged = sorted({logged[round(i * (len(logged) - 1) / (max_steps - 1))] for i in range(max_steps)})
        for step in logged:
            out.setdefault(name, {})[str(step)] = {
                str(layer): [[_edge(lo), _edge(hi), int(c)] for lo, hi, c in zip(*h.bins(step, layer))]
                for layer in h.layers(step)
            }
    return out or None


def curves(run: RunResult) -> dict[str, list]:
    """A run's training curves from metrics.csv: train loss at every row, test accuracy where evaluated."""
    rows = _read_csv(run.path / METRICS_FILE)
    out: dict[str, list] = {"loss_step": [], "train_loss": [], "acc_step": [], "test_acc": []}
    for r in rows:
        loss, acc = _float(r.get("train_loss", "")), _float(r.get("test_acc", ""))
        if loss is not None:
            out["loss_step"].append(int(r["step"]))
            out["train_loss"].append(loss)
        if acc is not None:
            out["acc_step"].append(int(r["step"]))
            out["test_acc"].append(acc)
    return out


def table_html(report: Report) -> str:
    """The report table; each cell carries its number (``data-v``) for sorting."""
    heads = [*key_headers(report.keys), *(_header(c, report.target) for c in report.columns)]
    cols = [*report.keys, *report.columns]
    th = "".join(f'<th data-col="{i}" title="click to sort">{html.escape(h)}</th>' for i, h in enumerate(heads))
    body = []
    for row in report.rows:
        cells = []
        for c in cols:
            v = row.get(c)
            text = _fmt_value(v) if c in report.keys else _fmt_cell(row, c)
            num = v if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None
            sort_value = html.escape(json.dumps(num if num is not None else str(text)))
            cells.append(f"<td data-v='{sort_value}'>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table id="report"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody>'
        "</table></div>"
    )


def _div(fig, div: str) -> str:
    """A figure as a <div> (plotly.js is inlined once, in the page's head), as wide as the page."""
    return fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=div, default_width="100%", config={"responsive": True}
    )


def _profile_figure(labels: list[str], data: list[dict], stat: str, div: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, d in zip(labels, data):
        y = d[stat][0] if d["steps"] else []
        fig.add_trace(go.Scatter(x=list(range(1, len(y) + 1)), y=y, mode="lines+markers", name=label))
    fig.update_layout(
        title=PROFILE_STATS[stat],
        xaxis_title="hidden layer",
        yaxis_title=stat,
        yaxis_type="log",
        height=460,
        margin=dict(l=60, r=20, t=50, b=50),
        legend=dict(font=dict(size=10)),
    )
    return _div(fig, div)


def _curve_figure(labels: list[str], data: list[dict], x: str, y: str, title: str, log: bool, div: str):
    import plotly.graph_objects as go

    fig = go.Figure([go.Scatter(x=d[x], y=d[y], mode="lines", name=label) for label, d in zip(labels, data)])
    fig.update_layout(
        title=title,
        xaxis_title="step",
        yaxis_title=y,
        yaxis_type="log" if log else "linear",
        height=400,
        margin=dict(l=60, r=20, t=50, b=50),
        legend=dict(font=dict(size=10)),
    )
    return _div(fig, div)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }}
th {{ background: #f0f0f0; cursor: pointer; user-select: none; }}
th.asc::after {{ content: " ▲"; }} th.desc::after {{ content: " ▼"; }}
.row > div {{ margin-bottom: 0.5em; }}
.slider {{ margin: 0.5em 0 1em; }} .slider input {{ width: 60%; vertical-align: middle; }}
.note {{ color: #666; font-size: 13px; }}
</style>
<script>{plotlyjs}</script>
</head><body>
<h1>{title}</h1>
<p class="note">{note}</p>
<h2>Runs</h2>
{table}
{problems}
<h2>Per-layer profiles</h2>
<p class="note">Each hidden layer's statistic on the probe batch at one logged step; move the slider to walk
through training.{capped}</p>
<div class="slider"><label for="step-slider">step <b id="step-label">{first_step}</b></label>
<input type="range" id="step-slider" min="0" max="{last_index}" value="0" step="1"></div>
<div class="row">{profile_divs}</div>
<h2>Distributions</h2>
<p class="note">{hist_note}</p>
<div class="slider" id="hist-controls" style="{hist_style}">run <select id="hist-run">{hist_runs}</select>
quantity <select id="hist-quantity">{hist_quantities}</select>
layer <select id="hist-layer"></select> (at the slider's step)</div>
<div id="histogram" style="{hist_style}"></div>
<h2>Training curves</h2>
<div class="row">{curve_divs}</div>
<script>
const PROFILES = {profiles};
const HISTS = {hists};  // per shown run: {{quantity: {{step: {{layer: [[lo, hi, count]]}}}}}} or null
const LABELS = {labels};
const LOG2_BINS = {log2_bins};
function showHistogram(step) {{
  const sel = document.getElementById("hist-run");
  if (!sel.value) return;
  const h = HISTS[Number(sel.value)], q = document.getElementById("hist-quantity").value;
  const layer = document.getElementById("hist-layer").value;
  const byStep = (h && h[q]) || {{}};
  const logged = Object.keys(byStep).map(Number).filter(t => t <= step);
  const at = logged.length ? Math.max(...logged) : null;
  const all = at === null ? [] : (byStep[String(at)][layer] || []);
  // the open-ended outer bins and NaN: counted, not drawn
  const bins = all.filter(b => b[0] !== null && b[1] !== null);
  const count = bs => bs.reduce((s, b) => s + b[2], 0), total = count(all) || 1, outside = count(all) - count(bins);
  const linear = !LOG2_BINS.includes(q);  // linear bins, or (gradients, weights) one bin per binary exponent
  const trace = linear
    ? {{type: "bar", x: bins.map(b => (b[0] + b[1]) / 2), width: bins.map(b => b[1] - b[0]),
        y: bins.map(b => b[2] / total)}}
    : {{type: "bar", x: bins.map(b => b[0] === 0 && b[1] === 0 ? "0" : String(Number(b[0].toPrecision(3)))),
        y: bins.map(b => b[2] / total)}};
  Plotly.react("histogram", [trace], {{
    title: {{text: `${{LABELS[Number(sel.value)]}}: ${{q}} at layer ${{layer}}, step ${{at}}` +
      (outside ? ` (${{(100 * outside / total).toPrecision(2)}}% beyond the bins or NaN)` : "")}},
    xaxis: {{title: {{text: linear ? q : q + " (bins of one binary exponent, by lower edge)"}},
      type: linear ? "linear" : "category"}},
    yaxis: {{title: {{text: "fraction of values"}}}}, height: 420, margin: {{l: 60, r: 20, t: 50, b: 70}}}},
    {{responsive: true}});
}}
function fillLayers() {{
  const sel = document.getElementById("hist-run");
  if (!sel.value) return;
  const h = HISTS[Number(sel.value)] || {{}}, layers = new Set();
  for (const q of Object.values(h))
    for (const s of Object.values(q)) Object.keys(s).forEach(l => layers.add(Number(l)));
  const box = document.getElementById("hist-layer");
  box.innerHTML = Array.from(layers).sort((a, b) => a - b).map(l => `<option value="${{l}}">${{l}}</option>`).join("");
}}
const STEPS = {steps};
function showStep(i) {{
  const step = STEPS[i];
  document.getElementById("step-label").textContent = step;
  for (const [div, stat] of {profile_ids}) {{
    const ys = PROFILES.map(p => {{
      let k = -1;  // the run's last logged step at or before this one (a diverged run stops early)
      for (let j = 0; j < p.steps.length && p.steps[j] <= step; j++) k = j;
      return k < 0 ? [] : p[stat][k];
    }});
    Plotly.restyle(div, {{y: ys, x: ys.map(y => y.map((_, l) => l + 1))}});
  }}
  showHistogram(step);
}}
const currentStep = () => STEPS[Number(document.getElementById("step-slider").value)];
document.getElementById("hist-run").addEventListener("change", () => {{ fillLayers(); showHistogram(currentStep()); }});
["hist-quantity", "hist-layer"].forEach(id =>
  document.getElementById(id).addEventListener("change", () => showHistogram(currentStep())));
fillLayers();
showHistogram(STEPS[0]);
document.getElementById("step-slider").addEventListener("input", e => showStep(Number(e.target.value)));
document.querySelectorAll("#report th").forEach(th => th.addEventListener("click", () => {{
  const tbody = document.querySelector("#report tbody"), col = Number(th.dataset.col);
  const desc = th.classList.contains("asc");
  document.querySelectorAll("#report th").forEach(h => h.classList.remove("asc", "desc"));
  th.classList.add(desc ? "desc" : "asc");
  const value = tr => JSON.parse(tr.children[col].dataset.v);
  const rows = Array.from(tbody.rows).sort((a, b) => {{
    const x = value(a), y = value(b);
    const c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
    return desc ? -c : c;
  }});
  rows.forEach(r => tbody.appendChild(r));
}}));
</script>
</body></html>
"""


def render(report: Report, title: str = "initlab report") -> str:
    """The whole page as a string (plotly.js inlined: about 4.9 MB)."""
    try:
        import plotly.offline
    except ImportError:
        raise InitlabError("--format html needs plotly: pip install 'initlab[html]'") from None
    if not report.rows:
        raise InitlabError("no runs to report (nothing under the given paths, or the filters left none)")
    runs = sorted(report.runs, key=lambda r: str(r.path))
    capped = len(runs) > MAX_PROFILE_RUNS
    shown = runs[:MAX_PROFILE_RUNS]
    labels = [run_label(r, report.keys) for r in shown]
    prof = [profiles(r) for r in shown]
    steps = sorted({t for p in prof for t in p["steps"]})
    curve_data = [curves(r) for r in shown]
    hists = [histograms(r) for r in shown]
    with_hist = [i for i, h in enumerate(hists) if h]
    hist_runs = "".join(f'<option value="{i}">{html.escape(labels[i])}</option>' for i in with_hist)
    hist_note = (
        "Each run's histograms.csv (log.histograms): the distribution of one quantity in one hidden layer at "
        "the slider's step (the last logged step at or before it; at most "
        f"{MAX_HIST_STEPS} logged steps per run are kept in the page, evenly spread)."
        if with_hist
        else "No run here has histograms.csv: set log.histograms (e.g. 64) to see the distributions."
    )
    ids = [(f"profile-{s}", s) for s in PROFILE_STATS]
    profile_divs = "".join(f"<div>{_profile_figure(labels, prof, s, d)}</div>" for d, s in ids)
    loss = _curve_figure(labels, curve_data, "loss_step", "train_loss", "training loss", True, "curve-loss")
    acc = _curve_figure(labels, curve_data, "acc_step", "test_acc", "test accuracy", False, "curve-acc")
    curve_divs = f"<div>{loss}</div><div>{acc}</div>"
    problems = ""
    if report.problems:
        items = "".join(
            f"<li>{html.escape(Path(p['run']).name)}: {html.escape(str(p['status']))} at step "
            f"{html.escape(_fmt_value(p['step']))} ({html.escape(str(p['reason']))})</li>"
            for p in report.problems
        )
        problems = f"<h3>Runs that did not complete</h3><ul>{items}</ul>"
    note = f"{len(report.rows)} rows from {len(runs)} runs; seeds are averaged (mean ± std) in the table."
    return PAGE.format(
        title=html.escape(title),
        plotlyjs=plotly.offline.get_plotlyjs(),
        note=html.escape(note),
        table=table_html(report),
        problems=problems,
        capped=f" The first {MAX_PROFILE_RUNS} of {len(runs)} runs are drawn." if capped else "",
        first_step=steps[0] if steps else 0,
        last_index=max(len(steps) - 1, 0),
        profile_divs=profile_divs,
        curve_divs=curve_divs,
        profiles=_js(prof),
        steps=_js(steps),
        profile_ids=_js(ids),
        hists=_js(hists),
        labels=_js(labels),
        hist_runs=hist_runs,
        hist_note=html.escape(hist_note),
        hist_style="" if with_hist else "display: none",
        log2_bins=_js([n for n in QUANTITIES if QUANTITIES[n].binning.log]),
        hist_quantities="".join(
            f'<option value="{n}">{html.escape(QUANTITIES[n].label)} ({html.escape(QUANTITIES[n].symbol)})</option>'
            for n in sorted(QUANTITIES, key=lambda n: n != "act")
        ),
    )  # a first


def _js(obj: Any) -> str:
    """JSON for a <script> block (``</`` escaped so no value can end the script)."""
    return json.dumps(obj, allow_nan=False).replace("</", "<\\/")


def write(report: Report, out: Path, title: str = "initlab report") -> Path:
    """Write the page to ``out`` through a temporary name and a rename."""
    from initlab.runfolder.storage import atomic_write

    atomic_write(Path(out), render(report, title))
    return Path(out)
