"""Detectors on real data (scikit-learn's digits): the contract, decisions, bad input, persistence."""

import numpy as np
import pytest

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


def test_autoencoder_uses_all_its_evidence_and_corrects_for_it(autoencoder, split):
    res = autoencoder.score(corrupt(split[1][:50], "brightness", severity=1, seed=0))
    assert set(res.tests) == {"error", "code", "input"}
    assert res.p_value == pytest.approx(min(1.0, 3 * min(res.tests.values())))
    error_only = AutoencoderDetector(epochs=5, evidence=["error"]).fit(split[0])
    assert set(error_only.score(split[1][:50]).tests) == {"error"}


def test_autoencoder_is_reproducible_under_a_seed_and_respects_its_time_budget(split):
    a = AutoencoderDetector(epochs=3, seed=5).fit(split[0][:300])
    b = AutoencoderDetector(epochs=3, seed=5).fit(split[0][:300])
    np.testing.assert_allclose(a.score(split[1][:50]).scores, b.score(split[1][:50]).scores, rtol=1e-4, atol=1e-6)
    slow = AutoencoderDetector(epochs=100000, max_seconds=1.0).fit(split[0])
    assert slow.training_seconds_ < 4 and 1 <= slow.epochs_run_ < 100000


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
def test_bad_input_is_refused_with_one_clear_message(detectors, split, kind):
    det = detectors[kind]
    with pytest.raises(DetectorInputError, match=r"shape \(64,\), the reference had \(8, 8\)"):
        det.score(split[1][:10].reshape(10, 64))
    bad = split[1][:10].copy()
    bad[3, 2, 2] = np.nan
    with pytest.raises(DetectorInputError, match="NaN or infinite values \\(samples 3\\)"):
        det.score(bad)
    bad[3, 2, 2] = np.inf
    with pytest.raises(DetectorInputError, match="NaN or infinite"):
        det.score(bad)
    with pytest.raises(DetectorInputError, match="batch is empty"):
        det.score(split[1][:0])
    with pytest.raises(DetectorInputError, match="numeric"):
        det.score([["a"] * 8] * 8)
    with pytest.raises(NotFittedError, match="fitted before scoring"):
        type(det)().score(split[1][:10])


def test_tabular_data_and_argument_errors():
    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer().data
    order = np.random.default_rng(0).permutation(len(X))
    ref, pool = X[order[:400]], X[order[400:]]
    det = KSDetector().fit(ref)
    assert not det.score(pool[:60]).is_drift
    shifted = pool[:60].copy()
    shifted[:, :3] *= 1.3  # three of thirty features rescaled
    assert det.score(shifted).is_drift
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
