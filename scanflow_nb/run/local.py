"""The local back end: each executor attempt is a Python subprocess in the app folder.

Each attempt gets its own process group so a timeout or an interrupt stops it and anything it
started. Its memory limit, exit code and usage are `limits.Monitor`'s business; the GPUs the engine
gave it are its CUDA_VISIBLE_DEVICES. With `isolated=True`, executors that declare requirements run
in a virtual environment built once per requirements digest and reused.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from ..resources import Node, Usage
from .backend import Launch, Tracking
from .limits import Monitor, child_group
from .machine import this_machine
from .venvs import venv_python


class LocalProcess:
    def __init__(self, process: subprocess.Popen, monitor: Monitor):
        self.process, self.monitor = process, monitor

    def lines(self) -> Iterator[str]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            yield line.rstrip("\n")
        self.process.stdout.close()

    def wait(self, timeout: float | None) -> int:
        return self.monitor.wait(timeout)

    def usage(self) -> Usage:
        return self.monitor.usage()

    def kill(self) -> None:
        """SIGTERM to the process group, SIGKILL if it is still there after 3 s."""
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            if self.monitor.exited.is_set():
                return
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            self.monitor.exited.wait(grace)


class LocalBackend:
    """Executors as subprocesses of the kernel's Python (`isolated`: their requirements in their own venvs)."""

    name = "local"
    runs_images = False

    def __init__(self, isolated: bool = False, python: str | None = None):
        self.isolated = isolated
        self.python = python or sys.executable

    def open(self, app_dir: Path, workflow: str, tracking: Tracking) -> Tracking:
        return tracking

    def nodes(self) -> list[Node]:
        return [this_machine()]

    def launch(self, launch: Launch) -> LocalProcess:
        python = self.python
        if self.isolated and launch.executor.requirements:
            python = venv_python(launch.app_dir, launch.executor)
        # -P: the script's folder is not put first on sys.path, so an executor named like a standard
        # module (select.py, json.py) does not shadow it; the app folder is importable instead.
        pythonpath = os.pathsep.join(filter(None, [str(launch.app_dir), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, **launch.env, "PYTHONPATH": pythonpath}
        if launch.resources.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(launch.gpus)
        group = child_group(launch.resources)
        argv = [python, "-P", str(launch.script), *launch.args]
        try:
            process = subprocess.Popen(
                group.command(argv) if group else argv,
                cwd=launch.app_dir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,
            )
        except BaseException:
            if group is not None:
                group.remove()
            raise
        return LocalProcess(process, Monitor(process, launch.resources.memory, group))

    def close(self) -> None:
        """Nothing to remove: each attempt's process group ends with it."""

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
