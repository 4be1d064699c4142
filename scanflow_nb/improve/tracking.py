"""A label session in MLflow: one run with its counts, scores and the labels as a CSV artifact."""

import tempfile
from pathlib import Path

from ..track import experiment_id, get_client, log_values


def log_label_session(
    tracking_uri: str,
    experiment: str,
    store,
    session: str,
    metrics: dict | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Record `session` of `store` in `experiment` (optionally nested under `parent_run_id`); returns the run id."""
    client = get_client(tracking_uri)
    tags = {"scanflow.kind": "labels", "scanflow.label_session": session}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run_id = client.create_run(experiment_id(client, experiment), run_name=f"labels: {session}", tags=tags).info.run_id
    actions = store.actions(session)
    counts = {
        "labels": sum(kind == "label" for _, kind, _ in actions),
        "skips": sum(kind == "skip" for _, kind, _ in actions),
    }
    log_values(client, run_id, metrics={**counts, **(metrics or {})}, tags={"scanflow.store": store.path})
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(run_id, str(store.export_csv(session, Path(tmp) / "labels.csv")))
    client.set_terminated(run_id, "FINISHED")
    return run_id
