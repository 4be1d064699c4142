"""Fixtures for container tests: a reachable engine, the registry-free base image, leftover audits.

Tests that need Docker are skipped with the reason when no engine answers (run .ci/docker.sh to
install and start one); they are never silently passed. Every image the session builds carries the
session's label (SCANFLOW_LABELS) and is removed when the session ends; images built before it (the
base and tracker images of `make machine`, a user's own) are never touched.
"""

from __future__ import annotations

import os
import textwrap
import threading
import uuid

import pytest

from scanflow_nb import App
from scanflow_nb.containers.base import DEFAULT_BASE_TAG
from scanflow_nb.errors import BackendUnavailable

BASE = os.environ.get("SCANFLOW_TEST_BASE_IMAGE", DEFAULT_BASE_TAG)
# a service that answers 200 to every GET on the host and port its back end gives it
HEALTHY = textwrap.dedent("""\
    import http.server, os
    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
    address = (os.environ["SCANFLOW_SERVICE_HOST"], int(os.environ["SCANFLOW_SERVICE_PORT"]))
    http.server.HTTPServer(address, Healthy).serve_forever()
""")
SESSION_LABEL = f"scanflow.test-session={uuid.uuid4().hex[:12]}"


def pytest_configure(config):
    """Label what this session builds (tutorial kernels and subprocesses inherit the variable)."""
    labels = os.environ.get("SCANFLOW_LABELS")
    os.environ["SCANFLOW_LABELS"] = f"{labels},{SESSION_LABEL}" if labels else SESSION_LABEL


def pytest_sessionfinish(session, exitstatus):
    """Remove the images this session built, but a tracker image (the next session reuses it)."""
    try:
        from scanflow_nb.containers.docker_client import client

        images = client().images.list(filters={"label": SESSION_LABEL})
    except Exception:  # no engine or no docker SDK: nothing was built
        return
    removed = 0
    for image in images:
        if image.labels.get("scanflow.image") == "tracker":
            continue
        try:
            client().images.remove(image.id)
            removed += 1
        except Exception:  # in use, or gone already
            pass
    if removed:
        print(f"\nremoved {removed} image(s) this test session built")


def engine():
    from scanflow_nb.containers.docker_client import client

    try:
        return client()
    except BackendUnavailable as exc:
        pytest.skip(f"needs a Docker engine: {exc}")


@pytest.fixture(scope="session")
def docker_engine():
    return engine()


@pytest.fixture(scope="session")
def base_image(docker_engine):
    """The debootstrap base image (built by .ci/docker.sh; built here, slowly, if missing)."""
    from scanflow_nb.containers.base import base_image_exists, build_base_image

    if not base_image_exists(BASE):
        if os.geteuid() != 0 or not __import__("shutil").which("debootstrap"):
            pytest.skip(f"base image {BASE} is missing and cannot be built here: run .ci/docker.sh")
        build_base_image(BASE, echo=lambda line: None)
    os.environ["SCANFLOW_BASE_IMAGE"] = BASE
    return BASE


@pytest.fixture
def docker_backend(base_image):
    """A factory of DockerBackends on the test base image, build output kept quiet."""
    from scanflow_nb.run.docker import DockerBackend

    def make(**kwargs):
        kwargs.setdefault("echo", lambda line: None)
        return DockerBackend(base_image=base_image, **kwargs)

    return make


@pytest.fixture
def swarm_engine(docker_engine):
    if docker_engine.info().get("Swarm", {}).get("LocalNodeState") != "active":
        pytest.skip("needs a single-node swarm: `docker swarm init --advertise-addr 127.0.0.1` (.ci/docker.sh does it)")
    return docker_engine


def run_within(app: App, workflow: str, seconds: float, **options):
    """`app.run(workflow)`, failing the test if the run is not over within `seconds` (a run that waits for
    ever must fail its test, not hang the suite)."""
    outcome = []

    def run():
        try:
            outcome.append(app.run(workflow, echo=False, **options))
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(seconds)
    assert outcome, f"the run of {workflow!r} was not over after {seconds:g} s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def new_app(app_dir, *workflows) -> App:
    app = App(app_dir)
    app.path.mkdir(parents=True, exist_ok=True)
    for wf in workflows:
        app.add(wf)
    return app
