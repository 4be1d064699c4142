"""Maximum mean discrepancy drift detector (permutation test), on raw inputs or autoencoder codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ValidationError
from .base import Detector, as_rows
from .result import DriftResult
from .stats import median_bandwidth, mmd_permutation_test


class MMDDetector(Detector):
    """Gaussian-kernel maximum mean discrepancy with a permutation test.

    `on="raw"` compares the (flattened) inputs; `on="code"` first trains an autoencoder on the
    reference (`autoencoder` holds its keyword arguments) and compares the codes. The kernel width
    is the median distance in the reference; at most `max_reference` reference samples are used.
    Batch score: MMD². Per-sample score: 1 - the sample's mean kernel value against the reference
    (low kernel density); threshold: its (1 - alpha) quantile over reference samples (leave-one-out).
    """

    kind = "mmd"

    def __init__(
        self,
        alpha: float = 0.05,
        seed: int = 0,
        on: str = "raw",
        permutations: int = 500,
        max_reference: int = 300,
        autoencoder: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(alpha, seed)
        if on not in ("raw", "code"):
            raise ValidationError(f"MMDDetector: on must be 'raw' or 'code', got {on!r}")
        if int(permutations) < 20:
            raise ValidationError(f"MMDDetector: permutations must be at least 20, got {permutations!r}")
        self.on, self.permutations, self.max_reference = on, int(permutations), int(max_reference)
        self.autoencoder = dict(autoencoder or {})
        self.encoder_ = None

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "on": self.on,
            "permutations": self.permutations,
            "max_reference": self.max_reference,
            "autoencoder": self.autoencoder,
        }

    def _features(self, X: np.ndarray) -> np.ndarray:
        return self.encoder_.encode(X) if self.encoder_ is not None else as_rows(X)

    def _fit(self, X: np.ndarray) -> None:
        rng = np.random.default_rng(self.seed)
        if self.on == "code":
            from .autoencoder import AutoencoderDetector

            self.encoder_ = AutoencoderDetector(alpha=self.alpha, seed=self.seed, **self.autoencoder).fit(X)
            X = X[self.encoder_.holdout_]  # codes of samples the autoencoder did not train on
        feats = self._features(X)
        keep = rng.choice(len(feats), min(len(feats), self.max_reference), replace=False)
        self.reference_ = feats[np.sort(keep)]
        self.bandwidth_ = median_bandwidth(feats, rng)
        self.threshold_ = float(np.quantile(self._reference_scores(), 1 - self.alpha))

    def _reference_scores(self) -> np.ndarray:
        """Per-sample scores of the reference samples, each left out of its own density."""
        from scipy.spatial.distance import cdist

        ref = self.reference_
        kernel = np.exp(-cdist(ref, ref, "sqeuclidean") / (2.0 * self.bandwidth_**2))
        return 1.0 - (kernel.sum(axis=1) - 1.0) / max(len(ref) - 1, 1)

    def _score(self, X: np.ndarray) -> DriftResult:
        feats = self._features(X)
        mmd2, p, similarity = mmd_permutation_test(
            self.reference_, feats, self.bandwidth_, self.permutations, np.random.default_rng(self.seed)
        )
        return DriftResult.build(p, mmd2, 1.0 - similarity, self.threshold_, self.alpha, {f"mmd_{self.on}": p})

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "reference": self.reference_,
            "bandwidth": np.array(self.bandwidth_),
            "threshold": np.array(self.threshold_),
        }

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.reference_ = state["reference"]
        self.bandwidth_, self.threshold_ = float(state["bandwidth"]), float(state["threshold"])

    def _save_extra(self, folder: Path) -> None:
        if self.encoder_ is not None:
            self.encoder_.save(folder / "encoder")

    def _load_extra(self, folder: Path) -> None:
        if self.on == "code":
            self.encoder_ = Detector.load(folder / "encoder")
