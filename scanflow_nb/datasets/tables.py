"""A table with numeric and categorical columns, and the shifts production tables suffer, for drift checks.

`load_tumours()` is scikit-learn's breast cancer data (569 rows, 30 numeric measurements; it
ships with scikit-learn, so this works offline) with two categorical columns: `size_band`
(small / medium / large, the terciles of `mean area`: derived from the data) and `scanner`
(A / B / C in proportions 0.5 / 0.3 / 0.2, drawn at random under the seed: synthetic, standing
for the device a sample came from). The rows come in scikit-learn's order, which is not random
(malignant cases first): shuffle before splitting into reference and batches.
`shift_table` applies one of `TABLE_SHIFTS` to a batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ScanflowError

SCANNERS = ("A", "B", "C")
SCANNER_SHARES = (0.5, 0.3, 0.2)
TABLE_SHIFTS = ("new_category", "category_mix", "location", "scale")


def load_tumours(seed: int = 0):
    """The breast cancer table (pandas DataFrame, 569 x 32) and its diagnosis labels (0 malignant, 1 benign)."""
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.data.copy()
    frame["size_band"] = pd.qcut(frame["mean area"], 3, labels=["small", "medium", "large"]).astype(str)
    frame["scanner"] = np.random.default_rng(seed).choice(SCANNERS, len(frame), p=SCANNER_SHARES)
    return frame, data.target.to_numpy()


def shift_table(
    batch, kind: str, reference, rng: np.random.Generator, columns: Sequence[str] = (), amount: float | None = None
):
    """A shifted copy of `batch` and the columns the shift changed.

    new_category: a tenth of the rows (at least one) get scanner "D", which the reference never had.
    category_mix: the scanners are drawn again with the shares reversed (0.2 / 0.3 / 0.5).
    location:     `columns` move by `amount` (default 0.5) standard deviations of the reference.
    scale:        `columns` spread `amount` (default 1.5) times as wide around the reference mean.
    """
    out = batch.copy()
    if kind == "new_category":
        rows = rng.choice(len(out), max(1, len(out) // 10), replace=False)
        out.iloc[rows, out.columns.get_loc("scanner")] = "D"
        return out, ["scanner"]
    if kind == "category_mix":
        out["scanner"] = rng.choice(SCANNERS, len(out), p=SCANNER_SHARES[::-1])
        return out, ["scanner"]
    if kind not in TABLE_SHIFTS:
        raise ScanflowError(f"unknown table shift {kind!r}; choose one of: {', '.join(TABLE_SHIFTS)}")
    if not columns:
        raise ScanflowError(f"the {kind} shift needs the numeric columns to shift")
    columns = list(columns)
    mean, std = reference[columns].mean(), reference[columns].std()
    if kind == "location":
        out[columns] = out[columns] + (0.5 if amount is None else amount) * std
    else:
        out[columns] = mean + (1.5 if amount is None else amount) * (out[columns] - mean)
    return out, columns
