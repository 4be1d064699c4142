"""A workflow tree as a graphviz Digraph: clusters for workflows, nodes for executors.

Every nested workflow is a cluster (to any depth); a parallel workflow has a dashed border and
no sequence edges, so dot lays its children side by side. Sequential order is drawn as thin grey
edges, `depends_on` as solid black ones. Tracker, checker, improver and planner are small nodes
at the top of their workflow's cluster. Node colours and labels follow the executor states.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import graphviz

from .. import events as ev
from ..spec import Executor, Workflow
from .status import ExecutorStatus, as_statuses

FILL = {
    ev.PENDING: "#ffffff",
    ev.RUNNING: "#fff3a8",
    ev.SERVING: "#b3e5e0",
    ev.CACHED: "#d7e3f4",
    ev.SUCCEEDED: "#b7e4b0",
    ev.FAILED: "#f4a6a0",
    ev.SKIPPED: "#eeeeee",
}
BORDER = {
    ev.PENDING: "#888888",
    ev.RUNNING: "#c9a400",
    ev.SERVING: "#1b8a7a",
    ev.CACHED: "#5b7fb3",
    ev.SUCCEEDED: "#3a8f2f",
    ev.FAILED: "#b8322a",
    ev.SKIPPED: "#aaaaaa",
}
CLUSTER_FILL = ("#f7f9fc", "#ffffff")
SPECIAL_SHAPES = {"tracker": "cylinder", "checker": "hexagon", "improver": "house", "planner": "component"}
FONT = "Helvetica"


def to_digraph(workflow: Workflow, states: Mapping[str, Any] | None = None) -> graphviz.Digraph:
    """The workflow drawn as a Digraph; `states` maps "workflow/executor" to a state or ExecutorStatus."""
    statuses = as_statuses(states)
    graph = graphviz.Digraph(
        name=workflow.name,
        graph_attr={
            "rankdir": "TB",
            "compound": "true",
            "nodesep": "0.25",
            "ranksep": "0.35",
            "fontname": FONT,
            "fontsize": "11",
            "tooltip": workflow.name,
        },
        node_attr={
            "shape": "box",
            "style": "rounded,filled",
            "fontname": FONT,
            "fontsize": "10",
            "margin": "0.12,0.04",
            "height": "0.3",
        },
        edge_attr={"arrowsize": "0.6", "color": "#333333"},
    )
    edges: list[tuple[str, str, dict[str, str]]] = []
    _add_workflow(graph, workflow, statuses, edges, depth=0)
    for tail, head, attrs in edges:
        graph.edge(tail, head, **attrs)
    return graph


def node_id(workflow: Workflow, child: Executor | Workflow | str) -> str:
    """The graphviz node id of an executor ("workflow/executor") or a special/placeholder node."""
    name = child if isinstance(child, str) else child.name
    return f"{workflow.name}/{name}" if isinstance(child, Executor) else f"{workflow.name}#{name}"


def _add_workflow(
    parent: graphviz.Digraph, wf: Workflow, statuses: dict[str, ExecutorStatus], edges: list, depth: int
) -> None:
    with parent.subgraph(name=f"cluster_{wf.name}") as cluster:
        cluster.attr(
            label=wf.name + ("  (parallel)" if wf.parallel else ""),
            labeljust="l",
            style="rounded,dashed,filled" if wf.parallel else "rounded,filled",
            fillcolor=CLUSTER_FILL[depth % 2],
            color="#7a8699",
            id=f"cluster-{wf.name}",
            **{"class": "sf-workflow" + (" sf-parallel" if wf.parallel else "")},
        )
        _add_specials(cluster, wf, edges)
        for ex in wf.executors:
            _add_executor(cluster, wf, ex, statuses.get(f"{wf.name}/{ex.name}", ExecutorStatus()))
        if wf.parallel:
            _keep_side_by_side_in_order(cluster, wf)
        for child in wf.workflows:
            _add_workflow(cluster, child, statuses, edges, depth + 1)
        if not wf.children():
            cluster.node(
                node_id(wf, "empty"),
                "no executors yet",
                shape="plaintext",
                style="",
                fontcolor="#888888",
                **{"class": "sf-empty"},
            )
    _add_order_edges(wf, edges)


def _add_executor(cluster: graphviz.Digraph, wf: Workflow, ex: Executor, status: ExecutorStatus) -> None:
    key = f"{wf.name}/{ex.name}"
    tooltip = ", ".join(f"{k}={v}" for k, v in ex.parameters.items()) or "no parameters"
    name = ex.name
    if ex.service:  # a long-running service: its port (and copies), a double border
        name += f" :{ex.port}" + (f" x{ex.replicas}" if ex.replicas > 1 else "")
        tooltip = f"{ex.model or 'service'} at {status.url or f'port {ex.port}'}; {tooltip}"
    cluster.node(
        key,
        f"{name}\n{status.describe()}",
        peripheries="2" if ex.service else "1",
        fillcolor=FILL[status.state],
        color=BORDER[status.state],
        penwidth="2" if status.state in (ev.RUNNING, ev.SERVING) else "1",
        width="1.3",  # room for "succeeded · 12.3 s": the live widget relabels nodes without re-running dot
        style="rounded,filled,dashed" if status.state == ev.SKIPPED else "rounded,filled",
        tooltip=f"{key}: {tooltip}",
        id=f"sf-{key}",
        **{"class": f"sf-executor sf-{status.state}"},
    )


def _keep_side_by_side_in_order(cluster: graphviz.Digraph, wf: Workflow) -> None:
    """Executors of a parallel workflow that wait for nothing: one rank, left to right as declared."""
    starters = [node_id(wf, ex) for ex in wf.executors if not ex.depends_on]
    if len(starters) < 2:
        return
    with cluster.subgraph(name=f"{wf.name}#starters") as row:
        row.attr(rank="same")
        for tail, head in zip(starters, starters[1:]):
            row.edge(tail, head, style="invis")


def _special_label(kind: str, special: Any) -> str:
    if kind == "tracker":
        return "tracker\n" + ("embedded store" if special.embedded else f"{special.host}:{special.port}")
    if kind == "checker":
        return f"checker\n{special.detector} every {special.every:g} s"
    if kind == "improver":
        return f"improver\n{special.strategy}, k={special.k}"
    return f"planner\n{special.metric} → {special.alias}"


def _add_specials(cluster: graphviz.Digraph, wf: Workflow, edges: list) -> None:
    present = [kind for kind in SPECIAL_SHAPES if getattr(wf, kind) is not None]
    if not present:
        return
    with cluster.subgraph(name=f"{wf.name}#specials") as row:
        row.attr(rank="same")
        for kind in present:
            row.node(
                node_id(wf, kind),
                _special_label(kind, getattr(wf, kind)),
                shape=SPECIAL_SHAPES[kind],
                style="filled",
                fillcolor="#e8e4f3",
                color="#6b5ca5",
                fontsize="9",
                margin="0.04,0.02",
                **{"class": f"sf-special sf-{kind}"},
            )
    head = _first_node(wf, first=True)
    for kind in present:  # invisible edges keep the special nodes above the workflow's steps
        edges.append((node_id(wf, kind), head, {"style": "invis"}))


def _add_order_edges(wf: Workflow, edges: list) -> None:
    children = {c.name: c for c in wf.children()}
    for child in wf.children():
        for dep in getattr(child, "depends_on", []):
            edges.append(_edge(wf, children[dep], child, {"color": "#222222", "penwidth": "1.3"}))
    if wf.parallel:
        return
    order = wf.order()
    for before, after in zip(order, order[1:]):
        if before not in getattr(children[after], "depends_on", []):
            edges.append(
                _edge(
                    wf, children[before], children[after], {"color": "#9aa3ad", "style": "dashed", "arrowhead": "vee"}
                )
            )


def _edge(
    wf: Workflow, tail: Executor | Workflow, head: Executor | Workflow, attrs: dict[str, str]
) -> tuple[str, str, dict[str, str]]:
    tail_id, ltail = _exit(wf, tail)
    head_id, lhead = _entry(wf, head)
    return tail_id, head_id, {**attrs, **ltail, **lhead}


def _entry(wf: Workflow, child: Executor | Workflow) -> tuple[str, dict[str, str]]:
    """The node where edges into `child` attach (inside its cluster if it is a workflow)."""
    if isinstance(child, Executor):
        return node_id(wf, child), {}
    return _first_node(child, first=True), {"lhead": f"cluster_{child.name}"}


def _exit(wf: Workflow, child: Executor | Workflow) -> tuple[str, dict[str, str]]:
    """The node where edges out of `child` start."""
    if isinstance(child, Executor):
        return node_id(wf, child), {}
    return _first_node(child, first=False), {"ltail": f"cluster_{child.name}"}


def _first_node(wf: Workflow, first: bool) -> str:
    """The first (or last) executor node in run order, descending into child workflows."""
    order = wf.order()
    if not order:
        return node_id(wf, "empty")
    name = order[0] if first else order[-1]
    child = wf.executor(name) or wf.find(name)
    return node_id(wf, child) if isinstance(child, Executor) else _first_node(child, first)
