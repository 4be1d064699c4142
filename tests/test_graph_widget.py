"""The live graph widget, fed by real runs of the local back end (real subprocesses, real MLflow store).

These drive the widget's Python side exactly as the front end does (setting `selected`, sending the
"ready" message); tests/test_graph_browser.py clicks and presses keys in a real browser.
"""

from __future__ import annotations

import re
import shutil
import threading

import pytest

from scanflow_nb import Executor, Workflow
from scanflow_nb.app import App
from scanflow_nb.events import RunEvent

widgets = pytest.importorskip("ipywidgets", reason="ipywidgets is not installed")
from scanflow_nb.widgets.graph import GraphWidget  # noqa: E402

needs_dot = pytest.mark.skipif(
    not shutil.which("dot"), reason="graphviz's `dot` program is not installed (apt-get install graphviz)"
)


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture
def app(tmp_path):
    """A nested app: pipeline (sequential) > evaluate (parallel) > a, b; b fails with exit code 3."""
    app = App(tmp_path / "app")
    app.declare_workflow("pipeline")
    app.declare_workflow("evaluate", parallel=True, parent="pipeline")
    app.declare_executor(
        "pipeline", "prepare", source="import sys\nprint('rows', sys.argv[1:])\n", parameters={"rows": 10}
    )
    app.declare_executor("evaluate", "a", source="print('a is fine')\n")
    app.declare_executor("evaluate", "b", source="import sys\nprint('b is about to fail')\nsys.exit(3)\n")
    return app


def node_classes(widget: GraphWidget) -> dict[str, str]:
    """Executor key -> its state as sent to the front end, checked against the static drawing's classes."""
    import re

    sent = {key: node["state"] for key, node in widget.nodes.items()}
    drawn = {
        key.replace("&#45;", "-"): state
        for key, state in re.findall(
            r'<g id="sf&#45;([^"]+)" class="node sf&#45;executor sf&#45;(\w+)"', widget._repr_svg_() or ""
        )
    }
    assert drawn == sent, "the drawing for front ends without widgets disagrees with the live states"
    return sent


@needs_dot
def test_a_failed_run_is_shown_live_with_its_failure_selected(app):
    widget = GraphWidget(app.find("pipeline"), app)
    assert node_classes(widget) == {"pipeline/prepare": "pending", "evaluate/a": "pending", "evaluate/b": "pending"}
    result = app.run("pipeline", listeners=[widget.on_event], echo=False)
    assert result.status == "failed"
    assert node_classes(widget) == {"pipeline/prepare": "succeeded", "evaluate/a": "succeeded", "evaluate/b": "failed"}
    assert "3/3 done · 1 failed (evaluate/b)" in widget.summary
    assert "the run failed" in widget.summary
    assert widget.bar == {"done": 3, "total": 3, "style": "danger"}
    assert widget.selected == "evaluate/b"  # opens on the failure
    details = widget.details_html()
    assert "<th>exit code</th><td>3</td>" in details
    assert result.executors["evaluate/b"].run_id in details
    assert "mlflow ui --backend-store-uri sqlite:///" in details
    assert "b is about to fail" in widget.log
    widget.selected = "pipeline/prepare"  # what a click does
    assert "<th>parameters</th><td>rows=10</td>" in widget.details_html()
    assert "rows ['--rows', '10']" in widget.log
    assert widget.errors == []


@needs_dot
def test_a_background_run_updates_the_widget_from_the_run_thread(app):
    app.declare_executor("evaluate", "b", source="print('fixed')\n")
    widget = GraphWidget(app.find("pipeline"), app)
    threads = set()
    handle = app.run(
        "pipeline",
        listeners=[widget.on_event, lambda e: threads.add(threading.current_thread())],
        echo=False,
        background=True,
    )
    result = handle.result(timeout=120)
    assert result.status == "succeeded"
    assert threading.main_thread() not in threads  # events really came from another thread
    assert set(node_classes(widget).values()) == {"succeeded"}
    assert widget.bar == {"done": 3, "total": 3, "style": "success"}
    assert widget.selected == ""


@needs_dot
def test_a_past_run_loads_with_log_tails_from_the_log_files(app):
    app.run("pipeline", echo=False)
    widget = GraphWidget(app.find("pipeline"), app)
    widget.load_result(app.status("pipeline")["pipeline"])
    assert node_classes(widget)["evaluate/b"] == "failed"
    widget.selected = "evaluate/a"
    assert "a is fine" in widget.log  # read from app.log_path(key)


@needs_dot
def test_bursts_of_events_from_threads_are_coalesced(app):
    widget = GraphWidget(app.find("pipeline"), refresh_interval=0.2)
    keys = ["pipeline/prepare", "evaluate/a", "evaluate/b"]

    def feed(key):
        widget.on_event(RunEvent("started", "pipeline", key))
        for i in range(2000):
            widget.on_event(RunEvent("line", "pipeline", key, line=f"{key} line {i}"))
        widget.on_event(RunEvent("succeeded", "pipeline", key, duration=0.5))

    widget.on_event(RunEvent("run_started", "pipeline", run_id="r"))
    workers = [threading.Thread(target=feed, args=(key,)) for key in keys]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    widget.on_event(RunEvent("run_finished", "pipeline", run_id="r"))
    assert widget.renders <= 10, f"{widget.renders} redraws for 6,000 log lines and 6 state changes"
    assert set(node_classes(widget).values()) == {"succeeded"}
    widget.selected = "evaluate/a"
    assert widget.log.count("evaluate/a line") == widget.log_tail
    assert "evaluate/a line 1999" in widget.log


def test_without_dot_the_widget_shows_a_text_tree_and_says_why(app, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    widget = GraphWidget(app.find("pipeline"), app)
    widget.on_event(RunEvent("run_started", "pipeline", run_id="r"))
    widget.on_event(RunEvent("failed", "pipeline", "evaluate/b", exit_code=3, error="exit code 3"))
    widget.on_event(RunEvent("run_finished", "pipeline", run_id="r", error="failed"))
    assert "graphviz&#x27;s `dot` program is not installed" in widget.message
    assert widget.svg == "" and "b  [failed]" in widget.text
    assert widget._repr_svg_() is None
    assert "b  [failed]" in widget._repr_html_()
    assert widget.errors == []


def test_a_drawing_failure_is_shown_in_the_widget_not_raised(app, monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dot").write_text("#!/bin/sh\necho 'Error: out of memory' >&2\nexit 1\n")
    (bin_dir / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    widget = GraphWidget(app.find("pipeline"), app)
    assert "could not redraw the graph: graphviz failed" in widget.message
    assert widget.errors and "Error: out of memory" in widget.errors[0]


def test_an_empty_workflow_says_how_to_add_an_executor(tmp_path):
    widget = GraphWidget(Workflow("empty"))
    assert "workflow &#x27;empty&#x27; has no executors yet" in widget.message
    assert "no executors" in widget.summary
    assert widget.nodes == {} and widget.info == {}


@needs_dot
def test_static_renderings_carry_the_graph(app):
    widget = GraphWidget(app.find("pipeline"), app)
    assert widget._repr_svg_().startswith("<svg")
    assert "0/3 done" in widget._repr_html_() and "evaluate/b" in widget._repr_html_()
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(widget)
    assert {"application/vnd.jupyter.widget-view+json", "image/svg+xml", "text/html"} <= set(data)
    assert "live graph of workflow 'pipeline': an interactive widget; it shows in JupyterLab 4" in data["text/plain"]
    assert "As text: %scanflow graph --text" in data["text/plain"]
    assert data["text/plain"].splitlines()[1:4] == [
        "pipeline: 0/3 done",
        "pipeline  (sequential)",
        "├── prepare  [pending]",
    ]


def test_only_workflows_are_accepted():
    from scanflow_nb.errors import ScanflowError

    with pytest.raises(ScanflowError, match="GraphWidget needs a Workflow, got str"):
        GraphWidget("pipeline")


def test_server_tracker_links_to_the_mlflow_ui(tmp_path):
    from scanflow_nb import Tracker

    app = App(
        tmp_path / "app", [Workflow("served", tracker=Tracker(port=5123), executors=[Executor("x", code="print(1)")])]
    )
    widget = GraphWidget(app.find("served"), app)
    widget.on_event(RunEvent("succeeded", "served", "served/x", run_id="abc123"))
    widget.selected = "served/x"
    assert "<a href='http://127.0.0.1:5123/#/runs/abc123' target='_blank'>abc123</a>" in widget.details_html()


def test_elapsed_time_ticks_during_a_quiet_run_and_stops_after(app):
    import time

    widget = GraphWidget(app.find("pipeline"), app, tick_interval=0.1)
    widget.on_event(RunEvent("run_started", "pipeline", run_id="r", time=time.time() - 5))
    widget.on_event(RunEvent("started", "pipeline", "pipeline/prepare"))
    first = widget.summary
    deadline = time.time() + 10
    while widget.summary == first and time.time() < deadline:
        time.sleep(0.05)
    assert widget.summary != first and "so far" in widget.summary  # ticked with no new event
    renders = widget.renders
    widget.on_event(RunEvent("run_finished", "pipeline", run_id="r", error="interrupted"))
    assert "the run interrupted" in widget.summary and "so far" not in widget.summary
    assert widget._ticker is None and widget.renders == renders + 1
    widget.close()
    widget.on_event(RunEvent("run_started", "pipeline", run_id="again"))
    assert widget._ticker is None  # a closed widget never ticks


def test_selecting_from_python_takes_a_unique_name_and_refuses_unknown_ones(app):
    from scanflow_nb.errors import NotFoundError

    widget = GraphWidget(app.find("pipeline"), app)
    widget.selected = "b"
    assert widget.selected == "evaluate/b"
    assert "<th>state</th><td>pending</td>" in widget.details_html()
    with pytest.raises(NotFoundError, match="no executor 'nope' here"):
        widget.selected = "nope"
    assert widget.selected == "evaluate/b"  # unchanged
    widget.selected = ""
    assert widget.details_html() == "" and widget.log == ""


@needs_dot
def test_resources_used_by_a_run_are_read_from_its_mlflow_run(app):
    """What issue 20's resource tracking logs (resource.peak_rss_mb, resource.cpu_s) shows in the details."""
    import time

    from mlflow.tracking import MlflowClient

    widget = GraphWidget(app.find("pipeline"), app)
    result = app.run("pipeline", listeners=[widget.on_event], echo=False)
    run_id = result.executors["evaluate/a"].run_id
    client = MlflowClient(widget._tracking_uri())
    if "resource.peak_rss_mb" not in client.get_run(run_id).data.metrics:  # the engine does not record it yet
        client.log_metric(run_id, "resource.peak_rss_mb", 42.0)
        client.log_metric(run_id, "resource.cpu_s", 0.25)
    widget.selected = "evaluate/a"
    deadline = time.monotonic() + 30
    while not any(row[0] == "used" for row in widget.nodes["evaluate/a"]["rows"]) and time.monotonic() < deadline:
        time.sleep(0.1)  # read in a background thread, then sent to the front end with the next update
    assert re.search(r"<th>used</th><td>peak memory \d+ MB, CPU \d+\.\d s</td>", widget.details_html())
    assert "<th>resources</th>" not in widget.details_html()  # nothing declared


def test_the_widgets_es_modules_are_installed_and_load_nothing_from_the_network():
    """VS Code and offline machines cannot fetch widget code: each ES module is a file of the package
    (tests/test_packaging.py checks the wheel holds it) and imports nothing from a URL."""
    from pathlib import Path

    import scanflow_nb.widgets

    folder = Path(scanflow_nb.widgets.__file__).parent
    modules = {p.name: p.read_text() for p in folder.glob("*.js")}
    assert {"graph.js", "labeling.js", "drift.js"} <= set(modules)
    for name, text in modules.items():
        assert "export default" in text, name
        assert not re.search(r"""(from\s+|import\s*\(?\s*)["']https?://""", text), f"{name} loads code from the network"
    assert {"graph.css", "labeling.css", "drift.css"} <= {p.name for p in folder.glob("*.css")}
