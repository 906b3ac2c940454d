"""initlab report over a fixture folder of completed, diverged, failed, corrupt and partial runs."""

import csv
import io
import json
import math
import shutil

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from initlab.cli import app
from initlab.report.results import discover
from initlab.report.tables import EXPLODING, VANISHING, build_report, sparkline, to_csv, to_json, to_markdown, verdict
from initlab.runfolder.sweeps import SweepSpec, run_sweep

import numpy as np

from conftest import SMALL_DATA
from conftest import run_with, small_run

runner = CliRunner()


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """runs/grid: depth {2, 6} × init {he_normal, glorot_normal} × 2 seeds (+ a diverged pair);
    plus a failed run, a corrupt run and a partial folder."""
    root = tmp_path_factory.mktemp("report")
    base = {
        "name": "grid",
        "data": SMALL_DATA,
        "model": {"width": 32},
        "train": {"steps": 24, "batch_size": 32, "optimizer": "sgd", "lr": 0.05},
        "log": {"every": 8, "out": str(root)},
    }
    run_sweep(SweepSpec(base, {"model.depth": [2, 6], "model.init": ["he_normal", "glorot_normal"]}, [], [0, 1]))
    run_sweep(
        SweepSpec(
            {**base, "name": "boom", "model": {"width": 32, "depth": 4}, "train": {**base["train"], "lr": 1e7}},
            {},
            [],
            [0, 1],
        )
    )
    grid = root / "grid"
    some = next(p for p in sorted(grid.iterdir()) if p.is_dir() and not p.name.startswith("."))
    failed = grid / "grid-failed0"
    shutil.copytree(some, failed)
    summary = json.loads((failed / "summary.json").read_text())
    summary.update(status="failed", error="RuntimeError: simulated", steps=8)
    summary["config"]["model"]["depth"] = 3
    (failed / "summary.json").write_text(json.dumps(summary))
    corrupt = grid / "grid-corrupt0"
    shutil.copytree(some, corrupt)
    (corrupt / "summary.json").write_text("{not json")
    partial = root / "partial-run"
    partial.mkdir()
    (partial / "config.yaml").write_text(yaml.safe_dump(base))
    return root


@pytest.mark.slow
def test_discovery_finds_runs_and_lists_what_it_skips(runs_dir):
    runs, skipped = discover([runs_dir])
    assert len(runs) == 8 + 2 + 1
    reasons = {s.path.name: s.reason for s in skipped}
    assert set(reasons) == {"grid-corrupt0", "partial-run"}
    assert "unreadable" in reasons["grid-corrupt0"] and "no summary.json" in reasons["partial-run"]


def test_seeds_are_aggregated_into_mean_and_std(runs_dir):
    rep = build_report([runs_dir / "grid"], filters=["status=completed"])
    assert rep.keys == ["model.depth", "model.init"]
    assert len(rep.rows) == 4 and all(r["seeds"] == 2 for r in rep.rows)
    runs, _ = discover([runs_dir / "grid"])
    for row in rep.rows:
        accs = [
            r.final("test_acc")
            for r in runs
            if r.status == "completed"
            and r.flat["model.depth"] == row["model.depth"]
            and r.flat["model.init"] == row["model.init"]
        ]
        assert row["test_acc"] == pytest.approx(sum(accs) / 2)
        assert row["test_acc_std"] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2))


def test_glorot_relu_vanishes_with_depth_and_he_does_not(runs_dir):
    rows = {
        (r["model.depth"], r["model.init"]): r
        for r in build_report([runs_dir / "grid"], filters=["status=completed"]).rows
    }
    assert rows[(6, "glorot_normal")]["act_ratio_init"] < 0.1 < rows[(6, "he_normal")]["act_ratio_init"]
    assert rows[(6, "he_normal")]["verdict"] == "healthy"
    assert len(rows[(6, "he_normal")]["profile"]) == 6


def test_diverged_and_failed_runs_are_listed_with_step_and_reason(runs_dir):
    rep = build_report([runs_dir])
    by_status = {}
    for p in rep.problems:
        by_status.setdefault(p["status"], []).append(p)
    assert len(by_status["diverged"]) == 2 and len(by_status["failed"]) == 1
    assert all("non-finite" in p["reason"] and p["step"] is not None for p in by_status["diverged"])
    assert by_status["failed"][0]["reason"] == "RuntimeError: simulated" and by_status["failed"][0]["step"] == 8
    statuses = {r["status"] for r in rep.rows}
    assert "diverged" in statuses and "failed" in statuses  # one status for all seeds: n says how many


def test_filter_sort_group_by_columns_top(runs_dir):
    grid = [runs_dir / "grid"]
    he = build_report(grid, filters=["model.init=he_normal", "status=completed"])
    assert he.keys == ["model.depth"] and len(he.rows) == 2  # init no longer varies: not a column
    ranked = build_report(grid, filters=["status=completed"], sort="-test_acc")
    accs = [r["test_acc"] for r in ranked.rows]
    assert accs == sorted(accs, reverse=True)
    by_init = build_report(grid, filters=["status=completed"], group_by=["model.init"])
    assert by_init.keys == ["model.init"] and [r["seeds"] for r in by_init.rows] == [4, 4]
    top = build_report(grid, filters=["status=completed"], sort="test_loss", top=1, columns=["test_loss", "verdict"])
    assert len(top.rows) == 1 and top.columns == ["test_loss", "verdict"]
    with pytest.raises(Exception, match="--sort nope: not a column"):
        build_report(grid, sort="nope")


def test_every_format_parses(runs_dir):
    rep = build_report([runs_dir])
    frame = pd.read_csv(io.StringIO(to_csv(rep)))
    assert len(frame) == len(rep.rows) and {"test_acc", "test_acc_std", "verdict"} <= set(frame.columns)
    data = json.loads(to_json(rep))
    assert len(data["rows"]) == len(rep.rows) and len(data["skipped"]) == 2 and len(data["problems"]) == 3
    md = to_markdown(rep)
    table_lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert len({line.count("|") for line in table_lines[: len(rep.rows) + 1]}) == 1


def test_cli_report_table_and_formats(runs_dir):
    result = runner.invoke(app, ["report", str(runs_dir)])
    assert result.exit_code == 0, result.output
    for text in (
        "configurations",
        "runs that did not complete",
        "skipped folders",
        "grid-corrupt0",
        "diverged",
        "RuntimeError: simulated",
        "healthy",
    ):
        assert text in result.output, text
    as_json = runner.invoke(app, ["report", str(runs_dir), "--format", "json"])
    assert json.loads(as_json.output)["thresholds"] == {"vanishing": VANISHING, "exploding": EXPLODING}
    bad = runner.invoke(app, ["report", str(runs_dir), "--format", "xml"])
    assert bad.exit_code == 2 and "--format 'xml'" in bad.output  # bad input: exit 2, as the README says
    missing = runner.invoke(app, ["report", str(runs_dir / "nope")])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_layers_view_of_one_run(runs_dir):
    run = next(
        p
        for p in sorted((runs_dir / "grid").iterdir())
        if p.name.startswith("grid-")
        and json.loads((p / "summary.json").read_text()).get("config", {}).get("model", {}).get("depth") == 6
        if (p / "summary.json").exists() and p.name != "grid-corrupt0"
    )
    result = runner.invoke(app, ["report", "--layers", str(run)])
    assert result.exit_code == 0, result.output
    assert "step 0" in result.output and "step 24" in result.output and "saturated_frac" in result.output
    frame = pd.read_csv(io.StringIO(runner.invoke(app, ["report", "--layers", str(run), "--format", "csv"]).output))
    assert len(frame) == 2 * 7 and set(frame.step) == {0, 24}
    sweep_folder = runner.invoke(app, ["report", "--layers", str(runs_dir / "grid")])
    assert sweep_folder.exit_code == 2 and "pass one of its run folders" in sweep_folder.output


def test_layers_view_says_dead_layer_where_symmetry_is_undefined(runs_dir, tmp_path):
    # A layer whose activations are all equal (act_var 0) has an undefined symmetry (0/0): an empty cell.
    run = tmp_path / "dead"
    shutil.copytree(next((runs_dir / "grid").glob("grid-*[0-9a-f]")), run)
    layers = pd.read_csv(run / "layers.csv")
    dead = (layers.kind == "hidden") & (layers.layer == 1)
    layers.loc[dead, "act_var"], layers.loc[dead, "symmetry"] = 0.0, float("nan")
    layers.to_csv(run / "layers.csv", index=False)
    for fmt in ("table", "markdown"):  # layer 1 at step 0 and at the last step
        result = runner.invoke(app, ["report", "--layers", str(run), "--format", fmt])
        assert result.exit_code == 0, result.output
        assert result.output.count("dead layer") == 2 and "nan" not in result.output.lower()
    as_csv = pd.read_csv(io.StringIO(runner.invoke(app, ["report", "--layers", str(run), "--format", "csv"]).output))
    assert list(as_csv.loc[as_csv.symmetry.isna(), "layer"]) == [1, 1]  # machine-readable: an empty cell


def test_verdict_thresholds_and_sparkline():
    assert verdict(1.0, 1.0) == "healthy"
    assert verdict(VANISHING / 2, 1.0) == "vanishing"
    assert verdict(1.0, EXPLODING * 2) == "exploding"
    assert verdict(math.nan, math.nan) == "n/a"
    import numpy as np

    assert sparkline(np.array([1.0, 1.0, 1.0])) == "▅▅▅"
    assert sparkline(np.array([1.0, 1e-5, 1e5])) == "▅▁█"


def test_diverged_runs_do_not_count_in_the_accuracy_mean(runs_dir):
    rep = build_report([runs_dir])
    diverged = next(r for r in rep.rows if r["status"] == "diverged")
    assert math.isnan(diverged["test_acc"])


def test_runs_from_before_log_stats_group_with_default_runs(runs_dir, tmp_path):
    """A run folder written before log.stats existed (no such key in its config) computed the
    statistics a default run computes: the report does not see log.stats as varied."""
    from initlab.report.results import varied_keys

    runs, _ = discover([runs_dir / "grid"])
    assert "log.stats" not in varied_keys(runs)
    old = tmp_path / "old"
    shutil.copytree(runs[0].path, old / runs[0].path.name)
    summary = json.loads((old / runs[0].path.name / "summary.json").read_text())
    del summary["config"]["log"]["stats"]
    (old / runs[0].path.name / "summary.json").write_text(json.dumps(summary))
    both, _ = discover([old, runs[1].path])
    assert "log.stats" not in varied_keys(both)


@pytest.mark.slow
def test_the_layers_view_shows_the_statistics_the_run_computed(tmp_path):
    from initlab.report.tables import layer_report
    from initlab.runfolder import experiment

    from conftest import tiny

    cfg = tiny(train={"steps": 10}, log={"every": 10, "out": str(tmp_path), "stats": ["w_norm"]})
    summary = experiment.run(cfg)
    view = layer_report(summary["run_dir"])
    assert [c for c in view["columns"] if not c.endswith("_theory") and c != "grad_ratio"] == list(cfg.log.stats)


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("final", [1, 2], "final: a list, expected a mapping"),
        ("final", {"test_acc": "high"}, "final.test_acc: a string, expected a number"),
        ("signal", {"init": {"act_var": [1.0, "x"]}}, "signal.init.act_var[1]: a string, expected a number"),
        ("history", {"step": 3}, "history.step: a number, expected a list"),
        ("status", 7, "status: a number, expected a string"),
        ("theory", {"applies": "yes"}, "theory.applies: a string, expected true/false"),
    ],
)
def test_a_wrongly_typed_summary_is_skipped_with_its_reason(runs_dir, tmp_path, field, value, reason):
    root = tmp_path / "runs"
    shutil.copytree(runs_dir / "grid", root / "grid", ignore=shutil.ignore_patterns("grid-corrupt0"))
    bad = next(p for p in sorted((root / "grid").iterdir()) if p.name.startswith("grid-"))
    summary = json.loads((bad / "summary.json").read_text())
    summary[field] = value
    (bad / "summary.json").write_text(json.dumps(summary))
    runs, skipped = discover([root])
    assert [(s.path, s.reason) for s in skipped] == [(bad, f"summary.json {reason}")]
    result = runner.invoke(app, ["report", str(root)])
    assert result.exit_code == 0, result.output
    assert "internal error" not in result.output and "skipped" in result.output


def test_discovery_does_not_follow_symbolic_links(runs_dir, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(runs_dir / "grid", root / "grid", ignore=shutil.ignore_patterns("grid-corrupt0"))
    (root / "everything").symlink_to("/")
    (root / "again").symlink_to(root / "grid")
    runs, skipped = discover([root])
    assert len(runs) == 9  # the grid, each run once
    assert sorted(s.path.name for s in skipped) == ["again", "everything"]
    assert all("symbolic link" in s.reason for s in skipped)
    assert len(discover([root / "again"])[0]) == 9  # a link given by name is followed


@pytest.mark.parametrize(
    "args, message",
    [
        (["report", "--filter", "model.dept=3"], "no run has the key 'model.dept'; did you mean model.depth?"),
        (["report", "--filter", "model.depth=99"], "matches none of the 11 runs (model.depth here: 2, 3, 4, 6)"),
        (["plot", "--filter", "model.depth=99"], "matches none of the"),
        (["plot", "--kind", " , "], "--kind: name at least one figure"),
    ],
)
def test_no_ops_say_so(runs_dir, tmp_path, args, message):
    result = runner.invoke(app, [*args, str(runs_dir), *(["--out", str(tmp_path)] if args[0] == "plot" else [])])
    bad_value = args[2] == "model.dept=3" or args[1] == "--kind"  # bad input: 2; a filter matching nothing: 1
    assert result.exit_code == (2 if bad_value else 1) and message in result.output.replace("\n", " "), result.output


def test_the_verdict_of_diverged_runs_says_so(runs_dir):
    rep = build_report([runs_dir / "boom"], group_by=["model.depth"])
    (row,) = rep.rows
    assert row["verdict"].endswith(" at init, diverged")  # whatever the signal at init, not a bare "healthy"
    assert row["verdict"].split(" ")[0] in ("healthy", "vanishing", "exploding")


@pytest.mark.parametrize("width", [80, 120])
def test_the_report_table_fits_the_terminal_and_cuts_no_value(runs_dir, width):
    from rich.console import Console

    from initlab.report.display import report_tables

    rep = build_report([runs_dir / "grid"])
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None)
    for t in report_tables(rep, width):
        console.print(t, crop=False)
    text = out.getvalue()
    assert all(len(line) <= width for line in text.splitlines()) and "…" not in text
    assert "he_normal" in text and "glorot_normal" in text  # the config keys are whole
    assert f"left out at this width ({width} columns)" in text.replace("\n", " ")


# --------------------------------------------------------------------------------------------
# Issue 34: a folder of ad-hoc runs, one-line usage errors with exit code 2


@pytest.fixture(scope="module")
def ad_hoc(runs_dir, tmp_path_factory):
    """The grid's runs as ad-hoc `--set` runs: each configuration also differs in data sizes, steps,
    logging and learning rate, so nine config keys vary."""
    root = tmp_path_factory.mktemp("adhoc") / "runs"
    for i, run in enumerate(sorted((runs_dir / "grid").glob("grid-*[0-9a-f]"))):
        if run.name in ("grid-corrupt0", "grid-failed0"):
            continue
        summary = json.loads((run / "summary.json").read_text())
        config = summary["config"]
        config["data"].update(train_size=2000 + 1000 * (i % 3), test_size=1000 + 500 * (i % 2))
        config["train"].update(steps=150 + 50 * i, lr=0.001 * (1 + i % 4))
        config["log"].update(every=50 + 10 * i)
        shutil.copytree(run, root / run.name)
        (root / run.name / "summary.json").write_text(json.dumps(summary))
    return root


def test_a_narrow_terminal_folds_the_config_keys_never_the_outcomes(ad_hoc):
    result = runner.invoke(app, ["report", str(ad_hoc)], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert all(len(line) <= 100 for line in text.splitlines()) and "…" not in text
    for header in ("status", "test acc %", "act L/1 init", "grad 1/L init", "signal verdict"):
        assert header in text.replace("\n", " ") or header.replace(" ", "\n") in text, header
    rep = build_report([ad_hoc])
    assert len(rep.keys) >= 7 and all(f"{100 * r['test_acc']:.2f}±" in text for r in rep.rows)
    left_out = text.split("left out at this width", 1)[-1].split(";")[0]
    assert not any(c in left_out for c in ("test_acc", "act_ratio_init", "grad_ratio_init", "verdict"))
    for row in rep.rows:  # every configuration's keys are still there to read, whole
        assert all((f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k])) in text for k in rep.keys)


def test_a_group_whose_seeds_share_a_status_says_that_status(runs_dir):
    rows = list(csv.DictReader(io.StringIO(to_csv(build_report([runs_dir / "boom"])))))
    assert [r["status"] for r in rows] == ["diverged"] and [r["seeds"] for r in rows] == ["2"]


@pytest.mark.parametrize(
    "args",
    [
        ["report", "--sort", "nope"],
        ["report", "--columns", "nope"],
        ["report", "--group-by", "model.nope"],
        ["report", "--filter", "nokey"],
        ["report", "--top", "0"],
        ["report", "--target", "abc"],
        ["report", "--bogus"],
        ["report", "--format", "xml"],
        ["plot", "--steps", "x"],
        ["plot", "--stat", "nope"],
        ["plot", "--kind", "pie"],
        ["plot", "--metric", "nope"],
        ["export", "tensorboard"],
        ["export"],
        ["export", "nope", "--out", "x"],
    ],
)
def test_bad_option_values_are_one_line_and_exit_code_2(runs_dir, tmp_path, args):
    where = [] if args == ["export"] else [str(runs_dir / "grid")]
    out = ["--out", str(tmp_path / "out")] if args[0] == "plot" else []
    result = runner.invoke(app, [*args[:2], *where, *args[2:], *out] if args[0] == "export" else [*args, *where, *out])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "╭" not in result.output and "Traceback" not in result.output


# -- histograms and the Jacobian in the report -------------------------------------------------------


@pytest.mark.slow
def test_the_layer_report_shows_the_saturated_bins_beside_saturated_frac(tmp_path):
    cfg = small_run("sat")
    cfg["model"].update(activation="tanh", init="normal", init_args={"std": 2.0})
    cfg["log"].update(out=str(tmp_path), histograms=8)
    import yaml

    (tmp_path / "sat.yaml").write_text(yaml.safe_dump(cfg))
    assert runner.invoke(app, ["run", str(tmp_path / "sat.yaml")]).exit_code == 0
    run = next(tmp_path.glob("sat-*"))
    from initlab.report.tables import layer_report

    view = layer_report(run)
    cols = view["columns"]
    assert cols[cols.index("saturated_frac") + 1] == "hist_saturated"
    h = pd.read_csv(run / "histograms.csv")
    act = h[(h.step == 0) & (h.quantity == "act")]
    for row in view["init"][:2]:  # tanh's outer bins: [-1, -0.75) and [0.75, 1]
        layer = act[act.layer == row["layer"]]
        edge = layer[(layer.lo == -1.0) | (layer.hi == 1.0)]["count"].sum() / layer["count"].sum()
        assert row["hist_saturated"] == pytest.approx(edge) and edge > 0.5
    assert np.isnan(view["init"][-1]["hist_saturated"])  # the output layer has no activation histogram
    assert "input-output Jacobian" in view["jacobian"] and "mean-field mean σ² at init" in view["jacobian"]
    out = runner.invoke(app, ["report", "--layers", str(run), "--format", "markdown"]).output
    assert "hist_saturated" in out and "input-output Jacobian ∂h^L/∂x on 4 probe examples" in out


def test_the_report_has_the_jacobians_ratio_at_init_and_its_mean_square_beside_theory(tmp_path):
    run = run_with(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    csv_out = runner.invoke(
        app, ["report", str(tmp_path), "--format", "csv", "--columns", "jac_ratio_init,jac_msq_init,jac_msq_theory"]
    ).output
    row = pd.read_csv(__import__("io").StringIO(csv_out)).iloc[0]
    assert row.jac_ratio_init == pytest.approx(summary["jacobian"]["init"]["ratio"])
    assert row.jac_msq_init == pytest.approx(summary["jacobian"]["init"]["mean_sq"])
    assert row.jac_msq_theory == pytest.approx(summary["theory"]["jacobian_mean_sq"])
    table = runner.invoke(app, ["report", str(tmp_path), "--format", "markdown"]).output
    assert "jac max/min init" in table
