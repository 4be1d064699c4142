"""The detector contract, the registry of detector kinds, and the way batches reach a detector.

Every detector: `fit(X_reference) -> self`, `score(X_batch) -> DriftResult`, `save(path)`,
`Detector.load(path)`. Inputs are numpy arrays of shape (n, ...) - tables, images, anything - or
pandas DataFrames (aligned by column name). A batch with problems is still scored: missing,
infinite or unreadable values, absent or extra columns and out-of-range values become `findings`
on the result (see `quality`), and only a batch with nothing usable raises DetectorInputError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import NotFoundError, ScanflowError, ValidationError
from .quality import DetectorInputError, Schema, examine_array, examine_frame, feature_names, infer_schema, is_frame
from .result import DriftResult, Finding

FORMAT = 2

# kind -> "module:Class". Adding a detector: its module, plus one line here.
KINDS = {
    "autoencoder": "scanflow_nb.check.autoencoder:AutoencoderDetector",
    "ks": "scanflow_nb.check.ks:KSDetector",
    "mmd": "scanflow_nb.check.mmd:MMDDetector",
    "model_output": "scanflow_nb.check.model_output:ModelOutputDetector",
    "tabular": "scanflow_nb.check.tabular:TabularDetector",
}

__all__ = ["KINDS", "Detector", "DetectorInputError", "NotFittedError", "detector_class", "make_detector"]


class NotFittedError(ScanflowError):
    """A detector was asked to score or save before `fit`."""


class Detector:
    """Base class: input preparation, persistence and the kind registry. Subclasses implement
    `_fit(X)`, `_score(X) -> DriftResult`, `params()` and the fitted state (`_state`/`_restore`).

    `_fit` gets the reference as float64 (n, *input_shape). `_score` gets the usable part of the
    batch: only complete samples when `complete_rows` (the rest are reported and get no score),
    else every sample with NaN where a value is unusable (detectors that test features one by one).
    """

    kind: ClassVar[str] = ""
    min_reference: ClassVar[int] = 2
    complete_rows: ClassVar[bool] = True
    takes_probabilities: ClassVar[bool] = False  # score(X, probabilities=P) with a model's logged outputs

    def __init__(self, alpha: float = 0.05, seed: int = 0) -> None:
        if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
            raise ValidationError(f"alpha must be between 0 and 1, got {alpha!r}")
        self.alpha = float(alpha)
        self.seed = int(seed)
        self.input_shape_: tuple[int, ...] | None = None
        self.schema_: Schema | None = None  # set when fitted on a DataFrame

    # -- the contract ------------------------------------------------------------------------
    def fit(self, X_reference: Any) -> Detector:
        """Learn what normal data looks like from `X_reference` (n, ...) or a numeric DataFrame. Returns self."""
        X = self._reference(X_reference)
        self.low_, self.high_ = value_range(X)
        self.input_shape_ = tuple(X.shape[1:])
        self._fit(X)
        return self

    def score(self, X_batch: Any) -> DriftResult:
        """Test whether `X_batch` (n, ...) comes from the reference distribution."""
        if not self.fitted:
            raise NotFittedError(f"{type(self).__name__} must be fitted before scoring a batch: call fit(X_reference)")
        name = type(self).__name__
        if is_frame(X_batch) and self.schema_ is not None:
            prepared = examine_frame(X_batch, self.schema_, name)
        else:
            prepared = examine_array(
                X_batch.to_numpy() if is_frame(X_batch) else X_batch,
                self.input_shape_,
                self.feature_names,
                self.low_,
                self.high_,
                name,
            )
        values = prepared.values
        missing = np.isnan(values)
        if missing.all():
            raise DetectorInputError(f"{name}: nothing usable in the batch: every value is missing or unreadable")
        if not self.complete_rows:
            result = self._score(values.reshape(len(values), *self.input_shape_))
        else:
            usable = ~missing.any(axis=1)
            if not usable.any():
                raise DetectorInputError(
                    f"{name}: nothing usable in the batch: every sample has a missing, infinite or unreadable value"
                )
            result = self._score(values[usable].reshape(int(usable.sum()), *self.input_shape_))
            if not usable.all():
                result = _expanded(result, usable)
                result.findings.append(
                    Finding("dropped_rows", None, int((~usable).sum()), "samples with unusable values were not scored")
                )
        result.findings[:0] = prepared.findings
        return result

    @property
    def fitted(self) -> bool:
        return self.input_shape_ is not None

    @property
    def feature_names(self) -> list[str]:
        """One name per feature: the DataFrame's columns, else x[i] (vectors) or x[i,j] (images)."""
        if self.schema_ is not None:
            return list(self.schema_.numeric)
        return feature_names(self.input_shape_)

    def params(self) -> dict[str, Any]:
        """The constructor arguments that rebuild an unfitted twin of this detector."""
        return {"alpha": self.alpha, "seed": self.seed}

    # -- input checks -----------------------------------------------------------------------
    def _reference(self, X: Any) -> np.ndarray:
        """The reference as float64 (n, ...); a reference must be complete and finite."""
        from .quality import numbers

        name = type(self).__name__
        self.schema_ = None
        if is_frame(X):
            schema = infer_schema(X, owner=name)
            if schema.categorical:
                raise DetectorInputError(
                    f"{name} takes numeric columns only; {schema.categorical[0]!r} is categorical: "
                    "use TabularDetector for tables with categories"
                )
            self.schema_ = schema
            X = X.rename(columns=str)[schema.numeric].to_numpy(np.float64, na_value=np.nan)
        arr = numbers(X, "reference", name)
        if arr.ndim < 1 or len(arr) == 0:
            raise DetectorInputError(f"{name}: the reference is empty")
        if arr.ndim == 1:
            arr = arr[:, None]
        if not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
            raise DetectorInputError(
                f"{name}: the reference contains NaN or infinite values "
                f"(samples {', '.join(map(str, bad[:5]))}{'...' if len(bad) > 5 else ''}); drop or fill them first"
            )
        if len(arr) < self.min_reference:
            raise DetectorInputError(
                f"{name}: the reference needs at least {self.min_reference} samples, got {len(arr)}"
            )
        return arr

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to the folder `path` (created); returns it."""
        if not self.fitted:
            raise NotFittedError(f"{type(self).__name__} must be fitted before it is saved")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {**self._state(), "_low": np.asarray(self.low_), "_high": np.asarray(self.high_)}
        np.savez(folder / "state.npz", **arrays)
        self._save_extra(folder)
        meta = {
            "format": FORMAT,
            "kind": self.kind,
            "params": self.params(),
            "input_shape": list(self.input_shape_),
            "schema": self.schema_.as_dict() if self.schema_ is not None else None,
        }
        (folder / "detector.json").write_text(json.dumps(meta, indent=1))
        return folder

    @staticmethod
    def load(path: str | Path) -> Detector:
        """A detector saved by `save` (any kind)."""
        folder = Path(path)
        meta_file = folder / "detector.json"
        if not meta_file.is_file():
            raise NotFoundError(f"no saved detector in {str(folder)!r} (detector.json is missing)")
        try:
            meta = json.loads(meta_file.read_text())
            cls = detector_class(meta["kind"])
        except (ValueError, KeyError, ValidationError):
            raise ScanflowError(f"{str(meta_file)!r} is not a scanflow detector description") from None
        if meta.get("format") != FORMAT:
            raise ScanflowError(
                f"{str(meta_file)!r} was saved in detector format {meta.get('format')}, this scanflow_nb reads "
                f"format {FORMAT}: fit the detector again"
            )
        det = cls(**meta["params"])
        with np.load(folder / "state.npz") as state:
            arrays = {k: state[k] for k in state.files}
        det.input_shape_ = tuple(meta["input_shape"])
        det.low_, det.high_ = arrays.pop("_low"), arrays.pop("_high")
        det.schema_ = Schema.from_dict(meta["schema"]) if meta.get("schema") else None
        det._restore(arrays)
        det._load_extra(folder)
        return det

    def _save_extra(self, folder: Path) -> None:
        """Subclasses with more than arrays to save (e.g. a Keras model) write it here."""

    def _load_extra(self, folder: Path) -> None:
        """Counterpart of `_save_extra`."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args}){'' if self.fitted else ' [not fitted]'}"

    # -- for subclasses ------------------------------------------------------------------------
    def _fit(self, X: np.ndarray) -> None:
        raise NotImplementedError

    def _score(self, X: np.ndarray) -> DriftResult:
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


def _expanded(result: DriftResult, usable: np.ndarray) -> DriftResult:
    """`result` of the usable samples, with scores and indices laid out over the whole batch (NaN: not scored)."""
    positions = np.flatnonzero(usable)
    scores = np.full(len(usable), np.nan)
    scores[positions] = result.scores
    result.scores, result.indices = scores, positions[result.indices]
    return result


def value_range(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the reference's smallest and largest value; for images (samples of 2 or more
    dimensions) the range of all their values, since every pixel shares one scale."""
    flat = X.reshape(len(X), -1)
    if X.ndim > 2:
        return np.full(flat.shape[1], flat.min()), np.full(flat.shape[1], flat.max())
    return flat.min(axis=0), flat.max(axis=0)


def detector_class(kind: str) -> type[Detector]:
    """The detector class registered as `kind`; imported on first use (TensorFlow only for the autoencoder)."""
    import importlib

    if kind not in KINDS:
        raise ValidationError(f"unknown detector {kind!r}; choose one of: {', '.join(sorted(KINDS))}")
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def make_detector(kind: str, alpha: float = 0.05, **options: Any) -> Detector:
    """An unfitted detector of `kind` (one of `KINDS`), as a Checker spec names it."""
    return detector_class(kind)(alpha=alpha, **options)


def as_rows(X: np.ndarray) -> np.ndarray:
    """Samples of any shape as rows of features."""
    return X.reshape(len(X), -1)
