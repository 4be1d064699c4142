"""A labeling session: the queue an improver chooses, labels given by a person, undo, background retraining.

Every action is written to the label store before the next sample is shown; reopening the same
session replays it. Nothing here draws: `scanflow_nb.widgets.labeling.LabelingPanel` shows a session.
"""

import threading
import time

import numpy as np

from ..errors import ScanflowError, ValidationError
from ..files import state_dir
from .store import LabelStore


class LabelingSession:
    """Labeling an improver's queue: what is shown next, labels, skips, undo, background retraining, the store.

    No widgets: the labeling panel shows a session, scripts and tests drive one directly. Listeners
    registered with `watch(callback)` are called (from any thread) after every change; `message`
    holds the latest status line and `errors` every error shown.

    improver       the ActiveLearner whose pool is labeled (its queries choose the samples shown)
    store          a LabelStore or a path to one (default `.scanflow/labels.sqlite` under the current folder)
    session        the session name: reopening a session with the same pool resumes it
    budget         labels to give before the panel finishes by itself (default: the whole pool)
    X_test, y_test a held-out set: the model's score is shown after every retrain
    tracking_uri, experiment   where `finish` logs the session (labels CSV, counts, scores) to MLflow
    parent_run_id  nest that run under another (e.g. a closed-loop round)
    among          only these candidate ids are shown (default: the whole pool)
    on_finish      called with the session after the final retrain (e.g. to let a planner decide)
    """

    def __init__(
        self,
        improver,
        store=None,
        session: str = "default",
        retrain_every: int = 10,
        budget: int | None = None,
        X_test=None,
        y_test=None,
        tracking_uri: str | None = None,
        experiment: str = "labeling",
        on_finish=None,
        parent_run_id: str | None = None,
        among=None,
    ):
        if not isinstance(retrain_every, int) or retrain_every < 1:
            raise ValidationError(f"retrain_every must be a whole number >= 1, got {retrain_every!r}")
        if (X_test is None) != (y_test is None):
            raise ValidationError("give both X_test and y_test, or neither")
        self.improver = improver
        self.store = store if isinstance(store, LabelStore) else LabelStore(store or state_dir(".") / "labels.sqlite")
        self.name = session
        self.retrain_every = retrain_every
        self.test = None if X_test is None else (X_test, y_test)
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.on_finish = on_finish
        self.parent_run_id = parent_run_id
        self.among = None if among is None else {int(i) for i in among}
        self.queue: list[int] = []
        self._guesses: dict[int, tuple] = {}
        self.skipped: set[int] = set()
        self.scores: list[tuple[int, float]] = []
        self.errors: list[str] = []
        self.message: tuple[str, bool] = ("", False)  # (text, is_error)
        self._listeners: list = []
        self.finished = False
        self.run_id: str | None = None
        self._lock = threading.RLock()
        self._retraining: threading.Thread | None = None
        self._finishing: threading.Thread | None = None
        self._topping: threading.Thread | None = None
        self._since_retrain = 0
        for value in self.store.open_session(self.name, improver.fingerprint(), improver.classes):
            improver.add_class(value)  # classes added in earlier sittings, in their order
        self._first_query = len(improver.queries)
        self.n_labels = self._replay()
        self._record_score()
        self.budget = budget if budget is not None else self.n_labels + improver.pool_size
        self._refill()

    def watch(self, callback) -> None:
        """Call `callback()` after every change of the session (from whichever thread made it)."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        for callback in list(self._listeners):
            try:
                callback()
            except Exception as exc:  # a broken view must not break labeling
                self.errors.append(f"display failed: {type(exc).__name__}: {exc}")

    # ---- state
    @property
    def current(self) -> int | None:
        """The candidate id shown now, or None when nothing is left to label."""
        with self._lock:
            return self.queue[0] if self.queue else None

    @property
    def retraining(self) -> bool:
        thread = self._retraining
        return thread is not None and thread.is_alive()

    def _replay(self) -> int:
        """Re-apply the session's stored actions to the improver (after a crash or a reopened notebook)."""
        taught = self.improver.taught
        in_pool = set(self.improver.pool_ids.tolist())
        new = {}
        n = 0
        for sample, kind, label in self.store.actions(self.name):
            if kind == "skip":
                self.skipped.add(sample)
                continue
            n += 1
            self.skipped.discard(sample)
            if sample in in_pool and sample not in taught:
                new[sample] = label
        if new:
            self.improver.teach_ids(list(new), list(new.values()), retrain=True)
        return n

    @property
    def classes(self) -> list:
        """The classes a label may take now (they grow with new labels unless the improver fixed them)."""
        return list(self.improver.classes)

    @property
    def queries(self) -> list:
        """The improver's queries made for this session (strategy used, why, the model's guesses vs the labels)."""
        return self.improver.queries[self._first_query :]

    # ---- actions
    def label(self, value) -> None:
        """Give the current sample the label `value`: stored at once, then the next sample is shown.

        A value that is not a class yet becomes one (unless the improver's classes are fixed), and the
        session says so once.
        """
        value = value.item() if isinstance(value, np.generic) else value
        with self._lock:
            sample = self._require_current()
            added = self.improver.add_class(value)
            if added:
                self.store.set_classes(self.name, self.improver.classes)
            self.improver.teach_ids([sample], [value], retrain=False)
            try:
                self.store.add(self.name, sample, value)
            except Exception:
                self.improver.forget([sample])
                raise
            self.queue.pop(0)
            self.n_labels += 1
            self._since_retrain += 1
            self._refill()
        self._changed()
        self._maybe_top_up()
        self._after_label()
        if added:
            self._say(f"new class {value!r} added: the classes are now {self.improver.classes}")

    def skip(self) -> None:
        """Leave the current sample unlabeled for this session and show the next one."""
        with self._lock:
            sample = self._require_current()
            self.store.add(self.name, sample, kind="skip")
            self.skipped.add(sample)
            self.queue.pop(0)
            self._refill()
        self._changed()
        self._maybe_top_up()

    def undo(self) -> None:
        """Take back the latest label or skip (repeatable); its sample is shown again."""
        with self._lock:
            sample, kind, _ = self.store.undo(self.name)
            if kind == "label":
                if sample in self.improver.taught:
                    self.improver.forget([sample])
                self.n_labels -= 1
                self._since_retrain = max(0, self._since_retrain - 1)
            else:
                self.skipped.discard(sample)
            if sample in self.queue:
                self.queue.remove(sample)
            self.queue.insert(0, sample)
            self.finished = False
        self._changed()

    def accept_guess(self) -> None:
        """Label the current sample with the model's guess (the one shown)."""
        sample = self._require_current()
        guess = self._guesses.get(sample) or next(iter(self.improver.guess([sample])), None)
        if guess is None:
            raise ScanflowError("the model has no guess yet: label a few samples first")
        self.label(guess[0])

    def retrain(self) -> threading.Thread:
        """Start a retrain in the background now (the panel keeps working meanwhile)."""
        with self._lock:
            if self.retraining and self._retraining is not threading.current_thread():
                return self._retraining
            self._since_retrain = 0
            self.message = ("retraining in the background…", False)
            self._retraining = thread = self.improver.retrain_in_background(self._retrained)
        self._changed()  # outside the lock: a view renders under its own lock and reads the session's
        return thread

    def wait(self, timeout: float | None = 600) -> None:
        """Block until background work (retrains, chained ones, queue top-ups, finishing) is done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            busy = [t for t in (self._retraining, self._finishing, self._topping) if t is not None and t.is_alive()]
            if not busy:
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ScanflowError(f"the labeling session is still busy after {timeout} s")
            busy[0].join(left)

    def finish(self) -> threading.Thread:
        """End the session: a final retrain on every label, the score, the session logged to MLflow."""
        with self._lock:
            if self._finishing is not None and self._finishing.is_alive():
                return self._finishing
            self.finished = True
            self._finishing = threading.Thread(target=self._finish, name="scanflow-finish-labeling", daemon=True)
        self._changed()
        self._say("final retrain on all labels…")
        with self._lock:
            self._finishing.start()
        return self._finishing

    # ---- background work
    def _after_label(self) -> None:
        if self.n_labels >= self.budget:
            self.finish()
        elif self._since_retrain >= self.retrain_every and not self.retraining:
            self.retrain()

    def _retrained(self, error) -> None:
        """Runs in the retrain thread when it ends: report, re-rank the queue with the new model."""
        if error is not None:
            self._say(f"retrain failed: {type(error).__name__}: {error}", error=True)
            return
        try:
            self._record_score()
            self._requeue()
        except Exception as exc:  # a thread must not die silently
            self._say(f"after retrain: {type(exc).__name__}: {exc}", error=True)
            return
        self._say(self.score_text())
        if not self.finished and self._since_retrain >= self.retrain_every:
            self.retrain()

    def _finish(self) -> None:
        try:
            if self._retraining is not None:
                self._retraining.join()
            self.improver.retrain()
            self._record_score()
            if self.tracking_uri:
                from .tracking import log_label_session

                metrics = {"score": self.scores[-1][1]} if self.scores else {}
                self.run_id = log_label_session(
                    self.tracking_uri,
                    self.experiment,
                    self.store,
                    self.name,
                    metrics,
                    self.parent_run_id,
                    self.improver.strategy,
                    self.queries,
                )
            if self.on_finish is not None:
                self.on_finish(self)
        except Exception as exc:  # shown in the panel and kept in .errors
            self._say(f"finishing failed: {type(exc).__name__}: {exc}", error=True)
            return
        self._say("finished · " + self.score_text())

    def _record_score(self) -> None:
        if self.test is not None and self.improver.model is not None:
            self.scores.append((self.improver.n_trained, self.improver.score(*self.test)))

    def _requeue(self) -> None:
        """Replace the not-yet-shown part of the queue by the new model's choice."""
        with self._lock:
            keep = self.queue[:1]
            exclude = self._excluded() | set(keep)
        try:
            fresh = self.improver.query_ids(self._queue_size, exclude=exclude).tolist()
        except ValidationError:  # pool exhausted
            fresh = []
        guesses = self._guess(keep + fresh)
        with self._lock:
            in_pool = set(self.improver.pool_ids.tolist())
            head = [i for i in self.queue[:1] if i in in_pool]
            self.queue = head + [i for i in fresh if i not in head and i in in_pool]
            self._guesses = guesses
        self._changed()

    def _refill(self) -> None:
        if self.queue:
            return
        try:
            self.queue = self.improver.query_ids(self._queue_size, exclude=self._excluded()).tolist()
        except ValidationError:  # nothing left but skipped samples
            self.queue = []
        self._guesses = self._guess(self.queue)

    @property
    def _queue_size(self) -> int:
        """Samples queued per query: enough to keep labeling while the next retrain and query run."""
        return 3 * self.retrain_every

    def _guess(self, ids) -> dict:
        """The model's guesses for queued samples, computed in one call so showing a sample costs nothing."""
        return dict(zip(ids, self.improver.guess(ids))) if ids else {}

    def _maybe_top_up(self) -> None:
        """When the queue runs low, query more samples in the background so the panel never waits for it."""
        with self._lock:
            busy = self._topping is not None and self._topping.is_alive()
            if busy or not self.queue or len(self.queue) > self.retrain_every or self.finished:
                return
            self._topping = threading.Thread(target=self._top_up, name="scanflow-queue", daemon=True)
            self._topping.start()

    def _top_up(self) -> None:
        try:
            with self._lock:
                exclude = self._excluded() | set(self.queue)
            try:
                fresh = self.improver.query_ids(self._queue_size, exclude=exclude).tolist()
            except ValidationError:  # nothing more in the pool
                return
            guesses = self._guess(fresh)
            with self._lock:
                in_pool = set(self.improver.pool_ids.tolist())
                self.queue += [i for i in fresh if i in in_pool and i not in self.queue]
                self._guesses.update(guesses)
        except Exception as exc:  # a thread must not die silently
            self._say(f"queueing more samples failed: {type(exc).__name__}: {exc}", error=True)

    def _excluded(self) -> set[int]:
        """Pool ids not to show: skipped ones, and those outside `among`."""
        if self.among is None:
            return set(self.skipped)
        return self.skipped | (set(self.improver.pool_ids.tolist()) - self.among)

    def _require_current(self) -> int:
        sample = self.current
        if sample is None:
            raise ValidationError("nothing left to label: the pool is empty or every remaining sample was skipped")
        return sample

    def _say(self, message: str, error: bool = False) -> None:
        if error:
            self.errors.append(message)
        self.message = (message, error)
        self._changed()

    def score_text(self) -> str:
        """The latest held-out score, or how many labels the model was trained on."""
        if not self.scores:
            return f"model trained on {self.improver.n_trained} labels"
        n, score = self.scores[-1]
        return f"score after retrain on {n} labels: {score:.3f}"

    def guess(self, sample: int):
        """(label, confidence) the model gives `sample`, or None before there is a model."""
        guess = self._guesses.get(sample)
        if guess is None and self.improver.model is not None:
            guess = self._guesses[sample] = self.improver.guess([sample])[0]
        return guess
