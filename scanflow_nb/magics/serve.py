"""`%scanflow serve MODEL_URI ...` and `%scanflow stop NAME`: a prediction service beside the kernel."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from ..serve.commands import OPTIONS, settings
from .registry import subcommand


def _with_options(func):
    for flags, options in reversed(OPTIONS):
        func = argument(*flags, **options)(func)
    return func


@subcommand("serve")
@magic_arguments()
@argument("model_uri", nargs="?", help="models:/NAME@ALIAS (followed), models:/NAME/VERSION, runs:/..., a path")
@argument("--port", "-p", type=int, default=0, help="default: a free port")
@_with_options
def serve(ctx, args):
    """Serve an MLflow model over MLflow's scoring protocol in a process beside the kernel.

    Every answered row (with the model's predictions and probabilities) is logged as inference batches
    where the workflow's checker looks; a moved alias (the planner's champion) is followed. Without a
    model URI: the services running. Stop one with %scanflow stop NAME (the kernel's exit stops them too).
    """
    from ..serve import running_services, start_service

    if args.model_uri is None:
        services = running_services()
        print("\n".join(repr(svc) for svc in services.values()) or "no service running")
        return None
    service = start_service(
        args.model_uri,
        args.tracking_uri,
        args.experiment,
        app=ctx.app if args.workflow else ctx.current_app,
        workflow=args.workflow,
        name=args.name,
        host=args.host,
        port=args.port,
        no_follow=args.no_follow,
        **settings(args),
    )
    info = service.version()
    print(
        f"serving {args.model_uri} (v{info['version']}) as {service.name!r} at {service.url}/invocations; "
        f"stop with %scanflow stop {service.name}"
    )
    return service


@subcommand("stop")
@magic_arguments()
@argument("name", help="a service started with %scanflow serve")
def stop(ctx, args):
    """Stop a service: it stops taking requests, logs what it buffered, and says what it logged."""
    from ..serve import stop_service

    print(stop_service(args.name))
