"""Small file helpers: the app's state folder, atomic writes and content digests (stat first, hash what changed)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import time
from pathlib import Path

STATE_DIR = ".scanflow"  # inside an app folder: the MLflow store, logs, caches, label store (never in images)


def state_dir(app_dir: str | Path) -> Path:
    """The state folder of the app in `app_dir`."""
    return Path(app_dir) / STATE_DIR


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` so that readers see either the old or the new file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def digest(path: Path) -> str:
    """sha256 of a file, or of every file under a folder (names and contents); "missing" if absent."""
    return FileDigests().digest(path)


class FileDigests:
    """Content digests that read only what changed: a file whose size, mtime and inode are as recorded
    keeps its recorded sha256, so checking an unchanged file costs one stat.

    `memo` (a JSON file) carries the records from one run to the next; `save()` writes it back when
    something was hashed. A file modified within `RACY` seconds of being hashed is hashed again next
    time (a same-size edit inside one mtime tick would otherwise go unseen, git's "racy" case).
    """

    RACY = 2.0

    def __init__(self, memo: Path | None = None):
        self.memo = Path(memo) if memo is not None else None
        self._records: dict[str, list] = {}
        if self.memo is not None:
            try:
                self._records = json.loads(self.memo.read_text())
            except (OSError, ValueError):
                pass
        self._changed = False

    def digest(self, path: Path) -> str:
        """sha256 of a file, or of a folder's files (relative names and their digests); "missing" if absent."""
        path = Path(path)
        try:
            st = path.stat()
        except OSError:
            return "missing"
        if stat.S_ISDIR(st.st_mode):
            h = hashlib.sha256()
            for name, item, item_st in sorted(_walk(path, "")):
                h.update(f"{name}\0{self._file(item, item_st)}\n".encode())
            return h.hexdigest()
        return self._file(path, st)

    def _file(self, path: Path, st: os.stat_result) -> str:
        key = str(path)
        signature = [st.st_size, st.st_mtime_ns, st.st_ino]
        record = self._records.get(key)
        if record is not None and record[:3] == signature and st.st_mtime_ns < record[3] - self.RACY * 1e9:
            return record[4]
        hashed_at = time.time_ns()
        h = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                h.update(chunk)
        self._records[key] = [*signature, hashed_at, h.hexdigest()]
        self._changed = True
        return h.hexdigest()

    def save(self) -> None:
        """Write the records back (only if something was hashed)."""
        if self.memo is not None and self._changed:
            atomic_write(self.memo, json.dumps(self._records, separators=(",", ":")))
            self._changed = False


def _walk(folder: Path, prefix: str):
    """(relative name, path, stat) of every file under `folder`, following no symlinked folders."""
    with os.scandir(folder) as entries:
        for entry in entries:
            name = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(Path(entry.path), f"{name}/")
            elif entry.is_file():
                yield name, Path(entry.path), entry.stat()
