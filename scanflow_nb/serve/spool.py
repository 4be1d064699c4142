"""The on-disk journal of one serving replica: every answered row is written here before its reply goes out.

Layout under `root` (one folder per service): `<replica>.lock`, held with flock while the replica lives, and
the folder `<replica>/` with its segments and events, named `<nanoseconds>-<id>` so that names sort in time.
A segment gathers the rows of consecutive requests answered by one model version with one row shape: it is
`.open` while requests append to it, and renamed `.ready` when sealed (at `batch_rows` rows, when older than
the flush interval, on a model switch or a shape change, on stop). An event (`.event`, JSON) is something to
log besides rows: a model switch, an overflow. The shipper logs ready items oldest first and deletes each one
once MLflow has it. This module is the serving process's side; `backlog.Backlog` is the logger process's.

Crash safety: each request is one `os.write` made before the reply, so a process killed afterwards loses
nothing it answered (the page cache keeps it); a record torn by a kill mid-write was never answered and is
skipped on reading. A replica's logger adopts the folders of dead replicas (their lock is free) under the same
root, at start and from time to time, so rows spooled by a killed replica are logged by the next one.

Bounded: while the tracker is away segments pile up; past `max_bytes` the logger drops the oldest ready
segments, counts them and records an overflow event, which it logs: never silent.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ValidationError

_FRAME = struct.Struct("<2scI")  # magic, kind (H header, R record), payload length
_MAGIC = b"SF"
OPEN, READY, EVENT = ".open", ".ready", ".event"


@dataclass
class Segment:
    """The rows of one sealed segment, read back: what one MLflow batch run holds."""

    path: Path
    header: dict[str, Any]
    X: np.ndarray | None
    predictions: np.ndarray | None
    probabilities: np.ndarray | None

    @property
    def rows(self) -> int:
        return 0 if self.X is None else len(self.X)

    @property
    def id(self) -> str:
        return self.path.name.split(".")[0]


@dataclass
class Entry:
    """One answered request, encoded for the journal."""

    header: dict[str, Any]
    signature: tuple
    arrays: list[np.ndarray | None]  # rows, predictions, probabilities
    record: bytes

    @property
    def rows(self) -> int:
        return len(self.arrays[0])

    def split(self, n: int) -> tuple[Entry, Entry]:
        """The first `n` rows and the rest, each encoded again."""
        halves = [
            [None if a is None else a[:n] for a in self.arrays],
            [None if a is None else a[n:] for a in self.arrays],
        ]
        return tuple(Entry(self.header, self.signature, arrays, _frame(b"R", _pack(arrays))) for arrays in halves)


@dataclass
class _Open:
    path: Path
    fd: int
    signature: tuple
    opened: float
    rows: int = 0
    size: int = 0


def _frame(kind: bytes, payload: bytes) -> bytes:
    return _FRAME.pack(_MAGIC, kind, len(payload)) + payload


def _pack(arrays: list[np.ndarray | None]) -> bytes:
    """Arrays as raw bytes, each after its dtype and shape (None: a zero byte); cheaper than .npy headers."""
    parts = []
    for arr in arrays:
        if arr is None:
            parts.append(b"\0")
            continue
        arr = np.ascontiguousarray(arr)
        dtype = arr.dtype.str.encode()
        parts += [
            struct.pack(f"<BB{len(dtype)}sB{arr.ndim}I", 1, len(dtype), dtype, arr.ndim, *arr.shape),
            arr.tobytes(),
        ]
    return b"".join(parts)


def _unpack(payload: bytes, slots: int = 3) -> list[np.ndarray | None]:
    arrays, pos = [], 0
    for _ in range(slots):
        if payload[pos] == 0:
            arrays.append(None)
            pos += 1
            continue
        size = payload[pos + 1]
        dtype = np.dtype(payload[pos + 2 : pos + 2 + size].decode())
        pos += 2 + size
        ndim = payload[pos]
        shape = struct.unpack_from(f"<{ndim}I", payload, pos + 1)
        pos += 1 + 4 * ndim
        nbytes = dtype.itemsize * int(np.prod(shape))
        arrays.append(np.frombuffer(payload[pos : pos + nbytes], dtype=dtype).reshape(shape))
        pos += nbytes
    return arrays


def _kind(arr: np.ndarray | None) -> tuple | None:
    if arr is None:
        return None
    return ("num" if arr.dtype.kind in "biuf" else arr.dtype.kind, arr.shape[1:])


def read_segment(path: Path) -> Segment:
    """Read a segment file; a torn last record (the writer was killed mid-write) is left out."""
    data = Path(path).read_bytes()
    header: dict[str, Any] = {}
    parts: list[list[np.ndarray]] = [[], [], []]
    pos = 0
    while pos + _FRAME.size <= len(data):
        magic, kind, length = _FRAME.unpack_from(data, pos)
        start, pos = pos + _FRAME.size, pos + _FRAME.size + length
        if magic != _MAGIC or pos > len(data):
            break
        payload = data[start:pos]
        if kind == b"H":
            header = json.loads(payload)
            continue
        for i, arr in enumerate(_unpack(payload)):
            if arr is not None:
                parts[i].append(arr)
    joined = [np.concatenate(p) if p else None for p in parts]
    return Segment(Path(path), header, *joined)


class Spool:
    """The journal of replica `replica` of a service, in `root` (created if missing): the serving process's side.

    It writes and seals segments and records events; the replica's logger process (`Backlog`, `Shipper`)
    takes them from there. It holds `<replica>.lock` while it lives.
    """

    def __init__(
        self,
        root: str | Path,
        batch_rows: int = 1000,
        flush_seconds: float = 10.0,
        max_bytes: int = 512 * 2**20,
        replica: str | None = None,
    ):
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            raise ValidationError(f"batch rows must be a whole number >= 1, got {batch_rows!r}")
        if not isinstance(flush_seconds, (int, float)) or not flush_seconds > 0:
            raise ValidationError(f"flush seconds must be a positive number, got {flush_seconds!r}")
        if not isinstance(max_bytes, int) or max_bytes < 2**20:
            raise ValidationError(f"the spool needs at least 1 MiB, got {max_bytes!r} bytes")
        self.root = Path(root)
        self.batch_rows, self.flush_seconds, self.max_bytes = batch_rows, float(flush_seconds), max_bytes
        self.replica = replica or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.root / f"{self.replica}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.dir = self.root / self.replica
        self.dir.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._open: _Open | None = None
        self.counts = {"rows": 0, "requests": 0}
        self.closed = False

    # -- the request path ----------------------------------------------------------------------
    @staticmethod
    def entry(header: dict[str, Any], X: np.ndarray, predictions=None, probabilities=None, key=None) -> Entry:
        """Encode one answered request (any thread); `write` then journals it in one write.

        `key`: a string standing for `header` (the caller's cache of it), else its JSON.
        """
        key = key if key is not None else json.dumps(header, sort_keys=True)
        signature = (key, _kind(X), _kind(predictions), _kind(probabilities))
        arrays = [X, predictions, probabilities]
        return Entry(header, signature, arrays, _frame(b"R", _pack(arrays)))

    def write(self, entry: Entry) -> None:
        """Journal one answered request, before its reply goes out (split where a batch fills up)."""
        with self._lock:
            if self.closed:
                raise ValidationError("the spool is closed")
            self.counts["rows"] += entry.rows
            self.counts["requests"] += 1
            while entry is not None:
                seg = self._open
                if seg is not None and seg.signature != entry.signature:
                    self._seal()
                    seg = None
                if seg is None:
                    seg = self._start(entry.header, entry.signature)
                room = self.batch_rows - seg.rows
                part, entry = entry.split(room) if entry.rows > room else (entry, None)
                os.write(seg.fd, part.record)
                seg.rows += part.rows
                seg.size += len(part.record)
                if seg.rows >= self.batch_rows:
                    self._seal()

    def _start(self, header: dict[str, Any], signature: tuple) -> _Open:
        path = self.dir / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{OPEN}"
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
        first = _frame(b"H", json.dumps({**header, "replica": self.replica}).encode())
        os.write(fd, first)
        self._open = _Open(path, fd, signature, time.monotonic(), size=len(first))
        return self._open

    # -- sealing -----------------------------------------------------------------------------------
    def seal(self, older_than: float | None = None) -> bool:
        """Seal the open segment (only if it is older than `older_than` s, when given); True if sealed."""
        with self._lock:
            seg = self._open
            if seg is None or (older_than is not None and time.monotonic() - seg.opened < older_than):
                return False
            self._seal()
            return True

    def _seal(self) -> None:
        seg, self._open = self._open, None
        os.close(seg.fd)
        os.replace(seg.path, seg.path.with_suffix(READY))

    def event(self, kind: str, **data: Any) -> None:
        """Record something to log besides rows (e.g. a model switch), in order with the segments."""
        with self._lock:
            write_event(self.dir, kind, replica=self.replica, **data)

    # -- state -------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Rows and requests journaled, and the open segment's rows and bytes."""
        with self._lock:
            seg = self._open
            return {**self.counts, "open_rows": seg.rows if seg else 0, "open_bytes": seg.size if seg else 0}

    def close(self) -> None:
        """Seal what is open and let go of the lock; the folder goes when nothing is left in it.

        Call it once the replica's logger process has ended: what is left waits for the next replica.
        """
        with self._lock:
            if self.closed:
                return
            if self._open is not None:
                self._seal()
            self.closed = True
        with contextlib.suppress(OSError):
            self.dir.rmdir()  # only if empty
        if not self.dir.exists():
            (self.root / f"{self.replica}.lock").unlink(missing_ok=True)
        os.close(self._lock_fd)


def write_event(folder: Path, kind: str, **data: Any) -> Path:
    """An event file in `folder`, named to sort in time with the segments, written whole or not at all."""
    path = folder / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{EVENT}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"kind": kind, "at": time.time(), **data}))
    os.replace(tmp, path)
    return path


def spool_root(base: str | Path, service: str) -> Path:
    """Where the replicas of `service` keep their journals, under `base` (e.g. the app's state folder)."""
    return Path(base) / "serve" / service / "spool"
