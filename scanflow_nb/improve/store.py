"""Labels persisted the moment they are given: a small SQLite file, one row per action, replayable after a crash."""

import json
import sqlite3
import threading
import time
from pathlib import Path

from ..errors import ScanflowError, ValidationError


class LabelStoreError(ScanflowError):
    """The label store file cannot be read or written (disk full, read-only, not a label store...)."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, classes TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS actions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL REFERENCES sessions(name),
    sample INTEGER NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('label', 'skip')), label TEXT, at REAL NOT NULL);
"""


class LabelStore:
    """Label sessions in one SQLite file (by default `<app>/.scanflow/labels.sqlite`).

    A session is a named run of labeling over one pool (its fingerprint is checked on reopening).
    Each label or skip is one committed row; undo deletes the latest row. Safe to share between threads.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: every commit survives a killed process
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LabelStoreError(f"cannot use {self.path} as a label store: {exc}") from None

    def open_session(self, name: str, fingerprint: str, classes) -> list:
        """Create the session, or check that an existing one was labeling the same pool (same fingerprint).

        Returns the session's classes: `classes` for a new session, those stored (grown since) for an old one.
        """
        if not name or not isinstance(name, str):
            raise ValidationError(f"a label session needs a non-empty name, got {name!r}")
        with self._lock:
            row = self._db.execute("SELECT fingerprint, classes FROM sessions WHERE name=?", (name,)).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO sessions VALUES (?, ?, ?, ?)",
                    (name, fingerprint, json.dumps(list(classes)), time.time()),
                )
                return list(classes)
        if row[0] != fingerprint:
            raise ValidationError(
                f"label session {name!r} in {self.path} was made for another pool or other "
                "classes: open it with the same pool, or choose a new session name"
            )
        return json.loads(row[1])

    def set_classes(self, session: str, classes) -> None:
        """Record the session's classes after a new one joined (committed before returning)."""
        try:
            with self._lock:
                self._db.execute("UPDATE sessions SET classes=? WHERE name=?", (json.dumps(list(classes)), session))
        except (sqlite3.Error, TypeError) as exc:
            raise LabelStoreError(
                f"cannot store the classes of label session {session!r} in {self.path}: {exc}"
            ) from None

    def classes(self, session: str) -> list:
        """The session's classes, as they grew."""
        with self._lock:
            row = self._db.execute("SELECT classes FROM sessions WHERE name=?", (session,)).fetchone()
        if row is None:
            raise ValidationError(f"no label session {session!r} in {self.path}")
        return json.loads(row[0])

    def add(self, session: str, sample: int, label=None, kind: str = "label") -> None:
        """Persist one action now (committed before returning)."""
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO actions (session, sample, kind, label, at) VALUES (?, ?, ?, ?, ?)",
                    (session, int(sample), kind, json.dumps(label), time.time()),
                )
        except (sqlite3.Error, TypeError) as exc:
            raise LabelStoreError(f"cannot store the label of sample {sample} in {self.path}: {exc}") from None

    def undo(self, session: str) -> tuple[int, str, object]:
        """Delete the latest action of the session and return it as (sample, kind, label)."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq, sample, kind, label FROM actions WHERE session=? ORDER BY seq DESC LIMIT 1", (session,)
            ).fetchone()
            if row is None:
                raise ValidationError(f"nothing to undo in label session {session!r}")
            self._db.execute("DELETE FROM actions WHERE seq=?", (row[0],))
        return row[1], row[2], json.loads(row[3])

    def actions(self, session: str) -> list[tuple[int, str, object]]:
        """Every action of the session, oldest first, as (sample, kind, label)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sample, kind, label FROM actions WHERE session=? ORDER BY seq", (session,)
            ).fetchall()
        return [(sample, kind, json.loads(label)) for sample, kind, label in rows]

    def labels(self, session: str) -> dict[int, object]:
        """{sample id: label} of the session."""
        return {sample: label for sample, kind, label in self.actions(session) if kind == "label"}

    def sessions(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT name FROM sessions ORDER BY created")]

    def export_csv(self, session: str, path) -> Path:
        """Write the session's actions to a CSV file (what is logged to MLflow at the end of a session)."""
        import csv

        path = Path(path)
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, sample, kind, label, at FROM actions WHERE session=? ORDER BY seq", (session,)
            ).fetchall()
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["seq", "sample", "kind", "label", "at"])
            writer.writerows((seq, sample, kind, json.loads(label), at) for seq, sample, kind, label, at in rows)
        return path

    def close(self) -> None:
        with self._lock:
            self._db.close()
