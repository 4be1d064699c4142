"""Hard memory limits, and what each local executor attempt used.

A memory limit is enforced by a cgroup v2 group of the attempt's own where this process may make
one (`cgroups.child_groups`): the kernel then stops the attempt, and nothing else, when it goes
over (no swap). Elsewhere (cgroup v1, macOS, a read-only /sys/fs/cgroup) a watchdog sums the
resident memory of the attempt's process tree every 0.1 s and kills the tree when it is over.
Either way the attempt is reaped here, so its exit code comes with its CPU time (getrusage of the
attempt and of the children it waited for); its peak memory is the largest tree total sampled.
(The rusage peak is no use: it counts the kernel's own memory, shared by the child between fork
and exec.)

The sampler takes as little as it can from the step it watches: on Linux it reads /proc itself (the
kernel's child lists and `statm`: about 0.2 ms a look, where psutil's scan of every process took
5 ms), and one that only measures (no watchdog to enforce) runs `SAMPLER_NICE` steps nicer.
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
from .reaper import descendants, kill_tree

log = logging.getLogger(__name__)

CGROUP, WATCHDOG = "cgroup v2", "watchdog"
INTERVAL = 0.1  # seconds between two samples of an attempt's memory
REFRESH = 0.5  # seconds between two looks for new processes in its tree
SAMPLER_NICE = 10  # how much nicer than the kernel the sampling threads are (Linux: a thread's own priority)
PROC = os.path.isdir(f"/proc/{os.getpid()}/task")  # Linux: read /proc, not psutil
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


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
        if self.memory is None or self.group is not None:  # measuring only; a watchdog keeps its priority
            lower_priority(SAMPLER_NICE)
        pid, tree, refreshed = self.process.pid, [self.process.pid], 0.0
        try:
            while not self.exited.is_set():
                if time.monotonic() - refreshed > REFRESH:
                    tree, refreshed = _tree(pid), time.monotonic()
                rss = sum(_rss(p) for p in tree)
                self.peak = max(self.peak, rss)
                if self.memory is not None and self.group is None and rss > self.memory:
                    self.killed_for_memory = True
                    _kill_tree(pid)
                self.exited.wait(INTERVAL)
        except Exception as exc:  # the attempt goes on; say why nothing is measured any more
            log.warning("memory watchdog of executor process %s stopped: %s", pid, exc)
        self._end_group()

    def _end_group(self) -> None:
        if self.group is not None:
            self.exited.wait()
            self.killed_for_memory = self.group.out_of_memory()
            self.group.remove()


def _wait4(pid: int) -> tuple[int, int, float]:
    pid, status, rusage = os.wait4(pid, 0)
    return pid, status, rusage.ru_utime + rusage.ru_stime


def lower_priority(nice: int) -> None:
    """Make the calling thread `nice` steps nicer (Linux: per thread; elsewhere nothing)."""
    try:
        me = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, me, os.getpriority(os.PRIO_PROCESS, me) + nice)
    except (AttributeError, OSError):  # no per-thread priorities here: the thread keeps the process's
        pass


def _tree(pid: int) -> list[int]:
    """`pid` and its live descendants."""
    if PROC:
        return [pid, *descendants(pid)]
    import psutil

    try:
        return [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return [pid]


def _rss(pid: int) -> int:
    """Resident memory of `pid` in bytes (0 once it has ended)."""
    if PROC:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):  # gone since the last look
            return 0
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def _kill_tree(pid: int) -> None:
    """SIGKILL, as the kernel's OOM killer would: the process, its group and every descendant."""
    if PROC:
        return kill_tree(pid)
    import psutil

    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return
    for process in tree:
        try:
            process.kill()
        except psutil.Error:
            pass
