"""The console listener: live output and state changes printed into the notebook cell or terminal."""

from __future__ import annotations

import sys

from .. import events as ev
from .output import tail_lines
from .workspace import Workspace

TAIL_LINES = 15


class ConsoleListener:
    """Prints each executor's output prefixed by its key, and a line per state change.

    The engine has already limited the lines per second (`output.OutputLimits`). A failed
    executor's last lines are printed again under its failure, so the reason is in view.
    """

    def __init__(self, workspace: Workspace, stream=None):
        self.workspace = workspace
        self.stream = stream

    def _print(self, text: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(text + "\n")
        stream.flush()

    def __call__(self, event: ev.RunEvent) -> None:
        key = event.key
        if event.kind == ev.LINE:
            self._print(f"[{key}] {event.line}")
        elif event.kind == ev.STARTED:
            self._print(f"[{key}] started")
        elif event.kind == ev.SERVING:
            self._print(f"[{key}] serving at {event.url} (healthy)")
        elif event.kind == ev.RETRYING:
            self._print(f"[{key}] {event.error}; retrying (attempt {event.attempt})")
        elif event.kind in (ev.SUCCEEDED, ev.CACHED):
            took = f" in {event.duration:.2f} s" if event.kind == ev.SUCCEEDED else " (unchanged, not rerun)"
            self._print(f"[{key}] {event.kind}{took}")
        elif event.kind == ev.FAILED:
            self._print(f"[{key}] FAILED: {event.error} (attempts: {event.attempt})")
            log = self.workspace.log_path(key)
            if log.is_file():
                tail = tail_lines(log, TAIL_LINES)
                if tail:
                    self._print(f"[{key}] last lines of {log}:\n" + "\n".join(f"    {line}" for line in tail))
        elif event.kind == ev.SKIPPED and event.error != "not selected":
            self._print(f"[{key}] skipped: {event.error}")
        elif event.kind == ev.TRACKING:
            self._print(f"[{key or 'scanflow'}] MLflow: {event.error}")
