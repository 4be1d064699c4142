"""The live view of a sweep: its trials as they end, the best one so far in bold.

`add(trial)` only sets an HTML widget's value, so it is safe from whatever thread reports trials.
"""

from __future__ import annotations

import html
import threading

import ipywidgets as W

from ..experiments.sweep import SweepResult, Trial, trials_html


class SweepView(W.VBox):
    """Trials of one sweep; `add` is the `on_trial` callback of `App.sweep`."""

    def __init__(self, executor: str, metric: str | None, direction: str = "minimize", **kwargs) -> None:
        self.head = W.HTML(f"<b>sweep of {html.escape(executor)}</b>: waiting for the first trial to end")
        self.table = W.HTML("")
        super().__init__([self.head, self.table], **kwargs)
        self.executor, self.metric, self.direction = executor, metric, direction
        self.trials: list[Trial] = []
        self._lock = threading.Lock()

    def add(self, trial: Trial) -> None:
        with self._lock:
            self.trials.append(trial)
            result = SweepResult(self.executor, "", self.metric, self.direction, list(self.trials))
            best = result.best_or_none() if self.metric else None
            done = sum(t.status == "succeeded" for t in self.trials)
            text = f"<b>sweep of {html.escape(self.executor)}</b>: {len(self.trials)} trial(s) ended, {done} succeeded"
            if best is not None:
                text += f"; best {html.escape(self.metric)} = {best.metric:.6g} (trial {best.number})"
            self.head.value = text
            self.table.value = trials_html(self.trials, self.metric, best)
