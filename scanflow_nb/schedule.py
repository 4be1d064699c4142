"""The plan of a run: a workflow tree flattened into executor tasks with their prerequisites.

Pure functions over the model (no I/O), shared by every back end. A task's key is
"workflow/executor", unique in an app because workflow names are unique in an app.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import NotFoundError, RunError
from .resources import Resources
from .spec import Executor, Workflow


@dataclass
class Task:
    key: str
    workflow: str  # the workflow that declares the executor
    executor: Executor
    lineage: tuple[str, ...]  # workflow names from the run's root down to `workflow`
    deps: set[str] = field(default_factory=set)
    resources: Resources = field(default_factory=Resources)  # the executor's own, else inherited


def task_key(workflow: str, executor: str) -> str:
    return f"{workflow}/{executor}"


def plan(root: Workflow, defaults: Resources | None = None) -> list[Task]:
    """Every executor under `root`, in run order, each with the keys it must wait for.

    In a sequential workflow each child waits for the one before it (so a failure stops the rest);
    in a parallel one a child waits only for its `depends_on`. A child workflow's tasks inherit
    what the child waits for; waiting for a child workflow means waiting for all its executors.
    Each task's resources are its executor's, else its workflows' (`defaults`: those that the
    workflows around `root` give).
    """
    tasks: list[Task] = []
    _plan_level(root, (root.name,), set(), tasks, defaults or Resources())
    if not tasks:
        raise RunError(f"workflow {root.name!r} has no executors: declare some before running it")
    return tasks


def _plan_level(
    wf: Workflow, lineage: tuple[str, ...], inherited: set[str], out: list[Task], defaults: Resources
) -> set[str]:
    defaults = wf.resources.over(defaults)
    by_name = {c.name: c for c in wf.children()}
    done: dict[str, set[str]] = {}  # child name -> keys of all its tasks
    previous: set[str] = set()
    for name in wf.order():
        child = by_name[name]
        deps = set(inherited)
        for dep in getattr(child, "depends_on", []):
            deps |= done[dep]
        if not wf.parallel:
            deps |= previous
        if isinstance(child, Executor):
            key = task_key(wf.name, child.name)
            out.append(Task(key, wf.name, child, lineage, deps, child.resources.over(defaults)))
            done[name] = {key}
        else:
            done[name] = _plan_level(child, lineage + (child.name,), deps, out, defaults)
        previous = done[name]
    mine = set().union(set(), *done.values())
    return mine or inherited  # an empty workflow stands for what it waited for


def select(tasks: list[Task], only: str | None = None, start: str | None = None) -> set[str]:
    """Keys to run: all; `only` one executor; or `start` and everything that waits on it.

    `only`/`start` name an executor as "name" or "workflow/name".
    """
    if only and start:
        raise RunError("give either --only or --from, not both")
    ref = only or start
    if ref is None:
        return {t.key for t in tasks}
    key = resolve([t.key for t in tasks], ref)
    if only:
        return {key}
    chosen = {key}
    for task in tasks:  # tasks are in run order: deps come first
        if task.deps & chosen:
            chosen.add(task.key)
    return chosen


def resolve(keys: list[str], ref: str) -> str:
    """The key among `keys` of the executor `ref` ("name" or "workflow/name")."""
    matches = [key for key in keys if ref == key or key.endswith(f"/{ref}")]
    if not matches:
        raise NotFoundError(f"no executor {ref!r} here")
    if len(matches) > 1:
        raise NotFoundError(f"executor name {ref!r} is ambiguous: use one of {', '.join(matches)}")
    return matches[0]


def cache_key(executor: Executor, code: str, requirements: str, inputs: Mapping[str, str], backend: str) -> str:
    """A digest of everything that decides an executor's result.

    `code` is the sha256 of what the executor runs (its script, or its image or Dockerfile);
    `inputs` maps each declared input path to the digest of its content ("missing" if absent).
    """
    payload: dict[str, Any] = {
        "code": code,
        "parameters": executor.parameters,
        "env": executor.env,
        "requirements": requirements,
        "inputs": dict(sorted(inputs.items())),
        "image": executor.image,
        "backend": backend,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
