"""A thin scikit-learn face for Keras models, so an ActiveLearner can drive them like any classifier."""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class KerasClassifier(ClassifierMixin, BaseEstimator):
    """Wraps `build(n_classes) -> compiled keras Model` (softmax output, sparse categorical loss).

    Each `fit` builds a fresh model; inputs arrive flattened and are reshaped to `input_shape`.
    `embed(X)` gives the layer before the output: the improver's `embedding="model"`.
    """

    def __init__(self, build, input_shape, epochs: int = 10, batch_size: int = 32, seed: int = 0):
        self.build = build
        self.input_shape = input_shape
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed

    def fit(self, X, y):
        import keras

        keras.utils.set_random_seed(self.seed)
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        self.model_ = self.build(len(self.classes_))
        self.model_.fit(self._shaped(X), codes, epochs=self.epochs, batch_size=self.batch_size, verbose=0)
        return self

    def predict_proba(self, X) -> np.ndarray:
        return np.asarray(self.model_.predict(self._shaped(X), verbose=0))

    def embed(self, X) -> np.ndarray:
        """What the model's last hidden layer makes of X (one row per sample)."""
        import keras

        hidden = keras.Model(self.model_.inputs, self.model_.layers[-2].output)
        Z = np.asarray(hidden.predict(self._shaped(X), verbose=0))
        return Z.reshape(len(Z), -1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def _shaped(self, X) -> np.ndarray:
        return np.asarray(X, dtype="float32").reshape((len(X), *self.input_shape))
