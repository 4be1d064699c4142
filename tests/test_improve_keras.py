"""A Keras model driven by the improver through the thin scikit-learn adapter (real TensorFlow)."""

import pytest
from sklearn.datasets import load_digits

from scanflow_nb.improve import ActiveLearner, KerasClassifier, Oracle

pytestmark = pytest.mark.slow


def build(n_classes):
    import keras

    model = keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(n_classes, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    return model


def test_keras_model_learns_through_the_improver():
    pytest.importorskip("tensorflow", reason="Keras adapter test skipped: tensorflow is not installed")
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 8, 8)
    imp = ActiveLearner(
        KerasClassifier(build, input_shape=(8, 8), epochs=20, seed=0),
        "margin",
        X_labeled=X[:40],
        y_labeled=y[:40],
        X_pool=X[40:400],
    )
    before = imp.score(X[1400:], y[1400:])
    oracle = Oracle(y[40:400])
    ids = imp.query_ids(60)
    imp.teach_ids(ids, oracle(ids))
    after = imp.score(X[1400:], y[1400:])
    assert imp.n_trained == 100 and after > before and after > 0.8
    ((label, confidence),) = imp.guess([imp.pool_ids[0]])
    assert label in range(10) and 0 < confidence <= 1
    assert imp.model.predict_proba(X[:3].reshape(3, -1)).shape == (3, 10)
    assert imp.model.embed(X[:3].reshape(3, -1)).shape == (3, 32)  # the hidden layer: embedding="model"
    imp.strategy, imp.embedding = "typical", "model"
    assert len(set(imp.query_ids(10).tolist())) == 10
