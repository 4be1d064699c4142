"""Workflow graphs: a Workflow and its executor states drawn with graphviz, or as a text tree.

`to_digraph` builds the graphviz Digraph, `render_svg`/`save_graph` draw it with `dot`,
`text_tree` is the fallback without `dot`, and `RunProgress` folds run events into the
states and progress summary these take.
"""

from .layout import to_digraph
from .render import GraphvizMissing, dot_available, render_svg, save_graph
from .status import ExecutorStatus, RunProgress, Summary, executor_keys, format_seconds
from .text import text_tree

__all__ = [
    "ExecutorStatus",
    "GraphvizMissing",
    "RunProgress",
    "Summary",
    "dot_available",
    "executor_keys",
    "format_seconds",
    "render_svg",
    "save_graph",
    "text_tree",
    "to_digraph",
]
