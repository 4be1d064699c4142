"""The bound the false-positive tests hold a detector to: how many of many clean batches may be flagged."""

from __future__ import annotations


def most_false_alarms(batches: int, alpha: float = 0.05, risk: float = 1e-4) -> int:
    """The largest number of flagged clean batches that a detector at level `alpha` exceeds with
    probability below `risk` (binomial tail): a test using it fails wrongly less than once in 1/risk runs,
    and catches a detector whose real rate is a few times alpha."""
    from scipy.stats import binom

    return int(binom.isf(risk, batches, alpha))
