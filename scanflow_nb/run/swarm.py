"""The swarm back end: executors as one-shot swarm services (restart none), the tracker as a service.

Same world as the docker back end (labels, the app folder bind-mounted at its own path, the tracker
reachable as `tracker`), on an overlay network. Tested on a single-node swarm: on several nodes the
app folder must exist at the same path on every node (a shared file system) and the images must be
in a registry the nodes can pull from.

An executor's resources become the service's reservations and limits (GPUs as the generic resource
`NVIDIA-GPU`, which nodes advertise in their daemon.json), so the swarm's own scheduler places it
on a node that fits. A task the swarm leaves pending for want of resources that no other executor
of the run will give back is stopped after `pending_timeout` seconds, naming the resource.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

from ..containers.names import LABEL_KEY, LABEL_RUN
from ..errors import BackendUnavailable, RunError
from ..resources import Node, Resources, Usage, shortfall
from .backend import Launch, Tracking
from .docker import HEALTH_PROBE, TRACKER_ALIAS, TRACKER_ENV, DockerBackend, wait_healthy
from .measure import recorded
from .services import SERVICE_START_TIMEOUT, SERVICE_STOP_GRACE

ENDED = {"complete", "failed", "rejected", "shutdown", "orphaned", "remove"}
GPU_KIND = "NVIDIA-GPU"  # the generic resource nodes advertise their GPUs as
NO_ROOM = "insufficient resources"  # in a pending task's Err


def _task(service) -> dict | None:
    tasks = service.tasks()
    return max(tasks, key=lambda t: t["CreatedAt"]) if tasks else None


def _node(attrs: dict) -> Node:
    described = attrs["Description"]
    offered = described.get("Resources", {})
    gpus: list[str] = []
    for spec in offered.get("GenericResources") or []:
        discrete, named = spec.get("DiscreteResourceSpec"), spec.get("NamedResourceSpec")
        if discrete and discrete["Kind"] == GPU_KIND:
            gpus += [f"{attrs['ID']}:{i}" for i in range(int(discrete["Value"]))]
        elif named and named["Kind"] == GPU_KIND:
            gpus.append(named["Value"])
    name = described.get("Hostname") or attrs["ID"]
    return Node(name, offered.get("NanoCPUs", 0) / 1e9, int(offered.get("MemoryBytes", 0)), tuple(gpus))


def swarm_nodes(docker_client) -> dict[str, Node]:
    """Node id -> what it offers, for every node that is ready and takes tasks."""
    return {
        n.id: _node(n.attrs)
        for n in docker_client.nodes.list()
        if n.attrs["Status"]["State"] == "ready" and n.attrs["Spec"].get("Availability") == "active"
    }


def free_nodes(docker_client, run_token: str | None) -> list[Node]:
    """What each node has left after the reservations of the tasks running on it, except those of
    run `run_token` (they end as the run goes on)."""
    nodes = swarm_nodes(docker_client)
    used = {node: [0.0, 0, 0] for node in nodes}
    for task in docker_client.api.tasks(filters={"desired-state": "running"}):
        labels = task["Spec"].get("ContainerSpec", {}).get("Labels") or {}
        if task.get("NodeID") not in used or (run_token and labels.get(LABEL_RUN) == run_token):
            continue
        held = task["Spec"].get("Resources", {}).get("Reservations", {})
        gpus = sum(
            int(g["DiscreteResourceSpec"]["Value"]) if "DiscreteResourceSpec" in g else 1
            for g in held.get("GenericResources") or []
            if GPU_KIND in json.dumps(g)
        )
        for i, value in enumerate((held.get("NanoCPUs", 0) / 1e9, held.get("MemoryBytes", 0), gpus)):
            used[task["NodeID"]][i] += value
    return [Node(n.name, n.cpus - used[i][0], n.memory - used[i][1], n.gpus[used[i][2] :]) for i, n in nodes.items()]


def service_resources(need: Resources):
    """The service's reservations and limits: what the executor asks for, both guaranteed and capped."""
    import docker.types as dt

    if not need:
        return None
    nano = round(need.cpus * 1e9) if need.cpus is not None else None
    return dt.Resources(
        cpu_limit=nano,
        mem_limit=need.memory,
        cpu_reservation=nano,
        mem_reservation=need.memory,
        generic_resources={GPU_KIND: need.gpus} if need.gpus else None,
    )


class ServiceHandle:
    """One executor attempt running as a one-shot swarm service."""

    def __init__(
        self,
        docker_client,
        service,
        key: str = "",
        need: Resources | None = None,
        run_token: str | None = None,
        record: Path | None = None,
        pending_timeout: float = 5.0,
    ):
        self.docker, self.service, self.key = docker_client, service, key
        self.need, self.run_token, self.record = need or Resources(), run_token, record
        self.pending_timeout = pending_timeout

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
            try:
                task = _task(self.service) or {}
            except docker.errors.NotFound:  # removed: stopped, or never placed (wait says why)
                return
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
        pending_since = None
        while True:
            try:
                task = _task(self.service)
            except docker.errors.NotFound:
                return 137  # the service was removed: killed
            if task and task["Status"]["State"] in ENDED:
                return int(task["Status"].get("ContainerStatus", {}).get("ExitCode", 125))
            if task and task["Status"]["State"] == "pending" and NO_ROOM in (task["Status"].get("Err") or ""):
                pending_since = pending_since or time.monotonic()
                if time.monotonic() - pending_since > self.pending_timeout:
                    self._give_up_if_nothing_frees()
                    pending_since = time.monotonic()
            else:
                pending_since = None
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.3)

    def _give_up_if_nothing_frees(self) -> None:
        """RunError (the service removed) if no node will have room for it: not even once the run's
        other executors are done."""
        why = shortfall(self.need, free_nodes(self.docker, self.run_token), free=True)
        if why:
            self.kill()
            raise RunError(f"{self.key} stayed pending: no swarm node has {why}")

    def kill(self) -> None:
        import docker.errors

        try:
            self.service.remove()
        except docker.errors.APIError:
            pass

    def usage(self) -> Usage:
        """What it used, and whether the engine killed its container for memory (`State.OOMKilled`)."""
        container = self._container(timeout=0)
        return recorded(self.record, bool(container and container.attrs["State"].get("OOMKilled")))


class SwarmService(ServiceHandle):
    """A service executor as a replicated swarm service: the swarm keeps `replicas` tasks running, restarts
    the ones that die and replaces the unhealthy ones; it is healthy when every replica's health check is."""

    def __init__(self, docker_client, service, replicas: int, url: str, endpoint: str | None):
        super().__init__(docker_client, service)
        self.replicas, self.url, self.endpoint = replicas, url, endpoint
        self.served = False  # once every replica was healthy, the swarm keeps it so

    def healthy(self) -> bool:
        import docker.errors

        try:
            running = [t for t in self.service.tasks() if t["Status"]["State"] == "running"]
            ids = [t["Status"].get("ContainerStatus", {}).get("ContainerID") for t in running]
            states = [self.docker.containers.get(cid).attrs["State"].get("Health", {}).get("Status") for cid in ids]
        except docker.errors.NotFound:
            return False
        self.served = self.served or states.count("healthy") >= self.replicas
        return states.count("healthy") >= self.replicas

    def lines(self) -> Iterator[str]:
        import docker.errors

        pending = b""
        try:
            for chunk in self.service.logs(stdout=True, stderr=True, follow=True):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.decode(errors="replace").rstrip("\r")
        except docker.errors.APIError:  # the service was removed
            pass

    def wait(self, timeout: float | None) -> int:
        """0 once the service is gone (stopped). Before it first served, a replica's exit code when one failed
        and none runs (it cannot start); afterwards the swarm replaces replicas that die, so it goes on."""
        import docker.errors

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                tasks = self.service.tasks()
            except docker.errors.NotFound:
                return 0
            failed = [t for t in tasks if t["Status"]["State"] in ("failed", "rejected")]
            if failed and not self.served and not any(t["Status"]["State"] == "running" for t in tasks):
                return int(failed[0]["Status"].get("ContainerStatus", {}).get("ExitCode") or 1)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.5)

    def stop(self) -> None:
        self.kill()  # removing the service stops its tasks with SIGTERM, then waits their grace period


class SwarmBackend(DockerBackend):
    """Run executors as swarm services on the swarm this engine manages."""

    name = "swarm"
    network_driver = "overlay"
    runs_replicas = True

    def __init__(self, *args, pending_timeout: float = 5.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending_timeout = pending_timeout

    @staticmethod
    def _swarm():
        from ..containers.docker_client import client

        docker_client = client()
        if docker_client.info().get("Swarm", {}).get("LocalNodeState") != "active":
            raise BackendUnavailable(
                "this Docker engine is not in a swarm: run `docker swarm init "
                "--advertise-addr 127.0.0.1` (a single-node swarm), or use --backend docker"
            )
        return docker_client

    def open(self, app_dir, workflow: str, tracking: Tracking) -> Tracking:
        self._swarm()
        return super().open(app_dir, workflow, tracking)

    def nodes(self) -> list[Node]:
        return list(swarm_nodes(self._swarm()).values())

    def network_options(self) -> dict:
        return {"attachable": True, "scope": "swarm"}

    def _service(
        self, image: str, command, name: str, labels: dict, env: dict, aliases=None, workdir=None, resources=None
    ):
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
            resources=resources,
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

    def start_service(self, launch: Launch, image: str, command: list[str], env: dict[str, str]) -> SwarmService:
        """`replicas` tasks behind the executor's name (round-robin DNS on the run's network); published on
        every node's `host` interface only when the executor asks for 0.0.0.0 (one replica per node then)."""
        import docker.errors
        import docker.types as dt

        ex = launch.executor
        probe = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{ex.port}{ex.health}', timeout=2)"
        published = ex.host == "0.0.0.0"
        ports = [dt.EndpointSpec(mode="dnsrr", ports={ex.port: (ex.port, "tcp", "host")})] if published else []
        try:
            service = self.docker.services.create(
                image,
                command=command,
                name=self.object_name(launch.workflow, ex.name),
                labels=self.labels(**{LABEL_KEY: launch.key}),
                container_labels=self.labels(**{LABEL_KEY: launch.key}),
                env=env,
                networks=[dt.NetworkAttachmentConfig(self.network.name, aliases=[ex.name])],
                mounts=[dt.Mount(target=str(self.app_dir), source=str(self.app_dir), type="bind")],
                user=self.user,
                workdir=str(self.app_dir),
                restart_policy=dt.RestartPolicy(condition="any", delay=1_000_000_000),
                mode=dt.ServiceMode("replicated", replicas=ex.replicas),
                endpoint_spec=ports[0] if ports else dt.EndpointSpec(mode="dnsrr"),
                resources=service_resources(launch.resources),  # each replica's
                healthcheck=dt.Healthcheck(  # failures while it starts do not count (loading takes a while)
                    test=["CMD", "python", "-c", probe],
                    interval=2_000_000_000,
                    timeout=3_000_000_000,
                    retries=3,
                    start_period=int(SERVICE_START_TIMEOUT * 1e9),
                ),
                stop_grace_period=int(SERVICE_STOP_GRACE * 1e9),
            )
        except docker.errors.APIError as exc:
            raise RunError(f"cannot create the swarm service {launch.key}: {exc.explanation or exc}") from None
        endpoint = f"http://127.0.0.1:{ex.port}" if published else None
        return SwarmService(self.docker, service, ex.replicas, f"http://{ex.name}:{ex.port}", endpoint)

    def start_executor(
        self, launch: Launch, image: str, command, env: dict[str, str], record: Path | None
    ) -> ServiceHandle:
        import docker.errors

        name = self.object_name(launch.workflow, launch.executor.name, str(launch.attempt))
        labels = self.labels(**{LABEL_KEY: launch.key})
        try:
            service = self._service(
                image,
                command,
                name,
                labels,
                env,
                workdir=str(self.app_dir),
                resources=service_resources(launch.resources),
            )
        except docker.errors.APIError as exc:
            raise RunError(f"cannot create a swarm service for {launch.key}: {exc.explanation or exc}") from None
        return ServiceHandle(
            self.docker, service, launch.key, launch.resources, self.run_token, record, self.pending_timeout
        )
