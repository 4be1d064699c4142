"""Export a workflow to files other engines run: docker-compose, a swarm stack, Kubernetes manifests.

All three run the images `ImageBuilder` built (content-hash tags, so the files name images that
exist), a tracker (`mlflow server`, store on a volume) reachable as `tracker` or `<name>-tracker`,
and the executors in the workflow's order:
- compose: `depends_on` with `service_completed_successfully` (parallel groups side by side);
- stack and Kubernetes, which have no such ordering: each executor waits for the marker files its
  prerequisites leave in the shared workspace volume (`.scanflow/done/<export id>/<name>.ok|.failed`).
Retries and timeouts are part of each executor's command. Each executor's resources are its
service's `deploy.resources` (compose: limits, no extra swap, GPUs as device reservations; stack:
reservations and limits, GPUs as the generic resource NVIDIA-GPU) or its Job's requests and
limits (GPUs as `nvidia.com/gpu`). Executors log to the tracker in the
workflow's experiment, one run per executor (no kernel creates the nested parent runs here).
A deployment is meant to run once: deploy again after a new export, or with fresh volumes.
"""

from __future__ import annotations

import json
import shlex
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import sources
from ..errors import RunError, ValidationError
from ..files import STATE_DIR
from ..resources import Resources, docker_memory, k8s_cpu, k8s_memory, thread_env
from ..schedule import Task, plan
from ..spec import Workflow
from ..track.server import SERVER_ENV, server_command
from . import dockerfile as df
from .images import ImageBuilder
from .names import LABEL_WORKFLOW, check_image_ref, k8s_name, unique_names

KINDS = {"compose": "docker-compose.yml", "stack": "docker-stack.yml", "k8s": "kubernetes.yaml"}
TRACKER, PORT = "tracker", 5000
SWARM_GPU, K8S_GPU = "NVIDIA-GPU", "nvidia.com/gpu"


def compose_resources(need: Resources) -> dict[str, Any]:
    """A compose service's resource keys: limits, memory without extra swap, GPUs as device reservations."""
    limits = {"cpus": f"{need.cpus:g}"} if need.cpus is not None else {}
    if need.memory is not None:
        limits["memory"] = docker_memory(need.memory)
    resources: dict[str, Any] = {"limits": limits} if limits else {}
    if need.gpus:
        resources["reservations"] = {"devices": [{"capabilities": ["gpu"], "count": need.gpus}]}
    keys: dict[str, Any] = {"deploy": {"resources": resources}} if resources else {}
    if need.memory is not None:
        keys["memswap_limit"] = docker_memory(need.memory)
    return keys


def stack_resources(need: Resources) -> dict[str, Any]:
    """A stack service's `deploy.resources`: reserved (so the swarm places it where it fits) and capped."""
    limits = {"cpus": f"{need.cpus:g}"} if need.cpus is not None else {}
    if need.memory is not None:
        limits["memory"] = docker_memory(need.memory)
    reservations: dict[str, Any] = dict(limits)
    if need.gpus:
        reservations["generic_resources"] = [{"discrete_resource_spec": {"kind": SWARM_GPU, "value": need.gpus}}]
    return {name: part for name, part in (("limits", limits), ("reservations", reservations)) if part}


def k8s_resources(need: Resources) -> dict[str, Any]:
    """A container's requests and limits (equal: the pod gets what it asks for, and no more)."""
    amounts = {"cpu": k8s_cpu(need.cpus)} if need.cpus is not None else {}
    if need.memory is not None:
        amounts["memory"] = k8s_memory(need.memory)
    resources = {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}
    if need.gpus:
        resources.setdefault("limits", {})[K8S_GPU] = str(need.gpus)
    return resources


def ensure_experiment_script(base_url: str, experiment: str) -> str:
    """Python one-liner: exit 0 once the tracker answers and `experiment` exists (created if missing)."""
    return (
        "import json, urllib.request as u, urllib.error as e, urllib.parse as p\n"
        f"b = {base_url + '/api/2.0/mlflow/experiments/'!r}; n = {experiment!r}\n"
        "try: u.urlopen(b + 'get-by-name?' + p.urlencode({'experiment_name': n}), timeout=3)\n"
        "except e.HTTPError: u.urlopen(u.Request(b + 'create', json.dumps({'name': n}).encode(),"
        " {'Content-Type': 'application/json'}), timeout=3)\n"
    )


def direct_deps(tasks: list[Task]) -> dict[str, list[str]]:
    """Each task's prerequisites without those implied by others (a readable, equivalent order)."""
    deps = {t.key: set(t.deps) for t in tasks}

    def ancestors(key: str) -> set[str]:
        seen, todo = set(), list(deps[key])
        while todo:
            k = todo.pop()
            if k not in seen:
                seen.add(k)
                todo.extend(deps[k])
        return seen

    return {k: sorted(d for d in ds if not any(d in ancestors(o) for o in ds if o != d)) for k, ds in deps.items()}


class Exporter:
    """Builds the images of a workflow and writes compose, stack or Kubernetes files for it."""

    def __init__(
        self,
        app_dir: Path,
        workflow: Workflow,
        experiment: str | None = None,
        builder: ImageBuilder | None = None,
        echo: Callable[[str], None] = print,
        defaults: Resources | None = None,
    ):
        self.app_dir, self.workflow = Path(app_dir), workflow
        self.experiment = experiment or workflow.name
        self.builder = builder or ImageBuilder(echo=echo)
        self.tasks = plan(workflow, defaults)
        self.names = unique_names([t.key for t in self.tasks], lambda key: k8s_name(*key.split("/")))
        self.prefix = k8s_name(workflow.name)
        for task in self.tasks:
            if task.executor.image:
                check_image_ref(task.executor.image, f"executor {task.executor.name!r} image")
        self.deps = direct_deps(self.tasks)
        self.export_id = uuid.uuid4().hex[:8]
        self.images: dict[str, str] = {}
        self.tracker_image = ""

    def build_images(self) -> None:
        self.tracker_image = self.builder.tracker_image()
        for task in self.tasks:
            self.images[task.key] = self.builder.executor_image(self.app_dir, task.workflow, task.executor)

    def write(self, kind: str, out_dir: str | Path) -> Path:
        """Build the images (reused by tag) and write the `kind` file into `out_dir`; return its path."""
        if kind not in KINDS:
            raise ValidationError(f"unknown export kind {kind!r}: choose one of {', '.join(KINDS)}")
        self.build_images()
        if kind == "k8s":  # Kubernetes expands $(VAR) in commands and env; $$ keeps a literal $
            docs = _escape(self.kubernetes(), lambda text: text.replace("$(", "$$("))
        else:  # compose and stack files interpolate $VAR; $$ keeps a literal $
            docs = _escape(
                [self.compose() if kind == "compose" else self.stack()], lambda text: text.replace("$", "$$")
            )
        import yaml

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / KINDS[kind]
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False, width=120))
        return path

    # -- shared pieces -------------------------------------------------------------------------
    def _env(self, task: Task, tracker_url: str) -> dict[str, str | None]:
        """The executor's environment; a variable passed by name stays None (compose: taken from the shell)."""
        return {
            **thread_env(task.resources),
            **task.executor.env,
            "MLFLOW_TRACKING_URI": tracker_url,
            "MLFLOW_EXPERIMENT_NAME": self.experiment,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PYTHONPATH": df.CODE_DIR,
            "PYTHONUNBUFFERED": "1",
            "SCANFLOW_WORKFLOW": task.workflow,
            "SCANFLOW_EXECUTOR": task.executor.name,
        }

    def _k8s_env(self, env: dict[str, str | None]) -> list[dict[str, Any]]:
        """Kubernetes env entries; a variable passed by name comes from the Secret `<prefix>-env`."""
        secret = f"{self.prefix}-env"
        return [
            {"name": k, "value": v}
            if v is not None
            else {"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}}
            for k, v in env.items()
        ]

    def _program(self, task: Task) -> list[str]:
        code = sources.executor_code(self.app_dir, task.workflow, task.executor)
        args = task.executor.command_args()
        return ["python", "-P", f"{df.CODE_DIR}/{code[0]}", *args] if code else args

    def _attempts(self, task: Task) -> str:
        """Shell: run the program up to retries+1 times, each under the executor's timeout."""
        ex = task.executor
        program = shlex.join(self._program(task))
        if not program:
            raise RunError(f"executor {task.key!r} has an image but no command: give it a file or code to export")
        if ex.timeout:
            program = f"timeout -s KILL {ex.timeout:g} {program}"
        tries = " ".join(str(i) for i in range(1, ex.retries + 2))
        return f"for attempt in {tries}; do {program} && exit 0; echo 'attempt failed ({task.key})'; done; exit 1"

    def _gated(self, task: Task, tracker_url: str) -> list[str]:
        """Shell command: wait for the tracker and the prerequisites' markers, run, leave a marker."""
        done = f"{df.WORKSPACE}/{STATE_DIR}/done/{self.export_id}"
        me = f"{done}/{self.names[task.key]}"
        lines = [
            f"mkdir -p {done}",
            f"until python -c {shlex.quote(ensure_experiment_script(tracker_url, self.experiment))} "
            "2>/dev/null; do sleep 2; done",
        ]
        for dep in self.deps[task.key]:
            marker = f"{done}/{self.names[dep]}"
            lines.append(
                f"until [ -e {marker}.ok ]; do [ -e {marker}.failed ] && "
                f"{{ echo 'upstream {dep} failed'; touch {me}.failed; exit 1; }}; sleep 2; done"
            )
        lines.append(f"if ( {self._attempts(task)} ); then touch {me}.ok; else touch {me}.failed; exit 1; fi")
        return ["sh", "-c", "\n".join(lines)]

    def _tracker_command(self, alias: str) -> list[str]:
        return server_command("sqlite:////data/mlflow.db", "/data/artifacts", "0.0.0.0", PORT, (alias,))

    # -- docker-compose ------------------------------------------------------------------------
    def _tracker_service(self) -> dict[str, Any]:
        check = ensure_experiment_script(f"http://127.0.0.1:{PORT}", self.experiment)
        return {
            "image": self.tracker_image,
            "command": self._tracker_command(TRACKER),
            "environment": dict(SERVER_ENV),
            "volumes": ["tracker-data:/data"],
            "networks": ["scanflow"],
            "healthcheck": {
                "test": ["CMD", "python", "-c", check],
                "interval": "3s",
                "timeout": "5s",
                "retries": 40,
                "start_period": "5s",
            },
            "labels": {LABEL_WORKFLOW: self.workflow.name},
        }

    def compose(self) -> dict[str, Any]:
        services: dict[str, Any] = {TRACKER: self._tracker_service()}
        url = f"http://{TRACKER}:{PORT}"
        for task in self.tasks:
            depends = {TRACKER: {"condition": "service_healthy"}}
            depends.update(
                {self.names[d]: {"condition": "service_completed_successfully"} for d in self.deps[task.key]}
            )
            plain = not (task.executor.retries or task.executor.timeout)
            services[self.names[task.key]] = {
                "image": self.images[task.key],
                "command": self._program(task) if plain else ["sh", "-c", self._attempts(task)],
                "working_dir": df.WORKSPACE,
                "environment": self._env(task, url),
                "volumes": [f"workspace:{df.WORKSPACE}"],
                "networks": ["scanflow"],
                "depends_on": depends,
                "restart": "no",
                "labels": {LABEL_WORKFLOW: task.workflow, "scanflow.key": task.key},
                **compose_resources(task.resources),
            }
        return {"services": services, "networks": {"scanflow": {}}, "volumes": {"workspace": {}, "tracker-data": {}}}

    # -- docker stack (swarm) ------------------------------------------------------------------
    def stack(self) -> dict[str, Any]:
        tracker = self._tracker_service()
        tracker["deploy"] = {"restart_policy": {"condition": "on-failure"}, "endpoint_mode": "dnsrr"}
        services: dict[str, Any] = {TRACKER: tracker}
        url = f"http://{TRACKER}:{PORT}"
        for task in self.tasks:
            services[self.names[task.key]] = {
                "image": self.images[task.key],
                "command": self._gated(task, url),
                "working_dir": df.WORKSPACE,
                "environment": self._env(task, url),
                "volumes": [f"workspace:{df.WORKSPACE}"],
                "networks": ["scanflow"],
                "deploy": {
                    "restart_policy": {"condition": "none"},
                    "endpoint_mode": "dnsrr",
                    **({"resources": stack_resources(task.resources)} if task.resources else {}),
                },
                "labels": {LABEL_WORKFLOW: task.workflow, "scanflow.key": task.key},
            }
        return {
            "version": "3.8",
            "services": services,
            "networks": {"scanflow": {"driver": "overlay", "attachable": True}},
            "volumes": {"workspace": {}, "tracker-data": {}},
        }

    # -- Kubernetes ------------------------------------------------------------------------------
    def _labels(self, component: str, **extra: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "scanflow",
            "app.kubernetes.io/part-of": self.prefix,
            "app.kubernetes.io/component": component,
            **extra,
        }

    def _pvc(self, name: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": self._labels("storage")},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }

    def kubernetes(self) -> list[dict[str, Any]]:
        tracker, workspace, data = (
            f"{self.prefix}-{TRACKER}",
            f"{self.prefix}-workspace",
            f"{self.prefix}-tracker-data",
        )
        security = {"runAsUser": df.UID, "runAsGroup": df.UID, "fsGroup": df.UID, "runAsNonRoot": True}
        selector = {"app.kubernetes.io/part-of": self.prefix, "app.kubernetes.io/component": TRACKER}
        docs: list[dict[str, Any]] = [self._pvc(workspace), self._pvc(data)]
        docs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": tracker, "labels": self._labels(TRACKER)},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": selector},
                    "template": {
                        "metadata": {"labels": self._labels(TRACKER)},
                        "spec": {
                            "securityContext": security,
                            "containers": [
                                {
                                    "name": "mlflow",
                                    "image": self.tracker_image,
                                    "imagePullPolicy": "IfNotPresent",
                                    "command": self._tracker_command(tracker),
                                    "env": [{"name": k, "value": v} for k, v in SERVER_ENV.items()],
                                    "ports": [{"containerPort": PORT, "name": "http"}],
                                    "readinessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 3},
                                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                                }
                            ],
                            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": data}}],
                        },
                    },
                },
            }
        )
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": tracker, "labels": self._labels(TRACKER)},
                "spec": {"selector": selector, "ports": [{"name": "http", "port": PORT, "targetPort": PORT}]},
            }
        )
        url = f"http://{tracker}:{PORT}"
        for task in self.tasks:
            name = k8s_name(self.prefix, self.names[task.key])
            labels = self._labels("executor", **{"scanflow.io/executor": self.names[task.key]})
            docs.append(
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {
                        "name": name,
                        "labels": labels,
                        "annotations": {
                            "scanflow.io/key": task.key,
                            "scanflow.io/after": json.dumps(self.deps[task.key]),
                        },
                    },
                    "spec": {
                        "backoffLimit": 0,
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {
                                "restartPolicy": "Never",
                                "securityContext": security,
                                "containers": [
                                    {
                                        "name": "executor",
                                        "image": self.images[task.key],
                                        "imagePullPolicy": "IfNotPresent",
                                        "command": self._gated(task, url),
                                        "workingDir": df.WORKSPACE,
                                        "env": self._k8s_env(self._env(task, url)),
                                        "volumeMounts": [{"name": "workspace", "mountPath": df.WORKSPACE}],
                                        **({"resources": k8s_resources(task.resources)} if task.resources else {}),
                                    }
                                ],
                                "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": workspace}}],
                            },
                        },
                    },
                }
            )
        return docs


def _escape(value: Any, fix: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fix(value)
    if isinstance(value, list):
        return [_escape(v, fix) for v in value]
    if isinstance(value, dict):
        return {k: _escape(v, fix) for k, v in value.items()}
    return value


def export(
    app: Any,
    workflow: str,
    kind: str,
    out_dir: str | Path,
    base_image: str | None = None,
    echo: Callable[[str], None] = print,
) -> Path:
    """Build `workflow`'s images and write its `kind` ("compose", "stack" or "k8s") file into `out_dir`."""
    wf = app.find(workflow)
    builder = ImageBuilder(base_image, echo=echo)
    defaults = app.resource_defaults(workflow)
    return Exporter(app.path, wf, app.experiment_name(workflow), builder, echo, defaults).write(kind, out_dir)
