"""The labeling panel: a labeling session shown one sample at a time, a button per class, keyboard shortcuts.

The session (`scanflow_nb.improve.session.LabelingSession`) holds the state and does the work; the panel
draws it and turns clicks and keys into its methods. `label`, `skip`, `undo`, `accept_guess`, `press` and
`finish` are plain methods, so scripts and tests drive the panel exactly as clicks and key presses do.
"""

import html
import io
import threading

import numpy as np

from ..errors import ScanflowError

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
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(str(k))}</th>"
        f"<td>{html.escape(f'{v:.4g}' if isinstance(v, (float, np.floating)) else str(v))}</td></tr>"
        for k, v in pairs
    )
    return f"<table>{rows}</table>"


def _key_map(classes) -> dict[str, object]:
    """Number keys for classes: the class itself when classes are single digits, else 1..9 in order."""
    names = [str(c) for c in classes]
    if all(len(n) == 1 and n.isdigit() for n in names):
        return dict(zip(names, classes))
    return {str(i + 1): c for i, c in enumerate(classes[:9])}


class LabelingPanel:
    """Label an improver's queue by hand; retrains in the background every `retrain_every` labels.

    Takes the options of `LabelingSession` (improver, store, session, retrain_every, budget, X_test, y_test,
    tracking_uri, experiment, on_finish, parent_run_id, among) and, for showing samples:
    samples        what to show for candidate id i, `samples[i]` (default: the pool itself; e.g. texts)
    feature_names  row labels when a sample is shown as a table
    """

    # session state readable on the panel too
    STATE = (
        "current",
        "n_labels",
        "scores",
        "errors",
        "finished",
        "retraining",
        "run_id",
        "skipped",
        "improver",
        "budget",
        "store",
        "retrain_every",
        "tracking_uri",
        "experiment",
    )

    def __init__(self, improver, samples=None, feature_names=None, **session_options):
        from ..improve import LabelingSession

        self.samples, self.feature_names = samples, feature_names
        self.session = LabelingSession(improver, **session_options)
        self.keys = _key_map(improver.classes)
        self._build()
        self.session.watch(self._render)
        self._render()

    def __getattr__(self, name: str):
        if name in LabelingPanel.STATE:
            return getattr(self.session, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ---- what clicks and keys do
    def label(self, value) -> None:
        self.session.label(value)

    def skip(self) -> None:
        self.session.skip()

    def undo(self) -> None:
        self.session.undo()

    def accept_guess(self) -> None:
        self.session.accept_guess()

    def retrain(self) -> threading.Thread:
        return self.session.retrain()

    def finish(self) -> threading.Thread:
        return self.session.finish()

    def wait(self, timeout: float | None = 60) -> None:
        self.session.wait(timeout)

    def press(self, key: str) -> None:
        """What a key press does; errors are shown in the panel instead of raised."""
        actions = {"Enter": self.accept_guess, "Backspace": self.undo, "s": self.skip, "S": self.skip}
        self._from_ui(lambda: self.label(self.keys[key]) if key in self.keys else actions.get(key, lambda: None)())

    # ---- the widgets
    def _build(self) -> None:
        import ipywidgets as w

        session = self.session
        self._view = w.Box(layout=w.Layout(min_height="170px", align_items="center"))
        self._image = w.Image(format="png")
        self._text = w.HTML()
        self._guess_html = w.HTML()
        self._buttons = []
        for key, cls in ((k, c) for c in session.improver.classes for k in [self._key_of(c)]):
            button = w.Button(
                description=str(cls),
                tooltip=f"label as {cls}" + (f" (key {key})" if key else ""),
                layout=w.Layout(width="auto", min_width="3em"),
            )
            button.add_class(f"scanflow-class-{cls}")
            button.on_click(lambda _, cls=cls: self._from_ui(self.label, cls))
            self._buttons.append(button)
        self._skip_button = w.Button(description="Skip (s)", icon="forward")
        self._undo_button = w.Button(description="Undo (⌫)", icon="undo")
        self._finish_button = w.Button(description="Finish", icon="check", button_style="success")
        self._skip_button.on_click(lambda _: self._from_ui(self.skip))
        self._undo_button.on_click(lambda _: self._from_ui(self.undo))
        self._finish_button.on_click(lambda _: self._from_ui(self.finish))
        self._progress = w.IntProgress(min=0, max=max(1, session.budget), description="labels")
        self._counts = w.HTML()
        self._status = w.HTML()
        self.widget = w.VBox(
            [
                w.HTML(
                    f"<b>Labeling</b> · session <code>{html.escape(session.name)}</code> · "
                    f"strategy {html.escape(session.improver.strategy)}"
                ),
                w.HBox([self._view, self._guess_html], layout=w.Layout(align_items="center", grid_gap="1em")),
                w.HBox(self._buttons, layout=w.Layout(flex_flow="row wrap")),
                w.HBox([self._skip_button, self._undo_button, self._finish_button]),
                w.HBox([self._progress, self._counts]),
                self._status,
                w.HTML(f"<small>{KEYS}</small>"),
            ],
            layout=w.Layout(border="1px solid #ccc", padding="8px", width="fit-content"),
        )
        self.widget.add_class("scanflow-labeling")
        try:
            from ipyevents import Event
        except ImportError:
            self._events = None
            self._status.value = "keyboard shortcuts need the ipyevents package; the buttons work without it"
        else:
            self._events = Event(source=self.widget, watched_events=["keydown"], prevent_default_action=True)
            self._events.on_dom_event(lambda event: self.press(event.get("key", "")))

    def _key_of(self, cls):
        return next((k for k, c in self.keys.items() if c == cls), None)

    def _from_ui(self, action, *args) -> None:
        try:
            action(*args)
        except ScanflowError as exc:
            self.session.errors.append(str(exc))
            self._show_status(str(exc), error=True)

    def _show_status(self, message: str, error: bool) -> None:
        colour = "#b00020" if error else "#333"
        self._status.value = f"<span style='color:{colour}'>{html.escape(message)}</span>" if message else ""

    def _render(self) -> None:
        session = self.session
        sample = session.current
        idle = sample is None or session.finished
        for button in (*self._buttons, self._skip_button):
            button.disabled = idle
        self._progress.max = max(1, session.budget, session.n_labels)
        self._progress.value = session.n_labels
        left = session.improver.pool_size - len(session.skipped)
        self._counts.value = (
            f"&nbsp;{session.n_labels} / {session.budget} labeled · {len(session.skipped)} skipped · "
            f"{max(0, left)} in the pool"
        )
        if session.message[0]:
            self._show_status(*session.message)
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
        guess = session.guess(sample)
        self._guess_html.value = (
            f"model guess: <b>{html.escape(str(guess[0]))}</b> ({guess[1]:.0%})" if guess else "<i>no model yet</i>"
        )

    def _shown(self, sample: int):
        if self.samples is None:
            return self.session.improver.samples([sample])[0]
        if hasattr(self.samples, "iloc"):
            return self.samples.iloc[sample]
        return self.samples[sample]

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
