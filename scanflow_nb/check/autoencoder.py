"""A Keras autoencoder drift detector that combines several pieces of evidence.

The reference is split: the autoencoder trains on one part; the held-out part gives the null
distribution of what the batch is compared with. Evidence (choose with `evidence=`):

- "error":    the batch's per-sample reconstruction errors against the held-out errors
              (one-sided Mann-Whitney U: drifted data reconstructs worse);
- "input":    the inputs as a whole: each sample's whitened (Mahalanobis) distance from the mean under
              a shrunk covariance (Ledoit-Wolf), against the reference's own distances, each computed
              under a covariance fitted without it (5 folds; a batch sample is scored under one fold's
              covariance, so clean samples and reference samples are exchangeable); one-sided
              Mann-Whitney U. It sees noise that adds variance where clean data hardly varies, which
              reconstruction error misses (shot noise at MNIST-C severity 1; see the README);
- "code":     the distribution of the batch's codes against the held-out codes (MMD permutation test);
- "features": the inputs feature by feature (location-and-scale rank tests, family-wise min-p);
              fills `features` and `drifted`.

Default: "error" and "input" (measured best by bench/drift.py; "code" added nothing at MNIST-C
severity 1 or 3 and costs a permutation test). The batch p-value is the Bonferroni-corrected
minimum over the evidence used, so the false positive rate stays at most `alpha` whatever the
dependence between them. Per-sample scores are reconstruction errors; the threshold is their
(1 - alpha) quantile on the held-out reference.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ValidationError
from .base import Detector
from .result import DriftResult
from .stats import (
    bonferroni,
    column_tests,
    cross_fitted_distances,
    fold_distances,
    median_bandwidth,
    mmd_permutation_test,
)

EVIDENCE = ("error", "input", "code", "features")
DEFAULT_EVIDENCE = ("error", "input")
ARCHITECTURES = ("auto", "dense", "conv")


class AutoencoderDetector(Detector):
    """Reconstruction-error drift detector; dense for tables and small images, convolutional for images.

    `architecture="auto"` picks "conv" for square images (n, s, s) or (n, s, s, c) with s >= 16.
    Training stops after `epochs` or `max_seconds`, whichever comes first; `seed` fixes the split,
    the initial weights and the batch order.
    """

    kind = "autoencoder"
    min_reference = 20

    def __init__(
        self,
        alpha: float = 0.05,
        seed: int = 0,
        architecture: str = "auto",
        code_size: int = 8,
        epochs: int = 100,
        max_seconds: float = 60.0,
        holdout: float = 0.3,
        evidence: Sequence[str] = DEFAULT_EVIDENCE,
        permutations: int = 500,
        max_reference: int = 300,
        max_input_reference: int = 5000,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
    ) -> None:
        super().__init__(alpha, seed)
        if architecture not in ARCHITECTURES:
            raise ValidationError(
                f"AutoencoderDetector: architecture must be one of {ARCHITECTURES}, got {architecture!r}"
            )
        evidence = (evidence,) if isinstance(evidence, str) else tuple(evidence)
        unknown = [e for e in evidence if e not in EVIDENCE]
        if not evidence or unknown:
            raise ValidationError(
                f"AutoencoderDetector: evidence must be a non-empty subset of {EVIDENCE}, got {evidence!r}"
            )
        if not 0.05 <= holdout <= 0.8:
            raise ValidationError(f"AutoencoderDetector: holdout must be a fraction from 0.05 to 0.8, got {holdout!r}")
        for name, value in (("code_size", code_size), ("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"AutoencoderDetector: {name} must be a whole number >= 1, got {value!r}")
        if not max_seconds > 0:
            raise ValidationError(f"AutoencoderDetector: max_seconds must be positive, got {max_seconds!r}")
        self.architecture, self.code_size, self.epochs = architecture, code_size, epochs
        self.max_seconds, self.holdout, self.evidence = float(max_seconds), float(holdout), evidence
        self.permutations, self.max_reference, self.max_input_reference = (
            int(permutations),
            int(max_reference),
            int(max_input_reference),
        )
        self.batch_size, self.learning_rate = batch_size, float(learning_rate)
        self.model_ = self.encoder_ = None
        self.training_seconds_ = 0.0
        self.epochs_run_ = 0

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "architecture": self.architecture,
            "code_size": self.code_size,
            "epochs": self.epochs,
            "max_seconds": self.max_seconds,
            "holdout": self.holdout,
            "evidence": list(self.evidence),
            "permutations": self.permutations,
            "max_reference": self.max_reference,
            "max_input_reference": self.max_input_reference,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
        }

    # -- shapes and scaling ---------------------------------------------------------------------
    def _conv(self) -> bool:
        shape = self.input_shape_
        if self.architecture != "auto":
            return self.architecture == "conv"
        return len(shape) in (2, 3) and shape[0] == shape[1] >= 16 and (len(shape) == 2 or shape[2] <= 4)

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        """Standardised model input: (n, features) for dense, (n, s, s, c) for conv."""
        if self._conv():
            X = X if X.ndim == 4 else X[..., None]
        else:
            X = X.reshape(len(X), -1)
        return ((X - self.mean_) / self.scale_).astype(np.float32)

    # -- training ---------------------------------------------------------------------------------
    def _fit(self, X: np.ndarray) -> None:
        if self.architecture == "conv" and not (
            len(self.input_shape_) in (2, 3) and self.input_shape_[0] == self.input_shape_[1]
        ):
            raise ValidationError(
                f"AutoencoderDetector: architecture='conv' needs square images, got samples "
                f"of shape {self.input_shape_}"
            )
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(X))
        n_hold = max(10, int(round(self.holdout * len(X))))
        self.holdout_, train = np.sort(order[:n_hold]), order[n_hold:]
        flat = X.reshape(len(X), -1)
        if self._conv():
            self.mean_, self.scale_ = np.float64(X[train].mean()), np.float64(X[train].std() + 1e-6)
        else:
            std = flat[train].std(axis=0)
            self.mean_, self.scale_ = flat[train].mean(axis=0), std + 0.1 * max(float(std.mean()), 1e-6)
        self._train(self._prepare(X[train]))
        held = self._prepare(X[self.holdout_])
        errors, codes = self._errors_and_codes(held)
        self.ref_errors_ = errors
        keep = np.sort(rng.choice(len(codes), min(len(codes), self.max_reference), replace=False))
        self.ref_codes_ = codes[keep]
        self.code_bandwidth_ = median_bandwidth(codes, rng)
        keep = np.sort(rng.choice(len(flat), min(len(flat), self.max_input_reference), replace=False))
        self.ref_inputs_ = flat[keep]
        self.ref_distances_, self.input_means_, self.input_precisions_ = cross_fitted_distances(
            self.ref_inputs_, 5, rng
        )
        self.threshold_ = float(np.quantile(errors, 1 - self.alpha))

    def _build(self, shape: tuple[int, ...]):
        import keras
        from keras import layers

        inputs = keras.Input(shape=shape)
        if self._conv():
            side, channels = shape[0], shape[2]
            padded = -(-side // 4) * 4
            pad = padded - side
            x = layers.ZeroPadding2D(((0, pad), (0, pad)))(inputs)
            x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
            x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
            code = layers.Dense(self.code_size, name="code")(layers.Flatten()(x))
            x = layers.Dense((padded // 4) ** 2 * 32, activation="relu")(code)
            x = layers.Reshape((padded // 4, padded // 4, 32))(x)
            x = layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu")(x)
            x = layers.Conv2DTranspose(channels, 3, strides=2, padding="same")(x)
            outputs = layers.Cropping2D(((0, pad), (0, pad)))(x)
        else:
            width = shape[0]
            wide, narrow = int(np.clip(width // 2, 16, 256)), int(np.clip(width // 4, 16, 128))
            x = layers.Dense(wide, activation="relu")(inputs)
            x = layers.Dense(narrow, activation="relu")(x)
            code = layers.Dense(self.code_size, name="code")(x)
            x = layers.Dense(narrow, activation="relu")(code)
            x = layers.Dense(wide, activation="relu")(x)
            outputs = layers.Dense(width)(x)
        return keras.Model(inputs, outputs)

    def _train(self, Xs: np.ndarray) -> None:
        import keras

        detector = self

        class TimeBudget(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                detector.epochs_run_ = epoch + 1
                if time.monotonic() - started > detector.max_seconds:
                    self.model.stop_training = True

        saved = np.random.get_state(), random.getstate()  # keras seeds the global generators too
        try:
            keras.utils.set_random_seed(self.seed)
            model = self._build(Xs.shape[1:])
            model.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss="mse")
            started = time.monotonic()
            model.fit(
                Xs,
                Xs,
                epochs=self.epochs,
                batch_size=self.batch_size,
                shuffle=True,
                verbose=0,
                callbacks=[TimeBudget()],
            )
            self.training_seconds_ = time.monotonic() - started
        finally:
            np.random.set_state(saved[0])
            random.setstate(saved[1])
        self._set_model(model)

    def _set_model(self, model) -> None:
        import keras

        self.model_ = model
        self.encoder_ = keras.Model(model.input, model.get_layer("code").output)

    # -- scoring -----------------------------------------------------------------------------------
    def _errors_and_codes(self, Xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        errors, codes = [], []
        for start in range(0, len(Xs), 1024):
            chunk = Xs[start : start + 1024]
            recon = np.asarray(self.model_(chunk, training=False))
            errors.append(((recon - chunk) ** 2).reshape(len(chunk), -1).mean(axis=1))
            codes.append(np.asarray(self.encoder_(chunk, training=False)))
        return np.concatenate(errors).astype(np.float64), np.concatenate(codes).astype(np.float64)

    def encode(self, X: Any) -> np.ndarray:
        """The autoencoder's code of every sample of `X` (n, ...) -> (n, code_size)."""
        return self._errors_and_codes(self._prepare(np.asarray(X, dtype=np.float64)))[1]

    def _score(self, X: np.ndarray) -> DriftResult:
        errors, codes = self._errors_and_codes(self._prepare(X))
        from scipy.stats import mannwhitneyu

        flat = X.reshape(len(X), -1)
        tests: dict[str, float] = {}
        features: dict[str, float] = {}
        if "error" in self.evidence:
            tests["error"] = float(mannwhitneyu(errors, self.ref_errors_, alternative="greater").pvalue)
        if "input" in self.evidence:
            distances = fold_distances(flat, self.input_means_, self.input_precisions_)
            tests["input"] = float(mannwhitneyu(distances, self.ref_distances_, alternative="greater").pvalue)
        if "code" in self.evidence:
            tests["code"] = mmd_permutation_test(
                self.ref_codes_, codes, self.code_bandwidth_, self.permutations, np.random.default_rng(self.seed)
            )[1]
        order = {}
        if "features" in self.evidence:
            found = column_tests(self.ref_inputs_, flat, permutations=self.permutations, seed=self.seed)
            tests["features"] = found.p_value
            # a feature counts at the evidence's share of alpha, like the evidence itself
            share = len(self.evidence)
            features = dict(zip(self.feature_names, np.minimum(found.adjusted * share, 1.0)))
            order = dict(zip(self.feature_names, found.asymptotic))
        score = float(errors.mean() / max(self.ref_errors_.mean(), 1e-12))
        return DriftResult.build(
            bonferroni(tests.values()), score, errors, self.threshold_, self.alpha, tests, features, order
        )

    # -- persistence ---------------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {
            "mean": np.asarray(self.mean_),
            "scale": np.asarray(self.scale_),
            "holdout": self.holdout_,
            "ref_errors": self.ref_errors_,
            "ref_codes": self.ref_codes_,
            "ref_inputs": self.ref_inputs_,
            "input_means": self.input_means_,
            "input_precisions": self.input_precisions_,
            "ref_distances": self.ref_distances_,
            "code_bandwidth": np.array(self.code_bandwidth_),
            "threshold": np.array(self.threshold_),
        }

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.mean_, self.scale_, self.holdout_ = state["mean"], state["scale"], state["holdout"]
        self.ref_errors_, self.ref_codes_, self.ref_inputs_ = (
            state["ref_errors"],
            state["ref_codes"],
            state["ref_inputs"],
        )
        self.input_means_, self.input_precisions_ = state["input_means"], state["input_precisions"]
        self.ref_distances_ = state["ref_distances"]
        self.code_bandwidth_, self.threshold_ = float(state["code_bandwidth"]), float(state["threshold"])

    def _save_extra(self, folder: Path) -> None:
        self.model_.save(folder / "model.keras")

    def _load_extra(self, folder: Path) -> None:
        import keras

        self._set_model(keras.models.load_model(folder / "model.keras", compile=False))
