"""A model service with 2 replicas on the swarm: both answer, a replica killed under load is replaced, and every
row answered 200 reaches MLflow (the killed replica's journal is logged by the one that replaces it)."""

import json
import textwrap
import threading
import time

import pytest
from serve_support import MODEL, batch_runs, logged_rows

from scanflow_nb import Executor, Workflow
from scanflow_nb.containers.names import LABEL_KEY
from scanflow_nb.events import SERVING
from scanflow_nb.track.server import free_port

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.slow]

LOAD = textwrap.dedent(
    """\
    import http.client, json, os, time, urllib.request
    rows = {rows}
    url = os.environ["SCANFLOW_SERVICE_API"] + "/invocations"
    body = json.dumps({{"inputs": rows}}).encode()
    answered = failed = 0
    deadline = time.monotonic() + {seconds}
    while time.monotonic() < deadline:
        try:  # a new connection each time: round-robin DNS spreads them over the replicas
            reply = urllib.request.urlopen(urllib.request.Request(url, body, {{"Content-Type": "application/json"}}))
            reply.read()
            answered += 1
        except (OSError, http.client.HTTPException):  # refused, reset, or cut off mid-answer by the kill
            failed += 1
            time.sleep(0.05)
    print("LOAD", json.dumps({{"answered": answered, "rows": answered * len(rows), "failed": failed}}))
    """
)


def kill_one_replica(docker_engine, key: str, after: float, killed: list) -> None:
    time.sleep(after)
    containers = docker_engine.containers.list(
        filters={"label": f"{LABEL_KEY}={key}", "status": "running"}, ignore_removed=True
    )
    containers[0].kill()  # SIGKILL: no flush, no goodbye
    killed.append(containers[0].id)


def test_two_replicas_share_the_load_and_a_killed_one_loses_no_row(registry, base_image, swarm_engine):
    from scanflow_nb.run.swarm import SwarmBackend

    port, rows = free_port(), registry.X[:4].tolist()
    api = Executor("api", model=f"models:/{MODEL}@champion", port=port, replicas=2, parameters={"flush-seconds": 5})
    load = Executor("load", code=LOAD.format(rows=json.dumps(rows), seconds=40), depends_on=["api"])
    registry.app.add(Workflow("swarmed", executors=[api, load]))
    killed: list = []

    def on_event(event):
        if event.kind == SERVING:
            args = (swarm_engine, "swarmed/api", 15, killed)
            threading.Thread(target=kill_one_replica, args=args, daemon=True).start()

    backend = SwarmBackend(base_image=base_image, echo=lambda line: None, tracker_timeout=600)
    result = registry.app.run("swarmed", backend=backend, echo=False, listeners=[on_event])
    assert result.ok, result.summary() + registry.app.logs("swarmed/api")[-3000:]
    assert killed, "a replica was killed under load"
    report = json.loads(registry.app.logs("swarmed/load").split("LOAD ", 1)[1])
    assert report["answered"] > 20
    logged = logged_rows(registry.uri, "swarmed", "api")
    # every row answered 200 is logged; a request cut off by the kill after its rows were journaled (the model
    # answered, the client never heard) is logged too: at most the failed requests' rows more
    assert report["rows"] <= logged <= report["rows"] + report["failed"] * len(rows), (logged, report)
    segments = [run.data.tags["scanflow.serve.segment"] for run in batch_runs(registry.uri, "swarmed", "api")]
    assert len(segments) == len(set(segments)), "no batch logged twice"
    replicas = {run.data.tags["scanflow.serve.replica"] for run in batch_runs(registry.uri, "swarmed", "api")}
    assert len(replicas) >= 2, replicas  # both replicas answered
