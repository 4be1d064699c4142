"""Loaders returning square grey images scaled to [0, 1] (float32, shape (n, side, side)) and labels."""

from __future__ import annotations

import numpy as np

from ..errors import ScanflowError


class DatasetUnavailable(ScanflowError):
    """A data set could not be loaded (e.g. it must be downloaded and the machine is offline)."""


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits as (n, 8, 8) images in [0, 1] and their labels.

    The data ships with scikit-learn, so this works offline.
    """
    from sklearn.datasets import load_digits as sk_digits

    data = sk_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)


def _keras(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in ("train", "test"):
        raise ScanflowError(f"split must be 'train' or 'test', got {split!r}")
    import keras

    module = getattr(keras.datasets, name)
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as exc:  # network errors come in many types (URLError, OSError, ...)
        raise DatasetUnavailable(
            f"could not load {name} through Keras (it is downloaded on first use; offline?): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    return (images / 255.0).astype(np.float32), labels.astype(np.int64)


def load_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST (n, 28, 28) in [0, 1] and labels, downloaded by Keras (needs the network once)."""
    return _keras("mnist", split)


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (n, 28, 28) in [0, 1] and labels, downloaded by Keras (needs the network once)."""
    return _keras("fashion_mnist", split)
