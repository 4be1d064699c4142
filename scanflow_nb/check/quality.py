"""Data-quality checks on a batch before it is tested: what is wrong with it, and what is still usable.

Arrays are aligned with the reference by position (a sample of another shape cannot be aligned);
tables (pandas DataFrames) by column name. Unusable cells (NaN, None, inf, values of the wrong type
that cannot be converted, absent columns) become missing values that the tests leave out, and each
problem becomes a `Finding`. Values far outside the reference's range stay in the tests: they are
reported, not removed. Only a batch with nothing usable left raises DetectorInputError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ValidationError
from .result import Finding

RANGE_MARGIN = 0.5  # out of range: beyond the reference's [min, max] by more than half its width
MANY = 20  # more features than this with one kind of finding are reported as one finding


class DetectorInputError(ValidationError):
    """Data given to a detector is unusable (empty, wrong shape, nothing numeric or present)."""


def is_frame(X: Any) -> bool:
    return type(X).__module__.startswith("pandas") and hasattr(X, "columns")


def feature_names(shape: tuple[int, ...]) -> list[str]:
    """Names of the features of samples of `shape`: x[3] for vectors, x[2,5] for images."""
    return ["x[" + ",".join(map(str, idx)) + "]" for idx in np.ndindex(*shape)]


def _per_feature(kind: str, counts: np.ndarray, names: list[str], message: str) -> list[Finding]:
    hit = np.flatnonzero(counts)
    if len(hit) > MANY:
        shown = ", ".join(names[i] for i in hit[:5])
        return [Finding(kind, None, int(counts.sum()), f"{message}; in {len(hit)} features: {shown}, ...")]
    return [Finding(kind, names[i], int(counts[i]), message) for i in hit]


def numbers(values: Any, what: str, owner: str) -> np.ndarray:
    """`values` as float64, or DetectorInputError naming `owner` when they are not numeric at all."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DetectorInputError(f"{owner}: the {what} must be numeric, got {type(values).__name__}") from None


def _coerced(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An array of mixed objects as float64 (unreadable cells NaN) and the mask of unreadable cells."""
    import pandas as pd

    flat = pd.to_numeric(pd.Series(arr.reshape(-1), dtype=object), errors="coerce").to_numpy(np.float64, copy=True)
    was_missing = pd.isna(pd.Series(arr.reshape(-1), dtype=object)).to_numpy()
    return flat.reshape(arr.shape), (np.isnan(flat) & ~was_missing).reshape(arr.shape)


@dataclass
class Prepared:
    """A batch ready for the tests: values with unusable cells missing, and what was found."""

    values: np.ndarray  # (n, d) float64, NaN where unusable
    findings: list[Finding] = field(default_factory=list)
    codes: np.ndarray | None = None  # (n, k) category codes of categorical columns, -1 missing
    unseen: dict[str, list[str]] = field(default_factory=dict)  # column -> categories the reference lacked


def examine_array(X: Any, shape: tuple[int, ...], names: list[str], low: np.ndarray, high: np.ndarray, owner: str):
    """Flatten a batch of samples of `shape` to (n, d) with findings; cells that are not finite become NaN."""
    arr = np.asarray(X)
    if arr.ndim < 1 or len(arr) == 0:
        raise DetectorInputError(f"{owner}: the batch is empty")
    if arr.ndim == 1:
        arr = arr[:, None]
    if tuple(arr.shape[1:]) != tuple(shape):
        raise DetectorInputError(
            f"{owner}: the batch has samples of shape {tuple(arr.shape[1:])}, the reference had {tuple(shape)}"
        )
    flat = arr.reshape(len(arr), -1)
    findings: list[Finding] = []
    if flat.dtype.kind in "biuf":
        values, unreadable = flat.astype(np.float64), None
    elif flat.dtype.kind == "O":
        values, unreadable = _coerced(flat)
        findings += _per_feature("wrong_dtype", unreadable.sum(0), names, "values that are not numbers")
    else:
        raise DetectorInputError(f"{owner}: the batch must be numeric, got values of type {flat.dtype}")
    findings += _missing_and_range(values, names, low, high, unreadable)
    values[~np.isfinite(values)] = np.nan
    return Prepared(values, findings)


def _missing_and_range(values: np.ndarray, names: list[str], low, high, known=None, margin=None) -> list[Finding]:
    """Findings on NaN, inf and out-of-range cells; `known` cells (already reported) are not counted again.

    Out of range: beyond [low, high] by more than `margin` (default: RANGE_MARGIN times the width)."""
    fresh = np.isnan(values) if known is None else np.isnan(values) & ~known
    findings = _per_feature("nan", fresh.sum(0), names, "missing values")
    findings += _per_feature("inf", np.isinf(values).sum(0), names, "infinite values")
    if low is not None:
        margin = RANGE_MARGIN * (np.asarray(high) - np.asarray(low)) if margin is None else margin
        with np.errstate(invalid="ignore"):
            outside = np.isfinite(values) & ((values < low - margin) | (values > high + margin))
        findings += _per_feature("out_of_range", outside.sum(0), names, "far outside the reference's range")
    return findings


# -- tables --------------------------------------------------------------------------------------------
@dataclass
class Schema:
    """The columns of a reference table: numeric ones (with their range) and categorical ones (their categories)."""

    numeric: list[str]
    categorical: list[str]
    dtypes: dict[str, str]
    low: np.ndarray
    high: np.ndarray
    categories: dict[str, list[str]]
    declared: list[str] = field(default_factory=list)  # numeric columns whose range was declared: no margin
    order: list[str] = field(default_factory=list)  # every column, in the reference's order

    @property
    def columns(self) -> list[str]:
        return self.order or [*self.numeric, *self.categorical]

    @property
    def margin(self) -> np.ndarray:
        """How far beyond its range a value of each numeric column may lie before it is out of range."""
        margin = RANGE_MARGIN * (self.high - self.low)
        margin[[self.numeric.index(c) for c in self.declared]] = 0.0
        return margin

    def as_dict(self) -> dict:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "dtypes": self.dtypes,
            "low": [float(v) for v in self.low],
            "high": [float(v) for v in self.high],
            "categories": self.categories,
            "declared": self.declared,
            "order": self.order,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Schema:
        return cls(
            d["numeric"],
            d["categorical"],
            d["dtypes"],
            np.asarray(d["low"], dtype=np.float64),
            np.asarray(d["high"], dtype=np.float64),
            d["categories"],
            d.get("declared", []),
            d.get("order", []),
        )


def _is_numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)


def _labels(series) -> np.ndarray:
    """Category labels as strings (missing stays None), so 1, 1.0 and "1" of one column compare as written."""
    import pandas as pd

    values = series.astype(object).to_numpy()
    missing = pd.isna(series).to_numpy()
    out = np.array([None if miss else str(v) for v, miss in zip(values, missing)], dtype=object)
    return out


def infer_schema(frame, categorical=(), ranges: dict | None = None, owner: str = "detector") -> Schema:
    """The schema of a reference DataFrame; `categorical` forces columns to be categorical."""
    unknown = [c for c in [*categorical, *(ranges or {})] if c not in frame.columns]
    if unknown:
        raise ValidationError(f"{owner}: no column {unknown[0]!r} in the reference")
    numeric = [str(c) for c in frame.columns if c not in categorical and _is_numeric(frame[c])]
    cats = [str(c) for c in frame.columns if str(c) not in numeric]
    frame = frame.rename(columns=str)
    dtypes = {c: str(frame[c].dtype) for c in frame.columns}
    values = frame[numeric].to_numpy(np.float64, na_value=np.nan, copy=True) if numeric else np.zeros((len(frame), 0))
    values[~np.isfinite(values)] = np.nan
    with np.errstate(all="ignore"):
        low, high = np.nanmin(values, axis=0, initial=np.inf), np.nanmax(values, axis=0, initial=-np.inf)
    declared = [str(c) for c in (ranges or {}) if str(c) in numeric]
    for col in declared:
        low[numeric.index(col)], high[numeric.index(col)] = ranges[col]
    categories = {}
    for c in cats:
        labels = _labels(frame[c])
        counts: dict[str, int] = {}
        for v in labels[labels != None]:  # noqa: E711 (element-wise comparison)
            counts[v] = counts.get(v, 0) + 1
        categories[c] = sorted(counts, key=lambda v: (-counts[v], v))
    return Schema(numeric, cats, dtypes, low, high, categories, declared, [str(c) for c in frame.columns])


def examine_frame(frame, schema: Schema, owner: str, declared_ranges: bool = False) -> Prepared:
    """Align a batch DataFrame with `schema` by column name; numeric values (NaN missing) and category codes."""
    import pandas as pd

    if len(frame) == 0:
        raise DetectorInputError(f"{owner}: the batch is empty")
    frame = frame.rename(columns=str)
    n, findings = len(frame), []
    expected = [*schema.numeric, *schema.categorical]
    for col in expected:
        if col not in frame.columns:
            findings.append(Finding("missing_column", col, n, "absent from the batch; not tested"))
    for col in frame.columns:
        if col not in expected:
            findings.append(Finding("extra_column", col, n, "not in the reference; ignored"))
    present = [c for c in expected if c in frame.columns]
    if not present:
        raise DetectorInputError(f"{owner}: the batch has none of the reference's columns ({', '.join(expected[:5])})")

    values = np.full((n, len(schema.numeric)), np.nan)
    reported = np.zeros(values.shape, dtype=bool)  # absent columns and unreadable values: reported already
    for j, col in enumerate(schema.numeric):
        if col not in frame.columns:
            reported[:, j] = True
            continue
        series = frame[col]
        if _is_numeric(series):
            values[:, j] = series.to_numpy(np.float64, na_value=np.nan)
            continue
        converted = pd.to_numeric(series.astype(object), errors="coerce").to_numpy(np.float64, copy=True)
        unreadable = int((np.isnan(converted) & ~pd.isna(series).to_numpy()).sum())
        findings.append(
            Finding(
                "wrong_dtype",
                col,
                n,
                f"dtype {series.dtype}, the reference had {schema.dtypes[col]}; {unreadable} values are not numbers",
            )
        )
        values[:, j] = converted
        reported[:, j] = np.isnan(converted) & ~pd.isna(series).to_numpy()
    findings += _missing_and_range(values, schema.numeric, schema.low, schema.high, reported, schema.margin)
    values[~np.isfinite(values)] = np.nan

    codes = np.full((n, len(schema.categorical)), -1, dtype=np.int64)
    unseen: dict[str, list[str]] = {}
    for j, col in enumerate(schema.categorical):
        if col not in frame.columns:
            continue
        series = frame[col]
        if _is_numeric(series) != _is_numeric_dtype_name(schema.dtypes[col]):
            findings.append(
                Finding("wrong_dtype", col, n, f"dtype {series.dtype}, the reference had {schema.dtypes[col]}")
            )
        labels = _labels(series)
        missing = labels == None  # noqa: E711
        if missing.any():
            findings.append(Finding("nan", col, int(missing.sum()), "missing values"))
        index = {v: i for i, v in enumerate(schema.categories[col])}
        new = sorted({v for v in labels[~missing] if v not in index})
        for v in new:
            index[v] = len(index)
        codes[:, j] = [-1 if v is None else index[v] for v in labels]
        if new:
            count = int(sum(1 for v in labels if v is not None and v in set(new)))
            shown = ", ".join(map(repr, new[:5])) + (", ..." if len(new) > 5 else "")
            findings.append(Finding("unseen_category", col, count, f"categories the reference never had: {shown}"))
            unseen[col] = new
    return Prepared(values, findings, codes, unseen)


def _is_numeric_dtype_name(name: str) -> bool:
    import pandas as pd

    try:
        dtype = pd.api.types.pandas_dtype(name)
    except TypeError:
        return False
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def reference_codes(frame, schema: Schema) -> np.ndarray:
    """Category codes of the reference's categorical columns (-1 missing)."""
    frame = frame.rename(columns=str)
    codes = np.full((len(frame), len(schema.categorical)), -1, dtype=np.int64)
    for j, col in enumerate(schema.categorical):
        index = {v: i for i, v in enumerate(schema.categories[col])}
        codes[:, j] = [-1 if v is None else index[v] for v in _labels(frame[col])]
    return codes
