"""What one replica's spool holds for MLflow: the logger process's side of the journal (see `spool`).

The serving process seals segments (`.ready`) and records events (`.event`) in the replica's folder; a
`Backlog` lists them oldest first for the shipper, forgets each one once MLflow has it, keeps the folder under
its bound (dropping the oldest ready segments, counted and recorded in an overflow event) and adopts the
folders of dead replicas under the same root (their lock is free).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from .spool import EVENT, OPEN, READY, read_segment, write_event

COUNTS = ("dropped_rows", "dropped_segments", "adopted_segments", "adopted_rows")


class Backlog:
    """The sealed segments and events of replica `replica` under `root`, as its logger sees them."""

    def __init__(self, root: str | Path, replica: str, max_bytes: int, counts: dict[str, int] | None = None):
        self.root, self.replica, self.max_bytes = Path(root), replica, max_bytes
        self.dir = self.root / replica
        self._lock = threading.Lock()
        self._ready: dict[Path, tuple[int, int]] = {}  # sealed segment -> (bytes, rows)
        self._claimed: set[Path] = set()  # being shipped: never dropped meanwhile
        self.counts = {key: int((counts or {}).get(key, 0)) for key in COUNTS}

    def refresh(self) -> None:
        """Take in the segments sealed since the last look."""
        found = set(self.dir.glob(f"*{READY}"))
        with self._lock:
            for path in list(self._ready):
                if path not in found:
                    self._ready.pop(path)
            for path in found - self._ready.keys():
                try:
                    self._ready[path] = (path.stat().st_size, read_segment(path).rows)
                except FileNotFoundError:
                    continue

    def pending(self) -> list[Path]:
        """Sealed segments and events, oldest first."""
        self.refresh()
        with self._lock:
            return sorted([*self._ready, *self.dir.glob(f"*{EVENT}")], key=lambda p: p.name)

    def claim(self, path: Path) -> bool:
        """Mark an item as being shipped (False if it was dropped meanwhile)."""
        with self._lock:
            if path in self._claimed or (path.suffix == READY and path not in self._ready):
                return False
            self._claimed.add(path)
            return True

    def done(self, path: Path) -> None:
        """The item is in MLflow: forget it."""
        with self._lock:
            self._claimed.discard(path)
            self._ready.pop(path, None)
            path.unlink(missing_ok=True)

    def release(self, path: Path) -> None:
        """Shipping failed: the item stays for the next attempt."""
        with self._lock:
            self._claimed.discard(path)

    def bound(self) -> int:
        """Drop the oldest ready segments past `max_bytes` (never one being shipped); returns the rows dropped."""
        self.refresh()
        with self._lock:
            total = sum(size for size, _ in self._ready.values())
            dropped_rows = dropped = 0
            for path in sorted(self._ready):
                if total <= self.max_bytes:
                    break
                if path in self._claimed:
                    continue
                size, rows = self._ready.pop(path)
                path.unlink(missing_ok=True)
                total -= size
                dropped_rows += rows
                dropped += 1
            if dropped:
                self.counts["dropped_rows"] += dropped_rows
                self.counts["dropped_segments"] += dropped
                write_event(
                    self.dir,
                    "overflow",
                    replica=self.replica,
                    rows=dropped_rows,
                    segments=dropped,
                    total_dropped_rows=self.counts["dropped_rows"],
                )
            return dropped_rows

    def adopt(self) -> int:
        """Take over the folders of dead replicas under the same root; returns how many segments came."""
        adopted = 0
        for lock in self.root.glob("*.lock"):
            replica = lock.name[: -len(".lock")]
            if replica == self.replica:
                continue
            try:
                fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # alive
                adopted += self._take(self.root / replica)
                lock.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return adopted

    def _take(self, folder: Path) -> int:
        taken = 0
        for item in sorted(folder.glob("*")) if folder.is_dir() else []:
            if item.suffix in (OPEN, READY):
                target = self.dir / item.with_suffix(READY).name
                os.replace(item, target)
                rows = read_segment(target).rows
                with self._lock:
                    self._ready[target] = (target.stat().st_size, rows)
                    self.counts["adopted_segments"] += 1
                    self.counts["adopted_rows"] += rows
                taken += 1
            elif item.suffix == EVENT:
                os.replace(item, self.dir / item.name)
        shutil.rmtree(folder, ignore_errors=True)
        return taken

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self.counts,
                "ready_rows": sum(rows for _, rows in self._ready.values()),
                "ready_bytes": sum(size for size, _ in self._ready.values()),
            }
