"""The live workflow graph: an ipywidgets view of a workflow that follows a run's events.

`GraphWidget.on_event` is an `App.run` listener. It only records the event and asks for a
redraw; redraws are coalesced on a short timer thread, so a burst of log lines never re-runs
`dot`, and the run's thread is never held up by drawing. The final event redraws at once.
While a run goes on, a ticker refreshes the elapsed time in the summary (without redrawing).
"""

from __future__ import annotations

import html
import logging
import threading
import time
import traceback
from collections import deque
from typing import Any

import ipywidgets as widgets

from .. import events as ev
from ..errors import ScanflowError
from ..graph import RunProgress, Summary, dot_available, render_svg, text_tree
from ..graph.render import INSTALL_HINT
from ..spec import Workflow

log = logging.getLogger(__name__)
NO_SELECTION = "(select an executor)"
MAX_SILENCE = 3600.0  # stop ticking when a "running" run has sent no event for this long


class GraphWidget(widgets.VBox):
    """A workflow drawn with graphviz, a progress line, and the details of a selected executor.

    Feed it a run's events (`app.run(wf, listeners=[widget.on_event])`) or a finished RunResult
    (`widget.load_result(result)`). Without graphviz's `dot` it shows a plain-text tree.
    """

    def __init__(
        self,
        workflow: Workflow,
        app: Any = None,
        *,
        refresh_interval: float = 0.3,
        tick_interval: float = 1.0,
        log_tail: int = 30,
    ):
        if not isinstance(workflow, Workflow):
            raise ScanflowError(f"GraphWidget needs a Workflow, got {type(workflow).__name__}")
        self.workflow, self.app = workflow, app
        self.progress = RunProgress(workflow)
        self.refresh_interval, self.tick_interval, self.log_tail = refresh_interval, tick_interval, log_tail
        self.tracking_uri: str | None = None
        self.renders = 0  # how many times the graph was drawn
        self.errors: list[str] = []  # drawing failures, also shown in the widget
        self._lines: dict[str, deque[str]] = {key: deque(maxlen=log_tail) for key in self.progress.keys}
        self._timer: threading.Timer | None = None
        self._ticker: threading.Timer | None = None
        self._last_event = time.time()
        self._closed = False
        self._graph_dirty = False
        self._schedule_lock = threading.Lock()
        self._draw_lock = threading.RLock()  # re-entered when _draw selects a failed executor
        self._lines_lock = threading.Lock()
        self._svg: str | None = None

        self.bar = widgets.IntProgress(
            min=0, max=max(1, len(self.progress.keys)), value=0, layout=widgets.Layout(width="160px")
        )
        self.summary = widgets.HTML()
        self.message = widgets.HTML()
        self.graph = widgets.HTML(layout=widgets.Layout(overflow="auto", max_height="640px"))
        self.selector = widgets.Dropdown(
            options=[NO_SELECTION, *self.progress.keys],
            value=NO_SELECTION,
            description="executor",
            layout=widgets.Layout(width="max-content"),
        )
        self.details = widgets.HTML()
        self.log_view = widgets.HTML()
        super().__init__(
            [
                widgets.HBox([self.bar, self.summary]),
                self.message,
                self.graph,
                self.selector,
                self.details,
                self.log_view,
            ]
        )
        self.add_class("scanflow-graph")
        self.selector.observe(self._on_select, names="value")
        if not self.progress.keys:
            self.message.value = _note(
                f"workflow {workflow.name!r} has no executors yet: add one with "
                f"%%scanflow executor NAME --workflow {workflow.name}"
            )
        self.flush()

    # -- feeding it ------------------------------------------------------------------------------
    def on_event(self, event: ev.RunEvent) -> None:
        """An App.run listener: record the event and schedule a (coalesced) redraw. Thread-safe."""
        changed = self.progress.apply(event)
        self._last_event = time.time()
        with self._lines_lock:
            if event.kind == ev.RUN_STARTED:
                for lines in self._lines.values():
                    lines.clear()
            elif event.kind == ev.LINE and event.key in self._lines:
                self._lines[event.key].append(event.line or "")
            elif event.kind == ev.STARTED and event.key in self._lines:
                self._lines[event.key].clear()
        if event.kind == ev.RUN_FINISHED:
            self._cancel_timers()
            with self._schedule_lock:
                self._graph_dirty = True
            self.flush()
            return
        self._schedule(graph=changed)
        if event.kind == ev.RUN_STARTED:
            self._start_ticker()

    def load_result(self, result: Any) -> None:
        """Show the final states of a finished run (an engine RunResult)."""
        self.progress.load_result(result)
        self.tracking_uri = getattr(result, "tracking_uri", None) or self.tracking_uri
        self._graph_dirty = True
        self.flush()

    def flush(self) -> None:
        """Redraw now whatever changed. Drawing errors are shown in the widget, never raised."""
        with self._schedule_lock:
            graph, self._graph_dirty = self._graph_dirty or self._svg is None, False
        self._safely(self._draw, graph)

    def close(self) -> None:
        """Stop the timers, then close the widget and its children."""
        self._closed = True
        if hasattr(self, "log_view"):  # fully built (close also runs from __del__)
            self._cancel_timers()
            for child in (
                self.bar,
                self.summary,
                self.message,
                self.graph,
                self.selector,
                self.details,
                self.log_view,
                self.children[0],
            ):
                child.close()
        super().close()

    def _safely(self, draw, *args) -> None:
        with self._draw_lock:
            try:
                draw(*args)
            except Exception as exc:  # a display problem must not break the run that feeds it
                self.errors.append(f"{type(exc).__name__}: {exc}")
                log.error("graph widget redraw failed:\n%s", traceback.format_exc())
                self.message.value = _note(f"could not redraw the graph: {exc}", error=True)

    def _schedule(self, graph: bool) -> None:
        with self._schedule_lock:
            self._graph_dirty |= graph
            if self._timer is None:
                self._timer = threading.Timer(self.refresh_interval, self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def _on_timer(self) -> None:
        with self._schedule_lock:
            self._timer = None
        self.flush()

    def _start_ticker(self) -> None:
        with self._schedule_lock:
            if self._ticker is None and not self._closed:
                self._ticker = threading.Timer(self.tick_interval, self._on_tick)
                self._ticker.daemon = True
                self._ticker.start()

    def _on_tick(self) -> None:
        with self._schedule_lock:
            self._ticker = None
        running = self.progress.started is not None and self.progress.finished is None
        if self._closed or not running or time.time() - self._last_event > MAX_SILENCE:
            return
        self._safely(self._draw_summary)
        self._start_ticker()

    def _cancel_timers(self) -> None:
        with self._schedule_lock:
            for timer in (self._timer, self._ticker):
                if timer is not None:
                    timer.cancel()
            self._timer = self._ticker = None

    def _on_select(self, change: Any) -> None:
        with self._draw_lock:
            self._show_selection()

    # -- drawing ---------------------------------------------------------------------------------
    def _draw_summary(self) -> Summary:
        summary = self.progress.summary()
        self.bar.value = summary.done
        self.bar.bar_style = "danger" if summary.failed else ("success" if summary.finished else "info")
        text = html.escape(summary.text())
        if self.progress.run_error:
            text += f" · <b style='color:#b8322a'>{html.escape(self.progress.run_error)}</b>"
        self.summary.value = f"<span class='scanflow-summary'>{text}</span>"
        return summary

    def _draw(self, graph: bool) -> None:
        summary = self._draw_summary()
        if graph:
            self._draw_graph()
        if summary.failed and self.selector.value == NO_SELECTION and summary.finished:
            self.selector.value = summary.failed[0]  # a failed run opens on its first failure
        else:
            self._show_selection()

    def _draw_graph(self) -> None:
        states = self.progress.snapshot()
        if dot_available():
            self._svg = render_svg(self.workflow, states)
            self.graph.value = f"<div class='scanflow-graph-svg'>{self._svg}</div>"
        else:
            self._svg = ""
            self.message.value = _note(
                f"graphviz's `dot` program is not installed, so the graph is shown as text; {INSTALL_HINT}"
            )
            self.graph.value = f"<pre class='scanflow-graph-text'>{html.escape(text_tree(self.workflow, states))}</pre>"
        self.renders += 1

    def _show_selection(self) -> None:
        key = self.selector.value
        if key == NO_SELECTION:
            self.details.value = self.log_view.value = ""
            return
        workflow, name = key.rsplit("/", 1)
        executor = self.workflow.find(workflow).executor(name)
        status = self.progress.status(key)
        rows = [("state", html.escape(status.describe()))]
        if status.exit_code is not None:
            rows.append(("exit code", str(status.exit_code)))
        if status.error:
            rows.append(("error", f"<span style='color:#b8322a'>{html.escape(status.error)}</span>"))
        params = ", ".join(f"{k}={v}" for k, v in executor.parameters.items()) or "none"
        rows.append(("parameters", html.escape(params)))
        rows.append(("image", html.escape(_image_of(executor))))
        if executor.requirements:
            reqs = executor.requirements if isinstance(executor.requirements, str) else " ".join(executor.requirements)
            rows.append(("requirements", html.escape(reqs)))
        rows.append(("MLflow run", self._run_link(status.run_id)))
        self.details.value = (
            "<table class='scanflow-details'>"
            + "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td>{v}</td></tr>" for k, v in rows)
            + "</table>"
        )
        tail = self._log_tail(key)
        self.log_view.value = (
            f"<pre class='scanflow-log' style='max-height:240px;overflow:auto'>{html.escape(tail)}</pre>"
            if tail
            else "<i>no output yet</i>"
        )

    def _log_tail(self, key: str) -> str:
        with self._lines_lock:
            lines = list(self._lines.get(key, ()))
        if not lines and self.app is not None:
            path = self.app.log_path(key)
            if path.is_file():
                with open(path, "rb") as f:
                    f.seek(max(0, path.stat().st_size - 64_000))
                    lines = f.read().decode("utf-8", errors="replace").splitlines()[-self.log_tail :]
        return "\n".join(lines)

    def _run_link(self, run_id: str | None) -> str:
        if not run_id:
            return "not started"
        uri = self.tracking_uri or self._guess_tracking_uri()
        if uri and uri.startswith("http"):
            url = f"{uri.rstrip('/')}/#/runs/{run_id}"
            return f"<a href='{html.escape(url)}' target='_blank'>{run_id}</a>"
        if uri:
            store = "the app's embedded store" if uri.startswith("sqlite") else html.escape(uri)
            browse = html.escape(f"mlflow ui --backend-store-uri {uri}")
            return f"<code>{run_id}</code> in {store}<br><small>browse it: <code>{browse}</code></small>"
        return f"<code>{run_id}</code>"

    def _guess_tracking_uri(self) -> str | None:
        """The tracking URI without starting anything: the embedded store, or a fixed server port."""
        if self.app is None:
            return None
        try:
            tracker = self.app.root_of(self.workflow.name).tracker or self.workflow.tracker
        except ScanflowError:
            tracker = self.workflow.tracker
        if tracker is None or tracker.embedded:
            from ..track.store import embedded_uri

            return embedded_uri(self.app.state_dir)
        return f"http://{tracker.host}:{tracker.port}" if tracker.port else None

    # -- static renderings -------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        data = super()._repr_mimebundle_(**kwargs)
        data["text/plain"] = self._text()  # terminals and text exports get the tree
        return data

    def _text(self) -> str:
        summary = self.progress.summary().text()
        return f"{self.workflow.name}: {summary}\n{text_tree(self.workflow, self.progress.snapshot())}"

    def _repr_svg_(self) -> str | None:
        return self._svg or None

    def _repr_html_(self) -> str:
        summary = html.escape(self.progress.summary().text())
        if self._svg:
            return f"<div><p>{html.escape(self.workflow.name)}: {summary}</p>{self._svg}</div>"
        return f"<pre>{html.escape(self._text())}</pre>"


def _image_of(executor: Any) -> str:
    if executor.image:
        return executor.image
    if executor.dockerfile:
        return f"built from {executor.dockerfile}"
    return "none declared: docker/swarm build one from their base image; local uses this Python"


def _note(text: str, error: bool = False) -> str:
    colour = "#b8322a" if error else "#6b6b6b"
    return f"<div class='scanflow-note' style='color:{colour}'>{html.escape(text)}</div>"
