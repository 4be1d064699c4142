"""Experiment subcommands: runs (history), compare, rerun, sweep, ui."""

from __future__ import annotations

import html

from IPython.core.magic_arguments import argument, magic_arguments

from .registry import subcommand


def _display(obj) -> None:
    from IPython.display import display

    display(obj)


@subcommand("runs")
@magic_arguments()
@argument("workflow", nargs="?", help="only the runs of this workflow (default: all)")
@argument("--last", "-n", type=int, metavar="N", help="only the newest N runs")
def runs(ctx, args):
    """List past workflow runs, newest first, from the app's MLflow store (other kernels and the CLI too).

    One row per run: state, duration, back end, executor counts, and each executor's parameters and
    metrics as `<executor>.<name>`. `app.runs()` gives the same as a pandas DataFrame.
    """
    from ..track.history import RunTable

    return RunTable(ctx.app.runs(args.workflow, args.last))


@subcommand("compare")
@magic_arguments()
@argument("run_a", help="a workflow run id (6+ first characters are enough)")
@argument("run_b", help="another workflow run id")
def compare(ctx, args):
    """Show what differs between two workflow runs, per executor: code (a diff), parameters, requirements,
    input and output digests, image, environment, state and metrics."""
    return ctx.app.compare(args.run_a, args.run_b)


@subcommand("rerun")
@magic_arguments()
@argument("run_id", help="a workflow run id (or an executor run id: that executor alone)")
@argument("--backend", "-b", default=None, help="local, docker or swarm (default: the one the run used)")
@argument("--max-workers", type=int, metavar="N", help="at most N executors at once")
@argument("--quiet", "-q", action="store_true", help="do not stream executor output")
def rerun(ctx, args):
    """Run a past workflow run again with the code, parameters and requirements MLflow recorded for it.

    Today's cells and files do not matter. Says which inputs changed since; the new run is tagged
    scanflow.rerun_of with the old run's id.
    """
    try:
        return ctx.app.rerun(args.run_id, args.backend, max_workers=args.max_workers, echo=not args.quiet)
    except KeyboardInterrupt:
        print("interrupted: the re-run's running executors were stopped")
        return None


@subcommand("sweep")
@magic_arguments()
@argument("executor", help="the executor to sweep, as NAME or WORKFLOW/NAME")
@argument("--grid", "-g", action="append", metavar="K=V1,V2,...", help="values of a parameter (repeatable)")
@argument(
    "--space",
    "-s",
    action="append",
    metavar="K=LOW:HIGH[:log] | K=A,B,C",
    help="a searched parameter: a range (ints or floats, log scale) or choices (repeatable)",
)
@argument("--trials", "-t", type=int, metavar="N", help="how many trials a search runs")
@argument("--metric", "-m", help="the metric the executor logs that decides the best trial")
@argument("--maximize", action="store_true", help="the best trial has the highest metric (default: lowest)")
@argument("--search", choices=["grid", "optuna", "random"], help="default: grid with --grid, else optuna")
@argument("--backend", "-b", default="local", help="local (default), docker or swarm")
@argument("--max-workers", type=int, metavar="N", help="at most N trials at once (default: the CPU count)")
@argument("--name", help="the Optuna study's name (the same name resumes it)")
@argument("--seed", type=int, help="seed of the search's sampler")
def sweep(ctx, args):
    """Run an executor once per trial: every combination of --grid values, or --trials N picked by Optuna
    within --space. Trials run in parallel under one MLflow parent run; a table shows them as they end.
    Ctrl-C stops every trial; an Optuna search resumes when run again.
    """
    from ..experiments.commands import sweep_from_args

    app = ctx.app
    on_trial = None
    if getattr(ctx.shell, "kernel", None) is not None:
        from ..widgets.sweep import SweepView

        wf, ex = app.find_executor(args.executor)
        view = SweepView(f"{wf.name}/{ex.name}", args.metric, "maximize" if args.maximize else "minimize")
        _display(view)
        on_trial = view.add
    try:
        return sweep_from_args(app, args, on_trial=on_trial, echo=on_trial is None)
    except KeyboardInterrupt:
        print("interrupted: every trial was stopped")
        return None


@subcommand("ui")
@magic_arguments()
@argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
def ui(ctx, args):
    """Start the MLflow UI on the app's store (127.0.0.1, a free port) and show its link; it stops with the kernel."""
    server = ctx.app.ui(args.port)
    url = colab_url(server.port) or server.uri
    print(f"MLflow UI of {ctx.app.path} at {url}")
    from IPython.display import HTML

    _display(HTML(f"<a href='{html.escape(url)}' target='_blank'>open the MLflow UI</a>"))


def colab_url(port: int) -> str | None:
    """In Colab, the address of `port` through Colab's port proxy (the browser cannot reach 127.0.0.1 there)."""
    try:
        from google.colab.output import eval_js
    except ImportError:
        return None
    return eval_js(f"google.colab.kernel.proxyPort({port})")
