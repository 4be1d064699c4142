"""The labeling panel in a real JupyterLab + headless Chromium: a click and a key press each store a label."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser_support import open_notebook, run_cell, screenshot

from scanflow_nb.improve import LabelStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "labeling_panel.png"

SETUP = """\
import numpy as np
from sklearn.linear_model import LogisticRegression
from scanflow_nb.datasets import load_digits
from scanflow_nb.improve import ActiveLearner
from scanflow_nb.widgets.labeling import LabelingPanel
X, y = load_digits()
improver = ActiveLearner(LogisticRegression(max_iter=300), X_labeled=X[:30], y_labeled=y[:30], X_pool=X[30:400])
panel = LabelingPanel(improver, store="labels.sqlite", session="browser", retrain_every=2, budget=20,
                      X_test=X[1400:], y_test=y[1400:])
panel"""


def stored(path: Path, count: int, timeout: float = 30) -> list:
    """The session's actions once there are exactly `count` of them (the kernel writes them)."""
    deadline = time.monotonic() + timeout
    while True:
        actions = LabelStore(path).actions("browser") if path.exists() else []
        if len(actions) == count or time.monotonic() > deadline:
            return actions
        time.sleep(0.2)


def test_click_and_number_key_label_samples_in_jupyterlab(lab, page):
    open_notebook(page, lab, "label.ipynb")
    cell = run_cell(page, SETUP)
    panel = cell.locator(".scanflow-labeling")
    panel.wait_for(timeout=60_000)
    panel.locator("img").wait_for()
    assert "model guess" in panel.inner_text()
    db = lab.root / "labels.sqlite"

    panel.locator(".scanflow-class-7").click()
    first = stored(db, 1)
    assert [(kind, label) for _, kind, label in first] == [("label", 7)]

    panel.hover()
    page.keyboard.press("3")
    second = stored(db, 2)
    assert [(kind, label) for _, kind, label in second] == [("label", 7), ("label", 3)]
    assert second[0][0] != second[1][0]  # the key labeled the next sample, not the same one again
    panel.get_by_text("2 / 20 labeled").wait_for()
    panel.get_by_text("score after retrain on 32 labels").wait_for(timeout=60_000)

    page.keyboard.press("Backspace")  # undo the key press
    assert [label for _, _, label in stored(db, 1)] == [7]
    page.keyboard.press("s")
    assert [kind for _, kind, _ in stored(db, 2)] == ["label", "skip"]
    page.keyboard.press("Backspace")
    panel.get_by_text("1 / 20 labeled").wait_for()
    screenshot(panel, SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 5_000
