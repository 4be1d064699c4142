"""Active learning over a pool of candidates: query the most informative ones, learn their labels, retrain."""

import threading
import time
import warnings

import numpy as np

from ..errors import ScanflowError, ValidationError
from . import embedding as embeddings
from .strategies import Candidates, Query, choose
from .strategies import check as check_strategy


class NewClassWarning(UserWarning):
    """A label of a class not seen before joined the classes (shown once per class)."""


def _python(value):
    """A label as a plain Python value (numpy scalars become int/float/str), so it compares and stores simply."""
    return value.item() if isinstance(value, np.generic) else value


def _samples(X, what: str) -> np.ndarray:
    """X as a numeric array of samples (first axis), with a clear error for anything else."""
    try:
        X = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise ValidationError(f"{what} is not an array of samples: {exc}") from None
    if X.ndim < 2:
        raise ValidationError(f"{what} must have one row per sample (2 or more dimensions), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) and X.dtype != bool:
        raise ValidationError(
            f"{what} must hold numeric features, got dtype {X.dtype}; "
            "to show text in the labeling panel pass it as samples= there"
        )
    if not np.all(np.isfinite(X)):
        raise ValidationError(f"{what} contains NaN or infinite values")
    return X


def _flat(X: np.ndarray) -> np.ndarray:
    return X.reshape(len(X), int(np.prod(X.shape[1:])))


def _kind(label) -> str:
    """What sort of value a label is: classes of one learner are all numbers, all text or all booleans."""
    if isinstance(label, bool):
        return "boolean"
    if isinstance(label, (int, float)):
        return "number"
    return "text" if isinstance(label, str) else type(label).__name__


class ActiveLearner:
    """A learner, a query strategy and a pool of unlabeled candidates.

    Samples may have any shape (images stay images for the labeling panel); the learner sees them flattened
    to one row of features each. Every candidate keeps a stable id (its position in the initial pool, then
    numbered on by `extend_pool`), so labels can be stored and replayed even as the pool shrinks.

    strategy   a name from `STRATEGIES` (see `scanflow_nb.improve.strategies`); "auto" starts with typical
               samples and turns to the model's uncertainty once the model knows the typical ones
    embedding  where typical and diverse samples are measured: "pca" (default), "model", an encoder such as
               the checker's fitted AutoencoderDetector, or a function (see `scanflow_nb.improve.embedding`)
    classes    the classes labels must come from; without it the classes are those of `y_labeled` and grow
               with every new label (a NewClassWarning says so once per class)

    Until the labels cover two classes there is no model yet (``auto`` still chooses typical samples).
    `queries` records every query: the strategy that chose, why, and how the model's guesses compared with
    the labels given. Thread-safe: `retrain` fits a copy of the estimator while the previous model keeps
    answering queries.
    """

    def __init__(
        self,
        estimator,
        strategy: str = "auto",
        X_labeled=None,
        y_labeled=None,
        X_pool=None,
        classes=None,
        seed: int = 0,
        embedding="pca",
    ):
        self.estimator = estimator
        self.strategy = strategy
        self.embedding = embedding
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()
        self._retrain_lock = threading.Lock()
        self._query_lock = threading.Lock()
        if (X_labeled is None) != (y_labeled is None):
            raise ValidationError("give both X_labeled and y_labeled, or neither")
        if X_pool is None:
            raise ValidationError("X_pool is required: the candidates to choose labels for")
        self._candidates = _samples(X_pool, "X_pool")
        if X_labeled is not None:
            self._X0 = _samples(X_labeled, "X_labeled")
            self._y0 = [_python(v) for v in np.asarray(y_labeled).ravel()]
            if len(self._y0) != len(self._X0):
                raise ValidationError(f"X_labeled has {len(self._X0)} samples but y_labeled has {len(self._y0)} labels")
            self._check_features(self._candidates, "X_pool", self._X0.shape[1:])
            self._X0 = self._X0.reshape((len(self._X0), *self._candidates.shape[1:]))
        else:
            self._X0, self._y0 = self._candidates[:0], []
        self.fixed_classes = classes is not None
        if self.fixed_classes:
            self.classes = [_python(c) for c in classes]
            if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
                raise ValidationError(f"classes must be at least two distinct values, got {self.classes!r}")
            self._check_labels(self._y0)
        else:
            self.classes = []
            try:
                start = sorted(set(self._y0))
            except TypeError:  # mixed kinds: refused by the check, in the order given
                start = list(dict.fromkeys(self._y0))
            self._check_labels(start, announce=False)
        self._start_classes = list(self.classes)
        self._pool_ids = np.arange(len(self._candidates))
        self._taught: dict[int, object] = {}
        self._model = None
        self.n_trained = 0
        self.queries: list[Query] = []
        self._asked: dict[int, Query] = {}  # candidate id -> the latest query that chose it
        self._embedded = None  # ((candidates, embedding, model), candidates' features, start labels' features)
        self.retrain()

    # ---- what the improver holds
    @property
    def strategy(self) -> str:
        """The query strategy's name (one of STRATEGIES); may be changed between queries."""
        return self._strategy

    @strategy.setter
    def strategy(self, name: str) -> None:
        check_strategy(name)
        self._strategy = name

    @property
    def embedding(self):
        """Where typical and diverse samples are measured (see `scanflow_nb.improve.embedding`)."""
        return self._embedding

    @embedding.setter
    def embedding(self, embedding) -> None:
        embeddings.check(embedding)
        self._embedding = embedding

    @property
    def pool_size(self) -> int:
        return len(self._pool_ids)

    @property
    def pool_ids(self) -> np.ndarray:
        """Stable ids of the candidates still in the pool, in pool order."""
        with self._lock:
            return self._pool_ids.copy()

    @property
    def X_pool(self) -> np.ndarray:
        with self._lock:
            return self._candidates[self._pool_ids]

    @property
    def n_labeled(self) -> int:
        return len(self._y0) + len(self._taught)

    @property
    def taught(self) -> dict:
        """Labels learned from the pool: {candidate id: label}, in teaching order."""
        with self._lock:
            return dict(self._taught)

    @property
    def model(self):
        """The current fitted estimator, or None before the labels cover two classes."""
        return self._model

    def samples(self, ids) -> np.ndarray:
        """The candidates with these ids, in their original shape."""
        return self._candidates[np.asarray(ids, dtype=int)]

    def fingerprint(self) -> str:
        """A digest of every candidate and the starting classes, to tell whether stored labels belong to this pool."""
        import hashlib

        start = (self._candidates.shape, str(self._candidates.dtype), self._start_classes, self.fixed_classes)
        digest = hashlib.sha256(repr(start).encode())
        digest.update(np.ascontiguousarray(self._candidates).tobytes())
        return digest.hexdigest()[:16]

    # ---- growing the pool
    def extend_pool(self, X) -> np.ndarray:
        """Add candidates (e.g. a checker's anomalous samples); returns their new ids."""
        X = _samples(X, "the new candidates")
        self._check_features(X, "the new candidates", self._candidates.shape[1:])
        with self._lock:
            start = len(self._candidates)
            X = X.reshape((len(X), *self._candidates.shape[1:])).astype(self._candidates.dtype, copy=False)
            self._candidates = np.concatenate([self._candidates, X])
            new = np.arange(start, start + len(X))
            self._pool_ids = np.concatenate([self._pool_ids, new])
        return new

    # ---- querying
    def query_ids(self, k: int, exclude=()) -> np.ndarray:
        """Ids of the k most informative candidates (fewer if the pool is smaller), skipping `exclude`.

        The query is recorded in `queries` with the strategy that chose (for "auto": which one and why).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValidationError(f"k must be a whole number >= 1, got {k!r}")
        started = time.perf_counter()
        with self._query_lock:
            with self._lock:
                model, ids = self._model, self._pool_ids
                if len(exclude):
                    ids = ids[~np.isin(ids, np.asarray(list(exclude), dtype=int))]
                taught = np.fromiter(self._taught, dtype=int, count=len(self._taught))
                history = list(self.queries)
            if len(ids) == 0:
                raise ValidationError("the pool is empty: nothing left to label (add candidates with extend_pool)")
            k = min(int(k), len(ids))
            X = _flat(self._candidates[ids])

            def embedded():
                Z, Z0 = self._embedded_features(model)
                return Z[ids], np.concatenate([Z0, Z[taught]])

            labeled = np.concatenate([_flat(self._X0), _flat(self._candidates[taught])])
            positions, used, reason = choose(
                self.strategy, Candidates(X, labeled, model, embedded, self._rng), k, history
            )
            chosen = ids[positions]
            guesses = {} if model is None else dict(zip(chosen.tolist(), map(_python, model.predict(X[positions]))))
            with self._lock:
                query = Query(
                    len(self.queries) + 1,
                    self.strategy,
                    used,
                    reason,
                    self.n_labeled,
                    chosen.tolist(),
                    time.perf_counter() - started,
                    guesses,
                )
                self.queries.append(query)
                self._asked.update(dict.fromkeys(query.ids, query))
        return chosen

    def _embedded_features(self, model) -> tuple[np.ndarray, np.ndarray]:
        """Every candidate and start label in the embedding; kept until the candidates, the embedding (or, for
        "model", the model) change."""
        with self._lock:
            n, cached = len(self._candidates), self._embedded
        key = (self.embedding, model if isinstance(self.embedding, str) and self.embedding == "model" else None)
        if cached is not None and cached[0][0] == n and all(a is b for a, b in zip(cached[0][1:], key)):
            return cached[1], cached[2]
        rows, rows0 = _flat(self._candidates[:n]), _flat(self._X0)
        embed = embeddings.embedder(self.embedding, np.concatenate([rows0, rows]), model, self._candidates.shape[1:])
        Z = embeddings.features(embed, rows, "the candidates")
        Z0 = embeddings.features(embed, rows0, "the labeled samples") if len(rows0) else Z[:0]
        with self._lock:
            self._embedded = ((n, *key), Z, Z0)
        return Z, Z0

    def query(self, k: int) -> np.ndarray:
        """Positions in the current pool of the next k samples to label."""
        ids = self.query_ids(k)
        with self._lock:
            where = {int(i): p for p, i in enumerate(self._pool_ids)}
        return np.array([where[int(i)] for i in ids])

    # ---- teaching
    def teach(self, positions, labels, retrain: bool = True) -> None:
        """Label the samples at these pool positions: they leave the pool, join the labeled set, the model retrains."""
        positions = np.atleast_1d(np.asarray(positions))
        with self._lock:
            if positions.dtype.kind not in "iu" or np.any(positions < 0) or np.any(positions >= len(self._pool_ids)):
                raise ValidationError(
                    f"positions must be whole numbers in 0..{len(self._pool_ids) - 1}, got {positions.tolist()}"
                )
            ids = self._pool_ids[positions]
            self.teach_ids(ids, labels, retrain=False)
        if retrain:
            self.retrain()

    def teach_ids(self, ids, labels, retrain: bool = True) -> None:
        """Like `teach`, by candidate id. Checks everything first: on an error nothing changes.

        Without fixed classes, a label of a new class adds the class (a NewClassWarning says so, once).
        """
        ids = [int(i) for i in np.atleast_1d(np.asarray(ids))]
        labels = [_python(v) for v in np.atleast_1d(np.asarray(labels, dtype=object))]
        if len(ids) != len(labels):
            raise ValidationError(f"{len(ids)} samples but {len(labels)} labels")
        if len(set(ids)) != len(ids):
            raise ValidationError("the same sample appears twice in one teach call")
        with self._lock:
            in_pool = set(self._pool_ids.tolist())
            missing = [i for i in ids if i not in in_pool]
            if missing:
                raise ValidationError(f"samples {missing} are not in the pool (already labeled or unknown)")
            self._check_labels(labels)
            self._taught.update(zip(ids, labels))
            self._pool_ids = self._pool_ids[~np.isin(self._pool_ids, ids)]
            for i, label in zip(ids, labels):
                if i in self._asked:
                    self._asked[i].answers[i] = label
        if retrain:
            self.retrain()

    def add_class(self, value) -> bool:
        """Add a class before any label of it is given (e.g. from the panel); False if it is one already."""
        value = _python(value)
        with self._lock:
            if value in self.classes:
                return False
            self._check_labels([value], announce=False)
            return True

    def forget(self, ids) -> None:
        """Undo teaching: these samples go back to the pool (the model reflects it at the next retrain)."""
        ids = [int(i) for i in np.atleast_1d(np.asarray(ids))]
        with self._lock:
            unknown = [i for i in ids if i not in self._taught]
            if unknown:
                raise ValidationError(f"samples {unknown} were not labeled here, so there is nothing to forget")
            for i in ids:
                del self._taught[i]
                if i in self._asked:
                    self._asked[i].answers.pop(i, None)
            self._pool_ids = np.concatenate([self._pool_ids, ids])

    def retrain(self) -> None:
        """Fit a fresh copy of the estimator on every label so far, then swap it in."""
        from sklearn.base import clone

        with self._retrain_lock:
            with self._lock:
                ids = list(self._taught)
                X = np.concatenate([self._X0, self._candidates[ids]]) if ids else self._X0
                y = self._y0 + list(self._taught.values())
            model = clone(self.estimator).fit(_flat(X), np.asarray(y)) if len(set(y)) >= 2 else None
            with self._lock:
                self._model, self.n_trained = model, len(y)

    def retrain_in_background(self, on_done) -> threading.Thread:
        """Start `retrain` in a daemon thread; `on_done(error)` gets None or the exception it raised."""

        def work():
            try:
                self.retrain()
            except BaseException as exc:  # reported to the caller, never lost with the thread
                on_done(exc)
            else:
                on_done(None)

        thread = threading.Thread(target=work, name="scanflow-retrain", daemon=True)
        thread.start()
        return thread

    # ---- using the model
    def predict_proba(self, X) -> np.ndarray:
        X = self._features(X)
        return self._trained().predict_proba(_flat(X))

    def guess(self, ids) -> list[tuple[object, float]]:
        """The model's (label, confidence) for each candidate id; empty before there is a model."""
        model = self._model
        if model is None:
            return []
        proba = model.predict_proba(_flat(self.samples(ids)))
        return [(_python(model.classes_[row.argmax()]), float(row.max())) for row in proba]

    def score(self, X, y) -> float:
        """The model's accuracy (its own `score`) on X, y."""
        X = self._features(X)
        y = np.asarray(y)
        if len(y) != len(X):
            raise ValidationError(f"X has {len(X)} samples but y has {len(y)} labels")
        return float(self._trained().score(_flat(X), y))

    # ---- checks
    def _trained(self):
        model = self._model
        if model is None:
            raise ScanflowError("the improver has no model yet: teach it labels of at least two classes first")
        return model

    def _features(self, X) -> np.ndarray:
        X = _samples(X, "X")
        self._check_features(X, "X", self._candidates.shape[1:])
        return X

    def _check_features(self, X: np.ndarray, what: str, shape) -> None:
        if int(np.prod(X.shape[1:])) != int(np.prod(shape)):
            raise ValidationError(
                f"{what} has {int(np.prod(X.shape[1:]))} features per sample but the learner uses {int(np.prod(shape))}"
            )

    def _check_labels(self, labels, announce: bool = True) -> None:
        """Refuse labels outside fixed classes; otherwise admit new classes (each announced once)."""
        new = list(dict.fromkeys(v for v in labels if v not in self.classes))
        if new and self.fixed_classes:
            raise ValidationError(
                f"label {new[0]!r} is not one of the classes {self.classes} "
                "(fixed by classes=; leave it out to let new classes in)"
            )
        kinds = {_kind(c) for c in self.classes[:1] or new[:1]}
        for value in new:
            if _kind(value) not in ("number", "text", "boolean") or value != value:
                raise ValidationError(f"label {value!r} is not a class: labels are numbers, text or booleans")
            if _kind(value) not in kinds:
                raise ValidationError(
                    f"label {value!r} is {_kind(value)} but the classes {self.classes or new} are {next(iter(kinds))}"
                )
        self.classes.extend(new)
        for value in new if announce else ():
            warnings.warn(f"new class {value!r}: the classes are now {self.classes}", NewClassWarning, stacklevel=3)

    def __repr__(self) -> str:
        return (
            f"ActiveLearner({type(self.estimator).__name__}, strategy={self.strategy!r}, "
            f"labeled={self.n_labeled}, pool={self.pool_size})"
        )
