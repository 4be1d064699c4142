"""`scanflow serve` as a real process on a real MLflow store: the scoring protocol, every answered row logged
for the checker, the alias followed without a failed request, clean stops and crashes."""

import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from serve_support import MODEL, Client, batch_runs, logged_rows, wait_for

from scanflow_nb import ScanflowError, Workflow
from scanflow_nb.check import KSDetector, Watcher
from scanflow_nb.check import tracking as tr
from scanflow_nb.cli import main as cli
from scanflow_nb.serve import start_service
from scanflow_nb.track import get_client
from scanflow_nb.track.server import free_port

pytestmark = pytest.mark.usefixtures("spool_in_tmp")

EXP = "scored"  # this file's own workflow: its experiment is where its checker looks, and no other file logs there
API = "scored-api"


@pytest.fixture(scope="module")
def service(registry):
    """The champion served for workflow "scored": batches of 40 rows; the rest waits for the stop."""
    registry.app.add(Workflow(EXP))
    registry.app.save()
    svc = start_service(
        f"models:/{MODEL}@champion",
        app=registry.app,
        workflow=EXP,
        name=API,
        batch_rows=40,
        flush_seconds=600,
        poll_seconds=0.5,
    )
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def client(service):
    return Client(service.url)


def test_it_answers_every_form_of_mlflows_scoring_protocol(registry, service, client):
    X, expected = registry.X[:6], registry.models["1"].predict(registry.X[:6]).tolist()
    frame_rows = [dict(zip(map(str, range(64)), row)) for row in X[4:6].tolist()]
    answers = [
        client.post({"inputs": X[:2].tolist()}, rows=X[:2]),
        client.post({"instances": X[2:3].tolist()}, rows=X[2:3]),
        client.post({"dataframe_split": {"columns": list(map(str, range(64))), "data": X[3:4].tolist()}}, rows=X[3:4]),
        client.post({"dataframe_records": frame_rows}, rows=X[4:6]),
    ]
    assert [a.status_code for a in answers] == [200] * 4
    assert sum((a.json()["predictions"] for a in answers), []) == expected
    assert {a.headers["X-Scanflow-Model-Version"] for a in answers} == {"1"}
    csv = "\n".join([",".join(map(str, range(64))), *(",".join(map(str, row)) for row in X[:2].tolist())])
    assert client.post(csv, "text/csv", rows=X[:2]).json()["predictions"] == expected[:2]
    assert requests.get(f"{service.url}/health", timeout=5).json()["status"] == "ok"
    assert requests.get(f"{service.url}/ping", timeout=5).status_code == 200
    version = requests.get(f"{service.url}/version", timeout=5).json()
    assert (version["name"], version["version"], version["follows"]) == (MODEL, "1", True)
    assert version["run_id"] == get_client(registry.uri).get_model_version(MODEL, "1").run_id


def test_bad_requests_get_mlflows_errors_and_nothing_is_logged(registry, service, client):
    before = service.stats()["rows"]
    wrong_key = client.post({"rows": [[0] * 64]})
    assert wrong_key.status_code == 400 and wrong_key.json()["error_code"] == "BAD_REQUEST"
    assert "exactly one of the input fields" in wrong_key.json()["message"]
    assert client.post({"inputs": [[1, 2, 3]]}).status_code == 400  # 3 features for a 64-feature model
    assert client.post("hello", "text/plain").status_code == 415
    assert service.stats()["rows"] == before
    assert service.stats()["answered"]["400"] == 2


def test_every_answered_row_reaches_mlflow_with_predictions_and_probabilities(registry, service, client):
    for start in range(0, 90, 9):  # ten requests of 9 rows: two full batches of 40, the rest waits
        client.predict(registry.X[100 + start : 109 + start])
    answered = client.rows
    assert wait_for(lambda: logged_rows(registry.uri, EXP, API) >= 80, timeout=60)
    mlflow = get_client(registry.uri)
    runs = batch_runs(registry.uri, EXP, API)
    sizes = [int(r.data.tags["scanflow.rows"]) for r in runs]
    assert sizes[-2:] == [40, 40] and max(sizes) == 40  # earlier ones end where the input form changed
    X = np.concatenate([tr.download_npy(mlflow, r.info.run_id, tr.BATCH_ARTIFACT) for r in runs])
    sent = np.concatenate([rows for rows, _ in client.answered])
    np.testing.assert_array_equal(X, sent[: len(X)])  # one client: logged in the order answered
    run = runs[-1]
    X = X[-40:]
    proba = tr.download_npy(mlflow, run.info.run_id, tr.PROBABILITIES_ARTIFACT)
    predictions = tr.download_npy(mlflow, run.info.run_id, tr.PREDICTIONS_ARTIFACT)
    np.testing.assert_allclose(proba, registry.models["1"].predict_proba(X[:40]))
    assert predictions.tolist() == registry.models["1"].predict(X[:40]).tolist()
    assert run.data.tags["scanflow.model_version"] == "1"
    assert run.data.tags[tr.CLASSES_TAG] == str(list(range(10)))
    # the logger process reports a batch logged just after MLflow has it: wait for the service to know too
    stats = wait_for(lambda: (s := service.stats())["shipped_rows"] == sum(sizes) and s) or service.stats()
    assert stats["rows"] == answered and 0 < stats["spool_rows"] == answered - sum(sizes), stats
    assert mlflow.get_run(run.info.run_id).data.tags["mlflow.parentRunId"] == stats["service_run_id"]


def test_the_checker_reads_the_served_batches(registry, service):
    watcher = Watcher(registry.uri, EXP, KSDetector().fit(registry.X[1000:]))
    records = watcher.poll()
    assert len(records) == len(batch_runs(registry.uri, EXP, API)) >= 2
    assert all(r.error is None and r.result.p_value is not None for r in records)


def test_a_stop_logs_what_was_buffered(registry, service, client):
    answered = client.rows
    assert logged_rows(registry.uri, EXP, API) < answered  # a tail below 40 rows waits (flush every 600 s)
    last_words = service.stop()
    assert f"{answered} rows answered, {answered} logged, 0 dropped" in last_words
    assert logged_rows(registry.uri, EXP, API) == answered
    mlflow = get_client(registry.uri)
    service_run = mlflow.search_runs(
        [mlflow.get_experiment_by_name(EXP).experiment_id], "tags.`scanflow.kind` = 'service'"
    )[0]
    assert service_run.info.status == "FINISHED" and service_run.data.metrics["rows"] == answered
    assert not service.running


def test_a_moved_alias_is_served_without_a_failed_request(registry):
    mlflow = get_client(registry.uri)
    mlflow.set_registered_model_alias(MODEL, "canary", "1")
    svc = start_service(f"models:/{MODEL}@canary", registry.uri, "canary", name="canary", poll_seconds=0.5)
    client, failures, stop = Client(svc.url), [], threading.Event()

    def traffic():
        while not stop.is_set():
            reply = client.post({"inputs": registry.X[:3].tolist()}, rows=registry.X[:3])
            if reply.status_code != 200:
                failures.append(reply.status_code)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        assert wait_for(lambda: len(client.answered) >= 5, timeout=60)
        mlflow.set_registered_model_alias(MODEL, "canary", "2")
        assert svc.wait_version(2, timeout=30)["version"] == "2"
        assert wait_for(lambda: client.answered[-1][1] == "2", timeout=30)
        assert wait_for(lambda: len(client.answered) >= 5 + 5, timeout=30)
    finally:
        stop.set()
        sender.join(60)
    versions = [v for _, v in client.answered]
    assert failures == [] and versions == sorted(versions)  # 1s, then 2s only
    assert requests.get(f"{svc.url}/version", timeout=5).json()["version"] == "2"
    assert svc.stats()["switches"][0]["previous"] == "1"
    with pytest.raises(ScanflowError, match=r"still answers with v2 after 0.5 s, not v3 \("):
        svc.wait_version(3, timeout=0.5)
    logged = svc.wait_logged(60)  # MLflow has it all while the service still runs
    assert logged["rows"] == client.rows and logged["switches_pending"] == 0, logged
    switch = mlflow.search_runs(
        [mlflow.get_experiment_by_name("canary").experiment_id], "tags.`scanflow.kind` = 'switch'"
    )
    assert [(r.data.params["previous"], r.data.params["version"]) for r in switch] == [("1", "2")]
    by_version = {r.data.tags["scanflow.model_version"] for r in batch_runs(registry.uri, "canary", "canary")}
    assert by_version == {"1", "2"}  # a batch holds one version's answers
    assert logged_rows(registry.uri, "canary", "canary") == client.rows
    svc.stop()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_rows_of_a_killed_service_are_logged_by_its_next_start(registry):
    """Killed alone, the serving process takes its logger process with it; the next start logs what it left."""
    options = {"name": "crash", "flush_seconds": 600, "batch_rows": 10_000}
    svc = start_service(f"models:/{MODEL}/1", registry.uri, "crash", **options)
    client = Client(svc.url)
    for start in range(0, 20, 4):
        client.predict(registry.X[start : start + 4])
    logger = svc.stats()["logger_pid"]
    assert alive(logger) and logger != svc.process.pid
    os.kill(svc.process.pid, signal.SIGKILL)  # the serving process only
    svc.process.wait(30)
    assert wait_for(lambda: not alive(logger), timeout=30)
    assert logged_rows(registry.uri, "crash", "crash") == 0
    left = Path(tempfile.gettempdir()).glob(f"scanflow-model-{svc.process.pid}-*")
    left = [*left, *Path(tempfile.gettempdir()).glob(f"scanflow-model-{logger}-*")]
    assert left, "the killed service's downloaded model is where it was"
    again = start_service(f"models:/{MODEL}/1", registry.uri, "crash", **options)
    try:
        assert wait_for(lambda: logged_rows(registry.uri, "crash", "crash") == 20, timeout=60)
        assert wait_for(lambda: again.stats()["adopted_segments"] == 1), again.stats()
        assert not any(folder.exists() for folder in left), "the next start removes what a killed one left"
    finally:
        again.stop()


KERNEL = """
import sys, time
from scanflow_nb.serve import start_service

svc = start_service(sys.argv[1], sys.argv[2], "orphan", name="orphan", flush_seconds=600, batch_rows=10_000)
print(svc.process.pid, svc.url, flush=True)
time.sleep(600)
"""


def test_a_service_whose_kernel_is_killed_stops_and_logs_what_it_answered(registry):
    """The kernel that started a service dies without a word: the service does not live on, orphaned; it
    stops as on `%scanflow serve stop` and logs the rows it had answered."""
    argv = [sys.executable, "-c", KERNEL, f"models:/{MODEL}/1", registry.uri]
    kernel, service = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True), None
    try:
        pid, url = kernel.stdout.readline().split()
        service = int(pid)
        client = Client(url)
        for start in range(0, 12, 4):
            client.predict(registry.X[start : start + 4])
        kernel.kill()
        kernel.wait()
        assert wait_for(lambda: not alive(service), timeout=90), "the service outlived its kernel"
        assert wait_for(lambda: logged_rows(registry.uri, "orphan", "orphan") == 12, timeout=60)
    finally:
        kernel.kill()
        if service is not None and alive(service):
            os.killpg(service, signal.SIGKILL)


def test_a_dead_logger_is_said_and_started_again_and_nothing_is_lost(registry):
    svc = start_service(f"models:/{MODEL}/1", registry.uri, "relog", name="relog", batch_rows=5, flush_seconds=600)
    try:
        client = Client(svc.url)
        client.predict(registry.X[:5])
        assert wait_for(lambda: logged_rows(registry.uri, "relog", "relog") == 5, timeout=60)
        # the counts the next logger goes on from are those the serving side has heard (reported every 0.2 s)
        assert wait_for(lambda: svc.stats()["shipped_rows"] == 5, timeout=30), svc.stats()
        first = svc.stats()["logger_pid"]
        os.kill(first, signal.SIGKILL)
        health = wait_for(lambda: (h := requests.get(f"{svc.url}/health", timeout=5).json())["logger"] != "ok" and h)
        assert health and health["status"] == "ok" and "exited with code -9" in health["logger"], health
        for start in range(5, 25, 5):  # answered while the logger is away: journaled, logged when it is back
            client.predict(registry.X[start : start + 5])
        assert wait_for(lambda: logged_rows(registry.uri, "relog", "relog") == 25, timeout=90), svc.stats()
        stats = wait_for(lambda: (s := svc.stats())["logger"] == "ok" and s["shipped_rows"] == 25 and s)
        assert stats and stats["logger_pid"] != first and stats["batches"] == 5, svc.stats()
    finally:
        last_words = svc.stop()
    assert "25 rows answered, 25 logged, 0 dropped" in last_words
    mlflow = get_client(registry.uri)
    runs = mlflow.search_runs(
        [mlflow.get_experiment_by_name("relog").experiment_id], "tags.`scanflow.kind` = 'service'"
    )
    assert len(runs) == 1 and runs[0].data.metrics["rows"] == 25  # the new logger goes on with the same run


@pytest.mark.parametrize(
    "args, message",
    [
        (["models:/nope@champion"], "no model behind models:/nope@champion"),
        (["models:/digits@champion", "--batch-rows", "0"], "batch rows must be a whole number >= 1"),
    ],
)
def test_cli_errors_are_one_line(registry, tmp_path, capsys, args, message):
    code = cli(["serve", *args, "--tracking-uri", registry.uri, "--port", str(free_port()), "--spool", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


def test_cli_refuses_a_busy_port_and_a_missing_tracker(registry, capsys, monkeypatch):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli(["serve", "models:/digits/1", "--tracking-uri", registry.uri, "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli(["serve", "models:/digits/1"]) == 2
    assert "give the tracking URI" in capsys.readouterr().err
