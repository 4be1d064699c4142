"""Where typical and diverse samples are measured: PCA of the candidates, the model's own features, or any encoder.

`embedding=` of an ActiveLearner is one of
  "pca"       (default) the candidates' principal components (up to 32), fitted on the candidates and labels
  "model"     the fitted model's own features: `embed(X)` when it has one (KerasClassifier: the layer before the
              output), else `transform(X)` of every step of a scikit-learn Pipeline but the last
  an encoder  an object with `encode(X)`, e.g. the checker's fitted AutoencoderDetector (its code layer)
  a function  X -> features
Encoders and functions get the samples in their original shape (images as images).
"""

from collections.abc import Callable

import numpy as np

from ..errors import ValidationError

PCA_COMPONENTS = 32


def check(embedding) -> None:
    """Refuse an embedding this module cannot use, at construction time rather than at the first query."""
    if isinstance(embedding, str):
        if embedding in ("pca", "model"):
            return
    elif callable(embedding) or callable(getattr(embedding, "encode", None)):
        return
    raise ValidationError(
        f"embedding must be 'pca', 'model', an object with encode(X) (e.g. a fitted AutoencoderDetector) "
        f"or a function X -> features, got {embedding!r}"
    )


def embedder(embedding, rows: np.ndarray, model, shape) -> Callable[[np.ndarray], np.ndarray]:
    """A function rows -> features for `embedding`; `rows` (every candidate and label) fit the PCA.

    `shape` is one sample's original shape: encoders of images get images back, not rows.
    """
    if embedding == "pca":
        from sklearn.decomposition import PCA

        n = min(PCA_COMPONENTS, rows.shape[1], len(rows))
        if n < 2:  # too few samples to find directions: the features themselves
            return lambda X: np.asarray(X, dtype=float)
        pca = PCA(n_components=n, random_state=0).fit(rows)
        return pca.transform
    if embedding == "model":
        return _model_features(model)
    encode = getattr(embedding, "encode", embedding)
    return lambda X: encode(np.asarray(X).reshape((len(X), *shape)))


def _model_features(model) -> Callable[[np.ndarray], np.ndarray]:
    if model is None:
        raise ValidationError("embedding='model' needs a model: teach labels of two classes first, or use 'pca'")
    if callable(getattr(model, "embed", None)):
        return model.embed
    steps = getattr(model, "steps", None)
    if steps and len(steps) > 1:
        return model[:-1].transform
    raise ValidationError(
        f"embedding='model': a {type(model).__name__} has no features of its own (no embed(X), not a Pipeline); "
        "use 'pca', an encoder or a function"
    )


def features(embed, X: np.ndarray, what: str) -> np.ndarray:
    """`embed(X)` as a finite 2-D float array, with a clear error when an encoder returns anything else."""
    try:
        Z = np.asarray(embed(X), dtype=float)
    except ValidationError:
        raise
    except Exception as exc:
        raise ValidationError(f"the embedding failed on {what}: {type(exc).__name__}: {exc}") from None
    if Z.ndim < 1 or len(Z) != len(X) or not np.all(np.isfinite(Z)):
        raise ValidationError(f"the embedding must give one finite feature row per sample of {what}")
    return Z.reshape(len(Z), -1)
