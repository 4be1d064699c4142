"""Services: `%scanflow serve MODEL_URI` beside the kernel, `%scanflow service` in a workflow, `%scanflow stop`."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from ..serve.commands import OPTIONS, settings
from .core import _flat, _key_values
from .registry import subcommand
from .services import service_arguments, service_options


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


@subcommand("service")
@magic_arguments()
@argument("name", help="executor name, unique in its workflow")
@argument("--workflow", "-w", required=True, metavar="WORKFLOW", help="the workflow this service belongs to")
@argument("--model", required=True, metavar="URI", help="the MLflow model to serve, e.g. models:/NAME@champion")
@argument("--param", "-p", action="append", metavar="KEY=VALUE", help="a `scanflow serve` option, e.g. batch-rows=100")
@argument("--depends-on", "-d", nargs="+", action="append", metavar="NAME", help="what must be done (or serving) first")
@argument("--requirements", metavar='"PKG PKG"', help="pip requirements of its image (docker, swarm)")
@argument("--timeout", type=float, metavar="SECONDS", help="how long it may take to answer its health check (300)")
@service_arguments
def service(ctx, args):
    """Declare a model service in a workflow: `scanflow serve MODEL` as a long-running executor.

    A run starts it, waits until it answers its health check (its dependents start then, with its address
    in SCANFLOW_SERVICE_<NAME>), and stops it when the rest of the run is over (with run --keep-serving:
    on %scanflow stop WORKFLOW). Its traffic is logged where the workflow's checker looks.
    """
    ctx.app.declare_executor(
        args.workflow,
        args.name,
        None,
        model=args.model,
        parameters=_key_values(args.param, "--param", typed=True),
        depends_on=_flat(args.depends_on),
        requirements=args.requirements.split() if args.requirements else None,
        timeout=args.timeout,
        **{**service_options(args), "service": True},
    )
    where = f"on {args.host}:{args.port}" + (f", {args.replicas} replicas on the swarm" if args.replicas > 1 else "")
    print(f"declared service {args.workflow}/{args.name}: {args.model} {where}")


@subcommand("stop")
@magic_arguments()
@argument("name", help="a service started with %%scanflow serve, or a workflow whose run is serving")
def stop(ctx, args):
    """Stop a service (it logs what it buffered and says what it logged), or end a workflow's run and its services."""
    from ..serve import running_services, stop_service

    app = ctx.current_app
    if args.name in running_services() or app is None or args.name not in {w.name for w in app.all_workflows()}:
        print(stop_service(args.name))
        return None
    result = app.stop(args.name)
    print(result.summary() if result is not None else f"the run of {args.name!r} ended")
    return None
