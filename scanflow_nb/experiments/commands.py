"""`scanflow runs|compare|rerun|sweep|ui` for the command line (cli.py adds them to its parser)."""

from __future__ import annotations

import argparse
import time


def cmd_runs(args, load_app) -> int:
    from ..track.history import RunTable

    frame = load_app(args).runs(args.workflow, args.last)
    print(frame.to_csv(index=False) if args.csv else RunTable(frame), end="" if args.csv else "\n")
    return 0


def cmd_compare(args, load_app) -> int:
    print(load_app(args).compare(args.run_a, args.run_b))
    return 0


def cmd_rerun(args, load_app) -> int:
    result = load_app(args).rerun(args.run_id, args.backend, max_workers=args.max_workers, echo=not args.quiet)
    print(result.summary())
    return 0 if result.ok else 1


def cmd_sweep(args, load_app) -> int:
    result = sweep_from_args(load_app(args), args)
    print(result.trials.drop(columns=["error"]).to_string(index=False))
    return 0 if any(t.status == "succeeded" for t in result.trial_list) else 1


def sweep_from_args(app, args, **options):
    """`App.sweep` from the options `scanflow sweep` and `%scanflow sweep` share (text grids and spaces)."""
    from .sweep import parse_grid, parse_space

    return app.sweep(
        args.executor,
        parse_grid(args.grid),
        search=args.search,
        space=parse_space(args.space),
        trials=args.trials,
        metric=args.metric,
        direction="maximize" if args.maximize else "minimize",
        backend=args.backend,
        max_workers=args.max_workers,
        name=args.name,
        seed=args.seed,
        **options,
    )


def cmd_ui(args, load_app) -> int:
    server = load_app(args).ui(args.port)
    print(f"MLflow UI at {server.uri} (Ctrl-C stops it)", flush=True)
    try:
        while server.alive():
            time.sleep(1)
    finally:
        server.stop()
    return 0


def add_commands(sub: argparse._SubParsersAction, load_app) -> None:
    """Register the experiment commands; `load_app(args)` opens the app the way cli.py does."""
    runs = sub.add_parser("runs", help="past workflow runs, newest first, from the app's MLflow store")
    runs.add_argument("workflow", nargs="?")
    runs.add_argument("--last", "-n", type=int, metavar="N", help="only the newest N")
    runs.add_argument("--csv", action="store_true", help="every column, as CSV")
    runs.set_defaults(func=lambda args: cmd_runs(args, load_app))
    compare = sub.add_parser("compare", help="what differs between two workflow runs, per executor")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.set_defaults(func=lambda args: cmd_compare(args, load_app))
    rerun = sub.add_parser("rerun", help="run a past workflow run again with its recorded code and parameters")
    rerun.add_argument("run_id")
    rerun.add_argument("--backend", "-b", default=None, help="default: the one the run used")
    rerun.add_argument("--max-workers", type=int, metavar="N")
    rerun.add_argument("--quiet", "-q", action="store_true", help="do not stream executor output")
    rerun.set_defaults(func=lambda args: cmd_rerun(args, load_app))
    sweep = sub.add_parser("sweep", help="run an executor once per trial: a grid, or an Optuna search")
    sweep.add_argument("executor", help="NAME or WORKFLOW/NAME")
    sweep.add_argument("--grid", "-g", action="append", metavar="K=V1,V2,...")
    sweep.add_argument("--space", "-s", action="append", metavar="K=LOW:HIGH[:log] | K=A,B,C")
    sweep.add_argument("--trials", "-t", type=int, metavar="N")
    sweep.add_argument("--metric", "-m")
    sweep.add_argument("--maximize", action="store_true", help="best = highest metric (default: lowest)")
    sweep.add_argument("--search", choices=["grid", "optuna", "random"])
    sweep.add_argument("--backend", "-b", default="local")
    sweep.add_argument("--max-workers", type=int, metavar="N")
    sweep.add_argument("--name", help="the Optuna study's name (the same name resumes it)")
    sweep.add_argument("--seed", type=int)
    sweep.set_defaults(func=lambda args: cmd_sweep(args, load_app))
    ui = sub.add_parser("ui", help="the MLflow UI on the app's store, until Ctrl-C")
    ui.add_argument("--port", type=int, default=0, help="default: a free port")
    ui.set_defaults(func=lambda args: cmd_ui(args, load_app))
