"""Detectors on real data (scikit-learn's digits): the contract, decisions, bad input, persistence."""

import numpy as np
import pytest
from calibration_support import most_false_alarms

from scanflow_nb.check import (
    AutoencoderDetector,
    Detector,
    DetectorInputError,
    KSDetector,
    MMDDetector,
    NotFittedError,
    make_detector,
)
from scanflow_nb.datasets import corrupt, load_digits
from scanflow_nb.errors import ScanflowError, ValidationError


@pytest.fixture(scope="module")
def split():
    X, _ = load_digits()
    order = np.random.default_rng(0).permutation(len(X))
    return X[order[:1000]], X[order[1000:]]


@pytest.fixture(scope="module")
def autoencoder(split):
    return AutoencoderDetector(epochs=25, seed=1).fit(split[0])


@pytest.fixture(scope="module")
def detectors(split, autoencoder):
    return {
        "ks": KSDetector().fit(split[0]),
        "mmd": MMDDetector(permutations=200).fit(split[0]),
        "autoencoder": autoencoder,
    }


def batches(pool, n, count, seed):
    rng = np.random.default_rng(seed)
    return [pool[rng.choice(len(pool), n, replace=False)] for _ in range(count)]


@pytest.mark.parametrize("kind", ["ks", "mmd", "autoencoder"])
def test_result_contract(detectors, split, kind):
    batch = np.concatenate([split[1][:90], corrupt(split[1][90:100], "impulse_noise", severity=5, seed=0)])
    res = detectors[kind].score(batch)
    assert isinstance(res.is_drift, bool) and 0 < res.p_value <= 1 and np.isfinite(res.score)
    assert res.scores.shape == (100,) and np.isfinite(res.scores).all()
    assert np.all(res.scores[res.indices] > res.threshold)
    assert np.all(np.diff(res.scores[res.indices]) <= 0), "indices must be most anomalous first"
    assert len(res.indices) == int((res.scores > res.threshold).sum())
    assert res.is_drift == (res.p_value < 0.05)
    # the ten corrupted samples are the most anomalous ones for every detector
    assert len(set(np.argsort(-res.scores)[:10]) & set(range(90, 100))) >= 7


@pytest.mark.parametrize(
    "kind, corruptions",
    [
        ("ks", ("rotate", "translate")),
        ("mmd", ("rotate", "translate")),
        ("autoencoder", ("shot_noise", "rotate", "fog", "translate")),
    ],
)
def test_clean_batches_pass_and_corrupted_batches_are_flagged(detectors, split, kind, corruptions):
    det = detectors[kind]
    clean = [det.score(b).is_drift for b in batches(split[1], 100, 20, seed=3)]
    assert sum(clean) <= 3, f"{kind}: {sum(clean)} of 20 clean batches flagged"
    for name in corruptions:
        drifted = [
            det.score(corrupt(b, name, severity=3, seed=i)).is_drift
            for i, b in enumerate(batches(split[1], 100, 5, seed=4))
        ]
        assert all(drifted), f"{kind} missed {name}"


@pytest.mark.parametrize("kind", ["ks", "mmd", "autoencoder"])
def test_the_false_positive_rate_holds_over_many_clean_batches(detectors, split, kind):
    # 200 batches of 30 held-out digits: at most 23 flagged (wrongly failing once in 10,000 runs);
    # a rate of 0.27 always fails, one of 0.13 seven times in 10
    flagged = sum(detectors[kind].score(b).is_drift for b in batches(split[1], 30, 200, seed=11))
    assert flagged <= most_false_alarms(200), f"{kind}: {flagged} of 200 clean batches flagged at alpha 0.05"


def test_autoencoder_uses_all_its_evidence_and_corrects_for_it(autoencoder, split):
    res = autoencoder.score(corrupt(split[1][:50], "brightness", severity=1, seed=0))
    assert set(res.tests) == {"error", "input"} and res.features == {}
    assert res.p_value == pytest.approx(min(1.0, 2 * min(res.tests.values())))
    every = AutoencoderDetector(epochs=5, evidence=["error", "input", "code", "features"]).fit(split[0])
    shifted = split[1][:50].copy()
    shifted[:, 3, 4] = 1.0  # one pixel lit in every image
    res = every.score(shifted)
    assert set(res.tests) == {"error", "input", "code", "features"}
    assert res.p_value == pytest.approx(min(1.0, 4 * min(res.tests.values())))
    assert res.drifted[0] == "x[3,4]" and len(res.features) == 64
    assert res.features["x[3,4]"] <= 4 * 5 / 1001, "four pieces of evidence: a quarter of alpha each"


def test_autoencoder_is_reproducible_under_a_seed_and_respects_its_time_budget(split):
    a = AutoencoderDetector(epochs=3, seed=5).fit(split[0][:300])
    b = AutoencoderDetector(epochs=3, seed=5).fit(split[0][:300])
    np.testing.assert_allclose(a.score(split[1][:50]).scores, b.score(split[1][:50]).scores, rtol=1e-4, atol=1e-6)
    slow = AutoencoderDetector(epochs=100000, max_seconds=1.0).fit(split[0])
    # it stops at the first epoch's end past the budget (how long that is depends on the machine's load)
    assert slow.training_seconds_ > 1.0 and 1 <= slow.epochs_run_ < 100000


def test_convolutional_autoencoder_on_larger_images(split):
    from scipy.ndimage import zoom

    big = lambda X: np.clip(zoom(X, (1, 2, 2), order=1), 0, 1)  # 16x16 images
    det = AutoencoderDetector(epochs=8, seed=0).fit(big(split[0][:600]))
    assert det._conv() and any("conv" in layer.name for layer in det.model_.layers)
    assert not det.score(big(split[1][:100])).is_drift
    assert det.score(big(corrupt(split[1][:100], "stripe", severity=3, seed=0))).is_drift


@pytest.mark.parametrize("kind", ["ks", "mmd", "autoencoder"])
def test_save_and_load_give_the_same_verdict(detectors, split, tmp_path, kind):
    batch = corrupt(split[1][:60], "motion_blur", severity=2, seed=0)
    before = detectors[kind].score(batch)
    loaded = Detector.load(detectors[kind].save(tmp_path / kind))
    assert type(loaded) is type(detectors[kind]) and loaded.params() == detectors[kind].params()
    after = loaded.score(batch)
    assert after.p_value == pytest.approx(before.p_value, rel=1e-6)
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-5)


def test_mmd_on_the_autoencoder_code(split, tmp_path):
    det = MMDDetector(on="code", permutations=200, autoencoder={"epochs": 10}).fit(split[0])
    assert det.reference_.shape[1] == 8
    assert det.score(corrupt(split[1][:100], "glass_blur", seed=0)).is_drift
    loaded = Detector.load(det.save(tmp_path / "mmd-code"))
    assert loaded.score(split[1][:100]).p_value == pytest.approx(det.score(split[1][:100]).p_value)


@pytest.mark.parametrize("kind", ["ks", "mmd", "autoencoder"])
def test_bad_values_are_findings_and_the_rest_is_still_tested(detectors, split, kind):
    det = detectors[kind]
    batch = corrupt(split[1][:40], "rotate", severity=4, seed=0).astype(np.float64)
    batch[3, 2, 2], batch[5, 1, 1], batch[7, 4, 4] = np.nan, np.inf, 40.0  # 40: pixels are in [0, 1]
    res = det.score(batch)
    found = {(f.kind, f.column): f.count for f in res.findings}
    assert found[("nan", "x[2,2]")] == 1 and found[("inf", "x[1,1]")] == 1
    assert found[("out_of_range", "x[4,4]")] == 1
    assert res.is_drift, "the usable part of a drifted batch is still tested"
    assert res.scores.shape == (40,)
    if det.complete_rows:  # the two incomplete samples get no score and are not anomalous
        assert found[("dropped_rows", None)] == 2 and np.isnan(res.scores[[3, 5]]).all()
        assert not {3, 5} & set(res.indices.tolist())
    else:
        assert np.isfinite(res.scores).all()
    mixed = split[1][:10].astype(object)
    mixed[2, 0, 0] = "n/a"
    found = {(f.kind, f.column): f.count for f in det.score(mixed).findings}
    assert found[("wrong_dtype", "x[0,0]")] == 1


@pytest.mark.parametrize("kind", ["ks", "mmd", "autoencoder"])
def test_a_batch_with_nothing_usable_is_refused_with_one_clear_message(detectors, split, kind):
    det = detectors[kind]
    with pytest.raises(DetectorInputError, match=r"shape \(64,\), the reference had \(8, 8\)"):
        det.score(split[1][:10].reshape(10, 64))
    with pytest.raises(DetectorInputError, match="nothing usable"):
        det.score(np.full((4, 8, 8), np.nan))
    with pytest.raises(DetectorInputError, match="batch is empty"):
        det.score(split[1][:0])
    with pytest.raises(DetectorInputError, match="nothing usable"):
        det.score(np.array([[["a"] * 8] * 8] * 3, dtype=object))
    with pytest.raises(DetectorInputError, match="must be numeric"):
        det.score(np.array([[["a"] * 8] * 8] * 3))
    with pytest.raises(NotFittedError, match="fitted before scoring"):
        type(det)().score(split[1][:10])
    bad = split[0][:30].copy()
    bad[3, 2, 2] = np.nan
    with pytest.raises(DetectorInputError, match=r"reference contains NaN or infinite values \(samples 3\)"):
        type(det)().fit(bad)


def test_tabular_data_and_argument_errors():
    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer().data
    order = np.random.default_rng(0).permutation(len(X))
    ref, pool = X[order[:400]], X[order[400:]]
    det = KSDetector().fit(ref)
    assert not det.score(pool[:60]).is_drift
    shifted = pool[:60].copy()
    shifted[:, :3] *= 1.3  # three of thirty features rescaled
    res = det.score(shifted)
    assert res.is_drift and res.drifted and set(res.drifted) <= {"x[0]", "x[1]", "x[2]"}
    assert res.features[res.drifted[0]] == res.p_value and len(res.features) == 30
    with pytest.raises(ValidationError, match="unknown detector 'forest'"):
        make_detector("forest")
    with pytest.raises(ValidationError, match="alpha"):
        KSDetector(alpha=1.5)
    with pytest.raises(ValidationError, match="evidence"):
        AutoencoderDetector(evidence=["vibes"])
    with pytest.raises(DetectorInputError, match="at least 20 samples"):
        AutoencoderDetector().fit(ref[:5])
    with pytest.raises(ScanflowError, match="no saved detector"):
        Detector.load("/nonexistent/folder")
    with pytest.raises(NotFittedError):
        KSDetector().save("/tmp/never")
