"""The MLflow run tree of a workflow run, written by one background thread per run.

The engine never waits for the store. It hands every write to a `RunWriter`, whose thread imports
MLflow and opens the store while the run gets ready, creates runs as soon as they are asked for (an
executor waits only for its own run's id, which its MLFLOW_RUN_ID needs), and merges everything else
a run gets (params, metrics, tags) into as few `log_batch` calls as possible before its artifacts and
its final status. `close()` returns once every write is done; a write that failed is reported
(`report`, and the list `close()` returns), never dropped silently.

This is the one door for the MLflow writes of a run; an area that adds to an executor's record
(provenance, resources, ...) calls the same methods on the engine's writer (`Run.writer`):

    ref = writer.start_run("train", "executor", parent=workflow_ref, tags={...}, params={...})
    writer.log(ref, params={...}, metrics={...}, tags={...})     # any time before close()
    writer.artifact(ref, path)                                   # a file, copied under scanflow/
    writer.finish(ref, "succeeded", metrics={...}, tags={...})   # the outcome; the run is closed
    writer.finish(ref, ..., logs=[log_path])  # files never rewritten in place: hard-linked where the
                                              # artifact store is a folder (`track.artifacts.attach`)
    writer.finish(ref, ..., later=record)   # record() -> object with .tags and .files, called on the
                                            # writer's thread: facts that cost file writes to record
    ref.id                                                       # waits until the run exists
    with writer.held(): ...  # a burst of asks: the thread starts on them once it ends, creations first

An engine that finishes one executor and starts the next in one burst holds the writer meanwhile,
so the next executor's run is created before the last one's record is written: what the next
executor waits for is one creation, not the other run's batch, artifacts and status.

Params, metrics and tags of a run that is still going wait up to `LINGER` seconds, so a short
executor costs one batch; each write keeps the time it was asked for (start and end times, metric
timestamps), whenever the store gets it.

A crash leaves runs RUNNING in MLflow. Each writer keeps a journal of the runs it created in the
state folder (`open-runs/`), locked while it lives and removed when they are all closed; the next
writer on the app marks the runs of a dead writer's journal FAILED (`recover`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import TrackerError
from ..events import CACHED, FAILED, SKIPPED, SUCCEEDED
from .artifacts import attach
from .lean import LeanWrites
from .store import experiment_id, get_client, log_values

try:
    import fcntl
except ImportError:  # no advisory locks (Windows): no crash journal
    fcntl = None

log = logging.getLogger(__name__)

MLFLOW_STATUS = {
    SUCCEEDED: "FINISHED",
    CACHED: "FINISHED",
    FAILED: "FAILED",
    SKIPPED: "KILLED",
    "interrupted": "KILLED",
}
LINGER = 1.0  # seconds a running run's params, metrics and tags may wait to share a batch
GIVE_UP_AFTER = 3  # failed writes in a row after which the store counts as gone for this run
# MLflow error codes of a store that answered but refused one write: they do not count towards giving up
REFUSALS = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "RESOURCE_ALREADY_EXISTS"}
CREATE_TAGS = 100  # at most this many tags asked for before a run exists go with its creation
JOURNALS = "open-runs"  # folder of the crash journals, in the state folder
CRASHED = "the process running it ended before it finished (crash or killed kernel)"


def _ms(seconds: float | None = None) -> int:
    return int((time.time() if seconds is None else seconds) * 1000)


class RunRef:
    """A run the writer was asked to create. `id` waits until it exists in MLflow."""

    def __init__(
        self, name: str, kind: str, label: str, parent: RunRef | None, tags: dict[str, str], started: float | None
    ):
        self.name, self.kind, self.label, self.parent, self.tags = name, kind, label, parent, tags
        self.start_ms = _ms(started)
        self.artifact_uri: str | None = None
        self.finished = False  # finish() was called
        self.closed = False  # its final status is written
        self._done = threading.Event()
        self._id: str | None = None
        self._error: str | None = None

    def __repr__(self) -> str:
        return f"<MLflow run {self.label!r}: {self._id or self._error or 'being created'}>"

    @property
    def id(self) -> str:
        """The MLflow run id; waits for the run's creation, raises TrackerError if it failed."""
        self._done.wait()
        if self._id is None:
            raise TrackerError(f"the MLflow run of {self.label} could not be created: {self._error}")
        return self._id

    @property
    def id_now(self) -> str | None:
        """The run id if the run exists already, else None; never waits."""
        return self._id

    def _resolve(self, run_id: str | None, error: str | None = None) -> None:
        self._id, self._error = run_id, error
        self._done.set()


@dataclass
class _Pending:
    """What a run still has to get: merged values, artifacts, its final status."""

    since: float = field(default_factory=time.monotonic)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    artifacts: list[tuple[Path, bool]] = field(default_factory=list)  # (file, may be hard-linked)
    later: list[Callable[[], Any]] = field(default_factory=list)
    logged_ms: int = 0
    status: str | None = None
    end_ms: int | None = None


class RunWriter:
    """One background thread that writes the MLflow runs of one engine run (see the module's doc).

    `report(label, message)` is called from the writer's thread for each failed write and for runs a
    crashed run left open; by default it logs a warning.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        common_tags: dict[str, str] | None = None,
        state_dir: Path | None = None,
        report: Callable[[str, str], None] | None = None,
    ):
        self.uri, self.experiment, self.common_tags = uri, experiment, dict(common_tags or {})
        self._report = report or (lambda label, message: log.warning("MLflow, %s: %s", label, message))
        self._journal = _Journal(Path(state_dir) / JOURNALS) if state_dir is not None and fcntl else None
        self._cv = threading.Condition()
        self._creates: deque[RunRef] = deque()
        self._pending: dict[RunRef, _Pending] = {}
        self._refs: list[RunRef] = []
        self._closing = False
        self._holds = 0
        self._opened = threading.Event()
        self._experiment_id: str | None = None
        self._fatal: str | None = None
        self._failures_in_a_row = 0
        self._skipped = 0  # writes not tried after the store gave up
        self.failures: list[str] = []
        self.client = None
        self._lean: LeanWrites | None = None  # one transaction per creation and per write-out (SQLite)
        self._thread = threading.Thread(target=self._main, daemon=True, name="scanflow-mlflow-writer")
        self._thread.start()

    # -- what the engine (and other areas) call; none of these waits for the store ---------------------
    def start_run(
        self,
        name: str,
        kind: str,
        parent: RunRef | None = None,
        tags: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        label: str | None = None,
        started: float | None = None,
    ) -> RunRef:
        """A new running run named `name` (`kind`: "workflow" or "executor"), nested under `parent`.

        `label` names it in failure reports (default: `name`); `started`: its start time if not now.
        """
        ref = RunRef(name, kind, label or name, parent, dict(tags or {}), started)
        with self._cv:
            self._check_open()
            self._refs.append(ref)
            self._creates.append(ref)
            if params:
                self._merge(ref, params=params)
            self._cv.notify()
        return ref

    def log(
        self,
        ref: RunRef,
        params: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
    ) -> None:
        """Params, metrics (at the time of this call) and tags for run `ref`."""
        with self._cv:
            self._check_open()
            self._merge(ref, params=params, metrics=metrics, tags=tags)
            self._cv.notify()

    def artifact(self, ref: RunRef, path: str | Path, link: bool = False) -> None:
        """Attach file `path` under the run's `scanflow/` artifacts (skipped if it does not exist then);
        `link`: the file is never rewritten in place, a local artifact store may hard-link it."""
        with self._cv:
            self._check_open()
            self._merge(ref, artifacts=[(Path(path), link)])
            self._cv.notify()

    def finish(
        self,
        ref: RunRef,
        state: str,
        metrics: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        artifacts: Iterable[str | Path] = (),
        later: Callable[[], Any] | None = None,
        logs: Iterable[str | Path] = (),
    ) -> None:
        """Record run `ref`'s outcome (`state`: succeeded, failed, ...) and close it.

        `artifacts` are copied into the run; `logs` (files never rewritten in place) are the run's
        artifacts themselves where the artifact store is a local folder (hard links).

        `later()` is called on the writer's thread before the run's last writes; what it returns
        (`.tags`, `.files`, e.g. a `track.provenance.Provenance`) goes with them.
        """
        with self._cv:
            self._check_open()
            self._finish(ref, state, metrics, tags, [*((a, False) for a in artifacts), *((p, True) for p in logs)])
            if later is not None:
                self._pending[ref].later.append(later)
            self._cv.notify()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Asks made inside are taken up together when it ends (run creations first)."""
        held = False
        try:
            with self._cv:
                self._holds += 1
                held = True
            yield
        finally:
            if held:  # a KeyboardInterrupt may land anywhere: never leave the writer held
                with self._cv:
                    self._holds -= 1
                    self._cv.notify()

    @property
    def experiment_id(self) -> str:
        """The experiment's id; waits until the store is open, raises TrackerError if it cannot be."""
        self._opened.wait()
        if self._experiment_id is None:
            raise TrackerError(self._fatal or "the MLflow store is not open")
        return self._experiment_id

    @property
    def fatal(self) -> str | None:
        """Why the store could not be opened (nothing can be written), or None."""
        return self._fatal

    def close(self, timeout: float | None = None) -> list[str]:
        """Write everything asked for, then stop; returns the failed writes (also `failures`).

        Runs created but never finished are closed as FAILED: nothing stays RUNNING in MLflow.
        """
        with self._cv:
            if not self._closing:
                for ref in self._refs:
                    if not ref.finished:
                        self._finish(ref, FAILED, None, {"scanflow.error": "the run ended before it finished"}, ())
                self._closing = True
                self._cv.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TrackerError(f"MLflow writes to {self.uri} still going after {timeout} s")
        return list(self.failures)

    # -- under the lock ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closing:
            raise TrackerError("this run's MLflow writer is closed")

    def _merge(self, ref: RunRef, **values: Any) -> _Pending:
        pending = self._pending.get(ref)
        if pending is None:
            pending = self._pending[ref] = _Pending()
        for name in ("params", "metrics", "tags"):
            if values.get(name):
                getattr(pending, name).update(values[name])
        if values.get("metrics"):
            pending.logged_ms = _ms()
        pending.artifacts += values.get("artifacts") or []
        return pending

    def _finish(self, ref, state, metrics, tags, artifacts) -> None:
        pending = self._merge(ref, metrics=metrics, tags={"scanflow.status": state, **(tags or {})})
        pending.artifacts += [(Path(path), link) for path, link in artifacts]
        pending.status, pending.end_ms, ref.finished = state, _ms(), True

    def _next(self) -> tuple[str, RunRef, _Pending | None] | None:
        """The next write: run creations first, then finished runs, then lingering values."""
        with self._cv:
            while True:
                if self._holds and not self._closing:
                    self._cv.wait()
                    continue
                if self._creates:
                    return "create", self._creates.popleft(), None
                now, due = time.monotonic(), None
                for ref, pending in self._pending.items():
                    if pending.status is not None or self._closing or now - pending.since >= LINGER:
                        del self._pending[ref]
                        return "flush", ref, pending
                    due = min(due or now + LINGER, pending.since + LINGER)
                if self._closing:
                    return None
                self._cv.wait(None if due is None else max(0.0, due - now))

    # -- the writer's thread -------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._open()
            while (work := self._next()) is not None:
                kind, ref, pending = work
                try:
                    self._create(ref) if kind == "create" else self._flush(ref, pending)
                except Exception as exc:  # a bug here must not stop the other writes
                    self._failed(ref.label, f"internal error: {type(exc).__name__}: {exc}")
        except BaseException as exc:  # never die silently: fail what is left, say why
            self._fatal = self._fatal or f"the MLflow writer stopped: {type(exc).__name__}: {exc}"
            self._failed("the run", self._fatal)
            with self._cv:
                self._closing = True
                leftovers = [*self._creates, *self._refs]
            for ref in leftovers:
                if not ref._done.is_set():
                    ref._resolve(None, self._fatal)
        finally:
            self._opened.set()
            if self._skipped:
                self._failed("the run", f"{self._skipped} more write(s) not tried: {self._gave_up}")
            if self._journal is not None:
                self._journal.close(keep=any(r.id_now and not r.closed for r in self._refs))

    def _open(self) -> None:
        try:
            self.client = get_client(self.uri)
            self._experiment_id = experiment_id(self.client, self.experiment)
            self._lean = LeanWrites.open(self.client)
        except Exception as exc:
            self._fatal = str(exc) if isinstance(exc, TrackerError) else f"cannot open MLflow at {self.uri}: {exc}"
        self._opened.set()
        if self._fatal is None and self._journal is not None:
            repaired = recover(self.client, self._journal.folder)
            if repaired:
                self._report("the app", f"marked {repaired} MLflow run(s) FAILED that a crashed run had left open")

    def _create(self, ref: RunRef) -> None:
        parent = ref.parent
        if self._fatal is not None:
            return ref._resolve(None, self._fatal)
        if parent is not None and parent.id_now is None:
            return ref._resolve(None, f"its parent run ({parent.label}) was not created")
        tags = {**self.common_tags, "scanflow.kind": ref.kind, **ref.tags, **self._tags_so_far(ref)}
        if parent is not None:
            tags["mlflow.parentRunId"] = parent.id_now
        created = self._lean_write(lambda: self._lean.create(self._experiment_id, ref.name, ref.start_ms, tags))
        if created is None:
            try:
                create = self.client.create_run
                run = self._write(
                    lambda: create(self._experiment_id, start_time=ref.start_ms, tags=tags, run_name=ref.name)
                )
            except Exception as exc:
                ref._resolve(None, _one_line(exc))
                return self._failed(ref.label, f"run not created: {_one_line(exc)}", exc)
            created = run.info.run_id, run.info.artifact_uri
        run_id, ref.artifact_uri = created
        ref._resolve(run_id)
        if self._journal is not None:
            self._journal.add(run_id)

    def _tags_so_far(self, ref: RunRef) -> dict[str, str]:
        """Tags asked for before the run exists, taken out to go with its creation (one write less)."""
        with self._cv:
            pending = self._pending.get(ref)
            if pending is None or not pending.tags or len(pending.tags) > CREATE_TAGS:
                return {}
            tags = {k: str(v) for k, v in pending.tags.items() if v is not None}
            if any(len(v) > 5000 for v in tags.values()):
                return {}
            pending.tags = {}
            if not (pending.params or pending.metrics or pending.artifacts or pending.status or pending.later):
                del self._pending[ref]
            return tags

    def _flush(self, ref: RunRef, pending: _Pending) -> None:
        run_id = ref.id_now
        if run_id is None:  # its creation failed, and that was reported (or the store never opened)
            return
        for record in pending.later:
            try:
                more = record()
            except Exception as exc:  # what it would have recorded is lost: say so
                self._failed(ref.label, f"record not written: {_one_line(exc)}")
                continue
            pending.tags.update(more.tags)
            pending.artifacts += [(Path(f), False) for f in more.files]
        for path, link in pending.artifacts:  # before the status: a closed run has all its files
            if path.is_file():
                copy = partial(attach, self.client, run_id, ref.artifact_uri, path, "scanflow", link)
                self._try(ref, f"artifact {path.name}", copy)
        values = {"params": pending.params, "metrics": pending.metrics, "tags": pending.tags}
        status = MLFLOW_STATUS.get(pending.status, "FINISHED") if pending.status is not None else None
        end, logged_ms = pending.end_ms, pending.logged_ms or _ms()
        if (status or any(values.values())) and self._lean_write(
            lambda: self._lean.write_out(run_id, **values, timestamp_ms=logged_ms, status=status, end_ms=end)
        ):
            ref.closed = status is not None
            return
        if any(values.values()):
            self._log(ref, run_id, values, pending.logged_ms or None)
        if status is not None:
            ref.closed = self._try(ref, "final status", lambda: self.client.set_terminated(run_id, status, end))

    def _lean_write(self, call: Callable[[], Any]) -> Any:
        """`call` on the lean path (`track.lean`); None if there is none or it did not write (refused, failed,
        too big for one batch): MLflowClient then writes the same, with its errors and reports."""
        if self._lean is None or self._gave_up:
            return None
        try:
            result = call()
        except Exception as exc:
            log.debug("lean MLflow write not done, MlflowClient writes it: %s", exc)
            return None
        self._failures_in_a_row = 0
        return result

    def _log(self, ref: RunRef, run_id: str, values: dict[str, dict], timestamp_ms: int | None) -> None:
        """One batch; if it fails, params, metrics and tags alone, so one bad value costs only its kind."""
        try:
            return self._write(lambda: log_values(self.client, run_id, **values, timestamp_ms=timestamp_ms))
        except Exception as exc:
            first = exc
        kinds = [kind for kind, value in values.items() if value]
        if isinstance(first, _NotTried) or len(kinds) == 1:
            return self._failed(ref.label, f"{' and '.join(kinds)} not logged: {_one_line(first)}", first)
        for kind in kinds:
            one = {kind: values[kind]}
            self._try(ref, kind, lambda one=one: log_values(self.client, run_id, **one, timestamp_ms=timestamp_ms))

    def _try(self, ref: RunRef, what: str, call: Callable[[], Any]) -> bool:
        try:
            self._write(call)
            return True
        except Exception as exc:
            self._failed(ref.label, f"{what} not logged: {_one_line(exc)}", exc)
            return False

    @property
    def _gave_up(self) -> str | None:
        if self._failures_in_a_row >= GIVE_UP_AFTER:
            return f"the store failed {GIVE_UP_AFTER} writes in a row"
        return None

    def _write(self, call: Callable[[], Any]) -> Any:
        """One store call; after GIVE_UP_AFTER failures in a row the store counts as gone."""
        if self._gave_up:
            raise _NotTried(self._gave_up)
        try:
            result = call()
        except Exception as exc:  # a refusal (bad value, deleted run) means the store is there
            answered = getattr(exc, "error_code", None) in REFUSALS
            self._failures_in_a_row = 0 if answered else self._failures_in_a_row + 1
            raise
        self._failures_in_a_row = 0
        return result

    def _failed(self, label: str, message: str, error: BaseException | None = None) -> None:
        if isinstance(error, _NotTried):  # counted, reported once at the end
            self._skipped += 1
            return
        self.failures.append(f"{label}: {message}")
        try:
            self._report(label, message)
        except Exception as exc:  # a broken listener must not stop the writes
            log.warning("could not report an MLflow failure (%s: %s): %s", label, message, exc)


class _NotTried(TrackerError):
    """A write left out because the store failed too often already."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


class _Journal:
    """The ids of the runs one writer created, in a file it keeps locked while it lives."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._file = None
        self._path: Path | None = None

    def add(self, run_id: str) -> None:
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"{os.getpid()}-{os.urandom(6).hex()}"
            staging = self.folder / f".{name}.tmp"
            self._file = open(staging, "a")  # noqa: SIM115 - held open (and locked) for the writer's life
            fcntl.flock(self._file, fcntl.LOCK_EX)
            self._path = self.folder / f"{name}.runs"
            os.replace(staging, self._path)  # only a locked journal is ever visible to `recover`
        self._file.write(run_id + "\n")
        self._file.flush()

    def close(self, keep: bool) -> None:
        """Remove the journal (unless runs are left open: then the next writer repairs them)."""
        if self._file is None:
            return
        if not keep:
            self._path.unlink(missing_ok=True)
        self._file.close()
        self._file = None


def recover(client, folder: Path) -> int:
    """Mark FAILED the runs still RUNNING in journals whose writer is gone; returns how many."""
    if fcntl is None or not folder.is_dir():
        return 0
    repaired = 0
    for path in folder.glob("*.runs"):
        try:
            handle = open(path)  # noqa: SIM115 - closed below, after the lock test
        except FileNotFoundError:  # its writer just closed it
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its writer is alive
                continue
            for run_id in handle.read().split():
                try:
                    if client.get_run(run_id).info.status == "RUNNING":
                        log_values(client, run_id, tags={"scanflow.status": FAILED, "scanflow.error": CRASHED})
                        client.set_terminated(run_id, "FAILED")
                        repaired += 1
                except Exception as exc:
                    if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":  # deleted since
                        continue
                    log.warning("could not close MLflow run %s left open by a crash: %s", run_id, exc)
                    break  # the journal stays: the next writer tries again
            else:
                path.unlink(missing_ok=True)
    return repaired
