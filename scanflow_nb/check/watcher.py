"""The background checker: a daemon thread that checks every inference batch of an experiment once.

Each poll asks MLflow for batch runs (see `tracking`) not yet tagged `scanflow.checked`, oldest
first. For each, the watcher claims it (a param only one contender can write, enforced by the
store), scores it with the detector, logs the result and commits it (`tracking.log_check`). Any
number of watchers, in any number of kernels or machines, can watch one experiment: every batch
gets exactly one check run. Results left by an interrupted earlier attempt are reconciled: a
complete one is adopted, an incomplete one deleted, so this holds across stop/start, kernel
restarts and tracker outages too; a result the tracker's failure cut off before this watcher could
record it is recorded and announced by a later poll, once. A claim whose holder died is taken over:
at once when the holder was a process of this machine that is gone, else after `claim_timeout`
seconds.

Every result also feeds the stream's alarm (`stream.StreamChecker`: CUSUM over the batches'
p-values, about `arl` clean batches between false alarms). Its state is read back from the newest
check run in MLflow before each batch, so the stream continues across restarts and watchers.

While the tracker is unreachable the thread backs off (doubling the wait up to `max_backoff`),
records the outage and tries again; it never skips a batch. A batch with bad data is checked for
what is usable and its findings logged; one with nothing usable gets a FAILED check run. Errors
never end the thread silently: they are logged, kept in `status()` and passed to `on_error`.

`start()` sets MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false unless it is set: progress bars drawn
from a background thread would land in whatever notebook cell happens to be running.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ScanflowError, ValidationError
from . import tracking as tr
from .result import DriftResult
from .stream import StreamChecker

log = logging.getLogger("scanflow_nb.check")
MAX_HISTORY = 1000
_LIVE: set[str] = set()  # claimants of this process's watcher threads that are alive


@dataclass
class CheckRecord:
    """One checked batch as the watcher saw it."""

    batch_run_id: str
    check_run_id: str
    result: DriftResult | None  # None when the batch could not be scored
    error: str | None
    checked_at: float  # time.time() when the result was complete in MLflow
    delay: float | None  # seconds from the batch being logged to its result being complete
    alarm: bool = False  # the stream's alarm went off with this batch
    statistic: float | None = None  # the stream's CUSUM after this batch


class Watcher:
    """Checks the inference batches logged to `experiment` at `tracking_uri` with a fitted `detector`.

    `start()` runs `poll()` every `every` seconds in a daemon thread; `stop()` returns within 2 s.
    Callbacks: `on_result(record)` for every checked batch, `on_drift(record)` for drifted ones,
    `on_alarm(record)` when the stream's alarm goes off, `on_error(message)` for outages and
    failures; a failing callback is logged, never fatal. `arl`: clean batches between false alarms.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        detector,
        every: float = 5.0,
        max_backoff: float = 30.0,
        on_result: Callable | None = None,
        on_drift: Callable | None = None,
        on_error: Callable | None = None,
        on_alarm: Callable | None = None,
        arl: float = 500.0,
        claim_timeout: float = 600.0,
    ) -> None:
        if not getattr(detector, "fitted", False):
            raise ValidationError("the watcher needs a fitted detector: call detector.fit(X_reference) first")
        if isinstance(every, bool) or not isinstance(every, (int, float)) or not every > 0:
            raise ValidationError(f"every must be a positive number of seconds, got {every!r}")
        self.tracking_uri, self.experiment, self.detector = tracking_uri, experiment, detector
        self.every, self.max_backoff = float(every), max(float(max_backoff), float(every))
        self.stream = StreamChecker(detector, arl=arl)
        self.claim_timeout = float(claim_timeout)
        self.claimant = tr.claimant()
        self.callbacks: dict[str, list[Callable]] = {"result": [], "drift": [], "error": [], "alarm": []}
        events = (("result", on_result), ("drift", on_drift), ("error", on_error), ("alarm", on_alarm))
        for event, fn in events:
            if fn is not None:
                self.add_callback(event, fn)
        self.records: list[CheckRecord] = []
        self.outages: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._polling = threading.Lock()  # one poll at a time, even if poll() is also called by hand
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "stopped"
        self._client = None
        self._exp_id: str | None = None
        self._polls = 0
        self._last_poll: float | None = None
        self._outage_start: float | None = None
        self._scored: dict[str, tuple] = {}  # batch run id -> (result, error, stream step), until reported

    # -- control ------------------------------------------------------------------------------
    def add_callback(self, event: str, fn: Callable) -> None:
        """Call `fn` on "result", "drift", "alarm" (each with a CheckRecord) or "error" (a message)."""
        if event not in self.callbacks:
            raise ValidationError(f"unknown watcher event {event!r}; choose one of: {', '.join(self.callbacks)}")
        self.callbacks[event].append(fn)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Watcher:
        """Start the background thread (no-op if it is running)."""
        if self.running:
            if not self._stop.is_set():
                return self
            self._thread.join(10.0)  # a stopped thread finishing its last batch
            if self._thread.is_alive():
                raise ScanflowError("the previous checker thread is still finishing a batch; try again shortly")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        _LIVE.add(self.claimant)
        self._stop.clear()
        self._state = "starting"
        self._thread = threading.Thread(target=self._run, name=f"scanflow-checker-{self.experiment}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.9) -> bool:
        """Ask the thread to stop and wait at most `timeout` s; True if it has ended.

        A batch being logged at that moment is finished by the (daemon) thread before it ends.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        ended = not self.running
        self._state = "stopped" if ended else "stopping"
        return ended

    def status(self) -> dict[str, Any]:
        """Plain-data snapshot: state, counts, last poll, last error, outages."""
        with self._lock:
            drifts = sum(1 for r in self.records if r.result is not None and r.result.is_drift)
            alarms = sum(1 for r in self.records if r.alarm)
            return {
                "state": self._state if self.running or self._state == "crashed" else "stopped",
                "experiment": self.experiment,
                "tracking_uri": self.tracking_uri,
                "every": self.every,
                "detector": type(self.detector).__name__,
                "polls": self._polls,
                "checked": len(self.records),
                "drifts": drifts,
                "alarms": alarms,
                "findings": sum(len(r.result.findings) for r in self.records if r.result is not None),
                "failed": sum(1 for r in self.records if r.error),
                "last_poll": self._last_poll,
                "last_error": self.errors[-1] if self.errors else None,
                "outages": [dict(o) for o in self.outages],
            }

    # -- the work -------------------------------------------------------------------------------
    def poll(self) -> list[CheckRecord]:
        """Check every pending batch once, oldest first; returns the new records.

        Raises TrackerError (or MLflow's error) when the tracker cannot be reached: nothing is lost,
        the next poll takes up where this one stopped.
        """
        with self._polling:
            _LIVE.add(self.claimant)  # claims made in this poll are not stale to this process's watchers
            try:
                return self._poll()
            finally:
                if not self.running:
                    _LIVE.discard(self.claimant)

    def _poll(self) -> list[CheckRecord]:
        tr.ensure_reachable(self.tracking_uri)
        if self._client is None:
            self._client = tr.client_for(self.tracking_uri)
        if self._exp_id is None:
            self._exp_id = tr.experiment_id(self._client, self.experiment)
        pending = tr._search_all(
            self._client, self._exp_id, f"tags.`{tr.BATCH_TAG}` = 'true' and tags.`{tr.CHECKED_TAG}` IS NULL"
        )
        if self._outage_start is not None:
            self._end_outage()
        for gone in set(self._scored) - {run.info.run_id for run in pending}:
            del self._scored[gone]  # checked since by another watcher
        new = []
        for run in pending:
            if self._stop.is_set():
                break
            record = self._check(run)
            if record is not None:
                new.append(record)
        return new

    def _check(self, run) -> CheckRecord | None:
        """Claim, score, log and commit one batch; None when another watcher has it or it was done."""
        client, batch_id = self._client, run.info.run_id
        params = run.data.params
        if tr.RESULT_PARAM in params:  # committed; only the tag was not written yet
            committed = params[tr.RESULT_PARAM]
            tr.mark_checked(client, batch_id, committed)
            return self._report_own(run, committed)
        attempt, holder = tr.latest_claim(params)
        if holder != self.claimant:
            if holder is not None and not self._stale(holder):
                return None  # another watcher is on it
            if not tr.claim(client, batch_id, attempt + 1, self.claimant):
                return None
        earlier = client.search_runs([self._exp_id], f"tags.`{tr.BATCH_RUN_TAG}` = '{batch_id}'")
        for old in earlier:
            if old.info.status == "FINISHED" or (old.info.status == "FAILED" and tr.ERROR_TAG in old.data.tags):
                tr.commit(client, batch_id, old.info.run_id)  # a complete result that was never committed
                return self._report_own(run, old.info.run_id, old.data.tags)
        for old in earlier:
            client.delete_run(old.info.run_id)  # an attempt cut short: its result is incomplete
        result, error = self._score(batch_id)
        extra, metrics = {tr.WATCHER_TAG: self.claimant}, {}
        step = None
        if result is not None:
            self.stream.statistic = self._stream_state()
            step = self.stream.observe(result)
            metrics = {"alarm": step.alarm, "cusum": step.statistic}
        if self.outages and not self.outages[-1].get("reported") and self.outages[-1].get("end"):
            o = self.outages[-1]
            extra[tr.OUTAGE_TAG] = (
                f"{o['end'] - o['start']:.1f} s unreachable until {time.ctime(o['end'])}: {o['error']}"
            )
        # kept until reported: if the tracker fails after the result is written, a later poll reports it
        self._scored[batch_id] = (result, error, step)
        check_id = tr.log_check(client, self._exp_id, batch_id, result, error, extra, metrics)
        if check_id is None:
            del self._scored[batch_id]
            return None  # another watcher committed first (it took over a claim thought stale)
        return self._report_own(run, check_id, extra)

    def _report_own(self, run, check_id: str, tags: dict[str, str] | None = None) -> CheckRecord | None:
        """Record and announce the committed result `check_id` of a batch this watcher scored (None if
        the result is another watcher's). `tags`: the check run's tags, read from MLflow if not given."""
        batch_id = run.info.run_id
        if batch_id not in self._scored:
            return None
        if tags is None:
            tags = self._client.get_run(check_id).data.tags
        result, error, step = self._scored.pop(batch_id)
        if tags.get(tr.WATCHER_TAG) != self.claimant:
            return None
        if tr.OUTAGE_TAG in tags:
            self.outages[-1]["reported"] = True
        now = time.time()
        logged_at = run.data.tags.get(tr.LOGGED_AT_TAG)
        record = CheckRecord(
            batch_id,
            check_id,
            result,
            error,
            now,
            now - float(logged_at) if logged_at else None,
            alarm=bool(step and step.alarm),
            statistic=step.statistic if step else None,
        )
        with self._lock:
            self.records.append(record)
            del self.records[:-MAX_HISTORY]
        if error:
            log.warning("batch run %s could not be checked: %s", batch_id, error)
            self._emit("error", f"batch run {batch_id}: {error}")
        self._emit("result", record)
        if result is not None and result.is_drift:
            self._emit("drift", record)
        if record.alarm:
            self._emit("alarm", record)
        return record

    def _score(self, batch_id: str) -> tuple[DriftResult | None, str | None]:
        """The detector's result on the batch, or why the batch could not be scored."""
        try:
            batch, probabilities = tr.load_batch(self._client, batch_id)
        except ValueError as exc:  # no artifact, not a readable .npy / Parquet (or a pickle)
            return None, f"batch artifact unusable: {exc}"
        try:
            if getattr(self.detector, "takes_probabilities", False) and probabilities is not None:
                return self.detector.score(batch, probabilities=probabilities), None
            return self.detector.score(batch), None
        except ScanflowError as exc:
            return None, str(exc)

    def _stream_state(self) -> float:
        """The stream's CUSUM after the newest check run of the experiment (0 after an alarm, or if none)."""
        newest = self._client.search_runs(
            [self._exp_id],
            f"tags.`{tr.CHECK_TAG}` = 'true' and metrics.cusum >= 0",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not newest:
            return 0.0
        metrics = newest[0].data.metrics
        return 0.0 if metrics.get("alarm") else float(metrics["cusum"])

    def _stale(self, holder: str) -> bool:
        """Whether the watcher holding a claim is gone: same process and not alive, same machine and its
        process gone, or the claim is older than `claim_timeout`."""
        try:
            host, pid, _, since = holder.split("/")
            pid, since = int(pid), float(since)
        except ValueError:
            return True  # not a claim this code wrote
        if time.time() - since > self.claim_timeout:
            return True
        if host != socket.gethostname():
            return False
        if pid == os.getpid():
            return holder not in _LIVE
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _emit(self, event: str, payload: Any) -> None:
        for fn in list(self.callbacks[event]):
            try:
                fn(payload)
            except Exception as exc:  # user code must not stop the checker
                log.exception("checker %s callback %r failed", event, fn)
                with self._lock:
                    self.errors.append(f"{event} callback failed: {type(exc).__name__}: {exc}")

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                self._state = "watching" if failures == 0 else "retrying"
                try:
                    self.poll()
                    failures, wait = 0, self.every
                except Exception as exc:  # tracker unreachable or failing: retry with backoff
                    failures += 1
                    self._client = None if failures > 2 else self._client
                    wait = min(self.every * 2 ** (failures - 1), self.max_backoff)
                    self._record_failure(exc, wait)
                self._polls += 1
                self._last_poll = time.time()
                self._stop.wait(wait)
        except BaseException as exc:  # never die silently
            self._state = "crashed"
            log.exception("the checker thread of %s crashed", self.experiment)
            self.errors.append(f"checker thread crashed: {type(exc).__name__}: {exc}")
            raise
        finally:
            _LIVE.discard(self.claimant)

    def _record_failure(self, exc: Exception, wait: float) -> None:
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
        now = time.time()
        with self._lock:
            self.errors.append(message)
            del self.errors[:-100]
            if self._outage_start is None:
                self._outage_start = now
                self.outages.append({"start": now, "end": None, "error": message, "attempts": 0})
            self.outages[-1]["attempts"] += 1
        log.warning("checker of %s: %s; retrying in %.1f s", self.experiment, message, wait)
        self._emit("error", f"tracker problem ({message}); retrying in {wait:.1f} s")

    def _end_outage(self) -> None:
        with self._lock:
            self.outages[-1]["end"] = time.time()
            start, self._outage_start = self._outage_start, None
        log.warning("checker of %s: tracker reachable again after %.1f s", self.experiment, time.time() - start)
