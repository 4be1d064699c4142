"""Query strategies by name (the names are `spec.STRATEGIES`): which k candidates a person should label next.

- ``typical``: TypiClust (Hacohen et al., 2022): cluster candidates and labels into n_labeled + k groups in the
  embedding; from the k largest groups without a label take the most typical sample (densest neighbourhood).
  Wins at small budgets ("cold start"), where a model's uncertainty means little.
- ``uncertainty``, ``margin``, ``entropy``: modAL's informativeness scores; a batch is made diverse by clustering
  the 10k most informative candidates into k groups (weighted by informativeness) and taking the sample nearest
  each centre (Zhdanov, 2019), so k picks are never k near-copies of one confusing sample.
- ``batch``: modAL's ranked batch-mode sampling.  ``random``: the baseline.
- ``auto`` (the default): ``typical`` while the candidates have few labels among them (under 5 a class: labels
  far from every candidate, such as clean training data next to a drifted batch, do not count) and the model
  does not yet predict the typical samples it is shown (80% of the last 10 typical labels, judged by its guess
  before it learned them); then ``margin``. Every query records which it used and why.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..errors import ValidationError
from ..spec import STRATEGIES as NAMES

SWITCH_LABELS = 10  # typical labels judged before auto may switch
SWITCH_ACCURACY = 0.8  # the model's accuracy on them that makes typical samples teach too little
WARM_PER_CLASS = 5  # labels per class among the candidates past which a model is out of its cold start
DIVERSITY = 10  # diverse batches are drawn from the DIVERSITY * k most informative candidates
TYPICAL_NEIGHBOURS = 20
SPACING_SAMPLE = 500  # candidates that estimate how closely candidates lie


@dataclass
class Query:
    """One query: what was asked, which strategy chose, why, and how the model's guesses compared with the labels."""

    index: int
    strategy: str
    used: str
    reason: str
    n_labeled: int
    ids: list[int]
    seconds: float
    guesses: dict[int, object] = field(default_factory=dict)  # the model's label for each id when it was chosen
    answers: dict[int, object] = field(default_factory=dict)  # the labels given since

    @property
    def hits(self) -> list[bool]:
        """For every answered id with a guess: did the model already know its label?"""
        return [self.guesses[i] == label for i, label in self.answers.items() if i in self.guesses]


class Candidates:
    """What a strategy chooses from: the candidates' rows, the labeled rows, the current model, and (computed
    once, on demand) both in the embedding and which labels lie among the candidates."""

    def __init__(self, X, X_labeled, model, embed: Callable[[], tuple[np.ndarray, np.ndarray]], rng):
        self.X, self.X_labeled, self.model, self.rng = X, X_labeled, model, rng
        self._embed = embed

    @cached_property
    def embedded(self) -> tuple[np.ndarray, np.ndarray]:
        """(candidates, labeled samples) as features."""
        return self._embed()

    @cached_property
    def near(self) -> np.ndarray:
        """For each labeled sample: does it lie among the candidates (see `_near`)?"""
        Z, Z_labeled = self.embedded
        return _near(Z_labeled, Z)


def check(name: str) -> None:
    if name not in NAMES:
        raise ValidationError(f"unknown query strategy {name!r}: choose one of {', '.join(NAMES)}")


def choose(name: str, candidates: Candidates, k: int, history: list[Query]) -> tuple[np.ndarray, str, str]:
    """Positions of k candidates chosen by strategy `name`; with the strategy that chose them and why.

    Runs in one BLAS / OpenMP thread: the problems are small, and a retrain may run beside the query (threads
    spinning against each other made a query of 10 from 5,000 take 5x the CPU time on a busy 2-core machine).
    """
    from threadpoolctl import threadpool_limits

    check(name)
    used, reason = (name, "")
    with threadpool_limits(limits=1):
        if name == "auto":
            used, reason = auto(candidates, history)
        elif used in ("uncertainty", "margin", "entropy", "batch") and candidates.model is None:
            used, reason = "random", "no model yet (labels of two classes are needed)"
        positions = STRATEGIES[used](candidates, k)
    return np.asarray(positions, dtype=int), used, reason


def auto(c: Candidates, history: list[Query]) -> tuple[str, str]:
    """Which strategy `auto` uses now, and why."""
    if c.model is None:
        return "typical", "no model yet"
    per_class = c.near.sum() / len(c.model.classes_)
    if per_class >= WARM_PER_CLASS:
        return "margin", f"{per_class:.0f} labels per class among the candidates: past the cold start"
    judged = [hit for query in history if query.used == "typical" for hit in query.hits][-SWITCH_LABELS:]
    if len(judged) < SWITCH_LABELS:
        return "typical", f"waiting for {SWITCH_LABELS} typical labels to judge the model by ({len(judged)} so far)"
    known = sum(judged) / len(judged)
    if known >= SWITCH_ACCURACY:
        return "margin", f"the model already knew {known:.0%} of the last {len(judged)} typical samples"
    return "typical", f"the model knew only {known:.0%} of the last {len(judged)} typical samples"


# ---- the strategies: (candidates, k) -> k distinct positions
def random(c: Candidates, k: int) -> np.ndarray:
    return c.rng.choice(len(c.X), size=k, replace=False)


def typical(c: Candidates, k: int) -> np.ndarray:
    """TypiClust: the most typical candidate of each of the k largest clusters that hold no label yet.

    Labels far from every candidate (e.g. clean training data when the candidates are a drifted batch's
    anomalies) cover none of them and are left out of the clustering, so it cuts the candidates themselves.
    """
    Z, Z_labeled = c.embedded
    if len(Z) <= k:
        return np.arange(len(Z))
    Z_labeled = Z_labeled[c.near]
    everything = np.concatenate([Z_labeled, Z])
    means = _kmeans(everything, len(Z_labeled) + k, c.rng)
    groups, n_clusters = means.labels_, means.n_clusters
    labeled, pooled = groups[: len(Z_labeled)], groups[len(Z_labeled) :]
    sizes = np.bincount(pooled, minlength=n_clusters).astype(float)
    sizes[labeled] = 0  # covered
    sizes += c.rng.random(n_clusters) * 1e-3  # ties broken at random
    picks = []
    for group in np.argsort(-sizes):
        if len(picks) == k or sizes[group] < 1:
            break
        members = np.flatnonzero(pooled == group)
        picks.append(members[np.argmax(_typicality(Z[members]))])
    if len(picks) < k:  # fewer uncovered clusters than k: the most typical of the rest
        rest = np.setdiff1d(np.arange(len(Z)), picks)
        picks += rest[np.argsort(-_typicality(Z[rest]))[: k - len(picks)]].tolist()
    return np.asarray(picks)


def _near(Z_labeled: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """Which labeled samples lie among the candidates: no farther from the nearest one than 90% of the
    candidates are from theirs (estimated on up to SPACING_SAMPLE of them, so it stays fast on big pools)."""
    from sklearn.neighbors import NearestNeighbors

    if len(Z_labeled) == 0 or len(Z) < 2:
        return np.zeros(len(Z_labeled), dtype=bool)
    index = NearestNeighbors(n_neighbors=2).fit(Z)
    sample = np.random.default_rng(0).choice(len(Z), size=min(SPACING_SAMPLE, len(Z)), replace=False)
    spacing = np.quantile(index.kneighbors(Z[sample])[0][:, 1], 0.9)
    return index.kneighbors(Z_labeled, n_neighbors=1)[0][:, 0] <= spacing


def _typicality(Z: np.ndarray) -> np.ndarray:
    """Inverse mean distance to the nearest neighbours: high in dense regions."""
    from sklearn.neighbors import NearestNeighbors

    n = min(TYPICAL_NEIGHBOURS, len(Z) - 1)
    if n < 1:
        return np.ones(len(Z))
    distances, _ = NearestNeighbors(n_neighbors=n + 1).fit(Z).kneighbors(Z)
    return 1.0 / (distances[:, 1:].mean(axis=1) + 1e-12)


def _informative(score: Callable) -> Callable[[Candidates, int], np.ndarray]:
    """A diverse batch of the most informative candidates by `score(model, X)` (higher: more informative)."""

    def strategy(c: Candidates, k: int) -> np.ndarray:
        informative = score(c.model, c.X)
        top = np.argsort(-informative, kind="stable")[: DIVERSITY * k]
        if k == 1 or len(top) <= k:
            return top[:k]
        return top[_diverse(c.embedded[0][top], informative[top], k, c.rng)]

    return strategy


def _diverse(Z: np.ndarray, weight: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k positions in Z: the member nearest each centre of a k-means weighted by informativeness."""
    weight = weight - weight.min() + 1e-6
    means = _kmeans(Z, k, rng, weight)
    distances = ((Z - means.cluster_centers_[means.labels_]) ** 2).sum(axis=1)
    picks = [
        members[np.argmin(distances[members])]
        for members in (np.flatnonzero(means.labels_ == g) for g in range(means.n_clusters))
        if len(members)
    ]
    if len(picks) < k:  # fewer distinct samples than k: the most informative of the rest
        taken = set(picks)
        picks += [i for i in np.argsort(-weight, kind="stable") if i not in taken][: k - len(picks)]
    return np.asarray(picks)


def _kmeans(Z: np.ndarray, k: int, rng: np.random.Generator, weight=None):
    """k-means with at most as many clusters as distinct samples."""
    from sklearn.cluster import KMeans

    k = min(k, len(np.unique(Z, axis=0)))
    return KMeans(k, n_init=1, random_state=int(rng.integers(2**31))).fit(Z, sample_weight=weight)


def _modal_score(name: str, sign: float) -> Callable:
    def score(model, X):
        from modAL import uncertainty

        return sign * np.asarray(getattr(uncertainty, name)(model, X), dtype=float)

    return score


def batch(c: Candidates, k: int) -> np.ndarray:
    """modAL's ranked batch: uncertain and unlike the labeled samples and the ones already in the batch."""
    from modAL.batch import uncertainty_batch_sampling
    from modAL.models import ActiveLearner

    learner = ActiveLearner(c.model)  # the fitted model as modAL sees it, with the labels it compares against
    learner.X_training = c.X_labeled
    return uncertainty_batch_sampling(learner, c.X, n_instances=k)[0]


STRATEGIES = {
    "typical": typical,
    "uncertainty": _informative(_modal_score("classifier_uncertainty", 1.0)),
    "margin": _informative(_modal_score("classifier_margin", -1.0)),
    "entropy": _informative(_modal_score("classifier_entropy", 1.0)),
    "batch": batch,
    "random": random,
}
