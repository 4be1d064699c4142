"""Per-feature Kolmogorov-Smirnov drift detector: the simple baseline for tables and small images."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Detector, as_rows
from .result import DriftResult
from .stats import holm, ks_per_feature


class KSDetector(Detector):
    """Per-feature two-sample Kolmogorov-Smirnov tests, Holm-adjusted over the features.

    Batch p-value: the smallest adjusted p-value (the Bonferroni minimum); `features` holds every
    feature's adjusted p-value. Missing cells are left out of their feature's test. Batch score: the
    largest KS statistic. Per-sample score: mean squared z-score of the sample's (present) features
    against the reference (features with no spread get a small floor). At most `max_reference`
    reference samples (a seeded random subset) are kept.
    """

    kind = "ks"
    complete_rows = False

    def __init__(self, alpha: float = 0.05, seed: int = 0, max_reference: int = 5000) -> None:
        super().__init__(alpha, seed)
        self.max_reference = int(max_reference)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "max_reference": self.max_reference}

    def _fit(self, X: np.ndarray) -> None:
        flat = as_rows(X)
        if len(flat) > self.max_reference:  # a random subset keeps memory and scoring time bounded
            keep = np.random.default_rng(self.seed).choice(len(flat), self.max_reference, replace=False)
            flat = flat[np.sort(keep)]
        self.reference_ = flat
        self.mean_ = flat.mean(axis=0)
        std = flat.std(axis=0)
        self.scale_ = std + 0.1 * max(float(std.mean()), 1e-12)
        self.threshold_ = float(np.quantile(self._sample_scores(flat), 1 - self.alpha))

    def _sample_scores(self, flat: np.ndarray) -> np.ndarray:
        z2 = ((flat - self.mean_) / self.scale_) ** 2
        present = ~np.isnan(z2)
        return np.where(present, z2, 0.0).sum(axis=1) / np.maximum(present.sum(axis=1), 1)

    def _score(self, X: np.ndarray) -> DriftResult:
        flat = as_rows(X)
        stat, p = ks_per_feature(self.reference_, flat)
        adjusted = holm(p)
        return DriftResult.build(
            float(adjusted.min()),
            stat.max(),
            self._sample_scores(flat),
            self.threshold_,
            self.alpha,
            {"ks": float(adjusted.min())},
            features=dict(zip(self.feature_names, adjusted)),
            order=dict(zip(self.feature_names, p)),
        )

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "reference": self.reference_,
            "mean": self.mean_,
            "scale": self.scale_,
            "threshold": np.array(self.threshold_),
        }

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.reference_, self.mean_, self.scale_ = state["reference"], state["mean"], state["scale"]
        self.threshold_ = float(state["threshold"])
