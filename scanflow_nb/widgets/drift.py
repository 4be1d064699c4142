"""The drift monitor: the p-value of every checked batch over time, the threshold, drifts and alarms.

Thread-safe: the watcher thread calls `add(record)`; the monitor only sets synced traits, which its ES
module (drift.js) draws as a small SVG plot. A click on a batch (or `monitor.selected = batch_run_id`)
shows what the check found in it: its most anomalous samples (read from the batch's MLflow run in a
background thread), the features that drifted and any data-quality findings.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from ..errors import ScanflowError
from .fallback import text_repr
from .samples import is_image, sample_view

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
SHOWN_SAMPLES = 8  # the most anomalous samples shown for a clicked batch
SHOWN_COLUMNS = 16  # columns of a tabular sample shown


class DriftMonitor(anywidget.AnyWidget):
    """Shows every checked batch of a Watcher (or records given to `add`)."""

    _esm = HERE / "drift.js"
    _css = HERE / "drift.css"

    points = t.List().tag(sync=True)  # one dict per checked batch, oldest first
    alert = t.Unicode("no batch checked yet").tag(sync=True)  # the banner's text
    level = t.Unicode("ok").tag(sync=True)  # the banner's colour: ok | drift
    problem = t.Unicode("").tag(sync=True)  # the latest problem (e.g. tracker unreachable)
    selected = t.Unicode("").tag(sync=True)  # the batch run id whose details are shown
    details = t.Dict().tag(sync=True)  # {"batch", "rows": [[name, html]], "samples": [...], "note"}

    def __init__(self, watcher=None, max_points: int = 200, samples_shown: int = SHOWN_SAMPLES, **kwargs) -> None:
        self.max_points, self.samples_shown = max_points, samples_shown
        self.watcher = watcher
        self._records: dict[str, Any] = {}  # batch run id -> its CheckRecord
        self._lock = threading.Lock()
        self._checked = threading.Condition(self._lock)  # notified on each batch added
        self._batches: dict[str, np.ndarray] = {}  # batch run id -> its data, once read for a click
        points = [self._point(record) for record in list(getattr(watcher, "records", []))[-max_points:]]
        super().__init__(points=points, **self._banner(points), **kwargs)
        self.observe(self._on_select, names="selected")
        if watcher is not None:
            for record in list(watcher.records):
                self._records[record.batch_run_id] = record
            watcher.add_callback("result", self.add)
            watcher.add_callback("error", self.note)

    # -- fed by the watcher ---------------------------------------------------------------------
    def add(self, record) -> None:
        """Add one checked batch (a watcher CheckRecord)."""
        with self._lock:
            self._records[record.batch_run_id] = record
            points = [*self.points, self._point(record)][-self.max_points :]
            with self.hold_sync():
                self.points = points
                for name, value in self._banner(points).items():
                    setattr(self, name, value)
                self.problem = ""
            self._checked.notify_all()

    def wait(self, batches: int, timeout: float = 300.0) -> DriftMonitor:
        """Wait until `batches` batches have been checked in all; a ScanflowError after `timeout` s says how
        many were and the latest problem (e.g. the tracker unreachable)."""
        with self._checked:
            if not self._checked.wait_for(lambda: len(self._records) >= batches, timeout):
                problem = f"; latest problem: {self.problem}" if self.problem else ""
                raise ScanflowError(f"{len(self._records)} of {batches} batches checked after {timeout:g} s{problem}")
        return self

    def note(self, message: str) -> None:
        """Show a problem (e.g. tracker unreachable) under the plot."""
        self.problem = str(message)

    @staticmethod
    def _point(record) -> dict:
        result = record.result
        findings = list(getattr(result, "findings", None) or [])
        return {
            "batch": record.batch_run_id,
            "check": record.check_run_id,
            "time": record.checked_at,
            "error": record.error,
            "score": result.score if result else None,
            "p_value": result.p_value if result else None,
            "alpha": result.alpha if result else None,
            "drift": bool(result and result.is_drift),
            "alarm": bool(getattr(record, "alarm", False)),
            "n": int(len(result.scores)) if result else 0,
            "n_anomalous": int(len(result.indices)) if result else 0,
            "findings": len(findings),
        }

    @staticmethod
    def _banner(points: list[dict]) -> dict:
        drifts = [p for p in points if p["drift"]]
        alarms = sum(p["alarm"] for p in points)
        raised = f"; {alarms} alarms" if alarms else ""
        if points and (points[-1]["drift"] or points[-1]["alarm"]):
            last = points[-1]
            p = f" (p = {last['p_value']:.2g})" if last["p_value"] is not None else ""
            word = "ALARM" if last["alarm"] else "DRIFT"
            text = f"{word}: batch run {last['batch']}{p}; {len(drifts)} of {len(points)} batches drifted{raised}"
            return {"alert": text, "level": "drift"}
        if not points:
            return {"alert": "no batch checked yet", "level": "ok"}
        return {"alert": f"{len(points)} batches checked, {len(drifts)} drifted{raised}", "level": "ok"}

    # -- a clicked batch -------------------------------------------------------------------------
    def _on_select(self, change: Any) -> None:
        batch = change["new"]
        record = self._records.get(batch)
        if record is None:
            self.details = {"batch": batch, "rows": [], "samples": [], "note": "no checked batch with this run id"}
            return
        self.details = {"batch": batch, "rows": self._rows(record), "samples": [], "note": "reading the batch…"}
        threading.Thread(target=self._show_samples, args=(record,), name="scanflow-drift-samples", daemon=True).start()

    def _rows(self, record) -> list[list[str]]:
        result = record.result
        when = time.strftime("%H:%M:%S", time.localtime(record.checked_at))
        rows = [["batch run", f"<code>{html.escape(record.batch_run_id)}</code> checked at {when}"]]
        if result is None:
            return [*rows, ["error", f"<span class='sf-error'>{html.escape(record.error or '')}</span>"]]
        verdict = "drift" if result.is_drift else "no drift"
        rows.append(["verdict", f"<b>{verdict}</b>: p = {result.p_value:.3g} (alpha {result.alpha:g})"])
        rows.append(
            ["anomalous", f"{len(result.indices)} of {len(result.scores)} samples above {result.threshold:.3g}"]
        )
        if result.tests:
            rows.append(["evidence", html.escape(", ".join(f"{k}: p = {v:.3g}" for k, v in result.tests.items()))])
        drifted = list(getattr(result, "drifted", None) or [])
        features = getattr(result, "features", None) or {}
        if drifted:
            shown = ", ".join(f"{c} (p = {features[c]:.2g})" if c in features else str(c) for c in drifted[:10])
            more = f" and {len(drifted) - 10} more" if len(drifted) > 10 else ""
            rows.append(["drifted features", html.escape(shown + more)])
        for finding in getattr(result, "findings", None) or []:
            get = finding.get if isinstance(finding, dict) else lambda name, f=finding: getattr(f, name, None)
            rows.append(["finding", html.escape(f"{get('kind')} in {get('column')}: {get('count')} values")])
        return rows

    def _show_samples(self, record) -> None:
        """Read the batch from its MLflow run and show its most anomalous samples (runs in a thread)."""
        result = record.result
        note = ""
        samples: list[dict] = []
        try:
            order = [] if result is None else list(result.indices[: self.samples_shown])
            if not order and result is not None:  # nothing above the threshold: the highest scores all the same
                order = list(np.argsort(-result.scores, kind="stable")[: self.samples_shown])
            if order:
                batch = self._batch(record.batch_run_id)
                samples = [{"index": int(i), "score": float(result.scores[i]), **self._view(batch[i])} for i in order]
                note = f"the {len(samples)} most anomalous samples, highest score first"
        except Exception as exc:  # shown in the details; the monitor goes on
            log.warning("could not read batch %s: %s", record.batch_run_id, exc)
            note = f"could not read the batch's samples: {type(exc).__name__}: {exc}"
        if self.selected == record.batch_run_id:
            self.details = {**self.details, "samples": samples, "note": note}

    def _batch(self, batch_run_id: str) -> np.ndarray:
        if batch_run_id not in self._batches:
            if self.watcher is None:
                raise LookupError("no watcher, so no tracker to read the batch from")
            from ..check import tracking as tr

            client = tr.client_for(self.watcher.tracking_uri)
            self._batches[batch_run_id] = tr.download_npy(client, batch_run_id, tr.BATCH_ARTIFACT)
            while len(self._batches) > 20:  # keep the memory of a long watch bounded
                self._batches.pop(next(iter(self._batches)))
        return self._batches[batch_run_id]

    @staticmethod
    def _view(sample: np.ndarray) -> dict:
        if is_image(sample):
            return sample_view(sample, size=64)
        values = np.ravel(sample)
        view = sample_view(values[:SHOWN_COLUMNS])
        if len(values) > SHOWN_COLUMNS:
            view["html"] += f"<small>… and {len(values) - SHOWN_COLUMNS} more columns</small>"
        return view

    # -- where widgets cannot load ----------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any):
        data, metadata = super()._repr_mimebundle_(**kwargs)
        lines = [
            f"batch {p['batch']}: "
            + (
                f"p = {p['p_value']:.3g}{' DRIFT' if p['drift'] else ''}"
                if p["p_value"] is not None
                else f"error: {p['error']}"
            )
            for p in self.points[-10:]
        ]
        data["text/plain"] = text_repr(
            "drift monitor", "\n".join([self.alert, *lines]), "%scanflow checker status WORKFLOW"
        )
        return data, metadata
