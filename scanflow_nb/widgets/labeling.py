"""The labeling panel: a labeling session shown one sample at a time, a button per class, keyboard shortcuts.

The session (`scanflow_nb.improve.session.LabelingSession`) holds the state and does the work; the panel
draws it (`LabelingView`, an anywidget whose ES module, labeling.js, handles the clicks and keys) and turns
what the front end sends into the session's methods. `label`, `skip`, `undo`, `accept_guess`, `press`,
`add_class` and `finish` are plain methods, so scripts and tests drive the panel exactly as clicks and key
presses do.
"""

import threading
from pathlib import Path

import anywidget
import traitlets as t

from ..errors import ScanflowError
from .fallback import text_repr
from .samples import image_png, is_image, sample_html, sample_view

__all__ = ["KEYS", "LabelingPanel", "LabelingView", "image_png", "is_image", "sample_html"]
HERE = Path(__file__).parent
DIGITS = "1234567890"
KEYS = "keys (pointer over the panel): a digit labels · Enter accepts the guess · Backspace undoes · s skips · + new"


class LabelingView(anywidget.AnyWidget):
    """The panel's front end: what it shows is set from Python, what the person does comes back as messages."""

    _esm = HERE / "labeling.js"
    _css = HERE / "labeling.css"

    heading = t.Unicode("").tag(sync=True)
    sample = t.Dict().tag(sync=True)  # {"id", "image": data URL} or {"id", "html"}; {} when nothing is left
    guess = t.Unicode("").tag(sync=True)
    classes = t.List().tag(sync=True)  # [{"label", "key"}], in the improver's order of classes
    counts = t.Unicode("").tag(sync=True)
    progress = t.Dict().tag(sync=True)  # {"done", "budget"}
    status = t.Dict().tag(sync=True)  # {"text", "error"}
    idle = t.Bool(False).tag(sync=True)  # nothing to label: class buttons, keys and skip do nothing
    help = t.Unicode(KEYS).tag(sync=True)

    def _repr_mimebundle_(self, **kwargs):
        data, metadata = super()._repr_mimebundle_(**kwargs)
        showing = f"; showing sample {self.sample['id']}" if self.sample else "; nothing left to label"
        data["text/plain"] = text_repr(
            f"labeling panel ({self.heading})",
            self.counts + showing,
            "panel.label(value), panel.skip(), panel.undo() and panel.press(key) do what its buttons and keys do",
        )
        return data, metadata


def _key_map(classes, taken: dict | None = None) -> dict[str, object]:
    """Number keys for classes, stable as classes are added: a single-digit class keeps its own digit, the
    others get the free digits 1..9, 0 in order of the classes."""
    keys = dict(taken or {})
    known = set(map(repr, keys.values()))
    for cls in classes:
        name = str(cls)
        if repr(cls) not in known and len(name) == 1 and name.isdigit() and name not in keys:
            keys[name], known = cls, known | {repr(cls)}
    for cls in classes:
        free = [d for d in DIGITS if d not in keys]
        if repr(cls) not in known and free and not (len(str(cls)) == 1 and str(cls).isdigit()):
            keys[free[0]], known = cls, known | {repr(cls)}
    return keys


def _as_class(text: str, classes):
    """A typed class name as the type of the known classes (e.g. "10" -> 10 when classes are integers)."""
    text = text.strip()
    for kind in (int, float):
        if classes and all(isinstance(c, kind) and not isinstance(c, bool) for c in classes):
            try:
                return kind(text)
            except ValueError:
                return text
    return text


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
        self._render_lock = threading.Lock()
        heading = f"session {self.session.name} · strategy {improver.strategy}"
        self.widget = LabelingView(heading=heading, **self._state())  # the first state comes with the widget
        self.widget.add_class("scanflow-labeling")
        self.widget.on_msg(self._on_front_end)
        self.session.watch(self._render)

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

    def add_class(self, name: str) -> None:
        """Label the current sample with a class that was not known when the session started."""
        if not str(name).strip():
            raise ScanflowError("type the name of the new class first")
        self.session.label(_as_class(str(name), self.session.improver.classes))

    def retrain(self) -> threading.Thread:
        return self.session.retrain()

    def finish(self) -> threading.Thread:
        return self.session.finish()

    def wait(self, timeout: float | None = 600) -> None:
        self.session.wait(timeout)

    def press(self, key: str) -> None:
        """What a key press does; errors are shown in the panel instead of raised."""
        actions = {"Enter": self.accept_guess, "Backspace": self.undo, "s": self.skip, "S": self.skip}
        self._from_ui(lambda: self.label(self.keys[key]) if key in self.keys else actions.get(key, lambda: None)())

    # ---- the front end
    def _on_front_end(self, _widget, content, _buffers) -> None:
        """A click or a key in the browser: {"action": "press", "key"} | {"action": "label", "index"} | ..."""
        action = content.get("action") if isinstance(content, dict) else None
        if action == "press":
            self.press(str(content.get("key", "")))
        elif action == "label":
            classes = self.session.improver.classes
            index = content.get("index")
            if isinstance(index, int) and 0 <= index < len(classes):
                self._from_ui(self.label, classes[index])
        elif action == "add":
            self._from_ui(self.add_class, str(content.get("name", "")))
        elif action in ("skip", "undo", "finish"):
            self._from_ui(getattr(self, action))

    def _from_ui(self, action, *args) -> None:
        try:
            action(*args)
        except ScanflowError as exc:
            self.session.errors.append(str(exc))
            self.widget.status = {"text": str(exc), "error": True}

    def _render(self) -> None:
        """Show the session as it is now (called after every change, from whichever thread made it)."""
        with self._render_lock, self.widget.hold_sync():
            for name, value in self._state().items():
                setattr(self.widget, name, value)

    def _state(self) -> dict:
        """What the view shows, as trait values."""
        session = self.session
        classes = list(session.improver.classes)
        self.keys = _key_map(classes, self.keys)
        keys = {repr(c): k for k, c in self.keys.items()}
        sample = session.current
        left = session.improver.pool_size - len(session.skipped)
        guess = session.guess(sample) if sample is not None else None
        state = {
            "classes": [{"label": str(c), "key": keys.get(repr(c))} for c in classes],
            "sample": {}
            if sample is None
            else {"id": int(sample), **sample_view(self._shown(sample), self.feature_names)},
            "guess": f"{guess[0]} ({guess[1]:.0%})" if guess else ("" if sample is None else "no model yet"),
            "idle": sample is None or session.finished,
            "progress": {"done": session.n_labels, "budget": max(1, session.budget, session.n_labels)},
            "counts": f"{session.n_labels} / {session.budget} labeled · {len(session.skipped)} skipped · "
            f"{max(0, left)} in the pool",
        }
        if session.message[0]:
            state["status"] = {"text": session.message[0], "error": session.message[1]}
        return state

    def _shown(self, sample: int):
        if self.samples is None:
            return self.session.improver.samples([sample])[0]
        if hasattr(self.samples, "iloc"):
            return self.samples.iloc[sample]
        return self.samples[sample]

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
