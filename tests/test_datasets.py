"""The data used to check detectors: the offline digits, the Keras loaders, the 15 corruptions."""

import numpy as np
import pytest

from scanflow_nb.datasets import CORRUPTIONS, corrupt, load_digits, load_mnist
from scanflow_nb.errors import ScanflowError


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_digits_are_square_grey_images_in_unit_range(digits):
    X, y = digits
    assert X.shape == (1797, 8, 8) and X.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    assert sorted(set(y.tolist())) == list(range(10)) and len(y) == len(X)


def test_the_fifteen_mnist_c_corruptions_are_there():
    assert len(CORRUPTIONS) == 15 == len(set(CORRUPTIONS))
    assert {"shot_noise", "glass_blur", "canny_edges", "zigzag", "dotted_line", "fog"} <= set(CORRUPTIONS)


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize("side", [8, 28])
def test_each_corruption_changes_images_keeps_shape_and_range_and_is_seeded(digits, name, side):
    from scipy.ndimage import zoom

    X = digits[0][:40]
    if side != 8:
        X = np.clip(zoom(X, (1, side / 8, side / 8), order=1), 0, 1).astype(np.float32)
    before = X.copy()
    out = corrupt(X, name, severity=3, seed=7)
    assert out.shape == X.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.array_equal(X, before), "the input must not be modified"
    changed = np.abs(out - X).reshape(len(X), -1).max(axis=1) > 1e-3
    assert changed.mean() >= 0.9, f"{name} left {int((~changed).sum())} of {len(X)} images unchanged"
    assert np.array_equal(out, corrupt(X, name, severity=3, seed=7))


def test_random_corruptions_depend_on_the_seed(digits):
    X = digits[0][:20]
    for name in ("shot_noise", "impulse_noise", "rotate", "zigzag", "spatter", "translate"):
        assert not np.array_equal(corrupt(X, name, seed=1), corrupt(X, name, seed=2)), name


@pytest.mark.parametrize("name", ["shot_noise", "brightness", "rotate", "scale", "impulse_noise"])
def test_higher_severity_changes_more(digits, name):
    X = digits[0][:200]
    change = [np.abs(corrupt(X, name, severity=s, seed=0) - X).mean() for s in (1, 3, 5)]
    assert change[0] < change[1] < change[2], change


def test_single_image_and_bad_input(digits):
    img = digits[0][0]
    assert corrupt(img, "fog", seed=0).shape == (8, 8)
    with pytest.raises(ScanflowError, match="unknown corruption 'blur'.*shot_noise"):
        corrupt(img, "blur")
    with pytest.raises(ScanflowError, match="severity"):
        corrupt(img, "fog", severity=6)
    with pytest.raises(ScanflowError, match="square"):
        corrupt(np.zeros((3, 8, 9)), "fog")
    with pytest.raises(ScanflowError, match="NaN"):
        corrupt(np.full((2, 8, 8), np.nan), "fog")


def test_mnist_loads_through_keras_or_says_it_cannot(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached copy: a real download attempt
    try:
        X, y = load_mnist("test")
    except ScanflowError as exc:
        assert "could not load mnist through Keras" in str(exc)
    else:
        assert X.shape == (10000, 28, 28) and X.min() >= 0 and X.max() <= 1 and len(y) == 10000
    with pytest.raises(ScanflowError, match="split"):
        load_mnist("valid")
