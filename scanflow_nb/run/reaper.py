"""Run one executor script so that its whole process tree ends with it (Linux).

Started by the local back end as `python -P reaper.py GRACE SCRIPT [ARGS...]`, with any Python
(the kernel's or a venv's): it imports nothing from scanflow_nb. It makes itself a child
subreaper, forks, and runs SCRIPT as `__main__` in the child. Every descendant, even one that
called `setsid` or lost its parent, stays below it. When the script exits, processes it left
running are stopped; on SIGTERM, SIGINT or SIGHUP (or when the kernel dies: parent-death
signal) the whole tree gets SIGTERM, GRACE seconds, then SIGKILL. It exits last, with the
script's own status, so the pipe the kernel reads closes only when nothing of the tree is left.

The kernel's side (`processes.py`) also imports `descendants` from here.
"""

from __future__ import annotations

import os
import signal
import sys
import time

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def descendants(root: int) -> dict[int, str]:
    """Live (non-zombie) descendants of process `root`: pid -> command name, read from /proc."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # ended meanwhile
            continue
        head, _, tail = stat.rpartition(b")")
        fields = tail.split()
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        if fields[0] not in (b"Z", b"X"):
            names[pid] = head.partition(b"(")[2].decode(errors="replace")
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid in names:
            found[pid] = names[pid]
        todo.extend(children.get(pid, []))
    return found


def _signal_all(pids, sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Reaper:
    """The supervising parent: reaps everything below it and stops the tree when told to."""

    def __init__(self, grace: float):
        self.grace = grace
        self.pid = os.getpid()
        self.main: int | None = None
        self.status: int | None = None  # the script's wait status

    def reap(self) -> None:
        """Collect every child that has ended (adopted orphans included)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.main:
                self.status = status

    def supervise(self) -> None:
        """Wait for the script, or for a stop signal; then end whatever is left."""
        while self.status is None:
            info = signal.sigwaitinfo({signal.SIGCHLD, *STOP_SIGNALS})
            if info.si_signo in STOP_SIGNALS:
                self.stop()
                return
            self.reap()
        left = descendants(self.pid)
        settle = time.monotonic() + min(1.0, self.grace)  # helpers that end with the script (e.g. multiprocessing's)
        while left and time.monotonic() < settle:
            signal.sigtimedwait({signal.SIGCHLD}, 0.05)
            self.reap()
            left = descendants(self.pid)
        if left:
            what = ", ".join(f"{pid} ({name})" for pid, name in sorted(left.items()))
            print(f"[scanflow] the executor left {len(left)} process(es) running; stopping them: {what}", flush=True)
            self.stop()

    def stop(self) -> None:
        """SIGTERM to every process of the tree, `grace` seconds, then SIGKILL until none is left."""
        deadline = time.monotonic() + self.grace
        live = descendants(self.pid)
        while live and time.monotonic() < deadline:
            _signal_all(live, signal.SIGTERM)
            _signal_all(live, signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
            signal.sigtimedwait({signal.SIGCHLD}, 0.05)
            self.reap()
            live = descendants(self.pid)
        while live:
            _signal_all(live, signal.SIGKILL)
            signal.sigtimedwait({signal.SIGCHLD}, 0.05)
            self.reap()
            live = descendants(self.pid)
        self.reap()

    def exit(self) -> None:
        """End this process the way the script ended: same exit code, or same signal."""
        sys.stdout.flush()
        code = os.waitstatus_to_exitcode(self.status) if self.status is not None else -signal.SIGKILL
        if code >= 0:
            os._exit(code)
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {-code})
        os.kill(self.pid, -code)
        os._exit(128 - code)  # only if the signal did not end us


def _prctl(option: int, value: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _run_script(script: str, args: list[str]) -> None:
    """Run `script` as `__main__`, as `python -P script args` would; tracebacks start in the script."""
    import runpy
    import traceback

    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        raise
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb or exc.__traceback__)
        sys.stderr.flush()
        if isinstance(exc, KeyboardInterrupt):  # end by SIGINT, like Python itself
            sys.stdout.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        raise SystemExit(1) from None


def main(argv: list[str]) -> None:
    grace, script, args = float(argv[0]), argv[1], argv[2:]
    parent = os.getppid()
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, *STOP_SIGNALS})
    if os.getppid() != parent:  # the kernel died before the parent-death signal was armed
        raise SystemExit(1)
    reaper = Reaper(grace)
    reaper.main = os.fork()
    if reaper.main == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        _run_script(script, args)
        raise SystemExit(0)
    reaper.supervise()
    reaper.exit()


if __name__ == "__main__":
    main(sys.argv[1:])
