"""The MLflow conventions of drift checking. Any process can follow them; the Watcher reads them.

Inference batch: a run in the workflow's experiment carrying the artifact `batch/batch.npy` (numpy
.npy, shape (n, ...), no pickles) or, for a table, `batch/batch.parquet` (a pandas DataFrame), and
the tag `scanflow.batch = "true"`, set only after the artifacts are uploaded. What the deployed model
answered may sit beside the batch, uploaded with it: `batch/predictions.npy` (shape (n, ...): the
model's outputs, row for row) and `batch/probabilities.npy` (float (n, classes): predicted class
probabilities, when the model has them, in the order of the model's classes, given as a JSON list
in the tag `scanflow.classes` when known). A serving process logs both (`scanflow_nb.serve`);
`ModelOutputDetector` scores the probabilities instead of calling the model. `log_batch` does all
of this.

Check result: one run per batch, tagged `scanflow.check = "true"` and `scanflow.batch_run_id = <batch
run id>`, a child of the batch run (`mlflow.parentRunId`), with metrics is_drift (0/1), p_value,
score, threshold, alpha, n, n_anomalous, n_drifted, n_findings, p_<evidence>, alarm (0/1) and cusum
(the stream's evidence after this batch), the tags `scanflow.drifted` (the drifted columns, most
significant first) and `scanflow.findings` (one line per data-quality finding), and the artifacts
`check/indices.npy` (anomalous positions, most anomalous first), `check/scores.npy` and
`check/result.json` (features, drifted, findings, estimates). A batch that cannot be scored gets a
FAILED check run with the tag `scanflow.error`.

Exactly once, with any number of watchers: a watcher first claims a batch by logging the param
`scanflow.claim.<attempt>` on the batch run. MLflow params cannot change once logged, and the store
enforces it (the params table's key is (run, key)): of several watchers logging the same claim,
exactly one succeeds, on the embedded store and through `mlflow server` alike. A later attempt
number is claimed only when the holder is known dead (same machine, process gone) or its claim is
older than the watcher's `claim_timeout`. The result is then committed the same way, with the param
`scanflow.result = <check run id>`; a check run that loses the commit is deleted. Finally the batch
run is tagged `scanflow.checked = <check run id>`, which is what watchers search for.

Reference data: a run tagged `scanflow.reference = "true"` with the artifact
`reference/reference.npy` or `reference/reference.parquet` (`log_reference`); the newest one is the
reference of the experiment. Detectors: `log_detector` stores a saved detector under `detector/`.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NotFoundError, ScanflowError, TrackerError
from ..track import experiment_id, log_values
from ..track import get_client as client_for
from .result import DriftResult

BATCH_TAG = "scanflow.batch"
BATCH_ARTIFACT = "batch/batch.npy"
BATCH_TABLE = "batch/batch.parquet"
PREDICTIONS_ARTIFACT = "batch/predictions.npy"
PROBABILITIES_ARTIFACT = "batch/probabilities.npy"
CLASSES_TAG = "scanflow.classes"
CLAIM_PARAM = "scanflow.claim."
RESULT_PARAM = "scanflow.result"
WATCHER_TAG = "scanflow.watcher"
DRIFTED_TAG = "scanflow.drifted"
FINDINGS_TAG = "scanflow.findings"
LOGGED_AT_TAG = "scanflow.batch_logged_at"
CHECKED_TAG = "scanflow.checked"
CHECK_TAG = "scanflow.check"
BATCH_RUN_TAG = "scanflow.batch_run_id"
ERROR_TAG = "scanflow.error"
OUTAGE_TAG = "scanflow.outage_before"
REFERENCE_TAG = "scanflow.reference"
REFERENCE_ARTIFACT = "reference/reference.npy"
REFERENCE_TABLE = "reference/reference.parquet"
DETECTOR_TAG = "scanflow.detector"
PARENT_TAG = "mlflow.parentRunId"


def _data(X: Any, what: str):
    """A batch or reference as it will be logged: a numeric array (n, ...) or a non-empty DataFrame."""
    from .quality import is_frame

    if is_frame(X):
        if len(X) == 0 or X.shape[1] == 0:
            raise ScanflowError(f"{what} must be a non-empty table, got {X.shape[0]} rows x {X.shape[1]} columns")
        return X.rename(columns=str)
    try:
        arr = np.asarray(X)
    except Exception:
        raise ScanflowError(f"{what} must be a numpy array or a pandas DataFrame") from None
    if arr.dtype == object or arr.ndim < 1 or len(arr) == 0:
        raise ScanflowError(
            f"{what} must be a non-empty numeric array of shape (n, ...) or a DataFrame, got {arr.dtype} {arr.shape}"
        )
    return arr


def _write_data(folder: Path, data, npy: str, table: str) -> None:
    """Write an array as .npy or a DataFrame as Parquet (no pickles either way) into `folder`."""
    if isinstance(data, np.ndarray):
        np.save(folder / npy.rsplit("/", 1)[1], data, allow_pickle=False)
        return
    try:
        data.to_parquet(folder / table.rsplit("/", 1)[1])
    except (ValueError, TypeError, ImportError) as exc:
        raise ScanflowError(f"the table cannot be written as Parquet: {exc}") from None


def _log_data(client, run_id: str, data, npy: str, table: str) -> None:
    """Upload an array as .npy or a DataFrame as Parquet."""
    with tempfile.TemporaryDirectory() as tmp:
        _write_data(Path(tmp), data, npy, table)
        client.log_artifacts(run_id, tmp, artifact_path=npy.rsplit("/", 1)[0])


def _log_npy(client, run_id: str, arr: np.ndarray, artifact: str) -> None:
    _log_data(client, run_id, np.asarray(arr), artifact, artifact)


def _new_or_given_run(client, exp_id: str, run_id: str | None, run_name: str | None, tags: dict[str, str] | None):
    if run_id is not None:
        return run_id, False
    return client.create_run(exp_id, run_name=run_name, tags=dict(tags or {})).info.run_id, True


def log_batch(
    X: Any,
    tracking_uri: str,
    experiment: str,
    run_id: str | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    predictions: Any = None,
    probabilities: Any = None,
    classes: list | None = None,
) -> str:
    """Log the inference batch `X` (an array (n, ...) or a DataFrame) for checking; returns the batch run id.

    `predictions` (n, ...) and `probabilities` (n, classes) are what the model answered for these
    rows, logged beside the batch when given; `classes` names the probabilities' columns. With
    `run_id`, the batch is attached to that existing run (e.g. the inference run itself); otherwise
    a new run is created and finished.
    """
    data = _data(X, "the batch")
    outputs = {}
    for artifact, value, what in (
        (PREDICTIONS_ARTIFACT, predictions, "the predictions"),
        (PROBABILITIES_ARTIFACT, probabilities, "the probabilities"),
    ):
        if value is not None:
            outputs[artifact] = _data(np.asarray(value), what)
            if len(outputs[artifact]) != len(data):
                raise ScanflowError(f"{artifact} has {len(outputs[artifact])} rows but the batch has {len(data)}")
    if probabilities is not None and outputs[PROBABILITIES_ARTIFACT].ndim != 2:
        raise ScanflowError(f"probabilities must be (n, classes), got shape {outputs[PROBABILITIES_ARTIFACT].shape}")
    client = client_for(tracking_uri)
    run_id, created = _new_or_given_run(client, experiment_id(client, experiment), run_id, run_name or "batch", tags)
    with tempfile.TemporaryDirectory() as tmp:  # the batch's files in one upload
        for artifact, values in outputs.items():
            np.save(Path(tmp) / artifact.rsplit("/", 1)[1], values, allow_pickle=False)
        _write_data(Path(tmp), data, BATCH_ARTIFACT, BATCH_TABLE)
        client.log_artifacts(run_id, tmp, artifact_path=BATCH_ARTIFACT.rsplit("/", 1)[0])
    marks = {LOGGED_AT_TAG: f"{time.time():.3f}", BATCH_TAG: "true"}
    if classes is not None:
        marks[CLASSES_TAG] = json.dumps([str(c) for c in classes])
    # one write, after the artifacts: the batch is complete from here on
    log_values(client, run_id, tags=marks)
    if created:
        client.set_terminated(run_id, "FINISHED")
    return run_id


def log_reference(X: Any, tracking_uri: str, experiment: str, run_id: str | None = None) -> str:
    """Log reference data (an array or a DataFrame: what normal looks like) for the checker; returns the run id."""
    data = _data(X, "the reference")
    client = client_for(tracking_uri)
    run_id, created = _new_or_given_run(client, experiment_id(client, experiment), run_id, "reference", None)
    _log_data(client, run_id, data, REFERENCE_ARTIFACT, REFERENCE_TABLE)
    client.set_tag(run_id, REFERENCE_TAG, "true")
    if created:
        client.set_terminated(run_id, "FINISHED")
    return run_id


def download_npy(client, run_id: str, artifact: str) -> np.ndarray:
    """A .npy artifact of a run (pickled objects are refused)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, artifact, tmp)
        return np.load(local, allow_pickle=False)


def read_table(path: str | Path):
    """A DataFrame from a Parquet or CSV file (ValueError when it cannot be read as one)."""
    import pandas as pd

    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as exc:  # pandas and pyarrow raise many kinds for a damaged file
        raise ValueError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def _present(client, run_id: str, artifact: str) -> set[str]:
    """The artifact paths in the folder of `artifact` (one listing)."""
    return {f.path for f in client.list_artifacts(run_id, artifact.rsplit("/", 1)[0])}


def _download_data(client, run_id: str, npy: str, table: str, present: set[str]):
    """The run's array (.npy) or table (.parquet) artifact; None when it has neither."""
    if npy in present:
        return download_npy(client, run_id, npy)
    if table in present:
        with tempfile.TemporaryDirectory() as tmp:
            return read_table(client.download_artifacts(run_id, table, tmp))
    return None


def load_batch(client, run_id: str) -> tuple[Any, np.ndarray | None]:
    """The batch of a batch run (array or DataFrame) and its logged probabilities (or None).

    Raises ValueError when the run has no batch artifact or it cannot be read.
    """
    present = _present(client, run_id, BATCH_ARTIFACT)
    data = _download_data(client, run_id, BATCH_ARTIFACT, BATCH_TABLE, present)
    if data is None:
        raise ValueError(f"the run is tagged {BATCH_TAG} but has no artifact {BATCH_ARTIFACT} or {BATCH_TABLE}")
    probs = download_npy(client, run_id, PROBABILITIES_ARTIFACT) if PROBABILITIES_ARTIFACT in present else None
    return data, probs


def load_reference(tracking_uri: str, experiment: str) -> tuple[Any, str]:
    """The newest reference data (array or DataFrame) logged for `experiment` and the id of its run."""
    client = client_for(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = (
        []
        if found is None
        else client.search_runs(
            [found.experiment_id],
            f"tags.`{REFERENCE_TAG}` = 'true'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    )
    if not runs:
        raise NotFoundError(
            f"no reference data logged in experiment {experiment!r}: "
            "call scanflow_nb.check.log_reference(X, tracking_uri, experiment) first"
        )
    run_id = runs[0].info.run_id
    present = _present(client, run_id, REFERENCE_ARTIFACT)
    data = _download_data(client, run_id, REFERENCE_ARTIFACT, REFERENCE_TABLE, present)
    if data is None:
        raise NotFoundError(f"reference run {run_id} has no artifact {REFERENCE_ARTIFACT} or {REFERENCE_TABLE}")
    return data, run_id


def log_detector(detector, tracking_uri: str, experiment: str, run_id: str | None = None) -> str:
    """Save a fitted detector as the artifact folder `detector/` of a run; returns the run id."""
    client = client_for(tracking_uri)
    run_id, created = _new_or_given_run(
        client, experiment_id(client, experiment), run_id, f"detector-{detector.kind}", None
    )
    with tempfile.TemporaryDirectory() as tmp:
        detector.save(Path(tmp) / "detector")
        client.log_artifacts(run_id, str(Path(tmp) / "detector"), artifact_path="detector")
    client.set_tag(run_id, DETECTOR_TAG, detector.kind)
    log_values(client, run_id, params={f"detector.{k}": str(v)[:500] for k, v in detector.params().items()})
    if created:
        client.set_terminated(run_id, "FINISHED")
    return run_id


@contextmanager
def _downloaded(tracking_uri: str, run_id: str, artifact: str, what: str):
    """A local copy of a run's artifact, for the duration of the block (NotFoundError naming `what`)."""
    client = client_for(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, artifact, tmp)
        except Exception as exc:
            raise NotFoundError(f"run {run_id!r} has no {what}: {exc}") from None
        yield Path(local)


def load_detector(tracking_uri: str, run_id: str):
    """The detector logged by `log_detector` in run `run_id`."""
    from .base import Detector

    with _downloaded(tracking_uri, run_id, "detector", "logged detector") as local:
        return Detector.load(local)


# -- claims: exactly one check per batch ----------------------------------------------------------------
def claimant() -> str:
    """A new claimant id: machine, process, a random part and the time (what a stale claim is judged by)."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:12]}/{time.time():.0f}"


def latest_claim(params: dict[str, str]) -> tuple[int, str | None]:
    """The highest claim attempt on a batch run and who holds it ((0, None) when unclaimed)."""
    attempts = [
        int(k[len(CLAIM_PARAM) :]) for k in params if k.startswith(CLAIM_PARAM) and k[len(CLAIM_PARAM) :].isdigit()
    ]
    if not attempts:
        return 0, None
    return max(attempts), params[f"{CLAIM_PARAM}{max(attempts)}"]


def _write_once(client, run_id: str, key: str, value: str) -> bool:
    """Log param `key` = `value` unless it exists; True if this value is the one stored (the store decides)."""
    try:
        client.log_param(run_id, key, value)
        return True
    except Exception:
        stored = client.get_run(run_id).data.params.get(key)  # raises in turn if the tracker is down
        if stored is None:
            raise
        return stored == value


def claim(client, batch_run_id: str, attempt: int, who: str) -> bool:
    """Try to take `attempt` of checking a batch; True for exactly one of any number of contenders."""
    return _write_once(client, batch_run_id, f"{CLAIM_PARAM}{attempt}", who)


def commit(client, batch_run_id: str, check_run_id: str) -> bool:
    """Make `check_run_id` the batch's one result; False if another result was committed first."""
    if not _write_once(client, batch_run_id, RESULT_PARAM, check_run_id):
        return False
    mark_checked(client, batch_run_id, check_run_id)
    return True


def mark_checked(client, batch_run_id: str, check_run_id: str) -> None:
    """Tag the batch run checked; another watcher writing the same tag at the same moment is no error."""
    try:
        client.set_tag(batch_run_id, CHECKED_TAG, check_run_id)
    except Exception:  # SQLite reports the race as a UNIQUE constraint failure
        if client.get_run(batch_run_id).data.tags.get(CHECKED_TAG) != check_run_id:
            raise


def log_check(
    client,
    exp_id: str,
    batch_run_id: str,
    result: DriftResult | None,
    error: str | None = None,
    extra_tags: dict[str, str] | None = None,
    extra_metrics: dict[str, float] | None = None,
) -> str | None:
    """Log one batch's check result (or why it could not be checked) and commit it as the batch's result.

    Returns the check run id, or None when another result had been committed first (this one is deleted).
    """
    tags = {CHECK_TAG: "true", BATCH_RUN_TAG: batch_run_id, PARENT_TAG: batch_run_id, **(extra_tags or {})}
    if error is not None:
        tags[ERROR_TAG] = error[:4000]
    if result is not None:
        tags[DRIFTED_TAG] = ", ".join(result.drifted)[:4000]
        tags[FINDINGS_TAG] = "\n".join(map(str, result.findings))[:4000]
    run_id = client.create_run(exp_id, run_name="drift-check", tags=tags).info.run_id
    if result is not None:
        log_values(client, run_id, metrics={**result.summary(), **(extra_metrics or {})})
        _log_npy(client, run_id, result.indices, "check/indices.npy")
        _log_npy(client, run_id, result.scores, "check/scores.npy")
        evidence = {
            "features": result.features,
            "drifted": result.drifted,
            "findings": [f.as_dict() for f in result.findings],
            "estimates": result.estimates,
        }
        client.log_text(run_id, json.dumps(evidence, indent=1), "check/result.json")
    client.set_terminated(run_id, "FINISHED" if result is not None else "FAILED")
    if not commit(client, batch_run_id, run_id):
        client.delete_run(run_id)
        return None
    return run_id


def load_check(tracking_uri: str, check_run_id: str) -> dict:
    """The evidence of a check run: features, drifted, findings and estimates (from `check/result.json`)."""
    with _downloaded(tracking_uri, check_run_id, "check/result.json", "check/result.json") as local:
        return json.loads(local.read_text())


def check_runs(tracking_uri: str, experiment: str) -> list:
    """Every check run of the experiment (oldest first): what a user inspects to see the verdicts."""
    client = client_for(tracking_uri)
    exp_id = experiment_id(client, experiment, create=False)
    return _search_all(client, exp_id, f"tags.`{CHECK_TAG}` = 'true'")


def _search_all(client, exp_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [exp_id], filter_string, order_by=["attributes.start_time ASC"], max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def ensure_reachable(tracking_uri: str, timeout: float = 2.0) -> None:
    """Raise TrackerError quickly if an HTTP tracking server does not answer its health check."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        reply = requests.get(tracking_uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as exc:
        raise TrackerError(f"MLflow tracker {tracking_uri} is unreachable: {type(exc).__name__}") from None
    if reply.status_code != 200:
        raise TrackerError(f"MLflow tracker {tracking_uri} answered its health check with HTTP {reply.status_code}")
