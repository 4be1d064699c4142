"""The MLflow conventions of drift checking. Any process can follow them; the Watcher reads them.

Inference batch: a run in the workflow's experiment carrying the artifact `batch/batch.npy`
(numpy .npy, shape (n, ...), no pickles) and the tag `scanflow.batch = "true"`, set only after
the artifact is uploaded. `log_batch` does exactly that.
What the deployed model answered may sit beside the batch, in the same run and uploaded before the tag:
`batch/predictions.npy` (shape (n, ...): the model's outputs, row for row) and `batch/probabilities.npy`
(shape (n, k): predicted class probabilities, when the model has them; columns in the order of the model's
classes, given as a JSON list in the tag `scanflow.classes` when known). A serving process logs both
(`scanflow_nb.serve`); a model-output detector reads them instead of calling the model again.

Check result: one run per batch, tagged `scanflow.check = "true"` and
`scanflow.batch_run_id = <batch run id>`, a child of the batch run (`mlflow.parentRunId`), with
metrics is_drift (0/1), p_value, score, threshold, alpha, n, n_anomalous, p_<evidence> and the
artifacts `check/indices.npy` (anomalous positions, most anomalous first) and `check/scores.npy`.
A batch that cannot be scored (e.g. wrong shape) gets a FAILED check run with the tag
`scanflow.error`. Once its result is complete, the batch run is tagged
`scanflow.checked = <check run id>`: that tag in MLflow itself is what makes checking exactly-once.

Reference data: a run tagged `scanflow.reference = "true"` with the artifact
`reference/reference.npy` (`log_reference`); the newest one is the reference of the experiment.
Detectors: `log_detector` stores a saved detector under the artifact folder `detector/`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NotFoundError, ScanflowError, TrackerError
from ..track import experiment_id, log_values
from ..track import get_client as client_for
from .result import DriftResult

BATCH_TAG = "scanflow.batch"
BATCH_ARTIFACT = "batch/batch.npy"
PREDICTIONS_ARTIFACT = "batch/predictions.npy"
PROBABILITIES_ARTIFACT = "batch/probabilities.npy"
CLASSES_TAG = "scanflow.classes"
LOGGED_AT_TAG = "scanflow.batch_logged_at"
CHECKED_TAG = "scanflow.checked"
CHECK_TAG = "scanflow.check"
BATCH_RUN_TAG = "scanflow.batch_run_id"
ERROR_TAG = "scanflow.error"
OUTAGE_TAG = "scanflow.outage_before"
REFERENCE_TAG = "scanflow.reference"
REFERENCE_ARTIFACT = "reference/reference.npy"
DETECTOR_TAG = "scanflow.detector"
PARENT_TAG = "mlflow.parentRunId"


def _array(X: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(X)
    except Exception:
        raise ScanflowError(f"{what} must be a numpy array") from None
    if arr.dtype == object or arr.ndim < 1 or len(arr) == 0:
        raise ScanflowError(f"{what} must be a non-empty numeric array of shape (n, ...), got {arr.dtype} {arr.shape}")
    return arr


def _log_npy(client, run_id: str, arr: np.ndarray, artifact: str) -> None:
    folder, name = artifact.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / name, arr, allow_pickle=False)
        client.log_artifact(run_id, str(Path(tmp) / name), artifact_path=folder)


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
) -> str:
    """Log the inference batch `X` (n, ...) for checking; returns the batch run id.

    With `run_id`, the batch is attached to that existing run (e.g. the inference run itself);
    otherwise a new run is created and finished. `predictions` (n, ...) and `probabilities` (n, k)
    are what the model answered for these rows, logged beside the batch when given.
    """
    arr = _array(X, "the batch")
    outputs = {
        artifact: _array(value, what)
        for artifact, value, what in (
            (PREDICTIONS_ARTIFACT, predictions, "the predictions"),
            (PROBABILITIES_ARTIFACT, probabilities, "the probabilities"),
        )
        if value is not None
    }
    for artifact, values in outputs.items():
        if len(values) != len(arr):
            raise ScanflowError(f"{artifact} has {len(values)} rows but the batch has {len(arr)}")
    client = client_for(tracking_uri)
    run_id, created = _new_or_given_run(client, experiment_id(client, experiment), run_id, run_name or "batch", tags)
    with tempfile.TemporaryDirectory() as tmp:  # the batch's files in one upload
        for artifact, values in {**outputs, BATCH_ARTIFACT: arr}.items():
            np.save(Path(tmp) / artifact.rsplit("/", 1)[1], values, allow_pickle=False)
        client.log_artifacts(run_id, tmp, artifact_path=BATCH_ARTIFACT.rsplit("/", 1)[0])
    # one write, after the artifacts: the batch is complete from here on
    log_values(client, run_id, tags={LOGGED_AT_TAG: f"{time.time():.3f}", BATCH_TAG: "true"})
    if created:
        client.set_terminated(run_id, "FINISHED")
    return run_id


def log_reference(X: Any, tracking_uri: str, experiment: str, run_id: str | None = None) -> str:
    """Log reference data (what normal looks like) for the experiment's checker; returns the run id."""
    arr = _array(X, "the reference")
    client = client_for(tracking_uri)
    run_id, created = _new_or_given_run(client, experiment_id(client, experiment), run_id, "reference", None)
    _log_npy(client, run_id, arr, REFERENCE_ARTIFACT)
    client.set_tag(run_id, REFERENCE_TAG, "true")
    if created:
        client.set_terminated(run_id, "FINISHED")
    return run_id


def download_npy(client, run_id: str, artifact: str) -> np.ndarray:
    """A .npy artifact of a run (pickled objects are refused)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, artifact, tmp)
        return np.load(local, allow_pickle=False)


def load_reference(tracking_uri: str, experiment: str) -> tuple[np.ndarray, str]:
    """The newest reference data logged for `experiment` and the id of its run."""
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
    return download_npy(client, runs[0].info.run_id, REFERENCE_ARTIFACT), runs[0].info.run_id


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


def load_detector(tracking_uri: str, run_id: str):
    """The detector logged by `log_detector` in run `run_id`."""
    from .base import Detector

    client = client_for(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, "detector", tmp)
        except Exception as exc:
            raise NotFoundError(f"run {run_id!r} has no logged detector: {exc}") from None
        return Detector.load(local)


def log_check(
    client,
    exp_id: str,
    batch_run_id: str,
    result: DriftResult | None,
    error: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> str:
    """Log one batch's check result (or why it could not be checked), then mark the batch checked."""
    tags = {CHECK_TAG: "true", BATCH_RUN_TAG: batch_run_id, PARENT_TAG: batch_run_id, **(extra_tags or {})}
    if error is not None:
        tags[ERROR_TAG] = error[:4000]
    run_id = client.create_run(exp_id, run_name="drift-check", tags=tags).info.run_id
    if result is not None:
        log_values(client, run_id, metrics=result.summary())
        _log_npy(client, run_id, result.indices, "check/indices.npy")
        _log_npy(client, run_id, result.scores, "check/scores.npy")
    client.set_terminated(run_id, "FINISHED" if result is not None else "FAILED")
    client.set_tag(batch_run_id, CHECKED_TAG, run_id)
    return run_id


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
