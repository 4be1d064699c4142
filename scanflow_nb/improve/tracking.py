"""A label session in MLflow: one run with its counts, scores, the labels and the queries (which strategy chose)."""

import csv
import tempfile
from collections import Counter
from pathlib import Path

from ..track import experiment_id, get_client, log_values

QUERY_COLUMNS = ["query", "labels_before", "strategy", "used", "reason", "chosen", "labeled", "model_knew", "seconds"]


def log_label_session(
    tracking_uri: str,
    experiment: str,
    store,
    session: str,
    metrics: dict | None = None,
    parent_run_id: str | None = None,
    strategy: str | None = None,
    queries=(),
) -> str:
    """Record `session` of `store` in `experiment` (optionally nested under `parent_run_id`); returns the run id.

    `queries` (the improver's Query records) become `queries.csv` and, for each query whose samples were
    labeled, the metric `labels.<strategy used>` (how many) at the step of the labels given before it.
    """
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
    used = Counter(q.used for q in queries if q.answers)
    tags = {"scanflow.store": store.path, "scanflow.strategies_used": ", ".join(f"{n} x{c}" for n, c in used.items())}
    params = {"strategy": strategy, "classes": store.classes(session)} if strategy else None
    log_values(client, run_id, params, {**counts, **(metrics or {})}, tags)
    log_queries(client, run_id, queries)
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(run_id, str(store.export_csv(session, Path(tmp) / "labels.csv")))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def log_queries(client, run_id: str, queries) -> None:
    """Which strategy chose each query and how well the model knew the samples: `queries.csv` and metrics."""
    queries = list(queries)
    if not queries:
        return
    rows = [
        [
            q.index,
            q.n_labeled,
            q.strategy,
            q.used,
            q.reason,
            len(q.ids),
            len(q.answers),
            sum(q.hits) / len(q.hits) if q.hits else "",
            round(q.seconds, 4),
        ]
        for q in queries
    ]
    for q in queries:
        if q.answers:
            log_values(client, run_id, metrics={f"labels.{q.used}": len(q.answers)}, step=q.n_labeled)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "queries.csv"
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerows([QUERY_COLUMNS, *rows])
        client.log_artifact(run_id, str(path))
