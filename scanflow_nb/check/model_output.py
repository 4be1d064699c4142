"""Drift seen through the supervised model: its predicted probabilities (BBSD) and the label shift (BBSE).

Black-box shift detection (Lipton et al. 2018; Rabanser et al., "Failing Loudly", NeurIPS 2019):
the model's predicted class probabilities on the batch are compared with those on the reference,
one column per class plus the predicted class (the same family-wise column tests as the tabular
detector). A shift the model does not react to is harmless to it; one it reacts to shows here,
in a few dimensions, whatever the input looks like.

Black-box shift estimation: given the true labels of the reference, the model's soft confusion
matrix C (C[i, j]: mean probability of class i over reference samples of class j, times the share
of class j) relates the mean predicted probabilities on the batch to its class proportions q:
mean(P_batch) = C w, q = w * p_reference. `estimates` on the result hold q as `proportion[<class>]`.
The reference must be data the model did not learn from (a validation split, or recent production
data): on its training data a model can be far surer than on anything new, so clean batches look
drifted. bench/drift.py measures it: BBSD with a random forest's outputs on its own training data as
the reference flags 95% of clean batches; with held-out outputs, about alpha. The same holds for
the labels behind BBSE: a training-set confusion matrix is over-confident.

The model can be any object with `predict_proba`, a callable returning probabilities, or an MLflow
model URI (loaded on first use, from `tracking_uri` and its registry when given). Probabilities a
serving process logged with the batch can be scored instead of calling the model:
`score(probabilities=P)`.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from ..errors import ValidationError
from .base import Detector, NotFittedError, value_range
from .quality import DetectorInputError, examine_array, examine_frame, feature_names, infer_schema, is_frame
from .result import DriftResult, Finding
from .stats import column_tests

SUM_TOLERANCE = 1e-3


class ModelOutputDetector(Detector):
    """BBSD on the model's predicted probabilities, plus the BBSE label-shift estimate when labels are given."""

    kind = "model_output"
    takes_probabilities = True

    def __init__(
        self,
        model: Any = None,
        alpha: float = 0.05,
        seed: int = 0,
        classes: list | None = None,
        permutations: int = 1000,
        max_reference: int = 2000,
        tracking_uri: str | None = None,
    ) -> None:
        super().__init__(alpha, seed)
        if model is not None and not (isinstance(model, str) or hasattr(model, "predict_proba") or callable(model)):
            raise ValidationError(
                "ModelOutputDetector: model must have predict_proba, be callable, or be an MLflow model URI; "
                f"got {type(model).__name__}"
            )
        self.model = model  # as given: an MLflow model URI stays a URI (it is what gets saved)
        self.tracking_uri = tracking_uri  # where a models:/ or runs:/ URI is found (None: MLflow's current one)
        self._loaded = None
        self.classes = [str(c) for c in classes] if classes is not None else None
        self.permutations, self.max_reference = int(permutations), int(max_reference)
        self.ref_probs_: np.ndarray | None = None
        self.confusion_: np.ndarray | None = None

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "model": self.model if isinstance(self.model, str) else None,  # an object is not saved
            "classes": self.classes,
            "permutations": self.permutations,
            "max_reference": self.max_reference,
            "tracking_uri": self.tracking_uri,
        }

    @property
    def fitted(self) -> bool:
        return self.ref_probs_ is not None

    @property
    def feature_names(self) -> list[str]:
        return [f"p[{c}]" for c in self.classes] + ["predicted"]

    # -- the model -----------------------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """The model's class probabilities for `X`; DetectorInputError if the model cannot predict it."""
        if self.model is None:
            raise ValidationError(
                "ModelOutputDetector has no model: pass probabilities=..., or give the model to the detector"
            )
        if self._loaded is None:
            self._loaded = _load_model(self.model, self.tracking_uri) if isinstance(self.model, str) else self.model
        model = self._loaded
        predict = model.predict_proba if hasattr(model, "predict_proba") else model
        try:
            return np.asarray(predict(X), dtype=np.float64)
        except Exception as exc:
            raise DetectorInputError(
                f"ModelOutputDetector: the model could not predict the data: {type(exc).__name__}: {exc}"
            ) from None

    def _probabilities(self, X: Any, probabilities: Any, what: str) -> np.ndarray:
        P = self.predict_proba(X) if probabilities is None else np.asarray(probabilities, dtype=np.float64)
        if P.ndim != 2 or len(P) == 0 or P.shape[1] < 2:
            raise DetectorInputError(
                f"ModelOutputDetector: the {what} probabilities must be (n, classes >= 2), got shape {P.shape}"
            )
        if self.ref_probs_ is not None and P.shape[1] != self.ref_probs_.shape[1]:
            raise DetectorInputError(
                f"ModelOutputDetector: the {what} has probabilities of {P.shape[1]} classes, "
                f"the reference had {self.ref_probs_.shape[1]}"
            )
        return P

    # -- fit and score -------------------------------------------------------------------------------------
    def fit(self, X_reference: Any = None, y_reference: Any = None, probabilities: Any = None) -> ModelOutputDetector:
        """Learn the model's outputs on the reference; with `y_reference` (true labels), the confusion for BBSE.

        The reference must be data the model did not train on (see the module's docstring).
        """
        if X_reference is None and probabilities is None:
            raise ValidationError("ModelOutputDetector.fit needs the reference data or its probabilities")
        P = self._probabilities(X_reference, probabilities, "reference")
        if not np.isfinite(P).all():
            raise DetectorInputError("ModelOutputDetector: the reference probabilities contain NaN or inf")
        # what the inputs look like, to report data-quality findings on batches (() when unknown)
        self.schema_, self.input_shape_, self.low_, self.high_ = None, (), np.zeros(0), np.zeros(0)
        if is_frame(X_reference):
            self.schema_ = infer_schema(X_reference, owner="ModelOutputDetector")
        elif X_reference is not None and np.asarray(X_reference).dtype.kind in "biuf":
            arr = np.asarray(X_reference, dtype=np.float64)
            self.input_shape_, (self.low_, self.high_) = tuple(arr.shape[1:]), value_range(arr)
        classes = getattr(self._loaded, "classes_", None) if self.classes is None else self.classes
        self.classes = [str(c) for c in (classes if classes is not None else range(P.shape[1]))]
        if len(self.classes) != P.shape[1]:
            raise ValidationError(f"ModelOutputDetector: {len(self.classes)} classes for {P.shape[1]} probabilities")
        rng = np.random.default_rng(self.seed)
        keep = np.sort(rng.choice(len(P), min(len(P), self.max_reference), replace=False))
        self.ref_probs_ = P[keep]
        self.threshold_ = float(np.quantile(1.0 - P.max(axis=1), 1 - self.alpha))
        self.confusion_ = self.source_proportions_ = None
        if y_reference is not None:
            self._fit_confusion(P, np.asarray(y_reference))
        return self

    def _fit_confusion(self, P: np.ndarray, y: np.ndarray) -> None:
        if len(y) != len(P):
            raise ValidationError(f"ModelOutputDetector: {len(y)} labels for {len(P)} reference samples")
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({str(v) for v in y} - set(index))
        if unknown:
            raise ValidationError(f"ModelOutputDetector: labels {unknown[:5]} are not among the classes {self.classes}")
        codes = np.array([index[str(v)] for v in y])
        onehot = np.eye(len(self.classes))[codes]
        self.confusion_ = P.T @ onehot / len(P)  # [i, j]: mean P_i over samples of class j, times share of j
        self.source_proportions_ = onehot.mean(axis=0)

    def score(self, X_batch: Any = None, probabilities: Any = None) -> DriftResult:
        """Test the model's outputs on the batch (or the given probabilities) against the reference's."""
        if not self.fitted:
            raise NotFittedError("ModelOutputDetector must be fitted before scoring a batch: call fit(X_reference)")
        if X_batch is None and probabilities is None:
            raise ValidationError("ModelOutputDetector.score needs the batch or its probabilities")
        findings = self._input_findings(X_batch) if X_batch is not None else []
        P = self._probabilities(X_batch, probabilities, "batch")
        usable = np.isfinite(P).all(axis=1)
        if not usable.any():
            raise DetectorInputError("ModelOutputDetector: nothing usable: every row of probabilities has NaN or inf")
        if not usable.all():
            findings.append(Finding("nan", "probabilities", int((~usable).sum()), "rows of probabilities left out"))
        off = usable & ((np.abs(P.sum(axis=1) - 1) > SUM_TOLERANCE) | (P < 0).any(axis=1) | (P > 1).any(axis=1))
        if off.any():
            findings.append(Finding("out_of_range", "probabilities", int(off.sum()), "rows that are not probabilities"))
        ok = P[usable]
        found = column_tests(
            self.ref_probs_,
            ok,
            self.ref_probs_.argmax(axis=1)[:, None],
            ok.argmax(axis=1)[:, None],
            permutations=self.permutations,
            seed=self.seed,
        )
        names = self.feature_names
        scores = np.full(len(P), np.nan)
        scores[usable] = 1.0 - ok.max(axis=1)
        result = DriftResult.build(
            found.p_value,
            float(-np.log10(max(found.p_value, 1e-300))),
            scores,
            self.threshold_,
            self.alpha,
            {"outputs": found.p_value},
            dict(zip(names, found.adjusted)),
            dict(zip(names, found.asymptotic)),
            self._proportions(ok),
        )
        result.findings[:0] = findings
        return result

    def _input_findings(self, X: Any) -> list[Finding]:
        try:
            if is_frame(X) and self.schema_ is not None:
                return examine_frame(X, self.schema_, "ModelOutputDetector").findings
            if self.input_shape_ and not is_frame(X):
                names = feature_names(self.input_shape_)
                return examine_array(X, self.input_shape_, names, self.low_, self.high_, "ModelOutputDetector").findings
        except DetectorInputError:
            pass  # the model is the judge of what it can read
        return []

    def _proportions(self, P: np.ndarray) -> dict[str, float]:
        """BBSE: the batch's class proportions from its mean predicted probabilities (empty without labels)."""
        if self.confusion_ is None:
            return {}
        from scipy.optimize import nnls

        weights, _ = nnls(self.confusion_, P.mean(axis=0))
        q = weights * self.source_proportions_
        q = q / q.sum() if q.sum() > 0 else self.source_proportions_
        return {f"proportion[{c}]": float(v) for c, v in zip(self.classes, q)}

    # -- persistence --------------------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        state = {"ref_probs": self.ref_probs_, "threshold": np.array(self.threshold_)}
        if self.confusion_ is not None:
            state.update(confusion=self.confusion_, source_proportions=self.source_proportions_)
        return state

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.ref_probs_, self.threshold_ = state["ref_probs"], float(state["threshold"])
        self.confusion_ = state.get("confusion")
        self.source_proportions_ = state.get("source_proportions")


def _load_model(uri: str, tracking_uri: str | None = None):
    """An MLflow model: the native scikit-learn object when it is one (it has predict_proba), else pyfunc.

    With `tracking_uri`, a models:/ or runs:/ URI is found in that tracker and its registry.
    """
    import mlflow

    if tracking_uri is None or not uri.startswith(("models:/", "runs:/")):
        try:
            return mlflow.sklearn.load_model(uri)
        except Exception:
            return mlflow.pyfunc.load_model(uri).predict
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=_artifact_uri(uri, tracking_uri), dst_path=tmp, tracking_uri=tracking_uri
        )
        return _load_model(local)


def registered_version(uri: str, tracking_uri: str):
    """The registry's entry for models:/NAME/VERSION or models:/NAME@ALIAS in the registry of `tracking_uri`;
    None for other URIs (runs:/..., a logged model models:/m-..., a path)."""
    from ..track import get_client

    name, at, alias = uri[len("models:/") :].partition("@")
    name, _, version = name.partition("/")
    if not uri.startswith("models:/") or not (at or version.isdigit()):
        return None
    client = get_client(tracking_uri)
    return client.get_model_version_by_alias(name, alias) if at else client.get_model_version(name, version)


def _artifact_uri(uri: str, tracking_uri: str) -> str:
    """Where the files of the model `uri` are (MLflow resolves models:/ names in its process-wide registry only)."""
    from ..track import get_client

    found = registered_version(uri, tracking_uri)
    return uri if found is None else get_client(tracking_uri).get_model_version_download_uri(found.name, found.version)
