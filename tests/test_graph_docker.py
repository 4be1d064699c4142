"""The live graph widget follows a run on the docker back end (real engine, real containers)."""

from __future__ import annotations

import shutil

import pytest
from docker_support import new_app

from scanflow_nb import Executor, Workflow
from scanflow_nb.events import RunEvent

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        not shutil.which("dot"), reason="graphviz's `dot` program is not installed (apt-get install graphviz)"
    ),
]


def test_widget_follows_a_docker_run(tmp_path, docker_backend):
    from scanflow_nb.widgets.graph import GraphWidget

    flow = Workflow(
        "dock",
        executors=[Executor("hello", code="print('hello from a container')")],
        workflows=[
            Workflow(
                "fan",
                parallel=True,
                executors=[
                    Executor("ok", code="print('fine')"),
                    Executor("bad", code="import sys; print('broken input'); sys.exit(4)"),
                ],
            )
        ],
    )
    app = new_app(tmp_path / "app", flow)
    widget = GraphWidget(app.find("dock"), app)
    seen = []

    def watch(event: RunEvent):
        widget.on_event(event)
        if event.key == "dock/hello":
            seen.append(widget.progress.status("dock/hello").state)

    result = app.run("dock", docker_backend(), listeners=[watch], echo=False)
    assert result.status == "failed"
    assert seen[0] == "running" and seen[-1] == "succeeded"
    svg = widget._repr_svg_()
    for key, state in (("dock/hello", "succeeded"), ("fan/ok", "succeeded"), ("fan/bad", "failed")):
        assert widget.nodes[key]["state"] == state
        assert f'<g id="sf&#45;{key}" class="node sf&#45;executor sf&#45;{state}">' in svg
    assert "3/3 done · 1 failed (fan/bad)" in widget.summary
    assert widget.selected == "fan/bad"
    assert "<th>exit code</th><td>4</td>" in widget.details_html() and "broken input" in widget.log
