"""What a drift detector returns for one batch: the verdict, per-feature evidence and data-quality findings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# What a finding can say about a batch (`Finding.kind`).
FINDING_KINDS = {
    "nan": "missing values (NaN or None); left out of the tests",
    "inf": "infinite values; left out of the tests",
    "missing_column": "a column of the reference is absent; its tests are skipped",
    "extra_column": "a column the reference did not have; ignored",
    "wrong_dtype": "values of another type than in the reference; converted where possible",
    "out_of_range": "values far outside the reference's range (or a declared range); still tested",
    "unseen_category": "categories the reference never had; tested as categories of their own",
    "dropped_rows": "samples left out of a detector that needs complete samples",
}


@dataclass(frozen=True)
class Finding:
    """One data-quality observation on a batch: `count` values of `column` (None: several columns) are `kind`."""

    kind: str
    column: str | None
    count: int
    message: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = f" in {self.column!r}" if self.column is not None else ""
        return f"{self.kind}{where}: {self.count}" + (f" ({self.message})" if self.message else "")


@dataclass
class DriftResult:
    """The verdict on one batch.

    is_drift:  p_value < alpha.
    p_value:   of the batch-level test (combined so that the false positive rate stays at most alpha).
    score:     the batch-level statistic of the detector (larger means more drift).
    scores:    one anomaly score per sample of the batch (larger means more anomalous).
    threshold: per-sample scores above it are anomalous at level alpha (reference quantile).
    indices:   positions in the batch of the samples above the threshold, most anomalous first.
    tests:     the p-value of every piece of evidence that went into `p_value`.
    features:  feature (column) -> family-wise adjusted p-value, where the detector tests features one by
               one; comparing one with alpha keeps the false positive rate over all features at alpha.
    drifted:   the features whose adjusted p-value is below alpha, most significant first.
    findings:  data-quality findings on the batch (`Finding`: kind, column, count).
    estimates: named quantities the detector estimated on the batch (e.g. class proportions).
    """

    is_drift: bool
    p_value: float
    score: float
    scores: np.ndarray
    threshold: float
    indices: np.ndarray
    alpha: float
    tests: dict[str, float] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    drifted: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    estimates: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        p_value: float,
        score: float,
        scores: np.ndarray,
        threshold: float,
        alpha: float,
        tests: dict[str, float] | None = None,
        features: dict[str, float] | None = None,
        order: dict[str, float] | None = None,
        estimates: dict[str, float] | None = None,
    ) -> DriftResult:
        """The result; `drifted` comes from `features` (below alpha), ties broken by `order` (smaller first)."""
        scores = np.asarray(scores, dtype=np.float64)
        above = np.flatnonzero(scores > threshold)
        indices = above[np.argsort(-scores[above], kind="stable")]
        features = {str(k): float(v) for k, v in (features or {}).items()}
        order = order or {}
        drifted = sorted((k for k, v in features.items() if v < alpha), key=lambda k: (features[k], order.get(k, 0.0)))
        return cls(
            is_drift=bool(p_value < alpha),
            p_value=float(p_value),
            score=float(score),
            scores=scores,
            threshold=float(threshold),
            indices=indices.astype(np.int64),
            alpha=float(alpha),
            tests={k: float(v) for k, v in (tests or {}).items()},
            features=features,
            drifted=drifted,
            estimates={k: float(v) for k, v in (estimates or {}).items()},
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
            "n_drifted": len(self.drifted),
            "n_findings": len(self.findings),
            **{f"p_{k}": v for k, v in self.tests.items()},
        }
