"""Hard memory limits, and what each local executor attempt used.

A memory limit is enforced by a cgroup v2 group of the attempt's own where this process may make
one (`cgroups.child_groups`): the kernel then stops the attempt, and nothing else, when it goes
over (no swap). Elsewhere (cgroup v1, macOS, a read-only /sys/fs/cgroup) a watchdog sums the
resident memory of the attempt's process tree every 0.1 s and kills the tree when it is over.
Either way the attempt is reaped here, so its exit code comes with its CPU time (getrusage of the
attempt and of the children it waited for); its peak memory is the largest tree total sampled.
(The rusage peak is no use: it counts the kernel's own memory, shared by the child between fork
and exec.)
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time

from ..resources import Resources, Usage
from .cgroups import ChildGroup, child_groups

log = logging.getLogger(__name__)

CGROUP, WATCHDOG = "cgroup v2", "watchdog"
INTERVAL = 0.1  # seconds between two samples of an attempt's memory
REFRESH = 0.5  # seconds between two looks for new processes in its tree


def memory_mode() -> str:
    """How local memory limits are enforced on this machine: "cgroup v2" or "watchdog"."""
    return CGROUP if child_groups(os.environ.get("SCANFLOW_CGROUP")) else WATCHDOG


def child_group(resources: Resources) -> ChildGroup | None:
    """A cgroup for an attempt with a memory limit (and CPU quota), None where the watchdog is used."""
    if resources.memory is None:
        return None
    groups = child_groups(os.environ.get("SCANFLOW_CGROUP"))
    return groups.make(resources.memory, resources.cpus) if groups else None


class Monitor:
    """Reaps one attempt, samples its process tree's memory, and enforces its memory limit.

    `process` is a Popen, or a `starters.Started` (whose starter reaps it and reports its end).
    """

    def __init__(self, process: subprocess.Popen, memory: int | None, group: ChildGroup | None):
        self.process, self.memory, self.group = process, memory, group
        self.exited = threading.Event()
        self.peak = 0  # bytes, the largest tree total sampled
        self.cpu_s: float | None = None
        self.killed_for_memory = False
        self._reaper = threading.Thread(target=self._reap, daemon=True, name=f"scanflow-reap-{process.pid}")
        self._sampler = threading.Thread(target=self._sample, daemon=True, name=f"scanflow-rss-{process.pid}")
        self._reaper.start()
        self._sampler.start()

    def wait(self, timeout: float | None) -> int:
        if not self.exited.wait(timeout):
            raise TimeoutError
        return self.process.returncode

    def usage(self) -> Usage:
        self._sampler.join(5)
        return Usage(self.peak / 2**20 if self.peak else None, self.cpu_s, self.killed_for_memory)

    # -- threads ------------------------------------------------------------------------------
    def _reap(self) -> None:
        """wait4: the exit status with the CPU time (Popen is never asked; a warm starter reports its attempts')."""
        try:
            _, status, self.cpu_s = self.process.wait4() if hasattr(self.process, "wait4") else _wait4(self.process.pid)
            self.process.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # reaped elsewhere: Popen knows the code
            self.process.wait()
        except Exception as exc:  # never leave the engine waiting forever
            log.warning("could not reap executor process %s: %s", self.process.pid, exc)
            self.process.returncode = self.process.returncode if self.process.returncode is not None else -1
        finally:
            self.exited.set()

    def _sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.process.pid)
        except psutil.NoSuchProcess:
            self._end_group()
            return
        tree, refreshed = [root], 0.0
        try:
            while not self.exited.is_set():
                if time.monotonic() - refreshed > REFRESH:
                    tree, refreshed = _tree(root), time.monotonic()
                rss = sum(_rss(p) for p in tree)
                self.peak = max(self.peak, rss)
                if self.memory is not None and self.group is None and rss > self.memory:
                    self.killed_for_memory = True
                    _kill_tree(self.process.pid, tree)
                self.exited.wait(INTERVAL)
        except Exception as exc:  # the attempt goes on; say why nothing is measured any more
            log.warning("memory watchdog of executor process %s stopped: %s", self.process.pid, exc)
        self._end_group()

    def _end_group(self) -> None:
        if self.group is not None:
            self.exited.wait()
            self.killed_for_memory = self.group.out_of_memory()
            self.group.remove()


def _wait4(pid: int) -> tuple[int, int, float]:
    pid, status, rusage = os.wait4(pid, 0)
    return pid, status, rusage.ru_utime + rusage.ru_stime


def _tree(root) -> list:
    import psutil

    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return [root]


def _rss(process) -> int:
    import psutil

    try:
        return process.memory_info().rss
    except psutil.Error:  # gone since the last look
        return 0


def _kill_tree(pid: int, tree: list) -> None:
    """SIGKILL, as the kernel's OOM killer would: the process group, and each process of the tree."""
    import psutil

    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for process in tree:
        try:
            process.kill()
        except psutil.Error:
            pass
