"""End to end in a real JupyterLab + headless Chromium: declare a nested workflow with the magics,
run it, and check in the rendered page that the live graph shows every node and its final state."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from browser_support import open_notebook, run_cell, screenshot, wait_for_cell

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS_IMAGE = Path(__file__).resolve().parents[1] / "docs" / "images" / "graph_widget.png"
KEYS = ["pipeline/prepare", "pipeline/train", "evaluate/score_a", "evaluate/score_b", "report/publish"]

CELLS = [
    "%load_ext scanflow_nb\n%scanflow app demo",
    "%scanflow workflow pipeline\n"
    "%scanflow workflow evaluate --parallel --parent pipeline\n"
    "%scanflow workflow report --parent evaluate",
    "%%scanflow executor prepare --workflow pipeline -p rows=100\n"
    "import argparse\n"
    "p = argparse.ArgumentParser(); p.add_argument('--rows', type=int)\n"
    "print('prepared', p.parse_args().rows, 'rows')",
    "%%scanflow executor train --workflow pipeline -p epochs=3\n"
    "import time\n"
    "for epoch in range(3):\n"
    "    print('epoch', epoch, 'loss', round(1 / (epoch + 1), 3), flush=True)\n"
    "    time.sleep(1)",
    "%%scanflow executor score_a --workflow evaluate\nprint('accuracy 0.91')",
    "%%scanflow executor score_b --workflow evaluate\nprint('accuracy 0.87')",
    "%%scanflow executor publish --workflow report\nprint('published')",
]


def test_live_graph_of_a_nested_run_in_jupyterlab(lab, page, tmp_path):
    """Also saves the widget's screenshot; SCANFLOW_UPDATE_DOCS_IMAGES=1 copies it to docs/images/."""
    open_notebook(page, lab, "graph.ipynb")
    for code in CELLS:
        cell = run_cell(page, code)
        assert "Error" not in cell.inner_text(), cell.inner_text()

    cell = run_cell(page, "%scanflow run pipeline", wait=False)
    widget = cell.locator(".scanflow-graph")
    # live: while `train` sleeps, its node is drawn as running and `prepare` as succeeded
    widget.locator("g.node.sf-running", has_text="train").wait_for(timeout=90_000)
    assert widget.locator("g.node.sf-succeeded", has_text="prepare").count() == 1
    wait_for_cell(page, cell, timeout=120)

    widget.locator(".scanflow-summary", has_text="5/5 done").wait_for(timeout=30_000)
    titles = widget.locator("g.node.sf-executor title").all_text_contents()
    assert sorted(titles) == sorted(KEYS)
    assert widget.locator("g.node.sf-succeeded").count() == len(KEYS)
    clusters = widget.locator("g.cluster title").all_text_contents()
    assert sorted(clusters) == ["cluster_evaluate", "cluster_pipeline", "cluster_report"]
    assert "succeeded" in widget.locator("g.node", has_text="train").text_content()

    widget.locator("select").select_option("pipeline/train")
    widget.locator(".scanflow-log", has_text="epoch 2 loss 0.333").wait_for(timeout=30_000)
    details = widget.locator(".scanflow-details").inner_text()
    assert re.search(r"parameters\s+epochs=3", details)
    assert re.search(r"MLflow run\s+[0-9a-f]{32}", details)

    # a background run: the cell returns at once, the widget keeps updating while the kernel is idle
    cell = run_cell(
        page,
        "from scanflow_nb import App\n"
        "from scanflow_nb.widgets.graph import GraphWidget\n"
        "app = App.open('demo')\n"
        "live = GraphWidget(app.find('pipeline'), app)\n"
        "display(live)\n"
        "handle = app.run('pipeline', listeners=[live.on_event], background=True, force=True, "
        "echo=False)",
    )
    live = cell.locator(".scanflow-graph")
    assert "5/5 done" not in live.locator(".scanflow-summary").inner_text()
    assert "kernel is free" in run_cell(page, "print('kernel is free')").inner_text()
    live.locator(".scanflow-summary", has_text="5/5 done").wait_for(timeout=90_000)
    assert live.locator("g.node.sf-succeeded").count() == len(KEYS)

    shot = screenshot(widget, tmp_path / "graph_widget.png")
    assert shot.stat().st_size > 10_000
    if os.environ.get("SCANFLOW_UPDATE_DOCS_IMAGES") == "1":
        shutil.copyfile(shot, DOCS_IMAGE)
