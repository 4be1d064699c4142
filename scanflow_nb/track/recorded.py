"""A past workflow run as MLflow recorded it: its executor runs, their provenance and code, its declarations.

What compare and re-run read. An executor that was cached in that run did not run: its record is
the one of the run it was cached from (the root's `scanflow.cached.<key>` tag), which ran the same
code on the same parameters and inputs.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NotFoundError
from .history import RunRecord, cached_executors, read_runs, resolve_run
from .provenance import ARTIFACT_DIR, RECORD, WORKFLOW
from .store import get_client

BOOKKEEPING_METRICS = ("duration_s", "attempts", "exit_code")  # the engine's, on every executor run


@dataclass
class ExecutorRecord:
    """One executor in a recorded workflow run."""

    key: str
    run: RunRecord
    provenance: dict[str, Any] | None = None  # None: recorded before scanflow_nb recorded provenance
    code: str | None = None
    source_run: str | None = None  # the run that really ran (itself, or the one a cached run came from)

    @property
    def status(self) -> str:
        return self.run.status

    @property
    def parameters(self) -> dict[str, Any]:
        """The parameters it ran with: typed, from its provenance; else MLflow's strings."""
        return dict(self.provenance["parameters"]) if self.provenance else dict(self.run.params)

    @property
    def metrics(self) -> dict[str, float]:
        """What the executor itself logged (the engine's duration, attempts and exit code left out)."""
        return {k: v for k, v in self.run.metrics.items() if k not in BOOKKEEPING_METRICS}


@dataclass
class RecordedRun:
    """A workflow run: its root run and its executors by key ("workflow/executor")."""

    uri: str
    root: RunRecord
    executors: dict[str, ExecutorRecord] = field(default_factory=dict)
    focus: str | None = None  # the executor meant, when the run was named by an executor run's id

    @property
    def workflow(self) -> str:
        return self.root.tags.get("scanflow.workflow", self.root.name)

    @property
    def label(self) -> str:
        from datetime import datetime

        when = datetime.fromtimestamp(self.root.start).strftime("%Y-%m-%d %H:%M:%S")
        return f"{self.root.run_id[:8]} ({self.workflow}, {when}, {self.root.status})"

    def declarations(self) -> dict[str, Any]:
        """What the root recorded (`scanflow/workflow.json`): {"root", "workflow": the top-level tree}."""
        found = read_artifact(self.uri, self.root.run_id, f"{ARTIFACT_DIR}/{WORKFLOW}")
        if found is None:
            raise NotFoundError(
                f"run {self.root.run_id} has no recorded declarations ({ARTIFACT_DIR}/{WORKFLOW}): "
                "it was made by a version of scanflow_nb that did not record them"
            )
        return json.loads(found)


def read_artifact(uri: str, run_id: str, path: str) -> str | None:
    """The text of artifact `path` of run `run_id`, None if it has none."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # not in a notebook cell
    client = get_client(uri)
    with tempfile.TemporaryDirectory(prefix="scanflow-artifact-") as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception:  # MLflow raises several kinds for a missing artifact
            return None
        return Path(local).read_text(errors="replace") if Path(local).is_file() else None


def load_run(uri: str, ref: str) -> RecordedRun:
    """The workflow run `ref` (a run id, or its first characters) with its executors.

    The id of a nested workflow's or an executor's run means the workflow run it belongs to; for
    an executor, `focus` is then its key.
    """
    found = resolve_run(uri, ref)

    def since(start: float) -> dict[str, RunRecord]:
        return {r.run_id: r for r in read_runs(uri, ["workflow", "executor"], since=start - 1)}

    everything = since(found.start)
    focus = found.tags.get("scanflow.key", found.name) if found.kind == "executor" else None
    while found.parent:  # up to the root, which started before its children (by as long as it took)
        parent = everything.get(found.parent)
        if parent is None:
            try:
                parent = resolve_run(uri, found.parent)
            except NotFoundError:  # deleted since
                break
        found = parent
    if found.run_id not in everything:
        everything = since(found.start)
    recorded = RecordedRun(uri, found, focus=focus)
    children: dict[str | None, list[RunRecord]] = {}
    for run in everything.values():
        children.setdefault(run.parent, []).append(run)
    stack = [found.run_id]
    while stack:
        for run in children.get(stack.pop(), []):
            if run.kind == "executor":
                key = run.tags.get("scanflow.key", run.name)
                recorded.executors[key] = _executor(uri, key, run)
            else:
                stack.append(run.run_id)
    for key, run in cached_executors(uri, [found], everything).get(found.run_id, {}).items():
        recorded.executors[key] = _executor(uri, key, run)
    recorded.executors = dict(sorted(recorded.executors.items(), key=lambda item: item[1].run.start))
    return recorded


def _executor(uri: str, key: str, run: RunRecord) -> ExecutorRecord:
    source = run.tags.get("scanflow.cached_from") or run.run_id
    record = ExecutorRecord(key, run, source_run=source)
    text = read_artifact(uri, source, f"{ARTIFACT_DIR}/{RECORD}")
    if text is None:
        return record
    record.provenance = json.loads(text)
    code = record.provenance.get("code")
    if code:
        record.code = read_artifact(uri, source, f"{ARTIFACT_DIR}/{Path(code['path']).name}")
    return record
