"""What every back end needs to run a service executor: its command line, its environment, its health check.

A model service is `scanflow serve MODEL` (the serve package's own command line) logging to the run's
tracker and experiment, with its journal in the app's state folder so that replicas share it; a code
service is the executor's script, told where to listen by SCANFLOW_SERVICE_HOST / SCANFLOW_SERVICE_PORT.
"""

from __future__ import annotations

import urllib.request

from ..files import state_dir
from .backend import Launch

SERVICE_START_TIMEOUT = 300.0  # seconds a service may take to answer its health check (unless its timeout says)
SERVICE_STOP_GRACE = 60.0  # seconds a service may take to flush and end once asked to stop


def service_command(launch: Launch, python: str, host: str, app_dir=None) -> list[str]:
    """The command line of a service listening on `host` (inside its container for docker and swarm)."""
    ex = launch.executor
    if ex.model is None:
        return [python, "-P", str(launch.script), *launch.args]
    from ..serve.process import command  # the serve package (numpy and more): only for a model service
    from ..serve.spool import spool_root

    spool = spool_root(state_dir(app_dir or launch.app_dir), f"{launch.workflow}/{ex.name}")
    env = launch.env
    cmd = command(
        ex.model, env["MLFLOW_TRACKING_URI"], env["SCANFLOW_EXPERIMENT"], ex.name, host, ex.port, spool, python
    )
    return cmd + launch.args


def service_env(launch: Launch, host: str) -> dict[str, str]:
    return {**launch.env, "SCANFLOW_SERVICE_HOST": host, "SCANFLOW_SERVICE_PORT": str(launch.executor.port)}


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True if GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status == 200
    except (OSError, ValueError):
        return False
