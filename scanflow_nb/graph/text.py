"""The plain-text tree of a workflow: the fallback where graphviz's `dot` is missing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..spec import Executor, Workflow
from .layout import _special_label
from .status import ExecutorStatus, as_statuses


def text_tree(workflow: Workflow, states: Mapping[str, Any] | None = None) -> str:
    """The workflow as an indented tree in run order, one executor a line with its state."""
    statuses = as_statuses(states)
    lines = [_workflow_line(workflow)]
    _add_children(workflow, statuses, lines, prefix="")
    return "\n".join(lines)


def _workflow_line(wf: Workflow) -> str:
    notes = ["parallel" if wf.parallel else "sequential"]
    for kind in ("tracker", "checker", "improver", "planner"):
        special = getattr(wf, kind)
        if special is not None:
            notes.append(_special_label(kind, special).replace("\n", ": ", 1))
    return f"{wf.name}  ({'; '.join(notes)})"


def _add_children(wf: Workflow, statuses: dict[str, ExecutorStatus], lines: list[str], prefix: str) -> None:
    names = wf.order()
    if not names:
        lines.append(prefix + "└── (no executors yet)")
        return
    for i, name in enumerate(names):
        last = i == len(names) - 1
        branch, indent = ("└── ", "    ") if last else ("├── ", "│   ")
        child = wf.executor(name) or wf.find(name)
        if isinstance(child, Executor):
            status = statuses.get(f"{wf.name}/{name}", ExecutorStatus())
            after = f"  after {', '.join(child.depends_on)}" if child.depends_on else ""
            lines.append(f"{prefix}{branch}{name}  [{status.describe()}]{after}")
        else:
            lines.append(prefix + branch + _workflow_line(child))
            _add_children(child, statuses, lines, prefix + indent)
