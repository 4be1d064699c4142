"""Executor statuses folded from run events, and the progress summary of a run.

Pure bookkeeping: no widgets, no rendering. `RunProgress` is safe to feed from one thread
while another reads snapshots (the graph widget renders on a timer thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .. import events as ev
from ..spec import Workflow

STATES = (ev.PENDING, ev.RUNNING, ev.SERVING, ev.CACHED, ev.SUCCEEDED, ev.FAILED, ev.SKIPPED)


@dataclass(frozen=True)
class ExecutorStatus:
    """What is known about one executor in the current (or last) run."""

    state: str = ev.PENDING
    duration: float | None = None
    attempt: int = 1
    run_id: str | None = None
    exit_code: int | None = None
    error: str | None = None
    started: float | None = None
    url: str | None = None  # a service's address while it serves

    def describe(self, now: float | None = None) -> str:
        """A short label: the state, the duration (or, given `now`, the time so far), the attempt if retried."""
        parts = [self.state]
        if self.duration is not None:
            parts.append(format_seconds(self.duration))
        elif self.state in (ev.RUNNING, ev.SERVING) and self.started is not None and now is not None:
            parts.append(format_seconds(now - self.started))
        if self.attempt > 1:
            parts.append(f"try {self.attempt}")
        return " · ".join(parts)


def format_seconds(seconds: float) -> str:
    """1.234 -> '1.2 s', 75 -> '1 min 15 s', 3725 -> '1 h 2 min'."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def executor_keys(workflow: Workflow) -> list[str]:
    """Every executor of the tree as its run key "workflow/executor", depth first."""
    return [f"{wf.name}/{ex.name}" for wf, ex in workflow.all_executors()]


def as_status(value: Any) -> ExecutorStatus:
    """Accept an ExecutorStatus or a bare state name."""
    if isinstance(value, ExecutorStatus):
        return value
    if value in STATES:
        return ExecutorStatus(state=value)
    from ..errors import ValidationError

    raise ValidationError(f"unknown executor state {value!r}: use one of {', '.join(STATES)}")


def as_statuses(states: Mapping[str, Any] | None) -> dict[str, ExecutorStatus]:
    return {key: as_status(value) for key, value in (states or {}).items()}


@dataclass(frozen=True)
class Summary:
    """The progress of a run at one moment."""

    total: int
    done: int
    running: int
    failed: tuple[str, ...]
    counts: dict[str, int]
    elapsed: float | None
    finished: bool

    def text(self) -> str:
        """One line, e.g. '5/7 done · 1 running · 1 failed (train/fit) · 12.3 s'."""
        if self.total == 0:
            return "no executors"
        parts = [f"{self.done}/{self.total} done"]
        if self.running:
            parts.append(f"{self.running} running")
        for state in (ev.SERVING, ev.CACHED, ev.SKIPPED):
            if self.counts.get(state):
                parts.append(f"{self.counts[state]} {state}")
        if self.failed:
            parts.append(f"{len(self.failed)} failed ({', '.join(self.failed)})")
        if self.elapsed is not None:
            parts.append(format_seconds(self.elapsed) + ("" if self.finished else " so far"))
        return " · ".join(parts)


class RunProgress:
    """Folds RunEvents (or a finished RunResult) into per-executor statuses."""

    def __init__(self, workflow: Workflow, states: Mapping[str, Any] | None = None):
        self.workflow = workflow
        self.keys = executor_keys(workflow)
        self._lock = threading.Lock()
        self._statuses = {key: ExecutorStatus() for key in self.keys}
        self._statuses.update(as_statuses(states))
        self.run_id: str | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self.run_error: str | None = None

    def apply(self, event: ev.RunEvent) -> bool:
        """Record one event; True if an executor's state (what the graph shows) changed."""
        with self._lock:
            if event.kind == ev.RUN_STARTED:
                self._statuses = {key: ExecutorStatus() for key in self.keys}
                self.run_id, self.started, self.finished, self.run_error = event.run_id, event.time, None, None
                return True
            if event.kind == ev.RUN_FINISHED:
                self.finished = event.time
                self.run_error = f"the run {event.error}" if event.error and " " not in event.error else event.error
                self.run_id = self.run_id or event.run_id
                return False
            if event.key is None or event.kind == ev.LINE:
                return False
            old = self._statuses.get(event.key, ExecutorStatus())
            if event.kind in (ev.STARTED, ev.RETRYING):
                new = replace(
                    old,
                    state=ev.RUNNING,
                    attempt=event.attempt,
                    started=event.time,
                    duration=None,
                    run_id=event.run_id or old.run_id,
                    error=event.error if event.kind == ev.RETRYING else None,
                )
            elif event.kind == ev.SERVING:
                new = replace(old, state=ev.SERVING, url=event.url, run_id=event.run_id or old.run_id)
            elif event.kind in STATES:
                new = replace(
                    old,
                    state=event.kind,
                    duration=event.duration,
                    attempt=event.attempt,
                    exit_code=event.exit_code,
                    error=event.error,
                    run_id=event.run_id or old.run_id,
                )
            else:
                return False
            self._statuses[event.key] = new
            return new != old

    def load_result(self, result: Any) -> None:
        """Take the final statuses of a finished run (an engine RunResult)."""
        with self._lock:
            self.run_id = getattr(result, "run_id", None)
            for key, res in getattr(result, "executors", {}).items():
                self._statuses[key] = ExecutorStatus(
                    state=res.status,
                    duration=res.duration,
                    attempt=res.attempts or 1,
                    run_id=res.run_id,
                    exit_code=res.exit_code,
                    error=res.error,
                )
            self.started = getattr(result, "started", None)
            duration = getattr(result, "duration", None)
            self.finished = (self.started or 0.0) + (duration or 0.0)
            status = getattr(result, "status", None)
            self.run_error = None if status in (None, ev.SUCCEEDED) else f"the run {status}"

    def snapshot(self) -> dict[str, ExecutorStatus]:
        with self._lock:
            return dict(self._statuses)

    def status(self, key: str) -> ExecutorStatus:
        with self._lock:
            return self._statuses.get(key, ExecutorStatus())

    def summary(self, now: float | None = None) -> Summary:
        with self._lock:
            states = [self._statuses[key].state for key in self.keys]
            started, finished = self.started, self.finished
        counts = {state: states.count(state) for state in STATES}
        failed = tuple(key for key, state in zip(self.keys, states) if state == ev.FAILED)
        end = finished if finished is not None else (now or time.time())
        return Summary(
            total=len(self.keys),
            done=sum(counts[s] for s in ev.FINAL_STATES),
            running=counts[ev.RUNNING],
            failed=failed,
            counts=counts,
            elapsed=None if started is None else end - started,
            finished=finished is not None,
        )
