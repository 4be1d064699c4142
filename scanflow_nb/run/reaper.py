"""Run one executor script so that its whole process tree ends with it (Linux).

Started by the local back end as `python -P reaper.py GRACE SCRIPT [ARGS...]`, with any Python
(the kernel's or a venv's): it imports nothing from scanflow_nb. It makes itself a child
subreaper, forks, and runs SCRIPT as `__main__` in the child. Every descendant, even one that
called `setsid` or lost its parent, stays below it. When the script exits, processes it left
running are stopped; on SIGTERM, SIGINT or SIGHUP (or when the kernel dies: parent-death
signal) the whole tree gets SIGTERM, GRACE seconds, then SIGKILL. It exits last, with the
script's own status, so the pipe the kernel reads closes only when nothing of the tree is left.

As `python -P reaper.py --serve FD` it is a warm starter instead (`serve`): past interpreter start
once, it forks such a reaper for each attempt the kernel asks for on the Unix socket FD
(`starters.py` is the kernel's side).

The kernel's side (`processes.py`, `starters.py`) also uses `descendants` and `kill_tree` from here.
"""

from __future__ import annotations

import os
import signal
import sys
import time

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
CHILD_LISTS = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")  # CONFIG_PROC_CHILDREN


def descendants(root: int) -> dict[int, str]:
    """Live (non-zombie) descendants of process `root`: pid -> command name, read from /proc.

    Walks the kernel's child lists (/proc/PID/task/TID/children) down from `root`, where the
    kernel has them; otherwise reads every process's parent.
    """
    if not CHILD_LISTS:
        return _descendants_by_scan(root)
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid in _children(todo.pop()):
            name, state = _stat(pid)
            if name is not None and state not in (b"Z", b"X"):
                found[pid] = name
            todo.append(pid)
    return found


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:  # ended meanwhile
        return []
    children: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as f:
                children.extend(map(int, f.read().split()))
        except OSError:
            pass
    return children


def _stat(pid: int) -> tuple[str | None, bytes]:
    """Command name and state of `pid` (None if it has ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None, b"X"
    head, _, tail = stat.rpartition(b")")
    return head.partition(b"(")[2].decode(errors="replace"), tail.split()[0]


def _descendants_by_scan(root: int) -> dict[int, str]:
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


def kill_tree(pid: int, tree: bool = True) -> None:
    """SIGKILL process `pid`, its process group and (`tree`) every descendant, frozen first so none slips away."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return
    frozen: set[int] = {pid}
    if tree:
        while True:
            new = set(descendants(pid)) - frozen
            if not new:
                break
            for child in new:
                try:
                    os.kill(child, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
            frozen |= new
    for target in frozen:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
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
    """Run `script` in a new `__main__`, as `python -P script args` would; tracebacks start in the script.

    The module stays `sys.modules["__main__"]`; `_end` clears it as the interpreter's finalization
    clears a plain script's: a file the script left open is flushed and closed then.
    """
    from importlib.machinery import SourceFileLoader

    sys.argv = [script, *args]
    main = type(sys)("__main__")
    main.__dict__.update(__annotations__={}, __builtins__=sys.modules["builtins"], __cached__=None, __file__=script)
    main.__loader__ = SourceFileLoader("__main__", script)
    sys.modules["__main__"] = main
    try:
        with open(script, "rb") as f:
            code = compile(f.read(), script, "exec", dont_inherit=True)
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        import traceback

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


def _exit_code(exc: SystemExit) -> int:
    """The exit status Python gives a SystemExit that ends it (a message is printed, status 1)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _end(code: int, preloaded: set[str]) -> None:
    """End the script's process as the interpreter's own exit would, then `os._exit(code)`.

    Done, in the interpreter's order: non-daemon threads joined, atexit functions, the script's
    globals and the modules it imported cleared (their finalizers run: a file left open is flushed
    and closed), a collection, the standard streams flushed. Left out: tearing down the `preloaded`
    modules, there before the script; in a fork (a warm starter's, or this reaper's) that costs
    10-20 ms of copy-on-write faults.
    """
    import atexit

    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            try:
                threading._shutdown()  # what the interpreter calls first at exit
            except BaseException:  # e.g. a Ctrl-C while joining: Python goes on to the atexit functions too
                pass
        atexit._run_exitfuncs()  # prints what a function raised, as at a plain exit
        main = sys.modules.get("__main__")
        if main is not None:
            main.__dict__.clear()
        _clear_modules([name for name in sys.modules if name not in preloaded])
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:  # a closed pipe: Python exits 120 when it cannot flush stdout
                code = code or 120
    finally:  # whatever happens above, the process ends here
        os._exit(code)


def _clear_modules(names: list[str]) -> None:
    """Take the modules `names` (in import order) out of `sys.modules`, collect, and clear those still
    alive newest first, private names before the others: the interpreter's finalization, for them."""
    import gc
    import weakref

    popped = [sys.modules.pop(name) for name in reversed(names)]
    alive = [weakref.ref(m) for m in popped if isinstance(m, type(sys))]  # an entry may be None or any object
    del popped
    gc.collect()
    for ref in alive:
        module = ref()
        if module is not None:
            namespace = module.__dict__
            for private in (True, False):
                for key in [k for k in namespace if k.startswith("_") == private and k != "__builtins__"]:
                    namespace[key] = None
    gc.collect()


def reap_script(grace: float, script: str, args: list[str], parent: int) -> None:
    """Be the subreaper of `script` (run in a forked child) and end as it ended; never returns."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, *STOP_SIGNALS})
    if os.getppid() != parent:  # the parent died before the parent-death signal was armed
        os._exit(1)
    reaper = Reaper(grace)
    reaper.main = os.fork()
    if reaper.main == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        preloaded = set(sys.modules)
        try:
            _run_script(script, args)
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
        _end(code, preloaded)
    reaper.supervise()
    reaper.exit()


# -- the warm starter ----------------------------------------------------------------------------
# Requests and answers are marshal'd tuples, one per SOCK_SEQPACKET message:
#   kernel -> starter: (script, args, cwd, env, grace, cgroup_procs or ""), fds [output pipe, answer socket]
#   and optionally a pipe on which the kernel sends, once it knows it, more environment (a marshal'd
#   dict); the attempt reads it to its end before the script starts, and ends if it is empty.
#   starter -> kernel: ("ready", pid, site dirs) once on FD; per attempt on its answer socket
#   ("pid", pid), then ("exit", wait status, cpu seconds) when the attempt's reaper has ended.
MAX_REQUEST = 1 << 20


def serve(fd: int) -> None:
    """Fork a reaper for each request on the socket `fd`; report each one's end. Ends with the kernel."""
    import _socket
    import ctypes  # noqa: F401 -- what every forked reaper and script would import, imported once here
    import gc
    import marshal
    import resource  # noqa: F401 -- os.wait4 imports it at the first reap: in every attempt alike, then
    import select
    import site
    from importlib.machinery import SourceFileLoader  # noqa: F401

    parent = os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the kernel's end is ours, and so every attempt's
    if os.getppid() != parent:
        os._exit(1)
    sock = _socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    answers: dict[int, object] = {}  # reaper pid -> its answer socket
    sites = [*site.getsitepackages(), site.getusersitepackages()] if site.ENABLE_USER_SITE else site.getsitepackages()
    gc.freeze()  # the children never copy these pages to collect or finalize them (fork without exec)
    sock.send(marshal.dumps(("ready", os.getpid(), sites)))
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    listening, starter = True, os.getpid()
    while listening or answers:
        for ready, _ in poller.poll():
            if ready == wake_r:
                _drain(wake_r)
                _report_ended(answers)
                continue
            data, ancillary, flags, _ = sock.recvmsg(MAX_REQUEST, _socket.CMSG_SPACE(3 * 4))  # up to 3 fds
            fds = [int.from_bytes(d[i : i + 4], sys.byteorder) for *_, d in ancillary for i in range(0, len(d) - 3, 4)]
            if not data and not fds:  # the kernel let go: end once the attempts running have ended
                poller.unregister(sock.fileno())
                listening = False
                continue
            # not ours to run: whoever asked sees its answer close
            if len(fds) not in (2, 3) or flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
                for stray in fds:
                    os.close(stray)
                continue
            output, answer, late = fds[0], _socket.socket(fileno=fds[1]), fds[2] if len(fds) == 3 else None
            asking = select.poll()
            asking.register(answer.fileno(), 0)
            try:
                pid = -1 if asking.poll(0) else os.fork()  # hung up: the kernel gave up waiting
            except OSError:  # no process to be had
                pid = -1
            if pid < 0:  # the kernel sees the answer close and starts the attempt cold
                os.close(output)
                answer.close()
                if late is not None:
                    os.close(late)
                continue
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                sock.close()
                for other in answers.values():
                    other.close()
                answer.close()
                os.close(wake_r)
                os.close(wake_w)
                _attempt(starter, output, data, late)
            os.close(output)
            if late is not None:
                os.close(late)
            answers[pid] = answer
            try:
                answer.send(marshal.dumps(("pid", pid)))
            except OSError:  # the kernel stopped waiting: the attempt is its to stop, the end ours to reap
                pass
    os._exit(0)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _report_ended(answers: dict) -> None:
    """Reap every ended attempt and send its wait status and CPU time to whoever waits for it."""
    import marshal

    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        answer = answers.pop(pid, None)
        if answer is not None:
            try:
                answer.send(marshal.dumps(("exit", status, usage.ru_utime + usage.ru_stime)))
            except OSError:  # the kernel stopped waiting
                pass
            answer.close()


def _attempt(starter: int, output: int, request: bytes, late: int | None) -> None:
    """In a forked child: become the attempt `python -P reaper.py GRACE SCRIPT ARGS` would have been.

    `late`: the pipe of the environment the kernel learns only now (the MLflow run ids).
    """
    import marshal

    try:
        script, args, cwd, env, grace, cgroup_procs = marshal.loads(request)
        os.setsid()
        if cgroup_procs:  # in the attempt's memory group before anything of it runs
            with open(cgroup_procs, "w") as f:
                f.write(str(os.getpid()))
        os.chdir(cwd)
        if late is not None:
            with open(late, "rb") as f:
                more = f.read()
            if not more:  # the kernel gave this attempt up (it could not get the run): nothing runs
                os._exit(1)
            env.update(marshal.loads(more))
        os.environ.clear()
        os.environ.update(env)
        pythonpath = env.get("PYTHONPATH")
        sys.path[:0] = [os.path.abspath(p) for p in pythonpath.split(os.pathsep)] if pythonpath else []
        sys.path_importer_cache.clear()  # as fresh as a new interpreter's: packages installed since are seen
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)
    except BaseException as exc:
        os.write(output, f"[scanflow] the warm starter could not start the executor: {exc}\n".encode())
        os._exit(1)
    reap_script(grace, script, args, starter)


def main(argv: list[str]) -> None:
    if argv[0] == "--serve":
        serve(int(argv[1]))
    else:
        reap_script(float(argv[0]), argv[1], argv[2:], os.getppid())


if __name__ == "__main__":
    main(sys.argv[1:])
