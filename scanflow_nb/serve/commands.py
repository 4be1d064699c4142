"""`scanflow serve MODEL_URI ...` for the command line (cli.py adds it to its parser).

`OPTIONS` are the settings the command line and `%scanflow serve` share, as `add_argument` arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..files import state_dir
from .service import DEFAULT_HOST, DEFAULT_PORT, service_name
from .spool import spool_root

OPTIONS: list[tuple[tuple[str, ...], dict]] = [
    (("--workflow", "-w"), {"help": "log where this workflow's checker looks (its tracker and experiment)"}),
    (("--tracking-uri",), {"help": "where to log traffic (default: the workflow's, else $MLFLOW_TRACKING_URI)"}),
    (("--experiment",), {"help": "experiment of the batches (default: the workflow's, else the service name)"}),
    (("--name",), {"help": "the service name (default: the registered model's name)"}),
    (("--host",), {"default": DEFAULT_HOST, "help": f"interface to listen on (default {DEFAULT_HOST})"}),
    (("--batch-rows",), {"type": int, "default": 1000, "metavar": "N", "help": "rows per logged batch (1000)"}),
    (
        ("--flush-seconds",),
        {"type": float, "default": 10.0, "metavar": "S", "help": "log a batch at least every S seconds (10)"},
    ),
    (("--max-spool-mb",), {"type": int, "default": 512, "metavar": "MB", "help": "bound of the on-disk journal"}),
    (("--poll-seconds",), {"type": float, "default": 2.0, "metavar": "S", "help": "how often to check the alias (2)"}),
    (("--no-follow",), {"action": "store_true", "help": "keep the version loaded at start"}),
    (
        ("--drain-seconds",),
        {"type": float, "default": 30.0, "metavar": "S", "help": "on stop, time to log what is buffered (30)"},
    ),
]


def settings(args) -> dict:
    """The PredictionService settings among parsed OPTIONS."""
    return {
        "batch_rows": args.batch_rows,
        "flush_seconds": args.flush_seconds,
        "max_spool_mb": args.max_spool_mb,
        "poll_seconds": args.poll_seconds,
        "drain_seconds": args.drain_seconds,
    }


def cmd_serve(args, load_app) -> int:
    from .http import serve

    tracking_uri, experiment, base = args.tracking_uri, args.experiment, state_dir(Path.cwd())
    if args.workflow:
        app = load_app(args)
        tracking_uri = tracking_uri or app.tracking_uri(args.workflow)
        experiment = experiment or app.experiment_name(args.workflow)
        base = app.state_dir
    name = args.name or service_name(args.model_uri)
    final = serve(
        args.model_uri,
        tracking_uri,
        experiment,
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        name=name,
        spool_dir=args.spool or spool_root(base, name),
        follow=not args.no_follow,
        **settings(args),
    )
    left = f", {final['spool_rows']} left in {final['spool_dir']} for the next start" if final["spool_rows"] else ""
    print(
        f"stopped {name!r}: {final['rows']} rows answered, {final['shipped_rows']} logged, "
        f"{final['dropped_rows']} dropped by the spool bound{left}",
        flush=True,
    )
    return 0


def add_command(sub: argparse._SubParsersAction, load_app) -> None:
    """Register `serve`; `load_app(args)` opens the app the way cli.py does (for --workflow)."""
    serve = sub.add_parser(
        "serve",
        help="serve an MLflow model over MLflow's scoring protocol, logging its traffic for the drift checker",
        description="Serve MODEL_URI (e.g. models:/NAME@champion) on /invocations, /health, /version and /stats. "
        "Every answered row is journaled on disk and logged as inference batches; a moved alias is followed.",
    )
    serve.add_argument("model_uri", help="models:/NAME@ALIAS (followed), models:/NAME/VERSION, runs:/..., a path")
    serve.add_argument("--port", "-p", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    for flags, options in OPTIONS:
        serve.add_argument(*flags, **options)
    serve.add_argument("--spool", metavar="DIR", help="the on-disk journal (default: .scanflow/serve/NAME/spool)")
    serve.add_argument("--access-log", action="store_true", help="print a line per request")
    serve.set_defaults(func=lambda args: cmd_serve(args, load_app))
