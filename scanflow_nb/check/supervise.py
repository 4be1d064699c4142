"""Checkers of an app's workflows: which detector, fitted on what, and the running watchers.

The detector kind and alpha come from the workflow's declared `Checker` (defaults when none is
declared); kind "auto" means the tabular detector for a table and the autoencoder otherwise. The
reference data is, in order: the `reference` given (a .npy array, a Parquet or CSV table - a path
inside the app folder or absolute - or an MLflow artifact `runs:/<run id>/<path>`), the Checker's
own `reference`, else the newest reference logged to the workflow's experiment (`log_reference`).
A fitted detector is kept in `<app>/.scanflow/checker/<workflow>/` together with a fingerprint of
its kind, alpha, model and reference data, so a restarted kernel reuses it instead of training again.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NotFoundError, ValidationError
from ..spec import Checker

_WATCHERS: dict[tuple[str, str], Any] = {}
TABLE_SUFFIXES = (".parquet", ".pq", ".csv")


def _checker_spec(app, workflow: str) -> Checker:
    return app.special(workflow, "checker") or Checker()


def _read_file(path: Path, shown: str):
    from .tracking import read_table

    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValidationError(f"reference data {shown!r} is not a numpy .npy array: {exc}") from None
    if path.suffix.lower() in TABLE_SUFFIXES:
        try:
            return read_table(path)
        except ValueError as exc:
            raise ValidationError(f"reference data {shown!r} is not a readable table: {exc}") from None
    raise ValidationError(f"reference data {shown!r}: give a .npy array or a .parquet / .csv table")


def read_reference(app, reference: str, tracking_uri: str | None = None):
    """Reference data from a file (.npy, .parquet, .csv) or an MLflow artifact `runs:/<run id>/<path>`."""
    if reference.startswith("runs:/"):
        from mlflow.exceptions import MlflowException

        from .tracking import client_for

        run_id, _, artifact = reference[len("runs:/") :].partition("/")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = client_for(tracking_uri).download_artifacts(run_id, artifact, tmp)
            except (MlflowException, OSError) as exc:
                raise NotFoundError(f"reference {reference!r} cannot be downloaded: {str(exc)[:200]}") from None
            return _read_file(Path(local), reference)
    path = Path(reference).expanduser()
    path = path if path.is_absolute() else app.path / path
    if not path.is_file():
        raise NotFoundError(f"reference data file {str(path)!r} does not exist")
    return _read_file(path, str(path))


def _digest(X) -> bytes:
    from .quality import is_frame

    if is_frame(X):
        import pandas as pd

        hashed = pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes()
        return f"{list(X.columns)}|{list(map(str, X.dtypes))}|".encode() + hashed
    return f"{X.dtype}|{X.shape}|".encode() + np.ascontiguousarray(X).tobytes()


def choose_kind(kind: str, X) -> str:
    """The detector kind for reference `X`: "auto" is tabular for a table, else the autoencoder."""
    from .quality import is_frame

    if kind != "auto":
        return kind
    return "tabular" if is_frame(X) else "autoencoder"


def fitted_detector(
    app, workflow: str, reference: str | None = None, detector: str | None = None, model: str | None = None
):
    """The fitted detector for `workflow`'s checker (trained now, or reused from the app's state).

    `detector` overrides the Checker's kind; `model` (an MLflow model URI) is the model a
    "model_output" detector watches.
    """
    from .base import FORMAT, Detector, make_detector
    from .tracking import load_reference

    spec = _checker_spec(app, workflow)
    reference = reference or spec.reference
    uri = app.tracking_uri(workflow)
    if reference is not None:
        X = read_reference(app, reference, uri)
        reference_run = reference[len("runs:/") :].partition("/")[0] if reference.startswith("runs:/") else None
    else:
        X, reference_run = load_reference(uri, app.experiment_name(workflow))
    kind = choose_kind(detector or spec.detector, X)
    if kind == "model_output" and model is None:
        raise ValidationError("the model_output detector needs the model it watches: give --model MODEL_URI")
    if kind == "model_output" and reference_run is not None and reference_run == training_run(model, uri):
        raise ValidationError(
            f"the reference data was logged by the run that trained {model} (run {reference_run}): a model is "
            "over-confident on its training data, so nearly every fresh batch would look drifted; log held-out "
            "data the model never saw with log_reference, or give it with --reference"
        )
    options = {"model": model, "tracking_uri": uri} if model is not None else {}
    fingerprint = f"{FORMAT}|{kind}|{spec.alpha}|{sorted(options.items())}|".encode() + _digest(X)
    digest = hashlib.sha256(fingerprint).hexdigest()
    folder = app.state_dir / "checker" / workflow
    if (folder / "fingerprint").is_file() and (folder / "fingerprint").read_text() == digest:
        return Detector.load(folder / "detector")
    fitted = make_detector(kind, alpha=spec.alpha, **options).fit(X)
    shutil.rmtree(folder, ignore_errors=True)
    fitted.save(folder / "detector")
    (folder / "fingerprint").write_text(digest)
    return fitted


def training_run(model_uri: str, tracking_uri: str) -> str | None:
    """The run that logged the MLflow model `model_uri` (runs:/ or a registered models:/ name), if known."""
    from mlflow.exceptions import MlflowException

    from .model_output import registered_version

    if model_uri.startswith("runs:/"):
        return model_uri[len("runs:/") :].partition("/")[0]
    try:
        found = registered_version(model_uri, tracking_uri)
    except MlflowException:
        return None  # not in this registry: loading it says what is wrong
    return None if found is None else found.run_id


def start_checker(
    app,
    workflow: str,
    every: float | None = None,
    reference: str | None = None,
    detector: str | None = None,
    model: str | None = None,
):
    """Start (or return the running) background checker of `workflow`; returns its Watcher."""
    from .watcher import Watcher

    key = (str(app.path), workflow)
    running = _WATCHERS.get(key)
    if running is not None and running.running and running.status()["state"] != "stopping":
        return running
    spec = _checker_spec(app, workflow)
    watcher = Watcher(
        app.tracking_uri(workflow),
        app.experiment_name(workflow),
        fitted_detector(app, workflow, reference, detector, model),
        every=every or spec.every,
    )
    if running is not None:
        running.stop()
    _WATCHERS[key] = watcher.start()
    return watcher


def get_checker(app, workflow: str):
    """The Watcher of `workflow` started in this kernel (NotFoundError if none)."""
    app.find(workflow)
    watcher = _WATCHERS.get((str(app.path), workflow))
    if watcher is None:
        raise NotFoundError(f"no checker was started for workflow {workflow!r} in this kernel")
    return watcher


def stop_checker(app, workflow: str) -> bool:
    """Stop `workflow`'s checker within 2 s; True if its thread has ended."""
    return get_checker(app, workflow).stop()
