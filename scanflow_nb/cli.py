"""`scanflow`: run and inspect a saved scanflow.yaml without a notebook (headless use, CI)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ScanflowError


def _app(args):
    from .app import App

    path = Path(args.file)
    return App.load(path if path.suffix in (".yaml", ".yml") else path / "scanflow.yaml")


def cmd_run(args) -> int:
    result = _app(args).run(
        args.workflow,
        args.backend,
        force=args.force,
        only=args.only,
        from_=args.from_,
        max_workers=args.max_workers,
        cpus=args.cpus,
        echo=not args.quiet,
    )
    print(result.summary())
    return 0 if result.ok else 1


def cmd_status(args) -> int:
    for name, result in _app(args).status(args.workflow).items():
        print(f"workflow {name!r}: not run yet" if result is None else result.summary())
    return 0


def cmd_logs(args) -> int:
    print(_app(args).logs(args.executor), end="")
    return 0


def cmd_graph(args) -> int:
    from .graph import save_graph, text_tree

    app = _app(args)
    wf = app.find(args.workflow)
    last = app.status(wf.name).get(wf.name) if wf in app.workflows else None
    states = {k: r.status for k, r in last.executors.items()} if last else None
    if args.output:
        print(f"wrote {save_graph(wf, args.output, states)}")
    else:
        print(text_tree(wf, states))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scanflow", description=__doc__)
    parser.add_argument("--file", "-f", default=".", help="scanflow.yaml, or the app folder holding it (default: .)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a workflow")
    run.add_argument("workflow")
    run.add_argument("--backend", "-b", default="local", help="local (default), docker or swarm")
    run.add_argument("--force", action="store_true", help="rerun executors even if nothing changed")
    run.add_argument("--only", metavar="EXECUTOR")
    run.add_argument("--from", dest="from_", metavar="EXECUTOR")
    run.add_argument("--max-workers", type=int, metavar="N")
    run.add_argument("--cpus", metavar="N", help="CPUs shared by the executors that declare theirs")
    run.add_argument("--quiet", "-q", action="store_true", help="do not stream executor output")
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="the last run of each workflow")
    status.add_argument("workflow", nargs="?")
    status.set_defaults(func=cmd_status)
    logs = sub.add_parser("logs", help="an executor's last log")
    logs.add_argument("executor", help="NAME or WORKFLOW/NAME")
    logs.set_defaults(func=cmd_logs)
    graph = sub.add_parser("graph", help="the workflow graph as text, or to an SVG/PNG file")
    graph.add_argument("workflow")
    graph.add_argument("--output", "-o", metavar="FILE", help="write .svg, .png or .gv")
    graph.set_defaults(func=cmd_graph)
    from .containers.commands import add_commands
    from .experiments.commands import add_commands as add_experiment_commands
    from .serve.commands import add_command as add_serve

    add_commands(sub, _app)
    add_serve(sub, _app)
    add_experiment_commands(sub, _app)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ScanflowError as exc:
        print(f"scanflow: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scanflow: interrupted; running executors were stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
