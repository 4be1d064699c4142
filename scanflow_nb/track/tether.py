"""Tie a long-lived child (an `mlflow server`, a prediction service) to the life of the process that started it.

The starter keeps the write end of a pipe that only it holds; the child side reads end of file once the
starter's process has ended, however it ended (SIGKILL, a crash; a parent-death signal would follow the thread
that started the child instead), and stops as on SIGTERM:
- `Tethered(..., own=False)`: a command that is not ours runs under this file as a script
  (`python -P tether.py FD GRACE COMMAND...`), in our process group; at end of file, or on SIGTERM or SIGINT,
  the group gets SIGTERM, then SIGKILL after GRACE seconds, and we end as the command ended;
- `Tethered(..., own=True)`: our own command calls `follow(stop)`, which calls `stop` at end of file.
Standard library only: the script runs before any package is imported.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

FD_ENV = "SCANFLOW_TETHER_FD"
POLL_S = 0.5


class Tethered(subprocess.Popen):
    """`command` started tethered to this process (Popen `options`, in a session of its own). `release()`
    closes the pipe's write end: the command then stops as on SIGTERM, if it still runs."""

    def __init__(self, command: list[str], own: bool, grace: float = 10.0, **options):
        watched, self._held = os.pipe()
        try:
            if own:
                options["env"] = {**(options.get("env") or os.environ), FD_ENV: str(watched)}
            else:
                command = [sys.executable, "-P", __file__, str(watched), str(grace), *command]
            super().__init__(command, start_new_session=True, pass_fds=[watched], **options)
        except BaseException:
            self.release()
            raise
        finally:
            os.close(watched)

    def release(self) -> None:
        if self._held is not None:
            os.close(self._held)
            self._held = None


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


def _run(fd: int, grace: float, command: list[str]) -> int:
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
    deadline = None
    while True:
        pid, wait_status = os.waitpid(child, os.WNOHANG)
        if pid:
            return _status(wait_status)
        if deadline is not None:
            if time.monotonic() > deadline:
                os.killpg(0, signal.SIGKILL)  # the group, this process included
            time.sleep(POLL_S)
        elif stopping or (select.select([fd], [], [], POLL_S)[0] and not os.read(fd, 1)):
            os.killpg(0, signal.SIGTERM)  # ours is handled: we wait for the command, `grace` s at most
            deadline = time.monotonic() + grace


if __name__ == "__main__":
    sys.exit(_run(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]))
