"""The swarm back end on a real single-node swarm: the same workflows as on local, the same outcome."""
import pytest

from docker_support import RUNS, base_image, docker_engine, new_app, swarm_engine  # noqa: F401
from scanflow_nb.run.docker import leftovers
from test_backends import faulty_workflow, nested_workflow, outcome, tree

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.slow]


@pytest.fixture
def swarm_backend(swarm_engine, base_image):
    from scanflow_nb.run.swarm import SwarmBackend

    def make():
        RUNS["docker"] += 1
        return SwarmBackend(base_image=base_image, echo=lambda line: None)
    return make


def test_nested_workflow_runs_as_services_like_local(tmp_path, swarm_backend):
    """test_backends shows local == docker for this workflow; here swarm gives the same, by value."""
    app = new_app(tmp_path / "swarm", nested_workflow())
    result = app.run("main", backend=swarm_backend(), echo=False)
    assert result.status == "succeeded", result.summary()
    assert outcome(result) == dict.fromkeys(["main/prep", "group/left", "group/right", "post/report"],
                                            ("succeeded", 1, 0, None))
    top = tree(result)
    assert (top["kind"], top["status"], [c["name"] for c in top["children"]]) == (
        "workflow", "FINISHED", ["group", "post", "prep"])
    group, post, prep = top["children"]
    assert [(c["name"], c["value"], c["params"], c["status"]) for c in group["children"]] == [
        ("left", 6.0, {"factor": "2"}, "FINISHED"), ("right", 15.0, {"factor": "5"}, "FINISHED")]
    assert (prep["kind"], prep["value"], post["children"][0]["value"]) == ("executor", 3.0, 6.0)
    assert (app.path / "data/report.json").read_text() == '{"value": 6}'
    assert leftovers(app.path) == []


def test_failures_and_timeouts_as_services(tmp_path, swarm_backend):
    app = new_app(tmp_path, faulty_workflow())
    result = app.run("faulty", backend=swarm_backend(), echo=False, max_workers=4)
    assert outcome(result) == {
        "faulty/bad": ("failed", 1, 3, "exit code 3"),
        "faulty/flaky": ("succeeded", 2, 0, None),
        "faulty/slow": ("failed", 1, None, "timed out after 3 s"),
        "faulty/needs_bad": ("skipped", 0, None, "upstream faulty/bad failed")}
    assert "broken" in app.logs("faulty/bad")
    assert leftovers(app.path) == []
