"""The run engine shared by every back end.

It flattens the workflow into tasks (`schedule.plan`), starts each task when what it waits for
has succeeded, bounded by `max_workers`, retries and times out attempts, skips cached executors,
writes the MLflow run tree, keeps a log per executor and sends events to listeners. Back ends
only start attempts (`Backend.launch`). Worker threads never touch MLflow or listeners: they post
messages to a queue that the run's own thread drains, so listeners run on one thread, in order.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import events as ev
from ..errors import NotFoundError, RunError, ScanflowError
from ..files import digest
from ..resources import Usage, format_bytes, parse_cpus, thread_env
from ..schedule import Task, cache_key, plan, select
from ..sources import code_path
from ..spec import Executor
from ..track.provenance import Provenance, executor_provenance, git_state, workflow_provenance
from ..track.runs import RunTree
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
        self._requirements: dict[str, str] = {}
        self._cache: dict[str, dict[str, str]] = {}
        self._started: dict[str, float] = {}
        self._digests: dict[str, str] = {}
        self._workers: list[threading.Thread] = []
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
        started = time.time()
        tracking: Tracking | None = None
        interrupted: BaseException | None = None
        self.tree = None
        self.workflow_runs: dict[str, str] = {}
        try:
            tracking = self.backend.open(self.app.path, self.root.name, self.app.tracking(self.root.name))
            self._open_tracking(tracking)
            self._emit(ev.RunEvent(ev.RUN_STARTED, self.root.name, run_id=self.workflow_runs[self.root.name]))
            try:
                self._loop()
            except KeyboardInterrupt as exc:
                interrupted = exc
            if interrupted is not None or self.cancelled.is_set():
                self._stop_everything()
            result = self._finish(started, tracking, interrupted is not None or self.cancelled.is_set())
        except BaseException as exc:
            self._stop_everything()
            self._close_open_runs()
            self._emit(
                ev.RunEvent(
                    ev.RUN_FINISHED,
                    self.root.name,
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
            self.admission.check(task.key, task.resources)
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
        from ..track import experiment_id, get_client

        self.tracking = tracking
        client = get_client(tracking.uri)
        experiment = self.app.experiment_name(self.root.name)
        self.experiment, self.experiment_id = experiment, experiment_id(client, experiment)
        self.tree = RunTree(
            client, self.experiment_id, {"scanflow.app": str(self.app.path), "scanflow.backend": self.backend.name}
        )
        for wf in self.root.walk():
            parent = self.root.parent_of(wf.name) if wf is not self.root else None
            tags = {"scanflow.workflow": wf.name, "scanflow.parallel": str(wf.parallel).lower()}
            if wf is self.root:
                tags.update(self.extra_tags)
            self.workflow_runs[wf.name] = self.tree.start(
                wf.name, "workflow", self.workflow_runs.get(parent.name) if parent else None, tags
            )

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        self._flushed = time.monotonic()
        for task in self.tasks:
            if task.key in self.selected:
                self.states[task.key] = ev.PENDING
            else:
                self._record(task, ev.SKIPPED, error="not selected")
        while True:
            if self.cancelled.is_set():
                return
            self._schedule()
            if not {ev.PENDING, ev.RUNNING} & set(self.states.values()):
                serving = [key for key, state in self.states.items() if state == ev.SERVING]
                if not serving:
                    return
                if not self.keep_serving or self._end_serving.is_set():
                    self._stop_services(serving)  # the rest of the run is over
            try:
                message = self._queue.get(timeout=0.2)
            except queue.Empty:
                self._flush_logs()
                continue
            self._handle(message)
            if time.monotonic() - self._flushed > 0.2:
                self._flush_logs()

    def _flush_logs(self) -> None:
        """Logs are buffered for speed; a few times a second they reach the disk, so they can be followed."""
        with self._lock:
            logs = list(self._logs)
        for log in logs:
            log.flush()
        self._flushed = time.monotonic()

    def _schedule(self) -> None:
        running = sum(state == ev.RUNNING for state in self.states.values())
        for task in self.tasks:
            if self.states.get(task.key) != ev.PENDING:
                continue
            waits = [d for d in task.deps if d in self.selected]
            blocked = next((d for d in waits if self.states[d] in (ev.FAILED, ev.SKIPPED)), None)
            if blocked is not None:
                self._record(task, ev.SKIPPED, error=f"upstream {blocked} {self.states[blocked]}")
                continue
            done = (ev.SUCCEEDED, ev.CACHED, ev.SERVING)
            ready = (
                running < self.max_workers
                and all(self.states[d] in done for d in waits)
                and self.admission.fits(task.resources)
            )
            if ready and self._start(task):
                running += 1

    def _start(self, task: Task) -> bool:
        """Start a task, or record it as cached. Returns True if an attempt is now running."""
        if self.configure is not None:
            task.executor = self.configure(task)
        ex = task.executor
        script = self._scripts[task.key]
        code = script.read_bytes() if script is not None else (ex.dockerfile or ex.image or "").encode()
        inputs = {path: digest(self.app.path / path) for path in ex.inputs}
        key = cache_key(ex, code, self._requirements[task.key], inputs, self.backend.name)
        self._digests[task.key] = key
        parent = self.workflow_runs[task.workflow]
        tags = {"scanflow.workflow": task.workflow, "scanflow.key": task.key}
        previous = self._cache.get(task.key)
        outputs_there = all((self.app.path / p).exists() for p in ex.outputs)
        if not ex.service and not self.force and previous and previous["digest"] == key and outputs_there:
            run_id = self.tree.start(
                ex.name, "executor", parent, {**tags, "scanflow.cached_from": previous["run_id"]}, ex.parameters
            )
            self.tree.finish(run_id, ev.CACHED)
            self._record(task, ev.CACHED, run_id=run_id, duration=0.0)
            return False
        run_id = self.tree.start(ex.name, "executor", parent, tags, ex.parameters)
        self._started_with[task.key] = (code if script is not None else None, inputs)
        self.states[task.key] = ev.RUNNING
        self._started[task.key] = time.time()
        self.results[task.key] = ExecutorResult(
            task.key, task.workflow, ex.name, ev.RUNNING, run_id=run_id, log_path=str(self.workspace.log_path(task.key))
        )
        launch = Launch(
            task.key,
            task.workflow,
            ex,
            self.app.path,
            script,
            ex.command_args(),
            self._executor_env(task, run_id),
            attempt=1,
            resources=task.resources,
            gpus=self.admission.take(task.key, task.resources),
        )
        target = self._serve if ex.service else self._attempts
        worker = threading.Thread(target=target, args=(task, launch), daemon=True, name=f"scanflow-{task.key}")
        self._workers.append(worker)
        self._emit(ev.RunEvent(ev.STARTED, self.root.name, task.key, run_id=run_id))
        worker.start()
        return True

    def _executor_env(self, task: Task, run_id: str) -> dict[str, str]:
        return {
            **thread_env(task.resources),
            **{name: os.environ.get(name, "") if value is None else value for name, value in task.executor.env.items()},
            "PYTHONUNBUFFERED": "1",
            "MLFLOW_TRACKING_URI": self.tracking.executor_uri,
            "MLFLOW_RUN_ID": run_id,
            "MLFLOW_EXPERIMENT_ID": self.experiment_id,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "SCANFLOW_APP_DIR": str(self.app.path),
            "SCANFLOW_WORKFLOW": task.workflow,
            "SCANFLOW_EXECUTOR": task.executor.name,
            "SCANFLOW_RUN_ID": self.workflow_runs[self.root.name],
            "SCANFLOW_EXPERIMENT": self.experiment,
            **{service_variable(k): url for k, url in self.services.items()},
        }

    # -- worker threads: attempts of one executor ----------------------------------------------
    def _attempts(self, task: Task, launch: Launch) -> None:
        ex, post = task.executor, self._queue.put
        log_path = self.workspace.log_path(task.key)
        attempt, code, error, log = 0, None, None, None
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
    def _serve(self, task: Task, launch: Launch) -> None:
        """Start a service, wait for its health check, and keep it until the engine stops it."""
        key, ex, post = task.key, task.executor, self._queue.put
        code, error, log = None, None, None
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
            self._emit(
                ev.RunEvent(ev.SERVING, self.root.name, key, url=endpoint or url, run_id=self.results[key].run_id)
            )
        elif kind == "retrying":
            self._emit(ev.RunEvent(ev.RETRYING, self.root.name, key, attempt=message[2], error=message[3]))
        elif kind == "done":
            _, _, state, attempts, code, error = message
            self.services.pop(key, None)
            task = next(t for t in self.tasks if t.key == key)
            result = self.results[key]
            duration = time.time() - self._started[key]
            self.admission.release(key)
            usage = self._usage.pop(key, Usage())
            metrics = {"duration_s": duration, "attempts": attempts, **usage.metrics()}
            if code is not None:
                metrics["exit_code"] = code
            record = self._provenance(task)
            self.tree.finish(
                result.run_id,
                state,
                metrics,
                {**record.tags, **({"scanflow.error": error} if error else {})},
                artifacts=record.files,
                logs=[self.workspace.log_path(key)],
            )
            if state == ev.SUCCEEDED:
                self.workspace.remember(key, self._digests[key], result.run_id)
            self._record(
                task,
                state,
                attempts=attempts,
                exit_code=code,
                duration=duration,
                run_id=result.run_id,
                error=error,
                peak_rss_mb=usage.peak_rss_mb,
                cpu_s=usage.cpu_s,
            )

    def _provenance(self, task: Task) -> Provenance:
        """What the executor run was made of (see track.provenance), written once it ended."""
        ex = task.executor
        code, inputs = self._started_with.pop(task.key)
        describe = getattr(self.backend, "environment", None)
        return executor_provenance(
            self.workspace.state_dir,
            task.key,
            parameters=ex.parameters,
            args=ex.command_args(),
            code_path=code_path(task.workflow, ex),
            code=code,
            requirements=self._requirements[task.key],
            inputs=inputs,
            outputs=ex.outputs,
            app_dir=self.app.path,
            backend=self.backend.name,
            environment=describe(task.key) if describe else {},
            git=self._git,
        )

    def _record(self, task: Task, state: str, **fields: Any) -> None:
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
            if message[0] == "done" and self.tree is not None:
                self._handle(message)

    def _finish(self, started: float, tracking: Tracking, interrupted: bool) -> RunResult:
        for task in self.tasks:
            state = self.states.get(task.key)
            if state in (ev.RUNNING, ev.SERVING):
                run_id = self.results[task.key].run_id
                self.tree.finish(run_id, ev.FAILED, tags={"scanflow.error": "interrupted"})
                self._record(task, ev.FAILED, run_id=run_id, error="interrupted")
            elif state == ev.PENDING:
                self._record(task, ev.SKIPPED, error="interrupted")
        for wf in self.root.walk():
            mine = [self.states[t.key] for t in self.tasks if wf.name in t.lineage]
            state = (
                ev.FAILED if ev.FAILED in mine else ev.SKIPPED if all(s == ev.SKIPPED for s in mine) else ev.SUCCEEDED
            )
            if wf is self.root and interrupted:
                state = "interrupted"
            if wf is self.root:
                top = self.app.root_of(self.root.name)
                record = workflow_provenance(self.workspace.state_dir, wf.name, top.to_dict(), self._git)
                self.tree.finish(self.workflow_runs[wf.name], state, tags=record.tags, artifacts=record.files)
            else:
                self.tree.finish(self.workflow_runs[wf.name], state)
        self._close_open_runs()  # one an interrupt caught between its creation and its task's start
        status = "interrupted" if interrupted else ev.FAILED if ev.FAILED in self.states.values() else ev.SUCCEEDED
        result = RunResult(
            self.root.name,
            status,
            self.backend.name,
            self.workflow_runs[self.root.name],
            tracking.uri,
            self.experiment,
            started,
            time.time() - started,
            {t.key: self.results[t.key] for t in self.tasks},
        )
        self.workspace.save_result(result)
        return result

    def _close_open_runs(self) -> None:
        """After an unexpected error or an interrupt: leave no MLflow run marked as running."""
        if self.tree is None:
            return
        for run_id in list(self.tree.open):
            try:
                self.tree.client.set_terminated(run_id, "FAILED")
            except Exception as exc:  # the run's own error is the one to raise
                log.warning("could not close MLflow run %s: %s", run_id, exc)


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
