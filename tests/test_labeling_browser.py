"""The labeling panel in a real browser, in JupyterLab 4 and Notebook 7: a click and key presses label, skip and
undo, and the label store on disk agrees; a class that was not known is typed into the panel.

SCANFLOW_UPDATE_DOCS_IMAGES=1 writes the panel's screenshot to docs/images/labeling_panel.png.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser_support import docs_screenshot, eventually, expect, open_notebook, run_cell

from scanflow_nb.improve import LabelStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]


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


def stored(path: Path, count: int) -> list:
    """The session's actions once there are exactly `count` of them (the kernel writes them)."""
    actions = lambda: LabelStore(path).actions("browser") if path.exists() else []
    return eventually(lambda: len(actions()) == count and actions(), what=f"{count} stored actions")


def test_clicks_and_keys_label_skip_undo_and_add_a_class(lab, page, tmp_path):
    open_notebook(page, lab, "label.ipynb")
    cell = run_cell(page, SETUP)
    panel = cell.locator(".scanflow-labeling")
    sample = panel.locator(".sf-sample")
    expect(sample.locator("img")).to_be_visible(timeout=60_000)
    expect(panel.locator(".sf-guess")).to_contain_text(re.compile(r"model guess: \d \(\d+%\)"))
    db = lab.root / "labels.sqlite"

    shown = sample.get_attribute("data-sample")
    panel.locator(".scanflow-class-7").click()
    assert [(kind, label) for _, kind, label in stored(db, 1)] == [("label", 7)]
    expect(sample).not_to_have_attribute("data-sample", shown)  # the next sample is shown

    panel.hover()  # the pointer over the panel gives it the keys
    page.keyboard.press("3")
    second = stored(db, 2)
    assert [(kind, label) for _, kind, label in second] == [("label", 7), ("label", 3)]
    assert second[0][0] != second[1][0]  # the key labeled the next sample, not the same one again
    expect(panel.locator(".sf-counts")).to_contain_text("2 / 20 labeled")
    expect(panel.locator(".sf-status")).to_contain_text("score after retrain on 32 labels", timeout=60_000)

    page.keyboard.press("Backspace")  # undo the key press
    assert [label for _, _, label in stored(db, 1)] == [7]
    page.keyboard.press("s")
    assert [kind for _, kind, _ in stored(db, 2)] == ["label", "skip"]
    page.keyboard.press("Backspace")
    expect(panel.locator(".sf-counts")).to_contain_text("1 / 20 labeled")
    assert [label for _, _, label in stored(db, 1)] == [7]

    docs_screenshot(panel, lab, tmp_path, "labeling_panel.png")

    # a class nobody declared: "+" opens a field, Enter labels the sample with it
    page.keyboard.press("+")
    name = panel.locator(".sf-new-name")
    expect(name).to_be_focused()
    name.type("10")  # typed digits are not shortcuts while the field has the keys
    page.keyboard.press("Enter")
    expect(name).to_be_hidden()
    new_button = panel.locator(".scanflow-class-10")
    refused = panel.locator(".sf-status.sf-error")
    expect(new_button.or_(refused)).to_be_visible()
    if refused.is_visible():  # a learner that cannot take new classes says so, and nothing is stored
        expect(refused).to_contain_text("10")
        assert [label for _, _, label in stored(db, 1)] == [7]
    else:
        assert [label for _, _, label in stored(db, 2)] == [7, 10]
