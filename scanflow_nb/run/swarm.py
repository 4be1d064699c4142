"""The swarm back end: executors as one-shot swarm services (restart none), the tracker as a service.

Same world as the docker back end (labels, the app folder bind-mounted at its own path, the tracker
reachable as `tracker`), on an overlay network. Tested on a single-node swarm: on several nodes the
app folder must exist at the same path on every node (a shared file system) and the images must be
in a registry the nodes can pull from.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from ..containers.names import LABEL_KEY
from ..errors import BackendUnavailable, RunError
from ..resources import Usage
from .backend import Launch, Tracking
from .docker import HEALTH_PROBE, TRACKER_ALIAS, TRACKER_ENV, DockerBackend, wait_healthy

ENDED = {"complete", "failed", "rejected", "shutdown", "orphaned", "remove"}


def _task(service) -> dict | None:
    tasks = service.tasks()
    return max(tasks, key=lambda t: t["CreatedAt"]) if tasks else None


class ServiceHandle:
    """One executor attempt running as a one-shot swarm service."""

    def __init__(self, docker_client, service):
        self.docker, self.service = docker_client, service

    def _container(self, timeout: float = 120.0):
        """The task's container on this node, once the task has one (None if it ended without one)."""
        import docker.errors

        deadline = time.monotonic() + timeout
        while True:
            try:
                task = _task(self.service)
            except docker.errors.NotFound:  # the service was removed
                return None
            cid = (task or {}).get("Status", {}).get("ContainerStatus", {}).get("ContainerID")
            if cid:
                try:
                    return self.docker.containers.get(cid)
                except docker.errors.NotFound:
                    return None
            if task and task["Status"]["State"] in ENDED or time.monotonic() > deadline:
                return None
            time.sleep(0.3)

    def lines(self) -> Iterator[str]:
        import docker.errors

        container = self._container()
        if container is None:
            task = _task(self.service) or {}
            yield f"[swarm] task ended without a container: {task.get('Status', {}).get('Err', 'unknown reason')}"
            return
        pending = b""
        try:
            for chunk in container.logs(stream=True, follow=True):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.decode(errors="replace").rstrip("\r")
        except docker.errors.NotFound:
            pass
        if pending:
            yield pending.decode(errors="replace")

    def wait(self, timeout: float | None) -> int:
        import docker.errors

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                task = _task(self.service)
            except docker.errors.NotFound:
                return 137  # the service was removed: killed
            if task and task["Status"]["State"] in ENDED:
                return int(task["Status"].get("ContainerStatus", {}).get("ExitCode", 125))
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.3)

    def kill(self) -> None:
        import docker.errors

        try:
            self.service.remove()
        except docker.errors.APIError:
            pass

    def usage(self) -> Usage:
        """Whether the engine killed its container for memory (`State.OOMKilled`)."""
        container = self._container(timeout=0)
        return Usage(out_of_memory=bool(container and container.attrs["State"].get("OOMKilled")))


class SwarmBackend(DockerBackend):
    """Run executors as swarm services on the swarm this engine manages."""

    name = "swarm"
    network_driver = "overlay"

    def open(self, app_dir, workflow: str, tracking: Tracking) -> Tracking:
        from ..containers.docker_client import client

        if client().info().get("Swarm", {}).get("LocalNodeState") != "active":
            raise BackendUnavailable(
                "this Docker engine is not in a swarm: run `docker swarm init "
                "--advertise-addr 127.0.0.1` (a single-node swarm), or use --backend docker"
            )
        return super().open(app_dir, workflow, tracking)

    def network_options(self) -> dict:
        return {"attachable": True, "scope": "swarm"}

    def _service(self, image: str, command, name: str, labels: dict, env: dict, aliases=None, workdir=None):
        import docker.types as dt

        # dnsrr: the alias resolves to the task itself; the virtual-IP load balancer is not needed
        # for one replica, and is unreliable where the engine runs nested in another container.
        return self.docker.services.create(
            image,
            command=command,
            name=name,
            labels=labels,
            container_labels=labels,
            env=env,
            networks=[dt.NetworkAttachmentConfig(self.network.name, aliases=aliases)],
            mounts=[dt.Mount(target=str(self.app_dir), source=str(self.app_dir), type="bind")],
            user=self.user,
            workdir=workdir,
            restart_policy=dt.RestartPolicy(condition="none"),
            mode=dt.ServiceMode("replicated", replicas=1),
            endpoint_spec=dt.EndpointSpec(mode="dnsrr"),
        )

    def start_tracker(self, image: str, command: list[str]) -> None:
        service = self._service(
            image, command, self.object_name("tracker"), self.labels(), TRACKER_ENV, aliases=[TRACKER_ALIAS]
        )
        handle = ServiceHandle(self.docker, service)

        def probe() -> bool:
            task = _task(service)
            if not task or task["Status"]["State"] != "running":
                return False
            container = handle._container(timeout=5)
            return container is not None and container.exec_run(HEALTH_PROBE).exit_code == 0

        def failed() -> str | None:
            task = _task(service)
            if task and task["Status"]["State"] in ENDED:
                return f"task {task['Status']['State']}: {task['Status'].get('Err') or 'see docker service logs'}"
            return None

        wait_healthy(probe, failed, self.tracker_timeout)

    def start_executor(self, launch: Launch, image: str, command, env: dict[str, str]) -> ServiceHandle:
        import docker.errors

        name = self.object_name(launch.workflow, launch.executor.name, str(launch.attempt))
        try:
            service = self._service(
                image, command, name, self.labels(**{LABEL_KEY: launch.key}), env, workdir=str(self.app_dir)
            )
        except docker.errors.APIError as exc:
            raise RunError(f"cannot create a swarm service for {launch.key}: {exc.explanation or exc}") from None
        return ServiceHandle(self.docker, service)
