"""Drift checking: detectors with one contract, MLflow conventions and the background watcher.

    det = AutoencoderDetector().fit(X_reference)      # or KSDetector(), MMDDetector()
    res = det.score(X_batch)                          # DriftResult: is_drift, p_value, scores, indices...
    log_batch(X_batch, tracking_uri, experiment)      # any process: an inference batch to check
    Watcher(tracking_uri, experiment, det).start()    # checks every logged batch once, in the background

TensorFlow, MLflow and scipy are imported only when a detector trains, scores or logs.
"""

from .autoencoder import AutoencoderDetector
from .base import KINDS, Detector, DetectorInputError, NotFittedError, make_detector
from .ks import KSDetector
from .mmd import MMDDetector
from .result import DriftResult
from .tracking import check_runs, load_detector, load_reference, log_batch, log_detector, log_reference
from .watcher import CheckRecord, Watcher

__all__ = [
    "AutoencoderDetector",
    "CheckRecord",
    "Detector",
    "DetectorInputError",
    "DriftResult",
    "KSDetector",
    "KINDS",
    "MMDDetector",
    "NotFittedError",
    "Watcher",
    "check_runs",
    "load_detector",
    "load_reference",
    "log_batch",
    "log_detector",
    "log_reference",
    "make_detector",
]
