"""The embedded store: SQLite plus an artifact folder inside the app's state folder."""

from __future__ import annotations

import logging
import os
import threading
from functools import cache
from pathlib import Path

from ..errors import NotFoundError, TrackerError

_lock = threading.Lock()


def embedded_uri(state_dir: Path) -> str:
    """The tracking URI of the SQLite store in `state_dir` (created on first use)."""
    return f"sqlite:///{Path(state_dir) / 'mlflow.db'}"


def artifact_root(state_dir: Path) -> Path:
    return default_artifact_root(embedded_uri(state_dir))


@cache
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


def log_values(
    client,
    run_id: str,
    params: dict | None = None,
    metrics: dict | None = None,
    tags: dict | None = None,
    step: int = 0,
) -> None:
    """Log plain dicts to run `run_id` in one call: params and tags as strings, metrics as floats at one time.

    Values that are None are left out; the one place that turns dicts into MLflow entities.
    """
    import time

    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v is not None],
        params=[Param(k, str(v)) for k, v in (params or {}).items() if v is not None],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items() if v is not None],
    )


def default_artifact_root(tracking_uri: str) -> Path | None:
    """Where a SQLite store's artifacts go: beside the database, never the current folder."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts"
    return None


def experiment_id(client, name: str, create: bool = True) -> str:
    """The id of experiment `name`; created if missing (and `create`), restored if deleted."""
    try:
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
            return found.experiment_id
    except Exception as exc:
        raise TrackerError(f"cannot reach MLflow at {client.tracking_uri}: {exc}") from None
    if not create:
        raise NotFoundError(f"MLflow experiment {name!r} does not exist at {client.tracking_uri}")
    root = default_artifact_root(client.tracking_uri)
    try:
        return client.create_experiment(name, artifact_location=(root / name).as_uri() if root else None)
    except Exception as exc:
        raced = _existing(client, name)  # another thread or process created it meanwhile
        if raced is not None:
            return raced
        raise TrackerError(f"cannot create MLflow experiment {name!r} at {client.tracking_uri}: {exc}") from None


def _existing(client, name: str) -> str | None:
    try:
        found = client.get_experiment_by_name(name)
    except Exception:
        return None
    return found.experiment_id if found is not None else None
