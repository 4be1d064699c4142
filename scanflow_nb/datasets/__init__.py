"""Data for checking drift detectors: image loaders and MNIST-C style corruptions.

`load_digits()` works offline (scikit-learn ships the data); `load_mnist()` and
`load_fashion_mnist()` download through Keras and raise a ScanflowError when offline.
`corrupt(images, name, severity, seed)` applies one of the 15 corruptions in `CORRUPTIONS`.
"""

from .corruptions import CORRUPTIONS, corrupt
from .loaders import load_digits, load_fashion_mnist, load_mnist

__all__ = ["CORRUPTIONS", "corrupt", "load_digits", "load_fashion_mnist", "load_mnist"]
