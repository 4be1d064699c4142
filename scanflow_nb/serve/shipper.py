"""The shipper: the thread of a replica's logger process that turns what the spool holds into MLflow runs.

A sealed segment becomes one inference batch (`check.tracking.log_batch`, the convention the watcher reads),
with the model's predictions beside it and its class probabilities (computed here, for the whole batch at once,
by the version that answered, through `probabilities(header, X)`), a child of the replica's service run and tagged
with the service, the replica, the model version that answered, the row count and the segment's id. An
event becomes what it records: a model switch is a child run of the service run, an overflow the service
run's `dropped_rows` metric. While the tracker is away the thread waits (doubling up to `max_backoff`),
records the outage and goes on where it stopped; a segment is deleted only once MLflow has it, and a
segment whose upload may have been cut short (here, or by a dead replica it was adopted from) is looked up
by its id before it is logged again: no batch twice. It looks at the spool every `poll` seconds, keeping it
under its bound even while the tracker is away.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..check import tracking as tr
from ..errors import ScanflowError, TrackerError
from ..track import experiment_id, get_client, log_values
from .backlog import Backlog
from .spool import EVENT, read_segment

log = logging.getLogger("scanflow_nb.serve")

SERVICE_TAG = "scanflow.serve.service"
REPLICA_TAG = "scanflow.serve.replica"
SEGMENT_TAG = "scanflow.serve.segment"
VERSION_TAG = "scanflow.model_version"
ROWS_TAG = "scanflow.rows"
KIND_TAG = "scanflow.kind"


class Shipper:
    """Logs the backlog of one replica to `experiment` at `tracking_uri` in a daemon thread.

    `counts` and `service_run` carry on from an earlier logger of the same replica (one restarted).
    """

    def __init__(
        self,
        backlog: Backlog,
        tracking_uri: str,
        experiment: str,
        service: str,
        params: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        probabilities: Callable | None = None,
        max_backoff: float = 30.0,
        adopt_every: float = 10.0,
        on_error: Callable[[str], None] | None = None,
        poll: float = 0.25,
        counts: dict[str, int] | None = None,
        service_run: str | None = None,
    ):
        self.backlog, self.tracking_uri, self.experiment, self.service = backlog, tracking_uri, experiment, service
        self.params, self.parent_run_id = dict(params or {}), parent_run_id
        self.probabilities = probabilities or (lambda header, X: (None, None))
        self.max_backoff, self.adopt_every, self.poll = max_backoff, adopt_every, poll
        self.on_error = on_error or (lambda message: None)
        self.service_run = service_run
        keys = ("shipped_rows", "batches", "switches_logged", "unloggable_rows")
        self.counts = {key: int((counts or {}).get(key, 0)) for key in keys}
        self.outages: list[dict[str, float | None]] = []
        self.last_error: str | None = None
        self._retry: set[str] = set()  # segment ids whose earlier upload failed midway
        self._exp: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage_start: float | None = None

    # -- control ---------------------------------------------------------------------------------
    def start(self) -> Shipper:
        self._thread = threading.Thread(target=self._run, name=f"scanflow-ship-{self.service}", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain_seconds: float = 30.0, totals: dict[str, int] | None = None) -> bool:
        """Stop the thread, then ship what is left within `drain_seconds`; True if nothing is left.

        `totals`: the rows and requests the replica answered, for the service run's last metrics.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(drain_seconds, 1.0))
        deadline = time.monotonic() + drain_seconds
        while self.backlog.pending() and time.monotonic() < deadline:
            try:
                self.ship()
            except Exception as exc:
                self._failed(exc)
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if self.service_run is not None:
            try:
                self._close_service_run(totals or {})
            except Exception as exc:
                self._failed(exc)
        return not self.backlog.pending()

    @property
    def outage(self) -> bool:
        return self._outage_start is not None

    # -- the work ------------------------------------------------------------------------------------
    def ship(self) -> int:
        """Log every pending item once, oldest first; returns how many. Raises while the tracker is away."""
        tr.ensure_reachable(self.tracking_uri)
        client = get_client(self.tracking_uri)
        if self._exp is None:
            self._exp = experiment_id(client, self.experiment)
        if self.service_run is None:
            self._open_service_run(client)
        if self._outage_start is not None:
            self.outages[-1]["ended"] = time.time()
            self._outage_start = None
        shipped = 0
        for path in self.backlog.pending():
            if not self.backlog.claim(path):
                continue  # dropped by the bound meanwhile (and counted there)
            try:
                self._event(client, path) if path.suffix == EVENT else self._segment(client, path)
            except BaseException:
                self.backlog.release(path)
                raise
            self.backlog.done(path)
            shipped += 1
        return shipped

    def _segment(self, client, path: Path) -> None:
        segment = read_segment(path)
        if segment.rows == 0:
            return
        header = segment.header
        # after a cut-short upload, here or by the (dead) replica this segment was adopted from: look first
        unsure = segment.id in self._retry or header.get("replica") != self.backlog.replica
        if unsure and self._already_logged(client, segment.id):
            self._retry.discard(segment.id)
            self.counts["shipped_rows"] += segment.rows
            self.counts["batches"] += 1
            return
        tags = {
            SERVICE_TAG: self.service,
            REPLICA_TAG: header.get("replica", ""),
            SEGMENT_TAG: segment.id,
            ROWS_TAG: str(segment.rows),
            "scanflow.model_uri": header.get("model_uri", ""),
            tr.PARENT_TAG: self.service_run,
        }
        if header.get("version"):
            tags[VERSION_TAG] = header["version"]
        probabilities, classes = self.probabilities(header, segment.X)
        if classes is not None:
            tags[tr.CLASSES_TAG] = json.dumps(classes)[:5000]
        if header.get("columns"):
            tags["scanflow.columns"] = json.dumps(header["columns"])[:5000]
        self._retry.add(segment.id)
        try:
            tr.log_batch(
                segment.X,
                self.tracking_uri,
                self.experiment,
                run_name=f"{self.service} {header.get('label', '')}".strip(),
                tags=tags,
                predictions=segment.predictions,
                probabilities=probabilities,
            )
        except TrackerError:
            raise
        except ScanflowError as exc:  # the rows themselves cannot be logged: keep them aside, say so
            bad = path.with_suffix(".unloggable")
            path.replace(bad)
            self.counts["unloggable_rows"] += segment.rows
            self.on_error(f"segment {segment.id} ({segment.rows} rows) cannot be logged: {exc}; kept as {bad}")
            return
        self._retry.discard(segment.id)
        self.counts["shipped_rows"] += segment.rows
        self.counts["batches"] += 1

    def _already_logged(self, client, segment_id: str) -> bool:
        """After a cut-short upload: True if the batch made it; half-made runs of it are deleted."""
        runs = client.search_runs([self._exp], f"tags.`{SEGMENT_TAG}` = '{segment_id}'")
        if any(run.data.tags.get(tr.BATCH_TAG) == "true" for run in runs):
            return True
        for run in runs:
            client.delete_run(run.info.run_id)
        return False

    def _event(self, client, path: Path) -> None:
        event = json.loads(path.read_text())
        if event["kind"] == "switch":
            run = client.create_run(
                self._exp,
                run_name=f"{self.service} switch v{event.get('previous')} -> v{event.get('version')}",
                tags={
                    KIND_TAG: "switch",
                    SERVICE_TAG: self.service,
                    REPLICA_TAG: event["replica"],
                    tr.PARENT_TAG: self.service_run,
                    "mlflow.note.content": event.get("reason", ""),
                },
            ).info.run_id
            log_values(
                client,
                run,
                params={"previous": event.get("previous"), "version": event.get("version")},
                metrics={"load_seconds": event.get("load_seconds")},
            )
            client.set_terminated(run, "FINISHED")
            log_values(client, self.service_run, tags={VERSION_TAG: event.get("version")})
            self.counts["switches_logged"] += 1
        elif event["kind"] == "overflow":
            client.log_metric(self.service_run, "dropped_rows", float(event["total_dropped_rows"]))

    def _open_service_run(self, client) -> None:
        tags = {KIND_TAG: "service", SERVICE_TAG: self.service, REPLICA_TAG: self.backlog.replica}
        if self.parent_run_id:  # e.g. the executor run of a workflow's service
            tags[tr.PARENT_TAG] = self.parent_run_id
        self.service_run = client.create_run(
            self._exp, run_name=f"serve {self.service} ({self.backlog.replica})", tags=tags
        ).info.run_id
        log_values(client, self.service_run, params=self.params)

    def _close_service_run(self, totals: dict[str, int]) -> None:
        client = get_client(self.tracking_uri)
        stats = self.backlog.stats()
        metrics = {
            **totals,
            "dropped_rows": stats["dropped_rows"],
            "left_in_spool_rows": stats["ready_rows"],
            **self.counts,
        }
        log_values(client, self.service_run, metrics=metrics)
        client.set_terminated(self.service_run, "FINISHED")

    def _run(self) -> None:
        backoff, next_try, next_adopt = 0.5, 0.0, 0.0
        while True:
            try:
                if time.monotonic() >= next_adopt:
                    self.backlog.adopt()
                    next_adopt = time.monotonic() + self.adopt_every
                self.backlog.bound()
                if time.monotonic() >= next_try and (self.service_run is None or self.backlog.pending()):
                    self.ship()
                    backoff = 0.5
            except Exception as exc:
                self._failed(exc)
                next_try = time.monotonic() + backoff
                backoff = min(backoff * 2, self.max_backoff)
            if self._stop.wait(self.poll):
                return

    def _failed(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if self._outage_start is None:
            self._outage_start = time.time()
            self.outages.append({"started": self._outage_start, "ended": None})
            log.warning(
                "serve %s: cannot log to %s (%s); rows wait in %s",
                self.service,
                self.tracking_uri,
                message,
                self.backlog.dir,
            )
        if message != self.last_error:
            self.on_error(message)
        self.last_error = message
