"""The logger process of a serving replica: MLflow writes kept off the serving process (and its GIL).

The serving process only journals answered rows to its spool; this process, one per replica, started and
stopped with it, ships what the spool holds to MLflow (`Shipper`, `Backlog`) and computes the class
probabilities of each batch with the version that answered it. `LoggerProcess` is the serving side's handle:

- it starts `run()` in a new Python, writes the settings as one JSON line on its stdin and reads
  JSON lines back (`{"status": ...}` as its counts change, `{"error": ...}`), so `/stats` and `/health` show them;
- `stop()` writes the stop order (drain within S seconds; the rows the replica answered) and waits for its
  last status; a logger that dies meanwhile is said in the service's log and `/health` and started again;
- the logger runs in a session of its own (a SIGTERM or Ctrl-C to the service's process group must not end
  it before the serving process has stopped taking requests and asks it to drain); it ends when its stdin
  closes without a stop order (the serving process died, and its spool lock with it: the next replica adopts
  the spool) and writes its own log lines to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger("scanflow_nb.serve")

RESTART_DELAYS = (1.0, 2.0, 5.0, 15.0, 60.0)  # seconds before starting a dead logger again, per failure in a row


class LoggerProcess:
    """The serving side of one replica's logger process; `settings` are what `run()` needs (JSON-able)."""

    def __init__(self, settings: dict[str, Any], on_error: Callable[[str], None]):
        self.settings, self.on_error = settings, on_error
        self.status: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None
        self.down: str | None = None  # why the logger is not running, while it is restarted
        self.restarts = 0
        self.ready = threading.Event()  # set by its first status: it has opened the journal and can ship
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # one logger at a time, started or stopped
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> LoggerProcess:
        with self._lock:
            if not self._stopping.is_set():
                self._spawn()
        return self

    def _spawn(self) -> None:
        process = subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import run; raise SystemExit(run())"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            close_fds=True,
            start_new_session=True,
        )
        carried = {"counts": self.status, "service_run": self.status.get("service_run")}  # after a restart
        process.stdin.write(json.dumps({**self.settings, **carried}) + "\n")
        process.stdin.flush()
        self._process = process
        self._reader = threading.Thread(target=self._read, args=(process,), name="scanflow-logger-reader", daemon=True)
        self._reader.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "error" in message:
                self.on_error(message["error"])
            if "status" in message:
                self.status, self.down, self.restarts = message["status"], None, 0
                self.ready.set()
            if message.get("final"):
                self.final = message
        code = process.wait()
        if self._stopping.is_set():
            return
        self.down = f"the logger process exited with code {code}"
        delay = RESTART_DELAYS[min(self.restarts, len(RESTART_DELAYS) - 1)]
        self.on_error(f"{self.down}; starting another in {delay:g} s (rows wait in the spool meanwhile)")
        self.restarts += 1
        if not self._stopping.wait(delay):
            try:
                self.start()
            except OSError as exc:
                self.on_error(f"cannot start the logger process: {exc}")
                self.down = f"{self.down}; cannot start another: {exc}"

    def stop(self, drain_seconds: float, totals: dict[str, int]) -> dict[str, Any]:
        """Have the logger ship what is left within `drain_seconds` and end; returns its last status."""
        with self._lock:
            self._stopping.set()
            if self._process is None or self._process.poll() is not None:  # dead (or never started): one to drain
                self._spawn()
            process = self._process
        try:
            process.stdin.write(json.dumps({"stop": {"drain_seconds": drain_seconds, "totals": totals}}) + "\n")
            process.stdin.close()
        except OSError:  # it is dead already
            pass
        try:
            process.wait(drain_seconds + 30)
        except subprocess.TimeoutExpired:
            self.on_error("the logger process did not end in time: killed (what it had not logged stays in the spool)")
            process.kill()
            process.wait()
        if self._reader is not None:
            self._reader.join(10)
        return self.final or {"status": self.status, "drained": False}

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def health(self) -> str:
        if self.down or self._stopping.is_set():
            return self.down or "stopped"
        return "ok" if self.ready.is_set() else "starting"


class Probabilities:
    """Class probabilities of logged rows by the version that answered them, loaded here on first need."""

    def __init__(self, tracking_uri: str, on_error: Callable[[str], None], keep: int = 2):
        self.tracking_uri, self.on_error, self.keep = tracking_uri, on_error, keep
        self._models: OrderedDict = OrderedDict()
        self._broken: set[tuple] = set()

    def __call__(self, header: dict[str, Any], X: np.ndarray) -> tuple[np.ndarray | None, list | None]:
        key = (header.get("model_uri"), header.get("version"))
        if not key[0] or key in self._broken:
            return None, None
        model = self._model(key)
        if model is None or model.predict_proba is None:
            return None, None
        try:
            given = X
            if model.takes_frames and header.get("columns"):
                import pandas as pd

                given = pd.DataFrame(X, columns=header["columns"])
            return np.asarray(model.predict_proba(given), dtype=float), model.classes
        except Exception as exc:
            self._broken.add(key)
            self.on_error(f"{model.label} answers but its predict_proba fails ({exc}): logging predictions only")
            return None, None

    def _model(self, key: tuple):
        from ..check import tracking as tr
        from ..errors import ScanflowError, TrackerError
        from .model import load_model

        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        try:
            model = load_model(key[0], self.tracking_uri, key[1])
        except TrackerError:
            raise
        except ScanflowError as exc:
            tr.ensure_reachable(self.tracking_uri)  # a download cut by an outage is tried again later
            self._broken.add(key)
            self.on_error(f"cannot load {key[0]} (v{key[1]}) for its probabilities ({exc}): logging predictions only")
            return None
        self._models[key] = model
        while len(self._models) > self.keep:
            self._models.popitem(last=False)[1].discard()
        return model

    def close(self) -> None:
        for model in self._models.values():
            model.discard()
        self._models.clear()


def warm_up(settings: dict[str, Any], probabilities: Probabilities, on_error: Callable[[str], None]) -> None:
    """Import MLflow and load the served version before saying ready, not at the first batch: on a busy
    machine that cold start takes long enough to outlast a short service's stop."""
    from ..errors import ScanflowError
    from ..track import get_client

    try:
        get_client(settings["tracking_uri"])
        if settings.get("model_uri"):
            probabilities._model((settings["model_uri"], settings.get("version")))
    except (ScanflowError, OSError) as exc:  # the tracker away, ...: the shipper tries again as it ships
        on_error(f"warming up: {type(exc).__name__}: {exc}")


def run() -> int:
    """The logger process: settings on the first stdin line, then ship until told to stop (or orphaned)."""
    from .backlog import Backlog
    from .shipper import Shipper

    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever else prints goes to the service's log, not into the messages
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lock = threading.Lock()

    def say(**message: Any) -> None:
        with lock:
            out.write(json.dumps(message, default=str) + "\n")
            out.flush()

    settings = json.loads(sys.stdin.readline())
    parent = os.getppid()
    backlog = Backlog(settings["root"], settings["replica"], settings["max_bytes"], settings.get("counts"))
    probabilities = Probabilities(settings["tracking_uri"], lambda message: say(error=message))
    warm_up(settings, probabilities, lambda message: say(error=message))
    shipper = Shipper(
        backlog,
        settings["tracking_uri"],
        settings["experiment"],
        settings["service"],
        settings.get("params"),
        parent_run_id=settings.get("parent_run_id"),
        probabilities=probabilities,
        on_error=lambda message: say(error=message),
        counts=settings.get("counts"),
        service_run=settings.get("service_run"),
    ).start()

    def status() -> dict[str, Any]:
        return {
            **shipper.counts,
            **backlog.stats(),
            "outage": shipper.outage,
            "outages": len(shipper.outages),
            "service_run": shipper.service_run,
        }

    def report() -> None:
        last = None
        while True:
            if os.getppid() != parent:  # the serving process is gone: so is its lock, the next replica adopts
                os._exit(3)
            now = status()
            if now != last:
                say(status=now)
                last = now
            time.sleep(0.2)

    threading.Thread(target=report, name="scanflow-logger-report", daemon=True).start()
    line = sys.stdin.readline()
    if not line:
        os._exit(3)
    order = json.loads(line)["stop"]
    drained = shipper.stop(order["drain_seconds"], order["totals"])
    probabilities.close()
    say(status=status(), drained=drained, final=True)
    return 0
