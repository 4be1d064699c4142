"""`%scanflow checker start|stop|status WORKFLOW`: the background drift checker of a workflow."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from .registry import subcommand


@subcommand("checker")
@magic_arguments()
@argument("action", choices=["start", "stop", "status"])
@argument("workflow", help="the workflow whose inference batches are checked")
@argument(
    "--every",
    type=float,
    default=None,
    metavar="SECONDS",
    help="seconds between polls of the tracker (default: the workflow's Checker spec, 5)",
)
@argument(
    "--reference",
    default=None,
    metavar="DATA",
    help="reference data: a .npy array or a .parquet / .csv table (in the app folder), or a logged "
    "artifact runs:/RUN_ID/PATH; default: the newest reference logged to the workflow's experiment "
    "with scanflow_nb.check.log_reference",
)
@argument(
    "--detector",
    default=None,
    metavar="KIND",
    help="detector kind (autoencoder, ks, mmd, tabular, model_output; default: the workflow's Checker "
    "spec, whose 'auto' picks tabular for a table and autoencoder otherwise)",
)
@argument("--model", default=None, metavar="MODEL_URI", help="the MLflow model a model_output detector watches")
def checker(ctx, args):
    """Start, stop or inspect the background drift checker of a workflow.

    start: fit (or reuse) the detector named by the workflow's Checker spec and check, in a
    background thread, every batch logged with scanflow_nb.check.log_batch; shows a drift monitor.
    """
    from ..check import supervise

    app = ctx.app
    if args.action == "start":
        watcher = supervise.start_checker(
            app,
            args.workflow,
            every=args.every,
            reference=args.reference,
            detector=args.detector,
            model=args.model,
        )
        print(
            f"checker of {args.workflow!r} watching experiment {watcher.experiment!r} at {watcher.tracking_uri} "
            f"every {watcher.every:g} s with {watcher.detector!r}"
        )
        from ..widgets.drift import DriftMonitor

        return DriftMonitor(watcher)
    if args.action == "stop":
        ended = supervise.stop_checker(app, args.workflow)
        print(f"checker of {args.workflow!r} " + ("stopped" if ended else "stopping after its current batch"))
        return None
    status = supervise.get_checker(app, args.workflow).status()
    print(
        f"checker of {args.workflow!r}: {status['state']}, {status['checked']} batches checked, "
        f"{status['drifts']} drifted, {status['alarms']} alarms, {status['findings']} data-quality findings, "
        f"{status['failed']} unreadable, {len(status['outages'])} tracker outages"
        + (f"; last error: {status['last_error']}" if status["last_error"] else "")
    )
    return None
