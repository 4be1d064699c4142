"""Two-sample tests the detectors share (scipy and numpy do the arithmetic).

The column tests (`column_tests`) compare a batch with the reference column by column and give
family-wise p-values: every column's statistic is computed on the observed split and on random
re-splits of the pooled rows (the same re-split for all columns, so their dependence is kept), each
column's statistic becomes a permutation p-value, and a column's adjusted p-value is the share of
re-splits whose smallest p-value over all columns is at least as small (Westfall and Young's
single-step min-p). The smallest adjusted p-value is a valid p-value for the whole batch; less
conservative than Bonferroni when columns are correlated, exact whatever the column types.

Numeric columns get a location-and-scale rank test (Lepage's idea: a Wilcoxon rank-sum score and
Mood's squared-rank score, combined through their exact permutation covariance); categorical
columns get the two-sample Pearson chi-squared statistic on category counts, unseen categories
included as categories of their own. Missing cells take no part in their column's test.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


def median_bandwidth(X: np.ndarray, rng: np.random.Generator, sample: int = 500) -> float:
    """The median pairwise Euclidean distance within (a sample of) `X`: the usual Gaussian kernel width."""
    from scipy.spatial.distance import pdist

    rows = X if len(X) <= sample else X[rng.choice(len(X), sample, replace=False)]
    dist = pdist(rows)
    positive = dist[dist > 0]
    return float(np.median(positive)) if len(positive) else 1.0


def mmd_permutation_test(
    reference: np.ndarray, batch: np.ndarray, bandwidth: float, permutations: int, rng: np.random.Generator
) -> tuple[float, float, np.ndarray]:
    """Gaussian-kernel MMD² between two samples and its permutation p-value.

    Returns (mmd2, p_value, similarity) where `similarity` is each batch sample's mean kernel
    value against the reference (a kernel density: small means unlike the reference).
    """
    from scipy.spatial.distance import cdist

    pooled = np.concatenate([reference, batch])
    m, n = len(reference), len(batch)
    kernel = np.exp(-cdist(pooled, pooled, "sqeuclidean") / (2.0 * bandwidth**2))
    weights = np.concatenate([np.full(m, -1.0 / m), np.full(n, 1.0 / n)])
    shuffled = np.stack([rng.permutation(weights) for _ in range(permutations)], axis=1)
    all_weights = np.concatenate([weights[:, None], shuffled], axis=1)
    stats = np.einsum("ip,ip->p", all_weights, kernel @ all_weights)
    observed = stats[0]
    p_value = (1.0 + np.count_nonzero(stats[1:] >= observed - 1e-12)) / (permutations + 1.0)
    return float(observed), float(p_value), kernel[m:, :m].mean(axis=1)


def ks_per_feature(reference: np.ndarray, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value of every column (constant columns: 0, 1).

    Missing (NaN) cells are left out of their column; a column with no value in the batch gets 0, 1.
    """
    from scipy.stats import ks_2samp

    if np.isnan(batch).any():
        stat, p = np.zeros(batch.shape[1]), np.ones(batch.shape[1])
        for j in range(batch.shape[1]):
            b, r = batch[:, j], reference[:, j]
            b = b[~np.isnan(b)]
            if len(b):
                stat[j], p[j] = ks_2samp(r[~np.isnan(r)], b)
        return stat, p
    stat, p = ks_2samp(reference, batch, axis=0)
    return np.nan_to_num(np.atleast_1d(stat), nan=0.0), np.nan_to_num(np.atleast_1d(p), nan=1.0)


def bonferroni(p_values) -> float:
    """The Bonferroni-corrected minimum of several p-values: a valid p-value whatever their dependence."""
    p = np.asarray(list(p_values), dtype=np.float64)
    return float(min(1.0, p.min() * len(p))) if len(p) else 1.0


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    steps = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted


# -- column tests with family-wise p-values ------------------------------------------------------------
@dataclass
class ColumnTests:
    """The outcome of `column_tests`: one entry per column, in the order given."""

    adjusted: np.ndarray  # family-wise (min-p) adjusted p-values; their minimum is the batch p-value
    marginal: np.ndarray  # each column's own permutation p-value
    asymptotic: np.ndarray  # each column's chi-squared approximation: finer ordering where the others tie

    @property
    def p_value(self) -> float:
        return float(self.adjusted.min()) if len(self.adjusted) else 1.0


@lru_cache(maxsize=8)
def draw_splits(N: int, n: int, permutations: int, seed: int) -> np.ndarray:
    """Row indices of the batch in the observed split (row 0: the last n rows) and in random re-splits.

    Deterministic under `seed`, and kept for the next batch of the same size (read-only).
    """
    observed = np.arange(N - n, N)[None, :]
    drawn = np.argpartition(np.random.default_rng([seed, N, n]).random((permutations, N)), n - 1, axis=1)[:, :n]
    splits = np.concatenate([observed, drawn])
    splits.flags.writeable = False
    return splits


def _gather_sums(scores: np.ndarray, splits: np.ndarray, chunk_cells: int = 4_000_000) -> np.ndarray:
    """Column sums of `scores` (N, k) over each split's rows: (splits, k), in memory-bounded chunks."""
    out = np.empty((len(splits), scores.shape[1]))
    step = max(1, chunk_cells // max(1, splits.shape[1] * scores.shape[1]))
    for start in range(0, len(splits), step):
        out[start : start + step] = scores[splits[start : start + step]].sum(axis=1)
    return out


def _location_scale(X: np.ndarray, splits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lepage-type statistics of numeric columns (N, d) for every split, and their chi2(2) p-values (observed)."""
    from scipy.stats import chi2, rankdata

    N, n = len(X), splits.shape[1]
    ranks = rankdata(X, axis=0, nan_policy="omit")
    finite = ~np.isnan(ranks)
    counts = finite.sum(axis=0)
    location = np.where(finite, ranks - (counts + 1) / 2.0, 0.0)
    squared = location**2
    spread = np.where(finite, squared - squared.sum(axis=0) / np.maximum(counts, 1), 0.0)
    factor = n * (N - n) / (N * (N - 1.0))
    vaa, vbb = factor * (location**2).sum(0), factor * (spread**2).sum(0)
    vab = factor * (location * spread).sum(0)
    sums = _gather_sums(np.concatenate([location, spread], axis=1), splits)
    ta, tb = sums[:, : X.shape[1]], sums[:, X.shape[1] :]
    det = vaa * vbb - vab**2
    joint = det > 1e-9 * np.maximum(vaa * vbb, 1e-300)  # two values only: the spread score adds nothing
    with np.errstate(divide="ignore", invalid="ignore"):
        both = (ta**2 * vbb - 2 * ta * tb * vab + tb**2 * vaa) / det
        alone = ta**2 / vaa
    stats = np.where(joint, both, np.where(vaa > 0, alone, 0.0))
    stats = np.nan_to_num(stats, nan=0.0, posinf=0.0)
    return stats, chi2.sf(stats, np.where(joint, 2, 1))


def _categories(codes: np.ndarray, splits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample Pearson chi-squared of categorical columns (N, d; integer codes, -1 missing) for every split."""
    from scipy.stats import chi2

    N, d = codes.shape
    stats = np.zeros((len(splits), d))
    asym = np.ones((len(splits), d))
    for j in range(d):
        col = codes[:, j]
        present = col >= 0
        levels = int(col.max()) + 1 if present.any() else 0
        if levels < 2:
            continue
        onehot = np.zeros((N, levels + 1))
        onehot[np.arange(N), np.where(present, col, levels)] = 1.0  # last column: missing
        counts = _gather_sums(onehot, splits)
        observed, n_b = counts[:, :levels], counts[:, :levels].sum(axis=1, keepdims=True)
        totals = onehot[:, :levels].sum(axis=0)
        used = totals > 0
        T = totals.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            expected = n_b * totals / T
            cells = (observed - expected)[:, used] ** 2 * T**2 / (totals[used] * n_b * (T - n_b))
        stats[:, j] = np.nan_to_num(cells.sum(axis=1), nan=0.0, posinf=0.0)
        asym[:, j] = chi2.sf(stats[:, j], max(int(used.sum()) - 1, 1))
    return stats, asym


def column_tests(
    ref_numeric: np.ndarray,
    batch_numeric: np.ndarray,
    ref_codes: np.ndarray | None = None,
    batch_codes: np.ndarray | None = None,
    permutations: int = 1000,
    seed: int = 0,
) -> ColumnTests:
    """Family-wise p-values of numeric columns (NaN: missing) then categorical ones (integer codes, -1: missing)."""
    m, n = len(ref_numeric), len(batch_numeric)
    splits = draw_splits(m + n, n, permutations, seed)
    parts = []
    if ref_numeric.shape[1]:
        parts.append(_location_scale(np.concatenate([ref_numeric, batch_numeric]).astype(np.float64), splits))
    if ref_codes is not None and ref_codes.shape[1]:
        parts.append(_categories(np.concatenate([ref_codes, batch_codes]), splits))
    if not parts:
        return ColumnTests(np.ones(0), np.ones(0), np.ones(0))
    stats = np.concatenate([s for s, _ in parts], axis=1)
    asymptotic = np.concatenate([a for _, a in parts], axis=1)
    D = len(stats)
    # each split's permutation p-value per column: the share of splits with a statistic at least as large
    tolerance = 1e-9 * np.abs(stats).max(axis=0, initial=0.0) + 1e-12
    ordered = np.sort(stats, axis=0)
    p = np.empty_like(stats)
    for j in range(stats.shape[1]):
        p[:, j] = (D - np.searchsorted(ordered[:, j], stats[:, j] - tolerance[j], side="left")) / D
    # ties (many columns' extremes all sit at 1/D) are broken by the chi-squared approximation, so the
    # smallest adjusted p-value is 1/D however many columns there are, not (columns + 1)/D
    key = p + asymptotic / (2.0 * D)
    smallest = np.sort(key.min(axis=1))
    adjusted = np.searchsorted(smallest, key[0] * (1 + 1e-12), side="right") / D
    return ColumnTests(np.minimum(adjusted, 1.0), p[0], asymptotic[0])


# -- whitened distance ---------------------------------------------------------------------------------
def shrunk_precision(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and inverse of the Ledoit-Wolf shrunk covariance of the rows of `X` (features with no spread allowed)."""
    n, p = X.shape
    mean = X.mean(axis=0)
    Xc = X - mean
    cov = Xc.T @ Xc / n
    target = np.trace(cov) / p
    # Ledoit and Wolf (2004): the shrinkage that minimises the expected Frobenius loss
    squares = Xc**2
    spread = (squares.T @ squares).sum() / n - (cov**2).sum()
    distance = ((cov - target * np.eye(p)) ** 2).sum()
    shrinkage = 0.0 if distance <= 0 else float(np.clip(spread / n / distance, 0.0, 1.0))
    shrunk = (1 - shrinkage) * cov + shrinkage * target * np.eye(p)
    values, vectors = np.linalg.eigh(shrunk)
    values = np.maximum(values, 1e-6 * max(target, 1e-12))
    return mean, (vectors / values) @ vectors.T


def whitened_distance(X: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of every row of `X`."""
    d = X - mean
    return np.einsum("ij,jk,ik->i", d, precision, d)


def cross_fitted_distances(X: np.ndarray, folds: int, rng: np.random.Generator):
    """Every row's whitened distance under a covariance fitted without it (`folds`-fold cross-fitting).

    Returns the distances and each fold's (mean, precision): a new row scored under one fold's
    covariance (`fold_distances`) is exchangeable with that fold's reference rows, so comparing
    new rows with these distances is an exact test on clean data.
    """
    out = np.empty(len(X))
    means, precisions = [], []
    for part in np.array_split(rng.permutation(len(X)), folds):
        mean, precision = shrunk_precision(np.delete(X, part, axis=0))
        out[part] = whitened_distance(X[part], mean, precision)
        means.append(mean)
        precisions.append(precision)
    return out, np.stack(means), np.stack(precisions)


def fold_distances(X: np.ndarray, means: np.ndarray, precisions: np.ndarray) -> np.ndarray:
    """Whitened distances of new rows, row i under fold i mod folds (see `cross_fitted_distances`)."""
    out = np.empty(len(X))
    for k in range(len(means)):
        out[k :: len(means)] = whitened_distance(X[k :: len(means)], means[k], precisions[k])
    return out
