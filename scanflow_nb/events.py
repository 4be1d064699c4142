"""Run events: what happens during a run, sent to any listener (console, graph widget, tests).

Listeners are plain callables taking a RunEvent. They are called on the thread that called
`App.run`, one event at a time, so they may update widgets or print without locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Executor states, in the order a run moves through them.
PENDING, RUNNING, CACHED, SUCCEEDED, FAILED, SKIPPED = (
    "pending",
    "running",
    "cached",
    "succeeded",
    "failed",
    "skipped",
)
FINAL_STATES = (CACHED, SUCCEEDED, FAILED, SKIPPED)
# A service between answering its health check and being stopped; it ends succeeded (stopped) or failed.
SERVING = "serving"

# Event kinds. Executor events carry `key` ("workflow/executor"); run events have key=None.
RUN_STARTED, RUN_FINISHED = "run_started", "run_finished"
STARTED, LINE, RETRYING = "started", "line", "retrying"
# An MLflow write that failed (or runs a crash had left open, closed now): `error` says what; `key` is
# the executor's when it is about one.
TRACKING = "tracking"
# An executor's final event has kind == its final state: cached, succeeded, failed or skipped.
# A service's event of kind `serving` carries `url`: where this machine reaches it (else where executors do).


@dataclass(frozen=True)
class RunEvent:
    kind: str
    workflow: str
    key: str | None = None
    line: str | None = None
    attempt: int = 1
    duration: float | None = None
    exit_code: int | None = None
    error: str | None = None
    run_id: str | None = None
    url: str | None = None
    time: float = field(default_factory=time.time)

    @property
    def executor(self) -> str | None:
        return self.key.rsplit("/", 1)[1] if self.key else None


Listener = Callable[[RunEvent], None]
