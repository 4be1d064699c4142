"""Warm process starters: an executor attempt forked from an interpreter that has already started.

A plain `python script.py` spends most of a short step starting the interpreter (`site` alone is
about 60 ms here). A starter (`reaper.py --serve`, one per Python executable and startup
environment, living as long as the kernel) pays that once; each attempt is then a fork of it that
takes on the attempt's folder, environment, arguments, output pipe and session, and runs the
script under the same reaper as a cold start does: the same process tree guarantees, exit status
and CPU time (the starter reaps the attempt and sends its wait4 figures back).

An attempt is started cold instead when no starter is ready yet (the first one starts in the
background), for another Python, when its environment differs in what an interpreter reads only
at startup (PYTHON*, locale, TZ, HOME, LD_*, MALLOC_*), when its PYTHONPATH has a sitecustomize,
and after packages were installed into a site folder (that starter retires and a new one starts).
If a starter dies, its attempts stop (their parent-death signal) and end failed, saying why.
"""

from __future__ import annotations

import logging
import marshal
import os
import queue
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from . import reaper

log = logging.getLogger(__name__)

READY_S = 60.0  # the most a starter may take to start
ANSWER_S = 30.0  # the most it may take to fork an attempt
STARTUP = ("PYTHON", "LC_", "LD_", "MALLOC_")  # variables an interpreter reads when it starts
STARTUP_NAMES = ("LANG", "LANGUAGE", "TZ", "HOME")
LOST = "[scanflow] the warm process starter ended while the executor ran; the executor was stopped"


class StarterLost(RuntimeError):
    """The starter of a running attempt ended: the attempt was stopped and its exit status is unknown."""


def startup_key(env: dict[str, str]) -> tuple:
    """What of `env` an interpreter reads at startup (PYTHONPATH aside: each attempt sets its own)."""
    return tuple(
        sorted((k, v) for k, v in env.items() if (k.startswith(STARTUP) and k != "PYTHONPATH") or k in STARTUP_NAMES)
    )


class Started:
    """One attempt forked by a starter: its pid, its output pipe, and (from the starter) its end.

    Looks like the part of `subprocess.Popen` that `ProcessTree` and `limits.Monitor` use.
    """

    def __init__(self, pid: int, stdout, answer: socket.socket, grace: float):
        self.pid, self.stdout, self.grace = pid, stdout, grace
        self.returncode: int | None = None
        self.lost: str | None = None
        self._ended = False
        self._lock = threading.Lock()  # a signal and the pidfd's close, from two threads
        self._answer = answer
        try:  # signals reach this very process even after its pid is reused
            self._pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def send_signal(self, sig: int) -> None:
        with self._lock:
            if self._ended:
                return
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                os.kill(self.pid, sig)

    def wait4(self) -> tuple[int, int, float]:
        """Block until the attempt ends: (pid, wait status, CPU seconds). StarterLost if the starter died."""
        try:
            message = self._answer.recv(4096)
        finally:
            self._answer.close()
        if message:
            _, status, cpu = marshal.loads(message)
            self._end()
            return self.pid, status, cpu
        self.lost = LOST
        self._await_end()
        raise StarterLost(LOST)

    def abandon(self) -> None:
        """Let go of an attempt that ends on its own before running anything (its starter reaps it)."""
        self.stdout.close()
        self._answer.close()
        self._end()

    def _await_end(self) -> None:
        """The attempt's reaper stops its tree on its own (parent-death signal); make sure it did."""
        import select

        if self._pidfd is not None and not select.select([self._pidfd], [], [], self.grace + 2.0)[0]:
            reaper.kill_tree(self.pid)
        self._end()

    def _end(self) -> None:
        with self._lock:
            self._ended = True
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None


class Starter:
    """One running `reaper.py --serve` process and the socket that asks it for attempts."""

    def __init__(self, python: str, env: dict[str, str]):
        self.python = python
        self.broken = False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._socket = ours
        env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        try:
            self.process = subprocess.Popen(
                [python, "-P", reaper.__file__, "--serve", str(theirs.fileno())],
                env=env,
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        finally:
            theirs.close()
        ours.settimeout(READY_S)
        try:
            hello = ours.recv(65536)
        except OSError:  # timed out
            hello = b""
        if not hello:
            self.process.kill()
            detail = self.process.communicate()[1].decode(errors="replace").strip()
            self.close()
            raise RuntimeError(f"the warm starter did not start: {detail or 'no answer'}")
        ours.settimeout(None)
        _, self.pid, self.sites = marshal.loads(hello)
        self.stamps = _stamps(self.sites)

    def fresh(self) -> bool:
        """Still running, and no site folder changed since it started (new packages, new .pth files)."""
        return not self.broken and self.process.poll() is None and _stamps(self.sites) == self.stamps

    def start(
        self,
        script: Path,
        args: list[str],
        cwd: Path,
        env: dict[str, str],
        grace: float,
        cgroup_procs: str,
        late: Callable[[], dict[str, str]] | None = None,
    ):
        """Fork one attempt; its output (stderr included) on a new pipe. OSError if the starter is gone.

        `late()`: more environment, asked for once the attempt is forked; the attempt waits for it
        before its script starts (if `late` raises, the attempt ends without running anything).
        """
        request = marshal.dumps((str(script), list(args), str(cwd), dict(env), grace, cgroup_procs))
        read, write = os.pipe()
        late_read, late_write = os.pipe() if late is not None else (None, None)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            fds = [write, theirs.fileno(), *([late_read] if late is not None else [])]
            socket.send_fds(self._socket, [request], fds)
        except BaseException:
            os.close(read)
            ours.close()
            if late_write is not None:
                os.close(late_write)
            raise
        finally:
            os.close(write)
            theirs.close()
            if late_read is not None:
                os.close(late_read)
        ours.settimeout(ANSWER_S)
        try:
            answer = ours.recv(4096)
        except OSError:
            answer = b""
        if not answer:  # gone or hung: this attempt starts cold (a late fork sees no one asking and skips it)
            self.broken = True
            os.close(read)
            ours.close()
            if late_write is not None:
                os.close(late_write)
            raise OSError("the warm starter did not answer")
        ours.settimeout(None)
        _, pid = marshal.loads(answer)
        started = Started(pid, open(read, "rb", buffering=0), ours, grace)  # noqa: SIM115 - closed by its reader
        if late is not None:
            try:
                more = marshal.dumps(dict(late()))
            except BaseException:  # the attempt reads nothing and ends; its starter reaps it
                os.close(late_write)
                started.abandon()
                raise
            try:
                os.write(late_write, more)
            finally:
                os.close(late_write)
        return started

    def close(self) -> None:
        """Let go: the starter ends once the attempts it runs have ended."""
        self._socket.close()
        if self.process.stderr is not None:
            self.process.stderr.close()


class Starters:
    """The starters of this process, one per Python executable and startup environment.

    Starters are started by one thread that lives as long as this process: a parent-death signal
    follows the thread that started the process, not the process.
    """

    def __init__(self):
        self._changed = threading.Condition()
        self._ready: dict[tuple, Starter] = {}
        self._starting: set[tuple] = set()
        self._failed: set[tuple] = set()  # not tried again: their attempts start cold
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._keeper: threading.Thread | None = None

    def get(self, python: str, env: dict[str, str], wait: bool = False) -> Starter | None:
        """A ready starter for attempts of `python` with `env`, or None (then one starts in the background).

        `wait`: wait for it to start (None if it cannot).
        """
        if not _suitable(env):
            return None
        key = (python, startup_key(env))
        with self._changed:
            starter = self._ready.get(key)
            if starter is not None and not starter.fresh():
                del self._ready[key]
                starter.close()
                starter = None
            if starter is None and key not in self._starting and key not in self._failed:
                self._starting.add(key)
                if self._keeper is None:
                    self._keeper = threading.Thread(target=self._keep, daemon=True, name="scanflow-starters")
                    self._keeper.start()
                self._requests.put((key, env))
            if wait:
                self._changed.wait_for(lambda: key not in self._starting, READY_S + 5)
                starter = self._ready.get(key)
        return starter

    def _keep(self) -> None:
        while True:
            key, env = self._requests.get()
            try:
                starter = Starter(key[0], env)
            except Exception as exc:  # attempts start cold, as before
                log.warning("no warm process starter for %s: %s", key[0], exc)
                starter = None
            with self._changed:
                self._starting.discard(key)
                if starter is None:
                    self._failed.add(key)
                else:
                    self._ready[key] = starter
                self._changed.notify_all()

    def close(self) -> None:
        """Let every starter go (each ends once its attempts have)."""
        with self._changed:
            for starter in self._ready.values():
                starter.close()
            self._ready.clear()


def _suitable(env: dict[str, str]) -> bool:
    """False where a cold start would run code a starter does not: a sitecustomize on the PYTHONPATH."""
    for folder in filter(None, env.get("PYTHONPATH", "").split(os.pathsep)):
        if any(os.path.exists(os.path.join(folder, f"{name}.py")) for name in ("sitecustomize", "usercustomize")):
            return False
    return True


def _stamps(folders: list[str]) -> list[int | None]:
    stamps = []
    for folder in folders:
        try:
            stamps.append(os.stat(folder).st_mtime_ns)
        except OSError:
            stamps.append(None)
    return stamps


STARTERS = Starters()
