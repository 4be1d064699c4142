"""Tie a long-lived child (an `mlflow server`, a prediction service) to the life of the process that started it.

The starter keeps the write end of a pipe that only it holds; the child side reads end of file once the
starter's process has ended, however it ended (SIGKILL, a crash; a parent-death signal would follow the thread
that started the child instead), and stops as on SIGTERM:
- `popen(..., own=False)`: a command that is not ours runs under this file as a script
  (`python -P tether.py FD GRACE COMMAND...`), in our process group; at end of file, or on SIGTERM or SIGINT,
  the group gets SIGTERM, then SIGKILL after GRACE seconds, and we end as the command ended;
- `popen(..., own=True)`: our own command calls `follow(stop)`, which calls `stop` at end of file.
Standard library only: the script runs before any package is imported.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

FD_ENV = "SCANFLOW_TETHER_FD"
POLL_S = 0.5


def popen(command: list[str], own: bool, grace: float = 10.0, **options) -> tuple[subprocess.Popen, int]:
    """Start `command` tethered to this process (Popen `options`, in a session of its own); returns it and
    the pipe's write end: close that to stop the command as SIGTERM would."""
    watched, held = os.pipe()
    try:
        if own:
            options["env"] = {**(options.get("env") or os.environ), FD_ENV: str(watched)}
        else:
            command = [sys.executable, "-P", __file__, str(watched), str(grace), *command]
        process = subprocess.Popen(command, start_new_session=True, pass_fds=[watched], **options)
    except BaseException:
        os.close(held)
        raise
    finally:
        os.close(watched)
    return process, held


def follow(stop: Callable[[], None]) -> None:
    """In our own tethered command: call `stop` once the starter has ended (nothing if untethered)."""
    fd = os.environ.pop(FD_ENV, None)
    if fd is None:
        return

    def watch() -> None:
        while os.read(int(fd), 1):
            pass
        stop()

    threading.Thread(target=watch, daemon=True, name="scanflow-tether").start()


def _status(wait_status: int) -> int:
    """An exit code as a shell would give it (128 + the signal for a killed command)."""
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


def _run(fd: int, grace: float, command: list[str]) -> int | None:
    child = os.fork()
    if child == 0:
        os.close(fd)
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"cannot run {command[0]}: {exc}", file=sys.stderr)
        os._exit(127)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    while not stopping:
        pid, wait_status = os.waitpid(child, os.WNOHANG)
        if pid:
            return _status(wait_status)
        if select.select([fd], [], [], POLL_S)[0] and not os.read(fd, 1):
            stopping.append(True)
    os.killpg(0, signal.SIGTERM)  # ours is handled: we wait for the command below
    waited = 0.0
    while waited < grace:
        pid, wait_status = os.waitpid(child, os.WNOHANG)
        if pid:
            return _status(wait_status)
        select.select([], [], [], POLL_S)
        waited += POLL_S
    os.killpg(0, signal.SIGKILL)  # the group, this process included


if __name__ == "__main__":
    sys.exit(_run(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]))
