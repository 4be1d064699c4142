"""Two-sample tests the detectors share (scipy and numpy do the arithmetic)."""

from __future__ import annotations

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
    """Two-sample Kolmogorov-Smirnov statistic and p-value of every column (constant columns: 0, 1)."""
    from scipy.stats import ks_2samp

    stat, p = ks_2samp(reference, batch, axis=0)
    return np.nan_to_num(np.atleast_1d(stat), nan=0.0), np.nan_to_num(np.atleast_1d(p), nan=1.0)


def bonferroni(p_values) -> float:
    """The Bonferroni-corrected minimum of several p-values: a valid p-value whatever their dependence."""
    p = np.asarray(list(p_values), dtype=np.float64)
    return float(min(1.0, p.min() * len(p))) if len(p) else 1.0
