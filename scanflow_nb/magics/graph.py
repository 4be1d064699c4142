"""`%scanflow graph`: the workflow graph widget, a text tree, or a saved SVG/PNG."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from ..errors import NotFoundError
from .registry import subcommand


@subcommand("graph")
@magic_arguments()
@argument("workflow", nargs="?", help="the workflow to draw (default: the app's only top-level workflow)")
@argument("--save", metavar="FILE", help="also write the graph to FILE: .svg, .png or .gv (graphviz source)")
@argument("--text", action="store_true", help="print a plain-text tree instead of showing the widget")
def graph(ctx, args):
    """Show a workflow as a graph: nested workflows, parallel groups, executors, their last run's states.

    Select an executor in the widget to see its parameters, image, MLflow run and log tail.
    """
    from ..graph import RunProgress, save_graph, text_tree

    app = ctx.app
    workflow = app.find(args.workflow or _only_workflow(app))
    result = _last_result(app, workflow.name)
    progress = RunProgress(workflow)
    if result is not None:
        progress.load_result(result)
    if args.save:
        print(f"saved {save_graph(workflow, args.save, progress.snapshot())}")
    if args.text:
        print(text_tree(workflow, progress.snapshot()))
        print(_summary_line(workflow, progress, result))
        return None
    from ..widgets.graph import GraphWidget

    widget = GraphWidget(workflow, app=app)
    if result is not None:
        widget.load_result(result)
    return widget


def _only_workflow(app) -> str:
    names = [wf.name for wf in app.workflows]
    if len(names) == 1:
        return names[0]
    if not names:
        raise NotFoundError("no workflows yet: declare one with %scanflow workflow NAME")
    raise NotFoundError(f"this app has several workflows: give one of {', '.join(names)}")


def _last_result(app, name: str):
    """The newest run that covered `name`: its own last run or its top-level workflow's."""
    root = app.root_of(name).name
    results = [r for r in (app.status(name)[name], app.status(root)[root]) if r is not None]
    return max(results, key=lambda r: r.started, default=None)


def _summary_line(workflow, progress, result) -> str:
    if result is None:
        return f"workflow {workflow.name!r} has not run yet"
    return f"last run of {result.workflow!r} {result.status}: {progress.summary().text()}"
