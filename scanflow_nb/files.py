"""Small file helpers: the app's state folder, atomic writes and content digests."""

from __future__ import annotations

import hashlib
import os
import tempfile
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
    path = Path(path)
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if path.is_dir():
        h = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(item.relative_to(path)).encode() + b"\0" + item.read_bytes())
        return h.hexdigest()
    return "missing"
