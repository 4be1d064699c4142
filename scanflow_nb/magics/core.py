"""Core subcommands: app, workflow, executor, remove, run, status, logs, save, load."""

from __future__ import annotations

import yaml
from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from ..run.output import OutputLimits
from .registry import subcommand
from .services import service_arguments, service_options


def _display(obj) -> None:
    from IPython.display import display

    display(obj)


def _key_values(pairs, option: str, typed: bool, name_only: bool = False) -> dict:
    """KEY=VALUE strings to a dict; with `typed`, values are read as YAML scalars (3 -> int).

    With `name_only`, a bare KEY maps to None (the value is taken at run time). A key given twice is an error.
    """
    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not key or not (sep or name_only):
            raise UsageError(f"{option} expects KEY=VALUE{' or KEY' if name_only else ''}, got {pair!r}")
        if key in out:
            raise UsageError(f"{option} {key} is given twice: keep one")
        out[key] = None if not sep else _scalar(value) if typed else value
    return out


def _flat(groups) -> list[str]:
    return [item for group in groups or [] for item in group]


def _resources(args) -> dict:
    """The --cpus/--memory/--gpus options as keyword arguments, numbers as numbers ("1.5" -> 1.5)."""
    return {k: _scalar(getattr(args, k)) for k in ("cpus", "memory", "gpus")}


def _scalar(text: str | None):
    """A command-line value read as a YAML scalar ("3" -> 3, "true" -> True), else kept as text."""
    if text is None:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool)) else text


def _resource_options(note: str):
    """The --cpus, --memory and --gpus options of a subcommand, each help ending with `note`."""

    def add(func):
        for flags, metavar, what in (
            ("--gpus", "N", "GPUs"),
            ("--memory", "SIZE", "memory, a hard limit, e.g. 512M or 2G"),
            ("--cpus", "N", "CPUs, e.g. 2 or 0.5"),
        ):
            func = argument(flags, metavar=metavar, help=f"{what} ({note})")(func)
        return func

    return add


def _note_disk_changes(app) -> None:
    """One line when a save took changes another kernel or an editor made to scanflow.yaml."""
    if app.disk_changes:
        print(f"note: {app.config_file.name} had changed on disk; kept from it: {', '.join(app.disk_changes)}")


@subcommand("app")
@magic_arguments()
@argument("path", nargs="?", help="the app folder (created on first write); loads its scanflow.yaml if present")
def app(ctx, args):
    """Open the app folder that holds executor files, scanflow.yaml and run state."""
    from ..app import App

    if args.path is None:
        return ctx.app
    opened = App(args.path)
    ctx.current_app = opened
    found = f", {len(opened.workflows)} workflow(s) loaded from {opened.config_file.name}" if opened.workflows else ""
    print(f"app {opened.path}{found}")
    return None


@subcommand("workflow")
@magic_arguments()
@argument("name", help="workflow name (letters, digits, - and _)")
@argument("--parallel", action="store_true", help="run the children concurrently instead of one after another")
@argument("--parent", metavar="WORKFLOW", help="nest this workflow inside WORKFLOW")
@argument(
    "--tracker",
    nargs="?",
    type=int,
    const=0,
    default=None,
    metavar="PORT",
    help="track runs with a real `mlflow server` on PORT (0 or no value: a free port); default: the embedded store",
)
@_resource_options("the default of every executor inside, at any depth")
def workflow(ctx, args):
    """Declare a workflow (or change one declared before), at the top level or inside --parent."""
    from ..spec import Tracker

    tracker = Tracker(port=args.tracker) if args.tracker is not None else None
    wf, created = ctx.app.declare_workflow(
        args.name, parallel=args.parallel, parent=args.parent, tracker=tracker, **_resources(args)
    )
    _note_disk_changes(ctx.app)
    where = f" inside {args.parent!r}" if args.parent else ""
    kind = "parallel" if wf.parallel else "sequential"
    print(f"{'declared' if created else 'updated'} {kind} workflow {wf.name!r}{where}")


@subcommand("executor", cell=True)
@magic_arguments()
@argument("name", help="executor name, unique in its workflow")
@argument("--workflow", "-w", required=True, metavar="WORKFLOW", help="the workflow this executor belongs to")
@argument("--requirements", metavar='"PKG PKG"', help="pip requirements, space separated")
@argument("-r", dest="requirements_file", metavar="FILE", help="a requirements file in the app folder")
@argument("--param", "-p", action="append", metavar="KEY=VALUE", help="a parameter passed as --KEY VALUE (repeatable)")
@argument(
    "--depends-on",
    "-d",
    nargs="+",
    action="append",
    metavar="NAME",
    help="sibling executors or workflows that must finish first",
)
@argument("--input", action="append", metavar="PATH", help="an input file (part of the cache key; repeatable)")
@argument("--output", action="append", metavar="PATH", help="an output file (repeatable)")
@argument(
    "--env",
    action="append",
    metavar="KEY[=VALUE]",
    help="an environment variable (repeatable); KEY alone passes the kernel's own KEY at run time and saves only "
    "its name: the way to pass secrets",
)
@argument("--retries", type=int, default=0, help="extra attempts after a failure (default 0)")
@argument("--timeout", type=float, metavar="SECONDS", help="kill an attempt after SECONDS")
@_resource_options("one run of it; default: its workflow's")
@argument("--run", action="store_true", help="run this executor now")
@service_arguments
def executor(ctx, args, cell):
    """Save the cell as the executor's file <app>/<WORKFLOW>/<NAME>.py and declare it.

    The script reads its parameters from the command line (`--key value`), e.g. with argparse.
    """
    if args.requirements and args.requirements_file:
        raise UsageError("give either --requirements or -r FILE, not both")
    requirements = args.requirements.split() if args.requirements else args.requirements_file
    app = ctx.app
    outcome = app.declare_executor(
        args.workflow,
        args.name,
        cell,
        requirements=requirements,
        parameters=_key_values(args.param, "--param", typed=True),
        env=_key_values(args.env, "--env", typed=False, name_only=True),
        depends_on=_flat(args.depends_on),
        inputs=args.input or [],
        outputs=args.output or [],
        retries=args.retries,
        timeout=args.timeout,
        **_resources(args),
        **service_options(args),
    )
    print(f"{outcome.capitalize()} {args.workflow}/{args.name}.py and declared executor {args.workflow}/{args.name}")
    _note_disk_changes(app)
    if args.run:
        return app.run(args.workflow, only=f"{args.workflow}/{args.name}", force=True)
    return None


@subcommand("remove")
@magic_arguments()
@argument("name", help="a workflow (with everything in it), or an executor as WORKFLOW/NAME")
def remove(ctx, args):
    """Remove a workflow or an executor from the app and from scanflow.yaml (its files stay)."""
    ctx.app.remove(args.name)
    print(f"removed {'executor' if '/' in args.name else 'workflow'} {args.name}")
    _note_disk_changes(ctx.app)


@subcommand("run")
@magic_arguments()
@argument("workflow", help="the workflow to run (nested workflows run with it)")
@argument("--backend", "-b", default="local", help="local (default), docker or swarm")
@argument("--force", "-f", action="store_true", help="rerun executors even if nothing changed")
@argument("--only", metavar="EXECUTOR", help="run just this executor")
@argument("--from", dest="from_", metavar="EXECUTOR", help="run this executor and everything after it")
@argument("--max-workers", type=int, metavar="N", help="at most N executors at once (default: the CPU count)")
@argument("--cpus", metavar="N", help="CPUs shared by the executors that declare theirs (default: the machine's)")
@argument("--isolated", action="store_true", help="local: run executors with requirements in their own venv")
@argument("--quiet", "-q", action="store_true", help="do not stream executor output")
@argument("--no-graph", action="store_true", help="do not show the live graph widget")
@argument(
    "--background",
    action="store_true",
    help="return at once with a handle (.result(), .cancel()); the graph widget follows the run",
)
@argument("--keep-serving", action="store_true", help="keep its services up after the rest, until %%scanflow stop WF")
def run(ctx, args):
    """Run a workflow; output streams live and the result lists each executor and its MLflow run."""
    app = ctx.app
    options = {"isolated": True} if args.isolated else None
    output = OutputLimits(ctx.lines_per_second, ctx.tail_lines, ctx.log_megabytes * 2**20)
    listeners = []
    if not args.no_graph and _in_kernel(ctx.shell):
        listeners.append(_live_graph(app, args.workflow))
    try:
        return app.run(
            args.workflow,
            args.backend,
            backend_options=options,
            force=args.force,
            only=args.only,
            from_=args.from_,
            max_workers=args.max_workers,
            cpus=_scalar(args.cpus),
            listeners=listeners,
            echo=not (args.quiet or args.background),
            background=args.background,
            output=output,
            keep_serving=args.keep_serving,
        )
    except KeyboardInterrupt:
        print(f"interrupted: the running executors of {args.workflow!r} were stopped")
        return app.status(args.workflow)[app.find(args.workflow).name]


def _in_kernel(shell) -> bool:
    return getattr(shell, "kernel", None) is not None


def _live_graph(app, workflow: str):
    """Display the live graph widget and return its event listener."""
    from ..widgets.graph import GraphWidget

    widget = GraphWidget(app.find(workflow), app=app)
    _display(widget)
    return widget.on_event


@subcommand("status")
@magic_arguments()
@argument("workflow", nargs="?", help="one workflow (default: every top-level workflow)")
def status(ctx, args):
    """Show the last run of each workflow: executor states, durations, errors and MLflow runs."""
    for name, result in ctx.app.status(args.workflow).items():
        if result is None:
            print(f"workflow {name!r}: not run yet")
        else:
            _display(result)


@subcommand("logs")
@magic_arguments()
@argument("executor", help="an executor, as NAME or WORKFLOW/NAME")
@argument("--tail", "-n", type=int, metavar="N", help="only the last N lines")
def logs(ctx, args):
    """Print the log of an executor's last run (a long one: its first and last lines, and where it is)."""
    print(ctx.app.logs(args.executor, tail=args.tail, max_bytes=ctx.cell_log_bytes), end="")


@subcommand("save")
@magic_arguments()
@argument("file", nargs="?", help="where to write (default: scanflow.yaml in the app folder)")
def save(ctx, args):
    """Save the app's workflows as YAML, to re-run them without the notebook (`scanflow run`)."""
    print(f"saved {ctx.app.save(args.file)}")


@subcommand("load")
@magic_arguments()
@argument("file", help="a scanflow.yaml file; its folder becomes the app folder")
def load(ctx, args):
    """Load workflows from a YAML file and make its folder the current app."""
    from ..app import App

    ctx.current_app = App.load(args.file)
    names = ", ".join(wf.name for wf in ctx.current_app.workflows) or "no workflows"
    print(f"loaded {names} from {args.file}")
