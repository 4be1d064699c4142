"""Rendering a workflow graph with graphviz's `dot`: SVG text for displays, and files."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import graphviz

from ..errors import ScanflowError, ValidationError
from ..files import atomic_write
from ..spec import Workflow
from .layout import to_digraph

FORMATS = {".svg": "svg", ".png": "png", ".gv": None, ".dot": None}
INSTALL_HINT = (
    "install graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; "
    "conda: conda install graphviz)"
)


class GraphvizMissing(ScanflowError):
    """Graphviz's `dot` program, needed to draw SVG or PNG, is not installed."""


def dot_available() -> bool:
    """True if graphviz's `dot` program is on PATH."""
    return shutil.which("dot") is not None


def render(graph: graphviz.Digraph, fmt: str, what: str) -> bytes:
    """Run `dot` on a Digraph; a missing `dot` or a dot failure is a one-line ScanflowError."""
    try:
        return graph.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise GraphvizMissing(
            f"cannot draw {what}: graphviz's `dot` program is not installed; {INSTALL_HINT}"
        ) from None
    except (graphviz.CalledProcessError, subprocess.CalledProcessError) as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise ScanflowError(f"graphviz failed to draw {what}: {detail[-1] if detail else exc}") from None


def render_svg(workflow: Workflow, states: Mapping[str, Any] | None = None) -> str:
    """The workflow graph as an inline <svg> element (no XML prolog), ready for HTML."""
    svg = render(to_digraph(workflow, states), "svg", f"workflow {workflow.name!r}").decode("utf-8")
    return svg[svg.index("<svg") :]


def save_graph(workflow: Workflow, path: str | os.PathLike, states: Mapping[str, Any] | None = None) -> Path:
    """Write the graph to `path`: .svg or .png (drawn by `dot`), .gv/.dot (graphviz source).

    The file appears complete or not at all.
    """
    target = Path(path).expanduser()
    suffix = target.suffix.lower()
    if suffix not in FORMATS:
        raise ValidationError(f"cannot save a graph as {target.name!r}: use a name ending in {', '.join(FORMATS)}")
    graph = to_digraph(workflow, states)
    fmt = FORMATS[suffix]
    data = graph.source.encode("utf-8") if fmt is None else render(graph, fmt, str(target))
    try:
        atomic_write(target, data)
    except OSError as exc:
        raise ScanflowError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target.resolve()
