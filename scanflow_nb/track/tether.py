"""Run a command for as long as the process that started it lives: `python -P tether.py FD COMMAND...`.

FD is the read end of a pipe whose write end only the starting process holds, so it reads end of file once
that process has ended, however it ended (SIGKILL, a crash; a parent-death signal would follow the thread that
started us instead). The command runs in our process group. At that end of file, or on SIGTERM or SIGINT, the
group gets SIGTERM, then SIGKILL after GRACE_S. We end as the command ended. Standard library only: started as
a file, before any package is imported.
"""

import os
import select
import signal
import sys

GRACE_S = 10.0
POLL_S = 0.5


def _status(wait_status: int) -> int:
    """An exit code as a shell would give it (128 + the signal for a killed command)."""
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


def main(fd: int, command: list[str]) -> int | None:
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
    while waited < GRACE_S:
        pid, wait_status = os.waitpid(child, os.WNOHANG)
        if pid:
            return _status(wait_status)
        select.select([], [], [], POLL_S)
        waited += POLL_S
    os.killpg(0, signal.SIGKILL)  # the group, this process included


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2:]))
