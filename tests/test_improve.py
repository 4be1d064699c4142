"""The improver on real scikit-learn learners and modAL strategies, with digits as the data."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from scanflow_nb.errors import ScanflowError, ValidationError
from scanflow_nb.improve import STRATEGIES, ActiveLearner, Oracle, labels_to_reach, learning_curve


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    order = np.random.default_rng(0).permutation(len(y))
    X, y = X[order], y[order]
    seed = np.array([np.flatnonzero(y == c)[0] for c in range(10)])  # one labeled sample per class
    rest = np.setdiff1d(np.arange(len(y)), seed)
    pool, test = rest[:600], rest[600:1000]
    return {"X0": X[seed], "y0": y[seed], "Xp": X[pool], "yp": y[pool], "Xt": X[test], "yt": y[test]}


def make(d, strategy="uncertainty", **kw):
    return ActiveLearner(
        LogisticRegression(max_iter=300), strategy, X_labeled=d["X0"], y_labeled=d["y0"], X_pool=d["Xp"], **kw
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_query_teach_moves_samples_and_retrains(digits, strategy):
    imp = make(digits, strategy)
    model_before = imp.model
    positions = imp.query(20)
    assert len(set(positions.tolist())) == 20 and positions.max() < 600
    ids = imp.pool_ids[positions]
    imp.teach(positions, digits["yp"][ids])
    assert imp.pool_size == 580 and imp.n_labeled == 30 and imp.n_trained == 30
    assert not np.isin(ids, imp.pool_ids).any()
    assert imp.taught == dict(zip(ids.tolist(), digits["yp"][ids].tolist()))
    assert imp.model is not model_before  # retrained: it now knows the new labels
    assert (imp.model.predict(digits["Xp"][ids]) == digits["yp"][ids]).mean() >= 0.9


def test_uncertainty_picks_samples_the_model_is_least_sure_of(digits):
    imp = make(digits)
    ids = imp.query_ids(10)
    proba = imp.predict_proba(digits["Xp"]).max(axis=1)
    assert set(ids.tolist()) == set(np.argsort(proba)[:10].tolist())


def test_active_learning_beats_random_on_digits(digits):
    def curve(strategy, seed):
        imp = make(digits, strategy, seed=seed)
        return learning_curve(imp, Oracle(digits["yp"]), digits["Xt"], digits["yt"], budget=150, step=10)

    active = curve("uncertainty", 0)
    randoms = [curve("random", seed) for seed in (1, 2, 3)]
    assert active[-1][0] == 160 and all(c[-1][0] == 160 for c in randoms)
    assert active[-1][1] > np.mean([c[-1][1] for c in randoms])
    assert labels_to_reach(active, 0.95) is not None
    assert all(labels_to_reach(c, 0.95) is None for c in randoms)


def test_cold_start_without_labels_queries_at_random_until_two_classes(digits):
    imp = ActiveLearner(LogisticRegression(max_iter=300), X_pool=digits["Xp"], classes=list(range(10)))
    assert imp.model is None and imp.guess([0]) == []
    with pytest.raises(ScanflowError, match="no model yet"):
        imp.score(digits["Xt"], digits["yt"])
    ids = imp.query_ids(5)
    assert len(set(ids.tolist())) == 5
    imp.teach_ids([0], [int(digits["yp"][0])])
    assert imp.model is None
    other = int(np.flatnonzero(digits["yp"] != digits["yp"][0])[0])
    imp.teach_ids([other], [int(digits["yp"][other])])
    assert imp.model is not None and len(imp.guess([5])) == 1


def test_images_keep_their_shape_and_the_learner_sees_rows(digits):
    images = digits["Xp"].reshape(-1, 8, 8)
    imp = ActiveLearner(
        LogisticRegression(max_iter=300),
        X_labeled=digits["X0"].reshape(-1, 8, 8),
        y_labeled=digits["y0"],
        X_pool=images,
    )
    assert imp.samples([3]).shape == (1, 8, 8)
    ((label, confidence),) = imp.guess([3])
    assert label in range(10) and 0 < confidence <= 1


def test_extend_pool_and_forget(digits):
    imp = make(digits)
    new = imp.extend_pool(digits["Xt"][:5])
    assert new.tolist() == [600, 601, 602, 603, 604] and imp.pool_size == 605
    imp.teach_ids(new[:2], digits["yt"][:2])
    imp.forget([600])
    assert 600 in imp.pool_ids and imp.taught == {601: int(digits["yt"][1])}
    with pytest.raises(ValidationError, match="nothing to forget"):
        imp.forget([600])


def test_bad_input_is_refused_and_nothing_changes(digits):
    imp = make(digits)
    pool, labeled = imp.pool_ids, imp.n_labeled
    with pytest.raises(ValidationError, match="label 11 is not one of the classes"):
        imp.teach([0, 1], [3, 11])
    with pytest.raises(ValidationError, match="2 samples but 1 labels"):
        imp.teach([0, 1], [3])
    with pytest.raises(ValidationError, match="positions must be whole numbers in 0..599"):
        imp.teach([600], [3])
    with pytest.raises(ValidationError, match="not in the pool"):
        imp.teach_ids([9999], [3])
    with pytest.raises(ValidationError, match="has 10 features per sample but the learner uses 64"):
        imp.extend_pool(np.zeros((3, 10)))
    with pytest.raises(ValidationError, match="has 10 features"):
        imp.score(np.zeros((3, 10)), [1, 2, 3])
    with pytest.raises(ValidationError, match="k must be a whole number"):
        imp.query(0)
    assert (imp.pool_ids == pool).all() and imp.n_labeled == labeled


def test_bad_construction_has_clear_messages(digits):
    est = LogisticRegression()
    with pytest.raises(ValidationError, match="unknown query strategy 'fancy'"):
        ActiveLearner(est, "fancy", X_pool=digits["Xp"], classes=[0, 1])
    with pytest.raises(ValidationError, match="X_pool has 10 features"):
        ActiveLearner(est, X_labeled=digits["X0"], y_labeled=digits["y0"], X_pool=np.zeros((4, 10)))
    with pytest.raises(ValidationError, match="give classes"):
        ActiveLearner(est, X_pool=digits["Xp"])
    with pytest.raises(ValidationError, match="NaN"):
        ActiveLearner(est, X_pool=np.full((3, 4), np.nan), classes=[0, 1])
    with pytest.raises(ValidationError, match="numeric features"):
        ActiveLearner(est, X_pool=np.array([["a b"], ["c"]]), classes=[0, 1])


def test_empty_pool(digits):
    imp = make(digits)
    imp.teach(np.arange(600), digits["yp"])
    with pytest.raises(ValidationError, match="the pool is empty"):
        imp.query(1)
    empty = ActiveLearner(LogisticRegression(), X_pool=np.zeros((0, 64)), classes=[0, 1])
    with pytest.raises(ValidationError, match="the pool is empty"):
        empty.query_ids(3)


def test_background_retrain_reports_errors_instead_of_dying(digits):
    imp = make(digits)
    imp.estimator = LogisticRegression(max_iter=-1)  # sklearn refuses this at fit time
    imp.teach_ids([0], [int(digits["yp"][0])], retrain=False)
    outcome = []
    imp.retrain_in_background(outcome.append).join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], ValueError) and "max_iter" in str(outcome[0])
    imp.estimator = LogisticRegression(max_iter=300)
    imp.retrain_in_background(outcome.append).join(10)
    assert outcome[1] is None and imp.n_trained == 11
