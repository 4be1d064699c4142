"""Tracker(port=...) starts a real `mlflow server` over the app's store, and stops it cleanly."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from scanflow_nb import App, Executor, ScanflowError, Tracker, Workflow
from scanflow_nb.track.server import TrackerServer


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.server
def test_run_tracked_by_a_real_mlflow_server(app_dir):
    from mlflow.tracking import MlflowClient

    port = free_port()
    app = App(app_dir)
    code = "import mlflow, os; mlflow.log_metric('m', 1.5); print(os.environ['MLFLOW_TRACKING_URI'])"
    app.add(Workflow("w", tracker=Tracker(port=port), executors=[Executor("a", code=code)]))
    result = app.run("w", echo=False)
    assert result.ok, result.summary()
    assert result.tracking_uri == f"http://127.0.0.1:{port}"
    assert app.logs("a").splitlines()[0] == f"http://127.0.0.1:{port}"
    run = MlflowClient(result.tracking_uri).get_run(result.executors["w/a"].run_id)
    assert run.data.metrics["m"] == 1.5
    # the server is reused by the next run, and its store is the app's own SQLite file
    assert app.run("w", echo=False, force=True).tracking_uri == result.tracking_uri
    embedded = MlflowClient(f"sqlite:///{app.state_dir / 'mlflow.db'}")
    assert embedded.get_run(result.run_id).info.status == "FINISHED"

    from scanflow_nb.track.server import _running

    server = next(s for s in _running.values() if s.port == port)
    pgid = server.process.pid
    server.stop()
    time.sleep(0.5)
    assert not server.alive()
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


@pytest.mark.server
def test_server_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = TrackerServer(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "art", port)
        with pytest.raises(ScanflowError, match=f"port {port} on 127.0.0.1 is already in use"):
            server.start()


KERNEL = """
import sys, time
from pathlib import Path
from scanflow_nb.track.server import TrackerServer

folder = Path(sys.argv[1])
server = TrackerServer(f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts", int(sys.argv[2])).start(timeout=300)
print(server.process.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.server
def test_a_server_stops_when_the_kernel_that_started_it_is_killed(tmp_path):
    """A kernel killed outright (no atexit) leaves no `mlflow server` holding the port and the store."""
    port, group = free_port(), None
    kernel = subprocess.Popen(
        [sys.executable, "-c", KERNEL, str(tmp_path), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = kernel.stdout.readline()
        assert line.strip().isdigit(), f"the server did not start: {line}{kernel.stderr.read()[-3000:]}"
        group = int(line)
        server = TrackerServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", port)
        assert server.alive()
        kernel.kill()
        kernel.wait()
        deadline = time.monotonic() + 60
        while True:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, "the server's processes outlived the kernel by 60 s"
            time.sleep(0.2)
        assert not server.alive()
    finally:
        kernel.kill()
        if group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
