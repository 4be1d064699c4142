"""Re-run a past workflow run with what MLflow recorded for it, not with today's declarations.

The run's root recorded its declarations (`scanflow/workflow.json`), and each executor that ran its
code, typed parameters and requirements (`scanflow/provenance.json` and the code beside it). From
those a workflow is rebuilt in memory, each executor's code inline, and run by the engine like any
other (forced: nothing is taken from the cache). Executors that did not run then are left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import NotFoundError
from ..events import Listener
from ..files import digest
from ..run.engine import Run
from ..run.result import RunResult
from ..schedule import task_key
from ..spec import Executor, Workflow
from ..track.history import RERUN_OF
from ..track.recorded import ExecutorRecord, RecordedRun, load_run

CHANGED_INPUTS = "scanflow.rerun.changed_inputs"


def rerun(
    app: Any,
    ref: str,
    backend: Any = None,
    *,
    max_workers: int | None = None,
    listeners: Iterable[Listener] = (),
    echo: bool = True,
) -> RunResult:
    """See `App.rerun`."""
    recorded = load_run(app.store_uri, ref)
    declared = recorded.declarations()
    top = Workflow.from_dict(declared["workflow"])
    root = top.find(declared["root"])
    if root is None:
        raise NotFoundError(f"run {recorded.root.run_id}: its declarations do not hold workflow {declared['root']!r}")
    notes = rebuild(root, recorded, app)
    changed = changed_inputs(app.path, root, recorded)
    backend = backend or recorded.root.tags.get("scanflow.backend", "local")
    what = f"executor {recorded.focus}" if recorded.focus else f"workflow {root.name!r}"
    print(f"re-running {what} of run {recorded.label} with its recorded code and parameters on {backend}")
    for note in notes:
        print(f"  note: {note}")
    print(
        "  inputs changed since: " + ", ".join(f"{path} ({key})" for path, key in changed)
        if changed
        else "  inputs unchanged since"
    )
    tags = {RERUN_OF: recorded.root.run_id}
    if changed:
        tags[CHANGED_INPUTS] = ", ".join(path for path, _ in changed)[:4000]
    return Run(
        app.twin([top]),
        root.name,
        backend,
        force=True,
        only=recorded.focus,
        max_workers=max_workers,
        listeners=listeners,
        echo=echo,
        tags=tags,
    ).execute()


def rebuild(root: Workflow, recorded: RecordedRun, app: Any) -> list[str]:
    """Put each recorded executor's code, parameters and requirements in place under `root`; drop the
    executors that did not run. Returns notes for the user."""
    notes: list[str] = []
    for wf in list(root.walk()):
        kept = []
        for ex in wf.executors:
            record = recorded.executors.get(task_key(wf.name, ex.name))
            if record is None or record.provenance is None:
                why = "did not run" if record is None else "has no recorded provenance"
                notes.append(f"{wf.name}/{ex.name} {why} in that run: left out")
                continue
            kept.append(_recorded_executor(wf.name, ex, record, app, notes))
        dropped = {ex.name for ex in wf.executors} - {ex.name for ex in kept}
        for ex in kept:
            ex.depends_on = [d for d in ex.depends_on if d not in dropped]
        wf.executors = kept
    if not any(True for _ in root.all_executors()):
        raise NotFoundError(f"run {recorded.root.run_id} has no executor with recorded code to re-run")
    root.validate()
    return notes


def _recorded_executor(workflow: str, ex: Executor, record: ExecutorRecord, app: Any, notes: list[str]) -> Executor:
    provenance = record.provenance or {}
    requirements = [line for line in (provenance.get("requirements") or "").splitlines() if line.strip()]
    changes: dict[str, Any] = {"parameters": record.parameters, "requirements": requirements or None}
    if record.code is not None:
        changes.update(file=None, code=record.code)
    elif provenance.get("image_digest") or provenance.get("image"):
        changes.update(image=provenance.get("image_digest") or provenance["image"], dockerfile=None)
    changes["env"] = _today_env(app, workflow, ex, notes)
    return dataclasses.replace(ex, **changes)


def _today_env(app: Any, workflow: str, ex: Executor, notes: list[str]) -> dict[str, str]:
    """Environment values are never recorded: take them from today's declaration of the executor."""
    if not ex.env:
        return {}
    try:
        _, today = app.find_executor(task_key(workflow, ex.name))
    except NotFoundError:
        today = None
    env = {name: today.env[name] for name in ex.env if today is not None and name in today.env}
    missing = sorted(set(ex.env) - set(env))
    if missing:
        notes.append(f"{workflow}/{ex.name}: environment variable(s) {', '.join(missing)} no longer declared: left out")
    return env


def changed_inputs(app_dir: Path, root: Workflow, recorded: RecordedRun) -> list[tuple[str, str]]:
    """(path, executor key) of each declared input whose content differs from when that run read it.

    Inputs that an executor of the re-run writes again (a declared output) are not counted.
    """
    produced = {path for _, ex in root.all_executors() for path in ex.outputs}
    changed = []
    for wf, ex in root.all_executors():
        key = task_key(wf.name, ex.name)
        then = (recorded.executors[key].provenance or {}).get("inputs") or {}
        for path, sha in then.items():
            if path not in produced and digest(Path(app_dir) / path) != sha:
                changed.append((path, key))
    return changed
