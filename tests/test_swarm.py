"""The swarm back end on a real single-node swarm: the same workflows as on local, the same outcome."""

import pytest
from docker_support import new_app
from test_backends import faulty_workflow, nested_workflow, outcome, tree

from scanflow_nb import Workflow
from scanflow_nb.run.docker import leftovers

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.slow]


@pytest.fixture
def swarm_backend(swarm_engine, base_image):
    from scanflow_nb.run.swarm import SwarmBackend

    def make():
        return SwarmBackend(base_image=base_image, echo=lambda line: None)

    return make


def test_nested_and_faulty_workflows_run_as_services_like_local(tmp_path, swarm_backend):
    """test_backends shows local == docker for these workflows; swarm gives the same, by value."""
    app = new_app(tmp_path, Workflow("both", parallel=True, workflows=[nested_workflow(), faulty_workflow()]))
    result = app.run("both", backend=swarm_backend(), echo=False, max_workers=4)
    assert outcome(result) == {
        **dict.fromkeys(["main/prep", "group/left", "group/right", "post/report"], ("succeeded", 1, 0, None)),
        "faulty/bad": ("failed", 1, 3, "exit code 3"),
        "faulty/flaky": ("succeeded", 2, 0, None),
        "faulty/slow": ("failed", 1, None, "timed out after 3 s"),
        "faulty/needs_bad": ("skipped", 0, None, "upstream faulty/bad failed"),
    }
    faulty, top = tree(result)["children"]
    assert (top["kind"], top["status"], [c["name"] for c in top["children"]]) == (
        "workflow",
        "FINISHED",
        ["group", "post", "prep"],
    )
    group, post, prep = top["children"]
    assert [(c["name"], c["value"], c["params"], c["status"]) for c in group["children"]] == [
        ("left", 6.0, {"factor": "2"}, "FINISHED"),
        ("right", 15.0, {"factor": "5"}, "FINISHED"),
    ]
    assert (prep["kind"], prep["value"], post["children"][0]["value"]) == ("executor", 3.0, 6.0)
    assert faulty["status"] == "FAILED" and "broken" in app.logs("faulty/bad")
    assert (app.path / "data/report.json").read_text() == '{"value": 6}'
    assert leftovers(app.path) == []
