"""The prediction service: MLflow's scoring protocol, every answered row journaled, the model kept current.

Requests are parsed, predicted and formatted by MLflow's own scoring server code
(`mlflow.pyfunc.scoring_server.invocations`: `inputs`, `instances`, `dataframe_split`, `dataframe_records`,
CSV, Parquet), so clients see exactly what `mlflow models serve` answers. Around it, the service
- writes each answered request's rows and predictions to the replica's spool before the reply goes out (one
  local write; MLflow is never on the request path), and the replica's logger process logs them as inference
  batches of `batch_rows` rows or `flush_seconds` seconds, with their class probabilities (MLflow's writes
  never hold this process's GIL: a request never waits for them);
- follows a registry alias: a moved alias is loaded in the background and swapped in with one assignment;
- answers `/health` (and MLflow's `/ping`), `/version` (which model version answers, as JSON) and `/stats`
  (what was answered, journaled, logged, dropped; the tracker's and the logger's state; `logged`: whether
  everything answered so far, and every model switch, is in MLflow).
`http.serve()` runs it with uvicorn, as MLflow does, and flushes everything on a clean stop (SIGTERM, Ctrl-C).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ValidationError
from ..files import state_dir
from .logger import LoggerProcess
from .model import AliasFollower, LoadedModel, follows, load_model, registered_name
from .spool import Entry, Spool, spool_root

log = logging.getLogger("scanflow_nb.serve")

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5000
# what the logger process reports: rows logged, batches, events, and what its spool bound dropped or it adopted
LOGGED = (
    "shipped_rows",
    "batches",
    "switches_logged",
    "unloggable_rows",
    "dropped_rows",
    "dropped_segments",
    "adopted_segments",
    "adopted_rows",
)
VERSION_HEADER = "X-Scanflow-Model-Version"
REPLICA_HEADER = "X-Scanflow-Replica"  # which replica answered (its spool and its batches carry the same name)
# our own loop retries the tracker; MLflow's client would otherwise retry one call for minutes
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def service_name(model_uri: str) -> str:
    """A service name from a model URI: the registered model's name, else the URI's last part."""
    base = registered_name(model_uri) or model_uri.rstrip("/").rsplit("/", 1)[-1].split(":")[-1]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-_")[:63]
    return name or "model"


def as_rows(data: Any) -> tuple[np.ndarray | None, list[str] | None]:
    """A request's input (or a model's output) as an array of rows, and its column names if it had any."""
    import pandas as pd

    columns = None
    if isinstance(data, pd.DataFrame):
        columns = [str(c) for c in data.columns]
        arr = data.to_numpy()
    elif isinstance(data, pd.Series):
        arr = data.to_numpy()
    elif hasattr(data, "toarray"):  # scipy sparse
        arr = data.toarray()
    elif isinstance(data, dict):  # named tensors: no single row array to check
        return None, None
    else:
        arr = np.asarray(data)
    if arr.dtype == object:
        try:
            arr = arr.astype(float)
        except (TypeError, ValueError):
            arr = arr.astype(str)
    if arr.ndim == 0 or len(arr) == 0 or arr.dtype.kind not in "biufU":
        return None, None
    return arr, columns


@dataclass
class Reply:
    content: str | bytes
    status: int
    mimetype: str
    model: LoadedModel
    entry: Entry | None = None  # what to journal once the reply is certain to go out


class _Capture:
    """Stands in for the model inside MLflow's `invocations`: predicts with it and keeps what it saw and said."""

    def __init__(self, model: LoadedModel):
        self.model, self.metadata = model.pyfunc, model.pyfunc.metadata
        self.data = self.predictions = None

    def predict(self, data, params=None):
        self.data = data
        self.predictions = self.model.predict(data, params=params)
        return self.predictions


class PredictionService:
    """One replica of a prediction service for `model_uri`, logging its traffic to `experiment` at `tracking_uri`.

    Build it, `start()` its threads, answer with `answer()` + `journal()` (or serve `asgi_app(service)`),
    and `close()` it to flush. `http.serve()` does all of that with uvicorn.
    """

    def __init__(
        self,
        model_uri: str,
        tracking_uri: str,
        experiment: str | None = None,
        name: str | None = None,
        spool_dir: str | Path | None = None,
        batch_rows: int = 1000,
        flush_seconds: float = 10.0,
        max_spool_mb: int = 512,
        follow: bool = True,
        poll_seconds: float = 2.0,
        drain_seconds: float = 30.0,
        params: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
    ):
        if not isinstance(poll_seconds, (int, float)) or not poll_seconds > 0:
            raise ValidationError(f"poll seconds must be a positive number, got {poll_seconds!r}")
        self.model_uri, self.tracking_uri = model_uri, tracking_uri
        self.name = name or service_name(model_uri)
        self.experiment = experiment or self.name
        root = Path(spool_dir) if spool_dir else spool_root(state_dir(Path.cwd()), self.name)
        self.spool = Spool(root, batch_rows, flush_seconds, int(max_spool_mb) * 2**20)  # checks the settings
        try:
            self.model = load_model(model_uri, tracking_uri)
        except BaseException:
            self.spool.close()
            raise
        settings = {"model_uri": model_uri, "batch_rows": batch_rows, "flush_seconds": flush_seconds}
        self.logger = LoggerProcess(
            {
                "root": str(self.spool.root),
                "replica": self.spool.replica,
                "max_bytes": self.spool.max_bytes,
                "tracking_uri": tracking_uri,
                "experiment": self.experiment,
                "service": self.name,
                "params": {**settings, **(params or {})},
                "parent_run_id": parent_run_id,
                "model_uri": self.model.uri,
                "version": self.model.version,
            },
            on_error=self._error,
        )
        self.follower = (
            AliasFollower(model_uri, tracking_uri, self.model.version, self.switch, self._error, every=poll_seconds)
            if follow and follows(model_uri)
            else None
        )
        self.statuses: Counter = Counter()
        self.errors: list[str] = []
        self.switches: list[dict[str, Any]] = []
        self.unlogged = {"rows": 0, "requests": 0}
        self.drain_seconds = drain_seconds
        self.started_at = time.time()
        self._headers: dict[tuple, tuple[dict, str]] = {}
        self._replaced: list[LoadedModel] = []  # their files go once requests to them have finished
        self._stop = threading.Event()
        self._sealer = threading.Thread(target=self._seal_old, name=f"scanflow-seal-{self.name}", daemon=True)
        self._closed: dict[str, Any] | None = None
        self._close_lock = threading.Lock()

    # -- life ----------------------------------------------------------------------------------------
    def start(self, logger_timeout: float = 300.0) -> PredictionService:
        """Start the logger process, and the threads that seal old segments and follow the alias.

        Waits (up to `logger_timeout` s) until the logger runs, so that a service that answers also logs
        and a stop right after the first requests finds a logger ready to drain; past that it serves anyway
        (its rows wait in the spool) and says so.
        """
        self.logger.start()
        self._sealer.start()
        if self.follower is not None:
            self.follower.start()
        if not self.logger.ready.wait(logger_timeout):
            self._error(f"the logger process has not started within {logger_timeout:g} s: serving, rows wait")
        return self

    def close(self) -> dict[str, Any]:
        """Stop following, seal what is buffered and have the logger log it (within `drain_seconds`);
        returns the final stats. What cannot be logged in time stays in the spool, for the next replica.
        """
        with self._close_lock:
            if self._closed is not None:
                return self._closed
            self._stop.set()
            if self.follower is not None:
                self.follower.stop()
            self.spool.seal()
            final = self.logger.stop(self.drain_seconds, self.spool.counts)
            self.spool.close()
            self._closed = {**self.stats(), "drained": bool(final.get("drained"))}
            for model in [*self._replaced, self.model]:
                model.discard()
            return self._closed

    def _seal_old(self) -> None:
        every = min(self.spool.flush_seconds / 4, 0.5)
        while not self._stop.wait(every):
            try:
                self.spool.seal(older_than=self.spool.flush_seconds)
            except Exception as exc:  # never silently
                self._error(f"sealing a spool segment: {type(exc).__name__}: {exc}")

    def _error(self, message: str) -> None:
        log.warning("serve %s: %s", self.name, message)
        self.errors = [*self.errors[-99:], f"{time.strftime('%H:%M:%S')} {message}"]

    # -- the model -------------------------------------------------------------------------------------
    def switch(self, new: LoadedModel) -> None:
        """Answer with `new` from now on (one assignment: no request sees neither model)."""
        old, self.model = self.model, new
        record = {"previous": old.version, "version": new.version, "load_seconds": round(new.load_seconds, 3)}
        self.switches.append({**record, "at": time.time()})
        self.spool.event("switch", **record, reason=f"{self.model_uri} moved from {old.label} to {new.label}")
        log.warning("serve %s: now answering with %s (was %s)", self.name, new.label, old.label)
        self._replaced.append(old)
        forget = threading.Timer(60.0, old.discard)  # requests to it finish first
        forget.daemon = True
        forget.start()

    # -- answering ------------------------------------------------------------------------------------
    def answer(self, body: bytes, content_type: str | None) -> Reply:
        """Parse, predict and format one request with MLflow's scoring code; prepare its journal entry."""
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import invocations

        model = self.model
        capture = _Capture(model)
        try:
            result = invocations(body, content_type or "", capture, model.input_schema)
        except MlflowException as exc:
            return Reply(exc.serialize_as_json(), exc.get_http_status_code(), "application/json", model)
        except Exception as exc:
            return Reply(
                f'{{"error_code": "INTERNAL_ERROR", "message": "{type(exc).__name__}"}}', 500, "application/json", model
            )
        reply = Reply(result.response, result.status, result.mimetype, model)
        if result.status == 200 and capture.data is not None:
            reply.entry = self._entry(model, capture)
        return reply

    def _entry(self, model: LoadedModel, capture: _Capture) -> Entry | None:
        X, columns = as_rows(capture.data)
        if X is None:
            self.unlogged["requests"] += 1  # e.g. named tensors: answered, but no rows to check
            return None
        predictions, _ = as_rows(capture.predictions)
        if predictions is not None and len(predictions) != len(X):
            predictions = None
        place = (model.version, model.uri, tuple(columns) if columns else None)
        if place not in self._headers:  # one header (and its key) per version and column set
            header = {"model_uri": model.uri, "version": model.version, "label": model.label, "columns": columns}
            self._headers[place] = (header, json.dumps(header, sort_keys=True))
        header, key = self._headers[place]
        return Spool.entry(header, X, predictions, key=key)

    def journal(self, reply: Reply) -> None:
        """Write a reply's rows to the spool: call it just before the reply goes out."""
        self.statuses[reply.status] += 1
        if reply.entry is not None:
            try:
                self.spool.write(reply.entry)
            except Exception as exc:  # the client still gets its answer; the loss is counted and said
                self.unlogged["rows"] += reply.entry.rows
                self._error(f"cannot journal {reply.entry.rows} rows: {type(exc).__name__}: {exc}")

    # -- state ------------------------------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        from mlflow.version import VERSION

        return {**self.model.info(), "service": self.name, "follows": self.follower is not None, "mlflow": VERSION}

    def stats(self) -> dict[str, Any]:
        logged, spool = self.logger.status, self.spool.stats()
        counts = {key: logged.get(key, 0) for key in LOGGED}
        settled = counts["shipped_rows"] + counts["dropped_rows"] + counts["unloggable_rows"]
        spool_rows = spool["rows"] + counts["adopted_rows"] - settled
        switches_pending = max(0, len(self.switches) - counts["switches_logged"])
        return {
            "service": self.name,
            "replica": self.spool.replica,
            "model_version": self.model.version,
            "uptime_s": round(time.time() - self.started_at, 1),
            "answered": dict(sorted(self.statuses.items())),
            "rows": spool["rows"],
            "requests": spool["requests"],
            **counts,
            "spool_rows": spool_rows,
            "switches_pending": switches_pending,
            "logged": spool_rows == 0 and switches_pending == 0,  # all answered so far is in MLflow
            "spool_bytes": spool["open_bytes"] + logged.get("ready_bytes", 0),
            "spool_dir": str(self.spool.dir),
            "unlogged_rows": self.unlogged["rows"],
            "unlogged_requests": self.unlogged["requests"],
            "tracker": "unreachable" if logged.get("outage") else "ok",
            "outages": logged.get("outages", 0),
            "logger": self.logger.health(),
            "logger_pid": self.logger.pid,
            "service_run_id": logged.get("service_run"),
            "switches": self.switches[-20:],
            "last_error": self.errors[-1] if self.errors else None,
        }
