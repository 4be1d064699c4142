"""A stream of batches with an alarm that does not cry wolf: CUSUM on the batches' p-values.

At alpha = 0.05 per batch, 100 clean batches give about 5 verdicts of drift. The alarm instead
watches the evidence accumulate: each batch's p-value becomes a normal score z = Φ⁻¹(1 - p)
(standard normal on clean data when p is uniform; smaller when p is conservative, as Bonferroni
and permutation p-values are), and Page's CUSUM

    S_k = max(0, S_{k-1} + z_k - shift / 2),   alarm when S_k > h,   then S restarts at 0,

is the quickest detector of a lasting rise in the mean of z (Lorden, Moustakides), which is what a
sustained drift is. `h` is chosen for the expected number of clean batches between false alarms
(`arl`, 500 by default, by Siegmund's approximation); `shift` is the rise in z the rule is tuned
for (1.0: batches whose median p-value is about 0.16). One batch with overwhelming evidence
(p below about 5e-7) alarms at once; a mild shift that each batch shows only weakly alarms after a
few (batches whose median p-value is 0.07: 5 batches, median).

The run length holds for p-values that are uniform on clean batches. A detector's p-values are
valid on average over references, but against one fixed reference every batch shares that
reference's sampling error, and a stream does not average it out: a reference against which clean
batches are flagged 7% of the time at alpha = 0.05 (a mean normal score of 0.2) shortens the
expected run between false alarms from 500 to about 130 batches, one at 6% to about 240 (simulated).
The larger the reference against the batch, the smaller that error (bench/drift.py prints each
reference's own rate); an arl of 500 still means about one false alarm per 500 clean batches.

Why not the others the issue allowed: an e-value detector (e-CUSUM) also guarantees its false
alarm rate, but turning p-values into e-values wastes much of the evidence of mildly significant
batches, and alpha-spending controls the chance of any false alarm over a planned horizon, which a
monitor that runs for months does not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from ..errors import ValidationError
from .result import DriftResult

_NORMAL = NormalDist()


def cusum_threshold(arl: float, shift: float) -> float:
    """The CUSUM threshold h whose in-control average run length is `arl` (Siegmund's approximation)."""
    import math

    from scipy.optimize import brentq

    k = shift / 2.0

    def run_length(h: float) -> float:
        b = 2.0 * k * (h + 1.166)
        return (math.exp(b) - b - 1.0) / (2.0 * k * k)

    return float(brentq(lambda h: run_length(h) - arl, 0.0, 200.0))


@dataclass
class StreamStep:
    """One batch of the stream: its result (None when only a p-value was observed) and the alarm."""

    index: int
    p_value: float
    statistic: float  # the CUSUM after this batch (0 again after an alarm is raised)
    alarm: bool
    result: DriftResult | None = None


class StreamChecker:
    """Scores batches with `detector` and raises an alarm when the evidence of drift adds up.

    `update(X_batch)` scores the batch and returns a StreamStep; `observe(p_value)` feeds a p-value
    computed elsewhere (e.g. another watcher's check). `arl` is the average number of clean batches
    between false alarms, `shift` the rise in normal score the rule is quickest for.
    """

    def __init__(self, detector: Any = None, arl: float = 500.0, shift: float = 1.0) -> None:
        if isinstance(arl, bool) or not isinstance(arl, (int, float)) or arl < 10:
            raise ValidationError(f"StreamChecker: arl must be a number of batches >= 10, got {arl!r}")
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not 0.1 <= shift <= 5:
            raise ValidationError(f"StreamChecker: shift must be between 0.1 and 5, got {shift!r}")
        self.detector, self.arl, self.shift = detector, float(arl), float(shift)
        self.threshold = cusum_threshold(self.arl, self.shift)
        self.statistic = 0.0
        self.batches = 0
        self.alarms: list[int] = []

    def update(self, X_batch: Any = None, **inputs: Any) -> StreamStep:
        """Score one batch with the detector (extra `inputs`, e.g. probabilities=, go to its score)."""
        if self.detector is None:
            raise ValidationError("StreamChecker.update needs a detector; use observe(p_value) without one")
        result = self.detector.score(X_batch, **inputs) if inputs else self.detector.score(X_batch)
        return self.observe(result)

    def observe(self, evidence: DriftResult | float) -> StreamStep:
        """Add one batch's p-value (or result) to the stream; the step says whether the alarm goes off."""
        result = evidence if isinstance(evidence, DriftResult) else None
        p = float(result.p_value if result is not None else evidence)
        if not 0.0 <= p <= 1.0:
            raise ValidationError(f"StreamChecker: a p-value must be between 0 and 1, got {p!r}")
        self.statistic = max(0.0, self.statistic + normal_score(p) - self.shift / 2.0)
        alarm = self.statistic > self.threshold
        step = StreamStep(self.batches, p, self.statistic, alarm, result)
        if alarm:
            self.alarms.append(self.batches)
            self.statistic = 0.0
        self.batches += 1
        return step

    def reset(self) -> None:
        """Forget the evidence so far (e.g. after retraining on the drifted data)."""
        self.statistic = 0.0

    def __repr__(self) -> str:
        return (
            f"StreamChecker(arl={self.arl:g}, shift={self.shift:g}, threshold={self.threshold:.2f}, "
            f"batches={self.batches}, alarms={len(self.alarms)})"
        )


def normal_score(p: float) -> float:
    """Φ⁻¹(1 - p), computed as -Φ⁻¹(p) (exact for tiny p) and kept finite for p = 0 or 1."""
    return -_NORMAL.inv_cdf(min(max(p, 1e-15), 1.0 - 1e-15))
