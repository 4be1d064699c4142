"""The prediction service: serve the model the checker supervises, log its traffic, follow the planner.

    serve("models:/digits@champion", tracking_uri, "serve", port=5005)      # blocking, as `scanflow serve`
    svc = start_service("models:/digits@champion", app=app, workflow="serve")  # beside the kernel
    svc.url, svc.version(), svc.stats(); svc.wait_logged(); svc.stop()
    wait_logged(url)     # any service, e.g. one a workflow run started: until MLflow has what it answered
    wait_version(url, 2)  # until it answers with model version 2 (it follows the planner's alias)

Heavy imports (mlflow, fastapi, uvicorn, pandas) happen when a service starts.
"""

from .http import asgi_app, serve
from .process import ServiceProcess, running_services, start_service, stop_service, wait_logged, wait_version
from .service import PredictionService
from .spool import Spool, read_segment

__all__ = [
    "PredictionService",
    "ServiceProcess",
    "Spool",
    "asgi_app",
    "read_segment",
    "running_services",
    "serve",
    "start_service",
    "stop_service",
    "wait_logged",
    "wait_version",
]
