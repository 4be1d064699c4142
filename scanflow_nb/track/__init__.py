"""MLflow tracking: the app's embedded store, a real `mlflow server` over it, and the run tree."""

from .server import TrackerServer, running_server
from .store import artifact_root, embedded_uri, experiment_id, get_client, log_values

__all__ = [
    "TrackerServer",
    "artifact_root",
    "embedded_uri",
    "experiment_id",
    "get_client",
    "log_values",
    "running_server",
]
