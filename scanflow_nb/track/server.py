"""A real `mlflow server` on 127.0.0.1 over the app's store: lean settings, own process group."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import TrackerError
from . import tether

_running: dict[tuple[str, int], TrackerServer] = {}

# Lean: no job runner (its queue consumers cost about 2.5 GB), no telemetry.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def server_command(
    store_uri: str,
    artifacts: str | Path,
    host: str,
    port: int,
    allowed: tuple[str, ...] = (),
    program: tuple[str, ...] = ("mlflow",),
) -> list[str]:
    """The `mlflow server` command every tracker uses: the kernel's, a container's, an export's.

    One worker. `allowed`: host names clients use besides localhost (e.g. a container alias); the
    server answers 403 to any other Host header.
    """
    cmd = [
        *program,
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        store_uri,
        "--artifacts-destination",
        str(artifacts),
    ]
    if allowed:
        hosts = [*allowed, "localhost", "127.0.0.1"]
        cmd += ["--allowed-hosts", ",".join(form for name in hosts for form in (name, f"{name}:*"))]
    return cmd


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class TrackerServer:
    """`mlflow server` with one worker and no job runner, stopped with its whole process group.

    It is tethered to this process: if the kernel dies without stopping it, it stops too (no orphan server
    holding the port and the store).
    """

    def __init__(
        self, store_uri: str, artifacts: Path, port: int = 0, host: str = "127.0.0.1", log_file: Path | None = None
    ):
        self.store_uri, self.artifacts, self.host = store_uri, Path(artifacts), host
        self.port = port or free_port(host)
        self.log_file = log_file
        self.process: tether.Tethered | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def alive(self) -> bool:
        import urllib.request  # http.client, ssl, email: not worth loading for an embedded store

        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 90.0) -> TrackerServer:
        with socket.socket() as sock:
            if sock.connect_ex((self.host, self.port)) == 0:
                raise TrackerError(f"port {self.port} on {self.host} is already in use: choose another tracker port")
        self.artifacts.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **SERVER_ENV}
        cmd = server_command(
            self.store_uri, self.artifacts, self.host, self.port, program=(sys.executable, "-m", "mlflow")
        )
        with open(self.log_file, "ab") if self.log_file else contextlib.nullcontext(subprocess.DEVNULL) as log:
            self.process = tether.Tethered(cmd, own=False, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while not self.alive():
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                where = f"; see {self.log_file}" if self.log_file else ""
                raise TrackerError(f"mlflow server exited with code {code} on start{where}")
            if time.monotonic() > deadline:
                self.stop()
                raise TrackerError(f"mlflow server did not answer on {self.uri} within {timeout:.0f} s")
            time.sleep(0.25)
        _running[(self.store_uri, self.port)] = self
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and its workers (the whole process group)."""
        proc, self.process = self.process, None
        _running.pop((self.store_uri, self.port), None)
        if proc is None:
            return
        proc.release()
        if proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def running_server(store_uri: str, artifacts: Path, port: int, host: str, log_file: Path | None) -> TrackerServer:
    """The server this kernel started for (store, port), started now if needed; reused across runs."""
    if port:
        server = _running.get((store_uri, port))
        if server is not None and server.alive():
            return server
    else:
        server = next((s for (uri, _), s in _running.items() if uri == store_uri and s.alive()), None)
        if server is not None:
            return server
    return TrackerServer(store_uri, artifacts, port, host, log_file).start()


@atexit.register
def _stop_all() -> None:
    for server in list(_running.values()):
        server.stop()
