"""scanflow.yaml, the app file: read, and written under a lock as a three-way merge of its entries.

Two kernels, or a kernel and a person with an editor, may share one app folder. Every write
happens under a file lock and starts from what is on disk: the file is cut into entries (one per
workflow, one per executor), and each entry is merged on its own between the version this app
last read or wrote (the base), the one in memory (ours) and the one on disk (theirs). An entry
changed on one side only takes that change; changed on both sides differently, it is a conflict,
reported in one line with nothing written. A declaration names the entry it changes, which wins.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from .errors import ConflictError, ScanflowError, ValidationError
from .files import atomic_write, state_dir
from .spec import Workflow

CONFIG = "scanflow.yaml"
LOCK_TIMEOUT_S = 30.0

Key = tuple[str, ...]  # ("workflow", name) or ("executor", workflow, name)
Entries = dict[Key, dict[str, Any]]


def signature(file: Path) -> tuple[int, int, int] | None:
    """What tells a changed file from an unchanged one without reading it (None: no file)."""
    try:
        st = file.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def read(file: Path) -> list[Workflow] | None:
    """The workflows in `file`, or None when there is no file; invalid content is a ValidationError."""
    try:
        text = file.read_text()
    except FileNotFoundError:
        return None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ValidationError(f"{file} is not valid YAML{where}: fix it, or move it away to start afresh") from None
    if not isinstance(data, dict) or not isinstance(data.get("workflows", []), list):
        raise ValidationError(f"{file}: expected a mapping with a 'workflows' list")
    unknown = sorted(set(data) - {"version", "workflows"})
    if unknown:
        raise ValidationError(f"{file}: unknown top-level field(s) {', '.join(unknown)}")
    try:
        return [Workflow.from_dict(w) for w in data.get("workflows") or []]
    except TypeError as exc:
        raise ValidationError(f"{file}: {exc}") from None
    except ScanflowError as exc:
        raise ValidationError(f"{file}: {exc}") from None


def dump(workflows: Iterable[Workflow]) -> str:
    return yaml.safe_dump({"version": 1, "workflows": [wf.to_dict() for wf in workflows]}, sort_keys=False)


@contextmanager
def locked(app_dir: Path, timeout: float = LOCK_TIMEOUT_S):
    """Hold the app file's lock (`.scanflow/scanflow.yaml.lock`) for a read-modify-write."""
    path = state_dir(app_dir) / f"{CONFIG}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConflictError(
                        f"{app_dir / CONFIG} stayed locked by another process for {timeout:g} s: nothing was written"
                    ) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- entries and the merge --------------------------------------------------------------------------
def entries(workflows: Iterable[Workflow]) -> Entries:
    """The app as entries in file order: each workflow (its own fields and parent) and each executor."""
    out: Entries = {}

    def visit(wf: Workflow, parent: str | None) -> None:
        own = {k: v for k, v in wf.to_dict().items() if k not in ("executors", "workflows")}
        out[("workflow", wf.name)] = {**own, "parent": parent}
        for ex in wf.executors:
            out[("executor", wf.name, ex.name)] = ex.to_dict()
        for child in wf.workflows:
            visit(child, wf.name)

    for top in workflows:
        visit(top, None)
    return out


def describe(key: Key) -> str:
    return f"workflow {key[1]!r}" if key[0] == "workflow" else f"executor {key[1]}/{key[2]}"


def merge(base: Entries, ours: Entries, theirs: Entries, decided: Iterable[Key] = ()) -> tuple[Entries, list[Key]]:
    """Three-way merge of entries; returns (result, the keys taken from theirs).

    `decided`: entries a declaration has just set; ours wins for them. Raises ConflictError when
    an entry was changed differently here and on disk.
    """
    decided = set(decided)
    merged: dict[Key, dict[str, Any] | None] = {}
    from_theirs, conflicts = [], []
    for key in {**theirs, **ours, **base}:
        b, o, t = base.get(key), ours.get(key), theirs.get(key)
        if key in decided or t == b or o == t:
            merged[key] = o
        elif o == b:
            merged[key] = t
            from_theirs.append(key)
        else:
            conflicts.append(key)
    if conflicts:
        names = ", ".join(describe(k) for k in conflicts)
        raise ConflictError(
            f"{CONFIG} changed on disk, and {names} changed both there and here: nothing was written; "
            "reopen the app to take the file's version, or declare it again to keep yours"
        )
    result = {key: merged[key] for key in _order(ours, theirs) if merged.get(key) is not None}
    return result, from_theirs


def _order(ours: Entries, theirs: Entries) -> list[Key]:
    """Disk order, with entries only ours inserted after the entry they follow here."""
    order = list(theirs)
    previous: Key | None = None
    for key in ours:
        if key not in order:
            order.insert(order.index(previous) + 1 if previous is not None else len(order), key)
        previous = key
    return order


def workflows(result: Entries) -> list[Workflow]:
    """Entries back into the workflow tree; a ValidationError when they no longer fit together."""
    nodes: dict[str, dict[str, Any]] = {}
    tops: list[dict[str, Any]] = []
    for key, entry in result.items():
        if key[0] == "workflow":
            node = {k: v for k, v in entry.items() if k != "parent"}
            nodes[key[1]] = node
            if entry["parent"] is None:
                tops.append(node)
    for key, entry in result.items():
        if key[0] == "workflow" and entry["parent"] is not None:
            if entry["parent"] not in nodes:
                raise ValidationError(f"workflow {key[1]!r} is inside {entry['parent']!r}, which is gone")
            nodes[entry["parent"]].setdefault("workflows", []).append(nodes[key[1]])
        elif key[0] == "executor":
            if key[1] not in nodes:
                raise ValidationError(f"executor {key[1]}/{key[2]} belongs to workflow {key[1]!r}, which is gone")
            nodes[key[1]].setdefault("executors", []).append(entry)
    return [Workflow.from_dict(node) for node in tops]


def write(file: Path, workflows: Iterable[Workflow]) -> None:
    atomic_write(file, dump(workflows))
