"""The contract every back end (local, docker, swarm) fulfils for the shared run engine.

The engine does everything back ends have in common: order, parallelism, retries, timeouts,
caching, MLflow runs, logs and events. A back end only prepares its world, starts one attempt
of one executor, and cleans up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import RunError
from ..resources import Node, Resources, Usage
from ..spec import Executor

# name -> "module:Class". Adding a back end: its module, plus one line here.
BACKENDS = {
    "local": "scanflow_nb.run.local:LocalBackend",
    "docker": "scanflow_nb.run.docker:DockerBackend",
    "swarm": "scanflow_nb.run.swarm:SwarmBackend",
}


@dataclass
class Launch:
    """Everything needed to start one attempt of one executor."""

    key: str  # "workflow/executor", unique in the app
    workflow: str  # the workflow that declares the executor
    executor: Executor
    app_dir: Path  # absolute app folder; the executor's working directory
    script: Path | None  # absolute path of the Python file to run; None: the image's own command
    args: list[str]  # command-line arguments (`--key value`)
    env: dict[str, str]  # extra environment, MLflow variables included
    attempt: int  # 1 for the first try
    resources: Resources = field(default_factory=Resources)  # what it needs, inherited ones included
    gpus: tuple[str, ...] = ()  # the GPU ids the engine gave it (back ends that place GPUs themselves ignore them)
    # More environment, known only once the store answers (the MLflow run ids): given to back ends
    # that say `late_env = True`, which start the process first and call it before the executor's
    # code runs (it waits; raises TrackerError if the run cannot be had). Others get it in `env`.
    late_env: Callable[[], dict[str, str]] | None = None


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
        """The exit code; raises TimeoutError if the attempt is still running after `timeout` s, and a
        ScanflowError saying why if it can never run (e.g. no node has the resources it asks for)."""

    def kill(self) -> None:
        """Stop the attempt and everything it started. Safe to call more than once."""

    def usage(self) -> Usage:
        """After `wait`: its peak memory and CPU time as far as known, and whether it was killed for memory."""


class RunningService(Handle, Protocol):
    """A running service (an executor with `service=True`): up until asked to stop."""

    url: str  # where the run's executors reach it
    endpoint: str | None  # where this machine reaches it (None: not published here)

    def healthy(self) -> bool:
        """True once its health check answers 200 (every replica's, where there are several)."""

    def stop(self) -> None:
        """Ask it to end cleanly (it flushes what it holds); returns at once. `kill` is for what stays."""


class Backend(Protocol):
    name: str  # recorded with every run and part of cache keys
    runs_images: bool  # can run an executor that has only an image (no Python file or code)

    def open(self, app_dir: Path, workflow: str, tracking: Tracking) -> Tracking:
        """Prepare the world for a run (images, networks, tracker); return the tracking to use."""

    def nodes(self) -> list[Node]:
        """What the machines executors run on offer (CPUs, memory, GPU ids); callable before `open`."""

    def launch(self, launch: Launch) -> Handle:
        """Start one attempt (its `resources` as limits, its `gpus` as its devices)."""

    def serve(self, launch: Launch) -> RunningService:
        """Start a service (`launch.executor.service`): a process, a container, a replicated swarm service."""

    def close(self) -> None:
        """Remove whatever `open` and `launch` created. Called on success, failure and interrupt."""

    # Optional: `late_env = True` (see `Launch.late_env`); `runs_replicas = True` where a service's
    # `replicas` all run (each holding its resources), not one copy.
    # Optional: `environment(key) -> dict` says where the last attempt of executor `key` ran, for its
    # provenance: "python" (version), "image" and "image_digest" on container back ends.


def resolve_backend(backend: str | Backend, **options: Any) -> Backend:
    """A back end from its registered name and `options` (e.g. local's `isolated=True`), or an instance as is."""
    if not isinstance(backend, str):
        if options:
            raise RunError("back-end options go with a back-end name, not with an instance")
        return backend
    if backend not in BACKENDS:
        raise RunError(f"unknown back end {backend!r}: choose one of {', '.join(BACKENDS)}")
    module, name = BACKENDS[backend].split(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise RunError(f"the {backend} back end is not available: {exc}") from None
    try:
        return cls(**options)
    except TypeError:
        raise RunError(f"the {backend} back end takes no option(s) {', '.join(sorted(options))}") from None
