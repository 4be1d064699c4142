"""Resources on a real Docker engine and single-node swarm, and in the exported files: CPU quota,
memory limit without extra swap, out of memory reported as such, usage metrics, preflight errors,
a swarm task no node has room for, and compose / stack / Kubernetes resources."""

import json
import re
import subprocess
import textwrap
import threading
import time
import uuid

import pytest
import yaml
from docker_support import HEALTHY, new_app, run_within

from scanflow_nb import Executor, Workflow
from scanflow_nb.containers.export import export
from scanflow_nb.errors import RunError
from scanflow_nb.resources import CPU_S, PEAK_RSS_MB, Resources
from scanflow_nb.run.docker import leftovers

pytestmark = [pytest.mark.docker]

HOG = "import time\nprint('allocating', flush=True)\nhog = b'x' * (1 << 30)\ntime.sleep(2)\nprint('still alive')\n"
# What the container's own cgroup says (v1 and v2 file names), and 1 s of CPU work timed on the wall.
LIMITS = textwrap.dedent("""\
    import json, os, time
    def read(*names):
        for name in names:
            try:
                return open("/sys/fs/cgroup/" + name).read().strip()
            except OSError:
                pass
    wall, cpu = time.monotonic(), time.process_time()
    while time.process_time() - cpu < 1.0:
        pass
    print(json.dumps({
        "quota": read("cpu.max", "cpu/cpu.cfs_quota_us", "cpu,cpuacct/cpu.cfs_quota_us"),
        "memory": read("memory.max", "memory/memory.limit_in_bytes"),
        "swap": read("memory.swap.max", "memory/memory.memsw.limit_in_bytes"),
        "wall": time.monotonic() - wall,
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }))
""")


def limits_seen(app, key):
    return json.loads(next(line for line in app.logs(key).splitlines() if line.startswith("{")))


def test_docker_gives_each_container_its_cpus_and_memory_and_reports_out_of_memory(
    app_dir, docker_backend, docker_engine
):
    import psutil

    app = new_app(
        app_dir,
        Workflow(
            "w",
            parallel=True,
            executors=[
                Executor("half", code=LIMITS, cpus=0.5, memory="300M"),
                Executor("hog", code=HOG, memory="256M"),
            ],
        ),
    )
    kernel = psutil.Process()
    before = kernel.memory_info().rss
    result = app.run("w", backend=docker_backend(), echo=False)
    grew = (kernel.memory_info().rss - before) / 2**20
    hog = result.executors["w/hog"]
    assert hog.status == "failed" and hog.error == "out of memory (limit 256 MiB)", result.summary()
    assert "still alive" not in app.logs("w/hog")
    assert result.executors["w/half"].status == "succeeded"  # its parallel sibling is unharmed
    assert grew < 200, f"the kernel's memory grew by {grew:.0f} MiB"
    seen = limits_seen(app, "w/half")
    assert seen["quota"] in ("50000", "50000 100000"), seen
    assert seen["memory"] == str(300 * 2**20)
    assert seen["swap"] in (None, str(300 * 2**20), "0"), seen  # no swap beyond the limit
    assert seen["wall"] > 1.6, f"1 s of CPU work took {seen['wall']:.2f} s of wall time under cpus=0.5"
    assert seen["threads"] == "1"
    from mlflow import MlflowClient

    metrics = MlflowClient(result.tracking_uri).get_run(result.executors["w/half"].run_id).data.metrics
    assert 0.9 <= metrics[CPU_S] < 3 and 5 < metrics[PEAK_RSS_MB] < 300, metrics
    assert leftovers(app.path) == []


def test_docker_refuses_gpus_and_memory_the_engine_does_not_have(app_dir, docker_backend, docker_engine):
    info = docker_engine.info()
    app = new_app(
        app_dir,
        Workflow("w", executors=[Executor("a", code="print(1)", memory=info["MemTotal"] + 2**30)]),
        Workflow("g", executors=[Executor("a", code="print(1)", gpus=1)]),
    )
    with pytest.raises(RunError, match=r"executor 'w/a' asks for .* GiB \(the Docker engine has .* GiB\)"):
        app.run("w", backend=docker_backend(), echo=False)
    if "nvidia" not in (info.get("Runtimes") or {}):
        with pytest.raises(RunError, match=re.escape("executor 'g/a' asks for 1 GPU (the Docker engine has none)")):
            app.run("g", backend=docker_backend(), echo=False)
    assert leftovers(app.path) == []


# -- swarm ------------------------------------------------------------------------------------------
@pytest.fixture
def swarm_backend(swarm_engine, base_image):
    from scanflow_nb.run.swarm import SwarmBackend

    return lambda: SwarmBackend(base_image=base_image, echo=lambda line: None)


@pytest.mark.swarm
@pytest.mark.slow
def test_swarm_reserves_and_limits_and_fails_fast_when_no_node_has_room(
    app_dir, swarm_backend, swarm_engine, base_image
):
    import docker.types

    node = swarm_engine.nodes.list()[0].attrs["Description"]
    cpus = node["Resources"]["NanoCPUs"] / 1e9
    app = new_app(
        app_dir,
        Workflow("fits", executors=[Executor("half", code=LIMITS, cpus=0.5, memory="300M")]),
        Workflow("huge", executors=[Executor("a", code="print(1)", cpus=cpus * 4)]),
        Workflow("crowd", executors=[Executor("api", code="1", service=True, port=8080, replicas=3, cpus=cpus / 2)]),
        Workflow("later", executors=[Executor("b", code="print(1)", cpus=cpus / 2 + 0.25)]),
    )
    result = app.run("fits", backend=swarm_backend(), echo=False)
    assert result.ok, result.summary()
    seen = limits_seen(app, "fits/half")
    assert seen["quota"] in ("50000", "50000 100000") and seen["memory"] == str(300 * 2**20), seen
    # more than the node has at all: refused before anything is created
    with pytest.raises(RunError, match=rf"executor 'huge/a' asks for {cpus * 4:g} CPUs \(.* has {cpus:g} CPUs\)"):
        app.run("huge", backend=swarm_backend(), echo=False)
    # replicas that fit one by one but not together: refused too (each one reserves its CPUs)
    each = Resources(cpus=cpus / 2).describe()
    crowd = f"executor 'crowd/api' asks for 3 replicas of {each}: {cpus * 1.5:g} CPUs together, and the node"
    with pytest.raises(RunError, match=re.escape(f"{crowd} has {cpus:g} CPUs")):
        app.run("crowd", backend=swarm_backend(), echo=False)
    # more than the node has free: another service holds half of it; reported within seconds
    blocker = swarm_engine.services.create(
        base_image,
        ["sleep", "300"],
        name=f"i20-blocker-{uuid.uuid4().hex[:6]}",
        labels={"scanflow.test": "resources"},
        resources=docker.types.Resources(cpu_reservation=round(cpus / 2 * 1e9)),
        restart_policy=docker.types.RestartPolicy(condition="none"),
    )
    created, failed = [], []

    def watch(event):  # when the executor's service appears (its image is built first), when it fails
        if event.kind == "started" and event.key == "later/b":
            threading.Thread(target=lambda: created.append(wait_service(swarm_engine, "later/b")), daemon=True).start()
        if event.kind == "failed":
            failed.append(time.monotonic())

    try:
        wait_running(blocker)
        result = app.run("later", backend=swarm_backend(), echo=False, listeners=[watch])
    finally:
        blocker.remove()
    error = result.executors["later/b"].error
    assert result.executors["later/b"].status == "failed"
    assert error.startswith(f"later/b stayed pending: no swarm node has {cpus / 2 + 0.25:g} CPUs free ("), error
    took = failed[0] - created[0]
    assert took < 30, f"the pending task was reported {took:.0f} s after its service was created"
    assert leftovers(app.path) == []


@pytest.mark.swarm
@pytest.mark.slow
def test_each_replica_of_a_swarm_service_holds_its_resources(app_dir, swarm_backend, swarm_engine):
    cpus = swarm_engine.nodes.list()[0].attrs["Description"]["Resources"]["NanoCPUs"] / 1e9
    api = Executor("api", code=HEALTHY, service=True, port=8080, replicas=2, cpus=cpus / 2)
    app = new_app(app_dir, Workflow("w", executors=[api, Executor("client", code="1", depends_on=["api"], cpus=0.25)]))
    result = run_within(app, "w", 600, backend=swarm_backend())
    assert result.executors["w/api"].status == "succeeded", result.summary()  # both replicas served, then stopped
    held = Resources(cpus=cpus).describe()  # counted once, the client was admitted and stayed pending for ever
    error = result.executors["w/client"].error
    assert error == f"needs 0.25 CPUs, but the run's services hold that to the end (w/api: {held})"
    assert leftovers(app.path) == []


def wait_service(engine, key, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.services.list(filters={"label": f"scanflow.key={key}"}):
            return time.monotonic()
        time.sleep(0.2)
    raise AssertionError(f"no service for {key} appeared")


def wait_running(service, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(t["Status"]["State"] == "running" for t in service.tasks()):
            return
        time.sleep(0.5)
    raise AssertionError("the blocker service did not start")


# -- exports --------------------------------------------------------------------------------------------
def resourceful_app(app_dir):
    return new_app(
        app_dir,
        Workflow(
            "main",
            memory="1G",
            executors=[Executor("prep", code="print(1)", cpus=0.5)],
            workflows=[Workflow("train", cpus=2, executors=[Executor("fit", code="print(2)", memory="1536M", gpus=1)])],
        ),
    )


def test_compose_file_carries_the_resources_and_docker_compose_accepts_it(app_dir, tmp_path, base_image):
    app = resourceful_app(app_dir)
    spec = yaml.safe_load(export(app, "main", "compose", tmp_path / "out", echo=lambda line: None).read_text())
    prep, fit = spec["services"]["main-prep"], spec["services"]["train-fit"]
    assert prep["deploy"]["resources"] == {"limits": {"cpus": "0.5", "memory": "1G"}}
    assert prep["memswap_limit"] == "1G" and prep["environment"]["OMP_NUM_THREADS"] == "1"
    assert fit["deploy"]["resources"] == {
        "limits": {"cpus": "2", "memory": "1536M"},
        "reservations": {"devices": [{"capabilities": ["gpu"], "count": 1}]},
    }
    assert "deploy" not in spec["services"]["tracker"]
    done = subprocess.run(
        ["docker-compose", "-f", str(tmp_path / "out" / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "WARNING" not in done.stderr, done.stderr
    resolved = yaml.safe_load(done.stdout)["services"]["train-fit"]["deploy"]["resources"]
    assert float(resolved["limits"]["cpus"]) == 2 and resolved["limits"]["memory"] == "1536M"
    assert resolved["reservations"]["devices"] == [{"capabilities": ["gpu"], "count": 1}]


@pytest.mark.swarm
def test_stack_file_reserves_and_limits_and_docker_stack_accepts_it(app_dir, tmp_path, swarm_engine, base_image):
    app = resourceful_app(app_dir)
    path = export(app, "main", "stack", tmp_path / "out", echo=lambda line: None)
    spec = yaml.safe_load(path.read_text())
    assert spec["services"]["main-prep"]["deploy"]["resources"] == {
        "limits": {"cpus": "0.5", "memory": "1G"},
        "reservations": {"cpus": "0.5", "memory": "1G"},
    }
    assert spec["services"]["train-fit"]["deploy"]["resources"]["reservations"] == {
        "cpus": "2",
        "memory": "1536M",
        "generic_resources": [{"discrete_resource_spec": {"kind": "NVIDIA-GPU", "value": 1}}],
    }
    done = subprocess.run(["docker", "stack", "config", "-c", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)["services"]["train-fit"]["deploy"]["resources"]
    assert resolved["reservations"]["generic_resources"][0]["discrete_resource_spec"]["value"] == 1


def test_kubernetes_jobs_request_and_limit_what_executors_ask_for(app_dir, tmp_path, base_image):
    from kubernetes.client import ApiClient

    app = resourceful_app(app_dir)
    docs = list(yaml.safe_load_all(export(app, "main", "k8s", tmp_path / "out", echo=lambda line: None).read_text()))
    jobs = {d["metadata"]["annotations"]["scanflow.io/key"]: d for d in docs if d["kind"] == "Job"}
    container = {key: job["spec"]["template"]["spec"]["containers"][0] for key, job in jobs.items()}
    assert container["main/prep"]["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "500m", "memory": "1Gi"},
    }
    assert container["train/fit"]["resources"] == {
        "requests": {"cpu": "2", "memory": "1536Mi"},
        "limits": {"cpu": "2", "memory": "1536Mi", "nvidia.com/gpu": "1"},
    }
    api = ApiClient()
    for job in jobs.values():
        model = api.deserialize(json.dumps(job), "V1Job", "application/json")
        assert api.sanitize_for_serialization(model) == job  # no field the model does not know
