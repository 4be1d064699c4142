"""Services as workflow executors on the local back end: started, waited healthy for, used by their dependents,
stopped at the end of the run (or on `%scanflow stop`), with their traffic in the workflow's experiment."""

import socket
import textwrap
import time

import pytest
import requests
from serve_support import MODEL, batch_runs, logged_rows

from scanflow_nb import Executor, Workflow
from scanflow_nb.events import SERVING
from scanflow_nb.track import get_client
from scanflow_nb.track.server import free_port

TRAFFIC = textwrap.dedent(
    """\
    import json, os, urllib.request
    from sklearn.datasets import load_digits
    X, _ = load_digits(return_X_y=True)
    url = os.environ["SCANFLOW_SERVICE_API"] + "/invocations"
    for start in range(0, 15, 5):
        body = json.dumps({"inputs": X[start:start + 5].tolist()}).encode()
        reply = urllib.request.urlopen(urllib.request.Request(url, body, {"Content-Type": "application/json"}))
        print("version", reply.headers["X-Scanflow-Model-Version"], json.loads(reply.read())["predictions"])
    """
)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def deploy(registry, name: str, model: str = f"models:/{MODEL}@champion", **service):
    port = free_port()
    api = Executor("api", model=model, port=port, parameters={"batch-rows": 10, "flush-seconds": 1}, **service)
    traffic = Executor("traffic", code=TRAFFIC, depends_on=["api"])
    registry.app.add(Workflow(name, executors=[api, traffic]))
    return port


def test_a_service_serves_its_dependents_and_stops_with_the_run(registry):
    port = deploy(registry, "deploy")
    events = []
    result = registry.app.run("deploy", echo=False, listeners=[events.append])
    assert result.ok, result.summary()
    assert result.executors["deploy/api"].status == "succeeded"
    serving = [e for e in events if e.kind == SERVING]
    assert [(e.key, e.url) for e in serving] == [("deploy/api", f"http://127.0.0.1:{port}")]
    started = next(e.time for e in events if e.kind == "started" and e.key == "deploy/traffic")
    assert started >= serving[0].time  # the dependent waited for the health check
    log = registry.app.logs("deploy/traffic")  # the registry is shared: other files deploy a "traffic" too
    assert log.count("version 1 ") == 3
    assert not listening(port)  # stopped at the end of the run
    assert logged_rows(registry.uri, "deploy", "api") == 15  # flushed on the way out
    mlflow = get_client(registry.uri)
    batch = batch_runs(registry.uri, "deploy", "api")[0]
    service_run = mlflow.get_run(batch.data.tags["mlflow.parentRunId"])
    assert service_run.data.tags["mlflow.parentRunId"] == result.executors["deploy/api"].run_id


def test_a_service_that_never_answers_fails_and_its_dependents_are_skipped(registry):
    deploy(registry, "broken", model="models:/missing@champion")
    result = registry.app.run("broken", echo=False)
    api, traffic = result.executors["broken/api"], result.executors["broken/traffic"]
    assert api.status == "failed" and api.error == "exited with code 2 before answering /health"
    assert "no model behind models:/missing@champion" in registry.app.logs("broken/api")
    assert traffic.status == "skipped"


def test_keep_serving_until_stopped_from_the_notebook(shell, registry, capsys):
    port = free_port()
    shell.run_line_magic("scanflow", f"app {registry.app.path}")
    shell.run_line_magic("scanflow", "workflow live")
    shell.run_line_magic(
        "scanflow",
        f"service api -w live --model models:/{MODEL}@champion --port {port} -p batch-rows=5 -p flush-seconds=1",
    )
    assert f"declared service live/api: models:/{MODEL}@champion on 127.0.0.1:{port}" in capsys.readouterr().out
    shell.run_cell_magic("scanflow", "executor traffic -w live --depends-on api", TRAFFIC)
    handle = shell.run_line_magic("scanflow", "run live --background --keep-serving --no-graph")
    try:
        handle.wait_for("traffic", "succeeded", 180)
        assert handle.states["live/api"] == SERVING
        time.sleep(1)
        assert not handle.done  # the rest is over; the service keeps serving
        reply = requests.post(
            f"http://127.0.0.1:{port}/invocations", json={"inputs": registry.X[:2].tolist()}, timeout=30
        )
        assert reply.status_code == 200
    finally:
        capsys.readouterr()
        shell.run_line_magic("scanflow", "stop live")
    assert "workflow 'live' succeeded" in capsys.readouterr().out
    result = handle.result(60)
    assert result.executors["live/api"].status == "succeeded" and not listening(port)
    assert logged_rows(registry.uri, "live", "api") == 17


def test_services_are_declared_with_their_options():
    with pytest.raises(Exception, match="give the port it listens on"):
        Executor("api", model=f"models:/{MODEL}@champion")
    ex = Executor.from_dict(Executor("api", model="models:/m@champion", port=8080, replicas=2).to_dict())
    assert (ex.service, ex.port, ex.replicas, ex.health, ex.host) == (True, 8080, 2, "/health", "127.0.0.1")
