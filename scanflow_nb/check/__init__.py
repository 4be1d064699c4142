"""Drift checking: detectors with one contract, MLflow conventions, the stream's alarm and the watcher.

    det = TabularDetector().fit(df_reference)         # or AutoencoderDetector(), KSDetector(), MMDDetector(),
    res = det.score(df_batch)                         #    ModelOutputDetector(model).fit(X_ref, y_ref)
    res.is_drift, res.p_value, res.drifted, res.features, res.findings, res.indices
    stream = StreamChecker(det); stream.update(df_batch).alarm   # false alarms controlled over the stream
    log_batch(X_batch, tracking_uri, experiment)      # any process: an inference batch to check
    Watcher(tracking_uri, experiment, det).start()    # checks every logged batch once, in the background

TensorFlow, MLflow, pandas and scipy are imported only when a detector trains, scores or logs.
"""

from .autoencoder import AutoencoderDetector
from .base import KINDS, Detector, DetectorInputError, NotFittedError, make_detector
from .ks import KSDetector
from .mmd import MMDDetector
from .model_output import ModelOutputDetector
from .result import FINDING_KINDS, DriftResult, Finding
from .stream import StreamChecker, StreamStep
from .tabular import TabularDetector
from .tracking import (
    check_runs,
    load_check,
    load_detector,
    load_reference,
    log_batch,
    log_detector,
    log_reference,
)
from .watcher import CheckRecord, Watcher

__all__ = [
    "FINDING_KINDS",
    "KINDS",
    "AutoencoderDetector",
    "CheckRecord",
    "Detector",
    "DetectorInputError",
    "DriftResult",
    "Finding",
    "KSDetector",
    "MMDDetector",
    "ModelOutputDetector",
    "NotFittedError",
    "StreamChecker",
    "StreamStep",
    "TabularDetector",
    "Watcher",
    "check_runs",
    "load_check",
    "load_detector",
    "load_reference",
    "log_batch",
    "log_detector",
    "log_reference",
    "make_detector",
]
