"""BBSD and BBSE with a real classifier on digits: the model's outputs, logged probabilities, an MLflow model."""

import numpy as np
import pytest
from calibration_support import most_false_alarms

from scanflow_nb.check import Detector, DetectorInputError, ModelOutputDetector
from scanflow_nb.datasets import corrupt, load_digits
from scanflow_nb.errors import ValidationError


class Flat:
    """A digits classifier that takes (n, 8, 8) images, as a deployed image model would."""

    def __init__(self, model):
        self.model, self.classes_ = model, model.classes_

    def predict_proba(self, X):
        return self.model.predict_proba(np.asarray(X).reshape(len(X), -1))


@pytest.fixture(scope="module")
def setup():
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits()
    order = np.random.default_rng(0).permutation(len(X))
    train, ref, pool = order[:700], order[700:1200], order[1200:]
    model = Flat(LogisticRegression(max_iter=3000).fit(X[train].reshape(len(train), -1), y[train]))
    detector = ModelOutputDetector(model).fit(X[ref], y[ref])
    return detector, model, X, y, ref, pool


def test_clean_outputs_pass_and_a_shift_the_model_reacts_to_is_flagged(setup):
    det, _, X, _, _, pool = setup
    assert det.classes == [str(c) for c in range(10)]
    clean = det.score(X[pool[:80]])
    assert not clean.is_drift and clean.findings == []
    assert set(clean.features) == {f"p[{c}]" for c in range(10)} | {"predicted"}
    rotated = det.score(corrupt(X[pool[80:160]], "rotate", severity=4, seed=0))
    assert rotated.is_drift and rotated.drifted and set(rotated.drifted) <= set(rotated.features)
    assert np.all(rotated.scores[rotated.indices] > rotated.threshold), "anomalous: the least confident outputs"


def test_the_false_positive_rate_holds_over_many_clean_batches(setup):
    det, model, X, _, _, pool = setup
    rng = np.random.default_rng(11)
    P = model.predict_proba(X[pool])  # once: the batches are subsets of the held-out pool
    flagged = sum(det.score(probabilities=P[rng.choice(len(pool), 30, replace=False)]).is_drift for _ in range(200))
    assert flagged <= most_false_alarms(200), f"{flagged} of 200 clean batches flagged at alpha 0.05"


def test_label_shift_is_estimated(setup):
    det, _, X, y, _, pool = setup
    low = pool[y[pool] < 5][:100]  # only digits 0-4 arrive
    res = det.score(X[low])
    assert res.is_drift and res.drifted[0] in {"predicted", *[f"p[{c}]" for c in range(10)]}
    estimate = np.array([res.estimates[f"proportion[{c}]"] for c in range(10)])
    truth = np.bincount(y[low], minlength=10) / len(low)
    assert estimate.sum() == pytest.approx(1.0) and np.abs(estimate - truth).max() < 0.06
    clean = det.score(X[pool[:200]])
    truth = np.bincount(y[pool[:200]], minlength=10) / 200
    assert np.abs(np.array(list(clean.estimates.values())) - truth).max() < 0.06


def test_logged_probabilities_instead_of_the_model(setup, tmp_path):
    det, model, X, y, ref, pool = setup
    batch = corrupt(X[pool[:60]], "rotate", severity=4, seed=1)
    blind = ModelOutputDetector(classes=range(10)).fit(probabilities=model.predict_proba(X[ref]), y_reference=y[ref])
    via_model, via_probs = det.score(batch), blind.score(probabilities=model.predict_proba(batch))
    assert via_probs.p_value == via_model.p_value and via_probs.estimates == pytest.approx(via_model.estimates)
    with pytest.raises(ValidationError, match="has no model"):
        blind.score(batch)
    probs = model.predict_proba(batch)
    probs[4] = np.nan
    probs[5] = probs[5] * 3
    res = blind.score(probabilities=probs)
    assert {(f.kind, f.column, f.count) for f in res.findings} == {
        ("nan", "probabilities", 1),
        ("out_of_range", "probabilities", 1),
    }
    assert np.isnan(res.scores[4]) and res.scores.shape == (60,)
    saved = Detector.load(blind.save(tmp_path / "outputs"))
    assert saved.model is None and saved.score(probabilities=probs).p_value == res.p_value


@pytest.mark.slow
def test_an_mlflow_model_uri_is_loaded_and_kept_when_saved(setup, tmp_path, monkeypatch):
    import mlflow
    from sklearn.linear_model import LogisticRegression

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    _, _, X, y, ref, pool = setup
    flat = X.reshape(len(X), -1)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                LogisticRegression(max_iter=3000).fit(flat[:700], y[:700]),
                name="model",
                serialization_format="cloudpickle",
            )
        det = ModelOutputDetector(info.model_uri).fit(flat[ref], y[ref])
        assert det.classes == [str(c) for c in range(10)]
        loaded = Detector.load(det.save(tmp_path / "det"))
        assert loaded.model == info.model_uri
        assert loaded.score(flat[pool[:80]]).p_value == det.score(flat[pool[:80]]).p_value
    finally:
        mlflow.set_tracking_uri(None)


def test_bad_input(setup):
    det, model, X, y, ref, _ = setup
    with pytest.raises(DetectorInputError, match="the model could not predict the data: ValueError"):
        det.score(X[:10, :4])
    with pytest.raises(DetectorInputError, match="probabilities of 3 classes, the reference had 10"):
        det.score(probabilities=np.full((5, 3), 1 / 3))
    with pytest.raises(DetectorInputError, match="nothing usable"):
        det.score(probabilities=np.full((5, 10), np.nan))
    with pytest.raises(ValidationError, match="must have predict_proba"):
        ModelOutputDetector(model=42)
    with pytest.raises(ValidationError, match="not among the classes"):
        ModelOutputDetector(model).fit(X[ref], y[ref] + 20)
    with pytest.raises(ValidationError, match="needs the reference data or its probabilities"):
        ModelOutputDetector(model).fit()
