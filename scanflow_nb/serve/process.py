"""A prediction service run beside the kernel: `scanflow serve` in a subprocess, waited healthy, stopped cleanly.

The subprocess is the command line a terminal would run (`python -m scanflow_nb.cli serve ...`), in its own
process group with its output in `<state>/serve/<name>/service.log`. Stopping sends SIGTERM (the service
stops taking requests and logs what it buffered), waits, and only then kills. Services started here are
stopped when the kernel exits, or dies: a pipe tethers them to it (`track.tether`).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import NotFoundError, ScanflowError, ValidationError
from ..files import state_dir
from ..track import tether
from ..track.server import free_port
from .service import DEFAULT_HOST, service_name
from .spool import spool_root

_RUNNING: dict[str, ServiceProcess] = {}


def get_json(url: str, timeout: float = 2.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read())


def _poll(url: str, path: str, done: Callable[[dict], bool], timeout: float) -> tuple[dict[str, Any], bool]:
    """GET `path` of the service at `url` until `done(reply)` or `timeout` s pass: the last reply, and whether
    it was done. A service that does not answer raises a ScanflowError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = get_json(f"{url}{path}")
        except (OSError, ValueError) as exc:
            raise ScanflowError(f"the service at {url} does not answer {path}: {exc}") from None
        if done(reply) or time.monotonic() > deadline:
            return reply, done(reply)
        time.sleep(0.25)


def wait_logged(url: str, timeout: float = 120.0) -> dict[str, Any]:
    """Wait until the service at `url` has logged to MLflow every row it answered and every model switch
    (its rows wait up to its flush seconds); returns its stats. A service that cannot get there in `timeout`
    s raises a ScanflowError saying what still waits, and why when it knows.
    """
    stats, logged = _poll(url, "/stats", lambda stats: stats["logged"], timeout)
    if not logged:
        why = "the tracker is unreachable" if stats["tracker"] != "ok" else stats["last_error"] or "no error said"
        raise ScanflowError(
            f"the service at {url} has not logged what it answered within {timeout:g} s: "
            f"{stats['spool_rows']} rows and {stats['switches_pending']} model switches wait ({why})"
        )
    return stats


def wait_version(url: str, version, timeout: float = 120.0) -> dict[str, Any]:
    """Wait until the service at `url` answers with model `version` (a service following an alias loads a
    moved one in the background); returns its /version. Past `timeout` s a ScanflowError says which version
    still answers and the service's last error (e.g. the new one could not be loaded).
    """
    now, answers = _poll(url, "/version", lambda now: str(now.get("version")) == str(version), timeout)
    if not answers:
        error = _poll(url, "/stats", lambda stats: True, 0)[0].get("last_error") or "no error said"
        raise ScanflowError(
            f"the service at {url} still answers with v{now.get('version')} after {timeout:g} s, "
            f"not v{version} ({error})"
        )
    return now


class ServiceProcess:
    """A running `scanflow serve` subprocess: its URL, health, version, stats; `wait_version()` waits for a
    model version, `wait_logged()` until MLflow has what it answered; `stop()` flushes and ends it."""

    def __init__(self, name: str, host: str, port: int, command: list[str], log_file: Path, env: dict[str, str]):
        self.name, self.host, self.port, self.command, self.log_file = name, host, port, command, log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as out:
            self.process = tether.Tethered(
                command, own=True, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )

    @property
    def url(self) -> str:
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '') else self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def healthy(self) -> bool:
        try:
            return get_json(f"{self.url}/health").get("status") == "ok"
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 120.0) -> ServiceProcess:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if not self.running:
                raise ScanflowError(f"service {self.name!r} exited with code {self.process.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ScanflowError(f"service {self.name!r} did not answer {self.url}/health within {timeout:.0f} s")
            time.sleep(0.2)
        return self

    def version(self) -> dict[str, Any]:
        return get_json(f"{self.url}/version")

    def stats(self) -> dict[str, Any]:
        return get_json(f"{self.url}/stats")

    def wait_logged(self, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until MLflow has every row this service answered and every switch (see `wait_logged`)."""
        return wait_logged(self.url, timeout)

    def wait_version(self, version, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until this service answers with model `version` (see `wait_version`)."""
        return wait_version(self.url, version, timeout)

    def tail(self, lines: int = 5) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.is_file() else ""
        return " | ".join(text.strip().splitlines()[-lines:]) or "no output"

    def stop(self, timeout: float = 60.0) -> str:
        """SIGTERM (flush and stop), SIGKILL after `timeout` s; returns the service's last line."""
        _RUNNING.pop(self.name, None)
        self.process.release()
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return self.tail(1)

    def __repr__(self) -> str:
        state = "running" if self.running else f"stopped (exit code {self.process.returncode})"
        return f"<service {self.name!r} at {self.url}: {state}; log {self.log_file}>"


def command(
    model_uri: str,
    tracking_uri: str,
    experiment: str,
    name: str,
    host: str,
    port: int,
    spool: str | Path,
    python: str = sys.executable,
    **options: Any,
) -> list[str]:
    """The `scanflow serve` command line; `options` are its other flags by their Python names."""
    cmd = [
        python,
        "-m",
        "scanflow_nb.cli",
        "serve",
        model_uri,
        "--tracking-uri",
        tracking_uri,
        "--experiment",
        experiment,
        "--name",
        name,
        "--host",
        host,
        "--port",
        str(port),
        "--spool",
        str(spool),
    ]
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        cmd += [flag] if value is True else [flag, str(value)]
    return cmd


def start_service(
    model_uri: str,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    *,
    app: Any = None,
    workflow: str | None = None,
    name: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = 0,
    wait: float = 120.0,
    **options: Any,
) -> ServiceProcess:
    """Start `scanflow serve MODEL_URI` beside this process and wait until it answers /health.

    With `app` and `workflow`, traffic is logged where that workflow's checker looks (its tracker and
    experiment) and the spool lives in the app's state folder. `port=0`: a free port. `options`: batch_rows,
    flush_seconds, max_spool_mb, poll_seconds, drain_seconds, no_follow.
    """
    if workflow is not None:
        if app is None:
            raise ValidationError("a workflow's service needs its app")
        tracking_uri = tracking_uri or app.tracking_uri(workflow)
        experiment = experiment or app.experiment_name(workflow)
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ValidationError("say where to log the traffic: a workflow (with its app), or a tracking URI")
    name = name or service_name(model_uri)
    running = _RUNNING.get(name)
    if running is not None and running.running:
        raise ValidationError(f"service {name!r} is already running at {running.url}: stop it first or pick a --name")
    state = app.state_dir if app is not None else state_dir(Path.cwd())
    port = port or free_port(host)
    cmd = command(model_uri, tracking_uri, experiment or name, name, host, port, spool_root(state, name), **options)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    service = ServiceProcess(name, host, port, cmd, state / "serve" / name / "service.log", env)
    _RUNNING[name] = service
    try:
        return service.wait_healthy(wait)
    except BaseException:
        service.stop(10)
        raise


def running_services() -> dict[str, ServiceProcess]:
    """The services this process started that still run."""
    return {name: svc for name, svc in _RUNNING.items() if svc.running}


def stop_service(name: str, timeout: float = 60.0) -> str:
    """Stop the service `name` started by this process; returns its last line (what it logged, what is left)."""
    service = _RUNNING.get(name)
    if service is None:
        known = ", ".join(running_services()) or "none running"
        raise NotFoundError(f"no service {name!r} was started here ({known})")
    return service.stop(timeout)


@atexit.register
def _stop_all() -> None:
    for service in list(_RUNNING.values()):
        service.stop(30.0)
