"""The drift monitor: a timeline of batch scores and p-values with the alpha line and an alert.

Thread-safe: the watcher thread calls `add(record)`; the monitor only sets widget traits (an
Image's bytes, HTML strings), never `with output:`. The plot is drawn with matplotlib's
object API (no pyplot state) on the Agg canvas, one figure at a time (matplotlib's text
layout is not thread-safe).
"""

from __future__ import annotations

import html
import io
import threading

import ipywidgets as W

_ALERT = (
    "<div style='background:#c62828;color:white;padding:6px 10px;border-radius:4px;font-weight:bold'>"
    "DRIFT: {text}</div>"
)
_DRAWING = threading.Lock()
_OK = "<div style='background:#2e7d32;color:white;padding:6px 10px;border-radius:4px'>{text}</div>"


class DriftMonitor(W.VBox):
    """Shows every checked batch of a Watcher (or records given to `add`)."""

    def __init__(self, watcher=None, max_points: int = 200, **kwargs) -> None:
        self.alert = W.HTML(_OK.format(text="no batch checked yet"))
        self.plot = W.Image(format="png")
        self.info = W.HTML("")
        super().__init__([self.alert, self.plot, self.info], **kwargs)
        self.max_points = max_points
        self.points: list[dict] = []
        self._lock = threading.Lock()
        self.watcher = watcher
        if watcher is not None:
            for record in list(watcher.records):
                self._append(record)
            watcher.add_callback("result", self.add)
            watcher.add_callback("error", self.note)
            self._render()

    def _append(self, record) -> None:
        result = record.result
        point = {
            "batch": record.batch_run_id,
            "check": record.check_run_id,
            "error": record.error,
            "score": result.score if result else None,
            "p_value": result.p_value if result else None,
            "drift": bool(result and result.is_drift),
            "alpha": result.alpha if result else None,
        }
        with self._lock:
            self.points.append(point)
            del self.points[: -self.max_points]

    def add(self, record) -> None:
        """Add one checked batch (a watcher CheckRecord) and redraw."""
        self._append(record)
        self._render()

    def note(self, message: str) -> None:
        """Show a problem (e.g. tracker unreachable) under the plot."""
        self.info.value = f"<span style='color:#b26a00'>{html.escape(str(message))}</span>"

    def _render(self) -> None:
        with self._lock:
            points = list(self.points)
        drifts = [p for p in points if p["drift"]]
        if points and points[-1]["drift"]:
            last = points[-1]
            text = (
                f"batch run {last['batch']} (p = {last['p_value']:.2g}); {len(drifts)} of {len(points)} batches drifted"
            )
            self.alert.value = _ALERT.format(text=html.escape(text))
        else:
            self.alert.value = _OK.format(
                text=html.escape(
                    f"{len(points)} batches checked, {len(drifts)} drifted" if points else "no batch checked yet"
                )
            )
        self.info.value = ""
        with _DRAWING:
            png = self.figure_png(points)
        self.plot.value = png

    @staticmethod
    def figure_png(points: list[dict]) -> bytes:
        """The timeline as PNG bytes: batch score on top, p-value (log) with the alpha line below."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 3.6), dpi=80)
        top, bottom = fig.subplots(2, 1, sharex=True)
        scored = [(i, p) for i, p in enumerate(points) if p["score"] is not None]
        xs = [i for i, _ in scored]
        colors = ["#c62828" if p["drift"] else "#1565c0" for _, p in scored]
        top.plot(xs, [p["score"] for _, p in scored], color="#9e9e9e", lw=1)
        top.scatter(xs, [p["score"] for _, p in scored], c=colors, s=18, zorder=3)
        top.set_ylabel("batch score")
        bottom.plot(xs, [max(p["p_value"], 1e-6) for _, p in scored], color="#9e9e9e", lw=1)
        bottom.scatter(xs, [max(p["p_value"], 1e-6) for _, p in scored], c=colors, s=18, zorder=3)
        bottom.set_yscale("log")
        bottom.set_ylim(1e-6 / 2, 1.5)
        if scored:
            bottom.axhline(scored[-1][1]["alpha"], color="#c62828", ls="--", lw=1, label="alpha")
            bottom.legend(loc="lower left", fontsize=8)
        bottom.set_ylabel("p-value")
        bottom.set_xlabel("batch")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
