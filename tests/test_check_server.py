"""The checker against a real `mlflow server`: batches from another process, restarts, a server crash."""

import os
import signal
import time

import pytest
from test_check_watcher import (  # noqa: F401
    EXP,
    data,
    log_from_another_process,
    results_by_batch,
    three_watchers_over_fifty_batches,
    wait_for,
)

from scanflow_nb.check import tracking as tr
from scanflow_nb.check.watcher import Watcher

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_nothing_is_lost_or_checked_twice_when_the_server_dies_and_comes_back(data, tmp_path, monkeypatch):
    from scanflow_nb.track.server import TrackerServer, free_port

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # fail fast: the watcher's own backoff takes over
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    detector, clean, drifted = data
    store, artifacts, port = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", free_port("127.0.0.1")
    server = TrackerServer(store, artifacts, port).start()
    try:
        uri = server.uri
        watcher = Watcher(uri, "wf", detector, every=1.0, max_backoff=2.0).start()
        ids = log_from_another_process(uri, [clean[0], drifted[0]], tmp_path)
        assert wait_for(lambda: len(watcher.records) == 2)
        watcher.stop()
        ids += log_from_another_process(uri, [clean[1]], tmp_path)
        watcher.start()
        assert wait_for(lambda: len(watcher.records) == 3)

        ids += log_from_another_process(uri, [drifted[1], clean[2]], tmp_path)
        os.killpg(server.process.pid, signal.SIGKILL)  # a crash, not a clean shutdown
        server.process.wait(10)
        server.process = None
        assert wait_for(lambda: watcher.status()["outages"], 30)
        time.sleep(2.0)
        assert watcher.running and watcher.status()["state"] == "retrying"

        server = TrackerServer(store, artifacts, port).start()
        ids += log_from_another_process(uri, [drifted[2]], tmp_path)
        # the restarted server, the logging process and the checks all start cold: allow a busy machine
        assert wait_for(lambda: len(watcher.records) == 6, 180), watcher.status()
        time.sleep(2.5)  # more polls: nothing may be checked again
        started = time.monotonic()
        assert watcher.stop() and time.monotonic() - started < 2.0

        status = watcher.status()
        assert status["checked"] == 6 and len(status["outages"]) == 1 and status["outages"][0]["end"] is not None
        results = results_by_batch(uri)
        expected = dict(zip(ids, [False, True, False, True, False, True]))
        assert set(results) == set(expected)
        for batch_id, drift in expected.items():
            assert len(results[batch_id]) == 1, f"batch {batch_id} has {len(results[batch_id])} results"
            assert results[batch_id][0].data.metrics["is_drift"] == float(drift)
        outage_noted = [r for runs in results.values() for r in runs if tr.OUTAGE_TAG in r.data.tags]
        assert len(outage_noted) == 1 and "unreachable" in outage_noted[0].data.tags[tr.OUTAGE_TAG]
    finally:
        server.stop()


def test_three_watchers_through_a_server_check_each_of_fifty_batches_exactly_once(data, tmp_path, monkeypatch):
    from scanflow_nb.track.server import TrackerServer

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    server = TrackerServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts").start()
    try:
        tr.experiment_id(tr.client_for(server.uri), EXP)
        three_watchers_over_fifty_batches(server.uri, data, tmp_path)
    finally:
        server.stop()
