"""The local back end: each executor attempt is a Python subprocess in the app folder.

Each attempt is a process tree that ends with it (`processes.py`): a timeout, an interrupt or
the kernel's own end stops the script and everything it started. Its memory limit, exit code and
usage are `limits.Monitor`'s business; the GPUs the engine gave it are its CUDA_VISIBLE_DEVICES.
With `isolated=True`, executors that declare requirements run in a virtual environment built once
per requirements digest and reused.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from functools import cache
from pathlib import Path

from ..resources import Node
from . import processes, starters
from .backend import Launch, Tracking
from .limits import Monitor, child_group
from .machine import this_machine
from .services import http_ok, service_command, service_env
from .venvs import venv_python


class LocalService(processes.ProcessTree):
    """A service executor running as a subprocess, answering on `url`."""

    def __init__(self, process: subprocess.Popen, monitor: Monitor, grace: float, url: str, health: str):
        super().__init__(process, monitor, grace)
        self.url = self.endpoint = url
        self.health = health

    def healthy(self) -> bool:
        return not self.monitor.exited.is_set() and http_ok(self.url + self.health)

    def stop(self) -> None:
        """SIGTERM only: the service logs what it holds and ends (`kill` is for one that does not)."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


class LocalBackend:
    """Executors as subprocesses of the kernel's Python (`isolated`: their requirements in their own venvs)."""

    name = "local"
    runs_images = False
    late_env = True  # a warm attempt is forked while its MLflow run is created (`Launch.late_env`)

    def __init__(
        self,
        isolated: bool = False,
        python: str | None = None,
        grace: float = processes.GRACE_S,
        warm: bool | None = None,
    ):
        self.isolated = isolated
        self.python = python or sys.executable
        self.grace = grace
        # forked from a warm starter (starters.py) where it can be; SCANFLOW_WARM_START=0 starts each cold
        self.warm = processes.SUBREAPER and (warm if warm is not None else os.environ.get("SCANFLOW_WARM_START") != "0")

    def open(self, app_dir: Path, workflow: str, tracking: Tracking) -> Tracking:
        return tracking

    def nodes(self) -> list[Node]:
        return [this_machine()]

    def _python(self, launch: Launch) -> str:
        if self.isolated and launch.executor.requirements:
            return venv_python(launch.app_dir, launch.executor)
        return self.python

    def launch(self, launch: Launch) -> processes.ProcessTree:
        # -P: the script's folder is not put first on sys.path, so an executor named like a standard
        # module (select.py, json.py) does not shadow it; the app folder is importable instead.
        python, env = self._python(launch), self._env(launch.env, launch)
        if self.warm and python == self.python:
            warm = self._start_warm(launch, env)
            if warm is not None:
                return processes.ProcessTree(*warm, self.grace)
        if launch.late_env is not None:  # a new interpreter gets its whole environment as it starts
            env.update(launch.late_env())
        argv = processes.command(python, launch.script, launch.args, self.grace)
        return processes.ProcessTree(*self._start(argv, env, launch), self.grace)

    def _start_warm(self, launch: Launch, env: dict[str, str]) -> tuple[starters.Started, Monitor] | None:
        """The attempt forked by this Python's warm starter; None where it must start cold."""
        starter = starters.STARTERS.get(self.python, env)
        if starter is None:
            return None
        group = child_group(launch.resources)
        procs = str(group.path / "cgroup.procs") if group else ""
        try:
            started = starter.start(launch.script, launch.args, launch.app_dir, env, self.grace, procs, launch.late_env)
        except BaseException as exc:
            if group is not None:
                group.remove()
            if isinstance(exc, OSError):  # the starter is gone: this attempt starts cold, the next gets a new starter
                return None
            raise
        return started, Monitor(started, launch.resources.memory, group)

    def serve(self, launch: Launch) -> LocalService:
        """A service as a subprocess listening on the executor's host and port of this machine."""
        ex = launch.executor
        cmd = service_command(launch, self._python(launch), ex.host)
        process, monitor = self._start(cmd, self._env(service_env(launch, ex.host), launch), launch)
        reach = "127.0.0.1" if ex.host == "0.0.0.0" else ex.host
        return LocalService(process, monitor, self.grace, f"http://{reach}:{ex.port}", ex.health)

    @staticmethod
    def _env(extra_env: dict[str, str], launch: Launch) -> dict[str, str]:
        pythonpath = os.pathsep.join(filter(None, [str(launch.app_dir), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, **extra_env, "PYTHONPATH": pythonpath}
        if launch.resources.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(launch.gpus)
        return env

    def _start(self, argv: list[str], env: dict[str, str], launch: Launch) -> tuple[subprocess.Popen, Monitor]:
        group = child_group(launch.resources)
        try:
            process = processes.spawn(group.command(argv) if group else argv, launch.app_dir, env)
        except BaseException:
            if group is not None:
                group.remove()
            raise
        return process, Monitor(process, launch.resources.memory, group)

    def close(self) -> None:
        """Nothing to remove: each attempt's process tree ends with it."""

    def environment(self, key: str) -> dict[str, str]:
        """Where executors ran, for their provenance: the interpreter's Python version."""
        return {"python": python_version(self.python)}


@cache
def python_version(python: str) -> str:
    """The version of the interpreter at `python` (asked once per interpreter)."""
    if python == sys.executable:
        return platform.python_version()
    done = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"
