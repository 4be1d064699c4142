"""The workflow model: executors, nested workflows and their special nodes.

Pure data and pure functions: nothing here touches files, processes, Docker or MLflow.
Every object validates itself when built and when changed, and every error names the culprit.
"""

from __future__ import annotations

import graphlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ValidationError
from .resources import Resources

NAME_RULE = "letters, digits, '-' and '_', starting with a letter or digit, at most 63 characters"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_PARAM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SECRET_WORDS = ("KEY", "TOKEN", "PASSWORD", "PASSWD", "SECRET", "CREDENTIAL", "CREDENTIALS")


def looks_secret(name: str) -> bool:
    """True for names like API_KEY, HF_TOKEN, PGPASSWORD, AWS_SECRET_ACCESS_KEY (not TOKENIZERS_PARALLELISM)."""
    return any(part.endswith(SECRET_WORDS) for part in name.upper().split("_"))


_MODEL_URI = re.compile(r"(models|runs):/\S+|/\S+")
_HOST = re.compile(r"\d{1,3}(\.\d{1,3}){3}")


def check_name(name: Any, kind: str) -> str:
    """Return `name` if it is safe as a file, container, Kubernetes-ish and MLflow name."""
    if not isinstance(name, str) or not name:
        raise ValidationError(f"{kind} name is missing")
    if not _NAME.fullmatch(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "-_"))})
        why = f" (contains {', '.join(repr(c) for c in bad)})" if bad else ""
        raise ValidationError(f"invalid {kind} name {name!r}{why}: use {NAME_RULE}")
    return name


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    items = list(value)
    if not all(isinstance(v, str) and v for v in items):
        raise ValidationError(f"{what} must be a list of non-empty strings, got {value!r}")
    return items


@dataclass
class Executor:
    """One step of a workflow: a Python script run with `--key value` parameters.

    `file` is relative to the app folder; `code` is inline source used when there is no file.
    `requirements` is either a list of pip specifiers or the name of a requirements file.
    `inputs`/`outputs` are paths relative to the app folder; inputs take part in caching.
    `cpus`, `memory` ("512M", "2G") and `gpus` are what one run of it needs; each one not given is
    taken from the nearest enclosing workflow that gives it.
    `env` maps names to values; a name mapped to None is passed from the kernel's environment
    at run time, and only its name is saved (the way to pass secrets: a literal value for a
    name that looks like one is refused).

    A service (`service=True`) runs until its run ends: it listens on `port`, counts as done for what
    depends on it once `health` answers 200, and is stopped when the rest of the run is over (or on
    `%scanflow stop`). `model` makes it `scanflow serve MODEL` (no code needed; its parameters are
    `scanflow serve` options such as batch-rows). `replicas` copies run behind one name on the swarm.
    It is reachable on `host` of this machine: the loopback interface unless told otherwise.
    """

    name: str
    file: str | None = None
    code: str | None = None
    requirements: list[str] | str | None = None
    dockerfile: str | None = None
    image: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str | None] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    retries: int = 0
    timeout: float | None = None
    cpus: float | str | None = None
    memory: int | str | None = None
    gpus: int | None = None
    service: bool = False
    model: str | None = None
    port: int | None = None
    replicas: int = 1
    health: str = "/health"
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        check_name(self.name, "executor")
        where = f"executor {self.name!r}"
        self.resources  # noqa: B018 (validates cpus, memory and gpus)
        if self.model is not None:
            if not isinstance(self.model, str) or not _MODEL_URI.fullmatch(self.model):
                raise ValidationError(f"{where}: model must be an MLflow model URI (models:/NAME@ALIAS...)")
            self.service = True
        if not (self.file or self.code or self.image or self.dockerfile or self.model):
            raise ValidationError(f"{where} has nothing to run: give file=, code=, image=, dockerfile= or model=")
        self._check_service(where)
        for attr in ("file", "dockerfile", "image"):
            value = getattr(self, attr)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValidationError(f"{where}: {attr} must be a non-empty string")
        for attr in ("file", "dockerfile"):
            _check_relative(getattr(self, attr), f"{where}: {attr}")
        if isinstance(self.requirements, str):
            _check_relative(self.requirements, f"{where}: requirements file")
        elif self.requirements is not None:
            self.requirements = _str_list(self.requirements, f"{where}: requirements")
        self.parameters = dict(self.parameters or {})
        for key, value in self.parameters.items():
            if not isinstance(key, str) or not _PARAM_KEY.fullmatch(key):
                raise ValidationError(f"{where}: invalid parameter name {key!r}")
            if not isinstance(value, (str, int, float, bool)):
                raise ValidationError(
                    f"{where}: parameter {key!r} must be a string, number or boolean, got {type(value).__name__}"
                )
        self.env = dict(self.env or {})
        for key, value in self.env.items():
            if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
                raise ValidationError(f"{where}: invalid environment variable name {key!r}")
            if value is None:
                continue
            if looks_secret(key):
                raise ValidationError(
                    f"{where}: {key} looks like a secret, and its value would be saved in plain text: "
                    f"pass it by name (--env {key}, or env={{{key!r}: None}}) to use the kernel's own {key} at run time"
                )
            self.env[key] = str(value)
        self.depends_on = _str_list(self.depends_on, f"{where}: depends_on")
        if self.name in self.depends_on:
            raise ValidationError(f"{where} depends on itself")
        self.inputs = _str_list(self.inputs, f"{where}: inputs")
        self.outputs = _str_list(self.outputs, f"{where}: outputs")
        for path in self.inputs + self.outputs:
            _check_relative(path, f"{where}: path")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValidationError(f"{where}: retries must be a whole number >= 0, got {self.retries!r}")
        if self.timeout is not None and (
            isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or self.timeout <= 0
        ):
            raise ValidationError(f"{where}: timeout must be a positive number of seconds, got {self.timeout!r}")

    @property
    def resources(self) -> Resources:
        """What this executor itself asks for (see `Workflow.resource_defaults` for what it inherits)."""
        return Resources.parse(self.cpus, self.memory, self.gpus, f"executor {self.name!r}")

    def passed_env(self) -> list[str]:
        """The names of the variables passed from the kernel's environment at run time."""
        return [key for key, value in self.env.items() if value is None]

    def _check_service(self, where: str) -> None:
        if not isinstance(self.service, bool):
            raise ValidationError(f"{where}: service must be true or false")
        if not self.service:
            if self.port is not None or self.replicas != 1:
                raise ValidationError(f"{where}: port and replicas are for services (service=True)")
            return
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValidationError(f"{where} is a service: give the port it listens on (1 to 65535), got {self.port!r}")
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 1:
            raise ValidationError(f"{where}: replicas must be a whole number >= 1, got {self.replicas!r}")
        if not isinstance(self.health, str) or not self.health.startswith("/"):
            raise ValidationError(f"{where}: health must be an HTTP path such as /health, got {self.health!r}")
        if not isinstance(self.host, str) or not _HOST.fullmatch(self.host):
            raise ValidationError(f"{where}: host must be an IP address such as 127.0.0.1, got {self.host!r}")
        if self.outputs:
            raise ValidationError(f"{where} is a service: it has no outputs to wait for")

    def command_args(self) -> list[str]:
        """The executor's parameters as command-line arguments (`--key value`)."""
        args: list[str] = []
        for key, value in self.parameters.items():
            args += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
        return args

    def to_dict(self) -> dict[str, Any]:
        """The executor as plain data, omitting fields left at their defaults."""
        return _non_default(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Executor:
        return cls(**_known_keys(cls, data, "executor"))


def _check_relative(path: str | None, what: str) -> None:
    if path is None:
        return
    parts = path.replace("\\", "/").split("/")
    if path.startswith(("/", "~")) or ".." in parts:
        raise ValidationError(f"{what} {path!r} must be a path inside the app folder (no '..', not absolute)")


@dataclass
class Tracker:
    """Where a workflow's runs are tracked: the app's embedded MLflow store, or an `mlflow server`.

    With `port=None` (the default) runs go to a SQLite store in the app folder. With a port, a
    real `mlflow server` over that same store is started on `host:port` for the run.
    """

    port: int | None = None
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.port is not None and (
            isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535
        ):
            raise ValidationError(
                f"tracker port must be a number from 0 to 65535 (0: any free port), got {self.port!r}"
            )

    @property
    def embedded(self) -> bool:
        return self.port is None


@dataclass
class Checker:
    """Drift supervision of a workflow: which detector watches its inference batches, how often."""

    detector: str = "auto"  # a kind of scanflow_nb.check.KINDS; "auto": tabular for tables, else autoencoder
    every: float = 5.0
    alpha: float = 0.05
    reference: str | None = None  # .npy, .parquet or .csv file of reference data, inside the app folder

    def __post_init__(self) -> None:
        _check_relative(self.reference, "checker: reference")
        if not self.every > 0:
            raise ValidationError(f"checker: every must be a positive number of seconds, got {self.every!r}")
        if not 0 < self.alpha < 1:
            raise ValidationError(f"checker: alpha must be between 0 and 1, got {self.alpha!r}")


STRATEGIES = ("auto", "typical", "margin", "uncertainty", "entropy", "batch", "random")


@dataclass
class Improver:
    """Human-in-the-loop improvement: the active-learning strategy and how many samples a round labels.

    `%scanflow label -w WORKFLOW` and the closed loop query with `strategy` and label `k` samples a round.
    """

    strategy: str = "auto"
    k: int = 10

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValidationError(
                f"improver: unknown strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}"
            )
        if not isinstance(self.k, int) or self.k < 1:
            raise ValidationError(f"improver: k must be a whole number >= 1, got {self.k!r}")


@dataclass
class Planner:
    """Model promotion: the registered model, the metric that decides, and the alias it moves."""

    model: str | None = None
    metric: str = "accuracy"
    alias: str = "champion"
    greater_is_better: bool = True


SPECIALS = {"tracker": Tracker, "checker": Checker, "improver": Improver, "planner": Planner}


@dataclass
class Workflow:
    """Executors and child workflows, to any depth.

    Sequential (the default): children run one at a time in declaration order, executors first,
    reordered only as `depends_on` requires; a failure stops everything after it.
    Parallel: children start as soon as their `depends_on` are done; a failure stops only its dependents.
    A `depends_on` entry names a sibling executor or a sibling workflow.
    `cpus`, `memory` and `gpus` are defaults for every executor inside it, nested workflows included.
    """

    name: str
    executors: list[Executor] = field(default_factory=list)
    workflows: list[Workflow] = field(default_factory=list)
    parallel: bool = False
    tracker: Tracker | None = None
    checker: Checker | None = None
    improver: Improver | None = None
    planner: Planner | None = None
    cpus: float | str | None = None
    memory: int | str | None = None
    gpus: int | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "workflow")
        self.resources  # noqa: B018 (validates cpus, memory and gpus)
        self.executors = list(self.executors)
        self.workflows = list(self.workflows)
        for attr, kind in SPECIALS.items():
            value = getattr(self, attr)
            if value is not None and not isinstance(value, kind):
                raise ValidationError(f"workflow {self.name!r}: {attr} must be a {kind.__name__}, got {value!r}")
        self.validate()

    # -- structure -------------------------------------------------------------------------
    def children(self) -> list[Executor | Workflow]:
        """Executors then child workflows, in declaration order."""
        return [*self.executors, *self.workflows]

    def walk(self) -> Iterator[Workflow]:
        """This workflow and every nested one, depth first."""
        yield self
        for child in self.workflows:
            yield from child.walk()

    def all_executors(self) -> Iterator[tuple[Workflow, Executor]]:
        """Every (workflow, executor) pair in the tree, depth first."""
        for wf in self.walk():
            for ex in wf.executors:
                yield wf, ex

    def find(self, name: str) -> Workflow | None:
        """The workflow called `name` in this tree, or None."""
        return next((wf for wf in self.walk() if wf.name == name), None)

    def parent_of(self, name: str) -> Workflow | None:
        """The workflow whose direct child is the workflow `name`, or None."""
        return next((wf for wf in self.walk() if any(c.name == name for c in wf.workflows)), None)

    def executor(self, name: str) -> Executor | None:
        return next((ex for ex in self.executors if ex.name == name), None)

    def special(self, name: str, kind: str) -> Tracker | Checker | Improver | Planner | None:
        """The `kind` special ("tracker", "checker", "improver", "planner") that applies to workflow `name`.

        The one rule for all four: a workflow's own declaration, else that of the nearest workflow
        around it, up to this one; None when none of them declares one. A run uses the tracker that
        applies to the workflow it runs, for every workflow nested in it.
        """
        if kind not in SPECIALS:
            raise ValidationError(f"unknown special {kind!r}: choose one of {', '.join(SPECIALS)}")
        current = self.find(name)
        while current is not None:
            if getattr(current, kind) is not None:
                return getattr(current, kind)
            current = self.parent_of(current.name)
        return None

    @property
    def resources(self) -> Resources:
        """The defaults this workflow itself gives its executors."""
        return Resources.parse(self.cpus, self.memory, self.gpus, f"workflow {self.name!r}")

    def resource_defaults(self, name: str) -> Resources:
        """The defaults workflow `name` gives its executors: its own, each missing one from the
        nearest workflow around it (up to this one) that gives it."""
        defaults, current = Resources(), self.find(name)
        while current is not None:
            defaults = defaults.over(current.resources)
            current = self.parent_of(current.name)
        return defaults

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValidationError for duplicates, unknown dependencies and cycles, anywhere in the tree."""
        seen: dict[str, str] = {}
        for wf in self.walk():
            if wf.name in seen:
                raise ValidationError(f"workflow name {wf.name!r} is used twice in workflow {self.name!r}")
            seen[wf.name] = wf.name
            wf._validate_level()

    def _validate_level(self) -> None:
        self.resources  # noqa: B018 (a field changed since __post_init__ is checked again)
        names: set[str] = set()
        for child in self.children():
            kind = "executor" if isinstance(child, Executor) else "workflow"
            if child.name in names:
                raise ValidationError(f"duplicate name {child.name!r} in workflow {self.name!r}")
            if not isinstance(child, (Executor, Workflow)):
                raise ValidationError(f"workflow {self.name!r}: {kind}s must be Executor/Workflow objects")
            names.add(child.name)
        for ex in self.executors:
            ex.resources  # noqa: B018
            for dep in ex.depends_on:
                if dep not in names:
                    raise ValidationError(f"executor {ex.name!r} in workflow {self.name!r} depends on unknown {dep!r}")
        self.order()

    def dependencies(self) -> dict[str, list[str]]:
        """Sibling name -> the sibling names it depends on (child workflows depend on nothing here)."""
        return {c.name: list(getattr(c, "depends_on", [])) for c in self.children()}

    def order(self) -> list[str]:
        """Children in run order: declaration order, moved only where `depends_on` requires."""
        deps = self.dependencies()
        position = {name: i for i, name in enumerate(deps)}
        sorter = graphlib.TopologicalSorter(deps)
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            cycle = " -> ".join(exc.args[1])
            raise ValidationError(f"dependency cycle in workflow {self.name!r}: {cycle}") from None
        ordered: list[str] = []
        ready: list[str] = []
        while sorter.is_active():
            ready = sorted({*ready, *sorter.get_ready()}, key=position.__getitem__)
            name = ready.pop(0)
            ordered.append(name)
            sorter.done(name)
        return ordered

    # -- changes (each one validated; a failed change leaves the workflow as it was) --------
    def add(self, child: Executor | Workflow, replace: bool = False) -> bool:
        """Add an executor or child workflow; with `replace`, one of the same name is swapped in place.

        Returns True if an existing child was replaced.
        """
        bucket = self.executors if isinstance(child, Executor) else self.workflows
        other = self.workflows if isinstance(child, Executor) else self.executors
        before = (list(self.executors), list(self.workflows))
        index = next((i for i, c in enumerate(bucket) if c.name == child.name), None)
        if any(c.name == child.name for c in other) or (index is not None and not replace):
            existing = "an executor" if any(c.name == child.name for c in self.executors) else "a workflow"
            raise ValidationError(f"workflow {self.name!r} already has {existing} named {child.name!r}")
        if index is None:
            bucket.append(child)
        else:
            bucket[index] = child
        try:
            self.validate()
        except ValidationError:
            self.executors, self.workflows = before
            raise
        return index is not None

    # -- plain data --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name}
        if self.parallel:
            data["parallel"] = True
        data.update({k: getattr(self, k) for k in ("cpus", "memory", "gpus") if getattr(self, k) is not None})
        for attr in SPECIALS:
            value = getattr(self, attr)
            if value is not None:
                data[attr] = _non_default(value)
        if self.executors:
            data["executors"] = [ex.to_dict() for ex in self.executors]
        if self.workflows:
            data["workflows"] = [wf.to_dict() for wf in self.workflows]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workflow:
        data = _known_keys(cls, data, "workflow")
        for attr, kind in SPECIALS.items():
            if data.get(attr) is not None:
                value = data[attr]
                data[attr] = kind(**_known_keys(kind, value or {}, attr))
        data["executors"] = [Executor.from_dict(e) for e in data.get("executors") or []]
        data["workflows"] = [Workflow.from_dict(w) for w in data.get("workflows") or []]
        return cls(**data)


def _non_default(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if value != default or f.name == "name":
            out[f.name] = value
    return out


def _known_keys(cls: type, data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError(f"{what} entry must be a mapping, got {data!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        label = f"{what} {data.get('name')!r}" if "name" in data else what
        raise ValidationError(f"{label}: unknown field(s) {', '.join(unknown)}")
    return dict(data)
