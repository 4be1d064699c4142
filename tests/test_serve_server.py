"""A service logging to a real `mlflow server` that crashes and comes back: answered rows wait on disk, none lost."""

import os
import signal

import pytest
from serve_support import MODEL, Client, logged_rows, wait_for

from scanflow_nb.errors import ScanflowError
from scanflow_nb.serve import start_service
from scanflow_nb.track.server import TrackerServer, free_port

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.usefixtures("spool_in_tmp")]


def test_rows_answered_while_the_tracker_is_down_are_logged_when_it_is_back(registry, tmp_path):
    port = free_port()
    server = TrackerServer(registry.uri, tmp_path / "artifacts", port).start()
    svc = None
    try:
        svc = start_service(f"models:/{MODEL}/1", server.uri, "outage", name="outage", batch_rows=20, flush_seconds=1)
        client = Client(svc.url)
        for start in range(0, 40, 5):
            client.predict(registry.X[start : start + 5])
        assert wait_for(lambda: logged_rows(server.uri, "outage", "outage") == 40, timeout=60)
        # MLflow has both batches; wait until the service knows it too (it closes a batch's run after logging it)
        assert wait_for(lambda: svc.stats()["spool_rows"] == 0 and svc.stats()["batches"] == 2), svc.stats()

        os.killpg(server.process.pid, signal.SIGKILL)  # a crash, not a clean stop
        server.process.wait(10)
        for start in range(40, 140, 5):  # the service keeps answering; rows wait in its spool
            client.predict(registry.X[start : start + 5])
        down = wait_for(lambda: (s := svc.stats())["tracker"] == "unreachable" and s["spool_rows"] == 100 and s)
        assert down and down["outages"] == 1 and down["rows"] == 140, svc.stats()
        with pytest.raises(ScanflowError, match=r"100 rows and 0 model switches wait \(the tracker is unreachable\)"):
            svc.wait_logged(1)

        server = TrackerServer(registry.uri, tmp_path / "artifacts", port).start()
        assert wait_for(lambda: logged_rows(server.uri, "outage", "outage") == 140, timeout=90), svc.stats()
        # the service acknowledges a batch (its spool empties) just after MLflow has it: wait for that too
        back = svc.wait_logged(60)
        assert back["tracker"] == "ok" and back["spool_rows"] == 0 and back["dropped_rows"] == 0
        assert client.rows == 140
    finally:
        if svc is not None:
            svc.stop()
        server.stop()
