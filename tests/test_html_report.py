"""``initlab report --format html`` (issue 19): one self-contained page, checked in a real headless
Chromium (Debian's chromium and chromium-driver, driven by Selenium): it loads with no network,
shows the report's rows, sorts on a header click, and its step slider changes the plotted profile and
the histogram view."""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from initlab.cli import app
from initlab.report.tables import build_report

from conftest import small_run

pytestmark = pytest.mark.slow  # a browser (Chromium through Selenium) or a subprocess in every test

runner = CliRunner()
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A 2 depths × 2 seeds sweep (2 report rows, 4 runs, with histograms.csv) and its HTML report."""
    tmp = tmp_path_factory.mktemp("html")
    sweep = {
        **small_run("page"),
        "log": {"every": 5, "out": str(tmp), "histograms": 16},
        "sweep": {"model.depth": [2, 4]},
        "seeds": 2,
    }
    (tmp / "s.yaml").write_text(yaml.safe_dump(sweep))
    assert runner.invoke(app, ["sweep", str(tmp / "s.yaml"), "-q"]).exit_code == 0
    out = tmp / "report.html"
    result = runner.invoke(app, ["report", str(tmp / "page"), "--format", "html", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "(2 rows, 4 runs)" in result.output
    return tmp / "page", out


def test_the_page_is_self_contained(page):
    _, out = page
    text = out.read_text()
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|@import", text)  # nothing to fetch
    assert "Plotly.newPlot" in text and len(text) > 3_000_000  # plotly.js is inside the file


def test_bad_uses_of_the_html_format_are_one_line_errors(page, tmp_path):
    runs, _ = page
    result = runner.invoke(app, ["report", str(runs), "--format", "html", "--layers", str(next(runs.glob("page-*")))])
    assert result.exit_code == 2 and "not --layers" in result.output
    result = runner.invoke(app, ["report", str(tmp_path), "--format", "html", "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and "no runs to report" in result.output and not (tmp_path / "r.html").exists()
    result = runner.invoke(app, ["report", str(runs), "-o", str(tmp_path / "r.txt")])
    assert result.exit_code == 2 and "give --format too" in result.output


def test_output_writes_the_other_formats_to_a_file(page, tmp_path):
    runs, _ = page
    assert runner.invoke(app, ["report", str(runs), "--format", "csv", "-o", str(tmp_path / "r.csv")]).exit_code == 0
    assert (tmp_path / "r.csv").read_text() == runner.invoke(app, ["report", str(runs), "--format", "csv"]).output


@pytest.fixture
def browser():
    if CHROMEDRIVER is None or not Path(CHROMIUM).exists():
        pytest.skip("Chromium and ChromeDriver are not installed (.ci/run installs Debian's chromium, chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1300,1600",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_network_conditions(offline=True, latency=0, throughput=0)  # the page must not need the network
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_in_a_real_browser_table_sorting_and_the_step_slider(page, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    runs, out = page
    browser.get(out.as_uri())
    assert browser.execute_script("return typeof Plotly") == "object"  # plotly.js ran, from the file itself
    rows = browser.find_elements(By.CSS_SELECTOR, "#report tbody tr")
    assert len(rows) == len(build_report([runs]).rows) == 2

    def depth():
        return [
            r.find_elements(By.TAG_NAME, "td")[0].text
            for r in browser.find_elements(By.CSS_SELECTOR, "#report tbody tr")
        ]

    header = browser.find_elements(By.CSS_SELECTOR, "#report th")[0]
    assert header.text == "depth"
    header.click()
    assert depth() == ["2", "4"]
    header.click()  # again: descending
    assert depth() == ["4", "2"]

    profile = "return document.getElementById('profile-act_var').data.map(t => Array.from(t.y))"
    traces = browser.execute_script(profile)
    assert len(traces) == 4 and sorted(len(y) for y in traces) == [2, 2, 4, 4]  # hidden layers per run
    first = json.loads((next(runs.glob("page-*")) / "summary.json").read_text())
    assert first["steps"] == 20
    slider = browser.find_element(By.ID, "step-slider")
    assert browser.find_element(By.ID, "step-label").text == "0"
    slider.send_keys(Keys.END)  # as a user would: focus the slider, press End
    assert browser.find_element(By.ID, "step-label").text == "20"
    moved = browser.execute_script(profile)
    assert moved != traces and all(len(a) == len(b) for a, b in zip(moved, traces))
    slider.send_keys(Keys.HOME)
    assert browser.execute_script(profile) == traces


def test_the_histogram_view_follows_the_slider_and_the_selects(page, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    runs, out = page
    browser.get(out.as_uri())
    assert browser.find_element(By.ID, "histogram").is_displayed()
    bars = "const t = document.getElementById('histogram').data[0]; return [Array.from(t.x), Array.from(t.y)]"
    title = "return document.getElementById('histogram').layout.title.text"
    x0, y0 = browser.execute_script(bars)
    assert len(y0) > 1 and abs(sum(y0) - 1) < 1e-6  # fractions of one layer's values at step 0
    assert "act at layer 1, step 0" in browser.execute_script(title)
    layers = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "hist-layer")).options]
    assert len(Select(browser.find_element(By.ID, "hist-run")).options) == 4 and layers[0] == "1"

    browser.find_element(By.ID, "step-slider").send_keys(Keys.END)
    x1, y1 = browser.execute_script(bars)
    assert (x1, y1) != (x0, y0) and "step 20" in browser.execute_script(title)

    Select(browser.find_element(By.ID, "hist-quantity")).select_by_value("grad")
    xg, yg = browser.execute_script(bars)
    assert all(isinstance(x, str) for x in xg) and abs(sum(yg) - 1) < 1e-6  # one bar per binary exponent
    assert "grad at layer 1, step 20" in browser.execute_script(title)
    Select(browser.find_element(By.ID, "hist-layer")).select_by_value(layers[-1])
    assert f"layer {layers[-1]}" in browser.execute_script(title) and browser.execute_script(bars) != [xg, yg]


def test_the_page_keeps_at_most_max_steps_of_a_runs_histograms(page):
    from initlab.report.html_report import histograms

    runs, _ = page
    run = build_report([runs]).runs[0]
    full, thin = histograms(run), histograms(run, max_steps=3)
    assert sorted(full["act"], key=int) == ["0", "5", "10", "15", "20"]
    assert sorted(thin["act"], key=int) == ["0", "10", "20"] and thin["act"]["10"] == full["act"]["10"]
    assert set(full) == {"pre", "act", "grad", "weight"}
    pre = full["pre"]["0"]["1"]  # every value of z in layer 1 on the probe batch, outer bins included
    assert sum(b[2] for b in pre) == 64 * 16 and all(b[0] is None or b[1] is None or b[0] < b[1] for b in pre)


def test_without_histograms_the_view_is_hidden_with_a_note(tmp_path):
    from initlab.report.html_report import render

    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**small_run("plain"), "log": {"every": 10, "out": str(tmp_path)}}))
    assert runner.invoke(app, ["run", str(tmp_path / "s.yaml")]).exit_code == 0
    text = render(build_report([tmp_path]))
    assert 'id="histogram" style="display: none"' in text and "set log.histograms" in text


def test_a_run_whose_csvs_end_in_a_partial_row_is_reported(page, tmp_path):
    """A run being written, or killed mid-write, can end layers.csv and metrics.csv in a row cut short."""
    runs, _ = page
    partial = tmp_path / "runs"
    shutil.copytree(runs, partial, ignore=shutil.ignore_patterns(".*"))
    run = next(partial.glob("page-*"))
    for name in ("layers.csv", "metrics.csv"):
        lines = (run / name).read_text().splitlines()
        (run / name).write_text("\n".join([*lines, lines[-1][: len(lines[-1]) // 3]]))  # no newline: cut short
    result = runner.invoke(app, ["report", str(partial), "--format", "html", "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "(2 rows, 4 runs)" in result.output.replace("\n", "") and (tmp_path / "r.html").stat().st_size > 3_000_000
