"""The live graph in a real browser, in JupyterLab 4 and in Notebook 7: declare a nested workflow with the
magics, run it, click its nodes while it runs, move with the keys, select from Python, show it again, save
and reopen the notebook. Every check waits for the state it asserts (Playwright's `expect`).

SCANFLOW_UPDATE_DOCS_IMAGES=1 writes the screenshot of the clicked graph to docs/images/graph_widget.png.
"""

from __future__ import annotations

import re

import pytest
from browser_support import (
    docs_screenshot,
    eventually,
    expect,
    open_notebook,
    run_cell,
    wait_for_cell,
    wait_for_kernel_output,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

KEYS = ["pipeline/prepare", "pipeline/train", "evaluate/score_a", "evaluate/score_b", "report/publish"]
SLOW = 120_000  # ms: a run on a busy 2-core machine

CELLS = [
    "%load_ext scanflow_nb\n%scanflow app demo",
    "%scanflow workflow pipeline\n"
    "%scanflow workflow evaluate --parallel --parent pipeline\n"
    "%scanflow workflow report --parent evaluate",
    "%%scanflow executor prepare --workflow pipeline -p rows=100\n"
    "import argparse\n"
    "p = argparse.ArgumentParser(); p.add_argument('--rows', type=int)\n"
    "print('prepared', p.parse_args().rows, 'rows')",
    "%%scanflow executor train --workflow pipeline -p epochs=4\n"
    "import time\n"
    "for epoch in range(4):\n"
    "    print('epoch', epoch, 'loss', round(1 / (epoch + 1), 3), flush=True)\n"
    "    time.sleep(1.5)",
    "%%scanflow executor score_a --workflow evaluate\nprint('accuracy 0.91')",
    "%%scanflow executor score_b --workflow evaluate\nprint('accuracy 0.87')",
    "%%scanflow executor publish --workflow report\nprint('published')",
]


def test_click_keys_and_python_selection_in_the_live_graph(lab, page, tmp_path):
    open_notebook(page, lab, "graph.ipynb")
    for code in CELLS:
        cell = run_cell(page, code)
        expect(cell.locator(".jp-OutputArea-output")).not_to_contain_text("Error")

    # a foreground run: the kernel is busy, yet clicks show details and the log tail as lines arrive
    cell = run_cell(page, "%scanflow run pipeline", wait=False)
    graph = cell.locator(".scanflow-graph")
    train = graph.locator("g.sf-executor[data-key='pipeline/train']")
    expect(train).to_have_class(re.compile(r"\bsf-running\b"), timeout=SLOW)
    expect(graph.locator("g.sf-executor[data-key='pipeline/prepare']")).to_have_class(re.compile(r"\bsf-succeeded\b"))
    train.click()
    expect(train).to_have_class(re.compile(r"\bsf-selected\b"))
    expect(graph.locator(".scanflow-details")).to_contain_text(re.compile(r"parameters\s*epochs=4"))
    expect(graph.locator(".scanflow-details")).to_contain_text(re.compile(r"state\s*running · \d+\.\d s"))
    page.keyboard.press("Enter")  # opens the log
    expect(graph.locator(".scanflow-log")).to_be_visible()
    expect(graph.locator(".scanflow-log")).to_contain_text("epoch 1 loss 0.5", timeout=SLOW)
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text(re.compile(r"\[\*\]"))  # the run was still going

    wait_for_cell(page, cell)
    expect(graph.locator(".scanflow-summary")).to_contain_text("5/5 done")
    expect(graph.locator("g.sf-executor.sf-succeeded")).to_have_count(len(KEYS))
    assert sorted(graph.locator("g.sf-executor").evaluate_all("gs => gs.map(g => g.dataset.key)")) == sorted(KEYS)
    clusters = graph.locator("g.cluster").evaluate_all("gs => gs.map(g => g.dataset.workflow)")
    assert sorted(clusters) == ["evaluate", "pipeline", "report"]
    expect(graph.locator(".scanflow-log")).to_contain_text("epoch 3 loss 0.25")
    expect(graph.locator(".scanflow-details")).to_contain_text(re.compile(r"MLflow run\s*[0-9a-f]{32}"))

    # hover: an outline and a tip with the state and duration
    graph.locator("g.sf-executor[data-key='evaluate/score_a']").hover()
    expect(graph.locator(".sf-tip")).to_have_text(re.compile(r"^evaluate/score_a · succeeded · \d+\.\d s$"))

    # the same graph again in a variable: selection goes both ways between the page and the kernel
    cell = run_cell(page, "g = %scanflow graph pipeline\ng")
    graph = cell.locator(".scanflow-graph")
    expect(graph.locator("g.sf-executor.sf-succeeded")).to_have_count(len(KEYS))
    graph.locator("g.sf-executor[data-key='pipeline/prepare']").click()
    expect(graph.locator(".sf-key")).to_have_text("pipeline/prepare")
    page.keyboard.press("ArrowDown")  # the nearest node below: train
    expect(graph.locator(".sf-key")).to_have_text("pipeline/train")
    page.keyboard.press("ArrowDown")  # then the parallel group under it
    expect(graph.locator(".sf-key")).to_have_text(re.compile(r"^evaluate/score_[ab]$"))
    below = graph.locator(".sf-key").inner_text()
    wait_for_kernel_output(page, "print('selected', g.selected)", f"selected {below}")
    run_cell(page, "g.selected = 'publish'")  # selecting from Python does what a click does
    publish = graph.locator("g.sf-executor[data-key='report/publish']")
    expect(publish).to_have_class(re.compile(r"\bsf-selected\b"))
    expect(graph.locator(".sf-key")).to_have_text("report/publish")
    graph.locator(".sf-drawing").focus()  # the keys go to the graph once it has the focus
    page.keyboard.press("Enter")
    expect(graph.locator(".scanflow-log")).to_be_visible()
    expect(graph.locator(".scanflow-log")).to_have_text("published")
    docs_screenshot(graph, lab, tmp_path, "graph_widget.png")

    # shown again: the same drawing, selection and log tail, not an empty box
    cell = run_cell(page, "display(g)")
    again = cell.locator(".scanflow-graph")
    expect(again.locator("g.sf-executor.sf-succeeded")).to_have_count(len(KEYS))
    expect(again.locator("g.sf-selected")).to_have_attribute("data-key", "report/publish")
    expect(again.locator(".scanflow-log")).to_have_text("published")


def test_a_background_run_and_the_saved_notebook(lab, page):
    """The kernel stays free while the graph follows a run; the saved notebook reopens on the last drawing."""
    open_notebook(page, lab, "background.ipynb")
    for code in CELLS[:3] + CELLS[4:]:
        run_cell(page, code)
    cell = run_cell(
        page,
        "from scanflow_nb import App\n"
        "from scanflow_nb.widgets.graph import GraphWidget\n"
        "app = App('demo')\n"
        "live = GraphWidget(app.find('pipeline'), app)\n"
        "display(live)\n"
        "handle = app.run('pipeline', listeners=[live.on_event], background=True, echo=False)",
    )
    live = cell.locator(".scanflow-graph")
    expect(run_cell(page, "print('kernel is free')").locator(".jp-OutputArea-output")).to_have_text("kernel is free\n")
    expect(live.locator(".scanflow-summary")).to_contain_text("4/4 done", timeout=SLOW)
    expect(live.locator("g.sf-executor.sf-succeeded")).to_have_count(4)
    live.locator("g.sf-executor[data-key='evaluate/score_b']").click()
    wait_for_kernel_output(page, "print(live.selected)", "evaluate/score_b")

    # Save as Ctrl+S does, and wait until the save is done: reading the file while the server replaces it
    # can fail that save (seen on a busy machine). The widget state is saved with it (saveState is on).
    page.evaluate("async () => { await window.jupyterapp.commands.execute('docmanager:save'); }")

    def saved_graph():
        metadata = lab.api("GET", "api/contents/background.ipynb")["content"]["metadata"]
        states = metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
        return next((s["state"] for s in states.values() if s["state"].get("title") == "pipeline"), None)

    graph_state = eventually(saved_graph, what="the saved notebook holding the graph's state")
    assert graph_state["selected"] == "evaluate/score_b" and graph_state["svg"].startswith("<svg")
    assert {n["state"] for n in graph_state["nodes"].values()} == {"succeeded"}

    lab.api("DELETE", f"api/sessions/{lab.api('GET', 'api/sessions')[0]['id']}")  # the kernel is gone
    open_notebook(page, lab, "background.ipynb")  # reopened: a new kernel that knows nothing of the widget
    reopened = page.locator(".scanflow-graph")
    expect(reopened.locator("g.sf-executor.sf-succeeded")).to_have_count(4)
    expect(reopened.locator(".scanflow-summary")).to_contain_text("4/4 done")
    expect(reopened.locator("g.sf-selected")).to_have_attribute("data-key", "evaluate/score_b")
