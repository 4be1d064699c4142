"""One suite, two back ends: the same workflows on local and docker give the same statuses,
outputs and MLflow run trees."""

import json

import pytest
from docker_support import new_app

from scanflow_nb import Executor, Workflow

pytestmark = [pytest.mark.docker]

STEP = """\
import argparse, json, pathlib, mlflow
p = argparse.ArgumentParser(); p.add_argument("--factor", type=int, default=1); a = p.parse_args()
src = pathlib.Path("data/{reads}.json") if "{reads}" else None
value = (json.loads(src.read_text())["value"] if src else 1) * a.factor
pathlib.Path("data").mkdir(exist_ok=True)
pathlib.Path("data/{name}.json").write_text(json.dumps({{"value": value}}))
mlflow.log_metric("value", value)
print("{name}", value)
"""


def step(name, reads="", **kw):
    return Executor(name, code=STEP.format(name=name, reads=reads), outputs=[f"data/{name}.json"], **kw)


def nested_workflow():
    return Workflow(
        "main",
        executors=[step("prep", parameters={"factor": 3})],
        workflows=[
            Workflow(
                "group",
                parallel=True,
                executors=[
                    step("left", "prep", parameters={"factor": 2}),
                    step("right", "prep", parameters={"factor": 5}),
                ],
            ),
            Workflow("post", executors=[step("report", "left")]),
        ],
    )


def faulty_workflow():
    flaky = (
        "import pathlib, sys\np = pathlib.Path('tries'); n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n)); sys.exit(0 if n >= 2 else 4)"
    )
    return Workflow(
        "faulty",
        parallel=True,
        executors=[
            Executor("bad", code="print('broken'); raise SystemExit(3)"),
            Executor("flaky", code=flaky, retries=1),
            Executor("slow", code="import time; time.sleep(60)", timeout=3),
            Executor("needs_bad", code="print(1)", depends_on=["bad"]),
        ],
    )


def tree(result, usage: bool = True):
    """The MLflow run tree under the result's parent run, without ids, times or back-end names
    (nor the resource.* metrics unless `usage`)."""
    from mlflow import MlflowClient

    client = MlflowClient(result.tracking_uri)
    experiment = client.get_experiment_by_name(result.experiment).experiment_id

    def node(run):
        children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        return {
            "name": run.info.run_name,
            "status": run.info.status,
            "kind": run.data.tags["scanflow.kind"],
            "params": run.data.params,
            "metrics": sorted(
                k for k in run.data.metrics if k != "duration_s" and (usage or not k.startswith("resource."))
            ),
            "value": run.data.metrics.get("value"),
            "children": sorted((node(c) for c in children), key=lambda n: n["name"]),
        }

    return node(client.get_run(result.run_id))


def outcome(result):
    return {key: (r.status, r.attempts, r.exit_code, r.error) for key, r in result.executors.items()}


def run_on_both(tmp_path, make_workflow, docker_backend, **kw):
    out = {}
    for name in ("local", "docker"):
        app = new_app(tmp_path / name, make_workflow())
        backend = docker_backend() if name == "docker" else "local"
        out[name] = (app, app.run(make_workflow().name, backend=backend, echo=False, **kw))
    return out


def test_nested_parallel_workflow_same_outputs_and_run_tree(tmp_path, docker_backend):
    both = run_on_both(tmp_path, nested_workflow, docker_backend)
    (local_app, local), (docker_app, docker) = both["local"], both["docker"]
    assert local.status == docker.status == "succeeded", docker.summary()
    assert outcome(local) == outcome(docker)
    for name, value in {"prep": 3, "left": 6, "right": 15, "report": 6}.items():
        for app in (local_app, docker_app):
            assert json.loads((app.path / f"data/{name}.json").read_text()) == {"value": value}
    local_tree, docker_tree = tree(local), tree(docker)
    assert local_tree == docker_tree
    assert [c["name"] for c in docker_tree["children"]] == ["group", "post", "prep"]
    group = docker_tree["children"][0]
    assert [(c["name"], c["value"], c["params"]) for c in group["children"]] == [
        ("left", 6.0, {"factor": "2"}),
        ("right", 15.0, {"factor": "5"}),
    ]
    # a second run finds everything cached, on both back ends
    again = {
        name: app.run("main", backend=docker_backend() if name == "docker" else "local", echo=False)
        for name, (app, _) in both.items()
    }
    assert {r.status for r in again["docker"].executors.values()} == {"cached"}
    assert outcome(again["local"]) == outcome(again["docker"])


def test_failures_retries_and_timeouts_agree(tmp_path, docker_backend):
    both = run_on_both(tmp_path, faulty_workflow, docker_backend, max_workers=4)
    local, docker = both["local"][1], both["docker"][1]
    assert (
        outcome(local)
        == outcome(docker)
        == {
            "faulty/bad": ("failed", 1, 3, "exit code 3"),
            "faulty/flaky": ("succeeded", 2, 0, None),
            "faulty/slow": ("failed", 1, None, "timed out after 3 s"),
            "faulty/needs_bad": ("skipped", 0, None, "upstream faulty/bad failed"),
        }
    )
    # A container killed at its timeout cannot report what it used; everything else agrees, usage included.
    assert tree(local, usage=False) == tree(docker, usage=False)
    for result in (local, docker):
        measured = tree(result)["children"]
        assert {n["name"] for n in measured if "resource.cpu_s" in n["metrics"]} >= {"bad", "flaky"}
    assert "broken" in both["docker"][0].logs("faulty/bad")
