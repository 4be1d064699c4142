"""Checkers of an app's workflows: which detector, fitted on what, and the running watchers.

The detector kind and alpha come from the workflow's declared `Checker` (defaults when none is
declared). The reference data is the .npy file given as `reference` (a path inside the app folder
or absolute), else the Checker's own `reference` path if the spec has one, else the newest
reference logged to the workflow's experiment (`log_reference`).
A fitted detector is kept in `<app>/.scanflow/checker/<workflow>/` together with a fingerprint of
its kind, alpha and reference data, so a restarted kernel reuses it instead of training again.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NotFoundError, ValidationError
from ..spec import Checker

_WATCHERS: dict[tuple[str, str], Any] = {}


def _checker_spec(app, workflow: str) -> Checker:
    return app.special(workflow, "checker") or Checker()


def _read_reference(app, reference: str | None) -> np.ndarray:
    path = Path(reference).expanduser()
    path = path if path.is_absolute() else app.path / path
    if not path.is_file():
        raise NotFoundError(f"reference data file {str(path)!r} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValidationError(f"reference data {str(path)!r} is not a numpy .npy array: {exc}") from None


def fitted_detector(app, workflow: str, reference: str | None = None):
    """The fitted detector for `workflow`'s checker (trained now, or reused from the app's state)."""
    from .base import Detector, make_detector
    from .tracking import load_reference

    spec = _checker_spec(app, workflow)
    reference = reference or getattr(spec, "reference", None)  # a Checker(reference=...) field, if declared
    if reference is not None:
        X = _read_reference(app, reference)
    else:
        X, _ = load_reference(app.tracking_uri(workflow), app.experiment_name(workflow))
    digest = hashlib.sha256(f"{spec.detector}|{spec.alpha}|{X.dtype}|{X.shape}|".encode() + X.tobytes()).hexdigest()
    folder = app.state_dir / "checker" / workflow
    if (folder / "fingerprint").is_file() and (folder / "fingerprint").read_text() == digest:
        return Detector.load(folder / "detector")
    detector = make_detector(spec.detector, alpha=spec.alpha).fit(X)
    shutil.rmtree(folder, ignore_errors=True)
    detector.save(folder / "detector")
    (folder / "fingerprint").write_text(digest)
    return detector


def start_checker(app, workflow: str, every: float | None = None, reference: str | None = None):
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
        fitted_detector(app, workflow, reference),
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
