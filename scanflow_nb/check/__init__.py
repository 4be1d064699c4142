"""Drift checking: detectors with one contract, MLflow conventions and the background watcher.

    det = AutoencoderDetector().fit(X_reference)      # or KSDetector(), MMDDetector()
    res = det.score(X_batch)                          # DriftResult: is_drift, p_value, scores, indices...
    log_batch(X_batch, tracking_uri, experiment)      # any process: an inference batch to check
    Watcher(tracking_uri, experiment, det).start()    # checks every logged batch once, in the background

TensorFlow, MLflow and scipy are imported only when a detector trains, scores or logs.
"""
from .autoencoder import AutoencoderDetector
from .detectors import Detector, DetectorInputError, KSDetector, MMDDetector, NotFittedError
from .result import DriftResult
from .tracking import check_runs, load_detector, load_reference, log_batch, log_detector, log_reference
from .watcher import CheckRecord, Watcher

__all__ = ["AutoencoderDetector", "CheckRecord", "Detector", "DetectorInputError", "DriftResult", "KSDetector",
           "MMDDetector", "NotFittedError", "Watcher", "check_runs", "load_detector", "load_reference", "log_batch",
           "log_detector", "log_reference", "make_detector"]


def make_detector(kind: str, alpha: float = 0.05, **options) -> Detector:
    """An unfitted detector of `kind` ("autoencoder", "ks" or "mmd"), as a Checker spec names it."""
    from ..errors import ValidationError

    if kind not in Detector.KINDS:
        raise ValidationError(f"unknown detector {kind!r}; choose one of: {', '.join(sorted(Detector.KINDS))}")
    return Detector.KINDS[kind](alpha=alpha, **options)
