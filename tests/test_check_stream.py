"""The stream's alarm: false alarms controlled over a long stream, a lasting shift flagged within a few batches."""

import numpy as np
import pytest
from scipy.stats import norm

from scanflow_nb.check import KSDetector, StreamChecker
from scanflow_nb.check.stream import cusum_threshold
from scanflow_nb.datasets import corrupt, load_digits
from scanflow_nb.errors import ValidationError


def run_lengths(stream: StreamChecker, p_values: np.ndarray) -> list[int]:
    """Batches between alarms when the stream observes `p_values` in order."""
    for p in p_values:
        stream.observe(float(p))
    return np.diff([-1, *stream.alarms]).tolist()


def test_clean_p_values_raise_about_one_alarm_per_arl_batches():
    uniform = np.random.default_rng(0).random(40_000)
    stream = StreamChecker(arl=200)
    lengths = run_lengths(stream, uniform)
    assert 150 < len(uniform) / max(len(lengths), 1) < 300, f"{len(lengths)} alarms in {len(uniform)} clean batches"
    # conservative p-values (as Bonferroni gives) only make false alarms rarer
    conservative = StreamChecker(arl=200)
    assert len(run_lengths(conservative, np.minimum(1.0, 3 * uniform))) < len(lengths) / 3


def test_a_sustained_mild_shift_is_flagged_within_a_few_batches():
    rng = np.random.default_rng(1)
    delays = []
    for _ in range(200):
        stream = StreamChecker()  # arl 500
        mild = norm.sf(rng.normal(1.5, 1.0, size=60))  # batches whose median p-value is 0.07
        alarms = [k for k, p in enumerate(mild, 1) if stream.observe(float(p)).alarm]
        delays.append(alarms[0] if alarms else 61)
    assert np.median(delays) <= 6 and np.mean(np.array(delays) > 20) < 0.05


def test_one_overwhelming_batch_alarms_at_once_and_the_evidence_restarts():
    stream = StreamChecker()
    assert stream.threshold == pytest.approx(cusum_threshold(500, 1.0)) and 4 < stream.threshold < 5
    step = stream.observe(1e-9)
    assert step.alarm and step.index == 0 and step.statistic > stream.threshold
    assert stream.statistic == 0.0 and stream.alarms == [0]
    quiet = [stream.observe(0.5) for _ in range(5)]
    assert not any(s.alarm for s in quiet) and stream.statistic == 0.0
    stream.observe(0.01)
    assert stream.statistic > 0
    stream.reset()
    assert stream.statistic == 0.0 and "alarms=1" in repr(stream)


def test_update_scores_batches_with_the_detector():
    X, _ = load_digits()
    order = np.random.default_rng(0).permutation(len(X))
    stream = StreamChecker(KSDetector().fit(X[order[:1000]]))
    steps = [stream.update(X[order[1000 + i * 50 : 1050 + i * 50]]) for i in range(4)]
    assert not any(s.alarm for s in steps) and all(s.result is not None for s in steps)
    drifted = stream.update(corrupt(X[order[1300:1400]], "rotate", severity=4))
    assert drifted.result.is_drift and drifted.alarm and drifted.p_value == drifted.result.p_value


def test_bad_arguments():
    with pytest.raises(ValidationError, match="arl"):
        StreamChecker(arl=2)
    with pytest.raises(ValidationError, match="shift"):
        StreamChecker(shift=0)
    with pytest.raises(ValidationError, match="between 0 and 1"):
        StreamChecker().observe(1.5)
    with pytest.raises(ValidationError, match="needs a detector"):
        StreamChecker().update(np.zeros((3, 2)))
