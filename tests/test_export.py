"""Exported compose, stack and Kubernetes files: run for real where an engine runs here, checked
against the official Kubernetes models where none can."""

import json
import re
import subprocess
import time
import uuid

import pytest
import yaml
from docker_support import new_app
from test_backends import nested_workflow

from scanflow_nb import Executor, Workflow
from scanflow_nb.containers.export import Exporter, export
from scanflow_nb.errors import ValidationError

EXPECTED = {"prep": 3.0, "left": 6.0, "right": 15.0, "report": 6.0}
QUERY = (
    "import json; from mlflow import MlflowClient; c = MlflowClient('http://127.0.0.1:5000'); "
    "e = c.get_experiment_by_name('main'); "
    "print(json.dumps([(r.info.status, r.data.metrics.get('value')) for r in c.search_runs([e.experiment_id])]))"
)


def exported_workflow():
    wf = nested_workflow()
    wf.workflows[0].executors[1].retries = 1  # group/right: retried and timed out by its command
    wf.workflows[0].executors[1].timeout = 120
    return wf


def wait_for(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def values_logged(runs):
    assert all(status == "FINISHED" for status, _ in runs), runs
    return sorted(value for _, value in runs)


@pytest.mark.docker
@pytest.mark.slow
def test_compose_file_runs_as_written_with_debian_docker_compose(tmp_path, docker_engine, base_image):
    app = new_app(tmp_path / "app", exported_workflow())
    path = export(app, "main", "compose", tmp_path / "out", echo=lambda line: None)
    spec = yaml.safe_load(path.read_text())
    assert spec["services"]["group-left"]["depends_on"] == {
        "tracker": {"condition": "service_healthy"},
        "main-prep": {"condition": "service_completed_successfully"},
    }
    assert set(spec["services"]["post-report"]["depends_on"]) == {"tracker", "group-left", "group-right"}
    project = f"sftest{uuid.uuid4().hex[:6]}"
    compose = ["docker-compose", "-p", project, "-f", str(path)]
    try:
        subprocess.run([*compose, "up", "-d"], check=True, capture_output=True, timeout=300)
        executors = ["main-prep", "group-left", "group-right", "post-report"]

        def states():
            found = {
                c.labels["com.docker.compose.service"]: c
                for c in docker_engine.containers.list(
                    all=True, filters={"label": f"com.docker.compose.project={project}"}, ignore_removed=True
                )
            }
            return found if all(found.get(s) and found[s].status == "exited" for s in executors) else None

        containers = wait_for(states, 240, "every executor container to exit")
        info = {s: containers[s].attrs["State"] for s in executors}
        assert {s: i["ExitCode"] for s, i in info.items()} == dict.fromkeys(executors, 0)
        assert info["main-prep"]["FinishedAt"] <= min(info["group-left"]["StartedAt"], info["group-right"]["StartedAt"])
        assert (
            max(info["group-left"]["FinishedAt"], info["group-right"]["FinishedAt"]) <= info["post-report"]["StartedAt"]
        )
        out = subprocess.run(
            [*compose, "exec", "-T", "tracker", "python", "-c", QUERY],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        assert values_logged(json.loads(out.splitlines()[-1])) == sorted(EXPECTED.values())
    finally:
        subprocess.run([*compose, "down", "-v"], capture_output=True, timeout=120)


@pytest.mark.docker
@pytest.mark.swarm
@pytest.mark.slow
def test_stack_file_deploys_on_the_single_node_swarm(tmp_path, swarm_engine, base_image):
    app = new_app(tmp_path / "app", exported_workflow())
    path = export(app, "main", "stack", tmp_path / "out", echo=lambda line: None)
    stack = f"sfstack{uuid.uuid4().hex[:6]}"
    try:
        subprocess.run(
            ["docker", "stack", "deploy", "-c", str(path), stack], check=True, capture_output=True, timeout=120
        )
        executors = ["main-prep", "group-left", "group-right", "post-report"]

        def finished():
            tasks = {s: swarm_engine.services.get(f"{stack}_{s}").tasks() for s in executors}
            if all(t and t[0]["Status"]["State"] in ("complete", "failed", "rejected") for t in tasks.values()):
                return {s: t[0]["Status"] for s, t in tasks.items()}
            return None

        status = wait_for(finished, 300, "every executor service to finish")
        assert {s: st["State"] for s, st in status.items()} == dict.fromkeys(executors, "complete")
        tracker = swarm_engine.containers.list(
            filters={"label": f"com.docker.swarm.service.name={stack}_tracker"}, ignore_removed=True
        )[0]
        result = tracker.exec_run(["python", "-c", QUERY])
        assert result.exit_code == 0, result.output
        assert values_logged(json.loads(result.output.decode().splitlines()[-1])) == sorted(EXPECTED.values())
    finally:
        subprocess.run(["docker", "stack", "rm", stack], capture_output=True, timeout=120)
        wait_for(
            lambda: (
                not swarm_engine.containers.list(
                    all=True, filters={"label": f"com.docker.stack.namespace={stack}"}, ignore_removed=True
                )
            ),
            120,
            "the stack to go",
        )
        for volume in swarm_engine.volumes.list(filters={"label": f"com.docker.stack.namespace={stack}"}):
            volume.remove(force=True)


K8S_TYPES = {
    "PersistentVolumeClaim": "V1PersistentVolumeClaim",
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "Job": "V1Job",
}
DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?")


@pytest.mark.docker
def test_kubernetes_manifests_match_the_official_models(tmp_path, docker_engine, base_image):
    from kubernetes.client import ApiClient

    wf = exported_workflow()
    wf.name = "Main_Flow"  # upper case and '_' are fine in scanflow, not in Kubernetes
    app = new_app(tmp_path / "app", wf)
    docs = list(
        yaml.safe_load_all(export(app, "Main_Flow", "k8s", tmp_path / "out", echo=lambda line: None).read_text())
    )
    api = ApiClient()
    for doc in docs:
        model = api.deserialize(
            json.dumps(doc), K8S_TYPES[doc["kind"]], "application/json"
        )  # raises on missing required fields
        assert api.sanitize_for_serialization(model) == doc  # no field the model does not know
        assert DNS_LABEL.fullmatch(doc["metadata"]["name"]), doc["metadata"]["name"]
        assert all(LABEL_VALUE.fullmatch(v) for v in doc["metadata"].get("labels", {}).values())
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert kinds == [
        ("PersistentVolumeClaim", "main-flow-workspace"),
        ("PersistentVolumeClaim", "main-flow-tracker-data"),
        ("Deployment", "main-flow-tracker"),
        ("Service", "main-flow-tracker"),
        ("Job", "main-flow-main-flow-prep"),
        ("Job", "main-flow-group-left"),
        ("Job", "main-flow-group-right"),
        ("Job", "main-flow-post-report"),
    ]
    jobs = {d["metadata"]["annotations"]["scanflow.io/key"]: d for d in docs if d["kind"] == "Job"}
    after = {key: json.loads(job["metadata"]["annotations"]["scanflow.io/after"]) for key, job in jobs.items()}
    assert after == {
        "Main_Flow/prep": [],
        "group/left": ["Main_Flow/prep"],
        "group/right": ["Main_Flow/prep"],
        "post/report": ["group/left", "group/right"],
    }
    report = jobs["post/report"]["spec"]["template"]["spec"]
    script = report["containers"][0]["command"][2]
    assert "group-left.ok" in script and "group-right.ok" in script and "http://main-flow-tracker:5000" in script
    assert report["securityContext"]["runAsNonRoot"] is True
    assert (
        jobs["group/right"]["spec"]["template"]["spec"]["containers"][0]["command"][2].count("timeout -s KILL 120") == 1
    )


def test_names_that_docker_or_kubernetes_refuse_are_reported(tmp_path, monkeypatch):
    clash = Workflow("w", executors=[Executor("Fit_A", code="1"), Executor("fit-a", code="1")])
    with pytest.raises(ValidationError, match="'w/Fit_A' and 'w/fit-a' both become 'w-fit-a'"):
        Exporter(tmp_path, clash)
    app = new_app(tmp_path / "app", Workflow("w", executors=[Executor("a", image="Not An/Image")]))
    with pytest.raises(ValidationError, match="invalid executor 'a' image name 'Not An/Image'"):
        export(app, "w", "compose", tmp_path / "out", base_image="python:3.11-slim")
    with pytest.raises(ValidationError, match="invalid base image name 'Python:Latest!'"):
        export(app, "w", "compose", tmp_path / "out", base_image="Python:Latest!")
    monkeypatch.setenv("SCANFLOW_BASE_IMAGE", "no spaces allowed")
    valid = new_app(tmp_path / "valid", Workflow("w", executors=[Executor("a", code="1")]))
    with pytest.raises(ValidationError, match="invalid base image name 'no spaces allowed'"):
        export(valid, "w", "compose", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    monkeypatch.delenv("SCANFLOW_BASE_IMAGE")
    with pytest.raises(ValidationError, match="unknown export kind 'helm'"):
        export(
            new_app(tmp_path / "ok", Workflow("v", executors=[Executor("a", code="1")])),
            "v",
            "helm",
            tmp_path / "out",
            base_image="python:3.11-slim",
        )
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.docker
def test_export_magic_writes_the_file_and_refuses_unknown_kinds(shell, run_cell, app_dir, base_image):
    from IPython.core.error import UsageError

    import scanflow_nb.magics.containers  # noqa: F401  (registers the subcommands)

    app = new_app(app_dir, exported_workflow())
    shell.magics_manager.registry["ScanflowMagics"].current_app = app
    out = app_dir / "k8s-out"
    result, stdout, _ = run_cell(f"%scanflow export k8s main -o {out}")
    assert result.success and f"wrote {out / 'kubernetes.yaml'}" in stdout
    assert [d["kind"] for d in yaml.safe_load_all((out / "kubernetes.yaml").read_text())].count("Job") == 4
    with pytest.raises(UsageError, match="invalid choice: 'helm'"):
        shell.run_line_magic("scanflow", "export helm main -o x")
    with pytest.raises(UsageError, match="no workflow named|unknown workflow|not found"):
        shell.run_line_magic("scanflow", f"export compose nosuch -o {out}")
