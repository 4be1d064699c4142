"""What a containerised attempt used, measured inside its container.

The engine cannot reap a process inside a container, so the attempt's command is started by a
few lines of Python that can: they spawn the program, pass on the signals a container gets, reap
it with wait4 (CPU time of it and the children it waited for, its largest resident memory), write
that to a file in the mounted app folder, and exit as the program did (128 + signal when it was
killed, as a shell would say). Output, environment, arguments and exit codes are unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..resources import Usage

RECORD = """\
import json, os, signal, sys
out, argv = sys.argv[1], sys.argv[2:]
pid = os.posix_spawnp(argv[0], argv, dict(os.environ))
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(sig, lambda s, frame: os.kill(pid, s))
_, status, used = os.wait4(pid, 0)
with open(out, "w") as f:
    json.dump({"cpu_s": used.ru_utime + used.ru_stime, "peak_rss_mb": used.ru_maxrss / 1024}, f)
if os.WIFSIGNALED(status):
    sys.exit(128 + os.WTERMSIG(status))
sys.exit(os.WEXITSTATUS(status))
"""


def measured(command: list[str], record: Path) -> list[str]:
    """`command`, run so that what it used is written to `record` when it ends."""
    return ["python", "-c", RECORD, str(record), *command]


def recorded(record: Path | None, out_of_memory: bool) -> Usage:
    """The usage `measured` wrote (the file is removed), with the engine's word on memory."""
    if record is None:
        return Usage(out_of_memory=out_of_memory)
    try:
        data = json.loads(record.read_text())
        record.unlink()
    except (OSError, ValueError):  # killed before it could write (a timeout, an interrupt)
        return Usage(out_of_memory=out_of_memory)
    return Usage(data.get("peak_rss_mb"), data.get("cpu_s"), out_of_memory)
