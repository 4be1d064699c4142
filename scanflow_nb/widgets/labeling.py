"""The labeling panel: one sample at a time, a button per class, keyboard shortcuts, background retraining.

Everything the panel does is a plain method (`label`, `skip`, `undo`, `accept_guess`, `press`, `finish`),
so scripts and tests drive it exactly as clicks and key presses do. Every action is written to the label
store before the next sample is shown; reopening the same session replays it.
"""
import html
import io
import threading
from pathlib import Path

import numpy as np

from ..errors import ScanflowError, ValidationError

KEYS = "keys (mouse over the panel): a digit labels · Enter accepts the guess · Backspace undoes · s skips"


def image_png(array, size: int = 160) -> bytes:
    """PNG bytes of a grey (H, W) or colour (H, W, 3|4) array, scaled up without smoothing."""
    from PIL import Image
    a = np.asarray(array, dtype=float)
    lo, hi = float(a.min(initial=0.0)), float(a.max(initial=0.0))
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    elif lo >= 0 and hi <= 255:
        lo, hi = 0.0, 255.0
    scaled = np.clip((a - lo) / ((hi - lo) or 1.0) * 255, 0, 255).astype(np.uint8)
    picture = Image.fromarray(scaled)
    factor = max(1, size // max(scaled.shape[:2]))
    picture = picture.resize((scaled.shape[1] * factor, scaled.shape[0] * factor), Image.NEAREST)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def is_image(sample) -> bool:
    return isinstance(sample, np.ndarray) and (sample.ndim == 2 or (sample.ndim == 3 and sample.shape[2] in (3, 4)))


def sample_html(sample, feature_names=None) -> str:
    """A text sample as wrapped text, a tabular row (array, Series, dict) as a two-column table."""
    if isinstance(sample, str):
        return f"<div style='white-space:pre-wrap;max-width:40em'>{html.escape(sample)}</div>"
    if hasattr(sample, "items"):
        pairs = list(sample.items())
    else:
        values = np.ravel(sample)
        names = feature_names if feature_names is not None else [f"x{i}" for i in range(len(values))]
        pairs = list(zip(names, values))
    rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(str(k))}</th>"
                   f"<td>{html.escape(f'{v:.4g}' if isinstance(v, (float, np.floating)) else str(v))}</td></tr>"
                   for k, v in pairs)
    return f"<table>{rows}</table>"


def _key_map(classes) -> dict[str, object]:
    """Number keys for classes: the class itself when classes are single digits, else 1..9 in order."""
    names = [str(c) for c in classes]
    if all(len(n) == 1 and n.isdigit() for n in names):
        return dict(zip(names, classes))
    return {str(i + 1): c for i, c in enumerate(classes[:9])}


class LabelingPanel:
    """Label an improver's queue by hand; retrains in the background every `retrain_every` labels.

    improver       the Improver whose pool is labeled (its queries choose the samples shown)
    store          a LabelStore or a path to one (default `.scanflow/labels.sqlite` under the current folder)
    session        the session name: reopening a session with the same pool resumes it
    samples        what to show for candidate id i, `samples[i]` (default: the pool itself; e.g. texts)
    budget         labels to give before the panel finishes by itself (default: the whole pool)
    X_test, y_test a held-out set: the model's score is shown after every retrain
    tracking_uri, experiment   where `finish` logs the session (labels CSV, counts, scores) to MLflow
    parent_run_id  nest that run under another (e.g. a closed-loop round)
    among          only these candidate ids are shown (default: the whole pool)
    on_finish      called with the panel after the final retrain (e.g. to let a planner decide)
    """

    def __init__(self, improver, store=None, session: str = "default", samples=None, retrain_every: int = 10,
                 budget: int | None = None, X_test=None, y_test=None, tracking_uri: str | None = None,
                 experiment: str = "labeling", feature_names=None, on_finish=None,
                 parent_run_id: str | None = None, among=None):
        from ..improve import LabelStore
        if not isinstance(retrain_every, int) or retrain_every < 1:
            raise ValidationError(f"retrain_every must be a whole number >= 1, got {retrain_every!r}")
        if (X_test is None) != (y_test is None):
            raise ValidationError("give both X_test and y_test, or neither")
        self.improver = improver
        self.store = store if isinstance(store, LabelStore) else LabelStore(store or Path(".scanflow/labels.sqlite"))
        self.session = session
        self.samples = samples
        self.retrain_every = retrain_every
        self.test = None if X_test is None else (X_test, y_test)
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.feature_names, self.on_finish = feature_names, on_finish
        self.parent_run_id = parent_run_id
        self.among = None if among is None else {int(i) for i in among}
        self.keys = _key_map(improver.classes)
        self.queue: list[int] = []
        self._guesses: dict[int, tuple] = {}
        self.skipped: set[int] = set()
        self.scores: list[tuple[int, float]] = []
        self.errors: list[str] = []
        self.finished = False
        self.run_id: str | None = None
        self._lock = threading.RLock()
        self._retraining: threading.Thread | None = None
        self._finishing: threading.Thread | None = None
        self._topping: threading.Thread | None = None
        self._since_retrain = 0
        self.store.open_session(session, improver.fingerprint(), improver.classes)
        self.n_labels = self._replay()
        self._record_score()
        self.budget = budget if budget is not None else self.n_labels + improver.pool_size
        self._build()
        self._refill()
        self._render()

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
        for sample, kind, label in self.store.actions(self.session):
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

    # ---- actions
    def label(self, value) -> None:
        """Give the current sample the label `value`: stored at once, then the next sample is shown."""
        value = value.item() if isinstance(value, np.generic) else value
        with self._lock:
            sample = self._require_current()
            if value not in self.improver.classes:
                raise ValidationError(f"label {value!r} is not one of the classes {self.improver.classes}")
            self.improver.teach_ids([sample], [value], retrain=False)
            try:
                self.store.add(self.session, sample, value)
            except Exception:
                self.improver.forget([sample])
                raise
            self.queue.pop(0)
            self.n_labels += 1
            self._since_retrain += 1
            self._refill()
        self._render()
        self._maybe_top_up()
        self._after_label()

    def skip(self) -> None:
        """Leave the current sample unlabeled for this session and show the next one."""
        with self._lock:
            sample = self._require_current()
            self.store.add(self.session, sample, kind="skip")
            self.skipped.add(sample)
            self.queue.pop(0)
            self._refill()
        self._render()
        self._maybe_top_up()

    def undo(self) -> None:
        """Take back the latest label or skip (repeatable); its sample is shown again."""
        with self._lock:
            sample, kind, _ = self.store.undo(self.session)
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
        self._render()

    def accept_guess(self) -> None:
        """Label the current sample with the model's guess (the one shown)."""
        sample = self._require_current()
        guess = self._guesses.get(sample) or next(iter(self.improver.guess([sample])), None)
        if guess is None:
            raise ScanflowError("the model has no guess yet: label a few samples first")
        self.label(guess[0])

    def press(self, key: str) -> None:
        """What a key press does; errors are shown in the panel instead of raised."""
        actions = {"Enter": self.accept_guess, "Backspace": self.undo, "s": self.skip, "S": self.skip}
        try:
            if key in self.keys:
                self.label(self.keys[key])
            elif key in actions:
                actions[key]()
        except ScanflowError as exc:
            self._say(str(exc), error=True)

    def retrain(self) -> threading.Thread:
        """Start a retrain in the background now (the panel keeps working meanwhile)."""
        with self._lock:
            if self.retraining and self._retraining is not threading.current_thread():
                return self._retraining
            self._since_retrain = 0
            self._say("retraining in the background…")
            self._retraining = self.improver.retrain_in_background(self._retrained)
            return self._retraining

    def wait(self, timeout: float | None = 60) -> None:
        """Block until background work (retrains, chained ones, queue top-ups, finishing) is done."""
        import time
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            busy = [t for t in (self._retraining, self._finishing, self._topping) if t is not None and t.is_alive()]
            if not busy:
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ScanflowError(f"the labeling panel is still busy after {timeout} s")
            busy[0].join(left)

    def finish(self) -> threading.Thread:
        """End the session: a final retrain on every label, the score, the session logged to MLflow."""
        with self._lock:
            if self._finishing is not None and self._finishing.is_alive():
                return self._finishing
            self.finished = True
            self._finishing = threading.Thread(target=self._finish, name="scanflow-finish-labeling", daemon=True)
        self._render()
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
        self._say(self._score_text())
        if not self.finished and self._since_retrain >= self.retrain_every:
            self.retrain()

    def _finish(self) -> None:
        try:
            if self._retraining is not None:
                self._retraining.join()
            self.improver.retrain()
            self._record_score()
            if self.tracking_uri:
                from ..improve.tracking import log_label_session
                metrics = {"score": self.scores[-1][1]} if self.scores else {}
                self.run_id = log_label_session(self.tracking_uri, self.experiment, self.store, self.session,
                                                metrics, self.parent_run_id)
            if self.on_finish is not None:
                self.on_finish(self)
        except Exception as exc:  # shown in the panel and kept in .errors
            self._say(f"finishing failed: {type(exc).__name__}: {exc}", error=True)
            return
        self._say("finished · " + self._score_text())

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
        self._render()

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

    # ---- the widgets
    def _build(self) -> None:
        import ipywidgets as w
        self._view = w.Box(layout=w.Layout(min_height="170px", align_items="center"))
        self._image = w.Image(format="png")
        self._text = w.HTML()
        self._guess_html = w.HTML()
        self._buttons = []
        for key, cls in ((k, c) for c in self.improver.classes for k in [self._key_of(c)]):
            button = w.Button(description=str(cls), tooltip=f"label as {cls}" + (f" (key {key})" if key else ""),
                              layout=w.Layout(width="auto", min_width="3em"))
            button.add_class(f"scanflow-class-{cls}")
            button.on_click(lambda _, cls=cls: self._from_ui(self.label, cls))
            self._buttons.append(button)
        self._skip_button = w.Button(description="Skip (s)", icon="forward")
        self._undo_button = w.Button(description="Undo (⌫)", icon="undo")
        self._finish_button = w.Button(description="Finish", icon="check", button_style="success")
        self._skip_button.on_click(lambda _: self._from_ui(self.skip))
        self._undo_button.on_click(lambda _: self._from_ui(self.undo))
        self._finish_button.on_click(lambda _: self._from_ui(self.finish))
        self._progress = w.IntProgress(min=0, max=max(1, self.budget), description="labels")
        self._counts = w.HTML()
        self._status = w.HTML()
        self.widget = w.VBox([
            w.HTML(f"<b>Labeling</b> · session <code>{html.escape(self.session)}</code> · "
                   f"strategy {html.escape(self.improver.strategy)}"),
            w.HBox([self._view, self._guess_html], layout=w.Layout(align_items="center", grid_gap="1em")),
            w.HBox(self._buttons, layout=w.Layout(flex_flow="row wrap")),
            w.HBox([self._skip_button, self._undo_button, self._finish_button]),
            w.HBox([self._progress, self._counts]),
            self._status, w.HTML(f"<small>{KEYS}</small>")],
            layout=w.Layout(border="1px solid #ccc", padding="8px", width="fit-content"))
        self.widget.add_class("scanflow-labeling")
        try:
            from ipyevents import Event
        except ImportError:
            self._events = None
            self._say("keyboard shortcuts need the ipyevents package; the buttons work without it")
        else:
            self._events = Event(source=self.widget, watched_events=["keydown"], prevent_default_action=True)
            self._events.on_dom_event(lambda event: self.press(event.get("key", "")))

    def _key_of(self, cls):
        return next((k for k, c in self.keys.items() if c == cls), None)

    def _from_ui(self, action, *args) -> None:
        try:
            action(*args)
        except ScanflowError as exc:
            self._say(str(exc), error=True)

    def _say(self, message: str, error: bool = False) -> None:
        if error:
            self.errors.append(message)
        colour = "#b00020" if error else "#333"
        status = getattr(self, "_status", None)
        if status is not None:
            status.value = f"<span style='color:{colour}'>{html.escape(message)}</span>"

    def _score_text(self) -> str:
        if not self.scores:
            return f"model trained on {self.improver.n_trained} labels"
        n, score = self.scores[-1]
        return f"score after retrain on {n} labels: {score:.3f}"

    def _render(self) -> None:
        if not hasattr(self, "widget"):
            return
        sample = self.current
        idle = sample is None or self.finished
        for button in (*self._buttons, self._skip_button):
            button.disabled = idle
        self._progress.max = max(1, self.budget, self.n_labels)
        self._progress.value = self.n_labels
        left = self.improver.pool_size - len(self.skipped)
        self._counts.value = (f"&nbsp;{self.n_labels} / {self.budget} labeled · {len(self.skipped)} skipped · "
                              f"{max(0, left)} in the pool")
        if sample is None:
            self._text.value = "<i>nothing left to label</i>"
            self._view.children = [self._text]
            self._guess_html.value = ""
            return
        shown = self._shown(sample)
        if is_image(shown):
            self._image.value = image_png(shown)
            self._view.children = [self._image]
        else:
            self._text.value = sample_html(shown, self.feature_names)
            self._view.children = [self._text]
        guess = self._guesses.get(sample)
        if guess is None and self.improver.model is not None:
            guess = self._guesses[sample] = self.improver.guess([sample])[0]
        self._guess_html.value = (f"model guess: <b>{html.escape(str(guess[0]))}</b> ({guess[1]:.0%})"
                                  if guess else "<i>no model yet</i>")

    def _shown(self, sample: int):
        if self.samples is None:
            return self.improver.samples([sample])[0]
        if hasattr(self.samples, "iloc"):
            return self.samples.iloc[sample]
        return self.samples[sample]

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)

