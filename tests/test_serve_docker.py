"""A model service as a container on the docker back end: built with scanflow_nb and the model's requirements,
reached by its name from the run's other containers, published on the loopback interface only, removed at the end."""

import json
import textwrap

import pytest
import requests
from serve_support import MODEL, logged_rows

from scanflow_nb import Executor, Workflow
from scanflow_nb.events import SERVING
from scanflow_nb.run.docker import leftovers
from scanflow_nb.track.server import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def traffic(rows) -> str:
    """An executor posting `rows` to the service named api, with nothing but the standard library."""
    return textwrap.dedent(
        f"""\
        import json, os, urllib.request
        rows = {json.dumps(rows)}
        url = os.environ["SCANFLOW_SERVICE_API"] + "/invocations"
        body = json.dumps({{"inputs": rows}}).encode()
        reply = urllib.request.urlopen(urllib.request.Request(url, body, {{"Content-Type": "application/json"}}))
        print("answer", reply.headers["X-Scanflow-Model-Version"], json.loads(reply.read())["predictions"])
        """
    )


def test_a_model_service_runs_in_a_container_and_serves_the_run(registry, docker_backend):
    port, rows = free_port(), registry.X[:6].tolist()
    api = Executor("api", model=f"models:/{MODEL}@champion", port=port, parameters={"flush-seconds": 1})
    registry.app.add(Workflow("docked", executors=[api, Executor("traffic", code=traffic(rows), depends_on=["api"])]))
    seen = {}

    def on_event(event):
        if event.kind == SERVING:  # while it serves: reachable from this machine on the loopback interface
            seen["url"] = event.url
            seen["version"] = requests.get(f"{event.url}/version", timeout=10).json()["version"]

    result = registry.app.run("docked", backend=docker_backend(), echo=False, listeners=[on_event])
    assert result.ok, result.summary() + registry.app.logs("docked/api")[-3000:]
    assert seen["url"] == f"http://127.0.0.1:{port}" and seen["version"] == "1"
    expected = registry.models["1"].predict(registry.X[:6]).tolist()
    assert f"answer 1 {expected}" in registry.app.logs("docked/traffic")
    assert logged_rows(registry.uri, "docked", "api") == 6
    assert leftovers(registry.app.path) == []
