"""Query strategies by name: modAL's uncertainty, margin, entropy and ranked batch sampling, and random."""

import numpy as np

from ..errors import ValidationError
from ..spec import STRATEGIES as NAMES


def query_strategy(name: str, rng: np.random.Generator):
    """The modAL-compatible query function for a strategy name (`random` draws with `rng`)."""
    if name == "random":

        def random_sampling(learner, X, n_instances=1):
            return rng.choice(len(X), size=n_instances, replace=False), None

        return random_sampling
    from modAL.batch import uncertainty_batch_sampling
    from modAL.uncertainty import entropy_sampling, margin_sampling, uncertainty_sampling

    table = {
        "uncertainty": uncertainty_sampling,
        "margin": margin_sampling,
        "entropy": entropy_sampling,
        "batch": uncertainty_batch_sampling,
    }
    if name not in table:
        raise ValidationError(f"unknown query strategy {name!r}: choose one of {', '.join(NAMES)}")
    return table[name]
