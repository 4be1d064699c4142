"""Drift in tables: every column tested by its kind, family-wise p-values, the drifted columns named.

Numeric columns get a location-and-scale rank test, categorical ones (strings, booleans, pandas
categories, or columns named in `categorical=`) a chi-squared test on category frequencies in
which categories the reference never had count as categories of their own. All columns are tested
on the same random re-splits of reference and batch, and the p-values are adjusted by min-p over
columns (see `stats.column_tests`), so the batch's false positive rate stays at alpha however
many and however correlated the columns are. `DriftResult.features` maps each tested column to its
adjusted p-value; `drifted` lists the columns below alpha, most significant first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ValidationError
from .base import Detector, NotFittedError
from .quality import DetectorInputError, examine_frame, infer_schema, is_frame, reference_codes
from .result import DriftResult
from .stats import column_tests


def as_frame(X: Any, columns: Sequence[str] | None = None):
    """A DataFrame from a DataFrame, a dict of columns or a 2-D array (columns named "0", "1", ... or `columns`)."""
    import pandas as pd

    if is_frame(X):
        return X
    if isinstance(X, dict):
        return pd.DataFrame(X)
    arr = np.asarray(X)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DetectorInputError(f"TabularDetector takes a table (n, columns), got an array of shape {arr.shape}")
    names = list(columns) if columns is not None and len(columns) == arr.shape[1] else map(str, range(arr.shape[1]))
    return pd.DataFrame(arr, columns=list(names))


class TabularDetector(Detector):
    """Drift detector for pandas DataFrames with numeric and categorical columns.

    categorical:   columns to treat as categorical although their values are numbers (e.g. codes).
    ranges:        {column: (low, high)}: values outside are reported as out of range (default: far
                   outside the reference's own range).
    permutations:  random re-splits behind every p-value (the smallest possible p is 1/(permutations+1)).
    max_reference: at most this many reference rows are kept (a seeded random subset).
    """

    kind = "tabular"
    complete_rows = False

    def __init__(
        self,
        alpha: float = 0.05,
        seed: int = 0,
        categorical: Sequence[str] = (),
        ranges: dict[str, tuple[float, float]] | None = None,
        permutations: int = 1000,
        max_reference: int = 2000,
    ) -> None:
        super().__init__(alpha, seed)
        if isinstance(categorical, str):
            categorical = [categorical]
        if int(permutations) < 99:
            raise ValidationError(f"TabularDetector: permutations must be at least 99, got {permutations!r}")
        for col, bounds in (ranges or {}).items():
            if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2 and bounds[0] <= bounds[1]):
                raise ValidationError(f"TabularDetector: the range of {col!r} must be (low, high), got {bounds!r}")
        self.categorical = [str(c) for c in categorical]
        self.ranges = {str(k): (float(v[0]), float(v[1])) for k, v in (ranges or {}).items()}
        self.permutations, self.max_reference = int(permutations), int(max_reference)

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "categorical": self.categorical,
            "ranges": {k: list(v) for k, v in self.ranges.items()},
            "permutations": self.permutations,
            "max_reference": self.max_reference,
        }

    @property
    def columns(self) -> list[str]:
        """The reference's columns in its order (an array batch is read in this order)."""
        return self.schema_.columns

    @property
    def feature_names(self) -> list[str]:
        return [*self.schema_.numeric, *self.schema_.categorical]  # the order of the column tests

    # -- fit and score ---------------------------------------------------------------------------
    def fit(self, X_reference: Any) -> TabularDetector:
        """Learn the reference table: its columns, their kinds, ranges, categories and values."""
        frame = as_frame(X_reference).rename(columns=str)
        if len(frame) < self.min_reference or frame.shape[1] == 0:
            raise DetectorInputError(
                f"TabularDetector: the reference needs at least {self.min_reference} rows and one column, "
                f"got {frame.shape[0]} x {frame.shape[1]}"
            )
        schema = infer_schema(frame, self.categorical, self.ranges, owner="TabularDetector")
        if len(frame) > self.max_reference:
            keep = np.random.default_rng(self.seed).choice(len(frame), self.max_reference, replace=False)
            frame = frame.iloc[np.sort(keep)]
        numeric = frame[schema.numeric].to_numpy(np.float64, na_value=np.nan, copy=True)
        numeric[~np.isfinite(numeric)] = np.nan
        codes = reference_codes(frame, schema)
        empty = [c for j, c in enumerate(schema.numeric) if np.isnan(numeric[:, j]).all()]
        empty += [c for j, c in enumerate(schema.categorical) if (codes[:, j] < 0).all()]
        if empty:
            raise DetectorInputError(f"TabularDetector: column {empty[0]!r} has no values in the reference")
        self.schema_, self.ref_numeric_, self.ref_codes_ = schema, numeric, codes
        self.low_, self.high_ = schema.low, schema.high
        self.input_shape_ = (len(self.columns),)
        self.threshold_ = float(np.quantile(self._row_scores(numeric, codes), 1 - self.alpha))
        return self

    def score(self, X_batch: Any) -> DriftResult:
        """Test every column of the batch DataFrame; findings say what was wrong with it."""
        if not self.fitted:
            raise NotFittedError("TabularDetector must be fitted before scoring a batch: call fit(X_reference)")
        frame = as_frame(X_batch, self.columns)
        prepared = examine_frame(frame, self.schema_, "TabularDetector")
        numeric, codes = prepared.values, prepared.codes
        tested = [~np.isnan(numeric).all(axis=0), (codes >= 0).any(axis=0)]
        if not (tested[0].any() or tested[1].any()):
            raise DetectorInputError("TabularDetector: nothing usable in the batch: every value is missing")
        found = column_tests(
            self.ref_numeric_,
            numeric,
            self.ref_codes_,
            codes,
            permutations=self.permutations,
            seed=self.seed,
        )
        present = np.concatenate(tested)
        names = [c for c, ok in zip(self.feature_names, present) if ok]
        features = dict(zip(names, found.adjusted[present]))
        order = dict(zip(names, found.asymptotic[present]))
        result = DriftResult.build(
            found.p_value,
            float(-np.log10(max(found.p_value, 1e-300))),
            self._row_scores(numeric, codes),
            self.threshold_,
            self.alpha,
            {"columns": found.p_value},
            features,
            order,
        )
        result.findings[:0] = prepared.findings
        return result

    # -- per-row anomaly scores ------------------------------------------------------------------------
    def _row_scores(self, numeric: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """A row's most surprising value: -log of how rare it is in the reference.

        Numeric cell: twice the smaller tail share of reference values beyond it (at least 1 / (m + 1)),
        plus, beyond the reference's range, the distance in reference standard deviations; categorical
        cell: the share of reference rows whose category is at most as frequent (unseen: 1 / (m + 1)).
        """
        surprise = np.zeros((len(numeric), numeric.shape[1] + codes.shape[1]))
        for j in range(numeric.shape[1]):
            ref = np.sort(self.ref_numeric_[:, j][~np.isnan(self.ref_numeric_[:, j])])
            x = np.nan_to_num(numeric[:, j], nan=np.median(ref))  # a missing value is not a surprise
            below = np.searchsorted(ref, x, side="right")
            above = len(ref) - np.searchsorted(ref, x, side="left")
            tail = np.minimum(1.0, 2 * (np.minimum(below, above) + 1) / (len(ref) + 1))
            beyond = np.maximum(ref[0] - x, 0) + np.maximum(x - ref[-1], 0)
            surprise[:, j] = -np.log(tail) + beyond / max(float(ref.std()), 1e-12)
        for j in range(codes.shape[1]):
            ref = self.ref_codes_[:, j][self.ref_codes_[:, j] >= 0]
            freq = np.bincount(ref, minlength=len(self.schema_.categories[self.schema_.categorical[j]]))
            rarer = np.array([freq[freq <= f].sum() for f in freq], dtype=np.float64)
            c = codes[:, j]
            share = np.where(c < 0, 1.0, 1.0 / (len(ref) + 1))
            known = (c >= 0) & (c < len(freq))
            share[known] = (rarer[c[known]] + 1) / (len(ref) + 1)
            surprise[:, numeric.shape[1] + j] = -np.log(np.minimum(share, 1.0))
        return surprise.max(axis=1) if surprise.shape[1] else np.zeros(len(numeric))

    # -- persistence ---------------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {"ref_numeric": self.ref_numeric_, "ref_codes": self.ref_codes_, "threshold": np.array(self.threshold_)}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.ref_numeric_, self.ref_codes_ = state["ref_numeric"], state["ref_codes"]
        self.threshold_ = float(state["threshold"])
