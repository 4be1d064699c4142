"""The detector contract, the registry of detector kinds, and input checks.

Every detector: `fit(X_reference) -> self`, `score(X_batch) -> DriftResult`, `save(path)`,
`Detector.load(path)`. Inputs are numpy arrays of shape (n, ...) - tables, images, anything -
flattened to (n, features) where a detector needs it. Bad input raises DetectorInputError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import NotFoundError, ScanflowError, ValidationError
from .result import DriftResult

FORMAT = 1

# kind -> "module:Class". Adding a detector: its module, plus one line here.
KINDS = {
    "autoencoder": "scanflow_nb.check.autoencoder:AutoencoderDetector",
    "ks": "scanflow_nb.check.ks:KSDetector",
    "mmd": "scanflow_nb.check.mmd:MMDDetector",
}


class DetectorInputError(ValidationError):
    """Data given to a detector is unusable (empty, wrong shape, NaN/inf, not numeric)."""


class NotFittedError(ScanflowError):
    """A detector was asked to score or save before `fit`."""


class Detector:
    """Base class: input checks, persistence and the kind registry. Subclasses implement
    `_fit(X)`, `_score(X) -> DriftResult`, `params()` and the fitted state (`_state`/`_restore`)."""

    kind: ClassVar[str] = ""
    min_reference: ClassVar[int] = 2

    def __init__(self, alpha: float = 0.05, seed: int = 0) -> None:
        if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
            raise ValidationError(f"alpha must be between 0 and 1, got {alpha!r}")
        self.alpha = float(alpha)
        self.seed = int(seed)
        self.input_shape_: tuple[int, ...] | None = None

    # -- the contract ------------------------------------------------------------------------
    def fit(self, X_reference: Any) -> Detector:
        """Learn what normal data looks like from `X_reference` (n, ...). Returns self."""
        X = self._check(X_reference, "reference", fitting=True)
        self.input_shape_ = tuple(X.shape[1:])
        self._fit(X)
        return self

    def score(self, X_batch: Any) -> DriftResult:
        """Test whether `X_batch` (n, ...) comes from the reference distribution."""
        if self.input_shape_ is None:
            raise NotFittedError(f"{type(self).__name__} must be fitted before scoring a batch: call fit(X_reference)")
        return self._score(self._check(X_batch, "batch", fitting=False))

    @property
    def fitted(self) -> bool:
        return self.input_shape_ is not None

    def params(self) -> dict[str, Any]:
        """The constructor arguments that rebuild an unfitted twin of this detector."""
        return {"alpha": self.alpha, "seed": self.seed}

    # -- input checks -----------------------------------------------------------------------
    def _check(self, X: Any, what: str, fitting: bool) -> np.ndarray:
        name = type(self).__name__
        try:
            arr = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError):
            raise DetectorInputError(f"{name}: the {what} must be a numeric array, got {type(X).__name__}") from None
        if arr.ndim < 1 or len(arr) == 0:
            raise DetectorInputError(f"{name}: the {what} is empty")
        if arr.ndim == 1:
            arr = arr[:, None]
        if not fitting and tuple(arr.shape[1:]) != self.input_shape_:
            raise DetectorInputError(
                f"{name}: the {what} has samples of shape {tuple(arr.shape[1:])}, the reference had {self.input_shape_}"
            )
        if not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
            raise DetectorInputError(
                f"{name}: the {what} contains NaN or infinite values "
                f"(samples {', '.join(map(str, bad[:5]))}{'...' if len(bad) > 5 else ''})"
            )
        if fitting and len(arr) < self.min_reference:
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
        arrays = self._state()
        np.savez(folder / "state.npz", **arrays)
        self._save_extra(folder)
        meta = {"format": FORMAT, "kind": self.kind, "params": self.params(), "input_shape": list(self.input_shape_)}
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
        det = cls(**meta["params"])
        with np.load(folder / "state.npz") as state:
            det._restore({k: state[k] for k in state.files})
        det._load_extra(folder)
        det.input_shape_ = tuple(meta["input_shape"])
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


def detector_class(kind: str) -> type[Detector]:
    """The detector class registered as `kind`; imported on first use (TensorFlow only for the autoencoder)."""
    import importlib

    if kind not in KINDS:
        raise ValidationError(f"unknown detector {kind!r}; choose one of: {', '.join(sorted(KINDS))}")
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def make_detector(kind: str, alpha: float = 0.05, **options: Any) -> Detector:
    """An unfitted detector of `kind` ("autoencoder", "ks" or "mmd"), as a Checker spec names it."""
    return detector_class(kind)(alpha=alpha, **options)


def as_rows(X: np.ndarray) -> np.ndarray:
    """Samples of any shape as rows of features."""
    return X.reshape(len(X), -1)
