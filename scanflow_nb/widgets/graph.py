"""The live workflow graph: graphviz's drawing made clickable by a small ES module (anywidget).

`dot` lays the workflow out once; while a run goes on the front end only recolours and relabels
the nodes from the synced `nodes` trait, so a run of 1,000 executors never re-runs `dot`.
`GraphWidget.on_event` is an `App.run` listener: it records the event and asks for an update;
updates are coalesced on a short timer thread (at most one per `refresh_interval`), and each one
sends the states, the summary and the progress in a single message, so the summary never
disagrees with the drawing. Log tails go to the front end as they arrive (custom messages), so a
node clicked during a foreground run shows its log although the kernel is busy.

`selected` is synced both ways: a click, the arrow keys, or `widget.selected = "wf/name"` in
Python select an executor, and its details and log tail follow.
"""

from __future__ import annotations

import html
import logging
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

from .. import events as ev
from ..errors import ScanflowError
from ..graph import ExecutorStatus, RunProgress, dot_available, render_svg, text_tree
from ..graph.layout import BORDER, FILL
from ..graph.render import INSTALL_HINT
from ..schedule import resolve
from ..spec import Workflow
from .fallback import text_repr

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
MAX_SILENCE = 3600.0  # stop ticking when a "running" run has sent no event for this long
USAGE_METRICS = {"resource.peak_rss_mb": "peak memory {:.0f} MB", "resource.cpu_s": "CPU {:.1f} s"}


class GraphWidget(anywidget.AnyWidget):
    """A workflow drawn with graphviz, a progress line, and the details of the selected executor.

    Feed it a run's events (`app.run(wf, listeners=[widget.on_event])`) or a finished RunResult
    (`widget.load_result(result)`). Click a node (or use the arrow keys, Enter for the log) to see
    its state, parameters, image, resources, MLflow run and log tail. Without graphviz's `dot` it
    shows a plain-text tree.
    """

    _esm = HERE / "graph.js"
    _css = HERE / "graph.css"

    title = t.Unicode("").tag(sync=True)
    svg = t.Unicode("").tag(sync=True)  # dot's layout; the front end recolours its nodes from `nodes`
    text = t.Unicode("").tag(sync=True)  # the text tree, shown instead when `dot` is missing
    palette = t.Dict().tag(sync=True)  # state -> [fill, border], as graph.layout draws them
    info = t.Dict().tag(sync=True)  # key -> detail rows that do not change during a run
    nodes = t.Dict().tag(sync=True)  # key -> {state, text, started, duration, rows}
    summary = t.Unicode("").tag(sync=True)
    bar = t.Dict().tag(sync=True)  # the progress bar: {done, total, style}
    message = t.Unicode("").tag(sync=True)  # an HTML note: no dot, a drawing error, an empty workflow
    selected = t.Unicode("").tag(sync=True)  # "workflow/executor", or "" for none
    log = t.Unicode("").tag(sync=True)  # the selected executor's log tail
    clock = t.Float(0.0).tag(sync=True)  # kernel time of the last update: the front end ticks durations from it

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
        self.renders = 0  # how many updates were sent to the front end
        self.errors: list[str] = []  # drawing failures, also shown in the widget
        self._lines: dict[str, deque[str]] = {key: deque(maxlen=log_tail) for key in self.progress.keys}
        self._fresh: set[str] = set()  # keys whose log tail changed since the last update
        self._usage: dict[str, dict[str, float]] = {}  # key -> resource metrics read from its MLflow run
        self._timer: threading.Timer | None = None
        self._ticker: threading.Timer | None = None
        self._last_event = time.time()
        self._closed = False
        self._dirty = False
        self._schedule_lock = threading.Lock()
        self._draw_lock = threading.RLock()  # re-entered when an update selects a failed executor
        self._lines_lock = threading.Lock()
        self._static: tuple[dict, str] | None = None  # (snapshot, svg) of the last static rendering
        self._text_mode = False  # no `dot`: the text tree is drawn instead
        state = {
            "title": workflow.name,
            "palette": {state: [FILL[state], BORDER[state]] for state in FILL},
            "info": {key: self._static_rows(key) for key in self.progress.keys},
        }
        if not self.progress.keys:
            state["message"] = _note(
                f"workflow {workflow.name!r} has no executors yet: add one with "
                f"%%scanflow executor NAME --workflow {workflow.name}"
            )
        state.update(self._layout())
        state.update(self._live_state()[0])
        super().__init__(**state)  # the whole first state goes with the widget's creation, not in later updates
        self.renders = 1
        self.observe(self._on_select, names="selected")
        self.on_msg(self._on_front_end)

    # -- feeding it ------------------------------------------------------------------------------
    def on_event(self, event: ev.RunEvent) -> None:
        """An App.run listener: record the event and schedule a (coalesced) update. Thread-safe."""
        self.progress.apply(event)
        self._last_event = time.time()
        with self._lines_lock:
            if event.kind == ev.RUN_STARTED:
                for key, lines in self._lines.items():
                    if lines:
                        lines.clear()
                        self._fresh.add(key)
            elif event.kind == ev.LINE and event.key in self._lines:
                self._lines[event.key].append(event.line or "")
                self._fresh.add(event.key)
            elif event.kind == ev.STARTED and event.key in self._lines:
                self._lines[event.key].clear()
                self._fresh.add(event.key)
        if event.kind == ev.RUN_FINISHED:
            self._cancel_timers()
            self.flush()
            return
        self._schedule()
        if event.kind == ev.RUN_STARTED:
            self._start_ticker()

    def load_result(self, result: Any) -> None:
        """Show the final states of a finished run (an engine RunResult)."""
        self.progress.load_result(result)
        self.tracking_uri = getattr(result, "tracking_uri", None) or self.tracking_uri
        self.flush()

    def flush(self) -> None:
        """Send what changed now. Drawing errors are shown in the widget, never raised."""
        with self._schedule_lock:
            self._dirty = False
        self._safely(self._update)

    def close(self) -> None:
        """Stop the timers, then close the widget."""
        self._closed = True
        if hasattr(self, "_schedule_lock"):  # fully built (close also runs from __del__)
            self._cancel_timers()
        super().close()

    def details_html(self, key: str | None = None) -> str:
        """The details of an executor (default: the selected one) as an HTML table, as the front end shows them."""
        key = key or self.selected
        if not key:
            return ""
        rows = [("state", html.escape(self.progress.status(key).describe(now=time.time())))]
        rows += self._live_rows(key, self.progress.status(key), self._tracking_uri()) + self.info.get(key, [])
        return (
            "<table class='scanflow-details'>"
            + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
            + ("</table>")
        )

    # -- timers ----------------------------------------------------------------------------------
    def _safely(self, draw, *args) -> None:
        with self._draw_lock:
            try:
                draw(*args)
            except Exception as exc:  # a display problem must not break the run that feeds it
                self.message = self._failed(exc)

    def _failed(self, exc: Exception) -> str:
        """Record a drawing failure; the note that says so in the widget."""
        self.errors.append(f"{type(exc).__name__}: {exc}")
        log.error("graph widget update failed:\n%s", traceback.format_exc())
        return _note(f"could not redraw the graph: {exc}", error=True)

    def _schedule(self) -> None:
        with self._schedule_lock:
            self._dirty = True
            if self._timer is None and not self._closed:
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
        self._safely(self._tick)
        self._start_ticker()

    def _tick(self) -> None:
        with self.hold_sync():
            self.summary = self._summary_text(self.progress.summary())
            self.clock = time.time()

    def _cancel_timers(self) -> None:
        with self._schedule_lock:
            for timer in (self._timer, self._ticker):
                if timer is not None:
                    timer.cancel()
            self._timer = self._ticker = None

    # -- what the front end asks for ----------------------------------------------------------------
    @t.validate("selected")
    def _known_executor(self, proposal: Any) -> str:
        """ "wf/name", or a name alone when it is unique; an unknown one is a NotFoundError."""
        ref = proposal["value"]
        return resolve(self.progress.keys, ref) if ref else ""

    def _on_select(self, change: Any) -> None:
        with self._draw_lock:
            self.log = self._log_tail(change["new"]) if change["new"] else ""
        self._read_usage(change["new"])

    def _on_front_end(self, _widget: Any, content: dict, _buffers: Any) -> None:
        """A view was (re)rendered: give it every log tail it has not seen."""
        if isinstance(content, dict) and content.get("kind") == "ready":
            with self._lines_lock:
                tails = {key: list(lines) for key, lines in self._lines.items() if lines}
            if tails:
                self.send({"tails": tails})

    # -- drawing ---------------------------------------------------------------------------------
    def _layout(self) -> dict:
        """The drawing as `dot` lays it out (states as they are now), or the text tree without `dot`."""
        states = self.progress.snapshot()
        self._text_mode = not dot_available()
        if self._text_mode:
            return {
                "message": _note(
                    f"graphviz's `dot` program is not installed, so the graph is shown as text; {INSTALL_HINT}"
                ),
                "text": text_tree(self.workflow, states),
            }
        try:
            svg = render_svg(self.workflow, states)
        except Exception as exc:  # shown in the widget, never raised: the run it follows goes on
            return {"message": self._failed(exc)}
        self._static = (states, svg)
        return {"svg": svg}

    def _live_state(self) -> tuple[dict, dict[str, list[str]]]:
        """Every state, the summary and the progress as trait values; the log tails that changed."""
        snapshot = self.progress.snapshot()
        summary = self.progress.summary()
        uri = self._tracking_uri()
        with self._lines_lock:
            fresh, self._fresh = self._fresh, set()
            tails = {key: list(self._lines[key]) for key in fresh}
        state = {
            "nodes": {key: self._node(key, status, uri) for key, status in snapshot.items()},
            "summary": self._summary_text(summary),
            "bar": {
                "done": summary.done,
                "total": summary.total,
                "style": "danger" if summary.failed else ("success" if summary.finished else "info"),
            },
            "clock": time.time(),
        }
        if self._text_mode:
            state["text"] = text_tree(self.workflow, snapshot)
        return state, tails

    def _update(self) -> None:
        """One message with every state, the summary and the progress (never one without the other); then
        the new log lines."""
        state, tails = self._live_state()
        with self.hold_sync():
            for name, value in state.items():
                setattr(self, name, value)
            if self.selected in tails:
                self.log = "\n".join(tails[self.selected])
        if tails:
            self.send({"tails": tails})
        self.renders += 1
        summary = self.progress.summary()
        if summary.failed and summary.finished and not self.selected:
            self.selected = summary.failed[0]  # a finished run that failed opens on its first failure

    def _summary_text(self, summary: Any) -> str:
        text = summary.text()
        if self.progress.run_error:
            text += f" · {self.progress.run_error}"
        return text

    def _node(self, key: str, status: ExecutorStatus, uri: str | None) -> dict:
        return {
            "state": status.state,
            "text": status.describe(),
            "started": status.started,
            "attempt": status.attempt,
            "running": status.state in (ev.RUNNING, ev.SERVING) and status.duration is None,
            "rows": [list(row) for row in self._live_rows(key, status, uri)],
        }

    def _live_rows(self, key: str, status: ExecutorStatus, uri: str | None) -> list[tuple[str, str]]:
        """Detail rows that change as the executor runs."""
        rows = []
        if status.url:
            rows.append(("serving at", html.escape(status.url)))
        if status.exit_code is not None:
            rows.append(("exit code", str(status.exit_code)))
        if status.error:
            rows.append(("error", f"<span class='sf-error'>{html.escape(status.error)}</span>"))
        rows.append(("MLflow run", self._run_link(status.run_id, uri)))
        usage = self._usage.get(key)
        if usage:
            used = [fmt.format(usage[name]) for name, fmt in USAGE_METRICS.items() if name in usage]
            rows.append(("used", html.escape(", ".join(used))))
        return rows

    def _static_rows(self, key: str) -> list[list[str]]:
        """Detail rows of the executor's declaration: parameters, image, requirements, resources."""
        workflow, name = key.rsplit("/", 1)
        executor = self.workflow.find(workflow).executor(name)
        params = ", ".join(f"{k}={v}" for k, v in executor.parameters.items()) or "none"
        rows = [["parameters", html.escape(params)], ["image", html.escape(_image_of(executor))]]
        if executor.requirements:
            reqs = executor.requirements if isinstance(executor.requirements, str) else " ".join(executor.requirements)
            rows.append(["requirements", html.escape(reqs)])
        resources = _resources_of(executor)
        if resources:
            rows.append(["resources", html.escape(resources)])
        return rows

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

    def _read_usage(self, key: str) -> None:
        """Read what the selected executor used (MLflow metrics `resource.*`) in a background thread."""
        status = self.progress.status(key) if key else None
        uri = self._tracking_uri()
        if status is None or not status.run_id or status.state not in ev.FINAL_STATES or key in self._usage or not uri:
            return

        def read() -> None:
            try:
                from mlflow.tracking import MlflowClient

                from ..check.tracking import ensure_reachable

                ensure_reachable(uri)  # a server that is gone: say so at once rather than after minutes of retries
                metrics = MlflowClient(uri).get_run(status.run_id).data.metrics
                self._usage[key] = {name: metrics[name] for name in USAGE_METRICS if name in metrics}
                if self._usage[key]:
                    self._schedule()
            except Exception as exc:  # the details stay without it; say why in the log
                log.warning("could not read the resources used by %s: %s", key, exc)

        threading.Thread(target=read, name="scanflow-graph-usage", daemon=True).start()

    def _tracking_uri(self) -> str | None:
        return self.tracking_uri or self._guess_tracking_uri()

    @staticmethod
    def _run_link(run_id: str | None, uri: str | None) -> str:
        if not run_id:
            return "not started"
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

    # -- where widgets cannot load ------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any):
        data, metadata = super()._repr_mimebundle_(**kwargs)
        data["text/plain"] = text_repr(
            f"live graph of workflow {self.workflow.name!r}", self._text(), "%scanflow graph --text"
        )
        return data, metadata

    def _text(self) -> str:
        summary = self.progress.summary().text()
        return f"{self.workflow.name}: {summary}\n{text_tree(self.workflow, self.progress.snapshot())}"

    def _static_svg(self) -> str | None:
        """The drawing with the current states, for front ends without widgets (drawn once per state)."""
        if not self.svg:
            return None
        snapshot = self.progress.snapshot()
        if self._static is None or self._static[0] != snapshot:
            self._static = (snapshot, render_svg(self.workflow, snapshot))
        return self._static[1]

    def _repr_svg_(self) -> str | None:
        return self._static_svg()

    def _repr_html_(self) -> str:
        summary = html.escape(self.progress.summary().text())
        svg = self._static_svg()
        if svg:
            return f"<div><p>{html.escape(self.workflow.name)}: {summary}</p>{svg}</div>"
        return f"<pre>{html.escape(self._text())}</pre>"


def _image_of(executor: Any) -> str:
    if executor.image:
        return executor.image
    if executor.dockerfile:
        return f"built from {executor.dockerfile}"
    return "none declared: docker/swarm build one from their base image; local uses this Python"


def _resources_of(executor: Any) -> str:
    """The executor's declared resources (cpus, memory, gpus), where the spec has them."""
    parts = []
    for name, unit in (("cpus", "CPUs"), ("memory", "memory"), ("gpus", "GPUs")):
        value = getattr(executor, name, None)
        if value:
            parts.append(f"memory {value}" if name == "memory" else f"{value} {unit}")
    return ", ".join(parts)


def _note(text: str, error: bool = False) -> str:
    return f"<div class='scanflow-note{' sf-error' if error else ''}'>{html.escape(text)}</div>"
