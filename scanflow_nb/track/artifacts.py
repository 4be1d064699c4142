"""Files attached to MLflow runs without a second copy where the artifact store is a local folder."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

COMPRESS_ABOVE = 1024 * 1024  # bytes: larger files sent to a remote artifact store are gzipped


def local_folder(artifact_uri: str | None) -> Path | None:
    """The folder behind a `file:` artifact URI (or a plain path), None for a remote store."""
    if not artifact_uri:
        return None
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and artifact_uri.startswith("/"):
        return Path(artifact_uri)
    return None


def attach(client, run_id: str, artifact_uri: str | None, path: Path, artifact_path: str, link: bool) -> None:
    """Attach file `path` to run `run_id` under `artifact_path`.

    With `link` (a file that is never rewritten in place, like a log), a local artifact store gets a
    hard link: the artifact is that same file. Otherwise it is copied; gzipped if large and remote.
    """
    path = Path(path)
    folder = local_folder(artifact_uri)
    if folder is not None:
        target = folder / artifact_path / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        if link:
            try:
                os.link(path, target)
                return
            except OSError:  # another file system, or links not allowed: copy
                pass
        shutil.copyfile(path, target)
        return
    if path.stat().st_size <= COMPRESS_ABOVE:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        packed = Path(tmp) / f"{path.name}.gz"
        with open(path, "rb") as src, gzip.open(packed, "wb") as dst:
            shutil.copyfileobj(src, dst)
        client.log_artifact(run_id, str(packed), artifact_path=artifact_path)
