"""The tabular detector on a real table (breast cancer measurements plus two categorical columns)."""

import numpy as np
import pandas as pd
import pytest

from scanflow_nb.check import Detector, DetectorInputError, KSDetector, NotFittedError, TabularDetector
from scanflow_nb.check.stats import column_tests
from scanflow_nb.datasets import load_tumours, shift_table
from scanflow_nb.errors import ValidationError


@pytest.fixture(scope="module")
def table():
    frame, _ = load_tumours()
    order = np.random.default_rng(0).permutation(len(frame))
    ref, pool = frame.iloc[order[:400]].reset_index(drop=True), frame.iloc[order[400:]].reset_index(drop=True)
    return TabularDetector().fit(ref), ref, pool


def batches(pool, n, count, seed):
    rng = np.random.default_rng(seed)
    return [pool.iloc[rng.choice(len(pool), n, replace=False)] for _ in range(count)]


def test_the_reference_schema_and_a_clean_batch(table):
    det, ref, pool = table
    assert det.schema_.categorical == ["size_band", "scanner"] and len(det.schema_.numeric) == 30
    assert det.schema_.categories["scanner"] == ["A", "B", "C"]
    res = det.score(pool.iloc[:50])
    assert not res.is_drift and res.drifted == [] and res.findings == []
    assert set(res.features) == set(ref.columns) and all(0 < p <= 1 for p in res.features.values())
    assert res.p_value == min(res.features.values())
    assert res.scores.shape == (50,) and np.isfinite(res.scores).all()
    assert np.all(res.scores[res.indices] > res.threshold)


@pytest.mark.parametrize("kind", ["new_category", "category_mix", "location", "scale"])
def test_each_shift_is_caught_and_the_shifted_column_named_first(table, kind):
    det, ref, pool = table
    columns = ["mean texture", "worst smoothness", "area error"]
    named = 0
    for i, batch in enumerate(batches(pool, 50, 6, seed=10)):
        shifted, truth = shift_table(batch, kind, ref, np.random.default_rng(i), columns)
        res = det.score(shifted)
        assert res.is_drift, f"{kind}: batch {i} missed (p = {res.p_value:.3g})"
        named += res.drifted[0] in truth
    assert named >= 5, f"{kind}: the shifted column came first in only {named} of 6 batches"


def test_clean_batches_keep_the_false_positive_rate(table):
    det, _, pool = table
    flagged = [det.score(b).is_drift for b in batches(pool, 50, 30, seed=3)]
    assert sum(flagged) <= 4, f"{sum(flagged)} of 30 clean batches flagged at alpha 0.05"


def test_a_messy_batch_is_reported_and_what_is_usable_still_tested(table):
    det, ref, pool = table
    batch, _ = shift_table(pool.iloc[:60], "location", ref, np.random.default_rng(0), ["mean texture"], amount=1.5)
    batch = batch.drop(columns=["worst area"]).assign(comment="checked")
    batch.loc[batch.index[:7], "mean radius"] = np.nan
    batch.loc[batch.index[7], "mean perimeter"] = np.inf
    batch.loc[batch.index[8], "mean area"] = 1e7
    batch["mean smoothness"] = batch["mean smoothness"].astype(object)
    batch.loc[batch.index[9], "mean smoothness"] = "n/a"
    batch.loc[batch.index[:3], "scanner"] = ["D", "E", None]
    res = det.score(batch)
    found = {(f.kind, f.column): f.count for f in res.findings}
    assert found == {
        ("missing_column", "worst area"): 60,
        ("extra_column", "comment"): 60,
        ("wrong_dtype", "mean smoothness"): 60,
        ("nan", "mean radius"): 7,
        ("inf", "mean perimeter"): 1,
        ("out_of_range", "mean area"): 1,
        ("nan", "scanner"): 1,
        ("unseen_category", "scanner"): 2,
    }
    message = next(f.message for f in res.findings if f.kind == "unseen_category")
    assert "'D', 'E'" in message and "1 values are not numbers" in str(res.findings[2])
    assert res.is_drift and res.drifted[0] == "mean texture"
    assert "worst area" not in res.features and "comment" not in res.features
    assert np.isfinite(res.scores).all() and 8 in res.indices[:3], "the 1e7 row is among the most anomalous"


def test_nothing_usable_and_bad_arguments(table):
    det, ref, _ = table
    with pytest.raises(DetectorInputError, match="none of the reference's columns"):
        det.score(pd.DataFrame({"other": [1, 2, 3]}))
    with pytest.raises(DetectorInputError, match="batch is empty"):
        det.score(ref.iloc[:0])
    with pytest.raises(DetectorInputError, match="every value is missing"):
        det.score(pd.DataFrame({"mean radius": [np.nan] * 4, "scanner": [None] * 4}))
    with pytest.raises(NotFittedError):
        TabularDetector().score(ref)
    with pytest.raises(ValidationError, match="no column 'nope'"):
        TabularDetector(categorical=["nope"]).fit(ref)
    with pytest.raises(ValidationError, match="range of 'mean area'"):
        TabularDetector(ranges={"mean area": (5, 1)})
    with pytest.raises(DetectorInputError, match="'empty' has no values in the reference"):
        TabularDetector().fit(ref.assign(empty=np.nan))
    with pytest.raises(DetectorInputError, match="'size_band' is categorical: use TabularDetector"):
        KSDetector().fit(ref)


def test_save_load_arrays_declared_ranges_and_forced_categories(table, tmp_path):
    det, ref, pool = table
    batch, _ = shift_table(pool.iloc[:50], "new_category", ref, np.random.default_rng(0))
    loaded = Detector.load(det.save(tmp_path / "tabular"))
    assert loaded.schema_.categories == det.schema_.categories
    before, after = det.score(batch), loaded.score(batch)
    assert after.p_value == before.p_value and after.drifted == before.drifted == ["scanner"]

    numbers = ref.select_dtypes("number").to_numpy()
    plain = TabularDetector(ranges={"1": (0, 30)}, categorical=["0"]).fit(numbers[:, :3].round(0))
    assert plain.schema_.categorical == ["0"] and plain.schema_.numeric == ["1", "2"]
    found = {(f.kind, f.column) for f in plain.score(numbers[:20, :3].round(0) + [0, 20, 0]).findings}
    assert ("out_of_range", "1") in found, "a declared range is checked"

    ks = KSDetector().fit(ref.select_dtypes("number"))
    shifted, _ = shift_table(pool.iloc[:60], "location", ref, np.random.default_rng(0), ["mean texture"], amount=1.5)
    assert ks.score(shifted.select_dtypes("number")).drifted[0] == "mean texture", "DataFrames keep their names"


def test_the_smallest_p_value_does_not_grow_with_the_number_of_columns():
    rng = np.random.default_rng(0)
    ref, batch = rng.normal(size=(300, 60)), rng.normal(size=(40, 60))
    batch[:, 7] += 3.0
    found = column_tests(ref, batch, permutations=999, seed=0)
    assert found.adjusted[7] == pytest.approx(1 / 1000) and found.adjusted.argmin() == 7
    assert (np.delete(found.adjusted, 7) > 0.05).all()
