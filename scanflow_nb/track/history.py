"""Run history: the workflow runs of an app, newest first, read from its MLflow store.

Whatever wrote them (this kernel, another one, `scanflow run`, a kernel since restarted), the runs
are in the app's store, so the history sees them all. The engine's run tree is the source: a
workflow run is a root run tagged `scanflow.kind=workflow`; its executor runs hang below it, directly
or through nested workflow runs, with the executor's parameters and whatever metrics it logged.

The embedded store is SQLite: it is read with one query per table (MLflow's own `search_runs`
builds an object per run and tag and takes about ten times longer); any other store, or a SQLite
file whose tables are not the ones expected, is read through `MlflowClient.search_runs`.
"""

from __future__ import annotations

import html
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NotFoundError, ValidationError
from ..resources import USAGE_METRICS
from .store import get_client, sqlite_path

KIND = "scanflow.kind"
PARENT = "mlflow.parentRunId"
SWEEP = "scanflow.sweep"  # tag of a sweep's root run: listed by the sweep, not in the history
RERUN_OF = "scanflow.rerun_of"  # tag of a re-run's root run: the run it re-ran
BOOKKEEPING = ("attempts", "exit_code")  # metrics the engine logs on every executor run; left out of columns
MEASURED = ("duration_s", *USAGE_METRICS)  # the engine's measures of every executor run: columns after the user's
CACHED = "scanflow.cached."  # root-run tag prefix: CACHED + a cached executor's key -> the run it reused
ROOT_TAGS = ("scanflow.workflow", "scanflow.backend", "scanflow.status", SWEEP, RERUN_OF, CACHED)
EXECUTOR_TAGS = ("scanflow.key", "scanflow.status")
FIXED = ["run_id", "workflow", "start", "duration", "status", "backend", "succeeded", "failed", "cached", "skipped"]


@dataclass
class RunRecord:
    """One MLflow run as the history needs it (times in seconds since the epoch)."""

    run_id: str
    name: str
    experiment: str
    mlflow_status: str
    start: float
    end: float | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def parent(self) -> str | None:
        return self.tags.get(PARENT)

    @property
    def kind(self) -> str | None:
        return self.tags.get(KIND)

    @property
    def status(self) -> str:
        """scanflow's state (succeeded, failed, cached, ...), else MLflow's, lower case."""
        if self.tags.get("scanflow.status"):
            return self.tags["scanflow.status"]
        return "running" if self.mlflow_status in ("RUNNING", "SCHEDULED") else self.mlflow_status.lower()

    @property
    def duration(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.start)


# -- reading the store --------------------------------------------------------------------------
def read_runs(
    uri: str, kinds: Iterable[str], since: float | None = None, tags: Iterable[str] | None = None
) -> list[RunRecord]:
    """Every active run of the given `scanflow.kind`s in the store, started at or after `since`.

    `tags`: the tag keys to read (default: all of them); a key ending in "." stands for every key it starts.
    """
    kinds, tags = tuple(kinds), None if tags is None else (KIND, PARENT, *tags)
    path = sqlite_path(uri)
    if path is not None:
        if not path.is_file():
            return []
        try:
            return _read_sqlite(path, kinds, since, tags)
        except sqlite3.DatabaseError:  # not the schema we know (another MLflow version): the slow, sure way
            pass
    records = _read_mlflow(uri, kinds, since)
    if tags is not None:
        for record in records:
            record.tags = {k: v for k, v in record.tags.items() if _wanted(k, tags)}
    return records


def _wanted(key: str, tags: tuple[str, ...]) -> bool:
    return any(key == tag or (tag.endswith(".") and key.startswith(tag)) for tag in tags)


def _read_sqlite(
    path: Path, kinds: tuple[str, ...], since: float | None, tags: tuple[str, ...] | None
) -> list[RunRecord]:
    chosen = f"""
        SELECT r.run_uuid FROM runs r
        JOIN experiments e ON e.experiment_id = r.experiment_id
        JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = '{KIND}'
        WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active'
          AND k.value IN ({",".join("?" * len(kinds))}) AND r.start_time >= ?"""
    args = (*kinds, int((since or 0) * 1000))
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)) as con:
        rows = con.execute(
            "SELECT r.run_uuid, r.name, e.name, r.status, r.start_time, r.end_time FROM runs r "
            f"JOIN experiments e ON e.experiment_id = r.experiment_id WHERE r.run_uuid IN ({chosen})",
            args,
        ).fetchall()
        records = {
            run_id: RunRecord(run_id, name, experiment, status, start / 1000, end / 1000 if end else None)
            for run_id, name, experiment, status, start, end in rows
        }
        # a few keys: every run's, by the (key, run) index, is faster than the chosen runs' by run
        if tags is None:
            rows = con.execute(f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({chosen})", args)
        else:
            exact, prefixes = [t for t in tags if not t.endswith(".")], [t for t in tags if t.endswith(".")]
            where = " OR ".join([f"key IN ({','.join('?' * len(exact))})", *["substr(key, 1, ?) = ?"] * len(prefixes)])
            found = [n for prefix in prefixes for n in (len(prefix), prefix)]
            rows = con.execute(f"SELECT run_uuid, key, value FROM tags WHERE {where}", (*exact, *found))
        for run_id, key, value in rows:
            if run_id in records:
                records[run_id].tags[key] = value
        for run_id, key, value in con.execute(
            f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({chosen})", args
        ):
            records[run_id].params[key] = value
        for run_id, key, value, is_nan in con.execute(
            f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({chosen})", args
        ):
            records[run_id].metrics[key] = float("nan") if is_nan else value
    return list(records.values())


def _read_mlflow(uri: str, kinds: tuple[str, ...], since: float | None) -> list[RunRecord]:
    client = get_client(uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if not experiments:
        return []
    records = []
    for kind in kinds:
        query = f"tags.`{KIND}` = '{kind}'" + (f" and attributes.start_time >= {int(since * 1000)}" if since else "")
        token = None
        while True:
            page = client.search_runs(list(experiments), query, max_results=50000, page_token=token)
            records += [
                RunRecord(
                    run.info.run_id,
                    run.info.run_name,
                    experiments[run.info.experiment_id],
                    run.info.status,
                    run.info.start_time / 1000,
                    run.info.end_time / 1000 if run.info.end_time else None,
                    dict(run.data.tags),
                    dict(run.data.params),
                    dict(run.data.metrics),
                )
                for run in page
            ]
            token = page.token
            if not token:
                break
    return records


# -- workflow runs ------------------------------------------------------------------------------
@dataclass
class WorkflowRun:
    """A workflow run: its root run, and its executor runs by key ("workflow/executor")."""

    root: RunRecord
    executors: dict[str, RunRecord] = field(default_factory=dict)

    @property
    def workflow(self) -> str:
        return self.root.tags.get("scanflow.workflow", self.root.name)


def workflow_runs(
    uri: str, workflow: str | None = None, last: int | None = None, sweeps: bool = False
) -> list[WorkflowRun]:
    """Workflow runs, newest first: those of `workflow` only if given, the `last` ones if given.

    Sweeps (runs tagged `scanflow.sweep`) are left out unless `sweeps`.
    """
    if last is not None and last < 1:
        raise ValidationError(f"last must be at least 1, got {last}")
    flows = read_runs(uri, ["workflow"], tags=ROOT_TAGS)
    roots = [
        r
        for r in flows
        if not r.parent
        and (sweeps or SWEEP not in r.tags)
        and (workflow is None or r.tags.get("scanflow.workflow") == workflow)
    ]
    roots.sort(key=lambda r: r.start, reverse=True)
    roots = roots[:last] if last else roots
    if not roots:
        return []
    parent = {r.run_id: r.parent for r in flows}
    runs = {r.run_id: WorkflowRun(r) for r in roots}

    def root_of(run_id: str | None) -> str | None:
        for _ in range(1000):  # nesting depth bound; the tree has no cycles
            if run_id is None or run_id in runs:
                return run_id
            run_id = parent.get(run_id)
        return None

    known = {}
    for ex in read_runs(uri, ["executor"], since=min(r.start for r in roots), tags=EXECUTOR_TAGS):
        known[ex.run_id] = ex
        owner = root_of(ex.parent)
        if owner is not None:
            runs[owner].executors[ex.tags.get("scanflow.key", ex.name)] = ex
    for root_id, cached in cached_executors(uri, roots, known).items():
        runs[root_id].executors.update(cached)
    return list(runs.values())


def cached_executors(
    uri: str, roots: Iterable[RunRecord], known: dict[str, RunRecord]
) -> dict[str, dict[str, RunRecord]]:
    """Root run id -> {key: record} of the executors each workflow run found cached.

    A cached executor gets no run of its own: its workflow's root run carries `scanflow.cached.<key>`
    with the id of the run it reused. Its record here is that run's (same code, parameters and inputs,
    so the same params and metrics), with the status "cached" and the root's start as its time.
    `known`: runs already read, by id; the others are read from the store.
    """
    wanted = {
        root.run_id: {k[len(CACHED) :]: v for k, v in root.tags.items() if k.startswith(CACHED)} for root in roots
    }
    missing = {source for keys in wanted.values() for source in keys.values() if source and source not in known}
    if missing:
        known = {
            **known,
            **{r.run_id: r for r in read_runs(uri, ["executor"], tags=EXECUTOR_TAGS) if r.run_id in missing},
        }
    found: dict[str, dict[str, RunRecord]] = {}
    for root in roots:
        for key, source_id in wanted[root.run_id].items():
            source = known.get(source_id)
            tags = {**(source.tags if source else {}), KIND: "executor", PARENT: root.run_id}
            tags.update({"scanflow.key": key, "scanflow.status": "cached", "scanflow.cached_from": source_id})
            found.setdefault(root.run_id, {})[key] = RunRecord(
                source_id,
                key.rsplit("/", 1)[-1],
                root.experiment,
                "FINISHED",
                root.start,
                root.start,
                tags,
                dict(source.params) if source else {},
                dict(source.metrics) if source else {},
            )
    return found


def history(uri: str, workflow: str | None = None, last: int | None = None):
    """A pandas DataFrame, newest first, one row per workflow run (see `App.runs`)."""
    import pandas as pd

    runs = workflow_runs(uri, workflow, last)
    names = _column_prefixes(runs)
    rows, measured = [], {f"{prefix}.{name}" for prefix in names.values() for name in MEASURED}
    for run in runs:
        row: dict[str, Any] = {
            "run_id": run.root.run_id,
            "workflow": run.workflow,
            "start": run.root.start,
            "duration": run.root.duration,
            "status": run.root.status,
            "backend": run.root.tags.get("scanflow.backend"),
        }
        states = [ex.status for ex in run.executors.values()]
        row.update({state: states.count(state) for state in ("succeeded", "failed", "cached", "skipped")})
        if RERUN_OF in run.root.tags:
            row["rerun_of"] = run.root.tags[RERUN_OF]
        for key, ex in run.executors.items():
            prefix = names[key]
            row.update({f"{prefix}.{name}": value for name, value in ex.params.items()})
            row.update({f"{prefix}.{name}": value for name, value in ex.metrics.items() if name not in BOOKKEEPING})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else FIXED)
    frame = frame[FIXED + sorted((c for c in frame.columns if c not in FIXED), key=lambda c: (c in measured, c))]
    if rows:
        frame["start"] = pd.to_datetime(frame["start"], unit="s", utc=True).dt.tz_convert(_local_zone())
    for column in frame.columns:
        if "." in column and not pd.api.types.is_numeric_dtype(frame[column]):
            try:
                frame[column] = pd.to_numeric(frame[column])
            except (ValueError, TypeError):
                pass
    return frame


def _local_zone():
    from datetime import datetime

    return datetime.now().astimezone().tzinfo


def _column_prefixes(runs: list[WorkflowRun]) -> dict[str, str]:
    """Executor key -> its column prefix: the executor's name, or its key where two workflows share a name."""
    keys = {key for run in runs for key in run.executors}
    by_name: dict[str, set[str]] = {}
    for key in keys:
        by_name.setdefault(key.rsplit("/", 1)[-1], set()).add(key)
    return {key: key if len(by_name[key.rsplit("/", 1)[-1]]) > 1 else key.rsplit("/", 1)[-1] for key in keys}


def resolve_run(uri: str, ref: str, kinds: Iterable[str] = ("workflow", "executor")) -> RunRecord:
    """The run whose id is `ref` or starts with it (at least 6 characters), among the app's runs."""
    ref = ref.strip()
    runs = read_runs(uri, kinds)
    matches = [r for r in runs if r.run_id == ref] or [r for r in runs if len(ref) >= 6 and r.run_id.startswith(ref)]
    if not matches:
        hint = "" if len(ref) >= 6 else " (give at least 6 characters of a run id)"
        raise NotFoundError(f"no run {ref!r} in this app's MLflow store{hint}: `%scanflow runs` lists them")
    if len(matches) > 1:
        raise NotFoundError(f"run id prefix {ref!r} is ambiguous: {', '.join(r.run_id for r in matches[:5])}")
    return matches[0]


# -- display ------------------------------------------------------------------------------------
STATE_COLOURS = {"succeeded": "#2e7d32", "cached": "#1565c0", "failed": "#c62828", "interrupted": "#ef6c00"}


class RunTable:
    """The history as the notebook shows it: a compact table (`.frame` is the DataFrame)."""

    def __init__(self, frame):
        self.frame = frame

    def __len__(self) -> int:
        return len(self.frame)

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        extra = [c for c in self.frame.columns if c not in FIXED]
        header = ["run", "workflow", "start", "took", "status", "backend", "executors", *extra]
        rows = []
        for _, r in self.frame.iterrows():
            counts = ", ".join(f"{int(r[s])} {s}" for s in ("succeeded", "failed", "cached", "skipped") if r[s])
            rows.append(
                [
                    str(r["run_id"])[:8],
                    str(r["workflow"]),
                    r["start"].strftime("%Y-%m-%d %H:%M:%S"),
                    "" if r["duration"] != r["duration"] or r["duration"] is None else f"{r['duration']:.1f} s",
                    str(r["status"]),
                    str(r["backend"] or ""),
                    counts,
                    *(_fmt(r[c]) for c in extra),
                ]
            )
        return header, rows

    def __str__(self) -> str:
        if self.frame.empty:
            return "no workflow runs recorded yet"
        header, rows = self._cells()
        widths = [max(len(x) for x in column) for column in zip(header, *rows)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *rows]]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        if self.frame.empty:
            return "<i>no workflow runs recorded yet</i>"
        header, rows = self._cells()
        status = header.index("status")
        body = "".join(
            "<tr>"
            + "".join(
                f"<td style='color:{STATE_COLOURS.get(cell, 'inherit')}'>{html.escape(cell)}</td>"
                if i == status
                else f"<td>{html.escape(cell)}</td>"
                for i, cell in enumerate(row)
            )
            + "</tr>"
            for row in rows
        )
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        return (
            "<div style='max-height:28em;overflow:auto'><table style='font-size:0.85em;white-space:nowrap'>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
            f"<small>{len(rows)} workflow run(s), newest first; <code>app.runs()</code> gives the DataFrame</small>"
        )


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
