"""The run engine shared by every back end.

It flattens the workflow into tasks (`schedule.plan`), starts each task when what it waits for
has succeeded, bounded by `max_workers`, retries and times out attempts, skips cached executors,
keeps a log per executor and sends events to listeners. Back ends only start attempts
(`Backend.launch`). Worker threads never touch listeners: they post messages to a queue that the
run's own thread drains, so listeners run on one thread, in order.

Nobody here waits for MLflow: every write goes to the run's `track.runs.RunWriter` (`self.writer`),
whose thread opens the store while the run gets ready. An executor's worker waits only for its own
run's id: before launching it, or (a back end with `late_env`) before its code starts; the run
returns once every write is done.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from .. import events as ev
from ..errors import NotFoundError, RunError, ScanflowError, TrackerError
from ..resources import Resources, Usage, format_bytes, parse_cpus, thread_env
from ..schedule import Task, cache_key, plan, resolve, select
from ..sources import code_path
from ..spec import Executor
from ..track.provenance import Provenance, executor_provenance, git_state, workflow_provenance
from ..track.runs import RunRef, RunWriter
from .admission import Admission
from .backend import Backend, Launch, Tracking, resolve_backend
from .console import ConsoleListener
from .output import LogWriter, OutputLimits, Throttle
from .result import ExecutorResult, RunResult
from .services import SERVICE_START_TIMEOUT, SERVICE_STOP_GRACE
from .workspace import Workspace

log = logging.getLogger(__name__)

ACTIVE: dict[tuple[str, str], Run] = {}  # (app folder, workflow) -> its latest run in progress here


def service_variable(key: str) -> str:
    """The environment variable holding a service's address for the run's executors: SCANFLOW_SERVICE_<NAME>."""
    return "SCANFLOW_SERVICE_" + key.rsplit("/", 1)[1].upper().replace("-", "_")


class Run:
    """One run of one workflow. Use `App.run`; this class is its engine."""

    def __init__(
        self,
        app: Any,
        workflow: str,
        backend: str | Backend = "local",
        *,
        force: bool = False,
        only: str | None = None,
        from_: str | None = None,
        max_workers: int | None = None,
        cpus: float | None = None,
        listeners: Iterable[ev.Listener] = (),
        echo: bool = True,
        backend_options: dict | None = None,
        tags: dict[str, str] | None = None,
        configure: Callable[[Task], Executor] | None = None,
        output: OutputLimits | None = None,
        keep_serving: bool = False,
    ):
        """`tags`: extra tags of the run's root MLflow run (a sweep's or a re-run's links).
        `configure`: called on the run's thread just before a task starts, returns the executor to
        run in its place (a sweep's search picks a trial's parameters when a worker frees up).
        """
        self.app = app
        self.root = app.find(workflow)
        self.tasks = plan(self.root, app.resource_defaults(workflow))
        self.cpus = parse_cpus(cpus, "the run")
        self._by_key = {task.key: task for task in self.tasks}
        self.selected = select(self.tasks, only, from_)
        self.force = force
        if max_workers is not None and max_workers < 1:
            raise RunError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers = max_workers or os.cpu_count() or 2
        self.backend = resolve_backend(backend, **(backend_options or {}))
        self.workspace = Workspace(app.path)
        self.output = output or OutputLimits()
        self.listeners = [*([ConsoleListener(self.workspace)] if echo else []), *listeners]
        self.cancelled = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._broken_listeners: set[int] = set()
        self.states: dict[str, str] = {}
        self.results: dict[str, ExecutorResult] = {}
        self._scripts: dict[str, Path | None] = {}
        self._files = self.workspace.digests()
        self._requirements: dict[str, str] = {}
        self._cache: dict[str, dict[str, str]] = {}
        self._started: dict[str, float] = {}
        self._digests: dict[str, str] = {}
        self._workers: list[threading.Thread] = []
        self.writer: RunWriter | None = None  # every MLflow write of this run goes through it
        self._runs: dict[str, RunRef] = {}  # executor key -> its MLflow run
        self._workflow_runs: dict[str, RunRef] = {}  # created when something under them starts
        self._cached_from: dict[str, str] = {}  # cached executor key -> the run it was cached from
        self._succeeded: list[tuple[str, str, str | None]] = []  # (key, digest, run id) not yet in the cache log
        # the scheduler's bookkeeping (see _loop)
        self._waiting: dict[str, int] = {}  # pending key -> how many of its selected deps are not done
        self._dependents: dict[str, list[str]] = {}
        self._ready: list[int] = []  # plan positions of ready tasks: they start in plan order
        self._position = {task.key: i for i, task in enumerate(self.tasks)}
        self._unsettled = self._running = 0
        self._released: set[str] = set()  # tasks whose dependents were told
        self.extra_tags = dict(tags or {})
        self.configure = configure
        self._started_with: dict[str, tuple[bytes | None, dict[str, str]]] = {}  # code and input digests
        self._git: dict[str, str] = {}  # the app folder's git commit and dirty flag as the run starts
        self._usage: dict[str, Usage] = {}
        self._logs: set[LogWriter] = set()  # open executor logs, flushed by the run's thread
        self.keep_serving = keep_serving
        self.services: dict[str, str] = {}  # key -> url of each service answering its health check
        self._stopping: dict[str, float] = {}  # service key -> when the engine asked it to stop
        self._end_serving = threading.Event()

    # -- public ------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the run to stop: running attempts are killed, nothing new starts."""
        self.cancelled.set()

    def stop(self) -> None:
        """End the run: once nothing but services is left, stop them cleanly; before that, cancel."""
        if {ev.PENDING, ev.RUNNING} & set(self.states.values()):
            self.cancel()
        self._end_serving.set()

    def execute(self) -> RunResult:
        self._preflight()
        place = (str(self.app.path), self.root.name)
        ACTIVE[place] = self
        try:
            return self._execute()
        finally:
            if ACTIVE.get(place) is self:
                del ACTIVE[place]

    def _execute(self) -> RunResult:
        self._git = git_state(self.app.path)
        started = self._run_started = time.time()
        interrupted: BaseException | None = None
        try:
            tracking = self.app.tracking(self.root.name)
            self._open_tracking(tracking)  # in the background, while the back end gets ready
            tracking = self.backend.open(self.app.path, self.root.name, tracking)
            self.tracking = replace(tracking, uri=self.writer.uri)  # the kernel keeps writing where it started
            self._emit(ev.RunEvent(ev.RUN_STARTED, self.root.name))
            try:
                self._loop()
            except KeyboardInterrupt as exc:
                interrupted = exc
            if interrupted is not None or self.cancelled.is_set():
                self._stop_everything()
            result = self._finish(started, interrupted is not None or self.cancelled.is_set())
        except BaseException as exc:
            self._stop_everything()
            try:
                self._close_writer()
            except Exception as close_error:  # the run's own error is the one to raise
                log.warning("could not finish the MLflow writes of %r: %s", self.root.name, close_error)
            root = self._workflow_runs.get(self.root.name)
            self._emit(
                ev.RunEvent(
                    ev.RUN_FINISHED,
                    self.root.name,
                    run_id=root.id_now if root is not None else None,
                    duration=time.time() - started,
                    error=f"{type(exc).__name__}: {exc}",
                )
            )
            raise
        finally:
            self.backend.close()
        self._emit(
            ev.RunEvent(
                ev.RUN_FINISHED,
                self.root.name,
                run_id=result.run_id,
                duration=result.duration,
                error=None if result.ok else result.status,
            )
        )
        if interrupted is not None:
            raise interrupted
        return result

    # -- before anything starts --------------------------------------------------------------
    def _preflight(self) -> None:
        """Every problem that can be known before starting is reported before starting."""
        chosen = [t for t in self.tasks if t.key in self.selected]
        asked = self.cpus is not None or any(t.resources for t in chosen)
        self.admission = Admission(self.backend.nodes() if asked else [], self.cpus)
        for task in chosen:
            self.admission.check(task.key, task.resources, self._copies(task))
        for task in self.tasks:
            if task.key not in self.selected:
                continue
            ex = task.executor
            script = self.workspace.script(task.workflow, ex)
            if script is None and not ex.model and not self.backend.runs_images:
                raise RunError(f"executor {task.key!r} has no Python file or code: it can only run in a container")
            if ex.service and not callable(getattr(self.backend, "serve", None)):
                raise RunError(f"executor {task.key!r} is a service: the {self.backend.name} back end cannot run one")
            if script is not None and not script.is_file():
                raise NotFoundError(f"executor {task.key!r}: file {script} does not exist")
            unset = [name for name in ex.passed_env() if name not in os.environ]
            if unset:
                raise RunError(
                    f"executor {task.key!r} is passed {', '.join(unset)} by name, "
                    "but the kernel's environment does not have it: set it (os.environ) and run again"
                )
            self._requirements[task.key] = self.workspace.requirements_text(ex)
            self._scripts[task.key] = script
        self._cache = self.workspace.cache()

    def _open_tracking(self, tracking: Tracking) -> None:
        """Start the run's MLflow writer: it opens the store in its own thread."""
        self.experiment = self.app.experiment_name(self.root.name)
        self.writer = RunWriter(
            tracking.uri,
            self.experiment,
            {"scanflow.app": str(self.app.path), "scanflow.backend": self.backend.name},
            self.workspace.state_dir,
            report=lambda label, message: self._queue.put(("tracking", label, message)),
        )

    def _workflow_run(self, name: str) -> RunRef:
        """The MLflow run of workflow `name`, asked for (with its parents') the first time it is needed."""
        ref = self._workflow_runs.get(name)
        if ref is None:
            wf, parent = self.root.find(name), self.root.parent_of(name) if name != self.root.name else None
            tags = {"scanflow.workflow": name, "scanflow.parallel": str(wf.parallel).lower()}
            if parent is None:
                tags.update(self.extra_tags)
            parent_run = self._workflow_run(parent.name) if parent else None
            started = self._run_started if parent is None else None  # the root runs from the start
            ref = self._workflow_runs[name] = self.writer.start_run(name, "workflow", parent_run, tags, started=started)
        return ref

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        """Start tasks as they become ready; the bookkeeping costs the same per task at any size."""
        self._flushed = time.monotonic()
        for i, task in enumerate(self.tasks):
            if task.key not in self.selected:
                self._record(task, ev.SKIPPED, error="not selected")
                continue
            self.states[task.key] = ev.PENDING
            self._unsettled += 1
            waits = [d for d in task.deps if d in self.selected]
            self._waiting[task.key] = len(waits)
            for dep in waits:
                self._dependents.setdefault(dep, []).append(task.key)
            if not waits:
                self._ready.append(i)
        heapq.heapify(self._ready)
        while True:
            if self.cancelled.is_set():
                return
            if self.writer.fatal:
                raise TrackerError(self.writer.fatal)
            self._schedule()
            if self._unsettled == len(self.services):  # nothing is pending or running: services only
                if not self.services:
                    return
                if not self.keep_serving or self._end_serving.is_set():
                    self._stop_services(list(self.services))  # the rest of the run is over
            try:
                message = self._queue.get(timeout=0.2)
            except queue.Empty:
                self._flush_logs()
                continue
            with self.writer.held():  # an executor's end and the next one's start: its run first
                self._handle(message)
                if not self.cancelled.is_set():
                    self._schedule()
            self._remember()  # once the next executors are on their way
            if time.monotonic() - self._flushed > 0.2:
                self._flush_logs()

    def _remember(self) -> None:
        """Append the executors that succeeded since the last call to the cache log."""
        while self._succeeded:
            self.workspace.remember(*self._succeeded.pop(0))

    def _flush_logs(self) -> None:
        """Logs are buffered for speed; a few times a second they reach the disk, so they can be followed."""
        with self._lock:
            logs = list(self._logs)
        for log in logs:
            log.flush()
        self._flushed = time.monotonic()

    def _schedule(self) -> None:
        """Start ready tasks in plan order while workers are free and their resources fit what is free."""
        waiting = []  # ready, but their resources do not fit now
        while self._ready and self._running < self.max_workers:
            position = heapq.heappop(self._ready)
            task = self.tasks[position]
            if self.states[task.key] != ev.PENDING:
                continue
            if not self.admission.fits(self._holds(task)):
                waiting.append(position)
            elif self._start(task):
                self._running += 1
        if waiting and not self._running:  # only serving services hold resources, and they hold them to the end
            held = "; ".join(f"{key}: {self.admission.held[key][0].describe()}" for key in self.services)
            for task in (self.tasks[position] for position in waiting):
                error = f"needs {self._holds(task).describe()}, but the run's services hold that to the end ({held})"
                self._record(task, ev.FAILED, error=error)
            return
        for position in waiting:
            heapq.heappush(self._ready, position)

    def _copies(self, task: Task) -> int:
        """How many copies of a task run at once: a service's replicas, where the back end runs them all."""
        return task.executor.replicas if task.executor.service and getattr(self.backend, "runs_replicas", False) else 1

    def _holds(self, task: Task) -> Resources:
        """What a task holds while it runs: its resources, once for each copy."""
        return task.resources.times(self._copies(task))

    def _settled(self, key: str, state: str) -> None:
        """Task `key` reached a final state: its dependents get ready, or are skipped if it did not succeed."""
        self._unsettled -= 1
        self._release(key, state)

    def _release(self, key: str, state: str) -> None:
        """Task `key` is done with (or serving): its dependents get ready, or are skipped if it failed.

        A service's dependents are released when it starts serving, not again when it stops; those
        still pending are skipped if it fails later.
        """
        failed = state in (ev.FAILED, ev.SKIPPED)
        if self.cancelled.is_set() or (key in self._released and not failed):  # after a cancel: interrupted
            return
        self._released.add(key)
        for dependent in self._dependents.get(key, ()):
            if self.states[dependent] != ev.PENDING:
                continue
            if failed:
                self._record(self._by_key[dependent], ev.SKIPPED, error=f"upstream {key} {state}")
                continue
            self._waiting[dependent] -= 1
            if not self._waiting[dependent]:
                heapq.heappush(self._ready, self._position[dependent])

    def _cache_key(self, task: Task) -> tuple[str, dict[str, str]]:
        """The task's cache key and its inputs' digests; files are hashed only if they changed since last time."""
        ex, script = task.executor, self._scripts[task.key]
        if ex.file:
            code = self._files.digest(script)
        else:
            code = hashlib.sha256((ex.code or "").encode()).hexdigest()
        if ex.dockerfile:
            code += self._files.digest(self.app.path / ex.dockerfile)
        inputs = {path: self._files.digest(self.app.path / path) for path in ex.inputs}
        return cache_key(ex, code, self._requirements[task.key], inputs, self.backend.name), inputs

    def _start(self, task: Task) -> bool:
        """Start a task, or record it as cached. Returns True if an attempt is now running."""
        if self.configure is not None:
            task.executor = self.configure(task)
        ex = task.executor
        key, inputs = self._cache_key(task)
        self._digests[task.key] = key
        previous = self._cache.get(task.key)
        unchanged = not ex.service and not self.force and previous and previous.get("digest") == key
        if unchanged and all((self.app.path / p).exists() for p in ex.outputs):
            self._cached_from[task.key] = previous.get("run_id") or ""
            self._record(task, ev.CACHED, run_id=previous.get("run_id") or None, duration=0.0)
            return False
        ref = self._runs[task.key] = self.writer.start_run(
            ex.name,
            "executor",
            self._workflow_run(task.workflow),
            {"scanflow.workflow": task.workflow, "scanflow.key": task.key},
            ex.parameters,
            label=task.key,
        )
        script = self._scripts[task.key]
        self._started_with[task.key] = (
            (script.read_bytes() if ex.file else (ex.code or "").encode()) if script is not None else None,
            inputs,
        )
        self.states[task.key] = ev.RUNNING
        self._started[task.key] = time.time()
        self.results[task.key] = ExecutorResult(
            task.key, task.workflow, ex.name, ev.RUNNING, log_path=str(self.workspace.log_path(task.key))
        )
        launch = Launch(
            task.key,
            task.workflow,
            ex,
            self.app.path,
            script,
            ex.command_args(),
            self._executor_env(task),  # its worker adds the run ids once its MLflow run exists
            attempt=1,
            resources=task.resources,
            gpus=self.admission.take(task.key, self._holds(task)),
        )
        target = self._serve if ex.service else self._attempts
        worker = threading.Thread(target=target, args=(task, ref, launch), daemon=True, name=f"scanflow-{task.key}")
        self._workers.append(worker)
        self._emit(ev.RunEvent(ev.STARTED, self.root.name, task.key, run_id=ref.id_now))
        worker.start()
        return True

    def _executor_env(self, task: Task) -> dict[str, str]:
        """The environment an executor's attempts (or its service) get, but for its MLflow run ids."""
        return {
            **thread_env(task.resources),
            **{name: os.environ.get(name, "") if value is None else value for name, value in task.executor.env.items()},
            "PYTHONUNBUFFERED": "1",
            "MLFLOW_TRACKING_URI": self.tracking.executor_uri,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "SCANFLOW_APP_DIR": str(self.app.path),
            "SCANFLOW_WORKFLOW": task.workflow,
            "SCANFLOW_EXECUTOR": task.executor.name,
            "SCANFLOW_EXPERIMENT": self.experiment,
            **{service_variable(k): url for k, url in self.services.items()},
        }

    def _with_run(self, task: Task, ref: RunRef, launch: Launch) -> Launch:
        """`launch` with its MLflow run's ids (see `_run_ids`)."""
        return replace(launch, env={**launch.env, **self._run_ids(task, ref)()})

    def _run_ids(self, task: Task, ref: RunRef) -> Callable[[], dict[str, str]]:
        """What gives an executor's attempts their MLflow run's ids: on a worker thread, it waits for
        the run to exist (TrackerError if it cannot be created); asked again, it answers at once."""
        ids: dict[str, str] = {}

        def run_ids() -> dict[str, str]:
            if not ids:
                ids.update(
                    MLFLOW_RUN_ID=ref.id,
                    MLFLOW_EXPERIMENT_ID=self.writer.experiment_id,
                    SCANFLOW_RUN_ID=self._workflow_runs[self.root.name].id,
                )
                self._started[task.key] = time.time()  # its duration leaves out the wait for the store
            return ids

        return run_ids

    # -- worker threads: attempts of one executor ----------------------------------------------
    def _attempts(self, task: Task, ref: RunRef, launch: Launch) -> None:
        """Run an executor's attempts. A back end with `late_env` starts the first one while its
        MLflow run is created; its code starts once the run exists."""
        ex, post = task.executor, self._queue.put
        log_path = self.workspace.log_path(task.key)
        attempt, code, error, log = 0, None, None, None
        try:
            if getattr(self.backend, "late_env", False):
                launch = replace(launch, late_env=self._run_ids(task, ref))
            else:
                launch = self._with_run(task, ref, launch)
        except ScanflowError as exc:
            post(("done", task.key, ev.FAILED, 0, None, f"not started: {exc}"))
            return
        try:
            with LogWriter(log_path, self.output) as log:
                with self._lock:
                    self._logs.add(log)
                for attempt in range(1, ex.retries + 2):
                    if self.cancelled.is_set():
                        error = "interrupted"
                        break
                    if attempt > 1:
                        log.write(f"--- attempt {attempt} of {ex.retries + 1} ---")
                        post(("retrying", task.key, attempt, error))
                    code, error = self._one_attempt(replace(launch, attempt=attempt), ex.timeout, log)
                    if code == 0 and error is None:
                        break
        except TrackerError as exc:  # its MLflow run could not be created (a late_env back end)
            log_path.unlink(missing_ok=True)  # opened for the first attempt, empty: nothing ran
            post(("done", task.key, ev.FAILED, 0, None, f"not started: {exc}"))
            return
        except Exception as exc:  # never let a worker die silently
            code, error = None, f"internal error: {type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._logs.discard(log)
        if self.cancelled.is_set() and not (code == 0 and error is None):
            error = "interrupted"
        post(("done", task.key, ev.SUCCEEDED if code == 0 and error is None else ev.FAILED, attempt, code, error))

    def _begin(self, start, launch: Launch, log: LogWriter):
        """Start an attempt or a service with `start(launch)` and keep its handle: (handle, None) or (None, why)."""
        try:
            handle = start(launch)
        except TrackerError:  # no MLflow run to give it: not an attempt that failed
            raise
        except ScanflowError as exc:
            log.write(str(exc))
            return None, str(exc)
        with self._lock:
            self._handles[launch.key] = handle
        return handle, None

    def _one_attempt(self, launch: Launch, timeout: float | None, log: LogWriter) -> tuple[int | None, str | None]:
        key = launch.key
        handle, failed = self._begin(self.backend.launch, launch, log)
        if handle is None:
            return None, failed
        if self.cancelled.is_set():
            handle.kill()

        reader = self._reader(key, handle, log)
        error = None
        try:
            code = handle.wait(timeout)
        except TimeoutError:
            handle.kill()
            code, error = None, f"timed out after {timeout:g} s"
        except ScanflowError as exc:  # the back end says it can never run (e.g. no node has room)
            handle.kill()
            code, error = None, str(exc)
        reader.join(10)
        with self._lock:
            self._handles.pop(key, None)
        usage = self._measure(handle, key)
        if usage.out_of_memory:
            limit = launch.resources.memory
            error = f"out of memory (limit {format_bytes(limit)})" if limit else "out of memory"
        if error is None and code != 0:
            error = f"exit code {code}"
        return code, error

    def _measure(self, handle, key: str) -> Usage:
        """What the attempt used, added to the executor's earlier attempts (kept until it is done)."""
        try:
            usage = handle.usage()
        except Exception as exc:  # measuring must not fail the attempt
            log.warning("could not measure %s: %s", key, exc)
            usage = Usage()
        self._usage[key] = self._usage.get(key, Usage()).add(usage)
        return usage

    def _reader(self, key: str, handle, log: LogWriter) -> threading.Thread:
        """A thread copying the handle's output to the log and, what the throttle lets through, to the
        listeners (memory stays flat)."""

        def pump() -> None:
            throttle = Throttle(self.output, log.path)
            try:
                for line in handle.lines():
                    log.write(line)
                    for shown in throttle.admit(line):
                        self._queue.put(("line", key, shown))
            except Exception as exc:
                log.write(f"[scanflow] output stream broke: {exc}")
                self._queue.put(("line", key, f"[scanflow] output stream broke: {exc}"))
            for shown in throttle.end():
                self._queue.put(("line", key, shown))

        reader = threading.Thread(target=pump, daemon=True, name=f"scanflow-log-{key}")
        reader.start()
        return reader

    # -- worker threads: services ---------------------------------------------------------------
    def _serve(self, task: Task, ref: RunRef, launch: Launch) -> None:
        """Start a service, wait for its health check, and keep it until the engine stops it."""
        key, ex, post = task.key, task.executor, self._queue.put
        code, error, log = None, None, None
        try:
            launch = self._with_run(task, ref, launch)  # the service's own run nests under this one
        except ScanflowError as exc:
            post(("done", key, ev.FAILED, 0, None, f"not started: {exc}"))
            return
        try:
            with LogWriter(self.workspace.log_path(key), self.output) as log:
                with self._lock:
                    self._logs.add(log)
                code, error = self._service_life(key, ex, launch, log)
        except Exception as exc:  # never let a worker die silently
            error = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._logs.discard(log)
        post(("done", key, ev.FAILED if error else ev.SUCCEEDED, 1, code, error))

    def _service_life(self, key: str, ex, launch: Launch, log: LogWriter) -> tuple[int | None, str | None]:
        handle, failed = self._begin(self.backend.serve, launch, log)
        if handle is None:
            return None, failed
        reader = self._reader(key, handle, log)
        deadline = time.monotonic() + (ex.timeout or SERVICE_START_TIMEOUT)
        try:
            while not handle.healthy():
                if self.cancelled.is_set() or key in self._stopping:
                    return self._wait_stopped(key, handle), "interrupted"
                if time.monotonic() > deadline:
                    handle.kill()
                    return (
                        None,
                        f"not healthy within {ex.timeout or SERVICE_START_TIMEOUT:g} s ({handle.url}{ex.health})",
                    )
                try:
                    code = handle.wait(0.5)
                    return code, f"exited with code {code} before answering {ex.health}"
                except TimeoutError:
                    pass
            self._queue.put(("serving", key, handle.url, handle.endpoint))
            code = self._wait_stopped(key, handle)
            asked = key in self._stopping or self.cancelled.is_set()
            return code, None if asked else f"exited with code {code} while serving"
        finally:
            reader.join(10)
            with self._lock:
                self._handles.pop(key, None)

    def _wait_stopped(self, key: str, handle) -> int:
        """Wait until the service ends; once the engine asked it to stop, kill it after SERVICE_STOP_GRACE s."""
        while True:
            try:
                return handle.wait(1.0)
            except TimeoutError:
                asked = self._stopping.get(key)
                if asked is not None and time.monotonic() - asked > SERVICE_STOP_GRACE:
                    handle.kill()

    def _stop_services(self, keys) -> None:
        """Ask services to stop cleanly (once each); their workers report when they have."""
        with self._lock:
            handles = {key: self._handles.get(key) for key in keys if key not in self._stopping}
        for key, handle in handles.items():
            self._stopping[key] = time.monotonic()
            if handle is not None:
                try:
                    handle.stop()
                except Exception as exc:  # its worker kills it after the grace period
                    log.warning("could not ask service %s to stop: %s", key, exc)

    # -- messages from workers (on the run's own thread) --------------------------------------
    def _handle(self, message: tuple) -> None:
        kind, key = message[0], message[1]
        if kind == "line":
            self._emit(ev.RunEvent(ev.LINE, self.root.name, key, line=message[2]))
        elif kind == "serving":
            _, _, url, endpoint = message
            self.states[key] = ev.SERVING
            self.services[key] = url
            self._running -= 1  # a serving service holds no worker
            self._emit(ev.RunEvent(ev.SERVING, self.root.name, key, url=endpoint or url, run_id=self._runs[key].id_now))
            self._release(key, ev.SERVING)  # its dependents start now
        elif kind == "retrying":
            self._emit(ev.RunEvent(ev.RETRYING, self.root.name, key, attempt=message[2], error=message[3]))
        elif kind == "tracking":  # from the writer's thread: a failed MLflow write, or a repair
            known = key if key in self._by_key else None
            self._emit(
                ev.RunEvent(ev.TRACKING, self.root.name, known, error=message[2] if known else f"{key}: {message[2]}")
            )
        elif kind == "done":
            _, _, state, attempts, code, error = message
            ref, was_serving = self._runs[key], self.services.pop(key, None) is not None
            if not was_serving:  # a service gave its worker back when it started serving
                self._running -= 1
            duration = time.time() - self._started[key]
            self.admission.release(key)
            usage = self._usage.pop(key, Usage())
            metrics = {"duration_s": duration, "attempts": attempts, **usage.metrics()}
            if code is not None:
                metrics["exit_code"] = code
            tags = {"scanflow.error": error} if error else None
            self.writer.finish(
                ref, state, metrics, tags, logs=[self.workspace.log_path(key)], later=self._provenance(key)
            )
            if state == ev.SUCCEEDED:
                self._succeeded.append((key, self._digests[key], ref.id_now))
            self._record(
                self._by_key[key],
                state,
                attempts=attempts,
                exit_code=code,
                duration=duration,
                run_id=ref.id_now,
                error=error,
                peak_rss_mb=usage.peak_rss_mb,
                cpu_s=usage.cpu_s,
            )

    def _provenance(self, key: str) -> Callable[[], Provenance]:
        """What the executor run was made of (see track.provenance): the facts are taken now (outputs
        as they are when it ended, before anything downstream starts), the record is written by the
        MLflow writer's thread."""
        task = self._by_key[key]
        ex = task.executor
        code, inputs = self._started_with.pop(key)
        describe = getattr(self.backend, "environment", None)
        facts = {
            "parameters": ex.parameters,
            "args": ex.command_args(),
            "code_path": code_path(task.workflow, ex),
            "code": code,
            "requirements": self._requirements[key],
            "inputs": inputs,
            "outputs": {path: self._files.digest(self.app.path / path) for path in ex.outputs},
            "backend": self.backend.name,
            "environment": describe(key) if describe else {},
            "git": self._git,
        }
        return partial(executor_provenance, self.workspace.state_dir, key, **facts)

    def _record(self, task: Task, state: str, **fields: Any) -> None:
        was = self.states.get(task.key)
        self.states[task.key] = state
        fields.setdefault("log_path", str(self.workspace.log_path(task.key)) if state not in (ev.SKIPPED,) else None)
        self.results[task.key] = ExecutorResult(task.key, task.workflow, task.executor.name, state, **fields)
        r = self.results[task.key]
        self._emit(
            ev.RunEvent(
                state,
                self.root.name,
                task.key,
                attempt=r.attempts,
                duration=r.duration,
                exit_code=r.exit_code,
                error=r.error,
                run_id=r.run_id,
            )
        )
        if was in (ev.PENDING, ev.RUNNING, ev.SERVING) and state in ev.FINAL_STATES:
            self._settled(task.key, state)

    def _emit(self, event: ev.RunEvent) -> None:
        for listener in self.listeners:
            if id(listener) in self._broken_listeners:
                continue
            try:
                listener(event)
            except Exception as exc:  # a broken display must not break the run
                self._broken_listeners.add(id(listener))
                print(f"[scanflow] listener {listener!r} failed and was detached: {exc}")

    # -- the end ------------------------------------------------------------------------------
    def _stop_everything(self) -> None:
        """Kill every running attempt and wait (bounded) for the workers to notice."""
        self.cancelled.set()
        with self._lock:
            handles = {key: h for key, h in self._handles.items() if not hasattr(h, "healthy")}
            services = [key for key, h in self._handles.items() if hasattr(h, "healthy")]
        self._stop_services(services)  # a service flushes what it holds; its worker kills it if it lingers
        for handle in handles.values():
            try:
                handle.kill()
            except Exception as exc:  # keep stopping the others
                log.warning("could not stop an attempt of %r: %s", self.root.name, exc)
        deadline = time.monotonic() + 15 + (SERVICE_STOP_GRACE if services else 0)
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        while True:  # record what the workers reported while stopping
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                break
            if message[0] in ("done", "tracking") and self.writer is not None:
                self._handle(message)

    def _finish(self, started: float, interrupted: bool) -> RunResult:
        for task in self.tasks:
            state = self.states.get(task.key)
            if state in (ev.RUNNING, ev.SERVING):
                self.writer.finish(self._runs[task.key], ev.FAILED, tags={"scanflow.error": "interrupted"})
                self._record(task, ev.FAILED, run_id=self._runs[task.key].id_now, error="interrupted")
            elif state == ev.PENDING:
                self._record(task, ev.SKIPPED, error="interrupted")
        self._workflow_run(self.root.name)  # created only now if nothing ran: with its outcome, in two writes
        states: dict[str, list[str]] = {}
        for task in self.tasks:
            for name in task.lineage:
                states.setdefault(name, []).append(self.states[task.key])
        for name, ref in self._workflow_runs.items():
            mine = states.get(name, [])
            state = (
                ev.FAILED if ev.FAILED in mine else ev.SKIPPED if all(s == ev.SKIPPED for s in mine) else ev.SUCCEEDED
            )
            if name == self.root.name and interrupted:
                state = "interrupted"
            if name != self.root.name:
                self.writer.finish(ref, state)
                continue
            cached = {f"scanflow.cached.{key}": run for key, run in self._cached_from.items()}
            record = partial(
                workflow_provenance,
                self.workspace.state_dir,
                self.root.name,
                self.app.root_of(self.root.name).to_dict(),
                self._git,
            )
            self.writer.finish(ref, state, tags=cached, later=record)
        failures = self._close_writer()
        if self.writer.fatal:
            raise TrackerError(self.writer.fatal)
        status = "interrupted" if interrupted else ev.FAILED if ev.FAILED in self.states.values() else ev.SUCCEEDED
        for key, ref in self._runs.items():
            self.results[key].run_id = ref.id_now
        result = RunResult(
            self.root.name,
            status,
            self.backend.name,
            self._workflow_runs[self.root.name].id_now,
            self.tracking.uri,
            self.experiment,
            started,
            time.time() - started,
            {t.key: self.results[t.key] for t in self.tasks},
            tracking_errors=failures,
        )
        self.workspace.save_result(result)
        return result

    def _close_writer(self) -> list[str]:
        """Wait for every MLflow write (runs left open are closed FAILED); report what failed.

        Also keeps what this run learnt for the next one: the cache entries and the file digests.
        """
        self._remember()
        failures: list[str] = []
        if self.writer is not None:
            failures = self.writer.close()
            while True:  # failures reported while closing reach the listeners too
                try:
                    message = self._queue.get_nowait()
                except queue.Empty:
                    break
                if message[0] == "tracking":
                    self._handle(message)
        self.workspace.fold_cache()
        self._files.save()
        return failures


class RunHandle:
    """A run going on in a background thread (`App.run(..., background=True)`)."""

    def __init__(self, run: Run):
        self._run = run
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._target, daemon=True, name=f"scanflow-run-{run.root.name}")
        self._thread.start()

    def _target(self) -> None:
        try:
            self._result = self._run.execute()
        except BaseException as exc:
            self._error = exc
            print(f"[scanflow] background run of {self._run.root.name!r} failed: {exc}")

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    @property
    def states(self) -> dict[str, str]:
        """Each executor's state now ("workflow/executor" -> pending, running, serving, succeeded...)."""
        return dict(self._run.states)

    def wait_for(self, executor: str, state: str = ev.SERVING, timeout: float = 300.0) -> RunHandle:
        """Wait until `executor` ("name" or "workflow/name") is in `state` (a service: "serving"); a ScanflowError
        if it settles in another state, the run ends first, or `timeout` s pass."""
        executor = resolve(sorted(self._run.selected), executor)
        deadline = time.monotonic() + timeout
        while (now := self._run.states.get(executor)) != state:
            if now in ev.FINAL_STATES or (self.done and now is not None):
                raise ScanflowError(f"{executor} is {now}, and will not be {state}")
            if self.done:
                raise ScanflowError(f"run of {self._run.root.name!r} ended before {executor} was {state}")
            if time.monotonic() > deadline:
                raise ScanflowError(f"{executor} is still {now or 'not started'} after {timeout:g} s (not {state})")
            time.sleep(0.1)
        return self

    def __repr__(self) -> str:
        if not self.done:
            return f"<run of {self._run.root.name!r}: running; .result() waits for it, .cancel() stops it>"
        outcome = self._result.status if self._result else f"error: {self._error}"
        return f"<run of {self._run.root.name!r}: {outcome}>"

    def cancel(self) -> None:
        self._run.cancel()

    def result(self, timeout: float | None = None) -> RunResult:
        """The run's result, waiting up to `timeout` seconds; raises what the run raised."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"run of {self._run.root.name!r} still going after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._result
