"""Oracle mode: labels from ground truth, for simulations, experiments and tests."""

import numpy as np

from ..errors import ValidationError


class Oracle:
    """Answers label requests from known labels: `oracle(ids)` gives the true label of each candidate id."""

    def __init__(self, y_true):
        self.y_true = np.asarray(y_true)

    def __call__(self, ids) -> list:
        ids = np.atleast_1d(np.asarray(ids, dtype=int))
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self.y_true)):
            raise ValidationError(f"the oracle knows labels for ids 0..{len(self.y_true) - 1} only")
        return [v.item() for v in self.y_true[ids]]


def learning_curve(improver, oracle, X_test, y_test, budget: int, step: int = 1) -> list[tuple[int, float]]:
    """Label `budget` samples, `step` at a time, with the oracle; the test score after each retrain.

    Returns [(labels so far, score)], starting with the model before any query (no score: NaN).
    """

    def score():
        return improver.score(X_test, y_test) if improver.model is not None else float("nan")

    curve = [(improver.n_labeled, score())]
    spent = 0
    while spent < budget and improver.pool_size:
        ids = improver.query_ids(min(step, budget - spent))
        improver.teach_ids(ids, oracle(ids))
        spent += len(ids)
        curve.append((improver.n_labeled, score()))
    return curve


def labels_to_reach(curve, target: float) -> int | None:
    """The fewest labels at which a learning curve reaches `target`, or None if it never does."""
    return next((n for n, s in curve if s >= target), None)
