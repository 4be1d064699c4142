"""Human in the loop: active learning over a pool (typical samples first, then the model's uncertainty),
labeling sessions, an oracle for simulations, and the label store."""

from .learner import ActiveLearner, NewClassWarning
from .oracle import Oracle, labels_to_reach, learning_curve
from .session import LabelingSession
from .store import LabelStore, LabelStoreError
from .strategies import NAMES as STRATEGIES

__all__ = [
    "ActiveLearner",
    "KerasClassifier",
    "LabelStore",
    "LabelStoreError",
    "LabelingSession",
    "NewClassWarning",
    "Oracle",
    "STRATEGIES",
    "labels_to_reach",
    "learning_curve",
]


def __getattr__(name):
    if name == "KerasClassifier":  # imports scikit-learn: only on demand
        from .keras import KerasClassifier

        return KerasClassifier
    raise AttributeError(f"module 'scanflow_nb.improve' has no attribute {name!r}")
