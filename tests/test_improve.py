"""The improver on real scikit-learn learners and modAL strategies, with digits as the data."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from scanflow_nb.errors import ScanflowError, ValidationError
from scanflow_nb.improve import STRATEGIES, ActiveLearner, NewClassWarning, Oracle, labels_to_reach, learning_curve


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


def make(d, strategy="auto", **kw):
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
    imp = make(digits, "uncertainty")
    proba = imp.predict_proba(digits["Xp"]).max(axis=1)
    assert imp.query_ids(1).tolist() == [int(np.argmin(proba))]
    ids = imp.query_ids(10)  # a batch: diverse, from the 100 least sure
    assert len(set(ids.tolist())) == 10 and set(ids.tolist()) <= set(np.argsort(proba)[:100].tolist())
    assert imp.queries[-1].used == "uncertainty" and imp.queries[-1].n_labeled == 10


@pytest.mark.parametrize("strategy", ["margin", "uncertainty", "entropy"])
def test_a_batch_is_never_k_copies_of_one_confusing_sample(digits, strategy):
    imp = make(digits, strategy)
    confusing = int(np.argmin(imp.predict_proba(digits["Xp"]).max(axis=1)))
    copies = imp.extend_pool(np.repeat(digits["Xp"][confusing : confusing + 1], 30, axis=0))
    ids = imp.query_ids(10)
    assert len(set(ids.tolist()) & {confusing, *copies.tolist()}) <= 1  # one of the copies at most, not ten


def test_typical_samples_cover_the_classes_from_a_cold_start(digits):
    imp = ActiveLearner(LogisticRegression(max_iter=300), "typical", X_pool=digits["Xp"], seed=1)
    ids = imp.query_ids(10)
    covered = len(set(digits["yp"][ids].tolist()))
    randoms = [len(set(np.random.default_rng(s).choice(digits["yp"], 10, replace=False))) for s in range(50)]
    assert covered >= 8 and covered > np.mean(randoms)  # 10 typical samples: most of the 10 digits
    assert imp.queries[-1].used == "typical" and imp.queries[-1].guesses == {}


def test_auto_starts_typical_switches_to_margin_and_says_why(digits):
    imp = make(digits, seed=2)  # "auto", the default; 10 start labels, one per class
    oracle = Oracle(digits["yp"])
    while imp.n_labeled < 60:
        ids = imp.query_ids(10)
        imp.teach_ids(ids, oracle(ids))
    used = [q.used for q in imp.queries]
    assert used[0] == "typical" and used[-1] == "margin" and "typical" not in used[used.index("margin") :]
    assert imp.queries[0].reason.startswith("waiting for 10 typical labels")
    switch = imp.queries[used.index("margin")]
    assert switch.strategy == "auto" and switch.reason.startswith(("the model already knew", "5 labels per class"))
    if switch.reason.startswith("the model"):  # judged on its guesses before it learned the labels
        assert sum([hit for q in imp.queries if q.used == "typical" for hit in q.hits][-10:]) >= 8
    warm = ActiveLearner(
        LogisticRegression(max_iter=300),
        X_labeled=digits["Xp"][:100],
        y_labeled=digits["yp"][:100],
        X_pool=digits["Xt"],
    )
    warm.query_ids(5)  # about 10 labels per class, from the same digits: no cold start to get through
    assert warm.queries[-1].used == "margin" and "labels per class among the candidates" in warm.queries[-1].reason
    drifted = ActiveLearner(
        LogisticRegression(max_iter=300), X_labeled=digits["Xp"], y_labeled=digits["yp"], X_pool=1 - digits["Xt"]
    )
    drifted.query_ids(5)  # 600 labels, but none among these inverted digits: a cold start again
    assert drifted.queries[-1].used == "typical"


def test_new_classes_join_when_classes_are_not_given():
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(3)
    order = rng.permutation(len(y))
    start = order[:20][y[order[:20]] != 4]  # twenty random digits, no 4 among them
    pool = order[20:400]
    imp = ActiveLearner(RandomForestClassifier(random_state=0), X_labeled=X[start], y_labeled=y[start], X_pool=X[pool])
    assert 4 not in imp.classes and not imp.fixed_classes
    fours = np.flatnonzero(y[pool] == 4)[:3]
    with pytest.warns(NewClassWarning, match="new class 4") as record:
        imp.teach_ids(fours, [4, 4, 4])
    assert len(record) == 1 and imp.classes[-1] == 4 and 4 in imp.model.classes_
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: more labels of 4 are quiet
        imp.teach_ids(np.flatnonzero(y[pool] == 4)[3:5], [4, 4])
    assert imp.model.predict(X[pool][np.flatnonzero(y[pool] == 4)[5:15]]).tolist().count(4) >= 5


def test_fixed_classes_refuse_others_and_kinds_do_not_mix(digits):
    fixed = make(digits, classes=list(range(10)))
    with pytest.raises(ValidationError, match=r"label 11 is not one of the classes .*fixed by classes="):
        fixed.teach_ids([0], [11])
    with pytest.raises(ValidationError, match="label 11 is not one of the classes"):
        fixed.add_class(11)
    open_ = make(digits)
    with pytest.raises(ValidationError, match="label '3' is text but the classes .* are number"):
        open_.teach_ids([0], ["3"])
    with pytest.raises(ValidationError, match="is not a class"):
        open_.teach_ids([0], [None])
    assert open_.add_class(10) and not open_.add_class(10) and open_.classes[-1] == 10
    assert open_.pool_size == fixed.pool_size == 600 and open_.taught == {} == fixed.taught


def test_embeddings_pca_function_encoder_and_the_models_own(digits):
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline

    class Encoder:  # like the checker's AutoencoderDetector: encode(images) -> codes
        def encode(self, images):
            assert images.shape[1:] == (8, 8)
            return images.reshape(len(images), -1)[:, ::4]

    images = {"X_labeled": digits["X0"].reshape(-1, 8, 8), "y_labeled": digits["y0"]}
    images["X_pool"] = digits["Xp"].reshape(-1, 8, 8)
    for embedding in ("pca", lambda images: images[:, :2, :], Encoder()):
        imp = ActiveLearner(LogisticRegression(max_iter=300), "typical", embedding=embedding, **images)
        assert len(set(imp.query_ids(10).tolist())) == 10
    model = make_pipeline(PCA(8), LogisticRegression(max_iter=300))
    imp = ActiveLearner(model, "margin", embedding="model", **images)
    assert len(set(imp.query_ids(10).tolist())) == 10
    with pytest.raises(ValidationError, match="no features of its own"):
        ActiveLearner(LogisticRegression(), "typical", embedding="model", **images).query_ids(3)
    with pytest.raises(ValidationError, match="embedding must be"):
        ActiveLearner(LogisticRegression(), embedding="umap", **images)
    with pytest.raises(ValidationError, match="embedding must be"):
        imp.embedding = 3
    imp.strategy, imp.embedding = "typical", lambda X: X[:, 0, :2]  # a new embedding is used at once
    imp.query_ids(4)
    assert imp._embedded[1].shape[1] == 2
    with pytest.raises(ValidationError, match="one finite feature row per sample"):
        ActiveLearner(LogisticRegression(), "typical", embedding=lambda X: X[:3], **images).query_ids(3)


def test_active_learning_beats_random_on_digits(digits):
    def curve(strategy, seed):
        imp = make(digits, strategy, seed=seed)
        return learning_curve(imp, Oracle(digits["yp"]), digits["Xt"], digits["yt"], budget=150, step=10)

    active = curve("auto", 0)
    randoms = [curve("random", seed) for seed in (1, 2, 3)]
    assert active[-1][0] == 160 and all(c[-1][0] == 160 for c in randoms)
    assert active[-1][1] > np.mean([c[-1][1] for c in randoms])
    assert labels_to_reach(active, 0.95) is not None
    assert all(labels_to_reach(c, 0.95) is None for c in randoms)


def test_cold_start_without_labels_has_no_model_until_two_classes(digits):
    imp = ActiveLearner(LogisticRegression(max_iter=300), X_pool=digits["Xp"])
    assert imp.model is None and imp.guess([0]) == [] and imp.classes == []
    with pytest.raises(ScanflowError, match="no model yet"):
        imp.score(digits["Xt"], digits["yt"])
    ids = imp.query_ids(5)
    assert len(set(ids.tolist())) == 5 and imp.queries[-1].used == "typical"
    with pytest.warns(NewClassWarning, match="new class"):
        imp.teach_ids([0], [int(digits["yp"][0])])
    assert imp.model is None
    other = int(np.flatnonzero(digits["yp"] != digits["yp"][0])[0])
    with pytest.warns(NewClassWarning, match="new class"):
        imp.teach_ids([other], [int(digits["yp"][other])])
    assert imp.model is not None and len(imp.guess([5])) == 1 and len(imp.classes) == 2


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
    with pytest.raises(ValidationError, match="label 'x' is text"):
        imp.teach([0, 1], [3, "x"])
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
    imp = ActiveLearner(est, X_pool=digits["Xp"])
    with pytest.raises(ValidationError, match="unknown query strategy 'fancy'"):
        imp.strategy = "fancy"
    assert imp.strategy == "auto"
    with pytest.raises(ValidationError, match="X_pool has 10 features"):
        ActiveLearner(est, X_labeled=digits["X0"], y_labeled=digits["y0"], X_pool=np.zeros((4, 10)))
    with pytest.raises(ValidationError, match="at least two distinct values"):
        ActiveLearner(est, X_pool=digits["Xp"], classes=[1])
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
