"""The docker back end: each executor attempt is a container; the tracker is a container too.

Per workflow run: one bridge network, one tracker container (`mlflow server` over the app's own
store, reachable as `tracker`), and one container per attempt. The app folder is mounted at its own
absolute path and is the working directory, so scripts, relative inputs/outputs and the store's
file artifact locations line up with the local back end. Containers run as the owner of the app
folder (files they write belong to that user; when the app folder belongs to root, that is root).

Each executor gets the CPU quota, memory limit (with no swap beyond it) and GPUs its resources
ask for; a container the engine killed for memory is reported as out of memory; what it used is
measured inside the container (`measure`).

Everything created carries the labels `scanflow.app` (a hash of the app folder) and `scanflow.run`;
`close()` removes exactly the objects of its run, and `remove_leftovers()` those of an app.
"""

from __future__ import annotations

import atexit
import logging
import math
import shutil
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from ..containers.docker_client import client
from ..containers.images import ImageBuilder
from ..containers.names import LABEL_APP, LABEL_KEY, LABEL_RUN, LABEL_WORKFLOW, app_id, extra_labels, shorten
from ..errors import RunError, TrackerError
from ..files import state_dir
from ..resources import Node, Usage
from ..track.server import SERVER_ENV, server_command
from ..track.store import artifact_root, embedded_uri
from .backend import Launch, Tracking
from .machine import gpu_ids
from .measure import measured, recorded
from .processes import GRACE_S
from .services import http_ok, service_command, service_env

log = logging.getLogger(__name__)

TRACKER_ALIAS, TRACKER_PORT = "tracker", 5000
HEALTH_PROBE = [
    "python",
    "-c",
    f"import urllib.request as u; u.urlopen('http://127.0.0.1:{TRACKER_PORT}/health', timeout=2)",
]


TRACKER_ENV = {**SERVER_ENV, "HOME": "/tmp"}


class ContainerHandle:
    """One executor attempt running as a container: the container is its process tree."""

    def __init__(self, container, record: Path | None = None, grace: float = GRACE_S):
        self.container, self.record = container, record
        self.grace = grace
        self._stopping = threading.Event()

    def lines(self) -> Iterator[str]:
        pending = b""
        for chunk in self.container.logs(stream=True, follow=True, stdout=True, stderr=True):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.decode(errors="replace").rstrip("\r")
        if pending:
            yield pending.decode(errors="replace")

    def wait(self, timeout: float | None) -> int:
        import requests

        try:
            return int(self.container.wait(timeout=timeout)["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            raise TimeoutError from None

    def kill(self) -> None:
        """SIGTERM (docker-init passes it on), SIGKILL to every process after the grace period; returns at once."""
        if not self._stopping.is_set():
            self._stopping.set()
            threading.Thread(target=self._stop, daemon=True, name=f"scanflow-stop-{self.container.name}").start()

    def _stop(self) -> None:
        import docker.errors

        try:
            self.container.stop(timeout=math.ceil(self.grace))
        except docker.errors.NotFound:  # removed already
            pass
        except Exception as exc:
            log.warning("could not stop container %s: %s", self.container.name, exc)

    def usage(self) -> Usage:
        """What it used, and whether the engine killed it for memory (`State.OOMKilled`)."""
        self.container.reload()
        return recorded(self.record, bool(self.container.attrs["State"].get("OOMKilled")))


class ContainerService(ContainerHandle):
    """A service executor running as a container, reachable as `url` on the run's network, published at `endpoint`."""

    def __init__(self, container, url: str, endpoint: str, health: str):
        super().__init__(container)
        self.url, self.endpoint, self.health_url = url, endpoint, endpoint + health

    def healthy(self) -> bool:
        return http_ok(self.health_url)

    def stop(self) -> None:
        import docker.errors

        try:
            self.container.kill(signal="SIGTERM")  # what `docker stop` sends first; the engine kills if it lingers
        except docker.errors.APIError:
            pass


def wait_healthy(exec_probe: Callable[[], bool], failed: Callable[[], str | None], timeout: float) -> None:
    """Poll until `exec_probe()` is true; TrackerError when `failed()` gives a reason or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        reason = failed()
        if reason:
            raise TrackerError(f"the tracker container failed to start: {reason}")
        if exec_probe():
            return
        if time.monotonic() > deadline:
            raise TrackerError(f"the tracker container did not answer within {timeout:.0f} s")
        time.sleep(0.5)


def _tail(logs: bytes, n: int = 5) -> str:
    lines = [line for line in logs.decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "no output"


def container_limits(launch: Launch) -> dict:
    """docker run options for the attempt's resources: CPU quota, memory without extra swap, GPUs."""
    import docker.types

    need, limits = launch.resources, {}
    if need.cpus is not None:
        limits["nano_cpus"] = round(need.cpus * 1e9)
    if need.memory is not None:
        limits.update(mem_limit=need.memory, memswap_limit=need.memory)
    if need.gpus:
        limits["device_requests"] = [docker.types.DeviceRequest(device_ids=list(launch.gpus), capabilities=[["gpu"]])]
    return limits


def app_owner(app_dir: Path) -> str:
    st = Path(app_dir).stat()
    return f"{st.st_uid}:{st.st_gid}"


def store_location(app_dir: Path, tracking: Tracking) -> tuple[str, str]:
    """(store URI, artifact folder) the tracker container serves: the app's own embedded store."""
    state = state_dir(app_dir)
    uri = tracking.uri if tracking.uri.startswith("sqlite:///") else embedded_uri(state)
    return uri, str(artifact_root(state))


_store_lock = threading.Lock()
_open_backends: weakref.WeakSet[DockerBackend] = weakref.WeakSet()


@atexit.register
def _close_open_backends() -> None:
    """A kernel that exits in the middle of a run still removes what the run created."""
    for backend in list(_open_backends):
        try:
            backend.close()
        except Exception as exc:
            print(f"[scanflow] cleanup at exit failed: {exc}")


def prepare_store(store_uri: str) -> None:
    """Create or upgrade the SQLite store here, once, before any tracker container opens it:
    trackers of concurrent runs would otherwise run the same schema migrations at the same time."""
    from ..track.store import get_client

    with _store_lock:
        get_client(store_uri).search_experiments(max_results=1)


class DockerBackend:
    """Run executors as containers on one Docker engine.

    `base_image`: base of generated Dockerfiles (default: `containers.images.default_base_image()`).
    `echo`: where image build output goes (the notebook by default).
    """

    name = "docker"
    runs_images = True
    network_driver = "bridge"

    def __init__(
        self,
        base_image: str | None = None,
        echo: Callable[[str], None] = print,
        tracker_timeout: float = 300.0,  # a crashed tracker is reported at once; a slow one is waited for
        builder: ImageBuilder | None = None,
    ):
        self.builder = builder or ImageBuilder(base_image, echo=echo)
        self.tracker_timeout = tracker_timeout
        self._lock = threading.Lock()
        self._open = False
        self.run_token: str | None = None
        self.images: dict[str, str] = {}  # executor key -> the image its last attempt ran

    # -- naming and labels ------------------------------------------------------------------------
    def labels(self, **extra: str) -> dict[str, str]:
        return {
            **extra_labels(),
            LABEL_APP: self.app,
            LABEL_RUN: self.run_token,
            LABEL_WORKFLOW: self.workflow,
            **extra,
        }

    def object_name(self, *parts: str) -> str:
        """`scanflow-<run>-<parts>`, at most 63 characters (swarm service names), shortened with a hash."""
        return shorten("-".join(["scanflow", self.run_token, *parts]))

    # -- Backend protocol -------------------------------------------------------------------------
    def open(self, app_dir: Path, workflow: str, tracking: Tracking) -> Tracking:
        self.docker = client()
        self.app_dir, self.workflow = Path(app_dir).absolute(), workflow  # the path the engine uses
        self.app, self.run_token = app_id(self.app_dir), uuid.uuid4().hex[:10]
        self.user = app_owner(self.app_dir)
        self.records = state_dir(self.app_dir) / "usage" / self.run_token
        self.records.mkdir(parents=True, exist_ok=True)
        self._open = True
        _open_backends.add(self)
        tracker_image = self.builder.tracker_image()
        self.network = self.docker.networks.create(
            self.object_name("net"), driver=self.network_driver, labels=self.labels(), **self.network_options()
        )
        store, artifacts = store_location(self.app_dir, tracking)
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        prepare_store(store)
        self.start_tracker(tracker_image, server_command(store, artifacts, "0.0.0.0", TRACKER_PORT, (TRACKER_ALIAS,)))
        self.kernel_tracking = tracking.uri
        return Tracking(tracking.uri, f"http://{TRACKER_ALIAS}:{TRACKER_PORT}")

    def nodes(self) -> list[Node]:
        """The engine's machine; its GPUs when the engine has the NVIDIA runtime."""
        info = client().info()
        gpus = gpu_ids() if "nvidia" in (info.get("Runtimes") or {}) else ()
        return [Node("the Docker engine", float(info["NCPU"]), int(info["MemTotal"]), gpus)]

    def launch(self, launch: Launch) -> ContainerHandle:
        image = self.builder.executor_image(launch.app_dir, launch.workflow, launch.executor)
        self.images[launch.key] = image
        command, record = launch.args or None, None  # an image's own command
        if launch.script is not None:
            name = self.object_name(launch.workflow, launch.executor.name, str(launch.attempt))
            record = self.records / f"{name}.json"
            command = measured(["python", "-P", str(launch.script), *launch.args], record)
        env = {**launch.env, "PYTHONPATH": str(self.app_dir), "HOME": "/tmp"}
        with self._lock:
            if not self._open:
                raise RunError("the docker back end is closed: the run was stopped")
            return self.start_executor(launch, image, command, env, record)

    def environment(self, key: str) -> dict[str, str]:
        """The image executor `key` ran in and its digest (the registry digest if it has one, else its id)."""
        import docker.errors

        image = self.images.get(key)
        if image is None:
            return {}
        try:
            found = self.docker.images.get(image)
        except docker.errors.DockerException:
            return {"image": image}
        digests = found.attrs.get("RepoDigests") or []
        return {"image": image, "image_digest": digests[0] if digests else found.id}

    def serve(self, launch: Launch):
        """A service in its container, reachable by its name on the run's network and published on this machine."""
        ex = launch.executor
        if ex.model is not None:
            from ..serve.model import requirements

            image = self.builder.service_image(
                launch.app_dir, launch.workflow, ex, requirements(ex.model, self.kernel_tracking)
            )
        else:
            image = self.builder.executor_image(launch.app_dir, launch.workflow, ex)
        self.images[launch.key] = image
        command = service_command(launch, "python", "0.0.0.0")
        env = {**service_env(launch, "0.0.0.0"), "PYTHONPATH": str(self.app_dir), "HOME": "/tmp"}
        with self._lock:
            if not self._open:
                raise RunError("the docker back end is closed: the run was stopped")
            return self.start_service(launch, image, command, env)

    def start_service(self, launch: Launch, image: str, command: list[str], env: dict[str, str]):
        import docker.errors

        ex = launch.executor
        if ex.replicas > 1:
            self.builder.echo(f"[{launch.key}] {ex.replicas} replicas are for the swarm back end: one container here")
        try:
            container = self.docker.containers.run(
                image,
                command,
                detach=True,
                name=self.object_name(launch.workflow, ex.name),
                labels=self.labels(**{LABEL_KEY: launch.key}),
                network=self.network.name,
                networking_config={self.network.name: self.docker.api.create_endpoint_config(aliases=[ex.name])},
                ports={f"{ex.port}/tcp": (ex.host, ex.port)},
                volumes=self.workspace_mount(),
                working_dir=str(self.app_dir),
                user=self.user,
                environment=env,
                **container_limits(launch),
            )
        except docker.errors.APIError as exc:
            raise RunError(f"cannot start the service {launch.key}: {exc.explanation or exc}") from None
        reach = "127.0.0.1" if ex.host == "0.0.0.0" else ex.host
        return ContainerService(container, f"http://{ex.name}:{ex.port}", f"http://{reach}:{ex.port}", ex.health)

    def close(self) -> None:
        with self._lock:
            was_open, self._open = self._open, False
        if was_open:
            _open_backends.discard(self)
            try:
                remove_run(self.docker, self.run_token)
            finally:
                shutil.rmtree(self.records, ignore_errors=True)

    # -- what differs between Docker and Swarm -----------------------------------------------------
    def network_options(self) -> dict:
        return {}

    def workspace_mount(self) -> dict:
        return {str(self.app_dir): {"bind": str(self.app_dir), "mode": "rw"}}

    def start_tracker(self, image: str, command: list[str]) -> None:
        import docker.errors

        try:
            container = self.docker.containers.run(
                image,
                command,
                detach=True,
                name=self.object_name("tracker"),
                labels=self.labels(),
                network=self.network.name,
                volumes=self.workspace_mount(),
                user=self.user,
                environment=TRACKER_ENV,
                networking_config={self.network.name: self.docker.api.create_endpoint_config(aliases=[TRACKER_ALIAS])},
            )
        except docker.errors.APIError as exc:
            raise TrackerError(f"the tracker container failed to start: {exc.explanation or exc}") from None

        def probe() -> bool:
            try:
                return container.exec_run(HEALTH_PROBE).exit_code == 0
            except docker.errors.APIError:
                return False

        def failed() -> str | None:
            container.reload()
            if container.status in ("exited", "dead"):
                return f"exit code {container.attrs['State']['ExitCode']}: {_tail(container.logs())}"
            return None

        wait_healthy(probe, failed, self.tracker_timeout)

    def start_executor(
        self, launch: Launch, image: str, command, env: dict[str, str], record: Path | None
    ) -> ContainerHandle:
        import docker.errors

        name = self.object_name(launch.workflow, launch.executor.name, str(launch.attempt))
        try:
            container = self.docker.containers.run(
                image,
                command,
                detach=True,
                name=name,
                labels=self.labels(**{LABEL_KEY: launch.key}),
                network=self.network.name,
                volumes=self.workspace_mount(),
                working_dir=str(self.app_dir),
                user=self.user,
                environment=env,
                **container_limits(launch),
                init=True,  # signals reach the script, and orphans are reaped
            )
        except docker.errors.APIError as exc:
            raise RunError(f"cannot start a container for {launch.key}: {exc.explanation or exc}") from None
        return ContainerHandle(container, record)


def remove_run(docker_client, run_token: str) -> None:
    """Remove the services, containers and networks labelled with this run, and nothing else."""
    _remove(docker_client, {"label": f"{LABEL_RUN}={run_token}"})


def remove_leftovers(app_dir: str | Path, images: bool = False) -> int:
    """Remove every container, service and network any run of this app left behind (with `images`, also
    the executor images built for it that no container uses); return how many."""
    label = f"{LABEL_APP}={app_id(Path(app_dir).resolve())}"
    removed = _remove(client(), {"label": label})
    return removed + (remove_images({"label": label}) if images else 0)


def remove_images(filters: dict) -> int:
    """Remove the images matching `filters` that no container uses; return how many."""
    import docker.errors

    removed = 0
    for image in client().images.list(filters=filters):
        try:
            client().images.remove(image.id, force=False, noprune=False)
            removed += 1
        except docker.errors.APIError:  # in use by a container, or gone already
            pass
    return removed


def leftovers(app_dir: str | Path | None = None) -> list[str]:
    """Names of the containers, services and networks left by runs of `app_dir` (of any app if None)."""
    label = f"{LABEL_APP}={app_id(Path(app_dir).resolve())}" if app_dir else LABEL_APP
    return [obj.name for obj in _objects(client(), {"label": label})]


def _objects(docker_client, filters: dict) -> list:
    found = []
    if docker_client.info().get("Swarm", {}).get("LocalNodeState") == "active":
        found += docker_client.services.list(filters=filters)
    # ignore_removed: a container that goes between the listing and its inspection (the swarm removing a
    # removed service's tasks, a run ending) is not an error
    found += docker_client.containers.list(all=True, filters=filters, ignore_removed=True)
    found += docker_client.networks.list(filters=filters)
    return found


def _remove(docker_client, filters: dict, settle: float = 30.0) -> int:
    """Remove the matching objects, then wait until the engine no longer lists them (swarm removes
    services and overlay networks asynchronously)."""
    import docker.errors

    removed = 0
    deadline = time.monotonic() + settle
    while True:
        remaining = _objects(docker_client, filters)
        if not remaining:
            return removed
        if time.monotonic() > deadline:
            names = ", ".join(obj.name for obj in remaining)
            raise RunError(
                f"could not remove Docker objects {names}: remove them with `docker rm -f`, "
                "`docker service rm` or `docker network rm`"
            )
        for obj in remaining:
            try:
                obj.remove(force=True) if hasattr(obj, "kill") else obj.remove()
                removed += 1
            except docker.errors.APIError:  # gone already, or a network still in use while its containers go
                pass
        time.sleep(0.5)
