"""The MLflow run tree of a workflow run: a parent run, nested runs per child workflow and executor.

Uses MlflowClient with explicit run ids (no fluent, thread-local active run), so it works the
same from the kernel's main thread and from a background run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..events import CACHED, FAILED, SKIPPED, SUCCEEDED
from .artifacts import attach
from .store import log_values

MLFLOW_STATUS = {
    SUCCEEDED: "FINISHED",
    CACHED: "FINISHED",
    FAILED: "FAILED",
    SKIPPED: "KILLED",
    "interrupted": "KILLED",
}


class RunTree:
    def __init__(self, client, experiment_id: str, common_tags: dict[str, str]):
        self.client, self.experiment_id, self.common_tags = client, experiment_id, common_tags
        self.artifact_uris: dict[str, str] = {}
        self.open: set[str] = set()  # runs started and not finished yet: what an interrupted run must close

    def start(
        self,
        name: str,
        kind: str,
        parent_id: str | None,
        tags: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> str:
        """Create a running run named `name`; `kind` is "workflow" or "executor"."""
        all_tags = {**self.common_tags, "scanflow.kind": kind, **(tags or {})}
        if parent_id:
            all_tags["mlflow.parentRunId"] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        self.open.add(run.info.run_id)
        self.artifact_uris[run.info.run_id] = run.info.artifact_uri
        if params:
            log_values(self.client, run.info.run_id, params=params)
        return run.info.run_id

    def finish(
        self,
        run_id: str,
        state: str,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        artifacts: list[Path] = (),
        logs: list[Path] = (),
    ) -> None:
        """Record the outcome of a run and close it with the matching MLflow status.

        `artifacts` are copied into the run; `logs` (files never rewritten in place) are the run's
        artifacts themselves where the artifact store is a local folder (hard links).
        """
        log_values(self.client, run_id, metrics=metrics, tags={"scanflow.status": state, **(tags or {})})
        uri = self.artifact_uris.pop(run_id, None)
        for path, link in [*((p, False) for p in artifacts), *((p, True) for p in logs)]:
            if Path(path).is_file():
                attach(self.client, run_id, uri, Path(path), "scanflow", link)
        self.client.set_terminated(run_id, MLFLOW_STATUS.get(state, "FINISHED"))
        self.open.discard(run_id)
