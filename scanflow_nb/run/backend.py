"""The contract every back end (local, docker, swarm) fulfils for the shared run engine.

The engine does everything back ends have in common: order, parallelism, retries, timeouts,
caching, MLflow runs, logs and events. A back end only prepares its world, starts one attempt
of one executor, and cleans up.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

from ..spec import Executor


@dataclass
class Launch:
    """Everything needed to start one attempt of one executor."""

    key: str                  # "workflow/executor", unique in the app
    workflow: str             # the workflow that declares the executor
    executor: Executor
    app_dir: Path             # absolute app folder; the executor's working directory
    script: Path              # absolute path of the Python file to run (inside app_dir)
    args: list[str]           # command-line arguments (`--key value`)
    env: dict[str, str]       # extra environment, MLflow variables included
    attempt: int              # 1 for the first try


@dataclass
class Tracking:
    """Where runs are tracked: the URI the kernel uses, and the one executors use."""

    uri: str
    executor_uri: str


class Handle(Protocol):
    """One running attempt."""

    def lines(self) -> Iterator[str]:
        """Output lines (stdout and stderr merged) until the attempt ends."""

    def wait(self, timeout: float | None) -> int:
        """The exit code; raises TimeoutError if the attempt is still running after `timeout` s."""

    def kill(self) -> None:
        """Stop the attempt and everything it started. Safe to call more than once."""


class Backend(Protocol):
    name: str

    def open(self, app_dir: Path, workflow: str, tracking: Tracking) -> Tracking:
        """Prepare the world for a run (images, networks, tracker); return the tracking to use."""

    def launch(self, launch: Launch) -> Handle:
        """Start one attempt."""

    def close(self) -> None:
        """Remove whatever `open` and `launch` created. Called on success, failure and interrupt."""
