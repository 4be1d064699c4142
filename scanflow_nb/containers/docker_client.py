"""The Docker engine connection, with one clear error when no engine answers."""

from __future__ import annotations

import functools
import os

from ..errors import BackendUnavailable

HOW_TO_START = (
    "start one (`sudo dockerd` or `systemctl start docker`; this project's .ci/docker.sh "
    "installs and starts it) or run with --backend local"
)


@functools.cache
def _cached_client(docker_host: str | None):
    import docker

    return docker.from_env(timeout=300)


def client():
    """A docker SDK client whose engine answered a ping; BackendUnavailable otherwise."""
    try:
        import docker  # noqa: F401
    except ImportError:
        raise BackendUnavailable(
            "the docker back end needs the docker SDK: pip install 'scanflow_nb[docker]'"
        ) from None
    try:
        c = _cached_client(os.environ.get("DOCKER_HOST"))
        c.ping()
        return c
    except Exception as exc:  # DockerException, requests' ConnectionError, socket errors
        _cached_client.cache_clear()
        raise BackendUnavailable(f"no Docker engine is reachable ({type(exc).__name__}): {HOW_TO_START}") from None
