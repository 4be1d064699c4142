"""The workflow graph: drawn by the real `dot`, checked in the SVG it produces; text tree; export."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from scanflow_nb import Checker, Executor, Improver, Planner, ScanflowError, Tracker, Workflow
from scanflow_nb.errors import ValidationError
from scanflow_nb.events import RunEvent
from scanflow_nb.graph import (
    ExecutorStatus,
    GraphvizMissing,
    RunProgress,
    render_svg,
    save_graph,
    text_tree,
    to_digraph,
)

SVG = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(
    not __import__("shutil").which("dot"), reason="graphviz's `dot` program is not installed (apt-get install graphviz)"
)


def ex(name, **kw):
    return Executor(name, code="print('hi')", **kw)


def nested() -> Workflow:
    """Three levels: a sequential root, a parallel group, a sequential group inside it, and specials."""
    inner = Workflow("inner", executors=[ex("c"), ex("d")])
    group = Workflow("evaluate", parallel=True, executors=[ex("a"), ex("b")], workflows=[inner])
    return Workflow(
        "pipeline",
        tracker=Tracker(),
        checker=Checker(),
        improver=Improver(),
        planner=Planner(),
        executors=[ex("prepare", parameters={"rows": 10}), ex("train", depends_on=["prepare"])],
        workflows=[group, Workflow("report", executors=[ex("publish")])],
    )


def parse(svg: str):
    """Nodes (title -> (class, label text, centre y, x)), cluster titles and edge titles of an SVG."""
    root = ET.fromstring(svg)
    nodes, clusters, edges = {}, [], []
    for g in root.iter(f"{SVG}g"):
        kind, title = g.get("class", ""), g.findtext(f"{SVG}title")
        if kind.startswith("node"):
            texts = [t.text for t in g.iter(f"{SVG}text")]
            ys = [float(t.get("y")) for t in g.iter(f"{SVG}text")]
            x = float(next(g.iter(f"{SVG}text")).get("x"))
            nodes[title] = (kind, " ".join(texts), sum(ys) / len(ys), x)
        elif kind.startswith("cluster"):
            clusters.append(title)
        elif kind == "edge":
            edges.append(title)
    return nodes, clusters, edges


@needs_dot
def test_every_workflow_is_a_cluster_and_every_executor_a_node():
    nodes, clusters, _ = parse(render_svg(nested()))
    assert sorted(clusters) == ["cluster_evaluate", "cluster_inner", "cluster_pipeline", "cluster_report"]
    executors = {
        "pipeline/prepare",
        "pipeline/train",
        "evaluate/a",
        "evaluate/b",
        "inner/c",
        "inner/d",
        "report/publish",
    }
    assert executors <= set(nodes)
    specials = {"pipeline#tracker", "pipeline#checker", "pipeline#improver", "pipeline#planner"}
    assert set(nodes) == executors | specials
    assert "embedded store" in nodes["pipeline#tracker"][1]
    assert nodes["pipeline#checker"][1] == "checker auto every 5 s"


@needs_dot
def test_parallel_children_side_by_side_and_sequential_ones_below_each_other():
    nodes, _, edges = parse(render_svg(nested()))
    y = {key: node[2] for key, node in nodes.items()}
    assert y["evaluate/a"] == y["evaluate/b"]  # parallel: same rank,
    assert nodes["evaluate/a"][3] < nodes["evaluate/b"][3]  # left to right as declared
    assert y["pipeline/prepare"] < y["pipeline/train"] < y["evaluate/a"] < y["report/publish"]
    assert y["inner/c"] < y["inner/d"]  # sequential inside the parallel group
    assert "pipeline/prepare->pipeline/train" in edges  # depends_on
    assert not any(e.startswith("evaluate/a->") or e.startswith("evaluate/b->") for e in edges)


def test_dependency_on_a_sibling_workflow_attaches_to_its_cluster():
    flow = Workflow(
        "root",
        parallel=True,
        workflows=[Workflow("load", executors=[ex("x"), ex("y")])],
        executors=[ex("fit", depends_on=["load"])],
    )
    source = to_digraph(flow).source
    assert re.search(r'"load/y" -> "root/fit" \[.*ltail=cluster_load', source)


@needs_dot
def test_states_colour_and_label_the_nodes():
    states = {
        "pipeline/prepare": "succeeded",
        "pipeline/train": ExecutorStatus("failed", duration=3.25, attempt=2),
        "evaluate/a": "running",
        "evaluate/b": "cached",
        "inner/c": "skipped",
    }
    nodes, _, _ = parse(render_svg(nested(), states))
    assert nodes["pipeline/prepare"][:2] == ("node sf-executor sf-succeeded", "prepare succeeded")
    assert nodes["pipeline/train"][:2] == ("node sf-executor sf-failed", "train failed · 3.2 s · try 2")
    assert nodes["evaluate/a"][0].endswith("sf-running")
    assert nodes["evaluate/b"][0].endswith("sf-cached")
    assert nodes["inner/c"][0].endswith("sf-skipped")
    assert nodes["inner/d"][:2] == ("node sf-executor sf-pending", "d pending")


def test_unknown_state_is_a_clear_error():
    with pytest.raises(ValidationError, match="unknown executor state 'done'"):
        to_digraph(nested(), {"pipeline/prepare": "done"})


def test_text_tree_shows_nesting_order_states_and_specials():
    states = {"pipeline/prepare": ExecutorStatus("succeeded", duration=1.25), "evaluate/a": "failed"}
    assert text_tree(nested(), states) == "\n".join(
        [
            "pipeline  (sequential; tracker: embedded store; checker: auto every 5 s; "
            "improver: auto, k=10; planner: accuracy → champion)",
            "├── prepare  [succeeded · 1.2 s]",
            "├── train  [pending]  after prepare",
            "├── evaluate  (parallel)",
            "│   ├── a  [failed]",
            "│   ├── b  [pending]",
            "│   └── inner  (sequential)",
            "│       ├── c  [pending]",
            "│       └── d  [pending]",
            "└── report  (sequential)",
            "    └── publish  [pending]",
        ]
    )


def test_empty_workflow_is_drawn_with_a_note():
    empty = Workflow("empty")
    assert text_tree(empty) == "empty  (sequential)\n└── (no executors yet)"
    assert "no executors yet" in to_digraph(empty).source


@needs_dot
def test_save_graph_writes_svg_png_and_source(tmp_path):
    svg = save_graph(nested(), tmp_path / "out" / "graph.svg")
    assert svg == (tmp_path / "out" / "graph.svg").resolve()
    assert "inner/c" in svg.read_text()
    png = save_graph(nested(), tmp_path / "graph.PNG", {"pipeline/prepare": "succeeded"})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gv = save_graph(nested(), tmp_path / "graph.gv")
    assert gv.read_text().startswith("digraph pipeline {")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.PNG", "graph.gv", "out"]


def test_save_graph_rejects_unknown_formats_and_writes_nothing(tmp_path):
    with pytest.raises(ValidationError, match=r"cannot save a graph as 'graph.jpg': use a name ending in \.svg"):
        save_graph(nested(), tmp_path / "graph.jpg")
    assert list(tmp_path.iterdir()) == []


def test_without_dot_svg_and_png_say_to_install_graphviz(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    for name in ("graph.svg", "graph.png"):
        with pytest.raises(GraphvizMissing, match="graphviz's `dot` program is not installed; install graphviz"):
            save_graph(nested(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    assert save_graph(nested(), tmp_path / "graph.gv").is_file()  # the source needs no `dot`
    assert "└── report" in text_tree(nested())


def test_a_broken_dot_is_reported_in_one_line(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dot").write_text("#!/bin/sh\necho 'Error: layout failed' >&2\nexit 1\n")
    (bin_dir / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ScanflowError, match="graphviz failed to draw .*graph.svg: Error: layout failed"):
        save_graph(nested(), tmp_path / "graph.svg")
    assert not (tmp_path / "graph.svg").exists()


def events(*specs):
    return [RunEvent(kind, "pipeline", key, **kw) for kind, key, kw in specs]


def test_progress_follows_events_and_summarises():
    progress = RunProgress(nested())
    for e in events(
        ("run_started", None, {"run_id": "root", "time": 100.0}),
        ("started", "pipeline/prepare", {"run_id": "r1", "time": 100.0}),
        ("line", "pipeline/prepare", {"line": "hello"}),
        ("succeeded", "pipeline/prepare", {"duration": 2.0, "run_id": "r1", "exit_code": 0}),
        ("started", "pipeline/train", {"time": 102.0}),
        ("retrying", "pipeline/train", {"attempt": 2, "error": "exit code 1", "time": 103.0}),
        ("failed", "pipeline/train", {"attempt": 2, "duration": 1.0, "exit_code": 1, "error": "exit code 1"}),
        ("cached", "evaluate/a", {}),
        *[("skipped", key, {"attempt": 0}) for key in ("evaluate/b", "inner/c", "inner/d", "report/publish")],
    ):
        progress.apply(e)
    assert progress.status("pipeline/prepare") == ExecutorStatus(
        "succeeded", duration=2.0, run_id="r1", exit_code=0, started=100.0
    )
    train = progress.status("pipeline/train")
    assert (train.state, train.attempt, train.error) == ("failed", 2, "exit code 1")
    assert progress.summary(now=110.0).text() == (
        "7/7 done · 1 cached · 4 skipped · 1 failed (pipeline/train) · 10.0 s so far"
    )
    progress.apply(RunEvent("run_finished", "pipeline", run_id="root", error="failed", time=111.5))
    assert progress.summary().text().endswith("· 11.5 s")
    assert progress.run_error == "the run failed"
    progress.apply(RunEvent("run_started", "pipeline", run_id="again"))
    assert {s.state for s in progress.snapshot().values()} == {"pending"}


def test_progress_running_shows_time_so_far():
    progress = RunProgress(nested())
    progress.apply(RunEvent("started", "pipeline", "pipeline/prepare", time=50.0))
    assert progress.status("pipeline/prepare").describe(now=53.0) == "running · 3.0 s"
    assert progress.summary(now=53.0).text() == "0/7 done · 1 running"
