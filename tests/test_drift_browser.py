"""The drift monitor in a real browser, in JupyterLab 4 and Notebook 7: the background checker watches a
workflow, every logged batch adds a point to the p-value plot, a drifted batch turns the banner red, and a
click on it shows its most anomalous samples. Every check waits for the state it asserts.

SCANFLOW_UPDATE_DOCS_IMAGES=1 writes the monitor's screenshot to docs/images/drift_monitor.png.
"""

from __future__ import annotations

import re

import pytest
from browser_support import docs_screenshot, expect, open_notebook, run_cell

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SETUP = """\
import numpy as np, yaml
from pathlib import Path
from scanflow_nb.check import log_batch
from scanflow_nb.datasets import corrupt, load_digits
X, _ = load_digits()
order = np.random.default_rng(0).permutation(len(X))
Path("app").mkdir()
np.save("app/reference.npy", X[order[:1000]])
Path("app/scanflow.yaml").write_text(yaml.safe_dump(
    {"version": 1, "workflows": [{"name": "serve", "checker": {"detector": "ks", "every": 0.3}}]}))
clean, drifted = X[order[1000:1100]], corrupt(X[order[1100:1200]], "rotate", severity=4, seed=0)
%load_ext scanflow_nb
%scanflow app app"""


def test_each_batch_adds_a_point_and_a_click_shows_its_anomalous_samples(lab, page, tmp_path):
    open_notebook(page, lab, "drift.ipynb")
    run_cell(page, SETUP)
    cell = run_cell(page, "monitor = %scanflow checker start serve --reference reference.npy\nmonitor")
    monitor = cell.locator(".scanflow-drift")
    expect(monitor.locator(".sf-alert")).to_have_text("no batch checked yet", timeout=60_000)
    points = monitor.locator("circle.sf-point")
    expect(points).to_have_count(0)

    run_cell(page, "uri = monitor.watcher.tracking_uri\nlog_batch(clean, uri, 'serve')")
    expect(points).to_have_count(1, timeout=60_000)
    expect(monitor.locator("circle.sf-point.sf-ok")).to_have_count(1)
    expect(monitor.locator(".sf-alert")).to_have_text("1 batches checked, 0 drifted")
    run_cell(page, "log_batch(drifted, uri, 'serve')")
    expect(points).to_have_count(2, timeout=60_000)
    drift = monitor.locator("circle.sf-point.sf-drift")
    expect(drift).to_have_count(1)
    # a batch this far off (p ~ 1e-50) is enough for the stream's alarm on its own
    expect(monitor.locator(".sf-alert.sf-drift")).to_contain_text(
        re.compile(r"^ALARM: batch run \w+ \(p = [^)]+\); 1 of 2 batches drifted; 1 alarms")
    )
    expect(monitor.locator(".sf-threshold")).to_have_count(1)  # the threshold line

    drift.click()
    expect(drift).to_have_class(re.compile(r"\bsf-selected\b"))
    expect(monitor.locator(".sf-rows")).to_contain_text(re.compile(r"verdict\s*drift: p = "))
    samples = monitor.locator(".sf-samples figure")
    expect(samples).to_have_count(8, timeout=60_000)
    expect(samples.first.locator("img")).to_be_visible()
    expect(monitor.locator(".sf-note")).to_have_text("the 8 most anomalous samples, highest score first")
    scores = [float(re.search(r"score ([\d.e+-]+)", caption).group(1)) for caption in samples.all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    docs_screenshot(monitor, lab, tmp_path, "drift_monitor.png")
    shown = run_cell(page, "print(monitor.selected == monitor.points[1]['batch'])")
    expect(shown.locator(".jp-OutputArea-output")).to_have_text("True\n")
    run_cell(page, "%scanflow checker stop serve")
