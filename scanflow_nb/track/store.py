"""The embedded store: SQLite plus an artifact folder inside the app's state folder."""
from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache
from pathlib import Path

from ..errors import TrackerError

_lock = threading.Lock()


def embedded_uri(state_dir: Path) -> str:
    """The tracking URI of the SQLite store in `state_dir` (created on first use)."""
    return f"sqlite:///{Path(state_dir) / 'mlflow.db'}"


def artifact_root(state_dir: Path) -> Path:
    return Path(state_dir) / "mlartifacts"


@lru_cache(maxsize=None)
def _client(uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # the run summary already says where runs are; MLflow would add two lines per closed run
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for noisy in ("mlflow.store.db.utils", "alembic"):  # table creation chatter, not news for a user
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


def get_client(uri: str):
    """One MlflowClient per tracking URI for the whole kernel (creating one for SQLite is slow)."""
    with _lock:
        try:
            return _client(uri)
        except Exception as exc:  # mlflow raises many kinds; the user needs one line
            raise TrackerError(f"cannot open the MLflow store at {uri}: {exc}") from None


def experiment_id(client, name: str, artifact_location: Path | None = None) -> str:
    """The id of experiment `name`, created (with artifacts under `artifact_location`) if missing."""
    try:
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
            return found.experiment_id
        location = (artifact_location / name).as_uri() if artifact_location else None
        return client.create_experiment(name, artifact_location=location)
    except Exception as exc:
        raise TrackerError(f"cannot create MLflow experiment {name!r} at {client.tracking_uri}: {exc}") from None
