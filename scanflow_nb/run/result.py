"""What a run returns: the overall status, each executor's outcome and the MLflow run ids."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from ..events import FAILED


@dataclass
class ExecutorResult:
    key: str
    workflow: str
    name: str
    status: str
    attempts: int = 0
    exit_code: int | None = None
    duration: float | None = None
    run_id: str | None = None
    log_path: str | None = None
    error: str | None = None
    peak_rss_mb: float | None = None  # the largest resident memory it reached, MiB
    cpu_s: float | None = None  # CPU time it used, seconds

    def usage(self) -> str:
        """What it used, e.g. "cpu 1.2 s, peak 310 MiB"; "" when not measured."""
        parts = [f"cpu {self.cpu_s:.2f} s"] if self.cpu_s is not None else []
        parts += [f"peak {self.peak_rss_mb:.0f} MiB"] if self.peak_rss_mb is not None else []
        return ", ".join(parts)


@dataclass
class RunResult:
    workflow: str
    status: str  # succeeded | failed | interrupted
    backend: str
    run_id: str | None
    tracking_uri: str
    experiment: str
    started: float
    duration: float
    executors: dict[str, ExecutorResult] = field(default_factory=dict)
    tracking_errors: list[str] = field(default_factory=list)  # MLflow writes that failed

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def failed(self) -> list[str]:
        return [key for key, r in self.executors.items() if r.status == FAILED]

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "executors": {key: dict(vars(r)) for key, r in self.executors.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        data = dict(data)
        data["executors"] = {k: ExecutorResult(**v) for k, v in data.get("executors", {}).items()}
        return cls(**data)

    def summary(self) -> str:
        """A plain-text table: one line per executor, then where the MLflow runs are."""
        rows = [f"workflow {self.workflow!r} {self.status} in {self.duration:.1f} s on {self.backend}"]
        width = max((len(k) for k in self.executors), default=0)
        for key, r in self.executors.items():
            took = f"{r.duration:6.2f} s" if r.duration is not None else "        "
            tries = f"  attempts={r.attempts}" if r.attempts > 1 else ""
            why = f"  {r.error}" if r.error else ""
            used = f"  {r.usage()}" if r.usage() else ""
            rows.append(f"  {key:<{width}}  {r.status:<9} {took}{used}{tries}{why}")
        rows.append(f"MLflow: experiment {self.experiment!r}, run {self.run_id} at {self.tracking_uri}")
        if self.tracking_errors:
            rows.append(f"MLflow: {len(self.tracking_errors)} write(s) failed:")
            rows += [f"  {error}" for error in self.tracking_errors]
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.summary()

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.summary())

    def _repr_html_(self) -> str:
        colour = {"succeeded": "#2e7d32", "cached": "#1565c0", "failed": "#c62828", "skipped": "#757575"}
        cells = "".join(
            f"<tr><td>{html.escape(k)}</td><td style='color:{colour.get(r.status, '#000')}'>{r.status}</td>"
            f"<td>{'' if r.duration is None else f'{r.duration:.2f} s'}</td><td>{r.usage()}</td><td>{r.attempts}</td>"
            f"<td><code>{r.run_id or ''}</code></td><td>{html.escape(r.error or '')}</td></tr>"
            for k, r in self.executors.items()
        )
        return (
            f"<b>{html.escape(self.workflow)}</b>: {self.status} in {self.duration:.1f} s ({self.backend})"
            "<table><tr><th>executor</th><th>status</th><th>time</th><th>used</th><th>attempts</th><th>MLflow run</th>"
            f"<th>error</th></tr>{cells}</table>MLflow experiment <code>{html.escape(self.experiment)}</code>, "
            f"run <code>{self.run_id}</code> at <code>{html.escape(self.tracking_uri)}</code>"
            + "".join(f"<br><b>MLflow write failed</b>: {html.escape(error)}" for error in self.tracking_errors)
        )
