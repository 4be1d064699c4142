"""Process trees that end with their executor: start one, read its output, stop all of it.

On Linux each attempt runs under `reaper.py` (started cold, or forked by a warm starter:
`starters.py`), a child subreaper that keeps every descendant
(even one that called `setsid`) below it and ends them all; elsewhere the attempt gets its own
process group. Stopping is SIGTERM to the whole tree, `grace` seconds, then SIGKILL for what is
left, without the caller waiting: `kill()` returns at once and a short-lived thread escalates.
Output is read without blocking on a pipe that a stray process may still hold.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from ..resources import Usage
from . import reaper
from .limits import Monitor
from .starters import Started

GRACE_S = 3.0  # between SIGTERM and SIGKILL
MAX_LINE = 64 * 1024  # longer lines are passed on in pieces of this size
SUBREAPER = sys.platform.startswith("linux")


def command(python: str, script: Path, args: list[str], grace: float = GRACE_S) -> list[str]:
    """The command line that runs `python -P script args` as a process tree."""
    runner = [python, "-P", reaper.__file__, f"{grace:g}"] if SUBREAPER else [python, "-P"]
    return [*runner, str(script), *args]


def spawn(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start `argv` in a session of its own, its output (stderr included) on one pipe."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


class ProcessTree:
    """One running attempt: its output lines, its exit code and usage, and a stop for all of it.

    `monitor` (`limits.Monitor`) reaps the process, measures it and enforces its memory limit;
    nothing here waits on the process itself, so its exit status and CPU time stay the monitor's.
    """

    def __init__(self, process: subprocess.Popen | Started, monitor: Monitor, grace: float = GRACE_S):
        self.process, self.monitor = process, monitor
        self.grace = grace
        self._stopping = False
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    def lines(self) -> Iterator[str]:
        """Output lines (split on \\n, \\r\\n or \\r) until the tree ends.

        Ends when the pipe closes, or when the attempt has ended and nothing came for half a
        second: a process that escaped the tree and holds the pipe is not waited for.
        """
        stream = self.process.stdout
        assert stream is not None
        fd = stream.fileno()
        pending = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            try:
                while True:
                    if not selector.select(0.5):
                        if self.monitor.exited.is_set():
                            break
                        continue
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    parts = (pending + chunk).splitlines(keepends=True)
                    # an unfinished line, or one ending in \r that may be the first half of \r\n, waits
                    pending = parts.pop() if parts and not parts[-1].endswith(b"\n") else b""
                    for raw in parts:
                        yield from _pieces(raw.rstrip(b"\r\n"))
                    while len(pending) > MAX_LINE:
                        yield from _pieces(pending[:MAX_LINE])
                        pending = pending[MAX_LINE:]
            finally:
                stream.close()
        pending = pending.rstrip(b"\r\n")
        if pending:
            yield from _pieces(pending)
        if isinstance(self.process, Started) and self.monitor.exited.wait(1.0) and self.process.lost:
            yield self.process.lost

    def wait(self, timeout: float | None) -> int:
        return self.monitor.wait(timeout)

    def usage(self) -> Usage:
        return self.monitor.usage()

    def kill(self) -> None:
        """Stop the whole tree: SIGTERM now, SIGKILL after the grace period. Returns at once."""
        with self._lock:
            if self._stopping or self.monitor.exited.is_set():
                return
            self._stopping = True
        try:
            if isinstance(self.process, Started):  # by pidfd: never another process that got its pid
                self.process.send_signal(signal.SIGTERM)
            elif SUBREAPER:
                os.kill(self.process.pid, signal.SIGTERM)  # the reaper passes it to the whole tree
            else:
                os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        threading.Thread(target=self._escalate, daemon=True, name=f"scanflow-stop-{self.process.pid}").start()

    def _escalate(self) -> None:
        if self.monitor.exited.wait(self.grace + 2.0):  # the reaper itself kills after `grace`
            return
        reaper.kill_tree(self.process.pid, SUBREAPER)


def _pieces(raw: bytes) -> Iterator[str]:
    for start in range(0, max(len(raw), 1), MAX_LINE):
        yield raw[start : start + MAX_LINE].decode(errors="replace")
