"""What a drift detector returns for one batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DriftResult:
    """The verdict on one batch.

    is_drift:  p_value < alpha.
    p_value:   of the batch-level test (for combined evidence: Bonferroni-corrected minimum).
    score:     the batch-level statistic of the detector (larger means more drift).
    scores:    one anomaly score per sample of the batch (larger means more anomalous).
    threshold: per-sample scores above it are anomalous at level alpha (reference quantile).
    indices:   positions in the batch of the samples above the threshold, most anomalous first.
    tests:     the p-value of every piece of evidence that went into `p_value`.
    """

    is_drift: bool
    p_value: float
    score: float
    scores: np.ndarray
    threshold: float
    indices: np.ndarray
    alpha: float
    tests: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        p_value: float,
        score: float,
        scores: np.ndarray,
        threshold: float,
        alpha: float,
        tests: dict[str, float] | None = None,
    ) -> DriftResult:
        scores = np.asarray(scores, dtype=np.float64)
        above = np.flatnonzero(scores > threshold)
        indices = above[np.argsort(-scores[above], kind="stable")]
        return cls(
            is_drift=bool(p_value < alpha),
            p_value=float(p_value),
            score=float(score),
            scores=scores,
            threshold=float(threshold),
            indices=indices.astype(np.int64),
            alpha=float(alpha),
            tests={k: float(v) for k, v in (tests or {}).items()},
        )

    def summary(self) -> dict[str, float | bool | int]:
        """The batch-level numbers as plain data (what gets logged as MLflow metrics)."""
        return {
            "is_drift": self.is_drift,
            "p_value": self.p_value,
            "score": self.score,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "n": int(len(self.scores)),
            "n_anomalous": int(len(self.indices)),
            **{f"p_{k}": v for k, v in self.tests.items()},
        }
