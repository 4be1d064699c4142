"""The detector contract and the two baselines (per-feature KS, MMD permutation test).

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
from .stats import bonferroni, ks_per_feature, median_bandwidth, mmd_permutation_test

FORMAT = 1


class DetectorInputError(ValidationError):
    """Data given to a detector is unusable (empty, wrong shape, NaN/inf, not numeric)."""


class NotFittedError(ScanflowError):
    """A detector was asked to score or save before `fit`."""


class Detector:
    """Base class: input checks, persistence and the kind registry. Subclasses implement
    `_fit(X)`, `_score(X) -> DriftResult`, `params()` and the fitted state (`_state`/`_restore`)."""

    kind: ClassVar[str] = ""
    min_reference: ClassVar[int] = 2
    KINDS: ClassVar[dict[str, type["Detector"]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            Detector.KINDS[cls.kind] = cls

    def __init__(self, alpha: float = 0.05, seed: int = 0) -> None:
        if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
            raise ValidationError(f"alpha must be between 0 and 1, got {alpha!r}")
        self.alpha = float(alpha)
        self.seed = int(seed)
        self.input_shape_: tuple[int, ...] | None = None

    # -- the contract ------------------------------------------------------------------------
    def fit(self, X_reference: Any) -> "Detector":
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
            raise DetectorInputError(f"{name}: the {what} has samples of shape {tuple(arr.shape[1:])}, "
                                     f"the reference had {self.input_shape_}")
        if not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
            raise DetectorInputError(f"{name}: the {what} contains NaN or infinite values "
                                     f"(samples {', '.join(map(str, bad[:5]))}{'...' if len(bad) > 5 else ''})")
        if fitting and len(arr) < self.min_reference:
            raise DetectorInputError(f"{name}: the reference needs at least {self.min_reference} samples, got {len(arr)}")
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
    def load(path: str | Path) -> "Detector":
        """A detector saved by `save` (any kind)."""
        folder = Path(path)
        meta_file = folder / "detector.json"
        if not meta_file.is_file():
            raise NotFoundError(f"no saved detector in {str(folder)!r} (detector.json is missing)")
        try:
            meta = json.loads(meta_file.read_text())
            cls = Detector.KINDS[meta["kind"]]
        except (ValueError, KeyError):
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


def _flat(X: np.ndarray) -> np.ndarray:
    return X.reshape(len(X), -1)


class KSDetector(Detector):
    """Per-feature two-sample Kolmogorov-Smirnov tests, Bonferroni-corrected over the features.

    Batch score: the largest KS statistic. Per-sample score: mean squared z-score of the sample's
    features against the reference (features with no spread get a small floor). At most
    `max_reference` reference samples (a seeded random subset) are kept.
    """

    kind = "ks"

    def __init__(self, alpha: float = 0.05, seed: int = 0, max_reference: int = 5000) -> None:
        super().__init__(alpha, seed)
        self.max_reference = int(max_reference)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "max_reference": self.max_reference}

    def _fit(self, X: np.ndarray) -> None:
        flat = _flat(X)
        if len(flat) > self.max_reference:  # a random subset keeps memory and scoring time bounded
            keep = np.random.default_rng(self.seed).choice(len(flat), self.max_reference, replace=False)
            flat = flat[np.sort(keep)]
        self.reference_ = flat
        self.mean_ = flat.mean(axis=0)
        std = flat.std(axis=0)
        self.scale_ = std + 0.1 * max(float(std.mean()), 1e-12)
        self.threshold_ = float(np.quantile(self._sample_scores(flat), 1 - self.alpha))

    def _sample_scores(self, flat: np.ndarray) -> np.ndarray:
        return (((flat - self.mean_) / self.scale_) ** 2).mean(axis=1)

    def _score(self, X: np.ndarray) -> DriftResult:
        flat = _flat(X)
        stat, p = ks_per_feature(self.reference_, flat)
        return DriftResult.build(bonferroni(p), stat.max(), self._sample_scores(flat), self.threshold_, self.alpha,
                                 {"ks": bonferroni(p)})

    def _state(self) -> dict[str, np.ndarray]:
        return {"reference": self.reference_, "mean": self.mean_, "scale": self.scale_,
                "threshold": np.array(self.threshold_)}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.reference_, self.mean_, self.scale_ = state["reference"], state["mean"], state["scale"]
        self.threshold_ = float(state["threshold"])


class MMDDetector(Detector):
    """Gaussian-kernel maximum mean discrepancy with a permutation test.

    `on="raw"` compares the (flattened) inputs; `on="code"` first trains an autoencoder on the
    reference (`autoencoder` holds its keyword arguments) and compares the codes. The kernel width
    is the median distance in the reference; at most `max_reference` reference samples are used.
    Batch score: MMD². Per-sample score: 1 - the sample's mean kernel value against the reference
    (low kernel density); threshold: its (1 - alpha) quantile over reference samples (leave-one-out).
    """

    kind = "mmd"

    def __init__(self, alpha: float = 0.05, seed: int = 0, on: str = "raw", permutations: int = 500,
                 max_reference: int = 300, autoencoder: dict[str, Any] | None = None) -> None:
        super().__init__(alpha, seed)
        if on not in ("raw", "code"):
            raise ValidationError(f"MMDDetector: on must be 'raw' or 'code', got {on!r}")
        if int(permutations) < 20:
            raise ValidationError(f"MMDDetector: permutations must be at least 20, got {permutations!r}")
        self.on, self.permutations, self.max_reference = on, int(permutations), int(max_reference)
        self.autoencoder = dict(autoencoder or {})
        self.encoder_ = None

    def params(self) -> dict[str, Any]:
        return {**super().params(), "on": self.on, "permutations": self.permutations,
                "max_reference": self.max_reference, "autoencoder": self.autoencoder}

    def _features(self, X: np.ndarray) -> np.ndarray:
        return self.encoder_.encode(X) if self.encoder_ is not None else _flat(X)

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
        kernel = np.exp(-cdist(ref, ref, "sqeuclidean") / (2.0 * self.bandwidth_ ** 2))
        return 1.0 - (kernel.sum(axis=1) - 1.0) / max(len(ref) - 1, 1)

    def _score(self, X: np.ndarray) -> DriftResult:
        feats = self._features(X)
        mmd2, p, similarity = mmd_permutation_test(self.reference_, feats, self.bandwidth_, self.permutations,
                                                   np.random.default_rng(self.seed))
        return DriftResult.build(p, mmd2, 1.0 - similarity, self.threshold_, self.alpha, {f"mmd_{self.on}": p})

    def _state(self) -> dict[str, np.ndarray]:
        return {"reference": self.reference_, "bandwidth": np.array(self.bandwidth_),
                "threshold": np.array(self.threshold_)}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.reference_ = state["reference"]
        self.bandwidth_, self.threshold_ = float(state["bandwidth"]), float(state["threshold"])

    def _save_extra(self, folder: Path) -> None:
        if self.encoder_ is not None:
            self.encoder_.save(folder / "encoder")

    def _load_extra(self, folder: Path) -> None:
        if self.on == "code":
            self.encoder_ = Detector.load(folder / "encoder")
