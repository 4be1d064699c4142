"""Data for checking drift detectors: image loaders and MNIST-C style corruptions.

`load_digits()` works offline (scikit-learn ships the data); `load_mnist()` and
`load_fashion_mnist()` download through Keras and raise a ScanflowError when offline.
`corrupt(images, name, severity, seed)` applies one of the 15 corruptions in `CORRUPTIONS`.
`load_tumours()` is a table with numeric and categorical columns (offline) and
`shift_table(batch, kind, reference, rng)` applies one of `TABLE_SHIFTS` to it.
"""

from .corruptions import CORRUPTIONS, corrupt
from .loaders import load_digits, load_fashion_mnist, load_mnist
from .tables import TABLE_SHIFTS, load_tumours, shift_table

__all__ = [
    "CORRUPTIONS",
    "TABLE_SHIFTS",
    "corrupt",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "load_tumours",
    "shift_table",
]
